/* dns/answer.c: locally built DNS answers and the per-client patch of
 * forwarded ones (SPEC §2.2).
 *
 * Hand-built wire from precomputed templates rather than ldns: a blocked
 * name is the hot path of a sandbox that probes the network, and ldns builds
 * every answer as a heap tree (ldns_pkt, one ldns_rr per record, one ldns_rdf
 * per field, owner names re-parsed from text or cloned) before serialising it
 * through a growing ldns_buffer. Measured with tests/dns/bench_answer.c
 * (the same 91-octet sinkhole A answer for "www.Example.com" with EDNS and
 * EDE; gcc -O2, AMD EPYC, 2 vCPUs shared with other builds, 2e6 iterations,
 * median of 3, spread over several runs):
 *     ldns_pkt_new + ldns_rr_* + ldns_pkt2wire + frees   ~1800 ns per answer
 *     dns_answer_sinkhole                                   17-28 ns per answer
 * (and for the query: ldns_wire2pkt ~290 ns, dns_query_parse ~27 ns), i.e.
 * about 70x, and no allocator traffic on a path a guest can drive flat out.
 * The templates below are the parts of every answer that do not depend on the
 * query: the SOA record after its owner, the OPT with its EDE option.
 */
#include "dns/answer.h"

#include <errno.h>
#include <string.h>

#include "filter/cursor.h"

#define DNSA_QR 0x8000u
#define DNSA_AA 0x0400u
#define DNSA_TC 0x0200u
#define DNSA_RD 0x0100u
#define DNSA_RA 0x0080u
#define DNSA_CD 0x0010u

#define DNSA_OPT_LEN 11u /* root owner, TYPE, CLASS, TTL, RDLEN: RFC 6891 §6.1.2 */

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

/* A bounded writer for our own output; a write past cap sets err and writes
 * nothing, so a builder writes everything and checks once. */
typedef struct dnsa_w {
    uint8_t *p;
    size_t cap;
    size_t n;
    bool err;
} dnsa_w_t;

static void dnsa_put(dnsa_w_t *w, const void *src, size_t n)
{
    if (w->err || w->cap - w->n < n) {
        w->err = true;
        return;
    }
    memcpy(w->p + w->n, src, n);
    w->n += n;
}

static void dnsa_put16(dnsa_w_t *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    dnsa_put(w, b, 2);
}

static void dnsa_put32_at(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Header (RFC 1035 §4.1.1): ID, OPCODE, RD and CD copied; QR and RA set. */
static void dnsa_header(dnsa_w_t *w, const dns_query_t *q, uint16_t flags, int rcode, uint16_t an,
                        uint16_t ns, uint16_t ar)
{
    uint16_t f = (uint16_t)(DNSA_QR | DNSA_RA | flags | (q->opcode & 0xfu) << 11 |
                            (q->rd ? DNSA_RD : 0) | (q->cd ? DNSA_CD : 0) | (rcode & 0xf));
    uint8_t h[DNS_HEADER_LEN] = {(uint8_t)(q->id >> 8),
                                 (uint8_t)q->id,
                                 (uint8_t)(f >> 8),
                                 (uint8_t)f,
                                 0,
                                 q->has_question ? 1 : 0,
                                 (uint8_t)(an >> 8),
                                 (uint8_t)an,
                                 (uint8_t)(ns >> 8),
                                 (uint8_t)ns,
                                 (uint8_t)(ar >> 8),
                                 (uint8_t)ar};
    dnsa_put(w, h, sizeof h);
}

/* The question as the client sent it: its name octets verbatim (letter case
 * preserved, no compression in a question), QTYPE, QCLASS. */
static void dnsa_question(dnsa_w_t *w, const dns_query_t *q)
{
    if (!q->has_question)
        return;
    dnsa_put(w, q->qname, q->qname_len);
    dnsa_put16(w, q->qtype);
    dnsa_put16(w, q->qclass);
}

/* OPT from a template (bare or with EDE), with the extended RCODE's upper
 * bits (RFC 6891 §6.1.3) and the query's DO bit. */
static void dnsa_opt(dnsa_w_t *w, const dns_query_t *q, int rcode, const uint8_t *tmpl, size_t tlen)
{
    size_t at = w->n;
    dnsa_put(w, tmpl, tlen);
    if (w->err)
        return;
    w->p[at + 5] = (uint8_t)(rcode >> 4);
    w->p[at + DNSA_OPT_DO_OFF] = q->edns_do ? 0x80 : 0x00;
}

/* The answer cut to header, question and a bare OPT, TC set (RFC 2181 §9,
 * RFC 6891 §7); checked against cap only, as nothing shorter can be sent. */
static int dnsa_truncated(const dns_query_t *q, uint16_t flags, int rcode, uint8_t *buf, size_t cap)
{
    dnsa_w_t w = {buf, cap, 0, false};
    dnsa_header(&w, q, (uint16_t)(flags | DNSA_TC), rcode, 0, 0, q->edns ? 1 : 0);
    dnsa_question(&w, q);
    if (q->edns)
        dnsa_opt(&w, q, rcode, dnsa_opt_bare, DNSA_OPT_LEN);
    return w.err ? -ENOSPC : (int)w.n;
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
    dnsa_w_t w = {buf, cap, 0, false};
    dnsa_header(&w, q, 0, rcode, 0, 0, q->edns ? 1 : 0);
    dnsa_question(&w, q);
    if (q->edns) {
        uint8_t opt[DNSA_OPT_LEN + 6 + DNS_EDE_TEXT_MAX];
        memcpy(opt, dnsa_opt_bare, DNSA_OPT_LEN);
        size_t olen = DNSA_OPT_LEN;
        if (info_code != UINT16_MAX) {
            uint16_t rdlen = (uint16_t)(6 + tlen);
            opt[9] = (uint8_t)(rdlen >> 8);
            opt[10] = (uint8_t)rdlen;
            uint8_t ede[6] = {0x00,
                              0x0f,
                              (uint8_t)((2 + tlen) >> 8),
                              (uint8_t)(2 + tlen),
                              (uint8_t)(info_code >> 8),
                              (uint8_t)info_code};
            memcpy(opt + olen, ede, sizeof ede);
            olen += sizeof ede;
            if (tlen)
                memcpy(opt + olen, text, tlen);
            olen += tlen;
        }
        dnsa_opt(&w, q, rcode, opt, olen);
    }
    return w.err ? -ENOSPC : (int)w.n;
}

int dns_answer_error(const dns_query_t *q, int rcode, uint8_t *buf, size_t cap)
{
    /* UINT16_MAX: no EDE option (65535 is a reserved INFO-CODE, never sent). */
    return dns_answer_error_ede(q, rcode, UINT16_MAX, NULL, buf, cap);
}

static int dnsa_blocked(const dns_query_t *q, const dns_sinkhole_t *cfg, bool nxdomain,
                        const uint8_t *opt, size_t opt_len, uint8_t *buf, size_t cap, size_t limit)
{
    if (q == NULL || cfg == NULL || buf == NULL || !q->has_question ||
        q->rcode_hint != DNS_RCODE_NOERROR)
        return -EINVAL;
    int rcode = nxdomain ? DNS_RCODE_NXDOMAIN : DNS_RCODE_NOERROR;
    bool addr = !nxdomain && (q->qtype == DNS_TYPE_A || q->qtype == DNS_TYPE_AAAA);
    dnsa_w_t w = {buf, limit < cap ? limit : cap, 0, false};
    dnsa_header(&w, q, DNSA_AA, rcode, addr ? 1 : 0, addr ? 0 : 1, q->edns ? 1 : 0);
    dnsa_question(&w, q);
    if (addr) {
        bool v4 = q->qtype == DNS_TYPE_A;
        /* Owner: a pointer to the question name at offset 12 (RFC 1035 §4.1.4). */
        uint8_t rr[12 + 16] = {0xc0, DNS_HEADER_LEN, 0x00, v4 ? DNS_TYPE_A : DNS_TYPE_AAAA,
                               0x00, DNS_CLASS_IN};
        dnsa_put32_at(rr + 6, cfg->ttl);
        rr[11] = v4 ? 4 : 16;
        memcpy(rr + 12, v4 ? cfg->ipv4 : cfg->ipv6, rr[11]);
        dnsa_put(&w, rr, 12u + rr[11]);
    } else {
        /* The synthetic zone is the question's last label: its owner is a
         * pointer to that label inside the question, or the root. */
        if (q->labels > 0) {
            uint16_t ptr = (uint16_t)(0xc000u | (DNS_HEADER_LEN + q->tld_off));
            dnsa_put16(&w, ptr);
        } else {
            dnsa_put(&w, "", 1);
        }
        size_t at = w.n;
        dnsa_put(&w, dnsa_soa_tmpl, DNSA_SOA_LEN);
        if (!w.err) {
            dnsa_put32_at(w.p + at + DNSA_SOA_TTL_OFF, cfg->ttl);
            dnsa_put32_at(w.p + at + DNSA_SOA_MIN_OFF, cfg->ttl);
        }
    }
    if (q->edns)
        dnsa_opt(&w, q, rcode, opt, opt_len);
    if (!w.err)
        return (int)w.n;
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

static void dnsa_put16_at(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

int dns_answer_patch(uint8_t *buf, size_t len, size_t cap, const dns_query_t *q, size_t limit)
{
    if (buf == NULL || q == NULL || len > cap || !q->has_question)
        return -EINVAL;
    filter_cur_t c = filter_cur_make(buf, len);
    filter_cur_skip(&c, 2); /* ID */
    uint16_t flags = filter_cur_u16(&c);
    uint16_t qdcount = filter_cur_u16(&c);
    uint16_t ancount = filter_cur_u16(&c);
    uint16_t nscount = filter_cur_u16(&c);
    uint16_t arcount = filter_cur_u16(&c);
    if (!filter_cur_ok(&c) || !(flags & DNSA_QR) || qdcount != 1)
        return -EBADMSG;

    /* The same question: same name octet for octet but for ASCII case. The
     * client's name has no pointers, so matching it octet by octet also
     * matches the label structure. */
    const uint8_t *name = filter_cur_take(&c, q->qname_len);
    uint16_t qtype = filter_cur_u16(&c);
    uint16_t qclass = filter_cur_u16(&c);
    if (name == NULL || !filter_cur_ok(&c) || qtype != q->qtype || qclass != q->qclass)
        return -EBADMSG;
    for (size_t i = 0; i < q->qname_len; i++) {
        uint8_t a = name[i], b = q->qname[i];
        if (a >= 'A' && a <= 'Z')
            a = (uint8_t)(a + ('a' - 'A'));
        if (b >= 'A' && b <= 'Z')
            b = (uint8_t)(b + ('a' - 'A'));
        if (a != b)
            return -EBADMSG;
    }
    size_t question_end = filter_cur_pos(&c);

    bool root;
    for (uint32_t i = 0; i < (uint32_t)ancount + nscount; i++) {
        if (dns_wire_skip_name(&c, &root) != 0)
            return -EBADMSG;
        filter_cur_skip(&c, 8);
        filter_cur_skip(&c, filter_cur_u16(&c));
        if (!filter_cur_ok(&c))
            return -EBADMSG;
    }
    size_t opt_off = 0, opt_len = 0;
    for (uint16_t i = 0; i < arcount; i++) {
        size_t start = filter_cur_pos(&c);
        if (dns_wire_skip_name(&c, &root) != 0)
            return -EBADMSG;
        uint16_t type = filter_cur_u16(&c);
        filter_cur_skip(&c, 6);
        filter_cur_skip(&c, filter_cur_u16(&c));
        if (!filter_cur_ok(&c))
            return -EBADMSG;
        if (type == DNS_TYPE_OPT) {
            if (opt_len != 0 || !root) /* RFC 6891 §6.1.1 */
                return -EBADMSG;
            opt_off = start;
            opt_len = filter_cur_pos(&c) - start;
        }
    }
    /* Anything after the last record is dropped. */
    size_t end = filter_cur_pos(&c);
    /* An extended RCODE (BADVERS, BADCOOKIE, ...: RFC 6891 §6.1.3) speaks of
     * moat's own exchange with the upstream, never of the client's query. */
    if (opt_len != 0 && buf[opt_off + 5] != 0)
        return -EBADMSG;
    if (opt_len == 0 && q->edns && cap - end < DNSA_OPT_LEN)
        return -ENOSPC;

    dnsa_put16_at(buf, q->id);
    memcpy(buf + DNS_HEADER_LEN, q->qname, q->qname_len);

    if (opt_len != 0 && !q->edns) {
        /* RFC 6891 §7: no OPT to a client that sent none. */
        memmove(buf + opt_off, buf + opt_off + opt_len, end - (opt_off + opt_len));
        end -= opt_len;
        arcount--;
        opt_len = 0;
    } else if (opt_len != 0) {
        /* Root owner (1), TYPE (2), CLASS = size, TTL = ext RCODE, VERSION,
         * DO|Z (RFC 6891 §6.1.3). */
        dnsa_put16_at(buf + opt_off + 3, DNS_EDNS_UDP_SIZE);
        buf[opt_off + 7] = (uint8_t)((buf[opt_off + 7] & 0x7f) | (q->edns_do ? 0x80 : 0));
    } else if (q->edns) {
        memcpy(buf + end, dnsa_opt_bare, DNSA_OPT_LEN);
        buf[end + DNSA_OPT_DO_OFF] = q->edns_do ? 0x80 : 0x00;
        end += DNSA_OPT_LEN;
        arcount++;
    }

    if (end > limit) {
        /* Cut to header, question and a bare OPT (RFC 2181 §9, RFC 6891 §7).
         * Never longer than before: an EDNS client's answer has an OPT by now. */
        flags |= DNSA_TC;
        ancount = nscount = 0;
        arcount = q->edns ? 1 : 0;
        end = question_end;
        if (q->edns) {
            memcpy(buf + end, dnsa_opt_bare, DNSA_OPT_LEN);
            buf[end + DNSA_OPT_DO_OFF] = q->edns_do ? 0x80 : 0x00;
            end += DNSA_OPT_LEN;
        }
    } else {
        flags &= (uint16_t)~DNSA_TC;
    }
    /* RD and CD are the client's (RFC 1035 §4.1.1, RFC 4035 §3.1.6). */
    flags =
        (uint16_t)((flags & ~(DNSA_RD | DNSA_CD)) | (q->rd ? DNSA_RD : 0) | (q->cd ? DNSA_CD : 0));
    dnsa_put16_at(buf + 2, flags);
    dnsa_put16_at(buf + 6, ancount);
    dnsa_put16_at(buf + 8, nscount);
    dnsa_put16_at(buf + 10, arcount);
    return (int)end;
}
