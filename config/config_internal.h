/* config/config_internal.h: what config.c and parse.c share: the YAML node
 * tree parse.c builds from libyaml's events, the error collector, and the
 * value parsers with a reason for `moat check`.
 */
#ifndef MOAT_CONFIG_CONFIG_INTERNAL_H
#define MOAT_CONFIG_CONFIG_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

/* Deep enough for any real config (the deepest path is allow/entry/ports/item,
 * four levels); bounds the recursion of the walk and of cfg_node_free. */
#define CFG_MAX_DEPTH 32
/* After this many errors the rest are summed up in one line. */
#define CFG_MAX_ERRORS 100
/* Longest config file read; an allowlist of a hundred thousand names fits. */
#define CFG_MAX_FILE (16u * 1024u * 1024u)

typedef enum cfg_node_kind {
    CFG_NODE_SCALAR,
    CFG_NODE_SEQ,
    CFG_NODE_MAP,
    CFG_NODE_BAD, /* an alias, already reported: the walk skips it silently */
} cfg_node_kind_t;

typedef struct cfg_node {
    cfg_node_kind_t kind;
    unsigned line, col; /* 1-based start of the node */
    bool plain;         /* plain scalar, not tagged !!str: null/bool/int apply */
    char *str;          /* scalar value, NUL-terminated (may hold NULs: use len) */
    size_t len;
    struct cfg_node **kids; /* seq: items; map: key, value, key, value, ... */
    size_t n, cap;
} cfg_node_t;

/* Parse YAML text into a node tree. Returns 0 with *root set (NULL for a
 * stream with no document, e.g. only comments) or a tree; errors that do not
 * stop parsing (aliases, a second document) are added to diag and the tree is
 * still returned. A syntax error returns -EINVAL with it in diag and *root
 * NULL; -ENOMEM on allocation failure. */
int cfg_yaml_load(const char *text, size_t len, cfg_node_t **root, cfg_diag_t *diag);
void cfg_node_free(cfg_node_t *n);

/* Add an error at line:col (1-based; line 0 for the whole file). Past
 * CFG_MAX_ERRORS only one "too many errors" line is kept. 0 or -ENOMEM. */
int cfg_diag_add(cfg_diag_t *d, unsigned line, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int cfg_diag_vadd(cfg_diag_t *d, unsigned line, unsigned col, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

/* Copy a value for a message: non-printable bytes become '?', and more than
 * about 60 characters are cut with "...". Returns buf (CFG_SHOW_MAX bytes). */
#define CFG_SHOW_MAX 72
const char *cfg_show(const char *s, size_t len, char *buf);

/* The value parsers of config.h, with a static one-line reason on -EINVAL. */
int cfg_duration_parse(const char *s, size_t len, uint64_t *ms, const char **why);
/* port0_ok: listen addresses may ask the kernel for a free port. */
int cfg_hostport_parse(const char *s, size_t len, uint16_t default_port, bool port0_ok,
                       cfg_addr_t *out, const char **why);
int cfg_port_range_parse(const char *s, size_t len, filter_port_range_t *out, const char **why);

#endif
