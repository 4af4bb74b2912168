/* tests/core/test_log.c: the log (core/log.h): escaping of hostile bytes,
 * every JSON line valid JSON with the decision fields, lines never cut or
 * interleaved, the bounded queue dropping and counting lines when the sink
 * lags and announcing the gap, reopen after a rename, and a shutdown that
 * flushes everything (and gives up on a sink that never drains). */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "core/log.h"

/* ---- helpers ------------------------------------------------------------------- */

static char tmpdir[64];

static void mk_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/moat-test-log-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static char *tmp_path(const char *name)
{
    static char buf[4][128];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 128, "%s/%s", tmpdir, name);
    return p;
}

static void rm_tmpdir(void)
{
    const char *names[] = {"log", "log.1", "fifo"};
    for (size_t i = 0; i < 3; i++)
        unlink(tmp_path(names[i]));
    rmdir(tmpdir);
}

static void configure(const char *format, const char *file, const char *level, bool allowed)
{
    char yaml[512];
    snprintf(yaml, sizeof yaml, "log: {format: %s, level: %s, allowed: %s%s%s}\n", format, level,
             allowed ? "true" : "false", file ? ", file: " : "", file ? file : "");
    cfg_t *cfg = NULL;
    cfg_diag_t diag;
    int rc = cfg_load_string("t.yaml", yaml, strlen(yaml), &cfg, &diag);
    cr_assert_eq(rc, 0, "config: %s", diag.n ? diag.items[0].msg : "?");
    cfg_diag_free(&diag);
    cr_assert_eq(log_configure(cfg), 0);
    cfg_free(cfg);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s", path);
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    size_t k;
    while ((k = fread(b + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            cap *= 2;
            b = realloc(b, cap + 1);
        }
    }
    fclose(f);
    b[n] = '\0';
    if (len)
        *len = n;
    return b;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* ---- a small strict JSON reader ----------------------------------------------------- */

typedef struct jfield {
    char key[64];
    char val[8192]; /* a string decoded (\u00XX as that byte), or a number as text */
    bool is_str;
} jfield_t;

typedef struct jobj {
    jfield_t f[32];
    size_t n;
} jobj_t;

static bool j_ws(const char **p)
{
    while (**p == ' ' || **p == '\t')
        (*p)++;
    return true;
}

static int j_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A JSON string at *p into out (bytes; \u00XX gives that byte). */
static bool j_string(const char **p, char *out, size_t cap)
{
    size_t o = 0;
    if (**p != '"')
        return false;
    (*p)++;
    for (;;) {
        unsigned char c = (unsigned char)**p;
        if (c == '"') {
            (*p)++;
            break;
        }
        if (c < 0x20 || c >= 0x7f)
            return false; /* raw control bytes (and, from moat, any non-ASCII) */
        int ch = c;
        if (c == '\\') {
            (*p)++;
            char e = **p;
            const char *simple = "\"\\/bfnrt";
            const char *map = "\"\\/\b\f\n\r\t";
            const char *s = strchr(simple, e);
            if (e && s) {
                ch = map[s - simple];
            } else if (e == 'u') {
                int v = 0;
                for (int i = 1; i <= 4; i++) {
                    int h = j_hex((*p)[i]);
                    if (h < 0)
                        return false;
                    v = v * 16 + h;
                }
                if (v > 0xff)
                    return false; /* moat only writes \u00XX */
                ch = v;
                *p += 4;
            } else {
                return false;
            }
        }
        if (o + 1 < cap)
            out[o++] = (char)ch;
        (*p)++;
    }
    out[o] = '\0';
    return true;
}

static bool j_number(const char **p, char *out, size_t cap)
{
    const char *s = *p;
    if (**p == '-')
        (*p)++;
    if (**p < '0' || **p > '9')
        return false;
    if (**p == '0' && (*p)[1] >= '0' && (*p)[1] <= '9')
        return false;
    while (**p >= '0' && **p <= '9')
        (*p)++;
    size_t n = (size_t)(*p - s);
    if (n >= cap)
        return false;
    memcpy(out, s, n);
    out[n] = '\0';
    return true;
}

/* One line: exactly one flat object of string / number / true values. */
static bool j_object(const char *line, jobj_t *o)
{
    const char *p = line;
    o->n = 0;
    j_ws(&p);
    if (*p++ != '{')
        return false;
    j_ws(&p);
    if (*p == '}')
        return p[1] == '\0';
    for (;;) {
        if (o->n == 32)
            return false;
        jfield_t *f = &o->f[o->n++];
        j_ws(&p);
        if (!j_string(&p, f->key, sizeof f->key))
            return false;
        j_ws(&p);
        if (*p++ != ':')
            return false;
        j_ws(&p);
        if (*p == '"') {
            f->is_str = true;
            if (!j_string(&p, f->val, sizeof f->val))
                return false;
        } else if (strncmp(p, "true", 4) == 0) {
            f->is_str = false;
            strcpy(f->val, "true");
            p += 4;
        } else {
            f->is_str = false;
            if (!j_number(&p, f->val, sizeof f->val))
                return false;
        }
        for (size_t i = 0; i + 1 < o->n; i++)
            if (strcmp(o->f[i].key, f->key) == 0)
                return false; /* a forged duplicate key */
        j_ws(&p);
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p++ != '}')
            return false;
        j_ws(&p);
        return *p == '\0';
    }
}

static const jfield_t *j_get(const jobj_t *o, const char *key)
{
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->f[i].key, key) == 0)
            return &o->f[i];
    return NULL;
}

/* Split text into lines (modifies it); returns the count. */
static size_t split_lines(char *text, char **lines, size_t max)
{
    size_t n = 0;
    for (char *p = text, *nl; *p && n < max; p = nl + 1) {
        nl = strchr(p, '\n');
        cr_assert_not_null(nl, "the last line ends with a newline");
        *nl = '\0';
        lines[n++] = p;
    }
    return n;
}

/* ---- escaping ------------------------------------------------------------------------ */

Test(log, escape_every_byte_text_and_json)
{
    char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (char)i;
    char out[2048];
    for (int json = 0; json < 2; json++) {
        log_escape(all, sizeof all, json, out, sizeof out);
        /* Only printable ASCII comes out, and every '"' is escaped. */
        for (const char *p = out; *p; p++) {
            cr_assert(*p >= 0x20 && *p < 0x7f, "byte %02x", (unsigned char)*p);
            if (*p == '"')
                cr_assert_eq(p[-1], '\\');
        }
        /* 95 printable bytes, 2 of them escaped as 2, 161 others as 4 or 6. */
        cr_assert_eq(strlen(out), 93 + 2 * 2 + 161 * (json ? 6 : 4));
    }
    cr_assert_str_eq(log_escape("a\"b\\c\n\x7f\xff", 8, false, out, sizeof out),
                     "a\\\"b\\\\c\\x0a\\x7f\\xff");
    cr_assert_str_eq(log_escape("a\"b\\c\n\x7f\xff", 8, true, out, sizeof out),
                     "a\\\"b\\\\c\\u000a\\u007f\\u00ff");
    cr_assert_str_eq(log_escape("x\0y", 3, true, out, sizeof out), "x\\u0000y");
}

Test(log, escape_stops_before_a_partial_escape)
{
    char out[8];
    /* "ab" then \u000a (6) does not fit in 8 with the NUL: stop after "ab". */
    cr_assert_str_eq(log_escape("ab\ncd", 5, true, out, sizeof out), "ab");
    cr_assert_str_eq(log_escape("abcdefghij", 10, true, out, sizeof out), "abcdefg");
    char one[1] = {'z'};
    cr_assert_str_eq(log_escape("abc", 3, false, one, 1), "");
}

/* ---- JSON lines ---------------------------------------------------------------------- */

static const filter_rule_info_t RULE = {
    .kind = FILTER_RULE_NAME, .text = "*.example.com", .line = 7};

Test(log, json_lines_are_valid_json_with_the_decision_fields, .init = mk_tmpdir, .fini = rm_tmpdir)
{
    char *path = tmp_path("log");
    configure("json", path, "debug", false);
    const char hostile[] = "ev\"il\n{\"verdict\":\"allow\"}\\\x01\xc3\xa9\x7f";
    log_info("plain start-up message");
    log_info("a message quoting %s", hostile);
    const char *kv[] = {"file", hostile, "at", "3:4", NULL};
    log_msg(CFG_LOG_ERROR, kv, "config error: %s", "x");
    log_decision_t dns = {
        .kind = "dns",
        .listener = "dns",
        .client = "127.0.0.1:40000",
        .name = hostile,
        .name_len = sizeof hostile - 1,
        .qtype = "A",
        .rcode = "NOERROR",
        .decision = {.verdict = FILTER_BLOCK, .reason = FILTER_REASON_NOT_ALLOWED},
        .bytes_up = 40,
        .bytes_down = 56,
        .duration_ms = 0};
    log_decision(&dns);
    log_decision_t tcp = {
        .kind = "tcp",
        .listener = "tls",
        .client = "[::1]:40001",
        .dest = "198.18.0.7",
        .dest_port = 443,
        .name = "a.example.com",
        .name_len = 13,
        .decision = {.verdict = FILTER_ALLOW, .reason = FILTER_REASON_ALLOWLIST, .rule = &RULE},
        .bytes_up = 517,
        .bytes_down = 4096,
        .duration_ms = 12};
    log_decision(&tcp);
    /* A name far too long for a line (8 KiB of hostile bytes, as an HTTP Host
     * header could be): left out whole, the line still valid JSON. */
    char big[8192];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i % 3 == 0 ? '\n' : i % 3 == 1 ? '"' : 0xfe);
    dns.name = big;
    dns.name_len = sizeof big;
    log_decision(&dns);
    log_shutdown();

    char *text = slurp(path, NULL);
    char *lines[16];
    size_t n = split_lines(text, lines, 16);
    cr_assert_eq(n, 6, "one line per record");
    static jobj_t o;
    for (size_t i = 0; i < n; i++) {
        cr_assert(j_object(lines[i], &o), "line %zu is one valid JSON object: %s", i, lines[i]);
        cr_assert_not_null(j_get(&o, "time"));
        cr_assert_not_null(j_get(&o, "level"));
        cr_assert_not_null(j_get(&o, "msg"));
    }
    cr_assert(j_object(lines[1], &o));
    cr_assert_str_eq(j_get(&o, "msg")->val,
                     "a message quoting ev\"il\n{\"verdict\":\"allow\"}\\"
                     "\x01\xc3\xa9\x7f",
                     "the message comes back byte for byte");
    cr_assert(j_object(lines[2], &o));
    cr_assert_str_eq(j_get(&o, "level")->val, "error");
    cr_assert_str_eq(j_get(&o, "file")->val, hostile);
    cr_assert_str_eq(j_get(&o, "at")->val, "3:4");

    cr_assert(j_object(lines[3], &o));
    cr_assert_str_eq(j_get(&o, "msg")->val, "decision");
    cr_assert_str_eq(j_get(&o, "level")->val, "info", "blocked: info");
    cr_assert_str_eq(j_get(&o, "name")->val, hostile, "the guest's name, escaped and intact");
    cr_assert_str_eq(j_get(&o, "verdict")->val, "block", "not forged by the name");
    cr_assert_str_eq(j_get(&o, "reason")->val, "not-allowed");
    cr_assert_str_eq(j_get(&o, "kind")->val, "dns");
    cr_assert_str_eq(j_get(&o, "listener")->val, "dns");
    cr_assert_str_eq(j_get(&o, "client")->val, "127.0.0.1:40000");
    cr_assert_str_eq(j_get(&o, "qtype")->val, "A");
    cr_assert_str_eq(j_get(&o, "bytes_up")->val, "40");
    cr_assert(!j_get(&o, "bytes_up")->is_str, "numbers are JSON numbers");
    cr_assert_str_eq(j_get(&o, "bytes_down")->val, "56");
    cr_assert_str_eq(j_get(&o, "duration_ms")->val, "0");
    cr_assert_null(j_get(&o, "dest"));
    cr_assert_null(j_get(&o, "truncated"));

    cr_assert(j_object(lines[4], &o));
    cr_assert_str_eq(j_get(&o, "level")->val, "debug", "allowed: debug");
    cr_assert_str_eq(j_get(&o, "verdict")->val, "allow");
    cr_assert_str_eq(j_get(&o, "dest")->val, "198.18.0.7");
    cr_assert_str_eq(j_get(&o, "port")->val, "443");
    cr_assert_str_eq(j_get(&o, "rule")->val, "*.example.com");
    cr_assert_str_eq(j_get(&o, "rule_line")->val, "7");
    cr_assert_str_eq(j_get(&o, "bytes_up")->val, "517");
    cr_assert_str_eq(j_get(&o, "bytes_down")->val, "4096");
    cr_assert_str_eq(j_get(&o, "duration_ms")->val, "12");

    cr_assert(j_object(lines[5], &o));
    cr_assert_str_eq(j_get(&o, "verdict")->val, "block", "fields after the name survive");
    cr_assert_str_eq(j_get(&o, "bytes_down")->val, "56");
    const jfield_t *name = j_get(&o, "name");
    cr_assert_not_null(name);
    cr_assert(strlen(name->val) > 0 && memcmp(name->val, big, strlen(name->val)) == 0,
              "a long name is cut at a whole escape and stays a prefix");
    free(text);
}

/* The time of each line is the wall clock when it was logged, also across a
 * second boundary (log.c formats the seconds once per second and must notice
 * the next one). */
static time_t parse_time(const char *when, long *ms)
{
    struct tm tm = {0};
    const char *rest = strptime(when, "%Y-%m-%dT%H:%M:%S", &tm);
    cr_assert_not_null(rest, "time \"%s\" is ISO 8601", when);
    cr_assert(strlen(rest) == 5 && rest[0] == '.' && rest[4] == 'Z', "milliseconds and Z: %s",
              when);
    *ms = strtol(rest + 1, NULL, 10);
    return timegm(&tm);
}

Test(log, every_line_has_its_own_time_across_seconds, .init = mk_tmpdir, .fini = rm_tmpdir)
{
    char *path = tmp_path("log");
    configure("json", path, "info", false);
    time_t logged[3];
    for (size_t i = 0; i < 3; i++) {
        /* wait for the next second to begin, then log at once */
        time_t t0 = time(NULL);
        while (time(NULL) == t0)
            usleep(2000);
        logged[i] = time(NULL);
        log_info("line %zu", i);
    }
    log_shutdown();

    char *text = slurp(path, NULL);
    char *lines[8];
    cr_assert_eq(split_lines(text, lines, 8), 3);
    static jobj_t o;
    for (size_t i = 0; i < 3; i++) {
        cr_assert(j_object(lines[i], &o), "%s", lines[i]);
        long ms;
        time_t t = parse_time(j_get(&o, "time")->val, &ms);
        cr_assert(ms >= 0 && ms <= 999);
        cr_assert(t >= logged[i] && t <= logged[i] + 1, "line %zu: logged at %lld, says %lld", i,
                  (long long)logged[i], (long long)t);
        if (i > 0)
            cr_assert_gt(t, logged[i - 1], "line %zu carries a later second than line %zu", i,
                         i - 1);
    }
    free(text);
}

Test(log, text_lines_keep_the_format_and_cannot_be_split, .init = mk_tmpdir, .fini = rm_tmpdir)
{
    char *path = tmp_path("log");
    configure("text", path, "info", true);
    log_decision_t d = {
        .kind = "dns",
        .listener = "dns",
        .client = "127.0.0.1:5",
        .name = "a b\nc",
        .name_len = 5,
        .decision = {.verdict = FILTER_ALLOW, .reason = FILTER_REASON_ALLOWLIST, .rule = &RULE}};
    log_decision(&d);
    log_debug("not written at info");
    log_warn("w %d", 1);
    log_shutdown();
    char *text = slurp(path, NULL);
    cr_assert_eq(count_lines(text), 2, "%s", text);
    /* TIME LEVEL message key=value ... with TIME as 2026-01-02T03:04:05.678Z */
    char *second = strchr(text, '\n') + 1;
    cr_assert_eq(text[4], '-');
    cr_assert_eq(text[23], 'Z');
    cr_assert(strncmp(text + 24,
                      " info decision kind=dns listener=dns client=127.0.0.1:5 tenant=- "
                      "name=\"a b\\x0ac\" verdict=allow reason=allowlist "
                      "rule=*.example.com rule_line=7 bytes_up=0 bytes_down=0 "
                      "duration_ms=0\n",
                      strlen(" info decision kind=dns listener=dns client=127.0.0.1:5 tenant=- "
                             "name=\"a b\\x0ac\" verdict=allow reason=allowlist "
                             "rule=*.example.com rule_line=7 bytes_up=0 bytes_down=0 "
                             "duration_ms=0\n")) == 0,
              "%s", text);
    cr_assert(strncmp(second + 24, " warn w 1\n", 10) == 0, "%s", second);
    free(text);
}

/* ---- the queue ------------------------------------------------------------------------- */

Test(log, full_queue_drops_whole_lines_counts_them_and_says_so, .init = mk_tmpdir,
     .fini = rm_tmpdir)
{
    char *path = tmp_path("log");
    configure("json", path, "info", false);
    log_test_set_capacity(8192);
    log_test_hold(true); /* a sink that takes nothing for now */
    uint64_t before = log_dropped_lines();
    enum { N = 500 };
    for (int i = 0; i < N; i++)
        log_info("line %04d of a burst", i);
    uint64_t dropped = log_dropped_lines() - before;
    cr_assert_gt(dropped, 0, "a full queue drops");
    cr_assert_lt(dropped, N, "what fits is kept");
    log_test_hold(false); /* the sink catches up */
    log_shutdown();
    cr_assert_eq(log_dropped_lines() - before, dropped, "nothing more dropped by the flush");

    char *text = slurp(path, NULL);
    char *lines[N + 8];
    size_t n = split_lines(text, lines, N + 8);
    cr_assert_eq(n, (size_t)N - dropped + 1, "kept lines, then the notice");
    static jobj_t o;
    size_t kept = N - (size_t)dropped;
    size_t bytes = 0;
    for (size_t i = 0; i < kept; i++) {
        cr_assert(j_object(lines[i], &o), "%s", lines[i]);
        char want[48];
        snprintf(want, sizeof want, "line %04zu of a burst", i);
        cr_assert_str_eq(j_get(&o, "msg")->val, want, "the first lines, in order, whole");
        bytes += strlen(lines[i]) + 1;
    }
    cr_assert_leq(bytes, 8192, "the queue held no more than its capacity");
    cr_assert_gt(bytes + strlen(lines[0]) + 1, 8192, "and dropped only when full");
    cr_assert(j_object(lines[kept], &o), "%s", lines[kept]);
    char want[80];
    snprintf(want, sizeof want, "log: %llu lines dropped (sink too slow)",
             (unsigned long long)dropped);
    cr_assert_str_eq(j_get(&o, "msg")->val, want);
    cr_assert_str_eq(j_get(&o, "level")->val, "warn");
    char num[24];
    snprintf(num, sizeof num, "%llu", (unsigned long long)dropped);
    cr_assert_str_eq(j_get(&o, "dropped")->val, num);
    free(text);
}

Test(log, shutdown_flushes_everything_queued, .init = mk_tmpdir, .fini = rm_tmpdir)
{
    char *path = tmp_path("log");
    configure("text", path, "info", false);
    log_test_hold(true);
    uint64_t before = log_dropped_lines();
    for (int i = 0; i < 1000; i++)
        log_info("queued %d", i);
    log_shutdown(); /* releases the hold and writes it all before returning */
    cr_assert_eq(log_dropped_lines(), before);
    char *text = slurp(path, NULL);
    cr_assert_eq(count_lines(text), 1000);
    cr_assert_not_null(strstr(text, " info queued 999\n"));
    free(text);
    /* After shutdown lines go straight to stderr; logging again works. */
    configure("text", path, "info", false);
    log_info("again");
    log_shutdown();
    text = slurp(path, NULL);
    cr_assert_eq(count_lines(text), 1001);
    free(text);
}

typedef struct burst {
    int id, n;
} burst_t;

static void *burst_main(void *arg)
{
    burst_t *b = arg;
    for (int i = 0; i < b->n; i++)
        log_info("thread %d line %d padding-padding-padding-padding", b->id, i);
    return NULL;
}

Test(log, threads_log_whole_lines, .init = mk_tmpdir, .fini = rm_tmpdir)
{
    char *path = tmp_path("log");
    configure("json", path, "info", false);
    uint64_t before = log_dropped_lines();
    enum { T = 4, N = 3000 };
    pthread_t th[T];
    burst_t b[T];
    for (int i = 0; i < T; i++) {
        b[i] = (burst_t){i, N};
        cr_assert_eq(pthread_create(&th[i], NULL, burst_main, &b[i]), 0);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    log_shutdown();
    uint64_t dropped = log_dropped_lines() - before;
    size_t len;
    char *text = slurp(path, &len);
    static char *lines[T * N + 16];
    size_t n = split_lines(text, lines, T * N + 16);
    static jobj_t o;
    size_t ours = 0, notices = 0;
    int last[T];
    for (int i = 0; i < T; i++)
        last[i] = -1;
    for (size_t i = 0; i < n; i++) {
        cr_assert(j_object(lines[i], &o), "never interleaved: %s", lines[i]);
        int t, k;
        if (sscanf(j_get(&o, "msg")->val, "thread %d line %d", &t, &k) == 2) {
            cr_assert(t >= 0 && t < T && k > last[t], "each thread's lines in order");
            last[t] = k;
            ours++;
        } else {
            cr_assert_not_null(strstr(j_get(&o, "msg")->val, "lines dropped"));
            notices++;
        }
    }
    cr_assert_eq(ours + dropped, (size_t)T * N, "every line written or counted");
    cr_assert_eq(notices > 0, dropped > 0);
    free(text);
}

/* ---- sinks ------------------------------------------------------------------------------ */

Test(log, reopen_after_rename_moves_on_to_a_new_file, .init = mk_tmpdir, .fini = rm_tmpdir)
{
    char *path = tmp_path("log");
    char *old = tmp_path("log.1");
    configure("text", path, "info", false);
    log_info("before rotation");
    cr_assert_eq(rename(path, old), 0);
    log_info("after rename, before reopen");
    cr_assert(log_to_file());
    cr_assert_eq(log_reopen(), 0);
    log_info("after reopen");
    log_shutdown();
    char *a = slurp(old, NULL), *b = slurp(path, NULL);
    cr_assert_eq(count_lines(a), 2, "%s", a);
    cr_assert_not_null(strstr(a, "before rotation"));
    cr_assert_not_null(strstr(a, "after rename, before reopen"), "queued before: old file");
    cr_assert_eq(count_lines(b), 1, "%s", b);
    cr_assert_not_null(strstr(b, "after reopen"));
    free(a);
    free(b);
}

Test(log, reopen_failure_keeps_the_old_file, .init = mk_tmpdir, .fini = rm_tmpdir)
{
    char *path = tmp_path("log");
    char *old = tmp_path("log.1");
    configure("text", path, "info", false);
    log_info("one");
    cr_assert_eq(rename(path, old), 0);
    cr_assert_eq(mkdir(path, 0700), 0); /* the path is now a directory */
    cr_assert_eq(log_reopen(), -EISDIR);
    log_info("two");
    log_shutdown();
    rmdir(path);
    char *a = slurp(old, NULL);
    cr_assert_eq(count_lines(a), 2, "%s", a);
    cr_assert_not_null(strstr(a, "two"));
    free(a);
}

Test(log, reopen_on_stderr_is_a_no_op)
{
    configure("text", NULL, "info", false);
    cr_assert(!log_to_file());
    cr_assert_eq(log_reopen(), 0);
    log_shutdown();
}

Test(log, a_fifo_without_reader_is_an_error_not_a_hang, .init = mk_tmpdir, .fini = rm_tmpdir)
{
    char *fifo = tmp_path("fifo");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    char yaml[256];
    snprintf(yaml, sizeof yaml, "log: {file: %s}\n", fifo);
    cfg_t *cfg;
    cfg_diag_t diag;
    cr_assert_eq(cfg_load_string("t.yaml", yaml, strlen(yaml), &cfg, &diag), 0);
    cfg_diag_free(&diag);
    cr_assert_eq(log_configure(cfg), -ENXIO);
    cfg_free(cfg);
    log_shutdown();
}

Test(log, shutdown_gives_up_on_a_sink_that_never_drains, .init = mk_tmpdir, .fini = rm_tmpdir,
     .timeout = 30)
{
    char *fifo = tmp_path("fifo");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    int rd = open(fifo, O_RDONLY | O_NONBLOCK); /* held open, never read */
    cr_assert_geq(rd, 0);
    configure("text", fifo, "info", false);
    uint64_t before = log_dropped_lines();
    /* Far more than a pipe holds (64 KiB) plus the queue (1 MiB). */
    for (int i = 0; i < 40000; i++)
        log_info("line %d of a log nobody reads, padded to some length ..........", i);
    cr_assert_gt(log_dropped_lines(), before, "the full queue dropped lines");
    log_shutdown(); /* returns (bounded), counting what it could not write */
    uint64_t after = log_dropped_lines();
    /* Everything is accounted for: the whole lines the FIFO holds (a line
     * cut by giving up counts as dropped) plus what was dropped. */
    static char buf[1 << 20];
    size_t len = 0;
    ssize_t k;
    while (len < sizeof buf - 1 && (k = read(rd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)k;
    close(rd);
    buf[len] = '\0';
    size_t got = 0;
    for (char *p = buf, *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
        *nl = '\0';
        if (!strstr(p, "lines dropped (sink too slow)"))
            got++;
    }
    cr_assert_eq(got + (after - before), 40000, "read %zu dropped %llu", got,
                 (unsigned long long)(after - before));
}
