/* config/config_internal.h: what config.c, tenants.c and parse.c share: the
 * YAML node tree parse.c builds from libyaml's events, the error collector,
 * the value parsers with a reason for `moat check`, and the walk's context
 * and helpers that tenants.c uses for `lists`, `tenants` and `include`.
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
/* The same in an included file (copied into the error; NULL: the diag's file). */
int cfg_diag_vadd_in(cfg_diag_t *d, const char *file, unsigned line, unsigned col, const char *fmt,
                     va_list ap) __attribute__((format(printf, 5, 0)));
/* Move every error of src into d as errors in file; src is freed. 0 or -ENOMEM. */
int cfg_diag_move(cfg_diag_t *d, cfg_diag_t *src, const char *file);

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

/* Read a whole file of at most CFG_MAX_FILE bytes. 0, -EFBIG or -errno. */
int cfg_read_file(const char *path, char **buf, size_t *len);

/* ---- the walk (config.c), shared with tenants.c ---- */

typedef struct cfg_pos {
    unsigned line, col;
} cfg_pos_t;

/* Every listener takes TCP (DNS takes UDP too), so no two may share an
 * address; these are the lists checked against each other. */
enum {
    CFG_L_DNS,
    CFG_L_TRANSPARENT,
    CFG_L_TLS,
    CFG_L_HTTP,
    CFG_L_CONNECT,
    CFG_L_SOCKS,
    CFG_L_METRICS,
    CFG_L_N
};

/* A tenant's name, client or user, kept for the duplicate checks. */
typedef struct cfg_ref {
    const void *key; /* the name's bytes or a filter_prefix_t */
    size_t key_len;
    size_t tenant;    /* index into cfg->tenants */
    const char *file; /* display name, one of cfg->files */
    unsigned line, col;
    size_t order; /* file order, for "first at" */
} cfg_ref_t;

typedef struct cfg_refs {
    cfg_ref_t *items;
    size_t n, cap;
} cfg_refs_t;

typedef struct cfg_ctx {
    cfg_t *cfg;
    cfg_diag_t *diag;
    int rc;        /* sticky -ENOMEM */
    bool user;     /* walking the operator's file, not the embedded default */
    bool files_ok; /* include may read files (cfg_load_file, not cfg_load_string) */
    /* Positions of the items of the lists the operator's file set (NULL:
     * still the default), so cross-key errors can point at them. */
    cfg_pos_t *listen_pos[CFG_L_N];
    cfg_pos_t *tls_ports_pos, *http_ports_pos;
    /* The file being walked: NULL for the config itself, else the included
     * file (one of cfg->files); errors are put in it. */
    const char *file;
    size_t cap_tenants, cap_files, cap_glob_dirs;
    const cfg_list_t **list_by_name; /* cfg->lists sorted by name, for lookups */
    size_t *list_seen;               /* per list: the stamp of the allow list that named it last */
    size_t stamp;
    cfg_refs_t names, clients, users;
} cfg_ctx_t;

#define CFG_AT(node) (node)->line, (node)->col

/* Add an error in the file being walked; -ENOMEM becomes the sticky rc. */
void cfg_err(cfg_ctx_t *c, unsigned line, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The same in a given file (a display name from cfg->files). */
void cfg_err_in(cfg_ctx_t *c, const char *file, unsigned line, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
bool cfg_is(const cfg_node_t *n, const char *s);
/* YAML null, only for plain scalars. */
bool cfg_is_null(const cfg_node_t *n);
const char *cfg_kind_name(const cfg_node_t *n);
/* A non-null scalar where one is expected; reports "KEY: expected WHAT". */
bool cfg_value(cfg_ctx_t *c, const cfg_node_t *n, const char *key, const char *what);
bool cfg_get_enum(cfg_ctx_t *c, const cfg_node_t *n, const char *key, const char *const *names,
                  size_t count, const char *expect, int *out);
/* Edit distance, case-folded, for "did you mean"; SIZE_MAX past 32 bytes. */
size_t cfg_distance(const char *a, size_t alen, const char *b);
/* Match a mapping's keys against names[count] into vals (NULL: absent);
 * only the first `shown` names are offered for an unknown key. */
bool cfg_map_shown(cfg_ctx_t *c, const cfg_node_t *n, const char *where, const char *const *names,
                   size_t count, size_t shown, const cfg_node_t **vals);
/* One §2.1 allow entry into r (not {list: NAME}). False when reported. */
bool cfg_rule(cfg_ctx_t *c, const cfg_node_t *e, filter_rule_t *r);
void cfg_rules_free(filter_rule_t *rules, size_t n);

/* tenants.c: the top-level `lists` (walked before any allow list). */
void cfg_walk_lists(cfg_ctx_t *c, const cfg_node_t *n);
/* An allow list (key names it in messages): its rules and {list: NAME}
 * entries; in_list: the entries of a named list, where {list:} is refused. */
void cfg_walk_allow_list(cfg_ctx_t *c, const cfg_node_t *n, const char *key, bool in_list,
                         cfg_allow_t *out);
/* The top-level `tenants` of the config. */
void cfg_walk_tenants(cfg_ctx_t *c, const cfg_node_t *n);
/* `include`: read each matched file's tenants (nothing when !c->files_ok). */
void cfg_walk_include(cfg_ctx_t *c, const cfg_node_t *n);
/* After every file: duplicate names, clients and users across tenants. */
void cfg_check_tenants(cfg_ctx_t *c);
/* Free what the context holds for tenants (not the cfg's). */
void cfg_ctx_tenants_free(cfg_ctx_t *c);
/* Free the cfg's lists, tenants and files. */
void cfg_tenants_free(cfg_t *cfg);

#endif
