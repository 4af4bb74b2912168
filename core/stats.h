/* core/stats.h: the daemon's counters, gauges and histograms (SPEC §4),
 * rendered as Prometheus text by app/metrics.c.
 *
 * One set per worker (`workers`, core/worker.h): each loop counts into its
 * own with plain adds (no lock, no locked instruction) and stats_render,
 * on the daemon's loop, sums them; the thread pool never counts. Every label is a small fixed set
 * chosen by moat, never a guest-chosen string: verdict, listener, rcode and
 * reason are enums (the reason is filter_reason_t, labelled by
 * filter_reason_str()); a value out of range is counted as "other", so the
 * number of series is bounded at compile time.
 */
#ifndef MOAT_CORE_STATS_H
#define MOAT_CORE_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter/policy.h"

/* Label "verdict": allow, block, or audit (mode: audit let through what
 * enforce would block); none: a DNS query answered with an error (FORMERR,
 * NOTIMP, REFUSED) or dropped before any policy decision. */
typedef enum stats_verdict {
    STATS_VERDICT_ALLOW,
    STATS_VERDICT_BLOCK,
    STATS_VERDICT_AUDIT,
    STATS_VERDICT_NONE,
    STATS_VERDICT_COUNT,
} stats_verdict_t;

/* Label "listener" of TCP series. */
typedef enum stats_listener {
    STATS_LISTENER_TLS,
    STATS_LISTENER_HTTP,
    STATS_LISTENER_TRANSPARENT,
    STATS_LISTENER_CONNECT,
    STATS_LISTENER_SOCKS,
    STATS_LISTENER_COUNT,
} stats_listener_t;

/* At most this many workers count apart. */
#define STATS_MAX_WORKERS 256

/* Make room for the counters of n workers (1: the daemon's loop only). On
 * the daemon's loop, before the workers' threads start. 0, -EINVAL (0 or
 * over STATS_MAX_WORKERS) or -ENOMEM. */
int stats_workers(size_t n);

/* On worker i's thread, at its start: its counts go to its own set (the
 * daemon's loop counts as worker 0 without this). */
void stats_bind_worker(size_t i);

/* The id counters use for tenant name (SPEC §2.7: the `tenant` label), 0
 * for NULL (no tenant: no label). Ids are kept for the life of the process,
 * so a tenant's counters carry over reloads. Loop thread. */
unsigned stats_tenant(const char *name);

/* A DNS query of tenant answered (or dropped: rcode < 0 when no answer went
 * out). rcode is the answer's RCODE (0..23; unassigned ones count as
 * "other"). */
void stats_dns_query(unsigned tenant, stats_verdict_t verdict, int rcode);

/* Cache lookups for allowed names. */
void stats_dns_cache(bool hit);

/* One upstream exchange finished after elapsed_us (ok false: SERVFAIL by
 * timeout or upstream error). */
void stats_dns_upstream(bool ok, uint64_t elapsed_us);

/* A TCP connection accepted on listener (active gauge +1). */
void stats_conn_open(unsigned tenant, stats_listener_t listener);

/* That connection is gone (active gauge -1). */
void stats_conn_close(unsigned tenant, stats_listener_t listener);

/* The decision for a connection, logged once per connection, with the bytes
 * it moved. */
void stats_conn_decision(unsigned tenant, stats_listener_t listener, stats_verdict_t verdict,
                         filter_reason_t reason, uint64_t bytes_up, uint64_t bytes_down);

/* A connection refused before it had a decision (max_connections, accept
 * error back-off): counted under reason. */
void stats_conn_refused(stats_listener_t listener, filter_reason_t reason);

/* Config reloads: ok or rejected. */
void stats_reload(bool ok);

/* Events of the proxy's dial address cache (proxy/dialcache.h): each dial
 * is one hit, miss or coalesced (or an error); expired and evicted entries
 * are counted besides. dialcache.c counts them next to its per-cache
 * counters, so the series are process-wide and outlive the cache (freed at
 * shutdown while /metrics still answers). */
typedef enum stats_dialcache_event {
    STATS_DIALCACHE_HIT,       /* a dial answered from the cache */
    STATS_DIALCACHE_MISS,      /* a lookup started (new name, or expired entry) */
    STATS_DIALCACHE_COALESCED, /* a dial joined a lookup in flight */
    STATS_DIALCACHE_EXPIRED,   /* an entry found stale, looked up again */
    STATS_DIALCACHE_EVICTION,  /* an entry dropped for room (LRU) */
    STATS_DIALCACHE_EVENT_COUNT,
} stats_dialcache_event_t;
void stats_dialcache(stats_dialcache_event_t ev);

/* Names held by dial caches went up (+1: admitted) or down (-1: dropped). */
void stats_dialcache_entries(int delta);

/* Render every series as Prometheus text exposition format 0.0.4 into a
 * malloc'd NUL-terminated buffer (*out, *len). Gauges owned by other modules
 * (cache entries, address memory, log drops, generation) are passed in.
 * Returns 0 or -ENOMEM. */
typedef struct stats_gauges {
    uint64_t dns_cache_entries;
    uint64_t addrmem_entries;
    uint64_t log_dropped_lines;
    uint64_t config_generation;
    double start_time_seconds; /* Unix time the process started */
} stats_gauges_t;
int stats_render(const stats_gauges_t *g, char **out, size_t *len);

/* Zero everything and forget the workers (tests). */
void stats_reset(void);

/* The reason label of a reason (tests; "other" out of range). */
const char *stats_reason_label(filter_reason_t reason);

#endif
