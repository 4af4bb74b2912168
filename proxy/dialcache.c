/* proxy/dialcache.c: the proxy's per-name dial address cache; see dialcache.h.
 *
 * An entry is in one of these places:
 *   - the hash (its name can be found), and then also on the LRU list when
 *     nothing pins it (no waiters, not calling waiters back): only LRU
 *     entries may be evicted;
 *   - the detached list: flushed while its lookup was in flight or while it
 *     was calling its waiters back; it is freed once that is over (or at once
 *     when its last waiter leaves before the answer).
 * The LRU and the waiters are filter/list.h lists. The hash chains and the
 * detached list share the hand-linked hnext/hprev: a bucket head is one
 * pointer where a moat_list_t head would double the bucket array, and hprev
 * still unlinks in O(1).
 * An entry has a lookup in flight (req set) or a result (status, addrs,
 * expiry), never both.
 */
#include "proxy/dialcache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "filter/name.h"
#include "filter/siphash.h"
#include "core/stats.h"

struct px_dialcache_entry {
    px_dialcache_t *dc;
    px_dialcache_entry_t *hnext;  /* hash chain, or the detached list */
    px_dialcache_entry_t **hprev; /* the pointer that points at us */
    moat_list_t lru;              /* on dc->lru when nothing pins it */
    moat_list_t waiters;          /* px_dialcache_waiter_t.node, in arrival order */
    size_t n_waiters;
    void *req; /* the lookup in flight */
    uint64_t hash;
    uint64_t expiry_ms;
    int status;
    size_t n;
    dns_cache_addr_t *own;         /* the stored addresses (malloc'd) */
    const dns_cache_addr_t *addrs; /* own, or the answer's while calling back */
    bool in_hash;
    bool busy; /* calling its waiters back */
    size_t name_len;
    char name[]; /* folded, not NUL-terminated */
};

struct px_dialcache {
    px_dialcache_ops_t ops;
    px_dialcache_entry_t **buckets;
    size_t mask; /* bucket count - 1 (a power of two) */
    size_t max_entries;
    size_t n_entries; /* in the hash */
    size_t n_flight;
    moat_list_t lru; /* most recently used first; the last is evicted first */
    px_dialcache_entry_t *detached;
    unsigned depth; /* waiter callbacks running (nested) */
    bool dead;      /* freed from inside a callback: finish when depth is 0 */
    uint8_t seed[FILTER_SIPHASH_KEY_LEN];
    px_dialcache_stats_t st;
};

/* The key: ASCII letters folded, one trailing dot dropped, 1..FILTER_NAME_MAX
 * octets. Returns its length, or 0 when the name cannot be a key. */
static size_t dc_key(const char *name, size_t len, char out[FILTER_NAME_MAX])
{
    if (len > FILTER_NAME_MAX + 1)
        return 0;
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > FILTER_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        out[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
    }
    return len;
}

/* ---- lists ---------------------------------------------------------------------- */

/* Put e on the LRU list (at the front) when nothing pins it, else take it off. */
static void dc_lru_sync(px_dialcache_entry_t *e)
{
    bool want = e->in_hash && !e->busy && e->n_waiters == 0;
    if (want && e->dc->lru.next == &e->lru)
        return;
    moat_list_remove(&e->lru);
    if (want)
        moat_list_push(&e->dc->lru, &e->lru);
}

static void dc_list_insert(px_dialcache_entry_t **head, px_dialcache_entry_t *e)
{
    e->hnext = *head;
    if (*head)
        (*head)->hprev = &e->hnext;
    e->hprev = head;
    *head = e;
}

static void dc_list_remove(px_dialcache_entry_t *e)
{
    *e->hprev = e->hnext;
    if (e->hnext)
        e->hnext->hprev = e->hprev;
    e->hnext = NULL;
    e->hprev = NULL;
}

static px_dialcache_entry_t *dc_find(const px_dialcache_t *dc, const char *key, size_t len,
                                     uint64_t h)
{
    for (px_dialcache_entry_t *e = dc->buckets[h & dc->mask]; e; e = e->hnext)
        if (e->hash == h && e->name_len == len && memcmp(e->name, key, len) == 0)
            return e;
    return NULL;
}

/* ---- entries ---------------------------------------------------------------------- */

static void dc_waiter_append(px_dialcache_entry_t *e, px_dialcache_waiter_t *w, px_dialcache_cb cb,
                             void *arg)
{
    w->entry = e;
    w->cb = cb;
    w->arg = arg;
    moat_list_append(&e->waiters, &w->node);
    e->n_waiters++;
}

static void dc_waiter_unlink(px_dialcache_waiter_t *w)
{
    px_dialcache_entry_t *e = w->entry;
    moat_list_remove(&w->node);
    w->entry = NULL;
    e->n_waiters--;
}

/* Remove e wherever it is, cancel its lookup, free it. Its waiters (only at
 * free) are dropped without a callback. */
static void dc_drop(px_dialcache_entry_t *e)
{
    px_dialcache_t *dc = e->dc;
    moat_list_foreach_safe(it, nx, &e->waiters)
        dc_waiter_unlink(container_of(it, px_dialcache_waiter_t, node));
    if (e->req) {
        void *req = e->req;
        e->req = NULL;
        dc->n_flight--;
        dc->ops.cancel(dc->ops.ctx, req);
    }
    moat_list_remove(&e->lru);
    dc_list_remove(e);
    if (e->in_hash) {
        e->in_hash = false;
        dc->n_entries--;
        stats_dialcache_entries(-1);
    }
    free(e->own);
    free(e);
}

/* Evict least recently used entries while over the bound (extra: room for
 * that many more). */
static void dc_trim(px_dialcache_t *dc, size_t extra)
{
    while (!moat_list_empty(&dc->lru) && dc->n_entries + extra > dc->max_entries) {
        dc->st.evictions++;
        stats_dialcache(STATS_DIALCACHE_EVICTION);
        dc_drop(container_of(dc->lru.prev, px_dialcache_entry_t, lru));
    }
}

static void dc_destroy(px_dialcache_t *dc)
{
    for (size_t b = 0; b <= dc->mask; b++)
        while (dc->buckets[b])
            dc_drop(dc->buckets[b]);
    while (dc->detached)
        dc_drop(dc->detached);
    free(dc->buckets);
    free(dc);
}

static uint64_t dc_expiry(uint64_t now, int status, const dns_cache_addr_t *addrs, size_t n)
{
    if (status != 0 || n == 0)
        return now + PX_DIALCACHE_NEG_TTL_MS;
    uint32_t ttl = UINT32_MAX;
    for (size_t i = 0; i < n; i++)
        if (addrs[i].ttl < ttl)
            ttl = addrs[i].ttl;
    uint64_t ms = (uint64_t)ttl * 1000u;
    if (ms < PX_DIALCACHE_MIN_TTL_MS)
        ms = PX_DIALCACHE_MIN_TTL_MS;
    if (ms > PX_DIALCACHE_MAX_TTL_MS)
        ms = PX_DIALCACHE_MAX_TTL_MS;
    return now + ms;
}

/* The lookup of e answered: keep the result (unless flushed or not worth
 * keeping), then call every waiter back. */
static void dc_done_cb(void *arg, int status, const dns_cache_addr_t *addrs, size_t n)
{
    px_dialcache_entry_t *e = arg;
    px_dialcache_t *dc = e->dc;
    e->req = NULL;
    dc->n_flight--;
    e->busy = true;
    dc_lru_sync(e);

    if (status != 0 || !addrs)
        n = 0;
    if (n > PX_DIALCACHE_MAX_ADDRS)
        n = PX_DIALCACHE_MAX_ADDRS;
    bool keep = e->in_hash && status != -ENOMEM && status != -ECANCELED;
    e->status = status;
    e->n = n;
    e->own = NULL;
    e->addrs = n ? addrs : NULL;
    if (n && keep) {
        e->own = malloc(n * sizeof *e->own);
        if (e->own) {
            memcpy(e->own, addrs, n * sizeof *e->own);
            e->addrs = e->own;
        } else {
            keep = false; /* the waiters still get the answer */
        }
    }
    e->expiry_ms = dc_expiry(dc->ops.now(dc->ops.ctx), status, addrs, n);

    /* A callback may remove other waiters (closing other connections), ask
     * for other names (evicting other entries: not this one, it is busy),
     * flush (this one goes to the detached list) or free the cache. */
    dc->depth++;
    while (!moat_list_empty(&e->waiters) && !dc->dead) {
        px_dialcache_waiter_t *w = container_of(e->waiters.next, px_dialcache_waiter_t, node);
        px_dialcache_cb cb = w->cb;
        void *warg = w->arg;
        dc_waiter_unlink(w);
        cb(warg, e->status, e->addrs, e->n);
    }
    dc->depth--;
    e->busy = false;
    if (!e->own) {
        e->addrs = NULL; /* the answer's array is gone after this call */
        e->n = 0;
    }
    if (dc->dead) {
        if (dc->depth == 0)
            dc_destroy(dc);
        return;
    }
    if (!keep || !e->in_hash) {
        dc_drop(e);
        return;
    }
    dc_lru_sync(e);
    dc_trim(dc, 0);
}

/* Begin a lookup for e (a new entry, or an expired one being reused). */
static int dc_start(px_dialcache_t *dc, px_dialcache_entry_t *e)
{
    void *req = NULL;
    int rc = dc->ops.start(dc->ops.ctx, e->name, e->name_len, dc_done_cb, e, &req);
    if (rc != 0)
        return rc < 0 ? rc : -EIO;
    e->req = req;
    dc->n_flight++;
    dc->st.misses++;
    stats_dialcache(STATS_DIALCACHE_MISS);
    return 0;
}

/* ---- public ---------------------------------------------------------------------- */

int px_dialcache_create(size_t max_entries, const px_dialcache_ops_t *ops, px_dialcache_t **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!ops || !ops->start || !ops->cancel || !ops->now || max_entries == 0 ||
        max_entries > PX_DIALCACHE_MAX_ENTRIES)
        return -EINVAL;
    px_dialcache_t *dc = calloc(1, sizeof *dc);
    if (!dc)
        return -ENOMEM;
    size_t nb = 16;
    while (nb < max_entries)
        nb <<= 1;
    dc->buckets = calloc(nb, sizeof *dc->buckets);
    if (!dc->buckets) {
        free(dc);
        return -ENOMEM;
    }
    dc->mask = nb - 1;
    dc->max_entries = max_entries;
    dc->ops = *ops;
    moat_list_init(&dc->lru);
    filter_siphash_key(dc->seed, dc);
    *out = dc;
    return 0;
}

void px_dialcache_free(px_dialcache_t *dc)
{
    if (!dc || dc->dead)
        return;
    dc->dead = true;
    if (dc->depth == 0)
        dc_destroy(dc);
}

void px_dialcache_waiter_init(px_dialcache_waiter_t *w)
{
    memset(w, 0, sizeof *w);
    moat_list_init(&w->node);
}

bool px_dialcache_waiting(const px_dialcache_waiter_t *w)
{
    return w && w->entry;
}

int px_dialcache_get(px_dialcache_t *dc, const char *name, size_t len, px_dialcache_waiter_t *w,
                     px_dialcache_cb cb, void *arg, px_dialcache_result_t *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!dc || !name || !w || !cb || !out || dc->dead)
        return -EINVAL;
    if (w->entry)
        return -EALREADY;
    char key[FILTER_NAME_MAX];
    size_t klen = dc_key(name, len, key);
    if (klen == 0)
        return -EINVAL;
    uint64_t h = filter_siphash(dc->seed, (const uint8_t *)key, klen);
    px_dialcache_entry_t *e = dc_find(dc, key, klen, h);
    if (e && e->req) { /* in flight: join it */
        dc->st.coalesced++;
        stats_dialcache(STATS_DIALCACHE_COALESCED);
        dc_waiter_append(e, w, cb, arg);
        dc_lru_sync(e);
        return -EINPROGRESS;
    }
    if (e && (e->busy || dc->ops.now(dc->ops.ctx) < e->expiry_ms)) {
        /* A busy entry's answer has just arrived: as fresh as it gets. */
        dc->st.hits++;
        stats_dialcache(STATS_DIALCACHE_HIT);
        dc_lru_sync(e);
        out->status = e->status;
        out->addrs = e->addrs;
        out->n = e->n;
        return 0;
    }
    if (e) { /* expired: look it up again in place */
        dc->st.expired++;
        stats_dialcache(STATS_DIALCACHE_EXPIRED);
        free(e->own);
        e->own = NULL;
        e->addrs = NULL;
        e->n = 0;
        int rc = dc_start(dc, e);
        if (rc != 0) {
            dc_drop(e);
            return rc;
        }
        dc_waiter_append(e, w, cb, arg);
        dc_lru_sync(e);
        return -EINPROGRESS;
    }
    dc_trim(dc, 1);
    e = calloc(1, sizeof *e + klen);
    if (!e)
        return -ENOMEM;
    e->dc = dc;
    moat_list_init(&e->lru);
    moat_list_init(&e->waiters);
    e->hash = h;
    e->name_len = klen;
    memcpy(e->name, key, klen);
    int rc = dc_start(dc, e);
    if (rc != 0) {
        free(e);
        return rc;
    }
    dc_list_insert(&dc->buckets[h & dc->mask], e);
    e->in_hash = true;
    dc->n_entries++;
    stats_dialcache_entries(1);
    dc_waiter_append(e, w, cb, arg);
    return -EINPROGRESS;
}

void px_dialcache_unwait(px_dialcache_waiter_t *w)
{
    if (!w || !w->entry)
        return;
    px_dialcache_entry_t *e = w->entry;
    px_dialcache_t *dc = e->dc;
    dc_waiter_unlink(w);
    if (e->busy || e->n_waiters > 0 || dc->dead)
        return;
    if (!e->in_hash) { /* flushed: nobody wants its answer any more */
        dc_drop(e);
        return;
    }
    /* Unpinned: evictable again; the lookup goes on for the next dial. */
    dc_lru_sync(e);
    dc_trim(dc, 0);
}

void px_dialcache_flush(px_dialcache_t *dc)
{
    if (!dc || dc->dead)
        return;
    for (size_t b = 0; b <= dc->mask; b++) {
        while (dc->buckets[b]) {
            px_dialcache_entry_t *e = dc->buckets[b];
            if (!e->req && !e->busy) {
                dc_drop(e);
                continue;
            }
            if (e->req && e->n_waiters == 0) {
                dc_drop(e); /* cancels the lookup */
                continue;
            }
            moat_list_remove(&e->lru);
            dc_list_remove(e);
            e->in_hash = false;
            dc->n_entries--;
            stats_dialcache_entries(-1);
            dc_list_insert(&dc->detached, e);
        }
    }
}

void px_dialcache_stats(const px_dialcache_t *dc, px_dialcache_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!dc)
        return;
    *out = dc->st;
    out->entries = dc->n_entries;
    out->in_flight = dc->n_flight;
    out->max_entries = dc->max_entries;
}
