/* dns/addrmem.h: which names each client resolved to which addresses,
 * through moat, and until when (SPEC §2.2 last bullet, §2.3 step 3).
 *
 * The resolver remembers (client, name, address, expiry) for every A/AAAA
 * address it hands out for an allowed name, whether from upstream or from
 * the cache. The proxy asks, for a connection to an address on a port that is
 * neither a TLS nor an HTTP port, which names this client resolved to that
 * address, and admits the connection when a name rule lists the port for one
 * of them.
 *
 * Entries are hashed by (client, address) with a keyed SipHash, so both
 * questions (the proxy's "which names?" and "this name?") walk one short
 * chain. Bounds:
 *   - max_entries overall, given at create; when full, the least recently
 *     inserted or refreshed entry is evicted (O(1));
 *   - DNS_ADDRMEM_MAX_NAMES names per (client, address): beyond that the one
 *     closest to expiry is dropped, so a guest resolving thousands of names
 *     that share one address cannot make a lookup slow.
 * Expired entries are never returned; they are dropped when a lookup meets
 * them or when eviction reaches them.
 *
 * Names are stored normalised (filter_name_normalize: lowercase, no trailing
 * dot); every function taking a name normalises it first.
 *
 * Expiry: now + TTL, but never less than DNS_ADDRMEM_MIN_TTL seconds, so an
 * answer with TTL 0 (or a cached one about to expire) still lets the client
 * connect right after resolving; never more than DNS_ADDRMEM_MAX_TTL.
 * Re-inserting a triple keeps the later of the two expiries: the client may
 * still use the earlier answer until its own TTL runs out.
 *
 * Time is a parameter (monotonic milliseconds). One per event loop, not
 * thread-safe, unless shared (dns_addrmem_share): then every call holds the
 * memory's own lock, so other workers' proxies may read it (`workers`: a
 * guest's DNS answer and its connection may land on different loops). The
 * owner's lock is uncontended but for those reads.
 */
#ifndef MOAT_DNS_ADDRMEM_H
#define MOAT_DNS_ADDRMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter/addr.h"

#define DNS_ADDRMEM_MIN_TTL     5u     /* seconds */
#define DNS_ADDRMEM_MAX_TTL     86400u /* seconds, as the cache's cap */
#define DNS_ADDRMEM_MAX_NAMES   32     /* names per (client, address) */
#define DNS_ADDRMEM_MAX_ENTRIES (1u << 24)

typedef struct dns_addrmem dns_addrmem_t;

typedef struct dns_addrmem_stats {
    uint64_t inserts;   /* new triples */
    uint64_t refreshes; /* triples inserted again */
    uint64_t evictions; /* live entries dropped for room (global or per-address bound) */
    uint64_t expired;   /* entries dropped because they expired */
    uint64_t hits;      /* dns_addrmem_check answered true */
    uint64_t misses;    /* dns_addrmem_check answered false */
    size_t entries;     /* held now */
    size_t max_entries;
} dns_addrmem_stats_t;

/* Called by dns_addrmem_names_for for each live name (NUL-terminated,
 * normalised, valid for the call only). Return false to stop. Must not call
 * into the same address memory. */
typedef bool (*dns_addrmem_name_cb)(const char *name, size_t len, uint64_t expiry_ms, void *arg);

/* Create a memory of at most max_entries triples; 0 gives one that remembers
 * nothing. Returns 0, -EINVAL (over DNS_ADDRMEM_MAX_ENTRIES) or -ENOMEM;
 * *out NULL on error. */
int dns_addrmem_create(size_t max_entries, dns_addrmem_t **out);

/* Free it and every entry (NULL is fine). */
void dns_addrmem_free(dns_addrmem_t *m);

/* Remember that client resolved name to addr, with the answer's TTL (seconds)
 * at now_ms. Returns 0; -EINVAL for a name that does not normalise or an
 * address family other than AF_INET/AF_INET6; -ENODATA when max_entries is 0;
 * -ENOMEM. */
int dns_addrmem_put(dns_addrmem_t *m, const filter_addr_t *client, const char *name, size_t len,
                    const filter_addr_t *addr, uint32_t ttl_s, uint64_t now_ms);

/* dns_addrmem_put for a name filter_name_normalize() already returned (the
 * resolver has it from the query parser: dns_query_t.lname); not checked
 * again but for its length. */
int dns_addrmem_put_normalized(dns_addrmem_t *m, const filter_addr_t *client, const char *norm,
                               size_t len, const filter_addr_t *addr, uint32_t ttl_s,
                               uint64_t now_ms);

/* True when client resolved name to addr through moat and that has not
 * expired at now_ms. */
bool dns_addrmem_check(dns_addrmem_t *m, const filter_addr_t *client, const char *name, size_t len,
                       const filter_addr_t *addr, uint64_t now_ms);

/* Call cb for every name client resolved to addr that is live at now_ms (in
 * no particular order) until cb returns false. Returns how many calls were
 * made. */
size_t dns_addrmem_names_for(dns_addrmem_t *m, const filter_addr_t *client,
                             const filter_addr_t *addr, uint64_t now_ms, dns_addrmem_name_cb cb,
                             void *arg);

/* Forget everything (e.g. on reload). Counters other than entries are kept. */
void dns_addrmem_clear(dns_addrmem_t *m);

/* From now on every call on m holds its lock: any thread may call them.
 * Before other threads can see m. */
void dns_addrmem_share(dns_addrmem_t *m);

/* Counters for the metrics endpoint. */
void dns_addrmem_stats(const dns_addrmem_t *m, dns_addrmem_stats_t *out);

#endif
