/* config/config.h: the YAML config (SPEC §3), loaded into one immutable object.
 *
 * cfg_load_file() / cfg_load_string() parse with libyaml, validate every key
 * and value, and either return a complete cfg_t or collect every error found
 * (not just the first) in a cfg_diag_t, each with FILE:LINE:COL. Missing keys
 * take the defaults of SPEC §3; cfg_load_default() is the embedded default
 * (the SPEC §3 block without `allow`), compiled from the same YAML text
 * through the same loader.
 *
 * Ownership: a cfg_t and everything it points to is owned by the cfg_t and
 * freed by cfg_free(); nothing in it changes after loading. A cfg_diag_t owns
 * its messages; cfg_diag_free() frees them.
 *
 * Errors: functions return 0 or a negative errno code (-ENOMEM, -ENOENT,
 * -EINVAL for a config with errors, whose details are in the diag).
 */
#ifndef MOAT_CONFIG_CONFIG_H
#define MOAT_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "filter/rule.h"

/* A listen or upstream address, e.g. "127.0.0.1:5353" or "[::1]:53". */
typedef struct cfg_addr {
    struct sockaddr_storage sa; /* AF_INET or AF_INET6, port set */
    socklen_t sa_len;
    char text[64]; /* as written, for messages: "127.0.0.1:5353" */
} cfg_addr_t;

typedef struct cfg_addr_list {
    cfg_addr_t *items;
    size_t n;
} cfg_addr_list_t;

typedef struct cfg_port_list {
    filter_port_range_t *items; /* as written, in order */
    size_t n;
} cfg_port_list_t;

typedef enum cfg_mode { CFG_MODE_ENFORCE, CFG_MODE_AUDIT } cfg_mode_t;
typedef enum cfg_sinkhole_mode {
    CFG_SINKHOLE_ADDRESS, /* `mode: null` (default): A/AAAA get the sinkhole addresses */
    CFG_SINKHOLE_NXDOMAIN /* `mode: nxdomain` */
} cfg_sinkhole_mode_t;
typedef enum cfg_log_format { CFG_LOG_TEXT, CFG_LOG_JSON } cfg_log_format_t;
typedef enum cfg_log_level {
    CFG_LOG_DEBUG,
    CFG_LOG_INFO,
    CFG_LOG_WARN,
    CFG_LOG_ERROR
} cfg_log_level_t;

/* A named rule set under top-level `lists` (SPEC §2.7): compiled once and
 * shared by every allow list that names it with {list: NAME}. */
typedef struct cfg_list {
    char *name;
    filter_rule_t *rules; /* in file order; texts owned by the cfg */
    size_t n_rules;
    const char *file; /* where it is defined (owned by the cfg) */
    unsigned line, col;
} cfg_list_t;

/* An allow list: its own rules and the named lists it refers to. */
typedef struct cfg_allow {
    filter_rule_t *rules; /* the entries of §2.1, in file order */
    size_t n_rules;
    size_t *lists; /* indices into cfg->lists, in the order named, no repeats */
    size_t n_lists;
} cfg_allow_t;

/* A proxy user of a tenant (SPEC §2.6, §2.7). */
typedef struct cfg_user {
    char *name;
    char *password;     /* the secret as written, or NULL when hashed */
    uint8_t sha256[32]; /* `sha256:HEX`: the SHA-256 of the password */
    bool hashed;
    const char *file; /* owned by the cfg */
    unsigned line, col;
} cfg_user_t;

/* One sandbox (SPEC §2.7). */
typedef struct cfg_tenant {
    char *name;               /* [a-z0-9][a-z0-9._-]{0,62}, unique */
    filter_prefix_t *clients; /* addresses and prefixes of its guests */
    size_t n_clients;
    cfg_user_t *users;
    size_t n_users;
    bool has_mode; /* `mode` given; else the top-level mode applies */
    cfg_mode_t mode;
    cfg_allow_t allow; /* required (an empty one is an air gap) */
    const char *file;  /* the file it was read from: the config or an include (owned by the cfg) */
    unsigned line, col;
} cfg_tenant_t;

/* A directory an include pattern was matched in, and the pattern of one
 * path component its entries were matched against (fnmatch, FNM_PERIOD; a
 * name without `*?[\\` stands for itself): a new entry there that matches
 * changes what the config reads. The directory may not exist (yet). */
typedef struct cfg_glob_dir {
    char *dir;     /* "." or "/" for the current or root directory */
    char *pattern; /* one component */
} cfg_glob_dir_t;

typedef struct cfg {
    char *path; /* file it came from; "<default>" for the embedded one */
    cfg_mode_t mode;

    struct {
        cfg_addr_list_t listen;
        cfg_addr_list_t upstream; /* empty: /etc/resolv.conf */
        uint64_t timeout_ms;
        uint32_t cache_size;
    } dns;

    struct {
        cfg_sinkhole_mode_t mode;
        uint8_t ipv4[4];
        uint8_t ipv6[16];
        uint32_t ttl_s;
    } sinkhole;

    struct {
        cfg_addr_list_t transparent, tls, http;
        /* The explicit proxies (SPEC §2.6): HTTP CONNECT and absolute-form
         * requests, and SOCKS5. */
        cfg_addr_list_t connect, socks;
        cfg_port_list_t tls_ports, http_ports;
        uint32_t max_hello;     /* bytes, counting TLS record headers */
        uint32_t max_http_head; /* bytes */
        uint64_t peek_timeout_ms, connect_timeout_ms, idle_timeout_ms;
        uint32_t max_connections;
    } proxy;

    bool filtering;       /* the `allow` key is present (even as []) */
    filter_rule_t *allow; /* rules in file order; texts owned by the cfg */
    size_t n_allow;
    size_t *allow_lists; /* {list: NAME} entries of the top-level allow: indices into lists */
    size_t n_allow_lists;

    cfg_list_t *lists; /* top-level `lists`, in file order */
    size_t n_lists;
    cfg_tenant_t *tenants; /* `tenants` of the config, then of each included file
                            * (glob matches in sorted order) */
    size_t n_tenants;
    char **files; /* every file read: the config, then the included ones (for reload watching) */
    size_t n_files;
    cfg_glob_dir_t *glob_dirs; /* where `include` patterns looked, in match order (may repeat) */
    size_t n_glob_dirs;

    struct {
        bool watch; /* reload when a file of files or glob_dirs changes */
    } reload;

    struct {
        cfg_log_format_t format;
        cfg_log_level_t level;
        char *file;   /* NULL: stderr */
        bool allowed; /* log allowed decisions at info, not debug */
    } log;

    struct {
        bool enabled; /* `listen` non-empty */
        cfg_addr_t listen;
    } metrics;

    uint64_t shutdown_grace_ms;

    /* Event loops serving DNS and the proxy (`workers`): 1..CFG_WORKERS_MAX,
     * or 0 for `auto` (one per CPU the process may run on). Read at start:
     * a reload that changes it is applied at the next start (logged). */
    unsigned workers;
} cfg_t;

#define CFG_WORKERS_MAX 256

/* One error, 1-based line and column. */
typedef struct cfg_error {
    char *file; /* the included file it is in, or NULL: the diag's file */
    unsigned line, col;
    char *msg;
} cfg_error_t;

typedef struct cfg_diag {
    char *file; /* as given to the loader */
    cfg_error_t *items;
    size_t n;
} cfg_diag_t;

/* Load and validate a file. On success returns 0 with *out set; on a config
 * with errors returns -EINVAL with *out NULL and every error in *diag; on a
 * file that cannot be read returns its -errno with one error (line 0) in
 * *diag. *diag is always initialised and must be freed with cfg_diag_free. */
int cfg_load_file(const char *path, cfg_t **out, cfg_diag_t *diag);

/* The same for YAML text in memory; name is what errors call the file (and
 * files[0]). It reads no file: `include` patterns are checked but match nothing. */
int cfg_load_string(const char *name, const char *text, size_t len, cfg_t **out, cfg_diag_t *diag);

/* The embedded default config (SPEC §3 without `allow`). */
int cfg_load_default(cfg_t **out);

/* The embedded default's YAML text (for --help and docs). */
extern const char cfg_default_yaml[];

void cfg_free(cfg_t *cfg);
void cfg_diag_free(cfg_diag_t *diag);

/* Print every error as "FILE:LINE:COL: message\n" (line 0: "FILE: message"). */
void cfg_diag_print(const cfg_diag_t *diag, FILE *f);

/* The file error e is in: its own (an included file) or the diag's (NULL if neither). */
const char *cfg_error_file(const cfg_diag_t *diag, const cfg_error_t *e);

/* Parse helpers, shared with the CLI (`moat explain FILE TARGET PORT`). */
/* Duration "250ms", "2s", "5m", "1h" (a bare number is an error). 0 or -EINVAL. */
int cfg_parse_duration(const char *s, size_t len, uint64_t *ms);
/* "IP", "IP:PORT", "[IPv6]:PORT"; default_port used when no port is given
 * (pass 0 to require a port). 0 or -EINVAL. */
int cfg_parse_hostport(const char *s, size_t len, uint16_t default_port, cfg_addr_t *out);
/* "443" or "8000-8100". 0 or -EINVAL (port 0, over 65535, lo > hi). */
int cfg_parse_port_range(const char *s, size_t len, filter_port_range_t *out);

#endif
