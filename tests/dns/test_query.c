/* tests/dns/test_query.c: dns_query_parse() on queries ldns builds (every
 * common type, with and without EDNS, mixed case) and on hand-made hostile
 * bytes (SPEC §2.2: FORMERR, NOTIMP, REFUSED, BADVERS, drops). */
#include <criterion/criterion.h>
#include <errno.h>
#include <ldns/ldns.h>
#include <stdlib.h>
#include <string.h>

#include "dns/query.h"

typedef struct qopts {
    uint16_t id;
    bool edns;
    uint16_t udp;
    bool do_bit;
    bool rd, cd;
    ldns_rr_class cls;
} qopts_t;

/* A query built by ldns, copied into out; returns its length. */
static size_t ldns_query(const char *name, ldns_rr_type type, const qopts_t *o, uint8_t *out,
                         size_t cap)
{
    ldns_pkt *p = NULL;
    ldns_status st = ldns_pkt_query_new_frm_str(&p, name, type, o->cls ? o->cls : LDNS_RR_CLASS_IN,
                                                o->rd ? LDNS_RD : 0);
    cr_assert_eq(st, LDNS_STATUS_OK, "ldns query for %s: %s", name, ldns_get_errorstr_by_id(st));
    ldns_pkt_set_id(p, o->id);
    ldns_pkt_set_cd(p, o->cd);
    if (o->edns) {
        ldns_pkt_set_edns_udp_size(p, o->udp);
        ldns_pkt_set_edns_do(p, o->do_bit);
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

/* Parse bytes from a heap copy of exactly len bytes (so ASan sees overruns). */
static int parse(const uint8_t *msg, size_t len, dns_query_t *q)
{
    uint8_t *copy = malloc(len ? len : 1);
    cr_assert_not_null(copy);
    if (len)
        memcpy(copy, msg, len);
    int rc = dns_query_parse(copy, len, q);
    free(copy);
    return rc;
}

/* Header + question built by hand: name given in wire form. */
static size_t raw_query(uint8_t *out, uint16_t flags, uint16_t qd, uint16_t an, uint16_t ns,
                        uint16_t ar, const uint8_t *name, size_t name_len, uint16_t qtype,
                        uint16_t qclass)
{
    uint8_t h[12] = {0x12,
                     0x34,
                     (uint8_t)(flags >> 8),
                     (uint8_t)flags,
                     (uint8_t)(qd >> 8),
                     (uint8_t)qd,
                     (uint8_t)(an >> 8),
                     (uint8_t)an,
                     (uint8_t)(ns >> 8),
                     (uint8_t)ns,
                     (uint8_t)(ar >> 8),
                     (uint8_t)ar};
    memcpy(out, h, 12);
    memcpy(out + 12, name, name_len);
    size_t n = 12 + name_len;
    out[n++] = (uint8_t)(qtype >> 8);
    out[n++] = (uint8_t)qtype;
    out[n++] = (uint8_t)(qclass >> 8);
    out[n++] = (uint8_t)qclass;
    return n;
}

#define WNAME(s) (const uint8_t *)(s), sizeof(s) /* wire name literal incl. root NUL */

/* An OPT RR: root owner, udp size, ext rcode, version, flags, rdata. */
static size_t put_opt(uint8_t *out, uint16_t udp, uint8_t version, uint16_t flags,
                      const uint8_t *rdata, uint16_t rdlen)
{
    uint8_t o[11] = {0,
                     0,
                     41,
                     (uint8_t)(udp >> 8),
                     (uint8_t)udp,
                     0,
                     version,
                     (uint8_t)(flags >> 8),
                     (uint8_t)flags,
                     (uint8_t)(rdlen >> 8),
                     (uint8_t)rdlen};
    memcpy(out, o, 11);
    if (rdlen)
        memcpy(out + 11, rdata, rdlen);
    return 11u + rdlen;
}

static const ldns_rr_type all_types[] = {
    LDNS_RR_TYPE_A,   LDNS_RR_TYPE_AAAA,  65 /* HTTPS */,  64 /* SVCB */,    LDNS_RR_TYPE_MX,
    LDNS_RR_TYPE_TXT, LDNS_RR_TYPE_CNAME, LDNS_RR_TYPE_NS, LDNS_RR_TYPE_SRV, LDNS_RR_TYPE_PTR,
    LDNS_RR_TYPE_ANY, LDNS_RR_TYPE_SOA,   LDNS_RR_TYPE_CAA};

Test(query, every_type_with_and_without_edns)
{
    uint8_t msg[512];
    for (size_t i = 0; i < sizeof all_types / sizeof all_types[0]; i++) {
        for (int e = 0; e < 2; e++) {
            qopts_t o = {.id = (uint16_t)(0x100 + i), .edns = e, .udp = 4096, .rd = true};
            size_t len = ldns_query("www.example.com", all_types[i], &o, msg, sizeof msg);
            dns_query_t q;
            cr_assert_eq(parse(msg, len, &q), 0);
            cr_assert_eq(q.rcode_hint, DNS_RCODE_NOERROR, "type %d edns %d", all_types[i], e);
            cr_assert(q.has_question);
            cr_assert_eq(q.qtype, all_types[i]);
            cr_assert_eq(q.qclass, DNS_CLASS_IN);
            cr_assert_eq(q.id, 0x100 + i);
            cr_assert(q.rd);
            cr_assert_not(q.cd);
            cr_assert_eq(q.opcode, 0);
            cr_assert_str_eq(q.name, "www.example.com");
            cr_assert_eq(q.name_len, strlen("www.example.com"));
            cr_assert_not(q.not_host);
            cr_assert_eq(q.labels, 3);
            cr_assert_eq(q.qname_len, 17);
            cr_assert_eq(memcmp(q.qname, "\3www\7example\3com", 17), 0);
            cr_assert_eq(q.tld_off, 12);
            cr_assert_eq(q.question_end, 12u + 17 + 4);
            cr_assert_eq(q.edns, e);
            cr_assert_eq(dns_udp_limit(&q), e ? 1232u : 512u);
            cr_assert_eq(q.udp_size, e ? 4096 : 512);
        }
    }
}

Test(query, mixed_case_kept)
{
    uint8_t msg[512];
    qopts_t o = {.id = 7};
    size_t len = ldns_query("WwW.ExAmPlE.CoM.", LDNS_RR_TYPE_A, &o, msg, sizeof msg);
    dns_query_t q;
    cr_assert_eq(parse(msg, len, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_NOERROR);
    cr_assert_str_eq(q.name, "WwW.ExAmPlE.CoM");
    cr_assert_eq(memcmp(q.qname, "\3WwW\7ExAmPlE\3CoM", 17), 0);
    cr_assert_eq(memcmp(q.qname, msg + 12, q.qname_len), 0);
    cr_assert_not(q.rd);
}

Test(query, edns_fields)
{
    uint8_t msg[512];
    dns_query_t q;
    qopts_t o = {.edns = true, .udp = 1400, .do_bit = true, .cd = true};
    size_t len = ldns_query("example.org", LDNS_RR_TYPE_AAAA, &o, msg, sizeof msg);
    cr_assert_eq(parse(msg, len, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_NOERROR);
    cr_assert(q.edns);
    cr_assert(q.edns_do);
    cr_assert(q.cd);
    cr_assert_eq(q.edns_version, 0);
    cr_assert_eq(q.udp_size, 1400);
    cr_assert_eq(dns_udp_limit(&q), 1232);

    o = (qopts_t){.edns = true, .udp = 100};
    len = ldns_query("example.org", LDNS_RR_TYPE_A, &o, msg, sizeof msg);
    cr_assert_eq(parse(msg, len, &q), 0);
    cr_assert_eq(q.udp_size, 512, "RFC 6891 §6.2.5: below 512 counts as 512");
    cr_assert_not(q.edns_do);
    cr_assert_eq(dns_udp_limit(&q), 512);

    o = (qopts_t){.edns = true, .udp = 1000};
    len = ldns_query("example.org", LDNS_RR_TYPE_A, &o, msg, sizeof msg);
    cr_assert_eq(parse(msg, len, &q), 0);
    cr_assert_eq(dns_udp_limit(&q), 1000);
}

Test(query, edns_options_framed)
{
    uint8_t msg[512];
    size_t n = raw_query(msg, 0x0100, 1, 0, 0, 1, WNAME("\1a\4test"), 1, 1);
    /* COOKIE (10) with an 8-octet client cookie, then padding (12). */
    const uint8_t opts[] = {0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 12, 0, 2, 0, 0};
    n += put_opt(msg + n, 1232, 0, 0x8000, opts, sizeof opts);
    dns_query_t q;
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_NOERROR);
    cr_assert(q.edns_do);

    /* An option that claims more than the RDATA holds. */
    const uint8_t bad[] = {0, 10, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8};
    n = raw_query(msg, 0x0100, 1, 0, 0, 1, WNAME("\1a\4test"), 1, 1);
    n += put_opt(msg + n, 1232, 0, 0, bad, sizeof bad);
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
    cr_assert(q.edns, "the FORMERR carries an OPT (RFC 6891 §7)");
    cr_assert(q.has_question);

    /* Half an option header. */
    const uint8_t half[] = {0, 10, 0};
    n = raw_query(msg, 0x0100, 1, 0, 0, 1, WNAME("\1a\4test"), 1, 1);
    n += put_opt(msg + n, 1232, 0, 0, half, sizeof half);
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
}

Test(query, short_messages_dropped)
{
    dns_query_t q;
    uint8_t msg[12] = {0x12, 0x34, 0x01, 0, 0, 1};
    cr_assert_eq(dns_query_parse(NULL, 0, &q), -EBADMSG);
    cr_assert_eq(parse(msg, 0, &q), -EBADMSG);
    cr_assert_eq(parse(msg, 11, &q), -EBADMSG);
    cr_assert_eq(q.name[0], '\0');
    cr_assert_not(q.has_question);
    /* A bare header with QDCOUNT 1 but no question: FORMERR, not a drop. */
    cr_assert_eq(parse(msg, 12, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
    cr_assert_eq(q.id, 0x1234);
    cr_assert(q.rd);
    cr_assert_not(q.has_question);
}

Test(query, qdcount_not_one)
{
    uint8_t msg[512];
    dns_query_t q;
    size_t n = raw_query(msg, 0, 0, 0, 0, 0, WNAME("\1a\4test"), 1, 1);
    cr_assert_eq(parse(msg, 12, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
    cr_assert_not(q.has_question);
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);

    n = raw_query(msg, 0, 2, 0, 0, 0, WNAME("\1a\4test"), 1, 1);
    memcpy(msg + n, "\1b\4test\0\0\1\0\1", 13);
    cr_assert_eq(parse(msg, n + 13, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
    cr_assert_not(q.has_question);
}

Test(query, label_and_name_lengths)
{
    uint8_t name[300], msg[600];
    dns_query_t q;

    /* 63-octet label: fine; 64: the length octet is a reserved label type. */
    name[0] = 63;
    memset(name + 1, 'a', 63);
    memcpy(name + 64, "\4test", 6);
    size_t n = raw_query(msg, 0, 1, 0, 0, 0, name, 70, 1, 1);
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_NOERROR);
    cr_assert_eq(q.name_len, 63 + 5);
    name[0] = 64;
    memset(name + 1, 'a', 64);
    memcpy(name + 65, "\4test", 6);
    n = raw_query(msg, 0, 1, 0, 0, 0, name, 71, 1, 1);
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
    cr_assert_not(q.has_question);

    /* 255 wire octets exactly: 3 labels of 63, one of 61, root. */
    size_t w = 0;
    for (int l = 0; l < 4; l++) {
        uint8_t ll = l < 3 ? 63 : 61;
        name[w++] = ll;
        memset(name + w, 'a' + l, ll);
        w += ll;
    }
    name[w++] = 0;
    cr_assert_eq(w, 255);
    n = raw_query(msg, 0, 1, 0, 0, 0, name, w, 1, 1);
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_NOERROR);
    cr_assert_eq(q.qname_len, 255);
    cr_assert_eq(q.name_len, 253);
    cr_assert_eq(q.labels, 4);
    cr_assert_eq(q.tld_off, 3 * 64);

    /* 256: the last label one octet longer. */
    name[3 * 64] = 62;
    memset(name + 3 * 64 + 1, 'd', 62);
    name[3 * 64 + 63] = 0;
    n = raw_query(msg, 0, 1, 0, 0, 0, name, 256, 1, 1);
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
    cr_assert_not(q.has_question);
    cr_assert_eq(q.name[0], '\0');
    cr_assert_eq(q.qname_len, 0);
}

Test(query, compression_in_question)
{
    uint8_t msg[64];
    dns_query_t q;
    /* A pointer to itself (offset 12): a loop, if anyone followed it. */
    size_t n = raw_query(msg, 0, 1, 0, 0, 0, (const uint8_t *)"\xc0\x0c", 2, 1, 1);
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
    /* A label then a pointer back to the label. */
    n = raw_query(msg, 0, 1, 0, 0, 0, (const uint8_t *)"\1a\xc0\x0c", 4, 1, 1);
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
    /* Reserved label types 01 (0x40) and 10 (0x80). */
    n = raw_query(msg, 0, 1, 0, 0, 0, (const uint8_t *)"\x41\x00", 2, 1, 1);
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
    n = raw_query(msg, 0, 1, 0, 0, 0, (const uint8_t *)"\x80\x00", 2, 1, 1);
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
}

Test(query, every_truncation)
{
    uint8_t msg[512];
    qopts_t o = {.id = 99, .edns = true, .udp = 1232};
    size_t len = ldns_query("sub.example.net", LDNS_RR_TYPE_HTTPS, &o, msg, sizeof msg);
    dns_query_t q;
    for (size_t cut = 0; cut < len; cut++) {
        int rc = parse(msg, cut, &q);
        if (cut < 12) {
            cr_assert_eq(rc, -EBADMSG);
            continue;
        }
        cr_assert_eq(rc, 0);
        cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR, "cut at %zu", cut);
        cr_assert_eq(q.has_question, cut >= 12 + 17 + 4, "cut at %zu", cut);
    }
    cr_assert_eq(parse(msg, len, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_NOERROR);
}

Test(query, trailing_garbage_formerr)
{
    uint8_t msg[512];
    qopts_t o = {.id = 1};
    size_t len = ldns_query("example.com", LDNS_RR_TYPE_A, &o, msg, sizeof msg);
    msg[len] = 0;
    dns_query_t q;
    cr_assert_eq(parse(msg, len + 1, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
    cr_assert(q.has_question, "the FORMERR still echoes the question");
}

Test(query, two_opts_formerr)
{
    uint8_t msg[512];
    size_t n = raw_query(msg, 0, 1, 0, 0, 2, WNAME("\1a\4test"), 1, 1);
    n += put_opt(msg + n, 1232, 0, 0x8000, NULL, 0);
    n += put_opt(msg + n, 4096, 0, 0, NULL, 0);
    dns_query_t q;
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
    cr_assert(q.edns);
    cr_assert(q.edns_do);
    cr_assert_eq(q.udp_size, 1232);
}

Test(query, opt_owner_not_root)
{
    uint8_t msg[512];
    size_t n = raw_query(msg, 0, 1, 0, 0, 1, WNAME("\1a\4test"), 1, 1);
    const uint8_t opt[] = {1, 'x', 0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0};
    memcpy(msg + n, opt, sizeof opt);
    n += sizeof opt;
    dns_query_t q;
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
    cr_assert(q.edns);

    /* Owner given as a pointer to the question: not the root either. */
    n = raw_query(msg, 0, 1, 0, 0, 1, WNAME("\1a\4test"), 1, 1);
    const uint8_t opt2[] = {0xc0, 12, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0};
    memcpy(msg + n, opt2, sizeof opt2);
    n += sizeof opt2;
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
}

Test(query, edns_version_badvers)
{
    uint8_t msg[512];
    size_t n = raw_query(msg, 0, 1, 0, 0, 1, WNAME("\1a\4test"), 1, 1);
    n += put_opt(msg + n, 1232, 1, 0, NULL, 0);
    dns_query_t q;
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_BADVERS);
    cr_assert_eq(q.edns_version, 1);
    cr_assert(q.has_question);
    /* FORMERR wins over BADVERS (two OPTs, the first of version 1). */
    n = raw_query(msg, 0, 1, 0, 0, 2, WNAME("\1a\4test"), 1, 1);
    n += put_opt(msg + n, 1232, 1, 0, NULL, 0);
    n += put_opt(msg + n, 1232, 0, 0, NULL, 0);
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
    /* BADVERS wins over REFUSED (class CH). */
    n = raw_query(msg, 0, 1, 0, 0, 1, WNAME("\7version\4bind"), 16, 3);
    n += put_opt(msg + n, 1232, 2, 0, NULL, 0);
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_BADVERS);
}

Test(query, opcodes_notimp)
{
    const uint8_t opcodes[] = {1, 2, 3, 4, 5, 6, 15};
    uint8_t msg[512];
    for (size_t i = 0; i < sizeof opcodes; i++) {
        size_t n = raw_query(msg, (uint16_t)(opcodes[i] << 11 | 0x0100), 1, 0, 0, 0,
                             WNAME("\1a\4test"), 6, 1);
        dns_query_t q;
        cr_assert_eq(parse(msg, n, &q), 0);
        cr_assert_eq(q.rcode_hint, DNS_RCODE_NOTIMP, "opcode %d", opcodes[i]);
        cr_assert_eq(q.opcode, opcodes[i]);
        cr_assert(q.has_question);
        cr_assert_eq(q.qtype, 6);
        cr_assert_not(q.edns);
        /* With an OPT: still NOTIMP, and the answer will carry an OPT. */
        n = raw_query(msg, (uint16_t)(opcodes[i] << 11), 1, 0, 0, 1, WNAME("\1a\4test"), 6, 1);
        n += put_opt(msg + n, 1232, 0, 0x8000, NULL, 0);
        cr_assert_eq(parse(msg, n, &q), 0);
        cr_assert_eq(q.rcode_hint, DNS_RCODE_NOTIMP);
        cr_assert(q.edns);
        cr_assert(q.edns_do);
        /* NOTIMP even when the sections do not look like a query's. */
        n = raw_query(msg, (uint16_t)(opcodes[i] << 11), 3, 1, 0, 0, WNAME("\1a\4test"), 6, 1);
        cr_assert_eq(parse(msg, n, &q), 0);
        cr_assert_eq(q.rcode_hint, DNS_RCODE_NOTIMP);
        cr_assert_not(q.has_question);
        n = raw_query(msg, (uint16_t)(opcodes[i] << 11), 1, 0, 0, 0, (const uint8_t *)"\xc0\x0c", 2,
                      6, 1);
        cr_assert_eq(parse(msg, n, &q), 0);
        cr_assert_eq(q.rcode_hint, DNS_RCODE_NOTIMP);
        cr_assert_not(q.has_question);
    }
}

Test(query, classes_refused)
{
    uint8_t msg[512];
    const ldns_rr_class classes[] = {LDNS_RR_CLASS_CH, LDNS_RR_CLASS_HS, LDNS_RR_CLASS_ANY,
                                     LDNS_RR_CLASS_NONE};
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
        qopts_t o = {.cls = classes[i], .edns = i % 2, .udp = 1232};
        size_t len = ldns_query("version.bind", LDNS_RR_TYPE_TXT, &o, msg, sizeof msg);
        dns_query_t q;
        cr_assert_eq(parse(msg, len, &q), 0);
        cr_assert_eq(q.rcode_hint, DNS_RCODE_REFUSED, "class %d", classes[i]);
        cr_assert_eq(q.qclass, classes[i]);
        cr_assert(q.has_question);
    }
}

Test(query, qr_set_dropped)
{
    uint8_t msg[512];
    size_t n = raw_query(msg, 0x8100, 1, 0, 0, 0, WNAME("\1a\4test"), 1, 1);
    dns_query_t q;
    cr_assert_eq(parse(msg, n, &q), -EPROTO);
    cr_assert_not(q.has_question);
}

/* ldns's presentation of a wire name, without its trailing dot. */
static char *ldns_text(const uint8_t *wire, size_t len)
{
    ldns_rdf *d = ldns_dname_new_frm_data((uint16_t)len, wire);
    cr_assert_not_null(d);
    char *s = ldns_rdf2str(d);
    ldns_rdf_deep_free(d);
    size_t n = strlen(s);
    if (n > 1 && s[n - 1] == '.')
        s[n - 1] = '\0';
    return s;
}

Test(query, strange_label_bytes)
{
    static const struct {
        const char *wire;
        size_t len;
        const char *text;
    } cases[] = {
#define CASE(w, t) {w, sizeof(w) - 1, t}
        CASE("\3a.b\7example\3com", "a\\.b.example.com"),
        CASE("\3a\0b\3com", "a\\000b.com"),
        CASE("\2\xff\xfe\3com", "\\255\\254.com"),
        CASE("\3a b\3com", "a\\032b.com"),
        CASE("\4a\\;(\3com", "a\\\\\\;\\(.com"),
        CASE("\1*\7example\3com", "*.example.com"),
        CASE("\3x)y\3com", "x\\)y.com"),
#undef CASE
    };
    uint8_t msg[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t name[64];
        memcpy(name, cases[i].wire, cases[i].len);
        name[cases[i].len] = 0;
        size_t n = raw_query(msg, 0, 1, 0, 0, 0, name, cases[i].len + 1, 1, 1);
        dns_query_t q;
        cr_assert_eq(parse(msg, n, &q), 0);
        cr_assert_eq(q.rcode_hint, DNS_RCODE_NOERROR);
        cr_assert(q.not_host, "case %zu", i);
        cr_assert_str_eq(q.name, cases[i].text);
        cr_assert_eq(q.name_len, strlen(cases[i].text));
        char *l = ldns_text(name, cases[i].len + 1);
        cr_assert_str_eq(q.name, l, "agrees with ldns: %s vs %s", q.name, l);
        free(l);
    }
    /* Underscores are host octets here, as in filter_name_normalize(). */
    size_t n = raw_query(msg, 0, 1, 0, 0, 0, WNAME("\4_sip\4_tcp\7Example\3com"), 33, 1);
    dns_query_t q;
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_not(q.not_host);
    cr_assert_str_eq(q.name, "_sip._tcp.Example.com");
}

Test(query, longest_escaped_name)
{
    /* 255 wire octets of 0xff: every octet becomes \255. */
    uint8_t name[255], msg[600];
    size_t w = 0;
    for (int l = 0; l < 4; l++) {
        uint8_t ll = l < 3 ? 63 : 61;
        name[w++] = ll;
        memset(name + w, 0xff, ll);
        w += ll;
    }
    name[w++] = 0;
    size_t n = raw_query(msg, 0, 1, 0, 0, 0, name, w, 1, 1);
    dns_query_t q;
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert(q.not_host);
    cr_assert_eq(q.name_len, 250 * 4 + 3);
    cr_assert_eq(strlen(q.name), q.name_len);
    cr_assert_leq(q.name_len, DNS_NAME_TEXT_MAX);
}

Test(query, root_name)
{
    uint8_t msg[512];
    qopts_t o = {.edns = true, .udp = 1232};
    size_t len = ldns_query(".", LDNS_RR_TYPE_NS, &o, msg, sizeof msg);
    dns_query_t q;
    cr_assert_eq(parse(msg, len, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_NOERROR);
    cr_assert_str_eq(q.name, ".");
    cr_assert_eq(q.labels, 0);
    cr_assert_eq(q.qname_len, 1);
    cr_assert_eq(q.tld_off, 0);
    cr_assert_not(q.not_host);
}

Test(query, answer_and_authority_skipped)
{
    /* A query carrying an answer record (owner compressed to the question)
     * and an authority SOA, as IXFR does: tolerated. */
    ldns_pkt *p = NULL;
    cr_assert_eq(
        ldns_pkt_query_new_frm_str(&p, "Example.com", LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, LDNS_RD),
        LDNS_STATUS_OK);
    ldns_rr *rr = NULL;
    cr_assert_eq(ldns_rr_new_frm_str(&rr, "example.com. 60 IN A 192.0.2.1", 0, NULL, NULL),
                 LDNS_STATUS_OK);
    ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, rr);
    cr_assert_eq(
        ldns_rr_new_frm_str(&rr, "example.com. 60 IN SOA ns.example.com. h.example.com. 1 2 3 4 5",
                            0, NULL, NULL),
        LDNS_STATUS_OK);
    ldns_pkt_push_rr(p, LDNS_SECTION_AUTHORITY, rr);
    cr_assert_eq(
        ldns_rr_new_frm_str(&rr, "glue.example.com. 60 IN AAAA 2001:db8::1", 0, NULL, NULL),
        LDNS_STATUS_OK);
    ldns_pkt_push_rr(p, LDNS_SECTION_ADDITIONAL, rr);
    ldns_pkt_set_edns_udp_size(p, 1232);
    uint8_t *wire = NULL;
    size_t len = 0;
    cr_assert_eq(ldns_pkt2wire(&wire, p, &len), LDNS_STATUS_OK);
    ldns_pkt_free(p);
    dns_query_t q;
    cr_assert_eq(parse(wire, len, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_NOERROR);
    cr_assert(q.edns);
    cr_assert_str_eq(q.name, "Example.com");
    /* Claiming one more answer record than there is: FORMERR. */
    wire[7]++;
    cr_assert_eq(parse(wire, len, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_FORMERR);
    free(wire);
}

Test(query, pointer_loop_in_other_sections_not_followed)
{
    uint8_t msg[512];
    size_t n = raw_query(msg, 0, 1, 1, 0, 0, WNAME("\1a\4test"), 1, 1);
    /* Answer owner: a pointer to itself; never followed, the record skips. */
    size_t at = n;
    msg[n++] = 0xc0;
    msg[n++] = (uint8_t)at;
    const uint8_t rest[] = {0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1};
    memcpy(msg + n, rest, sizeof rest);
    n += sizeof rest;
    dns_query_t q;
    cr_assert_eq(parse(msg, n, &q), 0);
    cr_assert_eq(q.rcode_hint, DNS_RCODE_NOERROR);
}

Test(query, ids_and_flags)
{
    uint8_t msg[512];
    qopts_t o = {.id = 0xbeef, .rd = true, .cd = true};
    size_t len = ldns_query("a.example", LDNS_RR_TYPE_TXT, &o, msg, sizeof msg);
    dns_query_t q;
    cr_assert_eq(parse(msg, len, &q), 0);
    cr_assert_eq(q.id, 0xbeef);
    cr_assert(q.rd);
    cr_assert(q.cd);
    cr_assert_eq(q.flags, 0x0110);
    cr_assert_eq(q.question_end, len);
}

Test(query, canary)
{
    uint8_t msg[512];
    qopts_t o = {0};
    const char *yes[] = {"use-application-dns.net", "USE-Application-DNS.NET."};
    const char *no[] = {"x.use-application-dns.net", "use-application-dns.com",
                        "use-application-dns.net.example", "net"};
    dns_query_t q;
    for (size_t i = 0; i < 2; i++) {
        size_t len = ldns_query(yes[i], LDNS_RR_TYPE_A, &o, msg, sizeof msg);
        cr_assert_eq(parse(msg, len, &q), 0);
        cr_assert(dns_query_is_canary(&q), "%s", yes[i]);
    }
    for (size_t i = 0; i < 4; i++) {
        size_t len = ldns_query(no[i], LDNS_RR_TYPE_A, &o, msg, sizeof msg);
        cr_assert_eq(parse(msg, len, &q), 0);
        cr_assert_not(dns_query_is_canary(&q), "%s", no[i]);
    }
    cr_assert_eq(parse(msg, 11, &q), -EBADMSG);
    cr_assert_not(dns_query_is_canary(&q));
}

Test(query, random_bytes_never_crash)
{
    /* A cheap stand-in for the fuzzer in the unit suite: mutate a real
     * query at random; every result is a drop or a parsed header. */
    uint8_t base[512], msg[512];
    qopts_t o = {.edns = true, .udp = 1232};
    size_t len = ldns_query("www.example.com", LDNS_RR_TYPE_HTTPS, &o, base, sizeof base);
    unsigned seed = 12345;
    for (int i = 0; i < 20000; i++) {
        memcpy(msg, base, len);
        int flips = 1 + (int)(rand_r(&seed) % 4);
        for (int f = 0; f < flips; f++)
            msg[rand_r(&seed) % len] = (uint8_t)rand_r(&seed);
        size_t n = len - rand_r(&seed) % 3;
        dns_query_t q;
        int rc = parse(msg, n, &q);
        cr_assert(rc == 0 || rc == -EPROTO);
        cr_assert_eq(strlen(q.name), q.name_len);
        if (q.has_question) {
            cr_assert_geq(q.qname_len, 1);
            cr_assert_leq(q.qname_len, 255);
            cr_assert_eq(q.qname[q.qname_len - 1], 0);
        }
    }
}

/* dns_wire_skip_name leaves the kind of its refusal on the cursor. */
Test(query, skip_name_error_kinds)
{
    static const uint8_t ok[] = {3, 'w', 'w', 'w', 0xc0, 0x0c};
    filter_cur_t c = filter_cur_make(ok, sizeof ok);
    bool root = true;
    cr_assert_eq(dns_wire_skip_name(&c, &root), 0);
    cr_assert_not(root);
    cr_assert_eq(filter_cur_left(&c), 0);

    static const uint8_t reserved[] = {3, 'w', 'w', 'w', 0x40, 0};
    c = filter_cur_make(reserved, sizeof reserved);
    cr_assert_eq(dns_wire_skip_name(&c, NULL), -EBADMSG);
    cr_assert_eq(filter_cur_error(&c), FILTER_CUR_MALFORMED);

    static const uint8_t cut[] = {3, 'w', 'w'};
    c = filter_cur_make(cut, sizeof cut);
    cr_assert_eq(dns_wire_skip_name(&c, NULL), -EBADMSG);
    cr_assert_eq(filter_cur_error(&c), FILTER_CUR_TRUNCATED);

    uint8_t lng[300];
    memset(lng, 0, sizeof lng);
    for (size_t i = 0; i + 64 < sizeof lng; i += 64)
        lng[i] = 63; /* 63-octet labels of zero octets, past 255 in all */
    c = filter_cur_make(lng, sizeof lng);
    cr_assert_eq(dns_wire_skip_name(&c, NULL), -EBADMSG);
    cr_assert_eq(filter_cur_error(&c), FILTER_CUR_OVERLIMIT);
}
