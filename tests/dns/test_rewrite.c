/* tests/dns/test_rewrite.c: ECH removal, rebinding defence and address
 * collection on upstream answers (SPEC §2.2, §2.4, RFC 9460). */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "dns/rewrite.h"
#include "ldns_build.h"

#define ECH "ech=AEX+DQBBpQAgACBi9p8s"

/* A policy with filtering on (unless off), the name rule example.com and the
 * given address rules. */
static filter_policy_t *policy(bool filtering, const char **addrs)
{
    filter_rule_t rules[8];
    memset(rules, 0, sizeof rules);
    size_t n = 0;
    rules[n].kind = FILTER_RULE_NAME;
    cr_assert_eq(filter_pattern_parse("example.com", 11, &rules[n].pattern), 0);
    rules[n].text = "example.com";
    rules[n].line = rules[n].col = 1;
    n++;
    for (const char **a = addrs; a && *a; a++, n++) {
        rules[n].kind = FILTER_RULE_ADDR;
        cr_assert_eq(filter_prefix_parse(*a, strlen(*a), &rules[n].prefix, NULL), 0, "%s", *a);
        rules[n].text = *a;
        rules[n].line = (unsigned)n + 1;
        rules[n].col = 1;
    }
    filter_port_range_t tls[] = {{443, 443}}, http[] = {{80, 80}};
    filter_policy_input_t in = {
        .filtering = filtering,
        .rules = rules,
        .n_rules = n,
        .tls_ports = tls,
        .n_tls_ports = 1,
        .http_ports = http,
        .n_http_ports = 1,
    };
    filter_policy_t *p = NULL;
    cr_assert_eq(filter_policy_compile(&in, &p), 0);
    return p;
}

static ldns_pkt *parse(const dns_rewrite_result_t *r)
{
    ldns_pkt *p = NULL;
    cr_assert_eq(ldns_wire2pkt(&p, r->wire, r->len), LDNS_STATUS_OK);
    return p;
}

/* rr (parsed back from our output) equals the record written as text. */
static void assert_rr(const ldns_rr *rr, const char *want)
{
    ldns_rr *w = NULL;
    cr_assert_eq(ldns_rr_new_frm_str(&w, want, 0, NULL, NULL), LDNS_STATUS_OK, "%s", want);
    char *got = ldns_rr2str(rr);
    cr_assert_eq(ldns_rr_compare(rr, w), 0, "got %s want %s", got, want);
    LDNS_FREE(got);
    ldns_rr_free(w);
}

static bool section_has_addr(const ldns_rr_list *l, const char *addr)
{
    for (size_t i = 0; i < ldns_rr_list_rr_count(l); i++) {
        const ldns_rr *rr = ldns_rr_list_rr(l, i);
        if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_A && ldns_rr_get_type(rr) != LDNS_RR_TYPE_AAAA)
            continue;
        char *s = ldns_rdf2str(ldns_rr_rdf(rr, 0));
        bool eq = strcmp(s, addr) == 0;
        LDNS_FREE(s);
        if (eq)
            return true;
    }
    return false;
}

Test(rewrite, https_ech_removed_others_intact)
{
    filter_policy_t *pol = policy(true, NULL);
    const char *an[] = {"example.com. 300 IN HTTPS 1 . alpn=h2,h3 ipv4hint=198.18.0.1 " ECH
                        " ipv6hint=2001:db8::1",
                        "example.com. 300 IN HTTPS 2 svc.example.com. port=8443 " ECH, NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN HTTPS", 0, an, NULL, NULL, true);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_eq(r.removed_ech, 2);
    cr_assert_eq(r.removed_addrs, 0);
    cr_assert_lt(r.len, len);
    cr_assert_eq(r.qtype, 65);
    cr_assert_str_eq(r.qname, "example.com");
    ldns_pkt *p = parse(&r);
    cr_assert_eq(ldns_pkt_id(p), TEST_RESPONSE_ID);
    cr_assert_eq(ldns_rr_list_rr_count(ldns_pkt_answer(p)), 2);
    assert_rr(ldns_rr_list_rr(ldns_pkt_answer(p), 0),
              "example.com. 300 IN HTTPS 1 . alpn=h2,h3 ipv4hint=198.18.0.1 ipv6hint=2001:db8::1");
    assert_rr(ldns_rr_list_rr(ldns_pkt_answer(p), 1),
              "example.com. 300 IN HTTPS 2 svc.example.com. port=8443");
    /* EDNS survives the re-serialisation */
    cr_assert(ldns_pkt_edns(p));
    cr_assert(ldns_pkt_edns_do(p));
    cr_assert_eq(ldns_pkt_edns_udp_size(p), 1232);
    cr_assert_eq(ldns_pkt_arcount(p), 0);
    ldns_pkt_free(p);
    /* the TargetName stays uncompressed (RFC 9460 §2.2) */
    cr_assert_not_null(memmem(r.wire, r.len, "\3svc\7example\3com", 17));
    dns_rewrite_result_free(&r);
    cr_assert_null(r.wire);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, svcb_ech_removed_in_every_section)
{
    filter_policy_t *pol = policy(true, NULL);
    const char *an[] = {"_8443._foo.api.example.com. 300 IN SVCB 1 svc.example.net. alpn=foo "
                        "port=8443 " ECH,
                        NULL};
    const char *ar[] = {"svc.example.net. 300 IN SVCB 1 . " ECH " ipv4hint=198.18.0.9", NULL};
    size_t len;
    uint8_t *w = build(&len, "_8443._foo.api.example.com. IN SVCB", 0, an, NULL, ar, false);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_eq(r.removed_ech, 2);
    ldns_pkt *p = parse(&r);
    assert_rr(ldns_rr_list_rr(ldns_pkt_answer(p), 0),
              "_8443._foo.api.example.com. 300 IN SVCB 1 svc.example.net. alpn=foo port=8443");
    assert_rr(ldns_rr_list_rr(ldns_pkt_additional(p), 0),
              "svc.example.net. 300 IN SVCB 1 . ipv4hint=198.18.0.9");
    ldns_pkt_free(p);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, record_without_ech_unchanged)
{
    filter_policy_t *pol = policy(true, NULL);
    const char *an[] = {"example.com. 300 IN HTTPS 1 . alpn=h2,h3 ipv4hint=198.18.0.1",
                        "example.com. 300 IN HTTPS 0 svc.example.com.", NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN HTTPS", 0, an, NULL, NULL, true);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_eq(r.removed_ech, 0);
    cr_assert_eq(r.len, len);
    cr_assert_eq(memcmp(r.wire, w, len), 0);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, mandatory_loses_removed_keys)
{
    filter_policy_t *pol = policy(true, NULL);
    const char *an[] = {"a.example.com. 300 IN HTTPS 1 . mandatory=alpn,ech alpn=h2 " ECH,
                        "b.example.com. 300 IN HTTPS 1 . mandatory=ech alpn=h2 " ECH, NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN HTTPS", 0, an, NULL, NULL, false);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    ldns_pkt *p = parse(&r);
    assert_rr(ldns_rr_list_rr(ldns_pkt_answer(p), 0),
              "a.example.com. 300 IN HTTPS 1 . mandatory=alpn alpn=h2");
    assert_rr(ldns_rr_list_rr(ldns_pkt_answer(p), 1), "b.example.com. 300 IN HTTPS 1 . alpn=h2");
    ldns_pkt_free(p);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, hints_filtered)
{
    const char *cover[] = {"192.168.7.0/24", NULL};
    filter_policy_t *pol = policy(true, cover);
    const char *an[] = {"example.com. 300 IN HTTPS 1 . alpn=h2 ipv4hint=10.0.0.1,198.18.0.1,"
                        "192.168.7.7,127.0.0.1 ipv6hint=fd00::1,fe80::1",
                        NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN HTTPS", 0, an, NULL, NULL, false);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_eq(r.removed_hints, 4);
    ldns_pkt *p = parse(&r);
    assert_rr(ldns_rr_list_rr(ldns_pkt_answer(p), 0),
              "example.com. 300 IN HTTPS 1 . alpn=h2 ipv4hint=198.18.0.1,192.168.7.7");
    ldns_pkt_free(p);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, refused_a_records_removed)
{
    filter_policy_t *pol = policy(true, NULL);
    const char *an[] = {
        "example.com. 300 IN A 127.0.0.1",       "example.com. 300 IN A 10.0.0.1",
        "example.com. 300 IN A 169.254.169.254", "example.com. 300 IN A 100.64.0.1",
        "example.com. 300 IN A 172.16.5.4",      "example.com. 300 IN A 192.168.1.1",
        "example.com. 300 IN A 0.0.0.0",         "example.com. 300 IN A 224.0.0.1",
        "example.com. 300 IN A 255.255.255.255", "example.com. 300 IN A 198.18.0.1",
        "example.com. 300 IN A 203.0.113.7",     NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN A", 0, an, NULL, NULL, true);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_eq(r.removed_addrs, 9);
    cr_assert(!r.nodata);
    ldns_pkt *p = parse(&r);
    cr_assert_eq(ldns_rr_list_rr_count(ldns_pkt_answer(p)), 2);
    cr_assert_eq(ldns_pkt_ancount(p), 2);
    cr_assert(section_has_addr(ldns_pkt_answer(p), "198.18.0.1"));
    cr_assert(section_has_addr(ldns_pkt_answer(p), "203.0.113.7"));
    cr_assert(ldns_pkt_edns_do(p));
    ldns_pkt_free(p);
    cr_assert_eq(r.n_addrs, 2);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, refused_aaaa_records_removed)
{
    filter_policy_t *pol = policy(true, NULL);
    const char *an[] = {"example.com. 300 IN AAAA fd00::1",
                        "example.com. 300 IN AAAA ::ffff:127.0.0.1",
                        "example.com. 300 IN AAAA ::ffff:10.1.2.3",
                        "example.com. 300 IN AAAA ::1",
                        "example.com. 300 IN AAAA ::",
                        "example.com. 300 IN AAAA fe80::1",
                        "example.com. 300 IN AAAA ff02::1",
                        "example.com. 300 IN AAAA 2001:db8::1",
                        "example.com. 300 IN AAAA ::ffff:198.18.0.1",
                        NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN AAAA", 0, an, NULL, NULL, false);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_eq(r.removed_addrs, 7);
    ldns_pkt *p = parse(&r);
    cr_assert_eq(ldns_rr_list_rr_count(ldns_pkt_answer(p)), 2);
    cr_assert(section_has_addr(ldns_pkt_answer(p), "2001:db8::1"));
    cr_assert(section_has_addr(ldns_pkt_answer(p), "::ffff:198.18.0.1"));
    ldns_pkt_free(p);
    /* the mapped address is collected as the IPv4 address it carries */
    cr_assert_eq(r.n_addrs, 2);
    cr_assert_eq(r.addrs[1].addr.family, AF_INET);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, covered_by_address_rule_kept)
{
    const char *cover[] = {"10.0.0.0/8", "fd00::1", "169.254.169.254", NULL};
    filter_policy_t *pol = policy(true, cover);
    const char *an[] = {"example.com. 300 IN A 10.0.0.1", "example.com. 300 IN A 169.254.169.254",
                        "example.com. 300 IN A 192.168.0.1", NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN A", 0, an, NULL, NULL, false);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_eq(r.removed_addrs, 1);
    ldns_pkt *p = parse(&r);
    cr_assert(section_has_addr(ldns_pkt_answer(p), "10.0.0.1"));
    cr_assert(section_has_addr(ldns_pkt_answer(p), "169.254.169.254"));
    cr_assert(!section_has_addr(ldns_pkt_answer(p), "192.168.0.1"));
    ldns_pkt_free(p);
    dns_rewrite_result_free(&r);
    free(w);

    const char *an6[] = {"example.com. 300 IN AAAA fd00::1", "example.com. 300 IN AAAA fd00::2",
                         NULL};
    w = build(&len, "example.com. IN AAAA", 0, an6, NULL, NULL, false);
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_eq(r.removed_addrs, 1);
    p = parse(&r);
    cr_assert(section_has_addr(ldns_pkt_answer(p), "fd00::1"));
    ldns_pkt_free(p);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, all_removed_gives_nodata)
{
    filter_policy_t *pol = policy(true, NULL);
    const char *an[] = {"www.example.com. 300 IN CNAME lan.example.com.",
                        "lan.example.com. 300 IN A 10.0.0.1", "lan.example.com. 300 IN A 127.0.0.1",
                        NULL};
    const char *ar[] = {"ns.example.com. 300 IN A 192.168.0.53", NULL};
    size_t len;
    uint8_t *w = build(&len, "www.example.com. IN A", 0, an, NULL, ar, true);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert(r.nodata);
    cr_assert_eq(r.removed_addrs, 3);
    cr_assert_eq(r.n_addrs, 0);
    cr_assert_null(r.addrs);
    ldns_pkt *p = parse(&r);
    cr_assert_eq(ldns_pkt_get_rcode(p), LDNS_RCODE_NOERROR);
    cr_assert_eq(ldns_rr_list_rr_count(ldns_pkt_answer(p)), 1);
    cr_assert_eq(ldns_rr_get_type(ldns_rr_list_rr(ldns_pkt_answer(p), 0)), LDNS_RR_TYPE_CNAME);
    cr_assert_eq(ldns_rr_list_rr_count(ldns_pkt_additional(p)), 0);
    cr_assert(ldns_pkt_edns(p)); /* the OPT is not counted as a removed record */
    ldns_pkt_free(p);
    /* such a NODATA has no SOA: the cache does not keep it */
    dns_cache_t *c = NULL;
    cr_assert_eq(dns_cache_create(10, &c), 0);
    dns_cache_key_t k;
    cr_assert_eq(dns_cache_key_from_msg(&k, r.wire, r.len), 0);
    cr_assert_eq(dns_cache_put(c, &k, r.wire, r.len, NULL, 0, 0), -ENODATA);
    dns_cache_free(c);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, addresses_collected_along_the_chain)
{
    filter_policy_t *pol = policy(true, NULL);
    const char *an[] = {"www.example.com. 60 IN CNAME cdn.example.net.",
                        "cdn.example.net. 300 IN CNAME edge.example.org.",
                        "edge.example.org. 300 IN A 198.18.0.1",
                        "edge.example.org. 30 IN A 198.18.0.2",
                        "EDGE.example.org. 300 IN AAAA 2001:db8::2",
                        "unrelated.example.org. 300 IN A 198.18.0.3",
                        "edge.example.org. 300 IN A 10.0.0.1",
                        NULL};
    size_t len;
    uint8_t *w = build(&len, "WWW.Example.COM. IN A", 0, an, NULL, NULL, false);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_str_eq(r.qname, "www.example.com");
    cr_assert_eq(r.qname_len, 15);
    cr_assert_eq(r.n_addrs, 3);
    char buf[FILTER_ADDR_STRLEN];
    cr_assert_str_eq(filter_addr_format(&r.addrs[0].addr, buf, sizeof buf), "198.18.0.1");
    cr_assert_eq(r.addrs[0].ttl, 60);
    cr_assert_str_eq(filter_addr_format(&r.addrs[1].addr, buf, sizeof buf), "198.18.0.2");
    cr_assert_eq(r.addrs[1].ttl, 30);
    cr_assert_str_eq(filter_addr_format(&r.addrs[2].addr, buf, sizeof buf), "2001:db8::2");
    cr_assert_eq(r.addrs[2].ttl, 60);
    dns_rewrite_result_free(&r);
    free(w);

    /* a CNAME loop ends the chain */
    const char *loop[] = {"a.example.com. 60 IN CNAME b.example.com.",
                          "b.example.com. 60 IN CNAME a.example.com.",
                          "b.example.com. 60 IN A 198.18.0.4", NULL};
    w = build(&len, "a.example.com. IN A", 0, loop, NULL, NULL, false);
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_eq(r.n_addrs, 1);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, authority_and_additional_filtered)
{
    filter_policy_t *pol = policy(true, NULL);
    const char *an[] = {"example.com. 300 IN MX 10 mail.example.com.", NULL};
    const char *ns[] = {"example.com. 300 IN NS ns.example.com.", NULL};
    const char *ar[] = {"mail.example.com. 300 IN A 10.1.1.1",
                        "mail.example.com. 300 IN A 198.18.0.25", "ns.example.com. 300 IN AAAA ::1",
                        NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN MX", 0, an, ns, ar, true);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_eq(r.removed_addrs, 2);
    cr_assert(!r.nodata);
    cr_assert_eq(r.n_addrs, 0); /* additional-section addresses are not the name's */
    ldns_pkt *p = parse(&r);
    cr_assert_eq(ldns_rr_list_rr_count(ldns_pkt_answer(p)), 1);
    cr_assert_eq(ldns_rr_list_rr_count(ldns_pkt_authority(p)), 1);
    cr_assert_eq(ldns_rr_list_rr_count(ldns_pkt_additional(p)), 1);
    cr_assert(section_has_addr(ldns_pkt_additional(p), "198.18.0.25"));
    cr_assert(ldns_pkt_edns(p));
    ldns_pkt_free(p);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, filtering_off_is_transparent)
{
    filter_policy_t *pol = policy(false, NULL);
    const char *an[] = {"example.com. 300 IN A 127.0.0.1", "example.com. 300 IN A 10.0.0.1", NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN A", 0, an, NULL, NULL, false);
    for (int i = 0; i < 2; i++) {
        dns_rewrite_result_t r;
        cr_assert_eq(dns_rewrite(i ? NULL : pol, w, len, &r), 0);
        cr_assert_eq(r.removed_addrs, 0);
        cr_assert_eq(r.len, len);
        cr_assert_eq(memcmp(r.wire, w, len), 0);
        cr_assert_eq(r.n_addrs, 2);
        dns_rewrite_result_free(&r);
    }
    free(w);
    const char *an2[] = {"example.com. 300 IN HTTPS 1 . alpn=h2 " ECH, NULL};
    w = build(&len, "example.com. IN HTTPS", 0, an2, NULL, NULL, false);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_eq(r.removed_ech, 0);
    cr_assert_eq(memcmp(r.wire, w, len), 0);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, rewritten_answer_is_cacheable)
{
    filter_policy_t *pol = policy(true, NULL);
    const char *an[] = {"example.com. 300 IN A 10.0.0.1", "example.com. 300 IN A 198.18.0.1", NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN A", 0, an, NULL, NULL, true);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    dns_cache_t *c = NULL;
    cr_assert_eq(dns_cache_create(10, &c), 0);
    dns_cache_key_t k;
    cr_assert_eq(dns_cache_key_from_name(&k, "example.com", 11, 1, 1), 0);
    cr_assert_eq(dns_cache_put(c, &k, r.wire, r.len, r.addrs, r.n_addrs, 0), 0);
    uint8_t buf[512];
    size_t got;
    cr_assert_eq(dns_cache_get(c, &k, 5000, buf, sizeof buf, &got, NULL, NULL), 0);
    cr_assert_eq(got, r.len);
    dns_cache_free(c);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, garbage_is_an_error)
{
    filter_policy_t *pol = policy(true, NULL);
    dns_rewrite_result_t r;
    const uint8_t junk[] = {0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03};
    cr_assert_eq(dns_rewrite(pol, junk, sizeof junk, &r), -EBADMSG);
    cr_assert_null(r.wire);
    cr_assert_eq(dns_rewrite(pol, junk, 0, &r), -EBADMSG);

    const char *an[] = {"example.com. 300 IN A 198.18.0.1", NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN A", 0, an, NULL, NULL, false);
    for (size_t n = 12; n < len; n++) /* truncated */
        cr_assert_eq(dns_rewrite(pol, w, n, &r), -EBADMSG, "len %zu", n);
    w[2] &= 0x7f; /* a query, not a response */
    cr_assert_eq(dns_rewrite(pol, w, len, &r), -EBADMSG);
    free(w);

    /* A with a 3-byte rdata */
    const uint8_t short_a[] = {0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0,  1, 'a', 0, 0, 1,
                               0, 1, 0xc0, 12,   0, 1, 0, 1, 0, 0, 0, 60, 0, 3,   1, 2, 3};
    cr_assert_eq(dns_rewrite(pol, short_a, sizeof short_a, &r), -EBADMSG);
    /* HTTPS whose SvcParam length runs past the rdata */
    const uint8_t bad_svcb[] = {0,   1, 0x81, 0x80, 0, 1, 0,    1,  0, 0,  0, 0, 1,
                                'a', 0, 0,    65,   0, 1, 0xc0, 12, 0, 65, 0, 1, 0,
                                0,   0, 60,   0,    8, 0, 1,    0,  0, 5,  0, 9, 0xaa};
    cr_assert_eq(dns_rewrite(pol, bad_svcb, sizeof bad_svcb, &r), -EBADMSG);
    /* ipv4hint of 5 bytes */
    const uint8_t bad_hint[] = {0,  1,  0x81, 0x80, 0,    1,  0, 1,  0, 0, 0, 0, 1, 'a', 0,
                                0,  65, 0,    1,    0xc0, 12, 0, 65, 0, 1, 0, 0, 0, 60,  0,
                                12, 0,  1,    0,    0,    4,  0, 5,  1, 2, 3, 4, 5};
    cr_assert_eq(dns_rewrite(pol, bad_hint, sizeof bad_hint, &r), -EBADMSG);
    /* an A whose RDLENGTH (15) hides a record after its 4 address bytes:
     * ldns alone would read "A 198.18.0.1" then a second A 127.0.0.1 */
    const uint8_t hidden[] = {
        0,    1,  0x81, 0x80, 0, 1, 0, 2, 0,  0,  0, 0,   1,   'a', 0, 0,
        1,    0,  1,                                                       /* header, question */
        0xc0, 12, 0,    1,    0, 1, 0, 0, 0,  60, 0, 19,  198, 18,  0, 1,  /* A, RDLENGTH 19 */
        0,    0,  1,    0,    1, 0, 0, 0, 60, 0,  4, 127, 0,   0,   1,     /* inside: A 127.0.0.1 */
        0xc0, 12, 0,    1,    0, 1, 0, 0, 0,  60, 0, 4,   198, 18,  0, 2}; /* A 198.18.0.2 */
    cr_assert_eq(dns_rewrite(pol, hidden, sizeof hidden, &r), -EBADMSG);
    /* a CNAME whose rdata runs on past its name */
    const uint8_t long_cname[] = {0, 1,   0x81, 0x80, 0,  1, 0, 1,    0,  0, 0, 0,
                                  1, 'a', 0,    0,    1,  0, 1, 0xc0, 12, 0, 5, 0,
                                  1, 0,   0,    0,    60, 0, 4, 0xc0, 12, 0, 0};
    cr_assert_eq(dns_rewrite(pol, long_cname, sizeof long_cname, &r), -EBADMSG);
    /* a TSIG in an answer to an unsigned query (RFC 8945 §5.3) */
    const uint8_t tsig[] = {0, 1, 0x81, 0x80, 0, 1, 0,   0, 0,   0, 0, 1, 1, 'a', 0,
                            0, 1, 0,    1,    0, 0, 250, 0, 255, 0, 0, 0, 0, 0,   0};
    cr_assert_eq(dns_rewrite(pol, tsig, sizeof tsig, &r), -EBADMSG);
    /* a record cut short in the additional section */
    const uint8_t short_ar[] = {0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 2, 1, 'a', 0, 0,
                                1, 0, 1,    0,    0, 1, 0, 1, 0, 0, 0, 0, 0, 0,   0};
    cr_assert_eq(dns_rewrite(pol, short_ar, sizeof short_ar, &r), -EBADMSG);
    /* QDCOUNT 0 */
    const uint8_t no_q[] = {0, 1, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(dns_rewrite(pol, no_q, sizeof no_q, &r), -EBADMSG);
    cr_assert_eq(dns_rewrite(pol, NULL, 0, &r), -EINVAL);
    dns_rewrite_result_free(NULL);
    filter_policy_free(pol);
}

Test(rewrite, edns_options_but_ede_dropped)
{
    /* COOKIE (10) with 8+16 bytes, EDE (15) "3: Stale Answer" + text, PADDING (12) */
    uint8_t opts[] = {0,    10,   0,    24,   1,    2,    3,    4,    5,    6,    7,    8,
                      0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
                      0x11, 0x11, 0x11, 0x11, 0,    15,   0,    5,    0,    3,    's',  't',
                      'l',  0,    12,   0,    4,    0,    0,    0,    0};
    const uint8_t ede[] = {0, 15, 0, 5, 0, 3, 's', 't', 'l'};
    for (int filtering = 0; filtering < 2; filtering++) {
        filter_policy_t *pol = policy(filtering, NULL);
        ldns_pkt *p = ldns_pkt_new();
        ldns_pkt_set_qr(p, true);
        ldns_rr *q = NULL, *a = NULL;
        cr_assert_eq(ldns_rr_new_question_frm_str(&q, "example.com. IN A", NULL, NULL), 0);
        cr_assert_eq(ldns_rr_new_frm_str(&a, "example.com. 300 IN A 198.18.0.1", 0, NULL, NULL), 0);
        ldns_pkt_push_rr(p, LDNS_SECTION_QUESTION, q);
        ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, a);
        ldns_pkt_set_edns_udp_size(p, 1232);
        ldns_pkt_set_edns_do(p, true);
        ldns_pkt_set_edns_data(p, ldns_rdf_new_frm_data(LDNS_RDF_TYPE_UNKNOWN, sizeof opts, opts));
        uint8_t *w = NULL;
        size_t len;
        cr_assert_eq(ldns_pkt2wire(&w, p, &len), LDNS_STATUS_OK);
        ldns_pkt_free(p);
        cr_assert_not_null(memmem(w, len, opts, sizeof opts));

        dns_rewrite_result_t r;
        cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
        cr_assert_eq(r.len, len - (sizeof opts - sizeof ede));
        p = parse(&r);
        cr_assert(ldns_pkt_edns_do(p));
        ldns_rdf *d = ldns_pkt_edns_data(p);
        cr_assert_not_null(d);
        cr_assert_eq(ldns_rdf_size(d), sizeof ede);
        cr_assert_eq(memcmp(ldns_rdf_data(d), ede, sizeof ede), 0);
        cr_assert_eq(ldns_rr_list_rr_count(ldns_pkt_answer(p)), 1);
        ldns_pkt_free(p);
        dns_rewrite_result_free(&r);

        /* badly framed options: all go, the OPT stays */
        size_t at = (size_t)((uint8_t *)memmem(w, len, opts, sizeof opts) - w);
        w[at + 3] = 200; /* COOKIE length past the end */
        cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
        p = parse(&r);
        cr_assert(ldns_pkt_edns(p));
        cr_assert_null(ldns_pkt_edns_data(p));
        ldns_pkt_free(p);
        dns_rewrite_result_free(&r);
        free(w);
        filter_policy_free(pol);
    }
}

/* SPEC §2.5: AAAA records in the IPv6 forms that carry a refused or private
 * IPv4 address go as that address would. */
Test(rewrite, ipv4_in_ipv6_forms_removed)
{
    filter_policy_t *pol = policy(true, NULL);
    const char *an[] = {
        "example.com. 300 IN AAAA ::ffff:10.0.0.1",    "example.com. 300 IN AAAA ::127.0.0.1",
        "example.com. 300 IN AAAA ::10.0.0.1",         "example.com. 300 IN AAAA ::2",
        "example.com. 300 IN AAAA 64:ff9b::a9fe:a9fe", "example.com. 300 IN AAAA 64:ff9b::a00:1",
        "example.com. 300 IN AAAA 64:ff9b::6440:1",    "example.com. 300 IN AAAA 2002:7f00:1::",
        "example.com. 300 IN AAAA 2002:c0a8:101::1",   "example.com. 300 IN AAAA 2002::",
        "example.com. 300 IN AAAA 64:ff9b::808:808",   "example.com. 300 IN AAAA 2002:808:808::",
        "example.com. 300 IN AAAA 64:ff9b:1::a00:1",   NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN AAAA", 0, an, NULL, NULL, false);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_eq(r.removed_addrs, 10);
    cr_assert(!r.nodata);
    ldns_pkt *p = parse(&r);
    cr_assert_eq(ldns_rr_list_rr_count(ldns_pkt_answer(p)), 3);
    cr_assert(section_has_addr(ldns_pkt_answer(p), "64:ff9b::808:808"));
    cr_assert(section_has_addr(ldns_pkt_answer(p), "2002:808:808::"));
    /* the local-use NAT64 prefix has no fixed embedding: judged as itself */
    cr_assert(section_has_addr(ldns_pkt_answer(p), "64:ff9b:1::a00:1"));
    ldns_pkt_free(p);
    cr_assert_eq(r.n_addrs, 3);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, ipv4_in_ipv6_forms_only_gives_nodata)
{
    filter_policy_t *pol = policy(true, NULL);
    const char *an[] = {"example.com. 300 IN AAAA ::ffff:10.0.0.1",
                        "example.com. 300 IN AAAA 64:ff9b::a00:1", NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN AAAA", 0, an, NULL, NULL, false);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert(r.nodata);
    cr_assert_eq(r.removed_addrs, 2);
    cr_assert_eq(r.n_addrs, 0);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

/* Only a rule covering the IPv6 form as written keeps it: a rule for the
 * IPv4 address it carries does not (SPEC §2.5, filter/policy.h). */
Test(rewrite, ipv4_in_ipv6_forms_covered_by_their_own_rule)
{
    const char *cover[] = {"10.0.0.0/8", "64:ff9b::a00:0/120", "2002:7f00::/24", NULL};
    filter_policy_t *pol = policy(true, cover);
    const char *an[] = {
        "example.com. 300 IN AAAA 64:ff9b::a00:1",  "example.com. 300 IN AAAA 64:ff9b::a01:1",
        "example.com. 300 IN AAAA ::10.0.0.1",      "example.com. 300 IN AAAA 2002:7f00:1::",
        "example.com. 300 IN AAAA ::ffff:10.0.0.1", NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN AAAA", 0, an, NULL, NULL, false);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_eq(r.removed_addrs, 2);
    ldns_pkt *p = parse(&r);
    cr_assert(section_has_addr(ldns_pkt_answer(p), "64:ff9b::a00:1"));
    cr_assert(section_has_addr(ldns_pkt_answer(p), "2002:7f00:1::"));
    /* ::ffff: is IPv4 to the policy: 10.0.0.0/8 covers it */
    cr_assert(section_has_addr(ldns_pkt_answer(p), "::ffff:10.0.0.1"));
    cr_assert(!section_has_addr(ldns_pkt_answer(p), "64:ff9b::a01:1"));
    cr_assert(!section_has_addr(ldns_pkt_answer(p), "::10.0.0.1"));
    ldns_pkt_free(p);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}

Test(rewrite, ipv4_in_ipv6_forms_in_hints)
{
    filter_policy_t *pol = policy(true, NULL);
    const char *an[] = {"example.com. 300 IN HTTPS 1 . alpn=h2 ipv6hint=64:ff9b::a9fe:a9fe,"
                        "2001:db8::1,::ffff:127.0.0.1,2002:a00:1::,::192.168.0.1",
                        "example.com. 300 IN HTTPS 2 . alpn=h2 ipv6hint=64:ff9b::a00:1", NULL};
    size_t len;
    uint8_t *w = build(&len, "example.com. IN HTTPS", 0, an, NULL, NULL, false);
    dns_rewrite_result_t r;
    cr_assert_eq(dns_rewrite(pol, w, len, &r), 0);
    cr_assert_eq(r.removed_hints, 5);
    ldns_pkt *p = parse(&r);
    assert_rr(ldns_rr_list_rr(ldns_pkt_answer(p), 0),
              "example.com. 300 IN HTTPS 1 . alpn=h2 ipv6hint=2001:db8::1");
    assert_rr(ldns_rr_list_rr(ldns_pkt_answer(p), 1), "example.com. 300 IN HTTPS 2 . alpn=h2");
    ldns_pkt_free(p);
    dns_rewrite_result_free(&r);
    free(w);
    filter_policy_free(pol);
}
