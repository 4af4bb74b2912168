/* core/log.h: the daemon's log (SPEC §4), text or JSON Lines.
 *
 * One process-wide sink (stderr, or log.file). Every line is one record:
 * in text form `TIME LEVEL message key=value ...`, in JSON form one object per
 * line with the same keys, start-up messages included. Strings that come from
 * a guest (names, SNI, Host) are escaped so they can never break a line or
 * forge a field; a value too long for the line is left out whole (the line
 * then ends with `truncated=1` / `"truncated":true`), never cut, so a JSON
 * line stays valid JSON.
 *
 * The log never blocks the loop. A caller formats its line on its own stack
 * and copies it, under a mutex held only for that memcpy, into a bounded
 * queue (two 512 KiB halves, 1 MiB in all). A dedicated writer thread swaps
 * the halves and writes the one it took to the sink while callers fill the
 * other: whole lines, batched, in order, waiting (poll) as long as the sink
 * needs. When the queue is full a line is dropped whole and counted
 * (log_dropped_lines()); once the sink has taken the lines before the gap,
 * the writer adds one line `log: N lines dropped (sink too slow)`. A caller
 * wakes the writer only when it is idle, and a woken writer waits a few
 * milliseconds for more lines (or until 64 KiB are queued) before it takes
 * them, so a busy log costs the loop a memcpy per line and a wake-up per
 * batch, not per line (a writer on the loop's core would otherwise preempt
 * it for every line or two). Lines reach the sink at most that much later.
 * Every function here is thread-safe (the reload worker on libuv's pool
 * logs too).
 *
 * Before log_configure() starts the writer, and after log_shutdown() has
 * stopped it, lines are written at once by the calling thread, so start-up
 * and last words are never lost. log_shutdown() lets the writer flush
 * everything queued (for at most 2 s for a sink that never drains; what is
 * left then is counted as dropped) and joins it.
 *
 * log_configure() and log_reopen() open the new file first and switch only if
 * that worked; the switch is exact: lines queued before it go to the old
 * sink, lines after it to the new one, and the old file is closed by the
 * writer once it is done with it. Files are opened O_APPEND | O_NONBLOCK (a
 * FIFO with no reader is an error at once, not a hang; the writer polls).
 */
#ifndef MOAT_CORE_LOG_H
#define MOAT_CORE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "filter/policy.h"

/* Point the log at cfg's format, level and file, and start the writer thread
 * if it is not running. A file that cannot be opened keeps the previous sink
 * and settings and returns -errno (the caller reports it). A writer thread
 * that cannot be started returns -errno too (lines are then written by the
 * calling thread). Loop thread (or before the loop). */
int log_configure(const cfg_t *cfg);

/* Reopen log.file by its path (SIGUSR1, after logrotate renamed it). The new
 * file is opened first; on failure the old one stays and -errno is returned.
 * 0 also when logging goes to stderr (nothing to reopen). */
int log_reopen(void);

/* True when the log goes to a file (log.file), not stderr. */
bool log_to_file(void);

/* Flush what is queued (bounded: 2 s), join the writer, close a log file,
 * and go back to stderr, text, info. log_configure may be called again. */
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
    const char *tenant;   /* the client's tenant (SPEC §2.7), NULL: none (logged as "-") */
    const char *dest;     /* destination address, or NULL */
    int dest_port;        /* 0 when not known */
    const char *name;     /* SNI, Host or query name as seen (guest bytes) */
    size_t name_len;
    const char *qtype;             /* DNS only: "A", "HTTPS", ... */
    const char *rcode;             /* DNS only: "NOERROR", ... */
    filter_decision_t decision;    /* verdict, reason, rule, audit: written out as text here */
    uint64_t bytes_up, bytes_down; /* TCP: each way; DNS: the query's and the answer's size */
    uint64_t duration_ms;
} log_decision_t;

/* Log a decision: blocked ones at info, allowed ones at debug (info with
 * log.allowed: true). */
void log_decision(const log_decision_t *d);

/* True when log_decision would write a line for dec: a caller that formats
 * addresses for the record asks first, so a decision below the level costs
 * nothing. */
bool log_decision_enabled(const filter_decision_t *dec);

/* Escape guest bytes for a log line into out (always NUL-terminated):
 * printable ASCII except '"' and '\\' as is, everything else as \xHH (text)
 * or \u00HH (json). Stops before an escape that would not fit whole. Returns
 * out. Exposed for tests. */
const char *log_escape(const char *in, size_t len, bool json, char *out, size_t cap);

/* Tests only: while held, the writer takes nothing from the queue, so a test
 * can fill it; log_shutdown() releases it. */
void log_test_hold(bool hold);

/* Tests only: the queue's capacity in bytes (0: the default, 512 KiB a half;
 * larger values are clamped to it). */
void log_test_set_capacity(size_t bytes);

#endif
