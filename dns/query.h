/* dns/query.h: parse one DNS query from the guest (RFC 1035 §4.1,
 * RFC 6891 §6), the first step of the resolver's hot path. Pure: no I/O, no
 * allocation; every read of the guest's bytes goes through filter/cursor.h.
 *
 * What the parser decides (SPEC §2.2), in this order of precedence:
 *   - fewer than 12 bytes: returns -EBADMSG, the caller drops the message;
 *   - QR set (a response sent to us): returns -EPROTO, the caller drops it
 *     (answering responses invites loops and reflection);
 *   - OPCODE other than QUERY: NOTIMP (question and OPT still read, for the
 *     echo, when they can be);
 *   - QDCOUNT other than 1, a bad question name (compression pointer, label
 *     over 63 octets or of a reserved type, name over 255 wire octets), a
 *     record that runs past the end, more than one OPT, an OPT whose owner is
 *     not the root, a badly framed EDNS option, or bytes after the last
 *     record: FORMERR;
 *   - EDNS VERSION above 0: BADVERS (RFC 6891 §6.1.3);
 *   - QCLASS other than IN (CH, HS, NONE and ANY included): REFUSED; moat
 *     serves the IN class only.
 * Records in the answer and authority sections of a query are tolerated and
 * skipped (nothing sends them but IXFR and mDNS, and they carry nothing we
 * use); the caller forwards a fresh query built from qname/qtype/qclass,
 * never the guest's bytes. Additional records other than OPT (e.g. TSIG,
 * which moat does not implement) are skipped the same way.
 *
 * Return: 0 when the header was read (q->rcode_hint says whether to answer
 * the question or to answer with an error), -EBADMSG or -EPROTO to drop.
 */
#ifndef MOAT_DNS_QUERY_H
#define MOAT_DNS_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter/cursor.h"

#define DNS_HEADER_LEN    12
#define DNS_NAME_WIRE_MAX 255 /* RFC 1035 §2.3.4, length octets included */
#define DNS_LABEL_MAX     63
/* Presentation form: every octet of a 255-octet wire name written as \DDD. */
#define DNS_NAME_TEXT_MAX (4 * DNS_NAME_WIRE_MAX)
#define DNS_UDP_MIN       512  /* RFC 1035 §4.2.1; smaller EDNS sizes count as this */
#define DNS_EDNS_UDP_SIZE 1232 /* what moat advertises and the most it sends by UDP */
#define DNS_TCP_MAX       65535

/* RCODEs (RFC 1035 §4.1.1, RFC 6891 §9: BADVERS needs the OPT's upper bits). */
enum {
    DNS_RCODE_NOERROR = 0,
    DNS_RCODE_FORMERR = 1,
    DNS_RCODE_SERVFAIL = 2,
    DNS_RCODE_NXDOMAIN = 3,
    DNS_RCODE_NOTIMP = 4,
    DNS_RCODE_REFUSED = 5,
    DNS_RCODE_BADVERS = 16,
};

/* The types and classes moat looks at. */
enum {
    DNS_TYPE_A = 1,
    DNS_TYPE_NS = 2,
    DNS_TYPE_CNAME = 5,
    DNS_TYPE_SOA = 6,
    DNS_TYPE_PTR = 12,
    DNS_TYPE_MX = 15,
    DNS_TYPE_TXT = 16,
    DNS_TYPE_AAAA = 28,
    DNS_TYPE_SRV = 33,
    DNS_TYPE_OPT = 41,
    DNS_TYPE_SVCB = 64,
    DNS_TYPE_HTTPS = 65,
    DNS_TYPE_ANY = 255,
    DNS_CLASS_IN = 1,
    DNS_CLASS_CH = 3,
    DNS_CLASS_ANY = 255,
};

/* One parsed query. Holds copies of everything the answer builders need, so
 * the guest's buffer may be reused as soon as dns_query_parse() returns. */
typedef struct dns_query {
    uint16_t id;
    uint16_t flags;    /* the header's flags word as received */
    size_t wire_len;   /* the query's size in bytes (logged as bytes_up) */
    uint8_t opcode;    /* RFC 1035 §4.1.1, copied into the response */
    bool rd;           /* recursion desired, copied into the response */
    bool cd;           /* checking disabled, copied (RFC 4035 §3.1.6) */
    int rcode_hint;    /* DNS_RCODE_NOERROR: decide the name; else answer with this */
    bool has_question; /* the question was read: answers echo it */
    uint16_t qtype;
    uint16_t qclass;
    size_t question_end; /* offset in the message just past QCLASS */
    /* EDNS0 (RFC 6891 §6.1.2), from the first OPT seen. */
    bool edns;    /* the query had an OPT: the response gets one */
    bool edns_do; /* DNSSEC OK, copied into the response (RFC 3225 §3) */
    uint8_t edns_version;
    uint16_t udp_size; /* the client's payload size, at least 512 */
    /* The question name. */
    bool not_host;                    /* a label holds a byte no host name has (see name) */
    bool host_name;                   /* lname holds the name normalised (see lname) */
    uint8_t labels;                   /* number of labels, 0 for the root */
    uint8_t tld_off;                  /* offset in qname of the last label's length octet */
    uint16_t qname_len;               /* wire length, root octet included (1..255) */
    uint8_t qname[DNS_NAME_WIRE_MAX]; /* wire form, the guest's letter case */
    /* Presentation form for the policy and the logs: labels joined by '.',
     * no trailing dot, "." for the root, letter case as sent. Octets outside
     * [A-Za-z0-9-_] set not_host; they are written as ldns writes them
     * ("\." "\\" "\;" "\(" "\)", other graphic ASCII as is, the rest \DDD), so
     * "a.b" as one label reads "a\.b" and can never pass for two labels. A
     * not_host name is blocked as bad-name (the policy refuses it too: '\\'
     * and the other escapes are not host-name characters). NUL-terminated. */
    uint16_t name_len;
    char name[DNS_NAME_TEXT_MAX + 1];
    /* When host_name is true: name as filter_name_normalize() returns it
     * (lowercase, name_len octets, NUL-terminated), made while the labels
     * are read, so the decision need not normalise again. host_name is true
     * exactly when filter_name_normalize(name) succeeds: every label a
     * host-name label, 1..FILTER_NAME_MAX octets, a last label not all
     * digits. Otherwise lname holds nothing useful. */
    char lname[DNS_NAME_WIRE_MAX];
} dns_query_t;

/* Parse the query in msg[0..len); see the top of this file. */
int dns_query_parse(const uint8_t *msg, size_t len, dns_query_t *q);

/* Skip one name in wire form at the cursor (RFC 1035 §4.1.4): labels ending
 * in the root or a compression pointer, which is skipped, not followed. 0, or
 * -EBADMSG for a reserved label type (0x40, 0x80), a name over 255 octets or
 * a short read (the cursor's error then says which: MALFORMED, OVERLIMIT,
 * TRUNCATED). *root (may be NULL) is set when the name is the root. Every
 * resolver module that walks records uses this one. */
int dns_wire_skip_name(filter_cur_t *c, bool *root);

/* The most a UDP response to q may hold: 512 without EDNS, else the client's
 * size capped at DNS_EDNS_UDP_SIZE (RFC 6891 §6.2.5; DNS flag day 2020). */
size_t dns_udp_limit(const dns_query_t *q);

/* True when q asks about use-application-dns.net (any case, any type): the
 * DoH canary the resolver answers NXDOMAIN while filtering is on. */
bool dns_query_is_canary(const dns_query_t *q);

#endif
