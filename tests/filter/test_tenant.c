/* tests/filter/test_tenant.c: client address -> tenant by the longest prefix
 * (SPEC §2.7). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter/tenant.h"

static filter_prefix_t P(const char *s)
{
    filter_prefix_t p;
    cr_assert_eq(filter_prefix_parse(s, strlen(s), &p, NULL), 0, "%s", s);
    return p;
}

static long lookup(const filter_tenants_t *t, const char *s)
{
    filter_addr_t a;
    cr_assert_eq(filter_addr_parse(s, strlen(s), &a), 0, "%s", s);
    return filter_tenants_lookup(t, &a);
}

#define MAX_CLIENTS 8

/* Tenants from NULL-terminated prefix lists. */
static int build(const char *const specs[][MAX_CLIENTS], size_t n, filter_tenants_t **out)
{
    static filter_prefix_t prefixes[16][MAX_CLIENTS];
    filter_tenant_input_t in[16];
    cr_assert(n <= 16);
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        for (; specs[i][k]; k++)
            prefixes[i][k] = P(specs[i][k]);
        in[i] = (filter_tenant_input_t){prefixes[i], k};
    }
    return filter_tenants_compile(in, n, out);
}

Test(tenant, longest_prefix_v4)
{
    static const char *const specs[][MAX_CLIENTS] = {
        {"10.0.0.0/8", NULL},
        {"10.1.0.0/16", NULL},
        {"10.1.2.0/24", NULL},
        {"10.1.2.3", "192.0.2.0/24", NULL},
    };
    filter_tenants_t *t;
    cr_assert_eq(build(specs, 4, &t), 0);
    cr_assert_eq(lookup(t, "10.9.9.9"), 0);
    cr_assert_eq(lookup(t, "10.1.9.9"), 1);
    cr_assert_eq(lookup(t, "10.1.2.4"), 2);
    cr_assert_eq(lookup(t, "10.1.2.3"), 3);
    cr_assert_eq(lookup(t, "192.0.2.200"), 3);
    cr_assert_eq(lookup(t, "11.0.0.1"), -1);
    cr_assert_eq(lookup(t, "192.0.3.1"), -1);
    /* An IPv6 address never matches an IPv4 prefix. */
    cr_assert_eq(lookup(t, "::a01:203"), -1);
    cr_assert_eq(lookup(t, "2001:db8::1"), -1);
    cr_assert_gt(filter_tenants_memory(t), 0);
    filter_tenants_free(t);
}

Test(tenant, longest_prefix_v6_and_both_families)
{
    static const char *const specs[][MAX_CLIENTS] = {
        {"2001:db8::/32", "198.51.100.0/24", NULL},
        {"2001:db8:1::/48", NULL},
        {"2001:db8:1:2::/64", NULL},
        {"2001:db8:1:2::7", NULL},
        {"fc00::/7", "198.51.100.128/25", NULL},
    };
    filter_tenants_t *t;
    cr_assert_eq(build(specs, 5, &t), 0);
    cr_assert_eq(lookup(t, "2001:db8:ffff::1"), 0);
    cr_assert_eq(lookup(t, "2001:db8:1:ffff::1"), 1);
    cr_assert_eq(lookup(t, "2001:db8:1:2::8"), 2);
    cr_assert_eq(lookup(t, "2001:db8:1:2::7"), 3);
    cr_assert_eq(lookup(t, "fdab::1"), 4);
    cr_assert_eq(lookup(t, "fc00::1"), 4);
    cr_assert_eq(lookup(t, "fe80::1"), -1);
    cr_assert_eq(lookup(t, "2001:db9::1"), -1);
    cr_assert_eq(lookup(t, "198.51.100.1"), 0);
    cr_assert_eq(lookup(t, "198.51.100.200"), 4);
    /* An IPv4-mapped address is unmapped by filter_addr_parse. */
    cr_assert_eq(lookup(t, "::ffff:198.51.100.1"), 0);
    filter_tenants_free(t);
}

/* A 0-length prefix catches every client of its family that no longer
 * prefix holds. */
Test(tenant, catch_all)
{
    static const char *const specs[][MAX_CLIENTS] = {
        {"0.0.0.0/0", NULL},
        {"10.0.0.0/8", "::/0", NULL},
        {"2001:db8::/32", NULL},
    };
    filter_tenants_t *t;
    cr_assert_eq(build(specs, 3, &t), 0);
    cr_assert_eq(lookup(t, "1.2.3.4"), 0);
    cr_assert_eq(lookup(t, "10.2.3.4"), 1);
    cr_assert_eq(lookup(t, "2001:db8::1"), 2);
    cr_assert_eq(lookup(t, "2001:db9::1"), 1);
    filter_tenants_free(t);
}

Test(tenant, duplicate_prefix)
{
    static const char *const dup[][MAX_CLIENTS] = {
        {"10.0.0.0/8", "192.0.2.0/24", NULL},
        {"2001:db8::/32", "192.0.2.0/24", NULL},
    };
    filter_tenants_t *t = (filter_tenants_t *)0x1;
    cr_assert_eq(build(dup, 2, &t), -EEXIST);
    cr_assert_null(t);
    static const char *const dup6[][MAX_CLIENTS] = {
        {"2001:db8::/32", NULL},
        {"2001:db8::/32", NULL},
    };
    cr_assert_eq(build(dup6, 2, &t), -EEXIST);
    /* The same address at two lengths is two prefixes, not a duplicate. */
    static const char *const nested[][MAX_CLIENTS] = {
        {"10.0.0.0/8", NULL},
        {"10.0.0.0/16", NULL},
    };
    cr_assert_eq(build(nested, 2, &t), 0);
    cr_assert_eq(lookup(t, "10.0.1.1"), 1);
    cr_assert_eq(lookup(t, "10.1.1.1"), 0);
    filter_tenants_free(t);
    /* Host bits set: the config should have refused it. */
    filter_prefix_t bad = P("10.0.0.0/8");
    bad.addr.bytes[3] = 1;
    filter_tenant_input_t in = {&bad, 1};
    cr_assert_eq(filter_tenants_compile(&in, 1, &t), -EINVAL);
    cr_assert_null(t);
}

Test(tenant, empty)
{
    filter_tenants_t *t;
    cr_assert_eq(filter_tenants_compile(NULL, 0, &t), 0);
    cr_assert_eq(lookup(t, "10.0.0.1"), -1);
    cr_assert_eq(lookup(t, "2001:db8::1"), -1);
    filter_tenants_free(t);
    /* Tenants without clients (users only) hold no address. */
    filter_tenant_input_t in[2] = {{NULL, 0}, {NULL, 0}};
    cr_assert_eq(filter_tenants_compile(in, 2, &t), 0);
    cr_assert_eq(lookup(t, "10.0.0.1"), -1);
    filter_tenants_free(t);
    cr_assert_eq(filter_tenants_lookup(NULL, NULL), -1);
    cr_assert_eq(filter_tenants_memory(NULL), 0);
    filter_tenants_free(NULL);
}

/* Many tenants, each a /32 and a /64: every one is found, and neighbours
 * are not confused. */
Test(tenant, many)
{
    enum { N = 20000 };
    filter_prefix_t *px = calloc(2 * N, sizeof *px);
    filter_tenant_input_t *in = calloc(N, sizeof *in);
    cr_assert(px && in);
    char s[64];
    for (size_t i = 0; i < N; i++) {
        snprintf(s, sizeof s, "10.%zu.%zu.1", i / 256, i % 256);
        px[2 * i] = P(s);
        snprintf(s, sizeof s, "2001:db8:%zx:%zx::/64", i / 65536, i % 65536);
        px[2 * i + 1] = P(s);
        in[i] = (filter_tenant_input_t){&px[2 * i], 2};
    }
    filter_tenants_t *t;
    cr_assert_eq(filter_tenants_compile(in, N, &t), 0);
    for (size_t i = 0; i < N; i += 7) {
        snprintf(s, sizeof s, "10.%zu.%zu.1", i / 256, i % 256);
        cr_assert_eq(lookup(t, s), (long)i, "%s", s);
        snprintf(s, sizeof s, "10.%zu.%zu.2", i / 256, i % 256);
        cr_assert_eq(lookup(t, s), -1, "%s", s);
        snprintf(s, sizeof s, "2001:db8:%zx:%zx::99", i / 65536, i % 65536);
        cr_assert_eq(lookup(t, s), (long)i, "%s", s);
    }
    cr_assert_lt(filter_tenants_memory(t), (size_t)N * 2 * 48);
    filter_tenants_free(t);
    free(px);
    free(in);
}
