/* dns/query.c: DNS query parsing (RFC 1035 §4.1, RFC 6891 §6).
 *
 * Hand-written over filter/cursor.h rather than ldns_wire2pkt: ldns builds a
 * tree of heap objects per message (one per rdf, rr and list) and accepts
 * what a query must not carry (compressed question names); here a query
 * costs one pass over its bytes and no allocation, and every rule the SPEC
 * sets has its own line below.
 */
#include "dns/query.h"

#include <errno.h>
#include <string.h>

#include "filter/cursor.h"
#include "filter/name.h"

/* Header flag bits (RFC 1035 §4.1.1, RFC 4035 §3.2). */
#define DNSQ_QR 0x8000u
#define DNSQ_RD 0x0100u
#define DNSQ_CD 0x0010u

/* Octets a host name may hold, [A-Za-z0-9-_] (the same set as
 * filter_name_normalize()), as that function writes them: lowercase. 0 for
 * every other octet. None of them is escaped in presentation form. */
static uint8_t dnsq_fold[256];

__attribute__((constructor)) static void dnsq_fold_init(void)
{
    for (unsigned c = 0; c < 256; c++) {
        bool lower = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
        bool upper = c >= 'A' && c <= 'Z';
        dnsq_fold[c] = (uint8_t)(lower ? c : upper ? c + ('a' - 'A') : 0);
    }
}

/* Append one label octet in presentation form, escaped as ldns writes it
 * (ldns_rdf2buffer_str_dname), so logs and tests agree with ldns. */
static size_t dnsq_put_octet(char *out, size_t n, uint8_t c)
{
    if (c == '.' || c == ';' || c == '(' || c == ')' || c == '\\') {
        out[n++] = '\\';
        out[n++] = (char)c;
    } else if (c > 0x20 && c < 0x7f) {
        out[n++] = (char)c;
    } else {
        out[n++] = '\\';
        out[n++] = (char)('0' + c / 100);
        out[n++] = (char)('0' + c / 10 % 10);
        out[n++] = (char)('0' + c % 10);
    }
    return n;
}

/* Mark the cursor with why a name was refused (fuzz triage); -EBADMSG. */
static int dnsq_fail(filter_cur_t *c, filter_cur_err_t kind)
{
    filter_cur_fail(c, kind);
    return -EBADMSG;
}

/* The last label is all digits (filter_name_normalize refuses such a name:
 * an address, not a host name). */
static bool dnsq_numeric_tld(const dns_query_t *q)
{
    const uint8_t *l = q->qname + q->tld_off;
    for (uint8_t i = 1; i <= l[0]; i++)
        if (l[i] < '0' || l[i] > '9')
            return false;
    return true;
}

/* The question name (RFC 1035 §4.1.2): plain labels only. A compression
 * pointer has nothing to point back to in a question and is refused, as are
 * the reserved label types 01 and 10 (RFC 6891 §5). Fills qname, the
 * presentation form, the label bookkeeping, and for a host name lname (its
 * filter_name_normalize() form) and host_name; returns 0 or -EBADMSG. */
static int dnsq_read_qname(filter_cur_t *c, dns_query_t *q)
{
    size_t wire = 0, text = 0;
    for (;;) {
        uint8_t len = filter_cur_u8(c);
        if (!filter_cur_ok(c))
            return -EBADMSG;
        if (len > DNS_LABEL_MAX) /* 0xc0 pointer, 0x40 / 0x80 reserved */
            return dnsq_fail(c, FILTER_CUR_MALFORMED);
        if (wire + 1 + len > DNS_NAME_WIRE_MAX)
            return dnsq_fail(c, FILTER_CUR_OVERLIMIT);
        if (len == 0) {
            q->qname[wire++] = 0;
            break;
        }
        const uint8_t *label = filter_cur_take(c, len);
        if (label == NULL)
            return -EBADMSG;
        q->tld_off = (uint8_t)wire;
        q->labels++;
        q->qname[wire++] = len;
        memcpy(q->qname + wire, label, len);
        wire += len;
        if (text > 0) {
            if (!q->not_host)
                q->lname[text] = '.'; /* text < wire while every label is a host's */
            q->name[text++] = '.';
        }
        /* A host-name label (nearly every one) is its own presentation
         * form: copied whole, and folded into lname as it is checked. Any
         * other is written octet by octet, and lname is given up. */
        unsigned host = 1;
        if (!q->not_host)
            for (size_t i = 0; i < len; i++) {
                uint8_t f = dnsq_fold[label[i]];
                q->lname[text + i] = (char)f;
                host &= f != 0;
            }
        if (host && !q->not_host) {
            memcpy(q->name + text, label, len);
            text += len;
            continue;
        }
        for (size_t i = 0; i < len; i++) {
            if (!dnsq_fold[label[i]])
                q->not_host = true;
            text = dnsq_put_octet(q->name, text, label[i]);
        }
    }
    if (q->labels == 0) {
        q->tld_off = 0;
        q->name[text++] = '.';
    }
    q->name[text] = '\0';
    q->name_len = (uint16_t)text;
    q->qname_len = (uint16_t)wire;
    q->host_name = !q->not_host && q->labels > 0 && text <= FILTER_NAME_MAX && !dnsq_numeric_tld(q);
    if (q->host_name)
        q->lname[text] = '\0';
    return 0;
}

/* Skip an owner name outside the question: labels ending in the root or in a
 * compression pointer (never followed: we only need to get past it). Sets
 * *root when the name is the single root octet. Returns 0 or -EBADMSG. */
int dns_wire_skip_name(filter_cur_t *c, bool *root)
{
    size_t wire = 0;
    bool dummy;
    if (!root)
        root = &dummy;
    *root = false;
    for (;;) {
        uint8_t len = filter_cur_u8(c);
        if (!filter_cur_ok(c))
            return -EBADMSG;
        if ((len & 0xc0) == 0xc0) {
            filter_cur_skip(c, 1);
            return filter_cur_ok(c) ? 0 : -EBADMSG;
        }
        if (len > DNS_LABEL_MAX)
            return dnsq_fail(c, FILTER_CUR_MALFORMED);
        if (len == 0) {
            *root = (wire == 0);
            return 0;
        }
        wire += 1 + (size_t)len;
        if (wire + 1 > DNS_NAME_WIRE_MAX)
            return dnsq_fail(c, FILTER_CUR_OVERLIMIT);
        filter_cur_skip(c, len);
    }
}

/* The OPT pseudo-record after its owner and TYPE (RFC 6891 §6.1.2):
 * CLASS = UDP payload size, TTL = extended RCODE, VERSION, DO and Z,
 * RDATA = options, each code, length, value (§6.1.2, framing checked). */
static int dnsq_read_opt(filter_cur_t *c, dns_query_t *q)
{
    uint16_t udp = filter_cur_u16(c);
    filter_cur_skip(c, 1); /* extended RCODE: meaningless in a query */
    uint8_t version = filter_cur_u8(c);
    uint16_t ednsflags = filter_cur_u16(c);
    uint16_t rdlen = filter_cur_u16(c);
    filter_cur_t opts = filter_cur_sub(c, rdlen);
    if (!filter_cur_ok(c))
        return -EBADMSG;
    while (filter_cur_left(&opts) > 0) {
        filter_cur_skip(&opts, 2);
        uint16_t olen = filter_cur_u16(&opts);
        filter_cur_skip(&opts, olen);
        if (!filter_cur_ok(&opts))
            return -EBADMSG;
    }
    q->udp_size = udp < DNS_UDP_MIN ? DNS_UDP_MIN : udp; /* RFC 6891 §6.2.5 */
    q->edns_version = version;
    q->edns_do = (ednsflags & 0x8000u) != 0;
    return 0;
}

/* Answer and authority records (skipped, see query.h), then the
 * additional section: the OPT read, anything else skipped; then nothing may
 * follow (BIND and Knot also refuse trailing bytes: a query has no room for
 * them, and they would be a covert channel). Returns 0 or -EBADMSG. */
static int dnsq_read_sections(filter_cur_t *c, dns_query_t *q, uint32_t an_ns, uint16_t arcount)
{
    bool root;
    for (uint32_t i = 0; i < an_ns; i++) {
        if (dns_wire_skip_name(c, &root) != 0)
            return -EBADMSG;
        filter_cur_skip(c, 8); /* TYPE, CLASS, TTL */
        filter_cur_skip(c, filter_cur_u16(c));
        if (!filter_cur_ok(c))
            return -EBADMSG;
    }
    for (uint16_t i = 0; i < arcount; i++) {
        if (dns_wire_skip_name(c, &root) != 0)
            return -EBADMSG;
        uint16_t type = filter_cur_u16(c);
        if (!filter_cur_ok(c))
            return -EBADMSG;
        if (type != DNS_TYPE_OPT) {
            filter_cur_skip(c, 6); /* CLASS, TTL */
            filter_cur_skip(c, filter_cur_u16(c));
            if (!filter_cur_ok(c))
                return -EBADMSG;
            continue;
        }
        /* RFC 6891 §6.1.1: one OPT at most; its owner is the root (§6.1.2).
         * An OPT that fails these still makes the FORMERR carry an OPT (§7),
         * so the client can tell an EDNS error from a server without EDNS. */
        bool first = !q->edns;
        q->edns = true;
        if (!first || !root)
            return -EBADMSG;
        if (dnsq_read_opt(c, q) != 0)
            return -EBADMSG;
    }
    return filter_cur_left(c) == 0 ? 0 : -EBADMSG;
}

int dns_query_parse(const uint8_t *msg, size_t len, dns_query_t *q)
{
    /* Everything before the name buffers; those are written as they fill. */
    memset(q, 0, offsetof(dns_query_t, qname));
    q->name_len = 0;
    q->name[0] = '\0';
    q->udp_size = DNS_UDP_MIN;
    q->wire_len = len;

    if (msg == NULL || len < DNS_HEADER_LEN)
        return -EBADMSG;
    filter_cur_t c = filter_cur_make(msg, len);
    q->id = filter_cur_u16(&c);
    q->flags = filter_cur_u16(&c);
    uint16_t qdcount = filter_cur_u16(&c);
    uint16_t ancount = filter_cur_u16(&c);
    uint16_t nscount = filter_cur_u16(&c);
    uint16_t arcount = filter_cur_u16(&c);
    q->opcode = (uint8_t)(q->flags >> 11 & 0xf);
    q->rd = (q->flags & DNSQ_RD) != 0;
    q->cd = (q->flags & DNSQ_CD) != 0;
    if (q->flags & DNSQ_QR)
        return -EPROTO;

    /* Another opcode's sections need not look like a query's (UPDATE,
     * NOTIFY): NOTIMP, echoing the question only when it reads as one. */
    bool notimp = q->opcode != 0;
    q->rcode_hint = notimp ? DNS_RCODE_NOTIMP : DNS_RCODE_FORMERR;
    if (qdcount != 1)
        return 0;
    if (dnsq_read_qname(&c, q) != 0) {
        q->qname_len = 0;
        q->name_len = 0;
        q->name[0] = '\0';
        q->labels = 0;
        q->tld_off = 0;
        q->not_host = false;
        return 0;
    }
    q->qtype = filter_cur_u16(&c);
    q->qclass = filter_cur_u16(&c);
    if (!filter_cur_ok(&c))
        return 0;
    q->has_question = true;
    q->question_end = filter_cur_pos(&c);
    /* The other sections are read for every opcode (all of them are RRs), so
     * a NOTIMP answers an EDNS query with an OPT too (RFC 6891 §7). */
    int rc = dnsq_read_sections(&c, q, (uint32_t)ancount + nscount, arcount);
    if (notimp || rc != 0)
        return 0;
    if (q->edns && q->edns_version > 0) {
        q->rcode_hint = DNS_RCODE_BADVERS; /* RFC 6891 §6.1.3 */
        return 0;
    }
    q->rcode_hint = q->qclass == DNS_CLASS_IN ? DNS_RCODE_NOERROR : DNS_RCODE_REFUSED;
    return 0;
}

size_t dns_udp_limit(const dns_query_t *q)
{
    if (!q->edns)
        return DNS_UDP_MIN;
    size_t n = q->udp_size < DNS_UDP_MIN ? DNS_UDP_MIN : q->udp_size;
    return n > DNS_EDNS_UDP_SIZE ? DNS_EDNS_UDP_SIZE : n;
}

bool dns_query_is_canary(const dns_query_t *q)
{
    static const uint8_t canary[] = "\x13use-application-dns\x03net";
    if (!q->has_question || q->qname_len != sizeof canary)
        return false; /* sizeof counts the terminating NUL: the root octet */
    for (size_t i = 0; i < sizeof canary; i++) {
        uint8_t a = q->qname[i];
        if (a >= 'A' && a <= 'Z')
            a = (uint8_t)(a + ('a' - 'A'));
        if (a != canary[i])
            return false;
    }
    return true;
}
