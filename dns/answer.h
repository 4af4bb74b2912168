/* dns/answer.h: the answers moat builds itself (errors, sinkholed
 * names, the DoH canary) and the per-client fix-up of answers it forwards or
 * serves from its cache (SPEC §2.2). Pure: no I/O, no allocation; every
 * builder writes into the caller's buffer and returns the message length, or
 * a negative errno code (-ENOSPC when even a truncated answer does not fit
 * cap, -EINVAL for arguments no query can produce).
 *
 * Size limits: `limit` is the most the client will take, dns_udp_limit(q) for
 * UDP and DNS_TCP_MAX for TCP. An answer longer than min(limit, cap) is sent
 * truncated: TC set, header and question (and OPT) only (RFC 2181 §9,
 * RFC 6891 §7). A sinkhole answer is at most 12 + 259 + 80 + 40 = 391 octets
 * (the SOA's owner is a pointer into the question), so with a limit of 512 or
 * more it always fits.
 *
 * EDNS: a response carries an OPT exactly when the query had one (RFC 6891
 * §7); it advertises DNS_EDNS_UDP_SIZE, version 0, and copies DO (RFC 3225).
 * Every response copies ID, OPCODE, RD and CD, sets QR and RA (moat recurses
 * for allowed names) and echoes the question when it was read.
 */
#ifndef MOAT_DNS_ANSWER_H
#define MOAT_DNS_ANSWER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns/query.h"

/* How blocked names are answered (config `sinkhole`, SPEC §3). */
typedef struct dns_sinkhole {
    uint8_t ipv4[4];  /* A answer, default 0.0.0.0 */
    uint8_t ipv6[16]; /* AAAA answer, default :: */
    uint32_t ttl;     /* seconds: record TTL, SOA TTL and SOA MINIMUM */
    bool nxdomain;    /* `sinkhole.mode: nxdomain`: NXDOMAIN for every type */
} dns_sinkhole_t;

/* Extended DNS Error INFO-CODEs moat sends (RFC 8914 §4). */
enum {
    DNS_EDE_OTHER = 0,
    DNS_EDE_BLOCKED = 15,
    DNS_EDE_NO_REACHABLE_AUTHORITY = 22,
    DNS_EDE_NETWORK_ERROR = 23,
};

/* Longest EXTRA-TEXT dns_answer_error_ede() accepts. */
#define DNS_EDE_TEXT_MAX 128

/* Error response (FORMERR, SERVFAIL, NOTIMP, REFUSED, BADVERS, ...): no
 * records but the OPT; AA clear. BADVERS needs a query with an OPT (-EINVAL
 * otherwise). For q->rcode_hint, or SERVFAIL when upstream fails. */
int dns_answer_error(const dns_query_t *q, int rcode, uint8_t *buf, size_t cap);

/* The same with an Extended DNS Error option (RFC 8914 §2) when the query had
 * EDNS; text may be NULL, at most DNS_EDE_TEXT_MAX octets (-EINVAL beyond). */
int dns_answer_error_ede(const dns_query_t *q, int rcode, uint16_t info_code, const char *text,
                         uint8_t *buf, size_t cap);

/* Blocked name (SPEC §2.2), authoritative: A gives cfg->ipv4, AAAA
 * cfg->ipv6 (owner 0xc00c, TTL cfg->ttl); any other type NOERROR/NODATA with
 * the SOA of a synthetic zone named after the question's last label (the
 * root for "."); cfg->nxdomain gives NXDOMAIN with that SOA for every type.
 * EDE 15 "Blocked" when the query had EDNS. Only for a query that parsed
 * clean (rcode_hint NOERROR, hence a question of class IN): -EINVAL else. */
int dns_answer_sinkhole(const dns_query_t *q, const dns_sinkhole_t *cfg, uint8_t *buf, size_t cap,
                        size_t limit);

/* use-application-dns.net while filtering is on: NXDOMAIN with the zone's
 * SOA whatever cfg->nxdomain says, EDE 15 naming the DoH canary. */
int dns_answer_canary(const dns_query_t *q, const dns_sinkhole_t *cfg, uint8_t *buf, size_t cap,
                      size_t limit);

/* What dns_answer_patch reads from an answer before changing it: the
 * header's flags and counts, where the question ends, the OPT record and
 * where the last record ends. */
typedef struct dns_answer_scan {
    uint16_t flags, ancount, nscount, arcount;
    size_t question_end; /* offset after QCLASS */
    size_t opt_off;      /* the OPT record's offset, when opt_len != 0 */
    size_t opt_len;
    uint8_t opt_ext_rcode; /* the OPT's extended RCODE octet */
    uint8_t opt_flags_hi;  /* the OPT's DO|Z upper octet */
    size_t end;            /* offset after the last record; 0: no scan */
} dns_answer_scan_t;

/* Fit an upstream or cached answer (buf[0..len), cap bytes of room) to the
 * client's query q, in place:
 *   - ID := q->id; the question name's octets := q->qname (the client's
 *     letter case, e.g. its 0x20 bits); RD and CD := q's; other header bits
 *     (AA, RA, AD, RCODE) and the records are the upstream's;
 *   - OPT: removed when q had none (RFC 6891 §7); when q had one, its UDP
 *     size := DNS_EDNS_UDP_SIZE and DO := q's (other fields and options
 *     kept), or a bare OPT appended when the answer has none (needs 11
 *     bytes of room beyond len, else -ENOSPC);
 *   - TC: set, with the answer cut to header, question and OPT, when it is
 *     longer than limit; cleared otherwise.
 *   - bytes after the last record are dropped.
 * Contract: the answer is a complete response (never one cut by TC) to the
 * same question: QR set, QDCOUNT 1, the same name case-insensitively (hence
 * the same length), the same QTYPE and QCLASS. Anything else, a record
 * running past len, two OPTs, or an extended RCODE in the OPT (it would be
 * about moat's exchange with the upstream) returns -EBADMSG with buf
 * untouched (the caller answers SERVFAIL). Returns the new length. The
 * answer's bytes are not trusted: they are read through filter/cursor.h. */
int dns_answer_patch(uint8_t *buf, size_t len, size_t cap, const dns_query_t *q, size_t limit);

/* Scan an answer once for dns_answer_patch_scanned: 0 with *out filled, or
 * -EBADMSG (*out zeroed) where dns_answer_patch would refuse its header,
 * question shape or records. The question is not compared with any query:
 * the DNS cache scans what it stores, under the question's key. */
int dns_answer_scan(const uint8_t *buf, size_t len, dns_answer_scan_t *out);

/* dns_answer_patch for an answer whose bytes were scanned by
 * dns_answer_scan into *scan and not changed since: the same result, and
 * the same checks of the question against q, without reading the records
 * again (a cache hit). -EINVAL for a scan that does not fit len. */
int dns_answer_patch_scanned(uint8_t *buf, size_t len, size_t cap, const dns_query_t *q,
                             size_t limit, const dns_answer_scan_t *scan);

#endif
