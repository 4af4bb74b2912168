/* tests/core/test_logread.c: the decision line reader (core/logread.h):
 * every field of lines core/log.c writes, text and JSON, read back; guest
 * bytes (control bytes, quotes, backslashes, spaces, NUL) unescaped
 * exactly; hostile lines (unterminated quotes, bad escapes, raw control
 * bytes, huge values, NUL) refused whole. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "core/log.h"
#include "core/logread.h"

static char path[64];

/* Write one decision with core/log.c in the given format and return the
 * line it wrote (without its newline; static). */
static const char *write_one(const char *format, const log_decision_t *d)
{
    static char line[8192];
    snprintf(path, sizeof path, "/tmp/moat-test-logread-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    char yaml[256];
    snprintf(yaml, sizeof yaml, "log: {format: %s, file: %s, level: debug}\n", format, path);
    cfg_t *cfg = NULL;
    cfg_diag_t diag;
    cr_assert_eq(cfg_load_string("t.yaml", yaml, strlen(yaml), &cfg, &diag), 0);
    cfg_diag_free(&diag);
    cr_assert_eq(log_configure(cfg), 0);
    cfg_free(cfg);
    log_decision(d);
    log_shutdown();
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(line, sizeof line, f));
    fclose(f);
    unlink(path);
    size_t n = strlen(line);
    cr_assert(n > 0 && line[n - 1] == '\n');
    line[n - 1] = '\0';
    return line;
}

static log_decision_t tcp_decision(const char *name, size_t name_len)
{
    static const filter_rule_info_t rule = {.text = "\"*.example.com\"", .line = 7};
    log_decision_t d = {
        .kind = "tcp",
        .listener = "transparent",
        .client = "[fd00::2]:40000",
        .tenant = "box-1",
        .dest = "192.0.2.7",
        .dest_port = 22,
        .name = name,
        .name_len = name_len,
        .decision = {.verdict = FILTER_BLOCK,
                     .reason = FILTER_REASON_NOT_ALLOWED,
                     .audit = true,
                     .rule = &rule},
        .bytes_up = 12,
        .bytes_down = 34,
        .duration_ms = 5,
    };
    return d;
}

static void check_tcp(const logread_rec_t *r, const char *name, size_t name_len)
{
    cr_assert_eq(strlen(r->time), 24, "time %s", r->time);
    cr_assert_str_eq(r->kind, "tcp");
    cr_assert_str_eq(r->listener, "transparent");
    cr_assert_str_eq(r->client, "[fd00::2]:40000");
    cr_assert_str_eq(r->tenant, "box-1");
    cr_assert_str_eq(r->dest, "192.0.2.7");
    cr_assert_eq(r->port, 22);
    cr_assert_str_eq(r->verdict, "block");
    cr_assert_str_eq(r->reason, "not-allowed");
    cr_assert(r->audit);
    cr_assert_not(r->truncated);
    cr_assert(r->has_name);
    cr_assert_eq(r->name_len, name_len);
    cr_assert_eq(memcmp(r->name, name, name_len), 0);
}

Test(logread, text_and_json_every_field)
{
    const char *formats[] = {"text", "json"};
    for (size_t i = 0; i < 2; i++) {
        log_decision_t d = tcp_decision("git.example.com", 15);
        const char *line = write_one(formats[i], &d);
        logread_rec_t r;
        cr_assert_eq(logread_line(line, strlen(line), &r), LOGREAD_DECISION, "%s", line);
        check_tcp(&r, "git.example.com", 15);
    }
}

Test(logread, dns_line)
{
    log_decision_t d = {
        .kind = "dns",
        .listener = "dns",
        .client = "10.0.0.2:5353",
        .name = "Api.Example.com.",
        .name_len = 16,
        .qtype = "HTTPS",
        .rcode = "NOERROR",
        .decision = {.verdict = FILTER_ALLOW, .reason = FILTER_REASON_ALLOWLIST},
    };
    const char *formats[] = {"text", "json"};
    for (size_t i = 0; i < 2; i++) {
        const char *line = write_one(formats[i], &d);
        logread_rec_t r;
        cr_assert_eq(logread_line(line, strlen(line), &r), LOGREAD_DECISION, "%s", line);
        cr_assert_str_eq(r.kind, "dns");
        cr_assert_str_eq(r.tenant, "-");
        cr_assert_str_eq(r.qtype, "HTTPS");
        cr_assert_str_eq(r.verdict, "allow");
        cr_assert_str_eq(r.reason, "allowlist");
        cr_assert_not(r.audit);
        cr_assert_eq(r.port, 0);
        cr_assert_str_eq(r.dest, "");
        cr_assert_str_eq(r.name, "Api.Example.com.");
    }
}

/* Guest bytes come back exactly: control bytes, quote, backslash, space,
 * NUL, high bytes. */
Test(logread, hostile_names_round_trip)
{
    static const char name[] = "a\x01\"b\\c d\ne\x7f\xff\0z.example.com";
    size_t n = sizeof name - 1;
    const char *formats[] = {"text", "json"};
    for (size_t i = 0; i < 2; i++) {
        log_decision_t d = tcp_decision(name, n);
        const char *line = write_one(formats[i], &d);
        cr_assert_null(strchr(line, '\n'));
        logread_rec_t r;
        cr_assert_eq(logread_line(line, strlen(line), &r), LOGREAD_DECISION, "%s", line);
        check_tcp(&r, name, n);
    }
}

Test(logread, not_a_decision)
{
    logread_rec_t r;
    const char *t = "2026-12-06T17:00:00.000Z info moat listening on 127.0.0.1:53 x=1";
    cr_assert_eq(logread_line(t, strlen(t), &r), LOGREAD_OTHER);
    const char *j = "{\"time\":\"x\",\"level\":\"info\",\"msg\":\"reload ok\",\"generation\":2}";
    cr_assert_eq(logread_line(j, strlen(j), &r), LOGREAD_OTHER);
    const char *t2 = "2026-12-06T17:00:00.000Z info decisions kind=tcp verdict=block";
    cr_assert_eq(logread_line(t2, strlen(t2), &r), LOGREAD_OTHER);
}

Test(logread, hostile_lines)
{
    const char *bad[] = {
        "",
        "x",
        "2026 info decision",                                            /* no kind, no verdict */
        "2026 info decision kind=tcp verdict=block name=\"unterminated", /* open quote */
        "2026 info decision kind=tcp verdict=block name=a\\q",           /* unknown escape */
        "2026 info decision kind=tcp verdict=block name=a\\x4",          /* short escape */
        "2026 info decision kind=tcp verdict=block name=a\\x4g",
        "2026 info decision kind=tcp verdict=block name=a\x01", /* raw control byte */
        "2026 info decision kind=tcp verdict=block port=70000",
        "2026 info decision kind=tcp verdict=block port=",
        "2026 info decision kind=tcp verdict=block  name=a", /* two spaces */
        "2026 info decision kind=tcp verdict=block =a",
        "2026 info decision kind=tcp verdict=block Name=a",
        "{\"msg\":\"decision\",\"kind\":\"tcp\",\"verdict\":\"block\"", /* no closing brace */
        "{\"msg\":\"decision\",\"kind\":\"tcp\",\"verdict\":\"block\",\"name\":\"a}",
        "{\"msg\":\"decision\",\"kind\":\"tcp\",\"verdict\":\"block\",\"name\":\"\\u0100\"}",
        "{\"msg\":\"decision\",\"kind\":\"tcp\",\"verdict\":\"block\",\"x\":{}}",
        "{\"msg\":\"decision\",\"kind\":\"tcp\",\"verdict\":\"block\"} trailing",
        "{\"msg\":\"decision\",\"kind\":\"tcp\",\"verdict\":\"block\",}",
        "{\"kind\":\"tcp\",\"verdict\":\"block\"}", /* no msg */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        logread_rec_t r;
        cr_assert_eq(logread_line(bad[i], strlen(bad[i]), &r), LOGREAD_MALFORMED, "%s", bad[i]);
        cr_assert_eq(r.kind[0], '\0');
    }
    /* A NUL inside the line (not escaped) is no line of ours. */
    static const char nul[] = "2026 info decision kind=tcp verdict=block name=a\0b";
    logread_rec_t r;
    cr_assert_eq(logread_line(nul, sizeof nul - 1, &r), LOGREAD_MALFORMED);
    /* A short field with an escaped NUL. */
    const char *nul2 = "2026 info decision kind=t\\x00cp verdict=block";
    cr_assert_eq(logread_line(nul2, strlen(nul2), &r), LOGREAD_MALFORMED);
}

Test(logread, huge_values)
{
    size_t n = 1u << 20;
    char *line = malloc(n + 64);
    cr_assert_not_null(line);
    int k = snprintf(line, 64, "2026 info decision kind=tcp verdict=block name=");
    memset(line + k, 'a', n);
    cr_assert_eq(logread_line(line, (size_t)k + n, &(logread_rec_t){0}), LOGREAD_MALFORMED);
    /* A name of exactly the longest kept length reads. */
    size_t len = (size_t)k + LOGREAD_NAME_MAX;
    logread_rec_t r;
    cr_assert_eq(logread_line(line, len, &r), LOGREAD_DECISION);
    cr_assert_eq(r.name_len, LOGREAD_NAME_MAX);
    /* A short field one byte too long. */
    k = snprintf(line, 64, "2026 info decision verdict=block kind=");
    memset(line + k, 'b', LOGREAD_SHORT_MAX);
    cr_assert_eq(logread_line(line, (size_t)k + LOGREAD_SHORT_MAX, &r), LOGREAD_MALFORMED);
    free(line);
}

Test(logread, truncated_mark_and_crlf)
{
    const char *t = "2026 info decision kind=tcp verdict=block truncated=1\r";
    logread_rec_t r;
    cr_assert_eq(logread_line(t, strlen(t), &r), LOGREAD_DECISION);
    cr_assert(r.truncated);
    const char *j =
        "{\"msg\":\"decision\",\"kind\":\"dns\",\"verdict\":\"block\",\"truncated\":true}";
    cr_assert_eq(logread_line(j, strlen(j), &r), LOGREAD_DECISION);
    cr_assert(r.truncated);
    cr_assert_str_eq(r.kind, "dns");
}
