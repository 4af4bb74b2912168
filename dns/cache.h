/* dns/cache.h: the DNS response cache (SPEC §2.2: "the answer is cached
 * for its TTL (TTLs count down in cached answers)").
 *
 * Keyed by (question name case-folded, QTYPE, QCLASS); stores the upstream
 * answer's wire bytes as dns_rewrite() left them, plus the A/AAAA addresses it
 * collected, so a hit can feed the address memory without parsing again.
 * Bounded by entry count with LRU eviction: a hash (keyed SipHash, so a guest
 * choosing names below a wildcard rule cannot flood one bucket) plus a doubly
 * linked recency list, O(1) per operation. Memory is bounded by
 * max_entries x (DNS_CACHE_ENTRY_MAX + a small header).
 *
 * What is cached and for how long (decided by dns_cache_put from the wire):
 *   - only complete responses (QR set, OPCODE QUERY, TC clear) whose RCODE is
 *     NOERROR or NXDOMAIN. SERVFAIL and every other RCODE are never cached:
 *     RFC 2308 §7.1 allows up to five minutes, but moat's upstream failures
 *     are usually transient and a cached SERVFAIL would outlive them;
 *   - positive answers (an answer-section RR of the QTYPE, or QTYPE ANY):
 *     the smallest TTL in the answer section;
 *   - negative answers (NXDOMAIN, NODATA, a CNAME chain that ends in either):
 *     RFC 2308 §5, min(SOA TTL, SOA MINIMUM) of the first SOA in the authority
 *     section (and of the chain's TTLs), capped at DNS_CACHE_MAX_NEG_TTL. A
 *     negative answer without an SOA is not cached (RFC 2308 §5 "SHOULD NOT");
 *     this includes a NODATA that dns_rewrite() made by removing addresses;
 *   - a TTL with the top bit set counts as 0 (RFC 2181 §8); every RR TTL is
 *     capped at DNS_CACHE_MAX_TTL when stored; an entry TTL of 0 is not cached.
 *
 * On a hit the stored answer is copied out with every RR TTL in the answer,
 * authority and additional sections lowered by the whole seconds elapsed since
 * it was stored; the OPT record is left alone (its TTL field holds the
 * extended RCODE and flags, RFC 6891 §6.1.3). The TTL walk is hand-written
 * over filter/cursor.h rather than done with ldns: ldns would parse and
 * re-serialise the whole message on every hit. The offsets of the TTL fields
 * are found once, at put, so a hit is a copy plus one store per RR.
 *
 * The copy keeps the ID and question letter case of the stored answer, and
 * the upstream's OPT: dns_answer_patch() fits it to the client's query.
 *
 * Time is a parameter (monotonic milliseconds) so tests control it. Not
 * thread-safe: one cache per event loop. Stored answers were rewritten under
 * some policy's address rules: the key's view names which, so a cache
 * outlives policy changes (reload) and is shared by every policy with the
 * same view.
 */
#ifndef MOAT_DNS_CACHE_H
#define MOAT_DNS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter/addr.h"
#include "dns/answer.h"

/* Largest answer kept: bigger ones (rare: most answers fit 1232 bytes since
 * DNS flag day 2020) are forwarded but not cached, which bounds memory at
 * cache_size x 16 KiB in the worst case (160 MiB for the default 10000). */
#define DNS_CACHE_ENTRY_MAX 16384
/* Longest an answer (and any RR TTL in it) is kept: one day. */
#define DNS_CACHE_MAX_TTL 86400u
/* Longest a negative answer is kept (RFC 2308 §5 suggests one to three hours). */
#define DNS_CACHE_MAX_NEG_TTL 3600u
/* Most entries a cache may be created with. */
#define DNS_CACHE_MAX_ENTRIES (1u << 24)
/* Most addresses kept with one entry (more are not remembered on hits). */
#define DNS_CACHE_MAX_ADDRS 64

typedef struct dns_cache dns_cache_t;

/* The lookup key: the question name in wire form with ASCII letters folded to
 * lowercase (so 0x20-randomised queries share entries), QTYPE and QCLASS.
 * Build it with one of the dns_cache_key_* functions. */
typedef struct dns_cache_key {
    /* Which filtering the stored answer went through (the caller's; 0 from
     * the dns_cache_key_* functions): answers are kept apart by view, so
     * clients whose policies filter answers differently never share one. */
    uint64_t view;
    uint16_t qtype;
    uint16_t qclass;
    uint16_t name_len; /* 1..255, root octet included */
    uint8_t name[255]; /* wire form, lowercase */
} dns_cache_key_t;

/* An address from an answer with its TTL in seconds (see dns_rewrite()). */
typedef struct dns_cache_addr {
    filter_addr_t addr;
    uint32_t ttl;
} dns_cache_addr_t;

typedef struct dns_cache_stats {
    uint64_t hits;      /* dns_cache_get found a live entry */
    uint64_t misses;    /* dns_cache_get found nothing, or an expired entry */
    uint64_t inserts;   /* dns_cache_put stored an answer (new or replacing) */
    uint64_t evictions; /* live entries dropped to make room (LRU) */
    uint64_t expired;   /* entries dropped because their TTL ran out */
    size_t entries;     /* entries held now */
    size_t max_entries; /* the bound given at create */
} dns_cache_stats_t;

/* Called once per stored address on a hit, with the TTL counted down. */
typedef void (*dns_cache_addr_cb)(const dns_cache_addr_t *a, void *arg);

/* Key from a wire-form name at name[0..avail) (it may run on: reading stops
 * at the root octet), e.g. dns_query_t's qname. Compression pointers, labels
 * over 63 octets or names over 255 octets give -EINVAL. */
int dns_cache_key_from_wire(dns_cache_key_t *k, const uint8_t *name, size_t avail, uint16_t qtype,
                            uint16_t qclass);

/* Key from a name in presentation form ("Example.COM", one trailing dot
 * optional, "" or "." for the root; no escapes). -EINVAL for empty labels,
 * labels over 63 or names over 255 wire octets. */
int dns_cache_key_from_name(dns_cache_key_t *k, const char *name, size_t len, uint16_t qtype,
                            uint16_t qclass);

/* Key from the question of a DNS message (QDCOUNT must be 1). -EINVAL otherwise. */
int dns_cache_key_from_msg(dns_cache_key_t *k, const uint8_t *msg, size_t len);

/* Create a cache of at most max_entries answers; 0 gives a disabled cache
 * (config cache_size: 0) on which put stores nothing and get always misses.
 * Returns 0, -EINVAL (over DNS_CACHE_MAX_ENTRIES) or -ENOMEM; *out NULL on error. */
int dns_cache_create(size_t max_entries, dns_cache_t **out);

/* Free the cache and every entry (NULL is fine). */
void dns_cache_free(dns_cache_t *c);

/* Store a copy of the answer wire[0..len) for k, replacing any entry for k,
 * evicting the least recently used one when full. addrs (n_addrs, may be 0
 * and addrs NULL; at most DNS_CACHE_MAX_ADDRS are kept) are copied and handed
 * back, TTLs counted down, by dns_cache_get. Bytes after the last record are
 * not stored. Returns 0 stored; -ENODATA not cacheable (see the top of this
 * file, or a disabled cache); -EMSGSIZE over DNS_CACHE_ENTRY_MAX; -EINVAL a
 * malformed answer or one whose question is not k; -ENOMEM. The caller keeps
 * ownership of wire and addrs. */
int dns_cache_put(dns_cache_t *c, const dns_cache_key_t *k, const uint8_t *wire, size_t len,
                  const dns_cache_addr_t *addrs, size_t n_addrs, uint64_t now_ms);

/* Look k up at now_ms. On a hit copies the answer into buf (cap bytes), TTLs
 * counted down, sets *len, calls cb (when not NULL) for each stored address,
 * marks the entry most recently used and returns 0. Returns -ENOENT on a miss
 * (an expired entry is removed), -ENOSPC when cap is too small (nothing
 * copied, the entry stays). *len is 0 unless 0 is returned. cb must not call
 * into this cache. */
int dns_cache_get(dns_cache_t *c, const dns_cache_key_t *k, uint64_t now_ms, uint8_t *buf,
                  size_t cap, size_t *len, dns_cache_addr_cb cb, void *arg);

/* dns_cache_get, and on a hit *scan := the dns_answer_scan of the stored
 * answer, made once when it was stored (scan->end 0 when that scan failed:
 * the caller then patches with dns_answer_patch, which refuses it too). */
int dns_cache_get_scanned(dns_cache_t *c, const dns_cache_key_t *k, uint64_t now_ms, uint8_t *buf,
                          size_t cap, size_t *len, dns_cache_addr_cb cb, void *arg,
                          dns_answer_scan_t *scan);

/* Drop every entry (on reload). Counters other than entries are kept. */
void dns_cache_clear(dns_cache_t *c);

/* Counters for the metrics endpoint. */
void dns_cache_stats(const dns_cache_t *c, dns_cache_stats_t *out);

#endif
