/* proxy/dialcache.h: the proxy's per-name dial address cache (SPEC §2.3
 * step 4: "moat resolves it itself (both families)"). docs/DECISIONS.md
 * says why it exists beside the resolver's cache and how it is bounded.
 *
 * Per name (key: the name as filter_name_normalize() leaves it; ASCII
 * letters are folded and one trailing dot dropped here too, so any spelling
 * of a name shares its entry) it keeps:
 *   - the A and AAAA addresses of the last answer (at most
 *     PX_DIALCACHE_MAX_ADDRS), unfiltered: the caller checks the refused and
 *     private ranges of SPEC §2.4 on every dial, under that connection's
 *     policy, exactly as for a fresh answer;
 *   - positive answers for min(TTL of the addresses) clamped to
 *     [PX_DIALCACHE_MIN_TTL_MS, PX_DIALCACHE_MAX_TTL_MS];
 *   - negative results (no such name, no address, SERVFAIL and other upstream
 *     errors, upstream timeout) for PX_DIALCACHE_NEG_TTL_MS, status kept.
 *     -ENOMEM and -ECANCELED are never cached.
 *
 * A dial for a name whose lookup is in flight waits on that lookup instead of
 * starting another. The waiter is embedded in the caller's object and removed
 * in O(1) when that object goes away (px_dialcache_unwait): the lookup goes
 * on and its answer is cached for the next dial.
 *
 * At most max_entries names, least recently used evicted first. An entry
 * with waiters is never evicted: when every entry has one a new name is still
 * admitted, and the excess is evicted as lookups complete.
 *
 * Callbacks: a waiter's callback is never called from inside the call that
 * queued it; it is called at most once, after the waiter has been removed,
 * and may call into the cache (including px_dialcache_unwait on other
 * waiters, and px_dialcache_free: the free is then finished when the
 * callbacks return). Single-threaded: the daemon's loop only.
 *
 * Errors: 0 or a negative errno code.
 */
#ifndef MOAT_PROXY_DIALCACHE_H
#define MOAT_PROXY_DIALCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dns/cache.h"
#include "filter/list.h"
#include "resolver/upstream.h"

/* Default size of the proxy's cache (names). */
#define PX_DIALCACHE_ENTRIES 4096
/* Most entries a cache may be created with. */
#define PX_DIALCACHE_MAX_ENTRIES (1u << 20)
/* Positive answers live min(TTL) clamped to this range. */
#define PX_DIALCACHE_MIN_TTL_MS 1000u
#define PX_DIALCACHE_MAX_TTL_MS 300000u
/* Negative results (no address, upstream failure) live this long. */
#define PX_DIALCACHE_NEG_TTL_MS 3000u
/* Most addresses kept per name (as many as the upstream client reports). */
#define PX_DIALCACHE_MAX_ADDRS DNS_UPSTREAM_MAX_ADDRS

typedef struct px_dialcache px_dialcache_t;
typedef struct px_dialcache_entry px_dialcache_entry_t;

/* A result: status 0 with the addresses (n may be 0: no such name, no
 * address), or a negative errno as dns_upstream_resolve_cb gives it
 * (-ETIMEDOUT, -ECONNREFUSED, -EIO, -ENOMEM). addrs is valid for the call
 * only. */
typedef void (*px_dialcache_cb)(void *arg, int status, const dns_cache_addr_t *addrs, size_t n);

/* One dial waiting for a lookup. Owned by the caller (embed it), zeroed or
 * set up with px_dialcache_waiter_init before first use; the fields are the
 * cache's. */
typedef struct px_dialcache_waiter {
    moat_list_t node;            /* on its entry's waiters while entry is set */
    px_dialcache_entry_t *entry; /* NULL: not waiting */
    px_dialcache_cb cb;
    void *arg;
} px_dialcache_waiter_t;

/* How the cache resolves and tells time (tests give their own).
 * start: begin resolving name[0..len) (A and AAAA); call done(done_arg, ...)
 *   later, at most once, never from inside start; *req gets a handle for
 *   cancel. 0 or a negative errno (done is then never called).
 * cancel: forget a lookup started by start whose done has not run: done is
 *   never called.
 * now: monotonic milliseconds. */
typedef struct px_dialcache_ops {
    int (*start)(void *ctx, const char *name, size_t len, dns_upstream_resolve_cb done,
                 void *done_arg, void **req);
    void (*cancel)(void *ctx, void *req);
    uint64_t (*now)(void *ctx);
    void *ctx;
} px_dialcache_ops_t;

/* A hit: the cached result, valid until the next call into the cache. */
typedef struct px_dialcache_result {
    int status;
    const dns_cache_addr_t *addrs;
    size_t n;
} px_dialcache_result_t;

typedef struct px_dialcache_stats {
    uint64_t hits;      /* answered from the cache (positive or negative) */
    uint64_t misses;    /* started a lookup */
    uint64_t coalesced; /* joined a lookup in flight */
    uint64_t evictions; /* entries dropped for room (LRU) */
    uint64_t expired;   /* entries found stale and looked up again */
    size_t entries;     /* names held (in flight or answered) */
    size_t in_flight;   /* lookups in flight, flushed ones included */
    size_t max_entries;
} px_dialcache_stats_t;

/* Create a cache of at most max_entries names (1..PX_DIALCACHE_MAX_ENTRIES)
 * using ops (copied; start, cancel and now are required). 0, -EINVAL or
 * -ENOMEM; *out NULL on error. */
int px_dialcache_create(size_t max_entries, const px_dialcache_ops_t *ops, px_dialcache_t **out);

/* Free the cache: lookups in flight are cancelled, waiters still queued are
 * dropped without their callback (remove them first: px_dialcache_unwait).
 * NULL is fine. From inside a waiter's callback the free completes when the
 * callbacks return; the cache must not be used after this call either way. */
void px_dialcache_free(px_dialcache_t *dc);

/* Make w ready for use (not waiting). */
void px_dialcache_waiter_init(px_dialcache_waiter_t *w);

/* Look name[0..len) up.
 *   0: a live entry; *out holds its result (valid until the next call into
 *      the cache); w is not used.
 *   -EINPROGRESS: w waits for a lookup (new or in flight); cb(arg, ...) will
 *      be called later unless px_dialcache_unwait(w) comes first.
 *   -EINVAL: an empty name or one over FILTER_NAME_MAX octets, or NULL
 *      arguments; -EALREADY: w is already waiting; -ENOMEM; or what
 *      ops->start returned (nothing is cached then). */
int px_dialcache_get(px_dialcache_t *dc, const char *name, size_t len, px_dialcache_waiter_t *w,
                     px_dialcache_cb cb, void *arg, px_dialcache_result_t *out);

/* Stop waiting: w's callback will not be called. A no-op when w is not
 * waiting (NULL is fine). The lookup goes on. */
void px_dialcache_unwait(px_dialcache_waiter_t *w);

/* Whether w waits for a lookup. */
bool px_dialcache_waiting(const px_dialcache_waiter_t *w);

/* Drop every answer (dns.upstream changed). A lookup in flight still
 * answers its waiters but its answer is not kept; new dials look up anew. */
void px_dialcache_flush(px_dialcache_t *dc);

/* This cache's counters (tests). Every event is also counted process-wide
 * in core/stats.h (stats_dialcache), which /metrics renders. */
void px_dialcache_stats(const px_dialcache_t *dc, px_dialcache_stats_t *out);

#endif
