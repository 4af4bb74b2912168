/* tests/config/test_config.c: the loader against SPEC §3: defaults, every
 * key, the allowlist forms, and every error with its line and column. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

static cfg_t *cfg;
static cfg_diag_t diag;

static void cleanup(void)
{
    cfg_free(cfg);
    cfg = NULL;
    cfg_diag_free(&diag);
}

TestSuite(config, .fini = cleanup);

static int load(const char *yaml)
{
    cfg_free(cfg);
    cfg = NULL;
    cfg_diag_free(&diag);
    return cfg_load_string("t.yaml", yaml, strlen(yaml), &cfg, &diag);
}

static void dump(void)
{
    for (size_t i = 0; i < diag.n; i++)
        fprintf(stderr, "  %u:%u: %s\n", diag.items[i].line, diag.items[i].col, diag.items[i].msg);
}

/* The loader succeeded with no diagnostics. */
static void ok(const char *yaml)
{
    int rc = load(yaml);
    if (rc != 0)
        dump();
    cr_assert_eq(rc, 0, "load failed: %d", rc);
    cr_assert_not_null(cfg);
    cr_assert_eq(diag.n, 0);
}

/* An error at exactly line:col whose message contains want. */
static void has_err(unsigned line, unsigned col, const char *want)
{
    for (size_t i = 0; i < diag.n; i++)
        if (diag.items[i].line == line && diag.items[i].col == col &&
            strstr(diag.items[i].msg, want))
            return;
    dump();
    cr_assert_fail("no error at %u:%u containing \"%s\"", line, col, want);
}

/* The file fails with exactly one error, at line:col, containing want. */
static void one_err(const char *yaml, unsigned line, unsigned col, const char *want)
{
    int rc = load(yaml);
    cr_assert_eq(rc, -EINVAL, "rc %d", rc);
    cr_assert_null(cfg);
    if (diag.n != 1)
        dump();
    cr_assert_eq(diag.n, 1, "expected one error, got %zu", diag.n);
    has_err(line, col, want);
}

static uint16_t port_of(const cfg_addr_t *a)
{
    if (a->sa.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
}

static void addr_is(const cfg_addr_t *a, int family, const char *ip, uint16_t port,
                    const char *text)
{
    char buf[INET6_ADDRSTRLEN];
    const void *src = family == AF_INET
                          ? (const void *)&((const struct sockaddr_in *)&a->sa)->sin_addr
                          : (const void *)&((const struct sockaddr_in6 *)&a->sa)->sin6_addr;
    cr_assert_eq(a->sa.ss_family, family, "%s: family", text);
    cr_assert_eq(a->sa_len,
                 family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    inet_ntop(family, src, buf, sizeof buf);
    cr_assert_str_eq(buf, ip);
    cr_assert_eq(port_of(a), port, "%s: port %u", text, port_of(a));
    cr_assert_str_eq(a->text, text);
}

/* ---- defaults ---- */

static void assert_defaults(const cfg_t *c)
{
    cr_assert_eq(c->mode, CFG_MODE_ENFORCE);
    cr_assert_eq(c->dns.listen.n, 2);
    addr_is(&c->dns.listen.items[0], AF_INET, "127.0.0.1", 5353, "127.0.0.1:5353");
    addr_is(&c->dns.listen.items[1], AF_INET6, "::1", 5353, "[::1]:5353");
    cr_assert_eq(c->dns.upstream.n, 0);
    cr_assert_eq(c->dns.timeout_ms, 2000);
    cr_assert_eq(c->dns.cache_size, 10000);
    cr_assert_eq(c->sinkhole.mode, CFG_SINKHOLE_ADDRESS);
    static const uint8_t zero[16] = {0};
    cr_assert_arr_eq(c->sinkhole.ipv4, zero, 4);
    cr_assert_arr_eq(c->sinkhole.ipv6, zero, 16);
    cr_assert_eq(c->sinkhole.ttl_s, 10);
    cr_assert_eq(c->proxy.transparent.n, 0);
    cr_assert_eq(c->proxy.tls.n, 1);
    addr_is(&c->proxy.tls.items[0], AF_INET, "127.0.0.1", 8443, "127.0.0.1:8443");
    cr_assert_eq(c->proxy.http.n, 1);
    addr_is(&c->proxy.http.items[0], AF_INET, "127.0.0.1", 8080, "127.0.0.1:8080");
    cr_assert_eq(c->proxy.connect.n, 0);
    cr_assert_null(c->proxy.connect.items);
    cr_assert_eq(c->proxy.socks.n, 0);
    cr_assert_null(c->proxy.socks.items);
    cr_assert_eq(c->proxy.tls_ports.n, 1);
    cr_assert_eq(c->proxy.tls_ports.items[0].lo, 443);
    cr_assert_eq(c->proxy.tls_ports.items[0].hi, 443);
    cr_assert_eq(c->proxy.http_ports.n, 1);
    cr_assert_eq(c->proxy.http_ports.items[0].lo, 80);
    cr_assert_eq(c->proxy.http_ports.items[0].hi, 80);
    cr_assert_eq(c->proxy.max_hello, 16384);
    cr_assert_eq(c->proxy.max_http_head, 8192);
    cr_assert_eq(c->proxy.peek_timeout_ms, 5000);
    cr_assert_eq(c->proxy.connect_timeout_ms, 5000);
    cr_assert_eq(c->proxy.idle_timeout_ms, 300000);
    cr_assert_eq(c->proxy.max_connections, 10000);
    cr_assert_not(c->filtering);
    cr_assert_null(c->allow);
    cr_assert_eq(c->n_allow, 0);
    cr_assert_eq(c->log.format, CFG_LOG_TEXT);
    cr_assert_eq(c->log.level, CFG_LOG_INFO);
    cr_assert_null(c->log.file);
    cr_assert_not(c->log.allowed);
    cr_assert_not(c->metrics.enabled);
    cr_assert_eq(c->shutdown_grace_ms, 10000);
}

Test(config, empty_file_is_all_defaults)
{
    ok("");
    assert_defaults(cfg);
    cr_assert_str_eq(cfg->path, "t.yaml");
}

Test(config, comments_only_is_all_defaults)
{
    ok("# nothing here\n\n   # still nothing\n");
    assert_defaults(cfg);
}

Test(config, empty_document_and_null_root_are_defaults)
{
    ok("---\n");
    assert_defaults(cfg);
    ok("~\n");
    assert_defaults(cfg);
    ok("---\n...\n");
    assert_defaults(cfg);
}

Test(config, null_sections_are_defaults)
{
    ok("dns:\nproxy:\nlog:\nsinkhole:\nmetrics:\n");
    assert_defaults(cfg);
}

Test(config, embedded_default_equals_documented_defaults)
{
    cr_assert_eq(cfg_load_default(&cfg), 0);
    assert_defaults(cfg);
    cr_assert_str_eq(cfg->path, "<default>");
}

Test(config, embedded_default_text_is_spec_block_without_allow)
{
    cr_assert_not_null(strstr(cfg_default_yaml, "mode: enforce"));
    cr_assert_not_null(
        strstr(cfg_default_yaml, "  listen: [\"127.0.0.1:5353\", \"[::1]:5353\"]\n"));
    cr_assert_not_null(strstr(cfg_default_yaml, "shutdown_grace: 10s\n"));
    cr_assert_not_null(strstr(cfg_default_yaml, "# allow:"));
    cr_assert_null(strstr(cfg_default_yaml, "\nallow:"));
    /* Loading the text by hand gives the same thing as cfg_load_default. */
    ok(cfg_default_yaml);
    assert_defaults(cfg);
}

Test(config, partial_section_keeps_other_defaults)
{
    ok("dns:\n  timeout: 250ms\nproxy: {max_connections: 5}\n");
    cr_assert_eq(cfg->dns.timeout_ms, 250);
    cr_assert_eq(cfg->dns.listen.n, 2);
    cr_assert_eq(cfg->dns.cache_size, 10000);
    cr_assert_eq(cfg->proxy.max_connections, 5);
    cr_assert_eq(cfg->proxy.tls.n, 1);
    cr_assert_eq(cfg->proxy.idle_timeout_ms, 300000);
}

/* ---- every key ---- */

Test(config, every_key_set)
{
    ok("mode: audit\n"
       "dns:\n"
       "  listen: [\"0.0.0.0:53\", \"[::]:53\"]\n"
       "  upstream: [192.0.2.1, \"192.0.2.2:5353\", \"2001:db8::1\", \"[2001:db8::2]:5300\"]\n"
       "  timeout: 1500ms\n"
       "  cache_size: 0\n"
       "sinkhole: {mode: nxdomain, ipv4: 192.0.2.99, ipv6: \"2001:db8::99\", ttl: 1m}\n"
       "proxy:\n"
       "  transparent: [\"127.0.0.1:9000\", \"[::1]:9000\"]\n"
       "  tls: [\"127.0.0.1:9443\"]\n"
       "  http: []\n"
       "  connect: [\"127.0.0.1:3128\", \"[::1]:3128\"]\n"
       "  socks: [\"0.0.0.0:1080\"]\n"
       "  tls_ports: [443, \"8443\", 10000-10010]\n"
       "  http_ports: [80, \"8080-8089\"]\n"
       "  max_hello: 65536\n"
       "  max_http_head: 4096\n"
       "  peek_timeout: 3s\n"
       "  connect_timeout: 10s\n"
       "  idle_timeout: 2h\n"
       "  max_connections: 50000\n"
       "allow:\n"
       "  - example.com\n"
       "log: {format: json, level: debug, file: /var/log/moat.log, allowed: true}\n"
       "metrics: {listen: \"127.0.0.1:9090\"}\n"
       "shutdown_grace: 0s\n");
    cr_assert_eq(cfg->mode, CFG_MODE_AUDIT);
    cr_assert_eq(cfg->dns.listen.n, 2);
    addr_is(&cfg->dns.listen.items[0], AF_INET, "0.0.0.0", 53, "0.0.0.0:53");
    addr_is(&cfg->dns.listen.items[1], AF_INET6, "::", 53, "[::]:53");
    cr_assert_eq(cfg->dns.upstream.n, 4);
    addr_is(&cfg->dns.upstream.items[0], AF_INET, "192.0.2.1", 53, "192.0.2.1");
    addr_is(&cfg->dns.upstream.items[1], AF_INET, "192.0.2.2", 5353, "192.0.2.2:5353");
    addr_is(&cfg->dns.upstream.items[2], AF_INET6, "2001:db8::1", 53, "2001:db8::1");
    addr_is(&cfg->dns.upstream.items[3], AF_INET6, "2001:db8::2", 5300, "[2001:db8::2]:5300");
    cr_assert_eq(cfg->dns.timeout_ms, 1500);
    cr_assert_eq(cfg->dns.cache_size, 0);
    cr_assert_eq(cfg->sinkhole.mode, CFG_SINKHOLE_NXDOMAIN);
    static const uint8_t v4[4] = {192, 0, 2, 99};
    static const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 0x99};
    cr_assert_arr_eq(cfg->sinkhole.ipv4, v4, 4);
    cr_assert_arr_eq(cfg->sinkhole.ipv6, v6, 16);
    cr_assert_eq(cfg->sinkhole.ttl_s, 60);
    cr_assert_eq(cfg->proxy.transparent.n, 2);
    addr_is(&cfg->proxy.transparent.items[1], AF_INET6, "::1", 9000, "[::1]:9000");
    cr_assert_eq(cfg->proxy.tls.n, 1);
    cr_assert_eq(cfg->proxy.http.n, 0);
    cr_assert_null(cfg->proxy.http.items);
    cr_assert_eq(cfg->proxy.connect.n, 2);
    addr_is(&cfg->proxy.connect.items[0], AF_INET, "127.0.0.1", 3128, "127.0.0.1:3128");
    addr_is(&cfg->proxy.connect.items[1], AF_INET6, "::1", 3128, "[::1]:3128");
    cr_assert_eq(cfg->proxy.socks.n, 1);
    addr_is(&cfg->proxy.socks.items[0], AF_INET, "0.0.0.0", 1080, "0.0.0.0:1080");
    cr_assert_eq(cfg->proxy.tls_ports.n, 3);
    cr_assert_eq(cfg->proxy.tls_ports.items[1].lo, 8443);
    cr_assert_eq(cfg->proxy.tls_ports.items[2].lo, 10000);
    cr_assert_eq(cfg->proxy.tls_ports.items[2].hi, 10010);
    cr_assert_eq(cfg->proxy.http_ports.n, 2);
    cr_assert_eq(cfg->proxy.http_ports.items[1].lo, 8080);
    cr_assert_eq(cfg->proxy.http_ports.items[1].hi, 8089);
    cr_assert_eq(cfg->proxy.max_hello, 65536);
    cr_assert_eq(cfg->proxy.max_http_head, 4096);
    cr_assert_eq(cfg->proxy.peek_timeout_ms, 3000);
    cr_assert_eq(cfg->proxy.connect_timeout_ms, 10000);
    cr_assert_eq(cfg->proxy.idle_timeout_ms, 7200000);
    cr_assert_eq(cfg->proxy.max_connections, 50000);
    cr_assert(cfg->filtering);
    cr_assert_eq(cfg->n_allow, 1);
    cr_assert_eq(cfg->log.format, CFG_LOG_JSON);
    cr_assert_eq(cfg->log.level, CFG_LOG_DEBUG);
    cr_assert_str_eq(cfg->log.file, "/var/log/moat.log");
    cr_assert(cfg->log.allowed);
    cr_assert(cfg->metrics.enabled);
    addr_is(&cfg->metrics.listen, AF_INET, "127.0.0.1", 9090, "127.0.0.1:9090");
    cr_assert_eq(cfg->shutdown_grace_ms, 0);
}

Test(config, log_levels_and_file_off)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        char y[64];
        snprintf(y, sizeof y, "log: {level: %s, file: \"\"}\n", names[i]);
        ok(y);
        cr_assert_eq((int)cfg->log.level, i);
        cr_assert_null(cfg->log.file);
    }
    ok("log:\n  file:\n  allowed: false\n");
    cr_assert_null(cfg->log.file);
    cr_assert_not(cfg->log.allowed);
}

Test(config, sinkhole_mode_forms)
{
    ok("sinkhole: {mode: nxdomain}\n");
    cr_assert_eq(cfg->sinkhole.mode, CFG_SINKHOLE_NXDOMAIN);
    ok("sinkhole: {mode: ~}\n");
    cr_assert_eq(cfg->sinkhole.mode, CFG_SINKHOLE_ADDRESS);
    ok("sinkhole: {mode: \"\"}\n");
    cr_assert_eq(cfg->sinkhole.mode, CFG_SINKHOLE_ADDRESS);
    ok("sinkhole:\n  mode:\n");
    cr_assert_eq(cfg->sinkhole.mode, CFG_SINKHOLE_ADDRESS);
    ok("sinkhole: {ttl: 0s}\n");
    cr_assert_eq(cfg->sinkhole.ttl_s, 0);
}

Test(config, metrics_off_forms)
{
    ok("metrics: {listen: \"\"}\n");
    cr_assert_not(cfg->metrics.enabled);
    ok("metrics: {listen: ~}\n");
    cr_assert_not(cfg->metrics.enabled);
    ok("metrics: {listen: \"[::1]:9100\"}\n");
    cr_assert(cfg->metrics.enabled);
    addr_is(&cfg->metrics.listen, AF_INET6, "::1", 9100, "[::1]:9100");
}

Test(config, ipv6_listen_and_upstream_forms)
{
    ok("dns:\n"
       "  listen: [\"[::1]:53\", \"[fd00::1]:5353\", \"[::ffff:127.0.0.2]:53\"]\n"
       "  upstream: [\"::1\", \"[::1]\", \"[2001:db8::53]:53\", \"fd00::53\"]\n");
    cr_assert_eq(cfg->dns.listen.n, 3);
    addr_is(&cfg->dns.listen.items[0], AF_INET6, "::1", 53, "[::1]:53");
    addr_is(&cfg->dns.listen.items[1], AF_INET6, "fd00::1", 5353, "[fd00::1]:5353");
    /* IPv4-mapped is unmapped, as everywhere in moat (filter/addr.h). */
    addr_is(&cfg->dns.listen.items[2], AF_INET, "127.0.0.2", 53, "[::ffff:127.0.0.2]:53");
    cr_assert_eq(cfg->dns.upstream.n, 4);
    addr_is(&cfg->dns.upstream.items[0], AF_INET6, "::1", 53, "::1");
    addr_is(&cfg->dns.upstream.items[1], AF_INET6, "::1", 53, "[::1]");
    addr_is(&cfg->dns.upstream.items[2], AF_INET6, "2001:db8::53", 53, "[2001:db8::53]:53");
    addr_is(&cfg->dns.upstream.items[3], AF_INET6, "fd00::53", 53, "fd00::53");
}

Test(config, listen_port_zero_allowed_upstream_not)
{
    ok("proxy: {transparent: [\"127.0.0.1:0\", \"127.0.0.1:0\"]}\n");
    cr_assert_eq(port_of(&cfg->proxy.transparent.items[0]), 0);
    one_err("dns: {upstream: [\"192.0.2.1:0\"]}\n", 1, 18, "port 0");
}

/* ---- allow ---- */

Test(config, no_allow_is_filtering_off)
{
    ok("mode: enforce\n");
    cr_assert_not(cfg->filtering);
    cr_assert_eq(cfg->n_allow, 0);
}

Test(config, empty_allow_is_air_gap)
{
    ok("allow: []\n");
    cr_assert(cfg->filtering);
    cr_assert_eq(cfg->n_allow, 0);
    cr_assert_null(cfg->allow);
}

Test(config, null_allow_is_air_gap)
{
    ok("allow:\n");
    cr_assert(cfg->filtering);
    cr_assert_eq(cfg->n_allow, 0);
    ok("allow: ~\n");
    cr_assert(cfg->filtering);
}

Test(config, allow_plain_entries)
{
    ok("allow:\n"
       "  - api.openai.com\n"
       "  - \"*.githubusercontent.com\"\n"
       "  - 203.0.113.7\n"
       "  - 203.0.113.0/24\n"
       "  - 2001:db8::7\n"
       "  - \"2001:db8::/32\"\n"
       "  - Example.COM.\n");
    cr_assert_eq(cfg->n_allow, 7);
    const filter_rule_t *r = cfg->allow;
    cr_assert_eq(r[0].kind, FILTER_RULE_NAME);
    cr_assert_str_eq(r[0].pattern.name, "api.openai.com");
    cr_assert_not(r[0].pattern.wildcard);
    cr_assert_str_eq(r[0].text, "api.openai.com");
    cr_assert_eq(r[0].line, 2);
    cr_assert_eq(r[0].col, 5);
    cr_assert_null(r[0].ports);
    cr_assert_eq(r[0].n_ports, 0);

    cr_assert_eq(r[1].kind, FILTER_RULE_NAME);
    cr_assert(r[1].pattern.wildcard);
    cr_assert_str_eq(r[1].pattern.name, "githubusercontent.com");
    cr_assert_str_eq(r[1].text, "*.githubusercontent.com");
    cr_assert_eq(r[1].line, 3);
    cr_assert_eq(r[1].col, 5);

    cr_assert_eq(r[2].kind, FILTER_RULE_ADDR);
    cr_assert_eq(r[2].prefix.addr.family, AF_INET);
    cr_assert_eq(r[2].prefix.len, 32);
    cr_assert_str_eq(r[2].text, "203.0.113.7");
    cr_assert_eq(r[3].prefix.len, 24);
    cr_assert_eq(r[4].prefix.addr.family, AF_INET6);
    cr_assert_eq(r[4].prefix.len, 128);
    cr_assert_eq(r[5].prefix.len, 32);
    cr_assert_str_eq(r[5].text, "2001:db8::/32");
    cr_assert_str_eq(r[6].pattern.name, "example.com");
    cr_assert_str_eq(r[6].text, "Example.COM.");
    for (int i = 0; i < 7; i++)
        cr_assert_null(r[i].ports);
}

Test(config, allow_mapping_forms)
{
    ok("allow:\n"
       "  - {host: github.com, ports: [22, 443]}\n"
       "  - {cidr: 10.0.0.0/8, ports: [\"8000-8100\", 9000]}\n"
       "  - host: \"*.example.org\"\n"
       "    ports:\n"
       "      - 1-65535\n"
       "  - {cidr: \"2001:db8::/48\"}\n"
       "  - {host: plain.example}\n");
    cr_assert_eq(cfg->n_allow, 5);
    const filter_rule_t *r = cfg->allow;
    cr_assert_eq(r[0].kind, FILTER_RULE_NAME);
    cr_assert_str_eq(r[0].text, "github.com");
    cr_assert_eq(r[0].line, 2);
    cr_assert_eq(r[0].col, 5);
    cr_assert_eq(r[0].n_ports, 2);
    cr_assert_eq(r[0].ports[0].lo, 22);
    cr_assert_eq(r[0].ports[0].hi, 22);
    cr_assert_eq(r[0].ports[1].lo, 443);

    cr_assert_eq(r[1].kind, FILTER_RULE_ADDR);
    cr_assert_str_eq(r[1].text, "10.0.0.0/8");
    cr_assert_eq(r[1].prefix.len, 8);
    cr_assert_eq(r[1].n_ports, 2);
    cr_assert_eq(r[1].ports[0].lo, 8000);
    cr_assert_eq(r[1].ports[0].hi, 8100);
    cr_assert_eq(r[1].ports[1].lo, 9000);

    cr_assert(r[2].pattern.wildcard);
    cr_assert_str_eq(r[2].text, "*.example.org");
    cr_assert_eq(r[2].line, 4);
    cr_assert_eq(r[2].col, 5);
    cr_assert_eq(r[2].n_ports, 1);
    cr_assert_eq(r[2].ports[0].lo, 1);
    cr_assert_eq(r[2].ports[0].hi, 65535);

    cr_assert_eq(r[3].kind, FILTER_RULE_ADDR);
    cr_assert_null(r[3].ports);
    cr_assert_eq(r[4].kind, FILTER_RULE_NAME);
    cr_assert_null(r[4].ports);
    cr_assert_eq(r[4].n_ports, 0);
}

/* ---- errors, one kind each, with position ---- */

Test(config, err_bad_duration_unit)
{
    one_err("dns:\n  timeout: 2d\n", 2, 12, "unknown duration unit");
}

Test(config, err_bare_number_duration)
{
    one_err("dns:\n  timeout: 2\n", 2, 12, "duration needs a unit (ms, s, m, h)");
    one_err("shutdown_grace: \"10\"\n", 1, 17, "duration needs a unit (ms, s, m, h)");
}

Test(config, err_duration_fraction_overflow_and_range)
{
    one_err("proxy: {peek_timeout: 1.5s}\n", 1, 23, "whole number");
    one_err("proxy: {idle_timeout: 99999999999999999999h}\n", 1, 23, "duration too large");
    one_err("proxy: {idle_timeout: 5124095576030431h}\n", 1, 23, "duration too large");
    one_err("proxy: {connect_timeout: 0s}\n", 1, 26, "must be between 1ms and 1h");
    one_err("dns: {timeout: 2m}\n", 1, 16, "must be between 1ms and 1m");
    one_err("proxy: {idle_timeout: 8d}\n", 1, 23, "unknown duration unit");
    one_err("proxy: {idle_timeout: 169h}\n", 1, 23, "must be between 1ms and 168h");
    one_err("shutdown_grace: 2h\n", 1, 17, "must be between 0s and 1h");
    one_err("sinkhole: {ttl: 1500ms}\n", 1, 17, "whole number of seconds");
    one_err("dns: {timeout: -1s}\n", 1, 16, "expected a duration");
}

Test(config, err_port_zero)
{
    one_err("proxy:\n  tls_ports: [443, 0]\n", 2, 20, "port 0 is not allowed");
}

Test(config, err_port_65536)
{
    one_err("proxy:\n  http_ports: [65536]\n", 2, 16, "port over 65535");
    one_err("allow:\n  - {host: a.com, ports: [70000-70001]}\n", 2, 27, "port over 65535");
}

Test(config, err_bad_port_range)
{
    one_err("allow:\n  - {host: a.com, ports: [9000-8000]}\n", 2, 27, "range runs backwards");
    one_err("proxy:\n  tls_ports: [\"8000-\"]\n", 2, 15, "expected a port (443) or a range");
    one_err("proxy:\n  tls_ports: [https]\n", 2, 15, "expected a port (443) or a range");
}

Test(config, err_bad_prefix_length)
{
    one_err("allow:\n  - 10.0.0.0/33\n", 2, 5, "10.0.0.0/33: prefix length over 32");
    one_err("allow:\n  - \"2001:db8::/129\"\n", 2, 5, "prefix length over 128");
    one_err("allow:\n  - 10.0.0.0/x\n", 2, 5, "bad prefix length");
}

Test(config, err_host_bits_set)
{
    one_err("allow:\n  - {cidr: 10.1.0.0/8}\n", 2, 12, "10.1.0.0/8: host bits set");
}

Test(config, err_bad_ipv4)
{
    one_err("allow:\n  - ok.example\n  - 300.1.2.3\n", 3, 5, "300.1.2.3: not a valid IPv4 address");
}

Test(config, err_empty_label)
{
    one_err("allow:\n  - a..example.com\n", 2, 5, "a..example.com: empty label");
}

Test(config, err_label_too_long)
{
    char y[256];
    snprintf(y, sizeof y, "allow:\n  - %.*s.com\n", 64,
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    one_err(y, 2, 5, "label longer than 63 octets");
}

Test(config, err_name_too_long)
{
    char label[64], y[512];
    memset(label, 'a', 63);
    label[63] = '\0';
    /* 4 x 63 + 3 dots = 255 octets. */
    snprintf(y, sizeof y, "allow:\n  - {host: %s.%s.%s.%s, ports: [443]}\n", label, label, label,
             label);
    one_err(y, 2, 12, "name longer than 253 octets");
}

Test(config, err_wildcard_alone)
{
    one_err("allow:\n  - \"*\"\n", 2, 5, "'*' alone");
}

Test(config, err_wildcard_tld)
{
    one_err("allow:\n  - \"*.com\"\n", 2, 5, "*.com: wildcard over a single label");
}

Test(config, err_wildcard_inside)
{
    one_err("allow:\n  - a.*.com\n", 2, 5, "only allowed as the whole first label");
}

Test(config, err_bad_name_chars)
{
    one_err("allow:\n  - \"exa mple.com\"\n", 2, 5, "character not allowed");
    one_err("allow:\n  - bücher.de\n", 2, 5, "A-label");
}

Test(config, err_unknown_top_level_key)
{
    one_err("mode: audit\nallowlist: []\n", 2, 1, "unknown key \"allowlist\"");
    cr_assert_not_null(strstr(diag.items[0].msg, "allowed: mode, dns, sinkhole, proxy, allow"));
    one_err("alow: []\n", 1, 1, "did you mean \"allow\"");
    one_err("Mode: audit\n", 1, 1, "did you mean \"mode\"");
}

Test(config, err_unknown_nested_key)
{
    one_err("dns:\n  listen: []\n  timout: 1s\n", 3, 3,
            "unknown key \"timout\" in dns (did you mean \"timeout\"?)");
    one_err("proxy:\n  xyzzy: 1\n", 2, 3, "unknown key \"xyzzy\" in proxy (allowed: transparent");
    one_err("log: {fromat: json}\n", 1, 7, "did you mean \"format\"");
    one_err("sinkhole: {ip4: 1.2.3.4}\n", 1, 12, "did you mean \"ipv4\"");
    one_err("metrics: {address: x}\n", 1, 11, "(allowed: listen)");
}

Test(config, err_unknown_key_in_allow_mapping)
{
    one_err("allow:\n  - {host: a.com, port: [443]}\n", 2, 19,
            "unknown key \"port\" in allow entry (did you mean \"ports\"?)");
    cr_assert_eq(load("allow:\n  - {name: a.com}\n"), -EINVAL);
    cr_assert_eq(diag.n, 2);
    has_err(2, 5, "needs host: NAME or cidr: PREFIX");
    has_err(2, 6, "unknown key \"name\" in allow entry (allowed: host, cidr, ports)");
}

Test(config, err_allow_mapping_shape)
{
    one_err("allow:\n  - {host: 192.0.2.1}\n", 2, 12, "use cidr: for addresses");
    one_err("allow:\n  - {cidr: example.com}\n", 2, 12, "use host: for names");
    one_err("allow:\n  - {host: a.com, cidr: 10.0.0.0/8}\n", 2, 25, "not both");
    one_err("allow:\n  - {ports: [443]}\n", 2, 5, "needs host: NAME or cidr: PREFIX");
    one_err("allow:\n  - {host: a.com, ports: []}\n", 2, 26, "empty list");
    one_err("allow:\n  - host: a.com\n    ports:\n", 3, 11, "empty list");
    one_err("allow:\n  - {host: a.com, ports: 443}\n", 2, 26, "expected a list of ports");
    one_err("allow:\n  - {host: [a.com]}\n", 2, 12, "host: expected a host name, not a list");
    one_err("allow:\n  - {host: }\n", 2, 12, "host: no value");
    one_err("allow:\n  -\n  - a.com\n", 2, 4, "allow: empty entry");
    one_err("allow:\n  - [a.com]\n", 2, 5, "not a list");
}

Test(config, err_wrong_types)
{
    one_err("dns: [a]\n", 1, 6, "dns: expected a mapping");
    one_err("dns: 5\n", 1, 6, "dns: expected a mapping");
    one_err("dns:\n  listen: \"127.0.0.1:53\"\n", 2, 11, "dns.listen: expected a list");
    one_err("proxy:\n  tls_ports: 443\n", 2, 14, "proxy.tls_ports: expected a list");
    one_err("mode: [audit]\n", 1, 7, "mode: expected enforce or audit, not a list");
    one_err("allow: example.com\n", 1, 8, "allow: expected a list");
    one_err("allow: {host: a.com}\n", 1, 8, "allow: expected a list");
    one_err("log: {allowed: yes}\n", 1, 16, "expected true or false");
    one_err("log: {allowed: \"true\"}\n", 1, 16, "expected true or false");
    one_err("proxy: {max_connections: lots}\n", 1, 26, "expected a whole number");
    one_err("proxy: {max_connections: 0}\n", 1, 26, "must be between 1 and 1000000");
    one_err("proxy: {max_hello: 4096000}\n", 1, 20, "must be between 512 and 1048576");
    one_err("dns: {cache_size: 1e3}\n", 1, 19, "expected a whole number");
    one_err("mode:\n", 1, 6, "mode: no value");
    one_err("log: {format: {a: b}}\n", 1, 15, "not a mapping");
    one_err("- a\n- b\n", 1, 1, "expected a mapping of settings");
    one_err("just a string\n", 1, 1, "expected a mapping of settings");
    one_err("? [a]\n: b\n", 1, 3, "keys must be plain names");
}

Test(config, err_bad_values)
{
    one_err("mode: permissive\n", 1, 7, "mode: permissive: expected enforce or audit");
    one_err("log: {format: xml}\n", 1, 15, "expected text or json");
    one_err("log: {level: verbose}\n", 1, 14, "expected debug, info, warn or error");
    one_err("sinkhole: {mode: refused}\n", 1, 18, "expected nxdomain, or null");
    one_err("sinkhole: {ipv4: \"::\"}\n", 1, 18, "not an IPv4 address");
    one_err("sinkhole: {ipv6: 0.0.0.0}\n", 1, 18, "not an IPv6 address");
    one_err("log: {file: \"a\\0b\"}\n", 1, 13, "NUL");
}

Test(config, err_addresses)
{
    one_err("dns:\n  listen: [\"127.0.0.1\"]\n", 2, 12, "needs a port, e.g. 127.0.0.1:5353");
    one_err("dns:\n  listen: [\"::1\"]\n", 2, 12, "with the IPv6 address in brackets");
    one_err("dns:\n  listen: [\"localhost:53\"]\n", 2, 12, "host names are not allowed");
    one_err("dns:\n  upstream: [dns.google]\n", 2, 14, "host names are not allowed");
    one_err("dns:\n  upstream: [\"[1.1.1.1]:53\"]\n", 2, 14, "brackets are only for IPv6");
    one_err("dns:\n  upstream: [\"[::1]53\"]\n", 2, 14, "expected ':' and a port");
    one_err("dns:\n  upstream: [\"[::1:53\"]\n", 2, 14, "missing ']'");
    one_err("dns:\n  upstream: [\"1.1.1.1:99999\"]\n", 2, 14, "port over 65535");
    one_err("dns:\n  upstream: [\"1.1.1.1:dns\"]\n", 2, 14, "bad port");
    one_err("dns:\n  upstream: [\"1.1.1.300\"]\n", 2, 14, "not a valid IPv4 address");
    one_err("dns:\n  upstream: [\"2001:db8::zz\"]\n", 2, 14, "not a valid IPv6 address");
    one_err("metrics: {listen: 9090}\n", 1, 19, "metrics.listen: 9090");
    one_err("proxy:\n  tls: [[\"127.0.0.1:1\"]]\n", 2, 9, "expected an address, not a list");
}

/* The explicit proxies' listeners (SPEC §2.6): lists of listen addresses,
 * checked as the other listeners are. */
Test(config, connect_and_socks_listeners)
{
    ok("proxy:\n  connect: []\n  socks: []\n");
    cr_assert_eq(cfg->proxy.connect.n, 0);
    cr_assert_eq(cfg->proxy.socks.n, 0);
    ok("proxy: {connect: [\"127.0.0.1:0\"], socks: [\"127.0.0.1:0\"]}\n"); /* port 0 never clashes
                                                                            */
    cr_assert_eq(cfg->proxy.connect.n, 1);
    cr_assert_eq(cfg->proxy.socks.n, 1);
    ok("proxy:\n  connect:\n  socks:\n"); /* no value: the default */
    cr_assert_eq(cfg->proxy.connect.n, 0);
    cr_assert_eq(cfg->proxy.socks.n, 0);
    ok("proxy:\n  connect: [\"[::ffff:127.0.0.2]:3128\"]\n");
    addr_is(&cfg->proxy.connect.items[0], AF_INET, "127.0.0.2", 3128, "[::ffff:127.0.0.2]:3128");
}

Test(config, err_connect_and_socks)
{
    one_err("proxy:\n  connect: \"127.0.0.1:3128\"\n", 2, 12, "proxy.connect: expected a list");
    one_err("proxy:\n  socks: 1080\n", 2, 10, "proxy.socks: expected a list");
    one_err("proxy:\n  connect: [\"127.0.0.1\"]\n", 2, 13, "needs a port");
    one_err("proxy:\n  socks: [\"localhost:1080\"]\n", 2, 11, "host names are not allowed");
    one_err("proxy:\n  socks: [\"[::1]:1080\", \"[0::1]:1080\"]\n", 2, 25,
            "proxy.socks: [0::1]:1080: listed twice");
    one_err("proxy:\n  connect: [\"127.0.0.1:8443\"]\n", 2, 13,
            "proxy.connect: 127.0.0.1:8443: also used by proxy.tls (default)");
    one_err("proxy:\n  connect: [\"127.0.0.1:1080\"]\n  socks: [\"127.0.0.1:1080\"]\n", 3, 11,
            "proxy.socks: 127.0.0.1:1080: also used by proxy.connect");
    one_err("dns:\n  listen: [\"127.0.0.1:1080\"]\nproxy:\n  socks: [\"127.0.0.1:1080\"]\n", 4, 11,
            "proxy.socks: 127.0.0.1:1080: also used by dns.listen");
    one_err("metrics: {listen: \"127.0.0.1:3128\"}\nproxy: {connect: [\"127.0.0.1:3128\"]}\n", 1,
            19, "metrics.listen: 127.0.0.1:3128: also used by proxy.connect");
    one_err("proxy:\n  sock: []\n", 2, 3, "did you mean \"socks\"");
}

Test(config, err_duplicate_key)
{
    one_err("dns:\n  timeout: 1s\n  cache_size: 5\n  timeout: 2s\n", 4, 3,
            "duplicate key \"timeout\" in dns (first at 2:3)");
    one_err("mode: audit\nmode: enforce\n", 2, 1, "duplicate key \"mode\" (first at 1:1)");
    one_err("allow:\n  - {host: a.com, host: b.com}\n", 2, 19, "duplicate key \"host\"");
}

Test(config, err_unquoted_wildcard_is_an_alias)
{
    one_err("allow:\n  - api.example.com\n  - *.example.com\n", 3, 5,
            "a wildcard must be quoted: \"*.example.com\"");
    one_err("allow: [a.com, *.example.com]\n", 1, 16, "a wildcard must be quoted");
    one_err("allow:\n  - {host: *.example.com, ports: [443]}\n", 2, 12,
            "a wildcard must be quoted: \"*.example.com\"");
}

Test(config, err_alias_and_bare_star)
{
    one_err("allow:\n  - *anchor\n", 2, 5, "YAML aliases (*anchor) are not supported");
    one_err("allow:\n  - *\n", 2, 5, "quote the value");
}

Test(config, err_yaml_syntax)
{
    one_err("dns:\n  listen: [\"127.0.0.1:53\"\nproxy: {}\n", 3, 1, "YAML syntax error");
    one_err("mode: audit\n  dns: x\n", 2, 6, "YAML syntax error");
    one_err("mode: \"audit\n", 2, 1, "YAML syntax error");
    one_err("a: b\n\tc: d\n", 2, 1, "YAML syntax error");
}

Test(config, err_bad_utf8)
{
    one_err("mode: audit\nx: \xff\n", 2, 4, "YAML: invalid");
}

Test(config, err_second_document)
{
    one_err("mode: audit\n---\nmode: enforce\n", 2, 1, "only one YAML document");
}

Test(config, err_nesting_too_deep)
{
    char y[200];
    memset(y, '[', 100);
    y[100] = '\0';
    cr_assert_eq(load(y), -EINVAL);
    cr_assert_eq(diag.n, 1);
    cr_assert_not_null(strstr(diag.items[0].msg, "nested deeper than"));
}

Test(config, err_listen_conflicts)
{
    one_err("metrics: {listen: \"127.0.0.1:8443\"}\n", 1, 19,
            "metrics.listen: 127.0.0.1:8443: also used by proxy.tls (default)");
    one_err("proxy:\n  transparent: [\"127.0.0.1:9\", \"127.0.0.1:9\"]\n", 2, 32, "listed twice");
    one_err("dns:\n  listen: [\"[::1]:53\"]\nproxy:\n  http: [\"[0::1]:53\"]\n", 4, 10,
            "proxy.http: [0::1]:53: also used by dns.listen");
}

Test(config, err_tls_http_ports_overlap)
{
    one_err("proxy:\n  http_ports: [80, 443]\n", 2, 20, "port 443 is in both");
    one_err("proxy:\n  tls_ports: [8000-8100]\n  http_ports: [80, 8080-9000]\n", 3, 20,
            "ports 8080-8100 are in both");
}

/* ---- many errors ---- */

Test(config, all_errors_reported_in_order)
{
    int rc = load("mode: audti\n"                  /* 1:7 */
                  "dns:\n"                         /* */
                  "  timeout: 5\n"                 /* 3:12 */
                  "  listen: [\"localhost:53\"]\n" /* 4:12 */
                  "proxy:\n"                       /* */
                  "  tls_ports: [0, 65536]\n"      /* 6:15, 6:18 */
                  "  bogus: 1\n"                   /* 7:3 */
                  "allow:\n"                       /* */
                  "  - 300.1.2.3\n"                /* 9:5 */
                  "  - \"*.com\"\n"                /* 10:5 */
                  "  - {host: a.com, port: [1]}\n" /* 11:19 */
                  "  - good.example\n"             /* */
                  "log: {level: loud}\n"           /* 13:14 */
                  "shutdown_grace: 10\n");         /* 14:17 */
    cr_assert_eq(rc, -EINVAL);
    cr_assert_null(cfg);
    static const unsigned want[][2] = {{1, 7}, {3, 12}, {4, 12},  {6, 15},  {6, 18}, {7, 3},
                                       {9, 5}, {10, 5}, {11, 19}, {13, 14}, {14, 17}};
    size_t n = sizeof want / sizeof want[0];
    if (diag.n != n)
        dump();
    cr_assert_eq(diag.n, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(diag.items[i].line, want[i][0], "item %zu line %u", i, diag.items[i].line);
        cr_assert_eq(diag.items[i].col, want[i][1], "item %zu col %u", i, diag.items[i].col);
    }
}

Test(config, error_flood_is_capped)
{
    size_t cap = 200 * 16 + 16;
    char *y = malloc(cap);
    size_t o = (size_t)snprintf(y, cap, "allow:\n");
    for (int i = 0; i < 200; i++)
        o += (size_t)snprintf(y + o, cap - o, "  - 300.%d.0.1\n", i);
    cr_assert_eq(load(y), -EINVAL);
    free(y);
    cr_assert_eq(diag.n, 101);
    cr_assert_not_null(strstr(diag.items[100].msg, "too many errors"));
}

/* ---- files and printing ---- */

Test(config, file_not_found)
{
    cfg_free(cfg);
    cfg = (cfg_t *)1; /* must be reset by the loader */
    int rc = cfg_load_file("/nonexistent/moat.yaml", &cfg, &diag);
    cr_assert_eq(rc, -ENOENT);
    cr_assert_null(cfg);
    cr_assert_eq(diag.n, 1);
    cr_assert_eq(diag.items[0].line, 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cfg_diag_print(&diag, f);
    fclose(f);
    cr_assert_str_eq(buf, "/nonexistent/moat.yaml: cannot read: No such file or directory\n");
    free(buf);
}

Test(config, file_is_a_directory)
{
    int rc = cfg_load_file("/", &cfg, &diag);
    cr_assert_eq(rc, -EISDIR);
    cr_assert_eq(diag.n, 1);
    cr_assert_eq(diag.items[0].line, 0);
}

Test(config, file_loads_and_errors_print_with_position)
{
    char path[] = "/tmp/moat-cfg-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    const char *y = "allow:\n  - good.example\n  - 300.1.2.3\n";
    cr_assert_eq(write(fd, y, strlen(y)), (ssize_t)strlen(y));
    close(fd);
    cr_assert_eq(cfg_load_file(path, &cfg, &diag), -EINVAL);
    char *buf = NULL, want[256];
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cfg_diag_print(&diag, f);
    fclose(f);
    snprintf(want, sizeof want, "%s:3:5: 300.1.2.3: not a valid IPv4 address\n", path);
    cr_assert_str_eq(buf, want);
    free(buf);
    cfg_diag_free(&diag);

    fd = open(path, O_WRONLY | O_TRUNC);
    y = "allow: [good.example]\n";
    cr_assert_eq(write(fd, y, strlen(y)), (ssize_t)strlen(y));
    close(fd);
    cr_assert_eq(cfg_load_file(path, &cfg, &diag), 0);
    cr_assert_eq(diag.n, 0);
    cr_assert_str_eq(cfg->path, path);
    cr_assert_eq(cfg->n_allow, 1);
    unlink(path);
}

Test(config, string_without_nul_terminator)
{
    const char y[] = "mode: auditXXXX";
    cr_assert_eq(cfg_load_string("t", y, 11, &cfg, &diag), 0);
    cr_assert_eq(cfg->mode, CFG_MODE_AUDIT);
}

Test(config, free_null_and_reuse)
{
    cfg_free(NULL);
    cfg_diag_free(NULL);
    cfg_diag_t d = {0};
    cfg_diag_free(&d);
    cr_assert_eq(cfg_load_string(NULL, "", 0, &cfg, &diag), 0);
    cr_assert_str_eq(diag.file, "<string>");
}

Test(config, yaml_tags_and_quoting)
{
    ok("log: {allowed: !!bool true}\ndns: {cache_size: !!int 5, timeout: \"2s\"}\nmode: !!str "
       "audit\n");
    cr_assert(cfg->log.allowed);
    cr_assert_eq(cfg->dns.cache_size, 5);
    cr_assert_eq(cfg->mode, CFG_MODE_AUDIT);
    one_err("sinkhole: {mode: !!str null}\n", 1, 18, "expected nxdomain, or null");
    one_err("sinkhole: {mode: \"null\"}\n", 1, 18, "expected nxdomain, or null");
    ok("dns: {cache_size: \"42\"}\nproxy: {tls_ports: [\"443\"]}\n");
    cr_assert_eq(cfg->dns.cache_size, 42);
}

Test(config, anchors_without_aliases_are_fine)
{
    ok("dns: &d\n  timeout: 1s\nproxy: &p {max_connections: 5}\n");
    cr_assert_eq(cfg->dns.timeout_ms, 1000);
    cr_assert_eq(cfg->proxy.max_connections, 5);
}

Test(config, file_too_large)
{
    /* An endless file must not be read forever. */
    cr_assert_eq(cfg_load_file("/dev/zero", &cfg, &diag), -EFBIG);
    cr_assert_eq(diag.n, 1);
    cr_assert_eq(diag.items[0].line, 0);
    cr_assert_not_null(strstr(diag.items[0].msg, "cannot read: larger than 16 MiB"));
}

Test(config, empty_string_value_shown_quoted)
{
    one_err("mode: \"\"\n", 1, 7, "mode: \"\": expected enforce or audit");
}

Test(config, reload_watch)
{
    ok("");
    cr_assert_not(cfg->reload.watch);
    ok("reload: {watch: true}\n");
    cr_assert(cfg->reload.watch);
    ok("reload:\n  watch: false\n");
    cr_assert_not(cfg->reload.watch);
    ok("reload:\n");
    cr_assert_not(cfg->reload.watch);
    one_err("reload: {wach: true}\n", 1, 10, "did you mean \"watch\"");
    one_err("reload: {watch: maybe}\n", 1, 17, "reload.watch");
    one_err("relaod: {watch: true}\n", 1, 1, "did you mean \"reload\"");
}

Test(config, workers_auto_or_a_number)
{
    cr_assert_eq(load("allow: []\n"), 0);
    cr_assert_eq(cfg->workers, 0, "auto by default");
    cfg_free(cfg);
    cfg = NULL;
    cr_assert_eq(load("workers: auto\n"), 0);
    cr_assert_eq(cfg->workers, 0);
    cfg_free(cfg);
    cfg = NULL;
    cr_assert_eq(load("workers: 2\n"), 0);
    cr_assert_eq(cfg->workers, 2);
    cfg_free(cfg);
    cfg = NULL;
    cr_assert_eq(load("workers: \"256\"\n"), 0);
    cr_assert_eq(cfg->workers, 256);
    cfg_free(cfg);
    cfg = NULL;
    cr_assert_not_null(strstr(cfg_default_yaml, "\nworkers: auto "));
}

Test(config, err_workers)
{
    one_err("workers: 0\n", 1, 10, "workers: 0: must be between 1 and 256");
    one_err("workers: 257\n", 1, 10, "must be between 1 and 256");
    one_err("workers: -1\n", 1, 10, "must be between 1 and 256");
    one_err("workers: all\n", 1, 10, "workers: all: expected auto or a whole number");
    one_err("workers: [2]\n", 1, 10, "workers");
}
