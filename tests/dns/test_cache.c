/* tests/dns/test_cache.c: the DNS response cache (SPEC §2.2, RFC 2308). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "dns/cache.h"
#include "ldns_build.h"

static dns_cache_key_t key(const char *name, uint16_t qtype)
{
    dns_cache_key_t k;
    cr_assert_eq(dns_cache_key_from_name(&k, name, strlen(name), qtype, 1), 0, "%s", name);
    return k;
}

static dns_cache_t *mk(size_t n)
{
    dns_cache_t *c = NULL;
    cr_assert_eq(dns_cache_create(n, &c), 0);
    cr_assert_not_null(c);
    return c;
}

/* Every RR TTL (OPT excluded: ldns keeps it apart) of a message. */
static void assert_ttls(const uint8_t *w, size_t len, uint32_t want, size_t n_want)
{
    ldns_pkt *p = NULL;
    cr_assert_eq(ldns_wire2pkt(&p, w, len), LDNS_STATUS_OK);
    size_t n = 0;
    ldns_rr_list *lists[3] = {ldns_pkt_answer(p), ldns_pkt_authority(p), ldns_pkt_additional(p)};
    for (int s = 0; s < 3; s++)
        for (size_t i = 0; i < ldns_rr_list_rr_count(lists[s]); i++, n++)
            cr_assert_eq(ldns_rr_ttl(ldns_rr_list_rr(lists[s], i)), want,
                         "section %d rr %zu: ttl %u, want %u", s, i,
                         ldns_rr_ttl(ldns_rr_list_rr(lists[s], i)), want);
    cr_assert_eq(n, n_want);
    ldns_pkt_free(p);
}

static const char *an_a300[] = {"example.com. 300 IN A 198.18.0.1",
                                "example.com. 300 IN A 198.18.0.2", NULL};

Test(cache, hit_and_miss)
{
    dns_cache_t *c = mk(10);
    size_t len;
    uint8_t *w = build(&len, "example.com. IN A", 0, an_a300, NULL, NULL, false);
    dns_cache_key_t k = key("example.com", 1);
    uint8_t buf[4096];
    size_t got = 99;
    cr_assert_eq(dns_cache_get(c, &k, 0, buf, sizeof buf, &got, NULL, NULL), -ENOENT);
    cr_assert_eq(got, 0);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 1000), 0);
    cr_assert_eq(dns_cache_get(c, &k, 1000, buf, sizeof buf, &got, NULL, NULL), 0);
    cr_assert_eq(got, len);
    cr_assert_eq(memcmp(buf, w, len), 0);
    dns_cache_key_t other = key("example.org", 1);
    cr_assert_eq(dns_cache_get(c, &other, 1000, buf, sizeof buf, &got, NULL, NULL), -ENOENT);
    dns_cache_stats_t st;
    dns_cache_stats(c, &st);
    cr_assert_eq(st.hits, 1);
    cr_assert_eq(st.misses, 2);
    cr_assert_eq(st.inserts, 1);
    cr_assert_eq(st.entries, 1);
    cr_assert_eq(st.max_entries, 10);
    free(w);
    dns_cache_free(c);
}

Test(cache, ttl_counts_down_in_every_section)
{
    const char *ns[] = {"example.com. 300 IN NS ns1.example.com.", NULL};
    const char *ar[] = {"ns1.example.com. 300 IN A 198.18.0.53",
                        "ns1.example.com. 300 IN AAAA 2001:db8::53", NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN A", 0, an_a300, ns, ar, true);
    dns_cache_t *c = mk(10);
    dns_cache_key_t k = key("example.com", 1);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), 0);
    uint8_t buf[4096];
    size_t got;
    cr_assert_eq(dns_cache_get(c, &k, 10000, buf, sizeof buf, &got, NULL, NULL), 0);
    assert_ttls(buf, got, 290, 5);
    cr_assert_eq(dns_cache_get(c, &k, 10999, buf, sizeof buf, &got, NULL, NULL), 0);
    assert_ttls(buf, got, 290, 5); /* whole seconds */
    cr_assert_eq(dns_cache_get(c, &k, 299999, buf, sizeof buf, &got, NULL, NULL), 0);
    assert_ttls(buf, got, 1, 5);
    cr_assert_eq(dns_cache_get(c, &k, 300000, buf, sizeof buf, &got, NULL, NULL), -ENOENT);
    dns_cache_stats_t st;
    dns_cache_stats(c, &st);
    cr_assert_eq(st.expired, 1);
    cr_assert_eq(st.entries, 0);
    /* gone for good */
    cr_assert_eq(dns_cache_get(c, &k, 0, buf, sizeof buf, &got, NULL, NULL), -ENOENT);
    free(w);
    dns_cache_free(c);
}

Test(cache, entry_ttl_is_min_of_answer)
{
    const char *an[] = {"www.example.com. 60 IN CNAME example.com.",
                        "example.com. 300 IN A 198.18.0.1", NULL};
    const char *ns[] = {"example.com. 10 IN NS ns1.example.com.", NULL};
    size_t len;
    uint8_t *w = build(&len, "www.example.com. IN A", 0, an, ns, NULL, false);
    dns_cache_t *c = mk(10);
    dns_cache_key_t k = key("www.example.com", 1);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), 0);
    uint8_t buf[4096];
    size_t got;
    /* authority TTL (10) does not bound the entry, and saturates at 0 */
    cr_assert_eq(dns_cache_get(c, &k, 30000, buf, sizeof buf, &got, NULL, NULL), 0);
    ldns_pkt *p = NULL;
    cr_assert_eq(ldns_wire2pkt(&p, buf, got), LDNS_STATUS_OK);
    cr_assert_eq(ldns_rr_ttl(ldns_rr_list_rr(ldns_pkt_answer(p), 0)), 30);
    cr_assert_eq(ldns_rr_ttl(ldns_rr_list_rr(ldns_pkt_answer(p), 1)), 270);
    cr_assert_eq(ldns_rr_ttl(ldns_rr_list_rr(ldns_pkt_authority(p), 0)), 0);
    ldns_pkt_free(p);
    cr_assert_eq(dns_cache_get(c, &k, 60000, buf, sizeof buf, &got, NULL, NULL), -ENOENT);
    free(w);
    dns_cache_free(c);
}

Test(cache, key_is_case_insensitive)
{
    size_t len;
    uint8_t *w =
        build(&len, "ExAmPlE.CoM. IN A", 0,
              (const char *[]){"ExAmPlE.CoM. 300 IN A 198.18.0.1", NULL}, NULL, NULL, false);
    dns_cache_t *c = mk(10);
    dns_cache_key_t k1 = key("EXAMPLE.com.", 1);
    cr_assert_eq(dns_cache_put(c, &k1, w, len, NULL, 0, 0), 0);
    dns_cache_key_t k2 = key("example.COM", 1);
    uint8_t buf[4096];
    size_t got;
    cr_assert_eq(dns_cache_get(c, &k2, 0, buf, sizeof buf, &got, NULL, NULL), 0);
    /* and from wire form, as the server has it */
    const uint8_t wire[] = {7, 'e', 'X', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'M', 0};
    dns_cache_key_t k3;
    cr_assert_eq(dns_cache_key_from_wire(&k3, wire, sizeof wire, 1, 1), 0);
    cr_assert_eq(dns_cache_get(c, &k3, 0, buf, sizeof buf, &got, NULL, NULL), 0);
    /* and from the message itself */
    dns_cache_key_t k4;
    cr_assert_eq(dns_cache_key_from_msg(&k4, w, len), 0);
    cr_assert_eq(dns_cache_get(c, &k4, 0, buf, sizeof buf, &got, NULL, NULL), 0);
    free(w);
    dns_cache_free(c);
}

Test(cache, qtype_and_qclass_are_separate)
{
    size_t la, l4;
    uint8_t *a = build(&la, "example.com. IN A", 0, an_a300, NULL, NULL, false);
    uint8_t *a4 =
        build(&l4, "example.com. IN AAAA", 0,
              (const char *[]){"example.com. 300 IN AAAA 2001:db8::1", NULL}, NULL, NULL, false);
    dns_cache_t *c = mk(10);
    dns_cache_key_t ka = key("example.com", 1), k4 = key("example.com", 28);
    cr_assert_eq(dns_cache_put(c, &ka, a, la, NULL, 0, 0), 0);
    uint8_t buf[4096];
    size_t got;
    cr_assert_eq(dns_cache_get(c, &k4, 0, buf, sizeof buf, &got, NULL, NULL), -ENOENT);
    cr_assert_eq(dns_cache_put(c, &k4, a4, l4, NULL, 0, 0), 0);
    cr_assert_eq(dns_cache_get(c, &k4, 0, buf, sizeof buf, &got, NULL, NULL), 0);
    cr_assert_eq(got, l4);
    cr_assert_eq(memcmp(buf, a4, l4), 0);
    cr_assert_eq(dns_cache_get(c, &ka, 0, buf, sizeof buf, &got, NULL, NULL), 0);
    cr_assert_eq(got, la);
    /* a wire whose question is not the key is refused */
    cr_assert_eq(dns_cache_put(c, &k4, a, la, NULL, 0, 0), -EINVAL);
    dns_cache_key_t kch;
    cr_assert_eq(dns_cache_key_from_name(&kch, "example.com", 11, 1, 3), 0);
    cr_assert_eq(dns_cache_get(c, &kch, 0, buf, sizeof buf, &got, NULL, NULL), -ENOENT);
    free(a);
    free(a4);
    dns_cache_free(c);
}

static void put_name(dns_cache_t *c, const char *name, uint64_t now)
{
    char q[300], rr[300];
    snprintf(q, sizeof q, "%s. IN A", name);
    snprintf(rr, sizeof rr, "%s. 300 IN A 198.18.0.1", name);
    size_t len;
    uint8_t *w = build(&len, q, 0, (const char *[]){rr, NULL}, NULL, NULL, false);
    dns_cache_key_t k = key(name, 1);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, now), 0);
    free(w);
}

static bool has(dns_cache_t *c, const char *name, uint64_t now)
{
    dns_cache_key_t k = key(name, 1);
    uint8_t buf[4096];
    size_t got;
    return dns_cache_get(c, &k, now, buf, sizeof buf, &got, NULL, NULL) == 0;
}

Test(cache, lru_eviction_order)
{
    dns_cache_t *c = mk(3);
    put_name(c, "a.example", 0);
    put_name(c, "b.example", 0);
    put_name(c, "c.example", 0);
    cr_assert(has(c, "a.example", 0)); /* touch a: b is now the oldest */
    put_name(c, "d.example", 0);
    cr_assert(!has(c, "b.example", 0));
    cr_assert(has(c, "a.example", 0));
    cr_assert(has(c, "c.example", 0));
    cr_assert(has(c, "d.example", 0));
    put_name(c, "e.example", 0); /* a was touched before c and d: a goes */
    cr_assert(!has(c, "a.example", 0));
    dns_cache_stats_t st;
    dns_cache_stats(c, &st);
    cr_assert_eq(st.evictions, 2);
    cr_assert_eq(st.entries, 3);
    /* replacing an entry does not evict */
    put_name(c, "e.example", 0);
    dns_cache_stats(c, &st);
    cr_assert_eq(st.evictions, 2);
    cr_assert_eq(st.entries, 3);
    dns_cache_clear(c);
    dns_cache_stats(c, &st);
    cr_assert_eq(st.entries, 0);
    cr_assert(!has(c, "e.example", 0));
    dns_cache_free(c);
}

Test(cache, many_entries)
{
    dns_cache_t *c = mk(100);
    char name[64];
    for (int i = 0; i < 500; i++) {
        snprintf(name, sizeof name, "n%d.example", i);
        put_name(c, name, 0);
    }
    for (int i = 0; i < 500; i++) {
        snprintf(name, sizeof name, "n%d.example", i);
        cr_assert_eq(has(c, name, 0), i >= 400, "%s", name);
    }
    dns_cache_stats_t st;
    dns_cache_stats(c, &st);
    cr_assert_eq(st.entries, 100);
    cr_assert_eq(st.evictions, 400);
    dns_cache_free(c);
}

Test(cache, negative_nxdomain_soa_minimum)
{
    /* RFC 2308 §5: min(SOA TTL 600, MINIMUM 60) = 60 */
    const char *ns[] = {"example.com. 600 IN SOA ns1.example.com. host.example.com. 1 7200 900 "
                        "1209600 60",
                        NULL};
    size_t len;
    uint8_t *w = build(&len, "nope.example.com. IN A", 3, NULL, ns, NULL, true);
    dns_cache_t *c = mk(10);
    dns_cache_key_t k = key("nope.example.com", 1);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), 0);
    uint8_t buf[4096];
    size_t got;
    cr_assert_eq(dns_cache_get(c, &k, 59999, buf, sizeof buf, &got, NULL, NULL), 0);
    assert_ttls(buf, got, 600 - 59, 1);
    cr_assert_eq(buf[3] & 0xF, 3);
    cr_assert_eq(dns_cache_get(c, &k, 60000, buf, sizeof buf, &got, NULL, NULL), -ENOENT);
    free(w);
    dns_cache_free(c);
}

Test(cache, negative_nodata_soa_ttl)
{
    /* min(SOA TTL 30, MINIMUM 300) = 30 */
    const char *ns[] = {
        "example.com. 30 IN SOA ns1.example.com. host.example.com. 1 7200 900 1209600 300", NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN TXT", 0, NULL, ns, NULL, false);
    dns_cache_t *c = mk(10);
    dns_cache_key_t k = key("example.com", 16);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), 0);
    uint8_t buf[4096];
    size_t got;
    cr_assert_eq(dns_cache_get(c, &k, 29999, buf, sizeof buf, &got, NULL, NULL), 0);
    cr_assert_eq(dns_cache_get(c, &k, 30000, buf, sizeof buf, &got, NULL, NULL), -ENOENT);
    free(w);

    /* a CNAME chain ending in NODATA: bounded by the CNAME too */
    const char *an[] = {"www.example.com. 20 IN CNAME example.com.", NULL};
    w = build(&len, "www.example.com. IN TXT", 0, an, ns, NULL, false);
    k = key("www.example.com", 16);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), 0);
    cr_assert_eq(dns_cache_get(c, &k, 19999, buf, sizeof buf, &got, NULL, NULL), 0);
    cr_assert_eq(dns_cache_get(c, &k, 20000, buf, sizeof buf, &got, NULL, NULL), -ENOENT);
    free(w);

    /* the negative cap */
    const char *ns_long[] = {
        "example.com. 86400 IN SOA ns1.example.com. host.example.com. 1 7200 900 1209600 86400",
        NULL};
    w = build(&len, "example.com. IN TXT", 0, NULL, ns_long, NULL, false);
    k = key("example.com", 16);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), 0);
    cr_assert_eq(
        dns_cache_get(c, &k, DNS_CACHE_MAX_NEG_TTL * 1000 - 1, buf, sizeof buf, &got, NULL, NULL),
        0);
    cr_assert_eq(
        dns_cache_get(c, &k, DNS_CACHE_MAX_NEG_TTL * 1000, buf, sizeof buf, &got, NULL, NULL),
        -ENOENT);
    free(w);
    dns_cache_free(c);
}

Test(cache, negative_without_soa_not_cached)
{
    size_t len;
    dns_cache_t *c = mk(10);
    uint8_t *w = build(&len, "nope.example.com. IN A", 3, NULL, NULL, NULL, false);
    dns_cache_key_t k = key("nope.example.com", 1);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), -ENODATA);
    free(w);
    /* NODATA (e.g. left by the rebinding filter) with only a CNAME */
    w = build(&len, "www.example.com. IN A", 0,
              (const char *[]){"www.example.com. 300 IN CNAME lan.example.com.", NULL}, NULL, NULL,
              false);
    k = key("www.example.com", 1);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), -ENODATA);
    free(w);
    dns_cache_stats_t st;
    dns_cache_stats(c, &st);
    cr_assert_eq(st.entries, 0);
    dns_cache_free(c);
}

Test(cache, uncacheable_answers)
{
    dns_cache_t *c = mk(10);
    size_t len;
    dns_cache_key_t k = key("example.com", 1);
    /* TTL 0 */
    uint8_t *w = build(&len, "example.com. IN A", 0,
                       (const char *[]){"example.com. 0 IN A 198.18.0.1", NULL}, NULL, NULL, false);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), -ENODATA);
    free(w);
    /* one TTL 0 among others */
    w = build(&len, "example.com. IN A", 0,
              (const char *[]){"example.com. 300 IN A 198.18.0.1", "example.com. 0 IN A 198.18.0.2",
                               NULL},
              NULL, NULL, false);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), -ENODATA);
    free(w);
    /* SERVFAIL, REFUSED */
    w = build(&len, "example.com. IN A", 2, NULL, NULL, NULL, false);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), -ENODATA);
    free(w);
    w = build(&len, "example.com. IN A", 5, NULL, NULL, NULL, false);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), -ENODATA);
    free(w);
    /* TC set */
    w = build(&len, "example.com. IN A", 0, an_a300, NULL, NULL, false);
    w[2] |= 0x02;
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), -ENODATA);
    /* not a response */
    w[2] &= (uint8_t)~0x82;
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), -EINVAL);
    free(w);
    /* TTL with the top bit set counts as 0 (RFC 2181 §8) */
    w = build(&len, "example.com. IN A", 0,
              (const char *[]){"example.com. 2147483648 IN A 198.18.0.1", NULL}, NULL, NULL, false);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), -ENODATA);
    free(w);
    dns_cache_stats_t st;
    dns_cache_stats(c, &st);
    cr_assert_eq(st.entries, 0);
    dns_cache_free(c);
}

Test(cache, max_ttl_capped)
{
    dns_cache_t *c = mk(10);
    size_t len;
    dns_cache_key_t k = key("example.com", 1);
    uint8_t *w =
        build(&len, "example.com. IN A", 0,
              (const char *[]){"example.com. 604800 IN A 198.18.0.1", NULL}, NULL, NULL, false);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), 0);
    uint8_t buf[4096];
    size_t got;
    cr_assert_eq(dns_cache_get(c, &k, 1000, buf, sizeof buf, &got, NULL, NULL), 0);
    assert_ttls(buf, got, DNS_CACHE_MAX_TTL - 1, 1);
    cr_assert_eq(
        dns_cache_get(c, &k, (uint64_t)DNS_CACHE_MAX_TTL * 1000, buf, sizeof buf, &got, NULL, NULL),
        -ENOENT);
    free(w);
    dns_cache_free(c);
}

Test(cache, oversize_refused)
{
    /* 200 TXT records of ~200 bytes: well over 16 KiB */
    const char *an[201];
    static char rrs[200][300];
    for (int i = 0; i < 200; i++) {
        char txt[201];
        memset(txt, 'a' + i % 26, 200);
        txt[200] = '\0';
        snprintf(rrs[i], sizeof rrs[i], "example.com. 300 IN TXT \"%s\"", txt);
        an[i] = rrs[i];
    }
    an[200] = NULL;
    size_t len;
    uint8_t *w = build(&len, "example.com. IN TXT", 0, an, NULL, NULL, false);
    cr_assert_gt(len, DNS_CACHE_ENTRY_MAX);
    dns_cache_t *c = mk(10);
    dns_cache_key_t k = key("example.com", 16);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), -EMSGSIZE);
    dns_cache_stats_t st;
    dns_cache_stats(c, &st);
    cr_assert_eq(st.entries, 0);
    free(w);
    dns_cache_free(c);
}

Test(cache, buffer_too_small)
{
    dns_cache_t *c = mk(10);
    size_t len;
    uint8_t *w = build(&len, "example.com. IN A", 0, an_a300, NULL, NULL, false);
    dns_cache_key_t k = key("example.com", 1);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), 0);
    uint8_t buf[4096];
    size_t got = 5;
    cr_assert_eq(dns_cache_get(c, &k, 0, buf, len - 1, &got, NULL, NULL), -ENOSPC);
    cr_assert_eq(got, 0);
    cr_assert_eq(dns_cache_get(c, &k, 0, buf, len, &got, NULL, NULL), 0);
    cr_assert_eq(got, len);
    free(w);
    dns_cache_free(c);
}

Test(cache, disabled)
{
    dns_cache_t *c = mk(0);
    size_t len;
    uint8_t *w = build(&len, "example.com. IN A", 0, an_a300, NULL, NULL, false);
    dns_cache_key_t k = key("example.com", 1);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), -ENODATA);
    uint8_t buf[4096];
    size_t got;
    cr_assert_eq(dns_cache_get(c, &k, 0, buf, sizeof buf, &got, NULL, NULL), -ENOENT);
    dns_cache_stats_t st;
    dns_cache_stats(c, &st);
    cr_assert_eq(st.entries, 0);
    cr_assert_eq(st.misses, 1);
    free(w);
    dns_cache_free(c);
    dns_cache_free(NULL);
    cr_assert_eq(dns_cache_create(DNS_CACHE_MAX_ENTRIES + 1, &c), -EINVAL);
    cr_assert_null(c);
}

Test(cache, opt_ttl_untouched)
{
    size_t len;
    uint8_t *w = build(&len, "example.com. IN A", 0, an_a300, NULL, NULL, true);
    /* ldns writes the OPT last: root, type 41, class 1232, TTL = ext rcode,
     * version, DO|Z = 00 00 80 00, rdlength 0 */
    const uint8_t opt[] = {0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0};
    cr_assert_eq(memcmp(w + len - sizeof opt, opt, sizeof opt), 0);
    dns_cache_t *c = mk(10);
    dns_cache_key_t k = key("example.com", 1);
    cr_assert_eq(dns_cache_put(c, &k, w, len, NULL, 0, 0), 0);
    uint8_t buf[4096];
    size_t got;
    cr_assert_eq(dns_cache_get(c, &k, 100000, buf, sizeof buf, &got, NULL, NULL), 0);
    cr_assert_eq(got, len);
    cr_assert_eq(memcmp(buf + got - sizeof opt, opt, sizeof opt), 0);
    assert_ttls(buf, got, 200, 2);
    free(w);
    dns_cache_free(c);
}

/* A hand-written answer: owner names and the SOA's names are compression
 * pointers, one pointing at a pointer. */
Test(cache, compression_pointers)
{
    const uint8_t w[] = {0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 1, 0, 0, /* header */
                         3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm',
                         0, /* @12 */
                         0, 1, 0, 1,
                         /* www CNAME example.com (rdata is a pointer to @16) */
                         0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 100, 0, 2, 0xc0, 16,
                         /* @47: example.com A, owner -> the pointer at @45 -> @16 */
                         0xc0, 45, 0, 1, 0, 1, 0, 0, 0, 100, 0, 4, 198, 18, 0, 1,
                         /* authority: example.com SOA with both names compressed */
                         0xc0, 16, 0, 6, 0, 1, 0, 0, 0, 100, 0, 29, 2, 'n', 's', 0xc0, 16, 1, 'h',
                         0xc0, 16, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5};
    dns_cache_t *c = mk(10);
    dns_cache_key_t k = key("www.example.com", 1);
    cr_assert_eq(dns_cache_put(c, &k, w, sizeof w, NULL, 0, 0), 0);
    uint8_t buf[512];
    size_t got;
    cr_assert_eq(dns_cache_get(c, &k, 42000, buf, sizeof buf, &got, NULL, NULL), 0);
    cr_assert_eq(got, sizeof w);
    assert_ttls(buf, got, 58, 3);
    /* trailing bytes are not stored */
    uint8_t longer[sizeof w + 3];
    memcpy(longer, w, sizeof w);
    memset(longer + sizeof w, 0xee, 3);
    cr_assert_eq(dns_cache_put(c, &k, longer, sizeof longer, NULL, 0, 0), 0);
    cr_assert_eq(dns_cache_get(c, &k, 0, buf, sizeof buf, &got, NULL, NULL), 0);
    cr_assert_eq(got, sizeof w);
    /* truncated anywhere: refused, never read past the end */
    for (size_t n = 0; n < sizeof w; n++) {
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, w, n);
        cr_assert_eq(dns_cache_put(c, &k, cut, n, NULL, 0, 0), -EINVAL, "len %zu", n);
        free(cut);
    }
    /* a reserved label type (0x40) in an owner name */
    uint8_t bad[sizeof w];
    memcpy(bad, w, sizeof w);
    bad[33] = 0x40;
    cr_assert_eq(dns_cache_put(c, &k, bad, sizeof bad, NULL, 0, 0), -EINVAL);
    dns_cache_free(c);
}

static void collect_cb(const dns_cache_addr_t *a, void *arg)
{
    dns_cache_addr_t *out = arg;
    while (out->addr.family != 0)
        out++;
    *out = *a;
}

Test(cache, addresses_come_back_counted_down)
{
    dns_cache_t *c = mk(10);
    size_t len;
    uint8_t *w = build(&len, "example.com. IN A", 0, an_a300, NULL, NULL, false);
    dns_cache_key_t k = key("example.com", 1);
    dns_cache_addr_t addrs[2];
    memset(addrs, 0, sizeof addrs);
    cr_assert_eq(filter_addr_parse("198.18.0.1", 10, &addrs[0].addr), 0);
    cr_assert_eq(filter_addr_parse("198.18.0.2", 10, &addrs[1].addr), 0);
    addrs[0].ttl = 300;
    addrs[1].ttl = 5;
    cr_assert_eq(dns_cache_put(c, &k, w, len, addrs, 2, 0), 0);
    dns_cache_addr_t got_addrs[3];
    memset(got_addrs, 0, sizeof got_addrs);
    uint8_t buf[4096];
    size_t got;
    cr_assert_eq(dns_cache_get(c, &k, 10000, buf, sizeof buf, &got, collect_cb, got_addrs), 0);
    cr_assert_eq(memcmp(&got_addrs[0].addr, &addrs[0].addr, sizeof addrs[0].addr), 0);
    cr_assert_eq(got_addrs[0].ttl, 290);
    cr_assert_eq(memcmp(&got_addrs[1].addr, &addrs[1].addr, sizeof addrs[1].addr), 0);
    cr_assert_eq(got_addrs[1].ttl, 0);
    cr_assert_eq(got_addrs[2].addr.family, 0);
    free(w);
    dns_cache_free(c);
}

Test(cache, key_builders)
{
    dns_cache_key_t k;
    cr_assert_eq(dns_cache_key_from_name(&k, "", 0, 2, 1), 0);
    cr_assert_eq(k.name_len, 1);
    cr_assert_eq(dns_cache_key_from_name(&k, ".", 1, 2, 1), 0);
    cr_assert_eq(k.name_len, 1);
    cr_assert_eq(dns_cache_key_from_name(&k, "a.b", 3, 1, 1), 0);
    cr_assert_eq(k.name_len, 5);
    cr_assert_eq(memcmp(k.name, "\1a\1b", 5), 0);
    cr_assert_eq(dns_cache_key_from_name(&k, "a..b", 4, 1, 1), -EINVAL);
    cr_assert_eq(k.name_len, 0);
    cr_assert_eq(dns_cache_key_from_name(&k, "a.b..", 5, 1, 1), -EINVAL);
    cr_assert_eq(dns_cache_key_from_name(&k, ".a", 2, 1, 1), -EINVAL);
    char label[70];
    memset(label, 'a', 64);
    cr_assert_eq(dns_cache_key_from_name(&k, label, 63, 1, 1), 0);
    cr_assert_eq(dns_cache_key_from_name(&k, label, 64, 1, 1), -EINVAL);
    /* 255 wire octets is the most */
    char name[300];
    size_t n = 0;
    for (int i = 0; i < 4; i++) { /* 4 labels of 62: 252 wire octets */
        memset(name + n, 'b', 62);
        n += 62;
        name[n++] = '.';
    }
    name[n++] = 'c'; /* + "\1c" + root = 255 */
    cr_assert_eq(dns_cache_key_from_name(&k, name, n, 1, 1), 0);
    cr_assert_eq(k.name_len, 255);
    name[n++] = 'c';
    cr_assert_eq(dns_cache_key_from_name(&k, name, n, 1, 1), -EINVAL);

    const uint8_t ptr[] = {3, 'w', 'w', 'w', 0xc0, 12};
    cr_assert_eq(dns_cache_key_from_wire(&k, ptr, sizeof ptr, 1, 1), -EINVAL);
    const uint8_t shrt[] = {3, 'w', 'w'};
    cr_assert_eq(dns_cache_key_from_wire(&k, shrt, sizeof shrt, 1, 1), -EINVAL);
    const uint8_t hdr_only[12] = {0, 0, 0x81, 0x80, 0, 1};
    cr_assert_eq(dns_cache_key_from_msg(&k, hdr_only, sizeof hdr_only), -EINVAL);
    const uint8_t two_q[] = {0, 0, 0x81, 0x80, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1};
    cr_assert_eq(dns_cache_key_from_msg(&k, two_q, sizeof two_q), -EINVAL);
    cr_assert_eq(dns_cache_key_from_msg(&k, two_q, 15), -EINVAL);
}
