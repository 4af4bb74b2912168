/* dns/answer.c: locally built DNS answers and the per-client patch of
 * forwarded ones (SPEC §2.2).
 *
 * Hand-built wire from precomputed templates through filter/writer.h rather
 * than ldns: a blocked name is the hot path of a sandbox that probes the
 * network, and ldns builds every answer as a heap tree (ldns_pkt, one ldns_rr
 * per record, one ldns_rdf per field) before serialising it through a growing
 * ldns_buffer, an allocator round trip per field on a path a guest can drive
 * flat out. bench/dns/README.md has the measured difference
 * (tests/dns/bench_answer.c). The templates below are the parts of every
 * answer that do not depend on the query: the SOA record after its owner,
 * the OPT with its EDE option.
 */
#include "dns/answer.h"

#include <errno.h>
#include <string.h>

#include "filter/cursor.h"
#include "filter/writer.h"

#define DNSA_QR 0x8000u
#define DNSA_AA 0x0400u
#define DNSA_TC 0x0200u
#define DNSA_RD 0x0100u
#define DNSA_RA 0x0080u
#define DNSA_CD 0x0010u

#define DNSA_EDE_OPTION 15u /* RFC 8914 §2 */
#define DNSA_OPT_LEN    11u /* root owner, TYPE, CLASS, TTL, RDLEN: RFC 6891 §6.1.2 */

/* The SOA record of the synthetic zone, after its owner (RFC 1035 §3.3.13):
 * TYPE SOA, CLASS IN, TTL, RDLENGTH 68, MNAME sinkhole.moat.invalid.,
 * RNAME hostmaster.moat.invalid. (RFC 6761 §6.4: .invalid never resolves),
 * SERIAL 1, REFRESH 3600, RETRY 600, EXPIRE 86400, MINIMUM. The TTL and
 * MINIMUM are both the sinkhole TTL, so the negative TTL a cache derives,
 * min(SOA TTL, MINIMUM), is that TTL (RFC 2308 §3, §5). */
#define DNSA_SOA_TTL_OFF 4
#define DNSA_SOA_MIN_OFF 74
static const uint8_t dnsa_soa_tmpl[] = "\x00\x06\x00\x01" /* TYPE SOA, CLASS IN */
                                       "\x00\x00\x00\x00" /* TTL: set per answer */
                                       "\x00\x44"         /* RDLENGTH 68 */
                                       "\x08sinkhole\x04moat\x07invalid\x00"
                                       "\x0ahostmaster\x04moat\x07invalid\x00"
                                       "\x00\x00\x00\x01"  /* SERIAL 1 */
                                       "\x00\x00\x0e\x10"  /* REFRESH 3600 */
                                       "\x00\x00\x02\x58"  /* RETRY 600 */
                                       "\x00\x01\x51\x80"  /* EXPIRE 86400 */
                                       "\x00\x00\x00\x00"; /* MINIMUM: set per answer */
#define DNSA_SOA_LEN (sizeof dnsa_soa_tmpl - 1)            /* the literal's NUL */
_Static_assert(DNSA_SOA_LEN == 10 + 68, "SOA RDLENGTH");
_Static_assert(DNSA_SOA_MIN_OFF + 4 == DNSA_SOA_LEN, "SOA MINIMUM last");

/* OPT advertising 1232 octets, version 0, DO clear (octet 7 is set per
 * query), then for blocked answers an Extended DNS Error: OPTION-CODE 15,
 * OPTION-LENGTH, INFO-CODE 15 "Blocked", EXTRA-TEXT in UTF-8 without a NUL
 * (RFC 8914 §2, §4.16). */
#define DNSA_OPT_DO_OFF 7
/* Root owner, TYPE OPT, CLASS (UDP size) 1232, TTL (ext RCODE, VERSION, DO|Z). */
#define DNSA_OPT_HEAD         "\x00\x00\x29\x04\xd0\x00\x00\x00\x00"
#define DNSA_EDE_BLOCKED_TEXT "blocked by moat allowlist"
#define DNSA_EDE_CANARY_TEXT  "DoH canary: moat filters this network"
static const uint8_t dnsa_opt_bare[] = DNSA_OPT_HEAD "\x00\x00";
static const uint8_t dnsa_opt_blocked[] = DNSA_OPT_HEAD "\x00\x1f"         /* RDLENGTH 31 */
                                                        "\x00\x0f\x00\x1b" /* EDE, 27 */
                                                        "\x00\x0f" DNSA_EDE_BLOCKED_TEXT;
static const uint8_t dnsa_opt_canary[] = DNSA_OPT_HEAD "\x00\x2b"         /* RDLENGTH 43 */
                                                       "\x00\x0f\x00\x27" /* EDE, 39 */
                                                       "\x00\x0f" DNSA_EDE_CANARY_TEXT;
_Static_assert(sizeof dnsa_opt_bare - 1 == DNSA_OPT_LEN, "bare OPT");
_Static_assert(sizeof dnsa_opt_blocked - 1 == DNSA_OPT_LEN + 0x1f, "RDLENGTH");
_Static_assert(sizeof DNSA_EDE_BLOCKED_TEXT - 1 + 2 == 0x1b, "EDE OPTION-LENGTH");
_Static_assert(sizeof dnsa_opt_canary - 1 == DNSA_OPT_LEN + 0x2b, "RDLENGTH");
_Static_assert(sizeof DNSA_EDE_CANARY_TEXT - 1 + 2 == 0x27, "EDE OPTION-LENGTH");
_Static_assert(DNS_EDNS_UDP_SIZE == 0x04d0, "the OPT templates advertise 1232");

/* The twelve header octets (RFC 1035 §4.1.1), staged whole so that the
 * writer checks their bounds once. */
static inline void dnsa_header_octets(uint8_t h[DNS_HEADER_LEN], uint16_t id, uint16_t flags,
                                      uint16_t qd, uint16_t an, uint16_t ns, uint16_t ar)
{
    filter_wr_be16(h, id);
    filter_wr_be16(h + 2, flags);
    filter_wr_be16(h + 4, qd);
    filter_wr_be16(h + 6, an);
    filter_wr_be16(h + 8, ns);
    filter_wr_be16(h + 10, ar);
}

/* Header (RFC 1035 §4.1.1): ID, OPCODE, RD and CD copied; QR and RA set. */
static inline void dnsa_header(filter_wr_t *w, const dns_query_t *q, uint16_t flags, int rcode,
                               uint16_t an, uint16_t ns, uint16_t ar)
{
    uint16_t f = (uint16_t)(DNSA_QR | DNSA_RA | flags | (q->opcode & 0xfu) << 11 |
                            (q->rd ? DNSA_RD : 0) | (q->cd ? DNSA_CD : 0) | (rcode & 0xf));
    uint8_t h[DNS_HEADER_LEN];
    dnsa_header_octets(h, q->id, f, q->has_question ? 1 : 0, an, ns, ar);
    filter_wr_bytes(w, h, sizeof h);
}

/* The question as the client sent it: its name octets verbatim (letter case
 * preserved, no compression in a question), QTYPE, QCLASS. */
static inline void dnsa_question(filter_wr_t *w, const dns_query_t *q)
{
    if (!q->has_question)
        return;
    filter_wr_bytes(w, q->qname, q->qname_len);
    filter_wr_u16(w, q->qtype);
    filter_wr_u16(w, q->qclass);
}

/* OPT from a template (bare or with EDE), with the extended RCODE's upper
 * bits (RFC 6891 §6.1.3) and the query's DO bit; returns its offset. */
static inline size_t dnsa_opt(filter_wr_t *w, const dns_query_t *q, int rcode, const uint8_t *tmpl,
                              size_t tlen)
{
    size_t at = filter_wr_pos(w);
    filter_wr_bytes(w, tmpl, tlen);
    filter_wr_patch_u8(w, at + 5, (uint8_t)(rcode >> 4));
    filter_wr_patch_u8(w, at + DNSA_OPT_DO_OFF, q->edns_do ? 0x80 : 0x00);
    return at;
}

/* The builders' return value: the message length, -ENOSPC when it did not
 * fit, -EINVAL for a patch outside the message (a builder bug). */
static int dnsa_len(const filter_wr_t *w)
{
    switch (filter_wr_error(w)) {
    case FILTER_WR_OK:
        return (int)filter_wr_pos(w);
    case FILTER_WR_NOSPACE:
        return -ENOSPC;
    default:
        return -EINVAL;
    }
}

/* The answer cut to header, question and a bare OPT, TC set (RFC 2181 §9,
 * RFC 6891 §7); checked against cap only, as nothing shorter can be sent. */
static int dnsa_truncated(const dns_query_t *q, uint16_t flags, int rcode, uint8_t *buf, size_t cap)
{
    filter_wr_t w = filter_wr_make(buf, cap);
    dnsa_header(&w, q, (uint16_t)(flags | DNSA_TC), rcode, 0, 0, q->edns ? 1 : 0);
    dnsa_question(&w, q);
    if (q->edns)
        dnsa_opt(&w, q, rcode, dnsa_opt_bare, DNSA_OPT_LEN);
    return dnsa_len(&w);
}

int dns_answer_error_ede(const dns_query_t *q, int rcode, uint16_t info_code, const char *text,
                         uint8_t *buf, size_t cap)
{
    if (q == NULL || buf == NULL || rcode < 0 || rcode > 0xfff)
        return -EINVAL;
    if (rcode > 0xf && !q->edns)
        return -EINVAL; /* an extended RCODE needs an OPT to carry it */
    size_t tlen = text ? strlen(text) : 0;
    if (tlen > DNS_EDE_TEXT_MAX)
        return -EINVAL;
    filter_wr_t w = filter_wr_make(buf, cap);
    dnsa_header(&w, q, 0, rcode, 0, 0, q->edns ? 1 : 0);
    dnsa_question(&w, q);
    if (q->edns) {
        size_t at = dnsa_opt(&w, q, rcode, dnsa_opt_bare, DNSA_OPT_LEN);
        if (info_code != UINT16_MAX) {
            /* RFC 8914 §2: OPTION-CODE 15, OPTION-LENGTH, INFO-CODE, EXTRA-TEXT. */
            filter_wr_patch_u16(&w, at + DNSA_OPT_LEN - 2, (uint16_t)(6 + tlen));
            filter_wr_u16(&w, DNSA_EDE_OPTION);
            filter_wr_u16(&w, (uint16_t)(2 + tlen));
            filter_wr_u16(&w, info_code);
            filter_wr_bytes(&w, text, tlen);
        }
    }
    return dnsa_len(&w);
}

int dns_answer_error(const dns_query_t *q, int rcode, uint8_t *buf, size_t cap)
{
    /* UINT16_MAX: no EDE option (65535 is a reserved INFO-CODE, never sent). */
    return dns_answer_error_ede(q, rcode, UINT16_MAX, NULL, buf, cap);
}

/* The sinkhole A or AAAA record; its owner is a pointer to the question
 * name at offset 12 (RFC 1035 §4.1.4). */
static inline void dnsa_addr_rr(filter_wr_t *w, const dns_query_t *q, const dns_sinkhole_t *cfg)
{
    bool v4 = q->qtype == DNS_TYPE_A;
    uint16_t rdlen = v4 ? 4 : 16;
    filter_wr_u16(w, 0xc000u | DNS_HEADER_LEN);
    filter_wr_u16(w, v4 ? DNS_TYPE_A : DNS_TYPE_AAAA);
    filter_wr_u16(w, DNS_CLASS_IN);
    filter_wr_u32(w, cfg->ttl);
    filter_wr_u16(w, rdlen);
    filter_wr_bytes(w, v4 ? cfg->ipv4 : cfg->ipv6, rdlen);
}

/* The SOA of the synthetic zone named after the question's last label: its
 * owner is a pointer to that label inside the question, or the root. */
static inline void dnsa_soa_rr(filter_wr_t *w, const dns_query_t *q, const dns_sinkhole_t *cfg)
{
    if (q->labels > 0)
        filter_wr_u16(w, (uint16_t)(0xc000u | (DNS_HEADER_LEN + q->tld_off)));
    else
        filter_wr_u8(w, 0);
    size_t at = filter_wr_pos(w);
    filter_wr_bytes(w, dnsa_soa_tmpl, DNSA_SOA_LEN);
    filter_wr_patch_u32(w, at + DNSA_SOA_TTL_OFF, cfg->ttl);
    filter_wr_patch_u32(w, at + DNSA_SOA_MIN_OFF, cfg->ttl);
}

static int dnsa_blocked(const dns_query_t *q, const dns_sinkhole_t *cfg, bool nxdomain,
                        const uint8_t *opt, size_t opt_len, uint8_t *buf, size_t cap, size_t limit)
{
    if (q == NULL || cfg == NULL || buf == NULL || !q->has_question ||
        q->rcode_hint != DNS_RCODE_NOERROR)
        return -EINVAL;
    int rcode = nxdomain ? DNS_RCODE_NXDOMAIN : DNS_RCODE_NOERROR;
    bool addr = !nxdomain && (q->qtype == DNS_TYPE_A || q->qtype == DNS_TYPE_AAAA);
    filter_wr_t w = filter_wr_make(buf, limit < cap ? limit : cap);
    dnsa_header(&w, q, DNSA_AA, rcode, addr ? 1 : 0, addr ? 0 : 1, q->edns ? 1 : 0);
    dnsa_question(&w, q);
    if (addr)
        dnsa_addr_rr(&w, q, cfg);
    else
        dnsa_soa_rr(&w, q, cfg);
    if (q->edns)
        dnsa_opt(&w, q, rcode, opt, opt_len);
    if (filter_wr_error(&w) != FILTER_WR_NOSPACE)
        return dnsa_len(&w);
    return dnsa_truncated(q, DNSA_AA, rcode, buf, cap);
}

int dns_answer_sinkhole(const dns_query_t *q, const dns_sinkhole_t *cfg, uint8_t *buf, size_t cap,
                        size_t limit)
{
    return dnsa_blocked(q, cfg, cfg && cfg->nxdomain, dnsa_opt_blocked, sizeof dnsa_opt_blocked - 1,
                        buf, cap, limit);
}

int dns_answer_canary(const dns_query_t *q, const dns_sinkhole_t *cfg, uint8_t *buf, size_t cap,
                      size_t limit)
{
    return dnsa_blocked(q, cfg, true, dnsa_opt_canary, sizeof dnsa_opt_canary - 1, buf, cap, limit);
}

/* a == b but for ASCII case; equal octets, the usual case, cost one test. */
static inline bool dnsa_same_letter(uint8_t a, uint8_t b)
{
    if (a == b)
        return true;
    uint8_t lower = (uint8_t)(a | 0x20);
    return (a ^ b) == 0x20 && lower >= 'a' && lower <= 'z';
}

/* The header and the question, which must be q's: same name octet for octet
 * but for ASCII case (the client's name has no pointers, so matching it
 * octet by octet also matches the label structure), QTYPE and QCLASS. */
/* The header of an answer: a response with one question. */
static int dnsa_scan_header(filter_cur_t *c, dns_answer_scan_t *s)
{
    filter_cur_skip(c, 2); /* ID */
    s->flags = filter_cur_u16(c);
    uint16_t qdcount = filter_cur_u16(c);
    s->ancount = filter_cur_u16(c);
    s->nscount = filter_cur_u16(c);
    s->arcount = filter_cur_u16(c);
    if (!filter_cur_ok(c) || !(s->flags & DNSA_QR) || qdcount != 1)
        return -EBADMSG;
    return 0;
}

static int dnsa_scan_question(filter_cur_t *c, const dns_query_t *q, dns_answer_scan_t *s)
{
    if (dnsa_scan_header(c, s) != 0)
        return -EBADMSG;
    const uint8_t *name = filter_cur_take(c, q->qname_len);
    uint16_t qtype = filter_cur_u16(c);
    uint16_t qclass = filter_cur_u16(c);
    if (name == NULL || !filter_cur_ok(c) || qtype != q->qtype || qclass != q->qclass)
        return -EBADMSG;
    /* The same letter case (a cache hit for the client that filled it, an
     * upstream that echoes the case): one memcmp. */
    if (memcmp(name, q->qname, q->qname_len) != 0)
        for (size_t i = 0; i < q->qname_len; i++)
            if (!dnsa_same_letter(name[i], q->qname[i]))
                return -EBADMSG;
    s->question_end = filter_cur_pos(c);
    return 0;
}

/* The records: each whole; in the additional section at most one OPT,
 * owned by the root (RFC 6891 §6.1.1). */
static int dnsa_scan_records(filter_cur_t *c, dns_answer_scan_t *s)
{
    bool root;
    for (uint32_t i = 0; i < (uint32_t)s->ancount + s->nscount; i++) {
        if (dns_wire_skip_name(c, &root) != 0)
            return -EBADMSG;
        filter_cur_skip(c, 8); /* TYPE, CLASS, TTL */
        filter_cur_skip(c, filter_cur_u16(c));
        if (!filter_cur_ok(c))
            return -EBADMSG;
    }
    s->opt_len = 0;
    for (uint16_t i = 0; i < s->arcount; i++) {
        size_t start = filter_cur_pos(c);
        if (dns_wire_skip_name(c, &root) != 0)
            return -EBADMSG;
        uint16_t type = filter_cur_u16(c);
        filter_cur_skip(c, 2);            /* CLASS */
        uint32_t ttl = filter_cur_u32(c); /* for an OPT: ext RCODE, VERSION, DO|Z */
        filter_cur_skip(c, filter_cur_u16(c));
        if (!filter_cur_ok(c))
            return -EBADMSG;
        if (type == DNS_TYPE_OPT) {
            if (s->opt_len != 0 || !root) /* RFC 6891 §6.1.1 */
                return -EBADMSG;
            s->opt_off = start;
            s->opt_len = filter_cur_pos(c) - start;
            s->opt_ext_rcode = (uint8_t)(ttl >> 24);
            s->opt_flags_hi = (uint8_t)(ttl >> 8);
        }
    }
    s->end = filter_cur_pos(c); /* anything after the last record is dropped */
    return 0;
}

/* The OPT fitted to the client: removed when it sent none (RFC 6891 §7),
 * else its UDP size and DO set (other fields and options kept), or a bare
 * one appended. */
static void dnsa_fit_opt(filter_wr_t *w, const dns_query_t *q, dns_answer_scan_t *s)
{
    if (s->opt_len != 0 && !q->edns) {
        filter_wr_cut(w, s->opt_off, s->opt_len);
        s->arcount--;
    } else if (s->opt_len != 0) {
        /* Root owner (1), TYPE (2), CLASS = size, TTL = ext RCODE, VERSION,
         * DO|Z (RFC 6891 §6.1.3). */
        filter_wr_patch_u16(w, s->opt_off + 3, DNS_EDNS_UDP_SIZE);
        filter_wr_patch_u8(w, s->opt_off + DNSA_OPT_DO_OFF,
                           (uint8_t)((s->opt_flags_hi & 0x7f) | (q->edns_do ? 0x80 : 0)));
    } else if (q->edns) {
        dnsa_opt(w, q, 0, dnsa_opt_bare, DNSA_OPT_LEN);
        s->arcount++;
    }
}

/* The patch itself, from the scan s of buf (changed as the answer is). */
static int dnsa_patch(uint8_t *buf, size_t cap, const dns_query_t *q, size_t limit,
                      dns_answer_scan_t s)
{
    /* An extended RCODE (BADVERS, BADCOOKIE, ...: RFC 6891 §6.1.3) speaks of
     * moat's own exchange with the upstream, never of the client's query. */
    if (s.opt_len != 0 && s.opt_ext_rcode != 0)
        return -EBADMSG;
    filter_wr_t w = filter_wr_resume(buf, cap, s.end);
    if (s.opt_len == 0 && q->edns && filter_wr_left(&w) < DNSA_OPT_LEN)
        return -ENOSPC;

    filter_wr_patch_bytes(&w, DNS_HEADER_LEN, q->qname, q->qname_len);
    dnsa_fit_opt(&w, q, &s);
    if (filter_wr_pos(&w) > limit) {
        /* Cut to header, question and a bare OPT (RFC 2181 §9, RFC 6891 §7).
         * Never longer than before: an EDNS client's answer has an OPT by now. */
        s.flags |= DNSA_TC;
        s.ancount = s.nscount = 0;
        s.arcount = q->edns ? 1 : 0;
        filter_wr_rewind(&w, s.question_end);
        if (q->edns)
            dnsa_opt(&w, q, 0, dnsa_opt_bare, DNSA_OPT_LEN);
    } else {
        s.flags &= (uint16_t)~DNSA_TC;
    }
    /* RD and CD are the client's (RFC 1035 §4.1.1, RFC 4035 §3.1.6). */
    uint16_t flags = (uint16_t)((s.flags & ~(DNSA_RD | DNSA_CD)) | (q->rd ? DNSA_RD : 0) |
                                (q->cd ? DNSA_CD : 0));
    uint8_t h[DNS_HEADER_LEN];
    dnsa_header_octets(h, q->id, flags, 1, s.ancount, s.nscount, s.arcount);
    filter_wr_patch_bytes(&w, 0, h, sizeof h);
    return dnsa_len(&w);
}

int dns_answer_patch(uint8_t *buf, size_t len, size_t cap, const dns_query_t *q, size_t limit)
{
    if (buf == NULL || q == NULL || len > cap || !q->has_question)
        return -EINVAL;
    dns_answer_scan_t s = {0};
    filter_cur_t c = filter_cur_make(buf, len);
    if (dnsa_scan_question(&c, q, &s) != 0 || dnsa_scan_records(&c, &s) != 0)
        return -EBADMSG;
    return dnsa_patch(buf, cap, q, limit, s);
}

int dns_answer_scan(const uint8_t *buf, size_t len, dns_answer_scan_t *out)
{
    *out = (dns_answer_scan_t){0};
    if (buf == NULL)
        return -EINVAL;
    dns_answer_scan_t s = {0};
    filter_cur_t c = filter_cur_make(buf, len);
    bool root;
    if (dnsa_scan_header(&c, &s) != 0 || dns_wire_skip_name(&c, &root) != 0)
        return -EBADMSG;
    filter_cur_skip(&c, 4); /* QTYPE, QCLASS */
    if (!filter_cur_ok(&c))
        return -EBADMSG;
    s.question_end = filter_cur_pos(&c);
    if (dnsa_scan_records(&c, &s) != 0)
        return -EBADMSG;
    *out = s;
    return 0;
}

int dns_answer_patch_scanned(uint8_t *buf, size_t len, size_t cap, const dns_query_t *q,
                             size_t limit, const dns_answer_scan_t *scan)
{
    if (buf == NULL || q == NULL || scan == NULL || len > cap || !q->has_question ||
        scan->end == 0 || scan->end > len)
        return -EINVAL;
    /* The question is checked as dns_answer_patch checks it (it is the
     * client's to copy); the records are the scan's. */
    dns_answer_scan_t t = {0};
    filter_cur_t c = filter_cur_make(buf, len);
    if (dnsa_scan_question(&c, q, &t) != 0 || t.question_end != scan->question_end)
        return -EBADMSG;
    return dnsa_patch(buf, cap, q, limit, *scan);
}
