/* tests/dns/test_answer.c: every answer builder, every query type, read
 * back with ldns_wire2pkt (header flags, RCODE, sections, SOA fields, OPT,
 * EDE, TTLs, the question's letter case), TC behaviour and the patch of
 * forwarded answers (SPEC §2.2). */
#include <criterion/criterion.h>
#include <errno.h>
#include <ldns/ldns.h>
#include <stdlib.h>
#include <string.h>

#include "dns/answer.h"
#include "dns/query.h"

typedef struct qopts {
    uint16_t id;
    bool edns;
    uint16_t udp;
    bool do_bit;
    bool cd;
    bool no_rd;
} qopts_t;

/* A parsed query for name/type, built by ldns. */
static dns_query_t mkq(const char *name, ldns_rr_type type, const qopts_t *o)
{
    ldns_pkt *p = NULL;
    cr_assert_eq(
        ldns_pkt_query_new_frm_str(&p, name, type, LDNS_RR_CLASS_IN, o->no_rd ? 0 : LDNS_RD),
        LDNS_STATUS_OK, "%s", name);
    ldns_pkt_set_id(p, o->id);
    ldns_pkt_set_cd(p, o->cd);
    if (o->edns) {
        ldns_pkt_set_edns_udp_size(p, o->udp ? o->udp : 1232);
        ldns_pkt_set_edns_do(p, o->do_bit);
    }
    uint8_t *wire = NULL;
    size_t len = 0;
    cr_assert_eq(ldns_pkt2wire(&wire, p, &len), LDNS_STATUS_OK);
    ldns_pkt_free(p);
    dns_query_t q;
    cr_assert_eq(dns_query_parse(wire, len, &q), 0);
    free(wire);
    return q;
}

/* A question name of total_len wire octets (root included), mixed case. */
static dns_query_t mkq_long(size_t total_len, ldns_rr_type type, const qopts_t *o)
{
    char text[300];
    size_t t = 0, w = 0;
    while (w + 1 < total_len) {
        size_t left = total_len - 1 - w; /* octets left for labels */
        size_t ll = left - 1 > 63 ? 63 : left - 1;
        if (left - (ll + 1) == 1) /* never leave a single octet: no room for a label */
            ll--;
        if (t)
            text[t++] = '.';
        for (size_t i = 0; i < ll; i++)
            text[t++] = (char)((i % 2 ? 'a' : 'A') + (char)(w % 26));
        w += ll + 1;
    }
    text[t] = '\0';
    dns_query_t q = mkq(text, type, o);
    cr_assert_eq(q.qname_len, total_len);
    return q;
}

static ldns_pkt *reparse(const uint8_t *buf, int len)
{
    cr_assert_gt(len, 0, "builder returned %d", len);
    ldns_pkt *p = NULL;
    ldns_status st = ldns_wire2pkt(&p, buf, (size_t)len);
    cr_assert_eq(st, LDNS_STATUS_OK, "ldns_wire2pkt: %s", ldns_get_errorstr_by_id(st));
    return p;
}

static char *owner_str(const ldns_rr *rr)
{
    return ldns_rdf2str(ldns_rr_owner(rr));
}

static void assert_question(ldns_pkt *p, const char *name, ldns_rr_type type)
{
    cr_assert_eq(ldns_pkt_qdcount(p), 1);
    ldns_rr *qr = ldns_rr_list_rr(ldns_pkt_question(p), 0);
    char *s = owner_str(qr);
    cr_assert_str_eq(s, name, "question name and letter case: %s", s);
    free(s);
    cr_assert_eq(ldns_rr_get_type(qr), type);
    cr_assert_eq(ldns_rr_get_class(qr), LDNS_RR_CLASS_IN);
}

/* The EDE option: present with info code and text, or absent. */
static void assert_ede(ldns_pkt *p, int info, const char *text)
{
    ldns_edns_option_list *l = ldns_pkt_edns_get_option_list(p);
    if (info < 0) {
        cr_assert(l == NULL || ldns_edns_option_list_get_count(l) == 0);
        return;
    }
    cr_assert_not_null(l);
    cr_assert_eq(ldns_edns_option_list_get_count(l), 1);
    ldns_edns_option *e = ldns_edns_option_list_get_option(l, 0);
    cr_assert_eq(ldns_edns_get_code(e), LDNS_EDNS_EDE);
    size_t n = ldns_edns_get_size(e);
    const uint8_t *d = ldns_edns_get_data(e);
    cr_assert_geq(n, 2);
    cr_assert_eq(d[0] << 8 | d[1], info);
    cr_assert_eq(n - 2, strlen(text));
    cr_assert_eq(memcmp(d + 2, text, n - 2), 0);
}

static void assert_opt(ldns_pkt *p, const dns_query_t *q)
{
    cr_assert_eq(ldns_pkt_edns(p), q->edns);
    if (!q->edns)
        return;
    cr_assert_eq(ldns_pkt_edns_udp_size(p), 1232);
    cr_assert_eq(ldns_pkt_edns_version(p), 0);
    cr_assert_eq(ldns_pkt_edns_do(p), q->edns_do);
}

static void assert_soa(const ldns_rr *rr, const char *zone, uint32_t ttl)
{
    cr_assert_eq(ldns_rr_get_type(rr), LDNS_RR_TYPE_SOA);
    cr_assert_eq(ldns_rr_get_class(rr), LDNS_RR_CLASS_IN);
    char *s = owner_str(rr);
    cr_assert_str_eq(s, zone);
    free(s);
    cr_assert_eq(ldns_rr_ttl(rr), ttl);
    cr_assert_eq(ldns_rr_rd_count(rr), 7);
    s = ldns_rdf2str(ldns_rr_rdf(rr, 0));
    cr_assert_str_eq(s, "sinkhole.moat.invalid.");
    free(s);
    s = ldns_rdf2str(ldns_rr_rdf(rr, 1));
    cr_assert_str_eq(s, "hostmaster.moat.invalid.");
    free(s);
    cr_assert_eq(ldns_rdf2native_int32(ldns_rr_rdf(rr, 2)), 1);     /* serial */
    cr_assert_eq(ldns_rdf2native_int32(ldns_rr_rdf(rr, 3)), 3600);  /* refresh */
    cr_assert_eq(ldns_rdf2native_int32(ldns_rr_rdf(rr, 4)), 600);   /* retry */
    cr_assert_eq(ldns_rdf2native_int32(ldns_rr_rdf(rr, 5)), 86400); /* expire */
    cr_assert_eq(ldns_rdf2native_int32(ldns_rr_rdf(rr, 6)), ttl);   /* minimum */
}

static void assert_flags(ldns_pkt *p, const dns_query_t *q, bool aa, bool tc, int rcode)
{
    cr_assert_eq(ldns_pkt_id(p), q->id);
    cr_assert(ldns_pkt_qr(p));
    cr_assert_eq(ldns_pkt_aa(p), aa);
    cr_assert_eq(ldns_pkt_tc(p), tc);
    cr_assert_eq(ldns_pkt_rd(p), q->rd);
    cr_assert(ldns_pkt_ra(p));
    cr_assert_not(ldns_pkt_ad(p));
    cr_assert_eq(ldns_pkt_cd(p), q->cd);
    cr_assert_eq((int)ldns_pkt_get_opcode(p), q->opcode);
    cr_assert_eq((int)ldns_pkt_get_rcode(p), rcode & 0xf);
    if (q->edns)
        cr_assert_eq(ldns_pkt_edns_extended_rcode(p), rcode >> 4);
}

static const dns_sinkhole_t sink_default = {.ttl = 10};
static const dns_sinkhole_t sink_custom = {
    .ipv4 = {198, 18, 0, 7},
    .ipv6 = {0x20, 0x01, 0x0d, 0xb8, [15] = 7},
    .ttl = 42,
};

static const ldns_rr_type all_types[] = {
    LDNS_RR_TYPE_A,   LDNS_RR_TYPE_AAAA,  LDNS_RR_TYPE_HTTPS, LDNS_RR_TYPE_SVCB, LDNS_RR_TYPE_MX,
    LDNS_RR_TYPE_TXT, LDNS_RR_TYPE_CNAME, LDNS_RR_TYPE_NS,    LDNS_RR_TYPE_SRV,  LDNS_RR_TYPE_PTR,
    LDNS_RR_TYPE_ANY, LDNS_RR_TYPE_SOA,   LDNS_RR_TYPE_DS,    LDNS_RR_TYPE_CAA};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

static const char *blocked_text = "blocked by moat allowlist";

Test(answer, sinkhole_every_type)
{
    const dns_sinkhole_t *cfgs[] = {&sink_default, &sink_custom};
    uint8_t buf[1500];
    for (size_t c = 0; c < 2; c++) {
        const dns_sinkhole_t *cfg = cfgs[c];
        for (size_t i = 0; i < N_TYPES; i++) {
            for (int e = 0; e < 4; e++) {
                qopts_t o = {.id = (uint16_t)(i * 7 + 1),
                             .edns = e & 1,
                             .do_bit = e & 2,
                             .cd = e == 3,
                             .no_rd = e == 2};
                dns_query_t q = mkq("Tracker.Ads.EXAMPLE.com", all_types[i], &o);
                int n = dns_answer_sinkhole(&q, cfg, buf, sizeof buf, dns_udp_limit(&q));
                ldns_pkt *p = reparse(buf, n);
                assert_flags(p, &q, true, false, DNS_RCODE_NOERROR);
                assert_question(p, "Tracker.Ads.EXAMPLE.com.", all_types[i]);
                assert_opt(p, &q);
                if (q.edns)
                    assert_ede(p, 15, blocked_text);
                else
                    assert_ede(p, -1, NULL);
                cr_assert_eq(ldns_pkt_arcount(p), 0, "OPT is not an additional record to ldns");
                if (all_types[i] == LDNS_RR_TYPE_A || all_types[i] == LDNS_RR_TYPE_AAAA) {
                    bool v4 = all_types[i] == LDNS_RR_TYPE_A;
                    cr_assert_eq(ldns_pkt_ancount(p), 1);
                    cr_assert_eq(ldns_pkt_nscount(p), 0);
                    ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_answer(p), 0);
                    cr_assert_eq(ldns_rr_get_type(rr), all_types[i]);
                    cr_assert_eq(ldns_rr_get_class(rr), LDNS_RR_CLASS_IN);
                    cr_assert_eq(ldns_rr_ttl(rr), cfg->ttl);
                    char *s = owner_str(rr);
                    cr_assert_str_eq(s, "Tracker.Ads.EXAMPLE.com.");
                    free(s);
                    ldns_rdf *rd = ldns_rr_rdf(rr, 0);
                    cr_assert_eq(ldns_rdf_size(rd), v4 ? 4 : 16);
                    cr_assert_eq(memcmp(ldns_rdf_data(rd), v4 ? cfg->ipv4 : cfg->ipv6, v4 ? 4 : 16),
                                 0);
                } else {
                    cr_assert_eq(ldns_pkt_ancount(p), 0, "NODATA");
                    cr_assert_eq(ldns_pkt_nscount(p), 1);
                    assert_soa(ldns_rr_list_rr(ldns_pkt_authority(p), 0), "com.", cfg->ttl);
                }
                cr_assert_leq((size_t)n, 512);
                ldns_pkt_free(p);
            }
        }
    }
}

Test(answer, sinkhole_nxdomain_mode)
{
    dns_sinkhole_t cfg = sink_custom;
    cfg.nxdomain = true;
    uint8_t buf[1500];
    for (size_t i = 0; i < N_TYPES; i++) {
        for (int e = 0; e < 2; e++) {
            qopts_t o = {.id = 0x4242, .edns = e};
            dns_query_t q = mkq("evil.EXAMPLE.Org.", all_types[i], &o);
            int n = dns_answer_sinkhole(&q, &cfg, buf, sizeof buf, dns_udp_limit(&q));
            ldns_pkt *p = reparse(buf, n);
            assert_flags(p, &q, true, false, DNS_RCODE_NXDOMAIN);
            assert_question(p, "evil.EXAMPLE.Org.", all_types[i]);
            cr_assert_eq(ldns_pkt_ancount(p), 0);
            cr_assert_eq(ldns_pkt_nscount(p), 1);
            assert_soa(ldns_rr_list_rr(ldns_pkt_authority(p), 0), "Org.", 42);
            assert_opt(p, &q);
            if (e)
                assert_ede(p, 15, blocked_text);
            ldns_pkt_free(p);
        }
    }
}

Test(answer, sinkhole_root_and_single_label)
{
    uint8_t buf[1500];
    qopts_t o = {.edns = true};
    dns_query_t q = mkq(".", LDNS_RR_TYPE_NS, &o);
    int n = dns_answer_sinkhole(&q, &sink_default, buf, sizeof buf, dns_udp_limit(&q));
    ldns_pkt *p = reparse(buf, n);
    assert_question(p, ".", LDNS_RR_TYPE_NS);
    assert_soa(ldns_rr_list_rr(ldns_pkt_authority(p), 0), ".", 10);
    ldns_pkt_free(p);

    q = mkq("LocalHost", LDNS_RR_TYPE_MX, &o);
    n = dns_answer_sinkhole(&q, &sink_default, buf, sizeof buf, dns_udp_limit(&q));
    p = reparse(buf, n);
    assert_soa(ldns_rr_list_rr(ldns_pkt_authority(p), 0), "LocalHost.", 10);
    ldns_pkt_free(p);
}

Test(answer, sinkhole_exact_bytes)
{
    /* The A answer byte for byte, to pin the wire layout. */
    qopts_t o = {.id = 0xabcd};
    dns_query_t q = mkq("a.io", LDNS_RR_TYPE_A, &o);
    uint8_t buf[512];
    int n = dns_answer_sinkhole(&q, &sink_custom, buf, sizeof buf, 512);
    const uint8_t want[] = {0xab, 0xcd, 0x85, 0x80, 0, 1,  0, 1, 0,   0,    0,    0, 1,
                            'a',  2,    'i',  'o',  0, 0,  1, 0, 1,   0xc0, 0x0c, 0, 1,
                            0,    1,    0,    0,    0, 42, 0, 4, 198, 18,   0,    7};
    cr_assert_eq(n, (int)sizeof want);
    cr_assert_eq(memcmp(buf, want, sizeof want), 0);
}

Test(answer, canary)
{
    uint8_t buf[1500];
    for (int e = 0; e < 2; e++) {
        qopts_t o = {.id = 5, .edns = e, .do_bit = true};
        dns_query_t q = mkq("Use-Application-DNS.net", LDNS_RR_TYPE_A, &o);
        cr_assert(dns_query_is_canary(&q));
        int n = dns_answer_canary(&q, &sink_default, buf, sizeof buf, dns_udp_limit(&q));
        ldns_pkt *p = reparse(buf, n);
        assert_flags(p, &q, true, false, DNS_RCODE_NXDOMAIN);
        assert_question(p, "Use-Application-DNS.net.", LDNS_RR_TYPE_A);
        cr_assert_eq(ldns_pkt_ancount(p), 0);
        assert_soa(ldns_rr_list_rr(ldns_pkt_authority(p), 0), "net.", 10);
        assert_opt(p, &q);
        if (e)
            assert_ede(p, 15, "DoH canary: moat filters this network");
        ldns_pkt_free(p);
    }
}

Test(answer, errors)
{
    const int rcodes[] = {DNS_RCODE_FORMERR, DNS_RCODE_SERVFAIL, DNS_RCODE_NOTIMP,
                          DNS_RCODE_REFUSED, DNS_RCODE_NXDOMAIN};
    uint8_t buf[1500];
    for (size_t i = 0; i < sizeof rcodes / sizeof rcodes[0]; i++) {
        for (int e = 0; e < 2; e++) {
            qopts_t o = {.id = 77, .edns = e, .do_bit = e, .cd = true};
            dns_query_t q = mkq("MiXeD.example", LDNS_RR_TYPE_HTTPS, &o);
            int n = dns_answer_error(&q, rcodes[i], buf, sizeof buf);
            ldns_pkt *p = reparse(buf, n);
            assert_flags(p, &q, false, false, rcodes[i]);
            assert_question(p, "MiXeD.example.", LDNS_RR_TYPE_HTTPS);
            cr_assert_eq(ldns_pkt_ancount(p), 0);
            cr_assert_eq(ldns_pkt_nscount(p), 0);
            assert_opt(p, &q);
            assert_ede(p, -1, NULL);
            ldns_pkt_free(p);
        }
    }
}

Test(answer, error_with_ede)
{
    uint8_t buf[1500];
    qopts_t o = {.id = 78, .edns = true};
    dns_query_t q = mkq("slow.example", LDNS_RR_TYPE_A, &o);
    int n = dns_answer_error_ede(&q, DNS_RCODE_SERVFAIL, DNS_EDE_NO_REACHABLE_AUTHORITY,
                                 "upstream timeout", buf, sizeof buf);
    ldns_pkt *p = reparse(buf, n);
    assert_flags(p, &q, false, false, DNS_RCODE_SERVFAIL);
    assert_ede(p, 22, "upstream timeout");
    ldns_pkt_free(p);
    /* Without text. */
    n = dns_answer_error_ede(&q, DNS_RCODE_SERVFAIL, DNS_EDE_NETWORK_ERROR, NULL, buf, sizeof buf);
    p = reparse(buf, n);
    assert_ede(p, 23, "");
    ldns_pkt_free(p);
    /* Without EDNS in the query: no OPT, hence no EDE. */
    o.edns = false;
    q = mkq("slow.example", LDNS_RR_TYPE_A, &o);
    n = dns_answer_error_ede(&q, DNS_RCODE_SERVFAIL, 22, "x", buf, sizeof buf);
    p = reparse(buf, n);
    cr_assert_not(ldns_pkt_edns(p));
    ldns_pkt_free(p);
    /* Text too long. */
    char big[DNS_EDE_TEXT_MAX + 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cr_assert_eq(dns_answer_error_ede(&q, 2, 22, big, buf, sizeof buf), -EINVAL);
    big[DNS_EDE_TEXT_MAX] = '\0';
    cr_assert_gt(dns_answer_error_ede(&q, 2, 22, big, buf, sizeof buf), 0);
}

/* A query that fails to parse, as hand bytes. */
static dns_query_t parse_raw(const uint8_t *msg, size_t len, int want_hint)
{
    dns_query_t q;
    cr_assert_eq(dns_query_parse(msg, len, &q), 0);
    cr_assert_eq(q.rcode_hint, want_hint);
    return q;
}

Test(answer, formerr_without_question)
{
    /* QDCOUNT 2: FORMERR with no question echoed, no OPT (never read). */
    const uint8_t msg[] = {0xde, 0xad, 0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0};
    dns_query_t q = parse_raw(msg, sizeof msg, DNS_RCODE_FORMERR);
    uint8_t buf[512];
    int n = dns_answer_error(&q, q.rcode_hint, buf, sizeof buf);
    cr_assert_eq(n, 12);
    ldns_pkt *p = reparse(buf, n);
    assert_flags(p, &q, false, false, DNS_RCODE_FORMERR);
    cr_assert_eq(ldns_pkt_qdcount(p), 0);
    cr_assert_not(ldns_pkt_edns(p));
    ldns_pkt_free(p);
}

Test(answer, formerr_two_opts_has_opt)
{
    uint8_t msg[128] = {0, 9, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 2, 1, 'a', 0, 0, 1, 0, 1};
    size_t n = 19;
    const uint8_t opt[] = {0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0};
    memcpy(msg + n, opt, sizeof opt);
    n += sizeof opt;
    memcpy(msg + n, opt, sizeof opt);
    n += sizeof opt;
    dns_query_t q = parse_raw(msg, n, DNS_RCODE_FORMERR);
    uint8_t buf[512];
    int len = dns_answer_error(&q, q.rcode_hint, buf, sizeof buf);
    ldns_pkt *p = reparse(buf, len);
    assert_flags(p, &q, false, false, DNS_RCODE_FORMERR);
    assert_opt(p, &q);
    cr_assert(ldns_pkt_edns_do(p));
    ldns_pkt_free(p);
}

Test(answer, notimp_echoes_opcode)
{
    const uint8_t msg[] = {0, 9, 0x29, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 6, 0, 1};
    dns_query_t q = parse_raw(msg, sizeof msg, DNS_RCODE_NOTIMP);
    uint8_t buf[512];
    int n = dns_answer_error(&q, q.rcode_hint, buf, sizeof buf);
    ldns_pkt *p = reparse(buf, n);
    assert_flags(p, &q, false, false, DNS_RCODE_NOTIMP);
    cr_assert_eq(ldns_pkt_get_opcode(p), LDNS_PACKET_UPDATE);
    cr_assert_eq(ldns_pkt_qdcount(p), 1);
    cr_assert_not(ldns_pkt_edns(p));
    ldns_pkt_free(p);

    /* NOTIFY with an OPT: NOTIMP with an OPT (RFC 6891 §7). */
    uint8_t m2[64] = {0, 10, 0x20, 0x00, 0, 1, 0, 0, 0, 0, 0, 1, 1, 'a', 0, 0, 6, 0, 1};
    const uint8_t opt[] = {0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0};
    memcpy(m2 + 19, opt, sizeof opt);
    q = parse_raw(m2, 19 + sizeof opt, DNS_RCODE_NOTIMP);
    n = dns_answer_error(&q, q.rcode_hint, buf, sizeof buf);
    p = reparse(buf, n);
    assert_flags(p, &q, false, false, DNS_RCODE_NOTIMP);
    cr_assert_eq(ldns_pkt_get_opcode(p), LDNS_PACKET_NOTIFY);
    assert_opt(p, &q);
    ldns_pkt_free(p);
}

Test(answer, badvers)
{
    uint8_t msg[64] = {0, 9, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1, 1, 'a', 0, 0, 1, 0, 1};
    const uint8_t opt[] = {0, 0, 41, 0x10, 0, 0, 1, 0x80, 0, 0, 0};
    memcpy(msg + 19, opt, sizeof opt);
    dns_query_t q = parse_raw(msg, 19 + sizeof opt, DNS_RCODE_BADVERS);
    uint8_t buf[512];
    int n = dns_answer_error(&q, q.rcode_hint, buf, sizeof buf);
    ldns_pkt *p = reparse(buf, n);
    assert_flags(p, &q, false, false, DNS_RCODE_BADVERS);
    cr_assert_eq(ldns_pkt_get_rcode(p), 0, "BADVERS: header RCODE 0");
    cr_assert_eq(ldns_pkt_edns_extended_rcode(p), 1, "upper bits in the OPT");
    cr_assert_eq(ldns_pkt_edns_version(p), 0, "the version we do implement");
    cr_assert(ldns_pkt_edns_do(p));
    ldns_pkt_free(p);
    /* BADVERS cannot be said without an OPT. */
    qopts_t o = {0};
    q = mkq("a", LDNS_RR_TYPE_A, &o);
    cr_assert_eq(dns_answer_error(&q, DNS_RCODE_BADVERS, buf, sizeof buf), -EINVAL);
}

Test(answer, refused_class)
{
    const uint8_t msg[] = {0,   9,   0x01, 0x00, 0,   1, 0,   0,   0,   0,   0, 0, 7,  'v', 'e',
                           'r', 's', 'i',  'o',  'n', 4, 'b', 'i', 'n', 'd', 0, 0, 16, 0,   3};
    dns_query_t q = parse_raw(msg, sizeof msg, DNS_RCODE_REFUSED);
    uint8_t buf[512];
    int n = dns_answer_error(&q, q.rcode_hint, buf, sizeof buf);
    ldns_pkt *p = reparse(buf, n);
    assert_flags(p, &q, false, false, DNS_RCODE_REFUSED);
    cr_assert_eq(ldns_rr_get_class(ldns_rr_list_rr(ldns_pkt_question(p), 0)), LDNS_RR_CLASS_CH);
    ldns_pkt_free(p);
    /* The sinkhole refuses such a query: it only answers clean ones. */
    cr_assert_eq(dns_answer_sinkhole(&q, &sink_default, buf, sizeof buf, 512), -EINVAL);
}

Test(answer, bad_arguments_and_small_buffers)
{
    qopts_t o = {.edns = true};
    dns_query_t q = mkq("www.example.com", LDNS_RR_TYPE_MX, &o);
    uint8_t buf[1500];
    cr_assert_eq(dns_answer_error(&q, -1, buf, sizeof buf), -EINVAL);
    cr_assert_eq(dns_answer_error(&q, 4096, buf, sizeof buf), -EINVAL);
    cr_assert_eq(dns_answer_error(NULL, 1, buf, sizeof buf), -EINVAL);
    cr_assert_eq(dns_answer_sinkhole(&q, NULL, buf, sizeof buf, 512), -EINVAL);
    /* Room for nothing: -ENOSPC, never a partial message. */
    for (size_t cap = 0; cap < 12 + 17 + 4 + 11; cap++) {
        cr_assert_eq(dns_answer_error(&q, 2, buf, cap), -ENOSPC, "cap %zu", cap);
        cr_assert_eq(dns_answer_sinkhole(&q, &sink_default, buf, cap, 512), -ENOSPC);
    }
    /* Room for the truncated form only: TC. */
    int n = dns_answer_sinkhole(&q, &sink_default, buf, 12 + 21 + 11, 512);
    cr_assert_eq(n, 12 + 21 + 11);
    ldns_pkt *p = reparse(buf, n);
    assert_flags(p, &q, true, true, 0);
    ldns_pkt_free(p);
}

Test(answer, truncation)
{
    /* With a limit of 512 or more a sinkhole answer always fits: the
     * longest is a 255-octet name, SOA and EDE. */
    uint8_t buf[1500];
    for (int e = 0; e < 2; e++) {
        qopts_t o = {.edns = e, .udp = 512};
        dns_query_t q = mkq_long(255, LDNS_RR_TYPE_TXT, &o);
        int n = dns_answer_sinkhole(&q, &sink_default, buf, sizeof buf, dns_udp_limit(&q));
        ldns_pkt *p = reparse(buf, n);
        cr_assert_not(ldns_pkt_tc(p));
        cr_assert_eq(ldns_pkt_nscount(p), 1);
        ldns_pkt_free(p);
        cr_assert_leq(n, 12 + 259 + 80 + 11 + 6 + 25);
        n = dns_answer_canary(&q, &sink_default, buf, sizeof buf, dns_udp_limit(&q));
        cr_assert_leq(n, 512);
    }
    /* A smaller limit (a 250-octet name, SOA, EDE in 300 bytes): TC, header,
     * question and OPT only (RFC 2181 §9, RFC 6891 §7). */
    for (int e = 0; e < 2; e++) {
        qopts_t o = {.id = 3, .edns = e, .do_bit = true};
        dns_query_t q = mkq_long(250, LDNS_RR_TYPE_HTTPS, &o);
        int n = dns_answer_sinkhole(&q, &sink_default, buf, sizeof buf, 300);
        cr_assert_eq(n, 12 + 254 + (e ? 11 : 0));
        ldns_pkt *p = reparse(buf, n);
        assert_flags(p, &q, true, true, DNS_RCODE_NOERROR);
        cr_assert_eq(ldns_pkt_ancount(p), 0);
        cr_assert_eq(ldns_pkt_nscount(p), 0);
        assert_opt(p, &q);
        assert_ede(p, -1, NULL);
        ldns_pkt_free(p);
        /* The same answer over TCP fits. */
        n = dns_answer_sinkhole(&q, &sink_default, buf, sizeof buf, DNS_TCP_MAX);
        p = reparse(buf, n);
        cr_assert_not(ldns_pkt_tc(p));
        cr_assert_eq(ldns_pkt_nscount(p), 1);
        ldns_pkt_free(p);
    }
}

/* An upstream answer made by ldns: name in lower case, `count` A records,
 * optionally an OPT with the given udp size and an NSID option. */
static size_t upstream(const char *name, ldns_rr_type type, int count, int opt_udp, bool tc,
                       uint8_t *out, size_t cap)
{
    ldns_pkt *p = NULL;
    cr_assert_eq(ldns_pkt_query_new_frm_str(&p, name, type, LDNS_RR_CLASS_IN, LDNS_RD),
                 LDNS_STATUS_OK);
    ldns_pkt_set_id(p, 0x1111);
    ldns_pkt_set_qr(p, true);
    ldns_pkt_set_ra(p, true);
    ldns_pkt_set_tc(p, tc);
    for (int i = 0; i < count; i++) {
        char text[400];
        snprintf(text, sizeof text, "%s 300 IN A 198.18.%d.%d", name, i / 256, i % 256);
        ldns_rr *rr = NULL;
        cr_assert_eq(ldns_rr_new_frm_str(&rr, text, 0, NULL, NULL), LDNS_STATUS_OK);
        ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, rr);
    }
    ldns_rr *ns = NULL;
    cr_assert_eq(ldns_rr_new_frm_str(&ns, "example.com. 300 IN NS ns1.example.com.", 0, NULL, NULL),
                 LDNS_STATUS_OK);
    ldns_pkt_push_rr(p, LDNS_SECTION_AUTHORITY, ns);
    if (opt_udp) {
        ldns_pkt_set_edns_udp_size(p, (uint16_t)opt_udp);
        ldns_edns_option_list *l = ldns_edns_option_list_new();
        ldns_edns_option_list_push(l, ldns_edns_new_from_data(LDNS_EDNS_NSID, 3, "up1"));
        ldns_pkt_set_edns_option_list(p, l);
    }
    uint8_t *wire = NULL;
    size_t len = 0;
    cr_assert_eq(ldns_pkt2wire(&wire, p, &len), LDNS_STATUS_OK);
    cr_assert_leq(len, cap);
    memcpy(out, wire, len);
    free(wire);
    ldns_pkt_free(p);
    return len;
}

Test(answer, patch_id_and_case)
{
    uint8_t buf[4096];
    qopts_t o = {.id = 0xbeef};
    dns_query_t q = mkq("WwW.eXaMpLe.CoM", LDNS_RR_TYPE_A, &o);
    size_t len = upstream("www.example.com.", LDNS_RR_TYPE_A, 2, 0, false, buf, sizeof buf);
    int n = dns_answer_patch(buf, len, sizeof buf, &q, dns_udp_limit(&q));
    cr_assert_eq(n, (int)len);
    ldns_pkt *p = reparse(buf, n);
    cr_assert_eq(ldns_pkt_id(p), 0xbeef);
    cr_assert(ldns_pkt_rd(p));
    cr_assert(ldns_pkt_ra(p));
    cr_assert_not(ldns_pkt_cd(p));
    assert_question(p, "WwW.eXaMpLe.CoM.", LDNS_RR_TYPE_A);
    cr_assert_eq(ldns_pkt_ancount(p), 2);
    cr_assert_eq(ldns_pkt_nscount(p), 1);
    cr_assert_not(ldns_pkt_tc(p));
    cr_assert_not(ldns_pkt_edns(p));
    ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_answer(p), 1);
    char *s = ldns_rdf2str(ldns_rr_rdf(rr, 0));
    cr_assert_str_eq(s, "198.18.0.1");
    free(s);
    ldns_pkt_free(p);
    /* Idempotent: patching again changes nothing. */
    uint8_t copy[4096];
    memcpy(copy, buf, (size_t)n);
    cr_assert_eq(dns_answer_patch(buf, (size_t)n, sizeof buf, &q, 512), n);
    cr_assert_eq(memcmp(copy, buf, (size_t)n), 0);

    /* RD and CD follow the client, not the upstream. */
    o = (qopts_t){.id = 0xbeef, .no_rd = true, .cd = true};
    q = mkq("www.example.com", LDNS_RR_TYPE_A, &o);
    len = upstream("www.example.com.", LDNS_RR_TYPE_A, 2, 0, false, buf, sizeof buf);
    n = dns_answer_patch(buf, len, sizeof buf, &q, 512);
    p = reparse(buf, n);
    cr_assert_not(ldns_pkt_rd(p));
    cr_assert(ldns_pkt_cd(p));
    cr_assert(ldns_pkt_ra(p));
    ldns_pkt_free(p);
}

Test(answer, patch_refuses_other_questions)
{
    uint8_t buf[4096];
    qopts_t o = {.id = 1};
    dns_query_t q = mkq("www.example.com", LDNS_RR_TYPE_A, &o);
    size_t len = upstream("www.example.net.", LDNS_RR_TYPE_A, 1, 0, false, buf, sizeof buf);
    cr_assert_eq(dns_answer_patch(buf, len, sizeof buf, &q, 512), -EBADMSG);
    len = upstream("ww.example.com.", LDNS_RR_TYPE_A, 1, 0, false, buf, sizeof buf);
    cr_assert_eq(dns_answer_patch(buf, len, sizeof buf, &q, 512), -EBADMSG);
    len = upstream("www.example.com.", LDNS_RR_TYPE_AAAA, 1, 0, false, buf, sizeof buf);
    cr_assert_eq(dns_answer_patch(buf, len, sizeof buf, &q, 512), -EBADMSG);
    /* A record running past the end. */
    len = upstream("www.example.com.", LDNS_RR_TYPE_A, 3, 0, false, buf, sizeof buf);
    cr_assert_eq(dns_answer_patch(buf, len - 1, sizeof buf, &q, 512), -EBADMSG);
    /* Not a response; QDCOUNT 0. */
    len = upstream("www.example.com.", LDNS_RR_TYPE_A, 1, 0, false, buf, sizeof buf);
    buf[2] &= 0x7f;
    cr_assert_eq(dns_answer_patch(buf, len, sizeof buf, &q, 512), -EBADMSG);
    buf[2] |= 0x80;
    buf[5] = 0;
    cr_assert_eq(dns_answer_patch(buf, len, sizeof buf, &q, 512), -EBADMSG);
    cr_assert_eq(dns_answer_patch(buf, 11, sizeof buf, &q, 512), -EBADMSG);
    cr_assert_eq(dns_answer_patch(buf, 100, 50, &q, 512), -EINVAL);
    /* An extended RCODE from the upstream (BADCOOKIE, 23): not the client's. */
    len = upstream("www.example.com.", LDNS_RR_TYPE_A, 1, 1232, false, buf, sizeof buf);
    ldns_pkt *p = reparse(buf, (int)len);
    ldns_pkt_free(p);
    size_t opt_at = len - 11 - 7; /* the OPT is last: 11 octets + NSID option */
    cr_assert_eq(buf[opt_at + 2], 41);
    buf[opt_at + 5] = 1;
    uint8_t before[4096];
    memcpy(before, buf, len);
    cr_assert_eq(dns_answer_patch(buf, len, sizeof buf, &q, 512), -EBADMSG);
    cr_assert_eq(memcmp(before, buf, len), 0, "buf untouched on error");
    /* Two OPTs. */
    len = upstream("www.example.com.", LDNS_RR_TYPE_A, 1, 1232, false, buf, sizeof buf);
    memcpy(buf + len, buf + len - 18, 18);
    buf[11]++;
    cr_assert_eq(dns_answer_patch(buf, len + 18, sizeof buf, &q, 512), -EBADMSG);
}

Test(answer, patch_opt_reconciled)
{
    uint8_t buf[4096];
    /* Upstream OPT (4096, NSID), client without EDNS: OPT removed. */
    qopts_t o = {.id = 2};
    dns_query_t q = mkq("www.example.com", LDNS_RR_TYPE_A, &o);
    size_t len = upstream("www.example.com.", LDNS_RR_TYPE_A, 1, 4096, false, buf, sizeof buf);
    int n = dns_answer_patch(buf, len, sizeof buf, &q, 512);
    cr_assert_eq(n, (int)len - 11 - 7);
    ldns_pkt *p = reparse(buf, n);
    cr_assert_not(ldns_pkt_edns(p));
    cr_assert_eq(ldns_pkt_arcount(p), 0);
    cr_assert_eq(ldns_pkt_ancount(p), 1);
    ldns_pkt_free(p);

    /* Client with EDNS and DO: size 1232, DO copied, options kept. */
    o = (qopts_t){.id = 3, .edns = true, .udp = 4096, .do_bit = true};
    q = mkq("www.example.com", LDNS_RR_TYPE_A, &o);
    len = upstream("www.example.com.", LDNS_RR_TYPE_A, 1, 4096, false, buf, sizeof buf);
    n = dns_answer_patch(buf, len, sizeof buf, &q, dns_udp_limit(&q));
    cr_assert_eq(n, (int)len);
    p = reparse(buf, n);
    assert_opt(p, &q);
    ldns_edns_option_list *l = ldns_pkt_edns_get_option_list(p);
    cr_assert_eq(ldns_edns_option_list_get_count(l), 1);
    cr_assert_eq(ldns_edns_get_code(ldns_edns_option_list_get_option(l, 0)), LDNS_EDNS_NSID);
    ldns_pkt_free(p);

    /* Client with EDNS, upstream without: a bare OPT appended. */
    len = upstream("www.example.com.", LDNS_RR_TYPE_A, 1, 0, false, buf, sizeof buf);
    n = dns_answer_patch(buf, len, sizeof buf, &q, dns_udp_limit(&q));
    cr_assert_eq(n, (int)len + 11);
    p = reparse(buf, n);
    assert_opt(p, &q);
    cr_assert_eq(ldns_pkt_ancount(p), 1);
    cr_assert_eq(ldns_pkt_nscount(p), 1);
    ldns_pkt_free(p);
    /* ... which needs the room (and leaves buf alone without it). */
    len = upstream("www.example.com.", LDNS_RR_TYPE_A, 1, 0, false, buf, sizeof buf);
    uint8_t before[4096];
    memcpy(before, buf, len);
    cr_assert_eq(dns_answer_patch(buf, len, len + 10, &q, 1232), -ENOSPC);
    cr_assert_eq(memcmp(before, buf, len), 0);
}

Test(answer, patch_truncates_and_clears_tc)
{
    uint8_t buf[8192];
    /* 40 A records: ~700 octets. Without EDNS (512): TC, question only. */
    qopts_t o = {.id = 9};
    dns_query_t q = mkq("Big.Example.com", LDNS_RR_TYPE_A, &o);
    size_t len = upstream("big.example.com.", LDNS_RR_TYPE_A, 40, 1232, false, buf, sizeof buf);
    cr_assert_gt(len, 512);
    int n = dns_answer_patch(buf, len, sizeof buf, &q, dns_udp_limit(&q));
    cr_assert_eq(n, 12 + 17 + 4);
    ldns_pkt *p = reparse(buf, n);
    assert_flags(p, &q, false, true, 0);
    assert_question(p, "Big.Example.com.", LDNS_RR_TYPE_A);
    cr_assert_eq(ldns_pkt_ancount(p), 0);
    cr_assert_not(ldns_pkt_edns(p));
    ldns_pkt_free(p);

    /* With EDNS 4096: our limit is 1232, it fits; a stale TC is cleared. */
    o = (qopts_t){.id = 10, .edns = true, .udp = 4096};
    q = mkq("Big.Example.com", LDNS_RR_TYPE_A, &o);
    len = upstream("big.example.com.", LDNS_RR_TYPE_A, 40, 1232, true, buf, sizeof buf);
    n = dns_answer_patch(buf, len, sizeof buf, &q, dns_udp_limit(&q));
    cr_assert_eq(n, (int)len);
    p = reparse(buf, n);
    cr_assert_not(ldns_pkt_tc(p));
    cr_assert_eq(ldns_pkt_ancount(p), 40);
    assert_opt(p, &q);
    ldns_pkt_free(p);

    /* 100 records over EDNS: TC with an OPT. */
    len = upstream("big.example.com.", LDNS_RR_TYPE_A, 100, 0, false, buf, sizeof buf);
    cr_assert_gt(len, 1232);
    n = dns_answer_patch(buf, len, sizeof buf, &q, dns_udp_limit(&q));
    cr_assert_eq(n, 12 + 17 + 4 + 11);
    p = reparse(buf, n);
    assert_flags(p, &q, false, true, 0);
    assert_opt(p, &q);
    ldns_pkt_free(p);

    /* Over TCP the whole answer goes. */
    len = upstream("big.example.com.", LDNS_RR_TYPE_A, 100, 1232, false, buf, sizeof buf);
    n = dns_answer_patch(buf, len, sizeof buf, &q, DNS_TCP_MAX);
    cr_assert_eq(n, (int)len);
    p = reparse(buf, n);
    cr_assert_eq(ldns_pkt_ancount(p), 100);
    ldns_pkt_free(p);
}

Test(answer, patch_own_answers)
{
    /* Patching a built answer for the same query is the identity. */
    uint8_t buf[1500], copy[1500];
    for (size_t i = 0; i < N_TYPES; i++) {
        qopts_t o = {.id = 31, .edns = i % 2, .do_bit = i % 3 == 0};
        dns_query_t q = mkq("Some.Blocked.Name", all_types[i], &o);
        int n = dns_answer_sinkhole(&q, &sink_custom, buf, sizeof buf, dns_udp_limit(&q));
        cr_assert_gt(n, 0);
        memcpy(copy, buf, (size_t)n);
        cr_assert_eq(dns_answer_patch(buf, (size_t)n, sizeof buf, &q, dns_udp_limit(&q)), n);
        cr_assert_eq(memcmp(buf, copy, (size_t)n), 0);
    }
}

/* A scan made once, as the cache makes it when it stores an answer, then a
 * patch per hit: the same bytes and length as dns_answer_patch, for every
 * kind of client (EDNS or not, DO, the case of the name, a UDP limit that
 * cuts) and upstream answer (with an OPT or without). */
Test(answer, patch_scanned_is_patch)
{
    static const char *const names[] = {"www.example.com", "WWW.Example.COM"};
    for (int up_opt = 0; up_opt < 2; up_opt++)
        for (int edns = 0; edns < 2; edns++)
            for (int nm = 0; nm < 2; nm++)
                for (int big = 0; big < 2; big++) {
                    uint8_t stored[4096], a[4096], b[4096];
                    size_t len = upstream("www.example.com.", LDNS_RR_TYPE_A, big ? 60 : 2, 0,
                                          false, stored, sizeof stored);
                    if (up_opt)
                        len = upstream("www.example.com.", LDNS_RR_TYPE_A, big ? 60 : 2, 1232,
                                       false, stored, sizeof stored);
                    qopts_t o = {.id = (uint16_t)(0x100 + nm),
                                 .edns = edns != 0,
                                 .do_bit = edns != 0 && nm != 0};
                    dns_query_t q = mkq(names[nm], LDNS_RR_TYPE_A, &o);
                    dns_answer_scan_t scan;
                    cr_assert_eq(dns_answer_scan(stored, len, &scan), 0);
                    cr_assert_eq(scan.end, len);
                    memcpy(a, stored, len);
                    memcpy(b, stored, len);
                    size_t limit = dns_udp_limit(&q);
                    int na = dns_answer_patch(a, len, sizeof a, &q, limit);
                    int nb = dns_answer_patch_scanned(b, len, sizeof b, &q, limit, &scan);
                    cr_assert_gt(na, 0);
                    cr_assert_eq(nb, na, "opt %d edns %d name %d big %d", up_opt, edns, nm, big);
                    cr_assert_eq(memcmp(a, b, (size_t)na), 0);
                }
}

/* What the scan refuses, and a scan that does not fit. */
Test(answer, scan_refuses)
{
    uint8_t buf[4096];
    dns_answer_scan_t scan;
    size_t len = upstream("www.example.com.", LDNS_RR_TYPE_A, 2, 0, false, buf, sizeof buf);
    cr_assert_eq(dns_answer_scan(buf, len - 1, &scan), -EBADMSG); /* a record cut short */
    cr_assert_eq(scan.end, 0);
    cr_assert_eq(dns_answer_scan(buf, 11, &scan), -EBADMSG);
    buf[2] &= 0x7f; /* not a response */
    cr_assert_eq(dns_answer_scan(buf, len, &scan), -EBADMSG);
    buf[2] |= 0x80;
    cr_assert_eq(dns_answer_scan(buf, len, &scan), 0);
    qopts_t o = {.id = 1};
    dns_query_t q = mkq("www.example.com", LDNS_RR_TYPE_A, &o);
    cr_assert_eq(dns_answer_patch_scanned(buf, len - 1, sizeof buf, &q, 512, &scan), -EINVAL);
    /* Another question than the client's: refused as dns_answer_patch refuses it. */
    dns_query_t other = mkq("www.example.org", LDNS_RR_TYPE_A, &o);
    cr_assert_eq(dns_answer_patch_scanned(buf, len, sizeof buf, &other, 512, &scan), -EBADMSG);
    dns_query_t aaaa = mkq("www.example.com", LDNS_RR_TYPE_AAAA, &o);
    cr_assert_eq(dns_answer_patch_scanned(buf, len, sizeof buf, &aaaa, 512, &scan), -EBADMSG);
}
