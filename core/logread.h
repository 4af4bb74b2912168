/* core/logread.h: the reader of one decision log line, the twin of
 * core/log.c's writer (SPEC §4), for `moat learn`.
 *
 * A line is text (`TIME LEVEL decision key=value key="v w" ...`) or JSON
 * (`{"time":...,"msg":"decision","key":"value","port":443,...}`). Values
 * come back unescaped: the name is guest bytes (an SNI, a Host, a DNS
 * question) and may hold any byte, NUL included, once its \xHH or \u00HH
 * escapes are undone, so the caller judges it (filter_name_normalize)
 * before trusting it. The line is read through filter/cursor.h; nothing is
 * allocated, and a line that breaks the format, or a value longer than its
 * field, is refused whole.
 */
#ifndef MOAT_CORE_LOGREAD_H
#define MOAT_CORE_LOGREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest value kept: the writer's own bound on an escaped value
 * (LOG_VALUE_MAX in core/log.c) is longer than any unescaped value fits. */
#define LOGREAD_NAME_MAX  1024
#define LOGREAD_SHORT_MAX 96

typedef enum logread_status {
    LOGREAD_DECISION = 0,  /* a decision line, read into the record */
    LOGREAD_OTHER = 1,     /* a well-formed line that is not a decision */
    LOGREAD_MALFORMED = 2, /* not a log line of ours (or a value too long) */
} logread_status_t;

/* One decision line. Fields the line does not carry are empty strings
 * (port: 0). Short fields are NUL-terminated; name holds name_len bytes
 * (NUL-terminated too, but may hold NULs of its own). */
typedef struct logread_rec {
    char time[LOGREAD_SHORT_MAX];
    char kind[LOGREAD_SHORT_MAX];     /* "dns" or "tcp" */
    char listener[LOGREAD_SHORT_MAX]; /* "dns", "tls", "http", "transparent" */
    char client[LOGREAD_SHORT_MAX];   /* "198.18.0.2:40000", "[fd00::2]:40000" */
    char tenant[LOGREAD_SHORT_MAX];   /* "-": none */
    char dest[LOGREAD_SHORT_MAX];     /* an address, no port */
    char qtype[LOGREAD_SHORT_MAX];
    char verdict[LOGREAD_SHORT_MAX]; /* "allow" or "block" */
    char reason[LOGREAD_SHORT_MAX];
    unsigned port;
    bool has_name;
    bool audit;     /* audit=passed */
    bool truncated; /* the writer left a value out */
    size_t name_len;
    char name[LOGREAD_NAME_MAX + 1];
} logread_rec_t;

/* Read one line (without its newline) into *rec. */
logread_status_t logread_line(const char *line, size_t len, logread_rec_t *rec);

#endif
