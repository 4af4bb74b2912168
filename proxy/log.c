/* proxy/log.c: text / JSON Lines log sink (SPEC §4). */
#include "proxy/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Longest line we build; longer messages are cut (never split). */
#define LOG_LINE_MAX 4096

static struct {
    int fd; /* STDERR_FILENO or an opened log.file */
    bool json;
    cfg_log_level_t level;
    bool allowed_info;
} log_state = {STDERR_FILENO, false, CFG_LOG_INFO, false};

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

int log_configure(const cfg_t *cfg)
{
    int fd = STDERR_FILENO;
    if (cfg->log.file) {
        fd = open(cfg->log.file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (fd < 0)
            return -errno;
    }
    if (log_state.fd != STDERR_FILENO)
        close(log_state.fd);
    log_state.fd = fd;
    log_state.json = cfg->log.format == CFG_LOG_JSON;
    log_state.level = cfg->log.level;
    log_state.allowed_info = cfg->log.allowed;
    return 0;
}

void log_shutdown(void)
{
    if (log_state.fd != STDERR_FILENO)
        close(log_state.fd);
    log_state.fd = STDERR_FILENO;
    log_state.json = false;
    log_state.level = CFG_LOG_INFO;
    log_state.allowed_info = false;
}

static uint64_t log_dropped;

uint64_t log_dropped_lines(void)
{
    return log_dropped;
}

bool log_enabled(cfg_log_level_t level)
{
    return level >= log_state.level;
}

const char *log_escape(const char *in, size_t len, bool json, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    if (cap == 0)
        return out;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        char tmp[8];
        size_t n = 0;
        if (c == '"' || c == '\\') {
            tmp[n++] = '\\';
            tmp[n++] = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            tmp[n++] = (char)c;
        } else if (json) {
            memcpy(tmp, "\\u00", 4);
            n = 4;
            tmp[n++] = hex[c >> 4];
            tmp[n++] = hex[c & 15];
        } else {
            tmp[n++] = '\\';
            tmp[n++] = 'x';
            tmp[n++] = hex[c >> 4];
            tmp[n++] = hex[c & 15];
        }
        if (o + n >= cap)
            break;
        memcpy(out + o, tmp, n);
        o += n;
    }
    out[o] = '\0';
    return out;
}

/* A line under construction; appends never overflow, they cut. */
typedef struct log_line {
    char buf[LOG_LINE_MAX];
    size_t len;
    bool first_field;
} log_line_t;

static void line_put(log_line_t *l, const char *s, size_t n)
{
    size_t room = sizeof l->buf - 2 - l->len; /* keep space for "}\n" */
    if (n > room)
        n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void line_puts(log_line_t *l, const char *s)
{
    line_put(l, s, strlen(s));
}

static void line_escaped(log_line_t *l, const char *s, size_t n)
{
    char tmp[LOG_LINE_MAX];
    log_escape(s, n, log_state.json, tmp, sizeof tmp);
    line_puts(l, tmp);
}

/* Text: ` key=value` (value quoted when it has a space or is empty).
 * JSON: `,"key":"value"`. */
static void line_field(log_line_t *l, const char *key, const char *val, size_t val_len)
{
    if (log_state.json) {
        line_puts(l, ",\"");
        line_puts(l, key);
        line_puts(l, "\":\"");
        line_escaped(l, val, val_len);
        line_puts(l, "\"");
        return;
    }
    line_puts(l, " ");
    line_puts(l, key);
    line_puts(l, "=");
    bool quote = val_len == 0 || memchr(val, ' ', val_len) != NULL;
    if (quote)
        line_puts(l, "\"");
    line_escaped(l, val, val_len);
    if (quote)
        line_puts(l, "\"");
}

static void line_field_s(log_line_t *l, const char *key, const char *val)
{
    if (val)
        line_field(l, key, val, strlen(val));
}

/* Numbers are JSON numbers, not strings. */
static void line_field_u(log_line_t *l, const char *key, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof num, "%llu", (unsigned long long)v);
    if (log_state.json) {
        line_puts(l, ",\"");
        line_puts(l, key);
        line_puts(l, "\":");
        line_puts(l, num);
        return;
    }
    line_puts(l, " ");
    line_puts(l, key);
    line_puts(l, "=");
    line_puts(l, num);
}

static void line_begin(log_line_t *l, cfg_log_level_t level, const char *msg)
{
    struct timespec ts;
    struct tm tm;
    char when[40];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%03ldZ", ts.tv_nsec / 1000000L);

    l->len = 0;
    if (log_state.json) {
        line_puts(l, "{\"time\":\"");
        line_puts(l, when);
        line_puts(l, "\",\"level\":\"");
        line_puts(l, log_level_names[level]);
        line_puts(l, "\",\"msg\":\"");
        line_escaped(l, msg, strlen(msg));
        line_puts(l, "\"");
    } else {
        line_puts(l, when);
        line_puts(l, " ");
        line_puts(l, log_level_names[level]);
        line_puts(l, " ");
        /* Free text from our own code; still escaped so a name quoted in a
         * message cannot start a new line. */
        line_escaped(l, msg, strlen(msg));
    }
}

static void line_end(log_line_t *l)
{
    if (log_state.json)
        l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
    const char *p = l->buf;
    size_t left = l->len;
    while (left > 0) {
        ssize_t w = write(log_state.fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* a log that cannot be written must not stop the gate */
        p += w;
        left -= (size_t)w;
    }
}

void log_msg(cfg_log_level_t level, const char *const *kv, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    log_line_t line;
    line_begin(&line, level, msg);
    for (size_t i = 0; kv && kv[i] && kv[i + 1]; i += 2)
        line_field_s(&line, kv[i], kv[i + 1]);
    line_end(&line);
}

void log_decision(const log_decision_t *d)
{
    bool allowed = d->verdict == FILTER_ALLOW;
    cfg_log_level_t level = allowed && !log_state.allowed_info ? CFG_LOG_DEBUG : CFG_LOG_INFO;
    if (!log_enabled(level))
        return;

    log_line_t line;
    line_begin(&line, level, "decision");
    line_field_s(&line, "kind", d->kind);
    line_field_s(&line, "listener", d->listener);
    line_field_s(&line, "client", d->client);
    line_field_s(&line, "dest", d->dest);
    if (d->dest_port > 0)
        line_field_u(&line, "port", (uint64_t)d->dest_port);
    if (d->name)
        line_field(&line, "name", d->name, d->name_len);
    line_field_s(&line, "qtype", d->qtype);
    line_field_s(&line, "rcode", d->rcode);
    line_field_s(&line, "verdict", allowed ? "allow" : "block");
    line_field_s(&line, "reason", d->reason);
    if (d->rule) {
        line_field_s(&line, "rule", d->rule->text);
        line_field_u(&line, "rule_line", d->rule->line);
    }
    if (d->audit)
        line_field_s(&line, "audit", "passed");
    if (d->kind && strcmp(d->kind, "tcp") == 0) {
        line_field_u(&line, "bytes_up", d->bytes_up);
        line_field_u(&line, "bytes_down", d->bytes_down);
        line_field_u(&line, "duration_ms", d->duration_ms);
    }
    line_end(&line);
}
