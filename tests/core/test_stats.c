/* tests/core/test_stats.c: the counters behind /metrics (core/stats.h) and
 * their Prometheus text rendering (format 0.0.4). */
#include <criterion/criterion.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/stats.h"

static const stats_gauges_t G0 = {.config_generation = 1, .start_time_seconds = 1700000000.25};

static char *render(const stats_gauges_t *g)
{
    char *out = NULL;
    size_t len = 0;
    cr_assert_eq(stats_render(g ? g : &G0, &out, &len), 0);
    cr_assert_not_null(out);
    cr_assert_eq(strlen(out), len, "len is the text's length");
    return out;
}

/* The value of the sample whose name and labels are exactly series, or -1
 * when there is no such line. */
static double value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return -1;
}

/* One expected sample: its series (name and labels, as value_of takes
 * them) and value (-1: no such line). */
typedef struct {
    const char *series;
    double value;
} expect_t;

static void check_values(const char *text, const expect_t *want, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double v = value_of(text, want[i].series);
        cr_assert_eq(v, want[i].value, "%s = %g, want %g", want[i].series, v, want[i].value);
    }
}

#define CHECK_VALUES(text, want) check_values((text), (want), sizeof(want) / sizeof((want)[0]))

static bool is_name_start(int c)
{
    return isalpha(c) || c == '_' || c == ':';
}

static bool is_name_char(int c)
{
    return isalnum(c) || c == '_' || c == ':';
}

/* One sample line `name{label="value",...} value`: checks the syntax and
 * copies the metric name out. */
static void check_sample(const char *line, size_t len, char *name, size_t cap)
{
    size_t i = 0;
    cr_assert(len > 0 && is_name_start((unsigned char)line[0]), "%.*s", (int)len, line);
    while (i < len && is_name_char((unsigned char)line[i]))
        i++;
    cr_assert_lt(i, cap);
    memcpy(name, line, i);
    name[i] = '\0';
    if (i < len && line[i] == '{') {
        i++;
        for (;;) {
            cr_assert(i < len && is_name_start((unsigned char)line[i]), "%.*s", (int)len, line);
            while (i < len && is_name_char((unsigned char)line[i]))
                i++;
            cr_assert(i + 1 < len && line[i] == '=' && line[i + 1] == '"', "%.*s", (int)len, line);
            i += 2;
            while (i < len && line[i] != '"') {
                if (line[i] == '\\')
                    i++;
                i++;
            }
            cr_assert(i < len, "unterminated label value: %.*s", (int)len, line);
            i++;
            if (i < len && line[i] == ',') {
                i++;
                continue;
            }
            cr_assert(i < len && line[i] == '}', "%.*s", (int)len, line);
            i++;
            break;
        }
    }
    cr_assert(i < len && line[i] == ' ', "%.*s", (int)len, line);
    i++;
    char num[64];
    cr_assert(len - i > 0 && len - i < sizeof num, "%.*s", (int)len, line);
    memcpy(num, line + i, len - i);
    num[len - i] = '\0';
    char *end;
    double v = strtod(num, &end);
    cr_assert(*end == '\0' && end != num, "value '%s' in %.*s", num, (int)len, line);
    cr_assert(!isnan(v));
}

/* Every line is a HELP, a TYPE or a sample of a family whose TYPE came
 * before (a histogram's _bucket/_sum/_count included). */
static void check_format(const char *text)
{
    char types[64][96];
    size_t n_types = 0;
    cr_assert(strlen(text) > 0 && text[strlen(text) - 1] == '\n', "ends with a newline");
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        cr_assert_not_null(nl);
        size_t len = (size_t)(nl - p);
        if (strncmp(p, "# HELP ", 7) == 0) {
            cr_assert(len > 7 && is_name_start((unsigned char)p[7]));
        } else if (strncmp(p, "# TYPE ", 7) == 0) {
            char name[96], type[32];
            cr_assert_eq(sscanf(p + 7, "%95s %31s", name, type), 2);
            cr_assert(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                          strcmp(type, "histogram") == 0,
                      "type %s", type);
            cr_assert_lt(n_types, 64);
            for (size_t i = 0; i < n_types; i++)
                cr_assert_str_neq(types[i], name, "TYPE %s given twice", name);
            snprintf(types[n_types++], sizeof types[0], "%s", name);
        } else {
            cr_assert_neq(p[0], '#', "only HELP and TYPE comments: %.*s", (int)len, p);
            char name[128];
            check_sample(p, len, name, sizeof name);
            bool found = false;
            for (size_t i = 0; i < n_types && !found; i++) {
                size_t tl = strlen(types[i]);
                found = strcmp(name, types[i]) == 0 ||
                        (strncmp(name, types[i], tl) == 0 &&
                         (strcmp(name + tl, "_bucket") == 0 || strcmp(name + tl, "_sum") == 0 ||
                          strcmp(name + tl, "_count") == 0));
            }
            cr_assert(found, "sample %s has no TYPE before it", name);
            cr_assert(strncmp(name, "moat_", 5) == 0, "%s", name);
        }
        p = nl + 1;
    }
}

/* Every reason moat logs for a TCP decision: filter_reason_str,
 * filter_tls_reason, filter_http_reason and the proxy's own (proxy/conn.c,
 * proxy/proxy.c). */
static const char *const reasons[] = {
    "allowlist",      "filter-off",      "not-allowed",   "port-not-allowed", "bad-name",
    "refused-range",  "private-range",   "own-listener",  "no-sni",           "bad-sni",
    "multi-sni",      "not-tls",         "hello-too-big", "no-host",          "multi-host",
    "bad-host",       "not-http",        "head-too-big",  "host-conflict",    "client-closed",
    "peek-timeout",   "connect-timeout", "dial-failed",   "no-address",       "policy-reload",
    "max-connections"};

#define N_REASONS (sizeof reasons / sizeof reasons[0])

/* The reason a log line's text names (FILTER_REASON_COUNT, out of range,
 * for any other string): stats take the enum. */
static filter_reason_t reason_of(const char *text)
{
    for (int r = 0; text && r < FILTER_REASON_COUNT; r++)
        if (strcmp(filter_reason_str((filter_reason_t)r), text) == 0)
            return (filter_reason_t)r;
    return FILTER_REASON_COUNT;
}

TestSuite(stats, .init = stats_reset);

Test(stats, empty_render_parses_and_has_fixed_families)
{
    char *t = render(NULL);
    check_format(t);
    static const expect_t want[] = {
        {"moat_dns_cache_hits_total", 0},
        {"moat_connections_active{listener=\"tls\"}", 0},
        {"moat_bytes_total{listener=\"transparent\",direction=\"down\"}", 0},
        {"moat_config_reloads_total{result=\"error\"}", 0},
        {"moat_config_generation", 1},
        {"moat_start_time_seconds", 1700000000.25},
        {"moat_dns_upstream_latency_seconds_count", 0},
        {"moat_proxy_dialcache_hits_total", 0},
        {"moat_proxy_dialcache_misses_total", 0},
        {"moat_proxy_dialcache_coalesced_total", 0},
        {"moat_proxy_dialcache_expired_total", 0},
        {"moat_proxy_dialcache_evictions_total", 0},
        {"moat_proxy_dialcache_entries", 0},
    };
    CHECK_VALUES(t, want);
    /* Reason- and rcode-labelled series appear once counted. */
    cr_assert_null(strstr(t, "moat_dns_queries_total{"));
    cr_assert_null(strstr(t, "moat_connections_total{"));
    cr_assert_not_null(strstr(t, "# TYPE moat_dns_queries_total counter\n"));
    cr_assert_not_null(strstr(t, "# TYPE moat_dns_upstream_latency_seconds histogram\n"));
    cr_assert_not_null(strstr(t, "moat_build_info{version=\""));
    free(t);
}

Test(stats, dns_counters_move_by_verdict_and_rcode)
{
    for (int i = 0; i < 3; i++)
        stats_dns_query(0, STATS_VERDICT_ALLOW, 0);
    stats_dns_query(0, STATS_VERDICT_ALLOW, 3);
    stats_dns_query(0, STATS_VERDICT_BLOCK, 0);
    stats_dns_query(0, STATS_VERDICT_BLOCK, 0);
    stats_dns_query(0, STATS_VERDICT_AUDIT, 2);
    stats_dns_query(0, STATS_VERDICT_NONE, 1);
    stats_dns_query(0, STATS_VERDICT_NONE, -1);
    stats_dns_query(0, STATS_VERDICT_ALLOW, 12);  /* unassigned */
    stats_dns_query(0, STATS_VERDICT_ALLOW, 999); /* out of range */
    stats_dns_query(0, STATS_VERDICT_ALLOW, 23);
    stats_dns_query(0, STATS_VERDICT_COUNT, 0); /* not a verdict: ignored */
    stats_dns_cache(true);
    stats_dns_cache(false);
    stats_dns_cache(false);
    char *t = render(NULL);
    check_format(t);
    static const expect_t want[] = {
        {"moat_dns_queries_total{verdict=\"allow\",rcode=\"NOERROR\"}", 3},
        {"moat_dns_queries_total{verdict=\"allow\",rcode=\"NXDOMAIN\"}", 1},
        {"moat_dns_queries_total{verdict=\"block\",rcode=\"NOERROR\"}", 2},
        {"moat_dns_queries_total{verdict=\"audit\",rcode=\"SERVFAIL\"}", 1},
        {"moat_dns_queries_total{verdict=\"none\",rcode=\"FORMERR\"}", 1},
        {"moat_dns_queries_total{verdict=\"none\",rcode=\"none\"}", 1},
        {"moat_dns_queries_total{verdict=\"allow\",rcode=\"other\"}", 2},
        {"moat_dns_queries_total{verdict=\"allow\",rcode=\"BADCOOKIE\"}", 1},
        {"moat_dns_queries_total{verdict=\"block\",rcode=\"NXDOMAIN\"}", -1},
        {"moat_dns_cache_hits_total", 1},
        {"moat_dns_cache_misses_total", 2},
    };
    CHECK_VALUES(t, want);
    free(t);
}

Test(stats, histogram_is_cumulative_and_inf_equals_count)
{
    const uint64_t us[] = {100, 500, 501, 3000, 5000000, 7000000, 250000};
    for (size_t i = 0; i < sizeof us / sizeof us[0]; i++)
        stats_dns_upstream(i % 2 == 0, us[i]);
    char *t = render(NULL);
    check_format(t);
    const char *les[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
                         "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",     "+Inf"};
    const double want[] = {2, 3, 3, 4, 4, 4, 4, 4, 5, 5, 5, 5, 6, 7};
    double prev = 0;
    for (size_t i = 0; i < sizeof les / sizeof les[0]; i++) {
        char series[96];
        snprintf(series, sizeof series, "moat_dns_upstream_latency_seconds_bucket{le=\"%s\"}",
                 les[i]);
        double v = value_of(t, series);
        cr_assert_eq(v, want[i], "%s = %g", series, v);
        cr_assert_geq(v, prev, "cumulative");
        prev = v;
    }
    cr_assert_eq(value_of(t, "moat_dns_upstream_latency_seconds_count"), 7);
    cr_assert_float_eq(value_of(t, "moat_dns_upstream_latency_seconds_sum"), 12.254101, 1e-9);
    cr_assert_eq(value_of(t, "moat_dns_upstream_queries_total{result=\"ok\"}"), 4);
    cr_assert_eq(value_of(t, "moat_dns_upstream_queries_total{result=\"error\"}"), 3);
    free(t);
}

Test(stats, connections_gauge_bytes_and_reasons)
{
    stats_conn_open(0, STATS_LISTENER_TLS);
    stats_conn_open(0, STATS_LISTENER_TLS);
    stats_conn_open(0, STATS_LISTENER_HTTP);
    stats_conn_decision(0, STATS_LISTENER_TLS, STATS_VERDICT_ALLOW, reason_of("allowlist"), 100,
                        2000);
    stats_conn_decision(0, STATS_LISTENER_TLS, STATS_VERDICT_BLOCK, reason_of("no-sni"), 0, 0);
    stats_conn_decision(0, STATS_LISTENER_HTTP, STATS_VERDICT_AUDIT, reason_of("not-allowed"), 7,
                        9);
    stats_conn_close(0, STATS_LISTENER_TLS);
    stats_conn_refused(STATS_LISTENER_TRANSPARENT, reason_of("max-connections"));
    stats_conn_refused(STATS_LISTENER_TRANSPARENT, reason_of("max-connections"));
    stats_conn_open(0, STATS_LISTENER_COUNT); /* not a listener: ignored */
    stats_conn_decision(0, STATS_LISTENER_COUNT, STATS_VERDICT_ALLOW, reason_of("allowlist"), 1, 1);
    char *t = render(NULL);
    check_format(t);
    static const expect_t want[] = {
        {"moat_connections_active{listener=\"tls\"}", 1},
        {"moat_connections_active{listener=\"http\"}", 1},
        {"moat_connections_active{listener=\"transparent\"}", 0},
        {"moat_connections_total{listener=\"tls\",verdict=\"allow\",reason=\"allowlist\"}", 1},
        {"moat_connections_total{listener=\"tls\",verdict=\"block\",reason=\"no-sni\"}", 1},
        {"moat_connections_total{listener=\"http\",verdict=\"audit\",reason=\"not-allowed\"}", 1},
        {"moat_bytes_total{listener=\"tls\",direction=\"up\"}", 100},
        {"moat_bytes_total{listener=\"tls\",direction=\"down\"}", 2000},
        {"moat_bytes_total{listener=\"http\",direction=\"up\"}", 7},
        {"moat_connections_refused_total{listener=\"transparent\",reason=\"max-connections\"}", 2},
    };
    CHECK_VALUES(t, want);
    free(t);
}

Test(stats, tenants_get_a_label_of_their_own_and_keep_it_across_reloads)
{
    unsigned b1 = stats_tenant("box-1"), b2 = stats_tenant("box-2");
    cr_assert_neq(b1, 0);
    cr_assert_neq(b2, b1);
    cr_assert_eq(stats_tenant(NULL), 0);
    cr_assert_eq(stats_tenant("box-1"), b1, "a reload finds the same id by name");
    for (int i = 0; i < 100; i++) { /* the name table grows and rehashes */
        char name[32];
        snprintf(name, sizeof name, "t%d", i);
        cr_assert_eq(stats_tenant(name), stats_tenant(name));
    }
    cr_assert_eq(stats_tenant("box-2"), b2);
    stats_dns_query(b1, STATS_VERDICT_BLOCK, 0);
    stats_dns_query(b1, STATS_VERDICT_BLOCK, 0);
    stats_dns_query(0, STATS_VERDICT_BLOCK, 0);
    stats_conn_open(b2, STATS_LISTENER_TLS);
    stats_conn_decision(b2, STATS_LISTENER_TLS, STATS_VERDICT_ALLOW, reason_of("allowlist"), 1, 2);
    stats_conn_decision(0, STATS_LISTENER_TLS, STATS_VERDICT_BLOCK, reason_of("no-sni"), 0, 0);
    stats_conn_open(12345, STATS_LISTENER_TLS); /* not an id: no tenant */
    char *t = render(NULL);
    check_format(t);
    static const expect_t want[] = {
        {"moat_dns_queries_total{tenant=\"box-1\",verdict=\"block\",rcode=\"NOERROR\"}", 2},
        {"moat_dns_queries_total{verdict=\"block\",rcode=\"NOERROR\"}", 1},
        {"moat_connections_active{tenant=\"box-2\",listener=\"tls\"}", 1},
        {"moat_connections_active{listener=\"tls\"}", 1},
        {"moat_connections_total{tenant=\"box-2\",listener=\"tls\",verdict=\"allow\","
         "reason=\"allowlist\"}",
         1},
        {"moat_connections_total{listener=\"tls\",verdict=\"block\",reason=\"no-sni\"}", 1},
    };
    CHECK_VALUES(t, want);
    /* A tenant that never counted has no series. */
    cr_assert_null(strstr(t, "tenant=\"t5\""));
    /* Each family's series stay together (text format 0.0.4). */
    const char *a = strstr(t, "moat_connections_active{tenant"),
               *b = strstr(t, "# TYPE moat_bytes");
    cr_assert(a && b && a < b);
    free(t);
}

Test(stats, every_logged_reason_is_its_own_label)
{
    for (size_t i = 0; i < N_REASONS; i++)
        cr_assert_str_eq(stats_reason_label(reason_of(reasons[i])), reasons[i]);
    cr_assert_str_eq(stats_reason_label(reason_of("unknown")), "other");
    cr_assert_str_eq(stats_reason_label(reason_of("evil.example.com")), "other");
    cr_assert_str_eq(stats_reason_label(reason_of("")), "other");
    cr_assert_str_eq(stats_reason_label(reason_of(NULL)), "other");
    cr_assert_str_eq(stats_reason_label(reason_of("ALLOWLIST")), "other", "exact strings only");
    cr_assert_str_eq(stats_reason_label((filter_reason_t)(FILTER_REASON_COUNT + 5)), "other");
}

Test(stats, guest_strings_never_reach_the_output)
{
    const char *evil = "x\"} 1\nmoat_evil_total 99\n#";
    stats_conn_decision(0, STATS_LISTENER_TLS, STATS_VERDICT_BLOCK, reason_of(evil), 0, 0);
    stats_conn_refused(STATS_LISTENER_HTTP, reason_of("secret-name.example"));
    char *t = render(NULL);
    check_format(t);
    cr_assert_null(strstr(t, "moat_evil_total"));
    cr_assert_null(strstr(t, "secret-name"));
    cr_assert_eq(
        value_of(t, "moat_connections_total{listener=\"tls\",verdict=\"block\",reason=\"other\"}"),
        1);
    cr_assert_eq(value_of(t, "moat_connections_refused_total{listener=\"http\",reason=\"other\"}"),
                 1);
    free(t);
}

Test(stats, dialcache_counters_and_entries_gauge)
{
    for (int i = 0; i < 5; i++)
        stats_dialcache(STATS_DIALCACHE_HIT);
    for (int i = 0; i < 3; i++)
        stats_dialcache(STATS_DIALCACHE_MISS);
    for (int i = 0; i < 7; i++)
        stats_dialcache(STATS_DIALCACHE_COALESCED);
    stats_dialcache(STATS_DIALCACHE_EXPIRED);
    stats_dialcache(STATS_DIALCACHE_EVICTION);
    stats_dialcache(STATS_DIALCACHE_EVICTION);
    stats_dialcache(STATS_DIALCACHE_EVENT_COUNT); /* not an event: ignored */
    stats_dialcache_entries(1);
    stats_dialcache_entries(1);
    stats_dialcache_entries(1);
    stats_dialcache_entries(-1);
    char *t = render(NULL);
    check_format(t);
    static const expect_t want[] = {
        {"moat_proxy_dialcache_hits_total", 5},      {"moat_proxy_dialcache_misses_total", 3},
        {"moat_proxy_dialcache_coalesced_total", 7}, {"moat_proxy_dialcache_expired_total", 1},
        {"moat_proxy_dialcache_evictions_total", 2}, {"moat_proxy_dialcache_entries", 2},
    };
    CHECK_VALUES(t, want);
    cr_assert_not_null(strstr(t, "# TYPE moat_proxy_dialcache_hits_total counter\n"));
    cr_assert_not_null(strstr(t, "# TYPE moat_proxy_dialcache_misses_total counter\n"));
    cr_assert_not_null(strstr(t, "# TYPE moat_proxy_dialcache_coalesced_total counter\n"));
    cr_assert_not_null(strstr(t, "# TYPE moat_proxy_dialcache_entries gauge\n"));
    cr_assert_not_null(strstr(t, "# HELP moat_proxy_dialcache_hits_total "));
    free(t);
    stats_reset();
    t = render(NULL);
    cr_assert_eq(value_of(t, "moat_proxy_dialcache_hits_total"), 0);
    cr_assert_eq(value_of(t, "moat_proxy_dialcache_entries"), 0);
    free(t);
}

Test(stats, reloads_and_gauges_passed_in)
{
    stats_reload(true);
    stats_reload(true);
    stats_reload(false);
    stats_gauges_t g = {
        .dns_cache_entries = 42,
        .addrmem_entries = 7,
        .log_dropped_lines = 3,
        .config_generation = 3,
        .start_time_seconds = 1.5,
    };
    char *t = render(&g);
    check_format(t);
    static const expect_t want[] = {
        {"moat_config_reloads_total{result=\"ok\"}", 2},
        {"moat_config_reloads_total{result=\"error\"}", 1},
        {"moat_config_generation", 3},
        {"moat_dns_cache_entries", 42},
        {"moat_addrmem_entries", 7},
        {"moat_log_dropped_lines_total", 3},
        {"moat_start_time_seconds", 1.5},
    };
    CHECK_VALUES(t, want);
    free(t);
}

Test(stats, reset_zeroes_everything)
{
    stats_dns_query(0, STATS_VERDICT_ALLOW, 0);
    stats_conn_open(0, STATS_LISTENER_TLS);
    stats_reload(true);
    stats_dns_upstream(true, 10);
    stats_reset();
    char *t = render(NULL);
    cr_assert_null(strstr(t, "moat_dns_queries_total{"));
    static const expect_t want[] = {
        {"moat_connections_active{listener=\"tls\"}", 0},
        {"moat_config_reloads_total{result=\"ok\"}", 0},
        {"moat_dns_upstream_latency_seconds_count", 0},
    };
    CHECK_VALUES(t, want);
    free(t);
}

Test(stats, many_series_grow_the_buffer)
{
    /* Every combination counted: the text outgrows the first allocation. */
    for (int l = 0; l < STATS_LISTENER_COUNT; l++)
        for (int v = 0; v < STATS_VERDICT_COUNT; v++) {
            for (size_t r = 0; r < N_REASONS; r++)
                stats_conn_decision(0, (stats_listener_t)l, (stats_verdict_t)v,
                                    reason_of(reasons[r]), 1, 1);
            stats_conn_decision(0, (stats_listener_t)l, (stats_verdict_t)v,
                                reason_of("other-thing"), 1, 1);
        }
    for (int v = 0; v < STATS_VERDICT_COUNT; v++)
        for (int rc = -1; rc < 30; rc++)
            stats_dns_query(0, (stats_verdict_t)v, rc);
    char *t = render(NULL);
    check_format(t);
    cr_assert_gt(strlen(t), 16384);
    cr_assert_eq(value_of(t, "moat_connections_total{listener=\"transparent\",verdict=\"none\","
                             "reason=\"other\"}"),
                 1);
    cr_assert_eq(value_of(t, "moat_dns_queries_total{verdict=\"audit\",rcode=\"other\"}"), 10);
    free(t);
}
