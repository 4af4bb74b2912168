/* core/log.c: text / JSON Lines log sink (SPEC §4) with a writer thread
 * (see log.h for the design). */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Longest line we build; a value that does not fit is left out whole. */
#define LOG_LINE_MAX 4096
/* Escaped bytes of one value (a name, a rule) and of a message at most: a
 * decision line always has room for every short field after the name. */
#define LOG_VALUE_MAX 1024
#define LOG_MSG_MAX   2048
/* Room kept at the end of a line for the truncation mark and "}\n". */
#define LOG_TAIL 24
/* Sink switches the writer has not taken yet, at most (more fold into the
 * last one: only if it is stuck on a sink, and still nothing is lost). */
#define LOG_SWITCH_MAX 4
/* One half of the queue; two halves are 1 MiB. */
#define LOG_QUEUE_BYTES (512u * 1024u)
/* How long log_shutdown lets the writer flush, and then wait for it once
 * told to give up. */
#define LOG_FLUSH_MS   2000
#define LOG_ABANDON_MS 1000
/* A woken writer waits this long for more lines, or until this many bytes
 * (at most half the queue) are queued, before it writes: lines then go out
 * in batches. Woken at every idle spell instead, a writer that shares a core
 * with the loop preempts it once for every line or two. */
#define LOG_LINGER_MS  5
#define LOG_WAKE_BYTES (64u * 1024u)

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

/* Read on every log call from any thread; written by log_configure. */
static atomic_int log_level = CFG_LOG_INFO;
static atomic_bool log_json;
static atomic_bool log_allowed_info;
static _Atomic uint64_t log_dropped;
/* Set by log_shutdown when the flush bound is over: the writer gives up. */
static atomic_bool log_abandon;

typedef struct log_switch {
    int fd;       /* the sink lines go to ... */
    size_t split; /* ... from this offset in the fill half on */
} log_switch_t;

typedef struct log_batch {
    char data[LOG_QUEUE_BYTES];
    size_t len;
} log_batch_t;

/* Static: untouched pages cost nothing; no allocation to leak or fail. */
static log_batch_t log_batches[2];

static struct {
    pthread_mutex_t mu;
    pthread_cond_t work;             /* the writer waits here for lines */
    pthread_cond_t done;             /* log_shutdown waits here for the writer to end */
    log_batch_t *fill;               /* callers append here */
    size_t cap;                      /* bytes fill may hold */
    int fd;                          /* the sink for lines queued from now on */
    char *path;                      /* log.file, or NULL for stderr */
    log_switch_t sw[LOG_SWITCH_MAX]; /* switches within fill, by offset */
    size_t n_sw;
    int w_fd;            /* the writer's sink (only the writer touches it while running) */
    int wake_fd;         /* eventfd: tells a polling writer to give up */
    uint64_t unreported; /* drops not yet announced */
    bool running, exited, stopping, waiting, hold, wedged;
    bool lingering; /* the writer is gathering lines (LOG_LINGER_MS) */
    pthread_t thread;
} lq = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .work = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
    .fill = &log_batches[0],
    .cap = LOG_QUEUE_BYTES,
    .fd = STDERR_FILENO,
    .w_fd = STDERR_FILENO,
    .wake_fd = -1,
};

static void log_close_sink(int fd)
{
    if (fd >= 0 && fd != STDERR_FILENO)
        close(fd);
}

/* ---- writing to the sink --------------------------------------------------- */

/* Wait until fd takes bytes. False when told to give up (shutdown bound) or
 * poll itself failed. */
static bool log_wait_writable(int fd)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLOUT}, {.fd = lq.wake_fd, .events = POLLIN}};
    nfds_t n = lq.wake_fd >= 0 ? 2 : 1;
    for (;;) {
        if (atomic_load(&log_abandon))
            return false;
        int r = poll(p, n, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return false;
        if (n == 2 && p[1].revents)
            return false;
        if (p[0].revents)
            return true; /* POLLERR / POLLHUP too: write reports it */
    }
}

/* Write all of p; returns how many bytes were not written (sink error or
 * shutdown bound). Partial writes continue where they stopped, so the
 * reader never sees a line cut off. A blocking fd that is not a regular file
 * (stderr on a pipe, tty or socket: not ours to make non-blocking) is polled
 * first and written at most PIPE_BUF at a time, so a write never blocks past
 * the give-up signal by more than one such chunk. */
static size_t log_write_all(int fd, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    struct stat st;
    int fl = fcntl(fd, F_GETFL);
    bool careful = fl >= 0 && !(fl & O_NONBLOCK) && fstat(fd, &st) == 0 && !S_ISREG(st.st_mode);
    while (n > 0) {
        if (atomic_load(&log_abandon))
            break;
        if (careful && !log_wait_writable(fd))
            break;
        size_t chunk = careful && n > PIPE_BUF ? PIPE_BUF : n;
        ssize_t w = write(fd, p, chunk);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!log_wait_writable(fd))
                break;
            continue;
        }
        break; /* the sink refuses (EPIPE, ENOSPC, EIO...): the rest is lost */
    }
    return n;
}

static uint64_t log_count_lines(const char *p, size_t n)
{
    uint64_t k = 0;
    for (const char *e = p + n; p < e && (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++)
        k++;
    return k;
}

/* ---- building a line --------------------------------------------------------- */

/* A line under construction. A piece that does not fit is left out whole and
 * marks the line truncated; LOG_TAIL bytes stay free for the end. */
typedef struct log_line {
    char buf[LOG_LINE_MAX];
    size_t len;
    bool json;
    bool truncated;
} log_line_t;

static void line_put(log_line_t *l, const char *s, size_t n)
{
    if (n > sizeof l->buf - LOG_TAIL - l->len) {
        l->truncated = true;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void line_puts(log_line_t *l, const char *s)
{
    line_put(l, s, strlen(s));
}

/* Bytes each octet takes once escaped (see log_escape): 1 as is, 2 for '"'
 * and '\\', 0 for the rest (\xHH in text, \u00HH in JSON). */
static const uint8_t log_esc_len[256] = {
    [0x20] = 1, [0x21] = 1, [0x22] = 2, ['#'] = 1, ['$'] = 1,  ['%'] = 1, ['&'] = 1, ['\''] = 1,
    ['('] = 1,  [')'] = 1,  ['*'] = 1,  ['+'] = 1, [','] = 1,  ['-'] = 1, ['.'] = 1, ['/'] = 1,
    ['0'] = 1,  ['1'] = 1,  ['2'] = 1,  ['3'] = 1, ['4'] = 1,  ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1,  ['9'] = 1,  [':'] = 1,  [';'] = 1, ['<'] = 1,  ['='] = 1, ['>'] = 1, ['?'] = 1,
    ['@'] = 1,  ['A'] = 1,  ['B'] = 1,  ['C'] = 1, ['D'] = 1,  ['E'] = 1, ['F'] = 1, ['G'] = 1,
    ['H'] = 1,  ['I'] = 1,  ['J'] = 1,  ['K'] = 1, ['L'] = 1,  ['M'] = 1, ['N'] = 1, ['O'] = 1,
    ['P'] = 1,  ['Q'] = 1,  ['R'] = 1,  ['S'] = 1, ['T'] = 1,  ['U'] = 1, ['V'] = 1, ['W'] = 1,
    ['X'] = 1,  ['Y'] = 1,  ['Z'] = 1,  ['['] = 1, ['\\'] = 2, [']'] = 1, ['^'] = 1, ['_'] = 1,
    ['`'] = 1,  ['a'] = 1,  ['b'] = 1,  ['c'] = 1, ['d'] = 1,  ['e'] = 1, ['f'] = 1, ['g'] = 1,
    ['h'] = 1,  ['i'] = 1,  ['j'] = 1,  ['k'] = 1, ['l'] = 1,  ['m'] = 1, ['n'] = 1, ['o'] = 1,
    ['p'] = 1,  ['q'] = 1,  ['r'] = 1,  ['s'] = 1, ['t'] = 1,  ['u'] = 1, ['v'] = 1, ['w'] = 1,
    ['x'] = 1,  ['y'] = 1,  ['z'] = 1,  ['{'] = 1, ['|'] = 1,  ['}'] = 1, ['~'] = 1,
};

/* Escape in[0..len) into out, writing at most cap bytes (no NUL). Returns
 * the bytes written; *cut is set to the size of the escape that did not fit
 * (0 when all of in was written). */
static size_t log_escape_to(const char *in, size_t len, bool json, char *out, size_t cap,
                            size_t *cut)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i = 0;
    *cut = 0;
    while (i < len) {
        /* A run of octets written as they are, copied at once. */
        size_t j = i;
        while (j < len && log_esc_len[(unsigned char)in[j]] == 1)
            j++;
        if (j > i) {
            size_t run = j - i;
            if (o + run > cap) {
                memcpy(out + o, in + i, cap - o);
                *cut = 1;
                return cap;
            }
            memcpy(out + o, in + i, run);
            o += run;
            i = j;
            if (i == len)
                break;
        }
        unsigned char c = (unsigned char)in[i++];
        size_t n = log_esc_len[c] == 2 ? 2 : json ? 6 : 4;
        if (o + n > cap) {
            *cut = n;
            break;
        }
        if (n == 2) {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else {
            if (json) {
                memcpy(out + o, "\\u00", 4);
                o += 4;
            } else {
                out[o++] = '\\';
                out[o++] = 'x';
            }
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    return o;
}

/* Text: ` key=value` (value quoted when it has a space or is empty).
 * JSON: `,"key":"value"`. Written in place and kept whole or not at all. The
 * escaped value is cut at LOG_VALUE_MAX - 1 bytes, before an escape that
 * would not fit, as log_escape() does with a LOG_VALUE_MAX buffer. */
static void line_field(log_line_t *l, const char *key, const char *val, size_t val_len)
{
    size_t klen = strlen(key);
    bool quote = l->json || val_len == 0 || memchr(val, ' ', val_len) != NULL;
    size_t room = sizeof l->buf - LOG_TAIL - l->len;
    /* ,"key":"  or  ␠key="  or  ␠key= ; then the closing quote. */
    size_t pre = klen + (l->json ? 5 : quote ? 3 : 2), post = quote ? 1 : 0;
    if (pre + post > room) {
        l->truncated = true;
        return;
    }
    char *p = l->buf + l->len;
    size_t n = 0;
    if (l->json) {
        memcpy(p, ",\"", 2);
        memcpy(p + 2, key, klen);
        memcpy(p + 2 + klen, "\":\"", 3);
    } else {
        p[0] = ' ';
        memcpy(p + 1, key, klen);
        p[1 + klen] = '=';
        if (quote)
            p[2 + klen] = '"';
    }
    n = pre;
    size_t cap = room - pre - post, cut;
    if (cap > LOG_VALUE_MAX - 1)
        cap = LOG_VALUE_MAX - 1;
    n += log_escape_to(val, val_len, l->json, p + n, cap, &cut);
    if (cut && n - pre + cut <= LOG_VALUE_MAX - 1) {
        /* Stopped by the line's room, not by the value's cap. */
        l->truncated = true;
        return;
    }
    if (quote)
        p[n++] = '"';
    l->len += n;
}

static void line_field_s(log_line_t *l, const char *key, const char *val)
{
    if (val)
        line_field(l, key, val, strlen(val));
}

/* Numbers are JSON numbers, not strings. */
static void line_field_u(log_line_t *l, const char *key, uint64_t v)
{
    char f[96], digits[24];
    size_t klen = strlen(key), nd = 0, n = 0;
    if (klen > sizeof f - sizeof digits - 8) {
        l->truncated = true;
        return;
    }
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (l->json) {
        memcpy(f, ",\"", 2);
        memcpy(f + 2, key, klen);
        memcpy(f + 2 + klen, "\":", 2);
        n = klen + 4;
    } else {
        f[0] = ' ';
        memcpy(f + 1, key, klen);
        f[1 + klen] = '=';
        n = klen + 2;
    }
    while (nd)
        f[n++] = digits[--nd];
    line_put(l, f, n);
}

static void line_begin(log_line_t *l, bool json, cfg_log_level_t level, const char *msg)
{
    /* The date and time to the second are formatted once per second, not
     * per line: at info level a busy gate logs a line per connection, and
     * gmtime_r + strftime were most of a line's cost. Per thread, so no lock. */
    static _Thread_local time_t sec_cached = -1;
    static _Thread_local char sec_text[32];
    static _Thread_local size_t sec_len;
    struct timespec ts;
    char when[40];
    char esc[LOG_MSG_MAX];
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != sec_cached) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        sec_len = strftime(sec_text, sizeof sec_text, "%Y-%m-%dT%H:%M:%S", &tm);
        sec_cached = sec_len ? ts.tv_sec : -1;
    }
    memcpy(when, sec_text, sec_len);
    long ms = ts.tv_nsec / 1000000L;
    when[sec_len] = '.';
    when[sec_len + 1] = (char)('0' + ms / 100 % 10);
    when[sec_len + 2] = (char)('0' + ms / 10 % 10);
    when[sec_len + 3] = (char)('0' + ms % 10);
    when[sec_len + 4] = 'Z';
    when[sec_len + 5] = '\0';

    l->len = 0;
    l->json = json;
    l->truncated = false;
    /* Free text from our own code; still escaped so a name quoted in a
     * message cannot start a new line or end the JSON string. */
    log_escape(msg, strlen(msg), json, esc, sizeof esc);
    if (json) {
        line_puts(l, "{\"time\":\"");
        line_puts(l, when);
        line_puts(l, "\",\"level\":\"");
        line_puts(l, log_level_names[level]);
        line_puts(l, "\",\"msg\":\"");
        line_puts(l, esc);
        line_puts(l, "\"");
    } else {
        line_puts(l, when);
        line_puts(l, " ");
        line_puts(l, log_level_names[level]);
        line_puts(l, " ");
        line_puts(l, esc);
    }
}

/* Close the line (the tail room always holds this). */
static void line_finish(log_line_t *l)
{
    const char *mark = l->json ? ",\"truncated\":true" : " truncated=1";
    if (l->truncated) {
        memcpy(l->buf + l->len, mark, strlen(mark));
        l->len += strlen(mark);
    }
    if (l->json)
        l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
}

/* ---- the queue ---------------------------------------------------------------- */

static void log_emit(const char *line, size_t len)
{
    pthread_mutex_lock(&lq.mu);
    if (!lq.running) {
        /* No writer (start-up, after shutdown): write now, in order. */
        (void)log_write_all(lq.fd, line, len);
        pthread_mutex_unlock(&lq.mu);
        return;
    }
    log_batch_t *b = lq.fill;
    if (b->len >= lq.cap || len > lq.cap - b->len) {
        lq.unreported++;
        atomic_fetch_add_explicit(&log_dropped, 1, memory_order_relaxed);
        pthread_mutex_unlock(&lq.mu);
        return;
    }
    memcpy(b->data + b->len, line, len);
    b->len += len;
    size_t enough = lq.cap / 2 < LOG_WAKE_BYTES ? lq.cap / 2 : LOG_WAKE_BYTES;
    bool wake = !lq.hold && (lq.waiting || (lq.lingering && b->len >= enough));
    if (wake)
        lq.waiting = lq.lingering = false; /* one wake-up per idle spell, per batch */
    pthread_mutex_unlock(&lq.mu);
    if (wake)
        pthread_cond_signal(&lq.work);
}

static void line_emit(log_line_t *l)
{
    line_finish(l);
    log_emit(l->buf, l->len);
}

/* Caller holds lq.mu. */
static bool log_pending(void)
{
    return lq.fill->len > 0 || lq.n_sw > 0 || lq.unreported > 0;
}

/* Caller holds lq.mu. Let the lines that follow join this batch (see
 * LOG_LINGER_MS) when it is small; log_emit ends the wait early once there
 * are enough of them, log_shutdown at once. False when the queue was held
 * meanwhile (take nothing). */
static bool log_linger(void)
{
    size_t enough = lq.cap / 2 < LOG_WAKE_BYTES ? lq.cap / 2 : LOG_WAKE_BYTES;
    if (lq.stopping || lq.n_sw > 0 || lq.fill->len >= enough)
        return true;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_nsec += LOG_LINGER_MS * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    lq.lingering = true;
    while (lq.lingering && !lq.stopping)
        if (pthread_cond_clockwait(&lq.work, &lq.mu, CLOCK_MONOTONIC, &dl) == ETIMEDOUT)
            break;
    lq.lingering = false;
    return !(lq.hold && !lq.stopping);
}

static void *log_writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lq.mu);
    for (;;) {
        while (!lq.stopping && (lq.hold || !log_pending())) {
            lq.waiting = true;
            pthread_cond_wait(&lq.work, &lq.mu);
            lq.waiting = false;
        }
        if (!log_pending() || atomic_load(&log_abandon))
            break;
        if (!log_linger())
            continue; /* held meanwhile: take nothing */
        log_batch_t *b = lq.fill;
        lq.fill = b == &log_batches[0] ? &log_batches[1] : &log_batches[0];
        log_switch_t sw[LOG_SWITCH_MAX];
        size_t n_sw = lq.n_sw;
        memcpy(sw, lq.sw, sizeof sw);
        lq.n_sw = 0;
        uint64_t dropped = lq.unreported;
        lq.unreported = 0;
        pthread_mutex_unlock(&lq.mu);

        /* Each part to the sink that was current when it was queued. */
        uint64_t lost = 0;
        size_t pos = 0;
        for (size_t i = 0; i <= n_sw; i++) {
            size_t end = i < n_sw ? sw[i].split : b->len;
            size_t left = log_write_all(lq.w_fd, b->data + pos, end - pos);
            lost += log_count_lines(b->data + end - left, left);
            if (i < n_sw) {
                if (sw[i].fd != lq.w_fd)
                    log_close_sink(lq.w_fd);
                lq.w_fd = sw[i].fd;
            }
            pos = end;
        }
        b->len = 0;
        if (dropped > 0) {
            /* The sink took the lines before the gap: say how big it was. */
            log_line_t l;
            char msg[80];
            snprintf(msg, sizeof msg, "log: %llu lines dropped (sink too slow)",
                     (unsigned long long)dropped);
            line_begin(&l, atomic_load(&log_json), CFG_LOG_WARN, msg);
            line_field_u(&l, "dropped", dropped);
            line_finish(&l);
            (void)log_write_all(lq.w_fd, l.buf, l.len); /* not counted: not a line of theirs */
        }

        pthread_mutex_lock(&lq.mu);
        if (lost > 0) {
            lq.unreported += lost;
            atomic_fetch_add_explicit(&log_dropped, lost, memory_order_relaxed);
        }
    }
    if (atomic_load(&log_abandon)) {
        uint64_t lost = log_count_lines(lq.fill->data, lq.fill->len);
        atomic_fetch_add_explicit(&log_dropped, lost, memory_order_relaxed);
        lq.fill->len = 0;
    }
    lq.exited = true;
    pthread_cond_broadcast(&lq.done);
    pthread_mutex_unlock(&lq.mu);
    return NULL;
}

/* Caller holds lq.mu, the writer is not running. Signals stay with the loop
 * thread: the writer blocks them all (a SIGPIPE from a closed FIFO becomes
 * EPIPE). */
static int log_start_writer(void)
{
    if (lq.wedged)
        return -EBUSY;
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0)
        return -errno;
    lq.wake_fd = efd;
    lq.w_fd = lq.fd;
    lq.exited = lq.stopping = lq.waiting = false;
    atomic_store(&log_abandon, false);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&lq.thread, NULL, log_writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        close(efd);
        lq.wake_fd = -1;
        return -rc;
    }
    lq.running = true;
    return 0;
}

/* Make fd (owned from now on; path taken too) the sink for lines queued from
 * now on. Caller holds lq.mu. */
static void log_set_sink(int fd, char *path)
{
    if (path != lq.path) {
        free(lq.path);
        lq.path = path;
    }
    if (!lq.running) {
        if (fd != lq.fd)
            log_close_sink(lq.fd);
    } else if (lq.n_sw == LOG_SWITCH_MAX) {
        /* The writer is stuck on an older sink: lines since the last switch
         * go to the newest sink instead (the one between never saw a byte). */
        log_switch_t *last = &lq.sw[LOG_SWITCH_MAX - 1];
        if (last->fd != fd)
            log_close_sink(last->fd);
        last->fd = fd;
    } else {
        lq.sw[lq.n_sw++] = (log_switch_t){fd, lq.fill->len};
        if (lq.waiting && !lq.hold) {
            lq.waiting = false;
            pthread_cond_signal(&lq.work);
        }
    }
    lq.fd = fd;
}

static int log_open(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0640);
    return fd < 0 ? -errno : fd;
}

int log_configure(const cfg_t *cfg)
{
    int fd = STDERR_FILENO;
    char *path = NULL;
    if (cfg->log.file) {
        if (!(path = strdup(cfg->log.file)))
            return -ENOMEM;
        fd = log_open(path);
        if (fd < 0) {
            free(path);
            return fd;
        }
    }
    pthread_mutex_lock(&lq.mu);
    log_set_sink(fd, path);
    atomic_store(&log_json, cfg->log.format == CFG_LOG_JSON);
    atomic_store(&log_level, (int)cfg->log.level);
    atomic_store(&log_allowed_info, cfg->log.allowed);
    int rc = lq.running ? 0 : log_start_writer();
    pthread_mutex_unlock(&lq.mu);
    return rc; /* no writer: lines are written at once, as before start */
}

int log_reopen(void)
{
    pthread_mutex_lock(&lq.mu);
    char *path = lq.path ? strdup(lq.path) : NULL;
    bool to_file = lq.path != NULL;
    pthread_mutex_unlock(&lq.mu);
    if (!to_file)
        return 0;
    if (!path)
        return -ENOMEM;
    int fd = log_open(path);
    if (fd < 0) {
        free(path);
        return fd;
    }
    pthread_mutex_lock(&lq.mu);
    log_set_sink(fd, path);
    pthread_mutex_unlock(&lq.mu);
    return 0;
}

bool log_to_file(void)
{
    pthread_mutex_lock(&lq.mu);
    bool f = lq.path != NULL;
    pthread_mutex_unlock(&lq.mu);
    return f;
}

static void log_deadline(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Caller holds lq.mu. False when the writer did not end within ms. */
static bool log_wait_exit(long ms)
{
    struct timespec dl;
    log_deadline(&dl, ms);
    while (!lq.exited)
        if (pthread_cond_timedwait(&lq.done, &lq.mu, &dl) == ETIMEDOUT)
            break;
    return lq.exited;
}

void log_shutdown(void)
{
    pthread_mutex_lock(&lq.mu);
    if (lq.running) {
        lq.stopping = true;
        lq.hold = false;
        pthread_cond_signal(&lq.work);
        if (!log_wait_exit(LOG_FLUSH_MS)) {
            /* The sink does not drain: give up on what is left. */
            atomic_store(&log_abandon, true);
            uint64_t one = 1;
            ssize_t w = write(lq.wake_fd, &one, sizeof one);
            (void)w;
            (void)log_wait_exit(LOG_ABANDON_MS);
        }
        lq.running = false;
        if (lq.exited) {
            pthread_mutex_unlock(&lq.mu);
            pthread_join(lq.thread, NULL);
            pthread_mutex_lock(&lq.mu);
            for (size_t i = 0; i < lq.n_sw; i++) /* not taken: gave up */
                if (lq.sw[i].fd != lq.w_fd)
                    log_close_sink(lq.sw[i].fd);
            log_close_sink(lq.w_fd);
            close(lq.wake_fd);
            lq.wake_fd = -1;
        } else {
            /* Stuck inside one write to a blocking stderr: leave it (and
             * its fds) alone; the process is about to exit. */
            pthread_detach(lq.thread);
            lq.wedged = true;
        }
        lq.n_sw = 0;
        lq.fill->len = 0;
        lq.unreported = 0;
        atomic_store(&log_abandon, false);
    } else {
        log_close_sink(lq.fd);
    }
    lq.fd = STDERR_FILENO;
    lq.w_fd = STDERR_FILENO;
    free(lq.path);
    lq.path = NULL;
    lq.hold = false;
    lq.cap = LOG_QUEUE_BYTES;
    atomic_store(&log_json, false);
    atomic_store(&log_level, (int)CFG_LOG_INFO);
    atomic_store(&log_allowed_info, false);
    pthread_mutex_unlock(&lq.mu);
}

uint64_t log_dropped_lines(void)
{
    return atomic_load_explicit(&log_dropped, memory_order_relaxed);
}

void log_test_hold(bool hold)
{
    pthread_mutex_lock(&lq.mu);
    lq.hold = hold;
    if (!hold && lq.waiting) {
        lq.waiting = false;
        pthread_cond_signal(&lq.work);
    }
    pthread_mutex_unlock(&lq.mu);
}

void log_test_set_capacity(size_t bytes)
{
    pthread_mutex_lock(&lq.mu);
    lq.cap = bytes == 0 || bytes > LOG_QUEUE_BYTES ? LOG_QUEUE_BYTES : bytes;
    pthread_mutex_unlock(&lq.mu);
}

bool log_enabled(cfg_log_level_t level)
{
    return (int)level >= atomic_load_explicit(&log_level, memory_order_relaxed);
}

const char *log_escape(const char *in, size_t len, bool json, char *out, size_t cap)
{
    size_t cut;
    if (cap == 0)
        return out;
    out[log_escape_to(in, len, json, out, cap - 1, &cut)] = '\0';
    return out;
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
    line_begin(&line, atomic_load_explicit(&log_json, memory_order_relaxed), level, msg);
    for (size_t i = 0; kv && kv[i] && kv[i + 1]; i += 2)
        line_field_s(&line, kv[i], kv[i + 1]);
    line_emit(&line);
}

static cfg_log_level_t log_decision_level(const filter_decision_t *dec)
{
    bool allowed = dec->verdict == FILTER_ALLOW;
    bool loud = !allowed || atomic_load_explicit(&log_allowed_info, memory_order_relaxed);
    return loud ? CFG_LOG_INFO : CFG_LOG_DEBUG;
}

bool log_decision_enabled(const filter_decision_t *dec)
{
    return log_enabled(log_decision_level(dec));
}

void log_decision(const log_decision_t *d)
{
    const filter_decision_t *dec = &d->decision;
    cfg_log_level_t level = log_decision_level(dec);
    if (!log_enabled(level))
        return;

    log_line_t line;
    line_begin(&line, atomic_load_explicit(&log_json, memory_order_relaxed), level, "decision");
    line_field_s(&line, "kind", d->kind);
    line_field_s(&line, "listener", d->listener);
    line_field_s(&line, "client", d->client);
    line_field_s(&line, "tenant", d->tenant ? d->tenant : "-");
    line_field_s(&line, "dest", d->dest);
    if (d->dest_port > 0)
        line_field_u(&line, "port", (uint64_t)d->dest_port);
    if (d->name)
        line_field(&line, "name", d->name, d->name_len);
    line_field_s(&line, "qtype", d->qtype);
    line_field_s(&line, "rcode", d->rcode);
    line_field_s(&line, "verdict", dec->verdict == FILTER_ALLOW ? "allow" : "block");
    line_field_s(&line, "reason", filter_reason_str(dec->reason));
    if (dec->rule) {
        line_field_s(&line, "rule", dec->rule->text);
        line_field_u(&line, "rule_line", dec->rule->line);
    }
    if (dec->audit)
        line_field_s(&line, "audit", "passed");
    /* SPEC §4: bytes each way and duration on every decision (DNS: the
     * query's and the answer's size). */
    line_field_u(&line, "bytes_up", d->bytes_up);
    line_field_u(&line, "bytes_down", d->bytes_down);
    line_field_u(&line, "duration_ms", d->duration_ms);
    line_emit(&line);
}
