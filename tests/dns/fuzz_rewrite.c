/* tests/dns/fuzz_rewrite.c: arbitrary upstream answers through
 * dns_rewrite (filtering on and off), then the cache and the address memory,
 * as the resolver chains them on an upstream miss. Also feeds the raw bytes
 * to the cache directly (its cursor walk must hold on any input).
 *
 * Properties checked beyond "no crash, no leak":
 *   - a rewritten answer rewrites again to itself: nothing left to remove
 *     (filtering on or off);
 *   - a cache hit returns an answer no longer than the buffer and than what
 *     was stored. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filter/policy.h"
#include "dns/addrmem.h"
#include "dns/cache.h"
#include "dns/rewrite.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static filter_policy_t *fz_policy(bool filtering)
{
    static const char *addrs[] = {"10.1.0.0/16", "fd00::1", "169.254.169.254"};
    filter_rule_t rules[4];
    memset(rules, 0, sizeof rules);
    rules[0].kind = FILTER_RULE_NAME;
    if (filter_pattern_parse("*.example.com", 13, &rules[0].pattern) != 0)
        abort();
    for (size_t i = 0; i < 3; i++) {
        rules[i + 1].kind = FILTER_RULE_ADDR;
        if (filter_prefix_parse(addrs[i], strlen(addrs[i]), &rules[i + 1].prefix, NULL) != 0)
            abort();
    }
    filter_port_range_t tls[] = {{443, 443}}, http[] = {{80, 80}};
    filter_policy_input_t in = {
        .filtering = filtering,
        .rules = rules,
        .n_rules = 4,
        .tls_ports = tls,
        .n_tls_ports = 1,
        .http_ports = http,
        .n_http_ports = 1,
    };
    filter_policy_t *p = NULL;
    if (filter_policy_compile(&in, &p) != 0)
        abort();
    return p;
}

static void fz_addr_cb(const dns_cache_addr_t *a, void *arg)
{
    if (a->ttl > DNS_CACHE_MAX_TTL)
        abort();
    (void)arg;
}

static void fz_cache(dns_cache_t *c, const uint8_t *wire, size_t len, const dns_cache_addr_t *addrs,
                     size_t n_addrs)
{
    dns_cache_key_t k;
    if (dns_cache_key_from_msg(&k, wire, len) != 0)
        return;
    if (dns_cache_put(c, &k, wire, len, addrs, n_addrs, 1000) != 0)
        return;
    static uint8_t buf[65536];
    static const uint64_t times[] = {1000, 1999, 61000, 3601000, 86401000};
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        size_t got = 0;
        int rc = dns_cache_get(c, &k, times[i], buf, sizeof buf, &got, fz_addr_cb, NULL);
        if (rc == 0 && (got > len || got > sizeof buf))
            abort();
        if (rc != 0 && rc != -ENOENT)
            abort();
        rc = dns_cache_get(c, &k, times[i], buf, 12, &got, NULL, NULL);
        if (rc == 0 && got > 12)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static filter_policy_t *on, *off;
    if (on == NULL) {
        on = fz_policy(true);
        off = fz_policy(false);
    }
    dns_cache_t *c = NULL;
    dns_addrmem_t *m = NULL;
    if (dns_cache_create(4, &c) != 0 || dns_addrmem_create(16, &m) != 0)
        abort();

    fz_cache(c, data, size, NULL, 0);

    dns_rewrite_result_t r;
    if (dns_rewrite(on, data, size, &r) == 0) {
        if (r.wire == NULL || r.len == 0 || (r.n_addrs > 0) != (r.addrs != NULL))
            abort();
        dns_rewrite_result_t again;
        if (dns_rewrite(on, r.wire, r.len, &again) != 0)
            abort();
        if (again.removed_addrs || again.removed_ech || again.removed_hints)
            abort();
        if (again.len != r.len || memcmp(again.wire, r.wire, r.len) != 0)
            abort();
        dns_rewrite_result_free(&again);

        fz_cache(c, r.wire, r.len, r.addrs, r.n_addrs);
        filter_addr_t client;
        if (filter_addr_parse("198.18.1.2", 10, &client) != 0)
            abort();
        for (size_t i = 0; i < r.n_addrs; i++) {
            if (r.qname_len == 0)
                break;
            if (dns_addrmem_put(m, &client, r.qname, r.qname_len, &r.addrs[i].addr, r.addrs[i].ttl,
                                0) != 0)
                abort();
            if (!dns_addrmem_check(m, &client, r.qname, r.qname_len, &r.addrs[i].addr, 0))
                abort();
        }
        dns_rewrite_result_free(&r);
    }
    if (dns_rewrite(off, data, size, &r) == 0) {
        /* records untouched; only EDNS options may go, and only once */
        if (r.removed_addrs || r.removed_ech || r.removed_hints)
            abort();
        dns_rewrite_result_t again;
        if (dns_rewrite(off, r.wire, r.len, &again) != 0)
            abort();
        if (again.len != r.len || memcmp(again.wire, r.wire, r.len) != 0)
            abort();
        dns_rewrite_result_free(&again);
        dns_rewrite_result_free(&r);
    }
    dns_addrmem_free(m);
    dns_cache_free(c);
    return 0;
}
