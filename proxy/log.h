/* proxy/log.h: the daemon's log (SPEC §4), text or JSON Lines.
 *
 * One process-wide sink (stderr, or log.file). Every line is one record:
 * in text form `TIME LEVEL message key=value ...`, in JSON form one object per
 * line with the same keys, start-up messages included. Strings that come from
 * a guest (names, SNI, Host) are escaped so they can never break a line or
 * forge a field.
 *
 * The sink is set from a config with log_configure() (at start and on every
 * reload). Lines are written with a single write(2) each, so concurrent
 * writers do not interleave inside a line.
 */
#ifndef MOAT_PROXY_LOG_H
#define MOAT_PROXY_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "filter/policy.h"

/* Point the log at cfg's format, level and file. A file that cannot be opened
 * keeps the previous sink and returns -errno (the caller reports it). */
int log_configure(const cfg_t *cfg);

/* Close a log file opened by log_configure (back to stderr, text, info). */
void log_shutdown(void);

/* Lines dropped because the sink could not take them in time (a slow or
 * full log file or pipe); exported as moat_log_dropped_lines_total. */
uint64_t log_dropped_lines(void);

/* True when a record at this level would be written. */
bool log_enabled(cfg_log_level_t level);

/* A free-form message with optional key/value pairs: pass `kv` as
 * alternating key, value C strings ending with NULL, or NULL for none. */
void log_msg(cfg_log_level_t level, const char *const *kv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Shorthands without fields. */
#define log_info(...)  log_msg(CFG_LOG_INFO, NULL, __VA_ARGS__)
#define log_warn(...)  log_msg(CFG_LOG_WARN, NULL, __VA_ARGS__)
#define log_error(...) log_msg(CFG_LOG_ERROR, NULL, __VA_ARGS__)
#define log_debug(...) log_msg(CFG_LOG_DEBUG, NULL, __VA_ARGS__)

/* One decision (SPEC §4). Fields that do not apply are NULL / 0. */
typedef struct log_decision {
    const char *kind;     /* "dns" or "tcp" */
    const char *listener; /* "dns", "tls", "http", "transparent" */
    const char *client;   /* "198.18.0.2:40000" */
    const char *dest;     /* destination address, or NULL */
    int dest_port;        /* 0 when not known */
    const char *name;     /* SNI, Host or query name as seen (guest bytes) */
    size_t name_len;
    const char *qtype; /* DNS only: "A", "HTTPS", ... */
    const char *rcode; /* DNS only: "NOERROR", ... */
    filter_verdict_t verdict;
    const char *reason; /* filter_reason_str() or a proxy reason ("no-sni", ...) */
    const filter_rule_info_t *rule;
    bool audit; /* mode: audit let it through although the verdict is block */
    uint64_t bytes_up, bytes_down;
    uint64_t duration_ms;
} log_decision_t;

/* Log a decision: blocked ones at info, allowed ones at debug (info with
 * log.allowed: true). */
void log_decision(const log_decision_t *d);

/* Escape guest bytes for a log line into out (always NUL-terminated):
 * printable ASCII except '"' and '\\' as is, everything else as \xHH (text)
 * or \u00HH (json). Returns out. Exposed for tests. */
const char *log_escape(const char *in, size_t len, bool json, char *out, size_t cap);

#endif
