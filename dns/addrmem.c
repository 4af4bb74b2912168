/* dns/addrmem.c: name -> address memory per client; see addrmem.h. */
#include "dns/addrmem.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "filter/list.h"
#include "filter/name.h"
#include "filter/siphash.h"

/* An address in one canonical form, so equal addresses compare and hash
 * equal whatever the caller left in the unused bytes. */
typedef struct amem_addr {
    uint8_t family;
    uint8_t bytes[16];
} amem_addr_t;

/* The hash chains stay hand-linked (hnext, hprev): a bucket head is one
 * pointer where a moat_list_t head would double the bucket array, and
 * hprev still unlinks in O(1). */
typedef struct amem_entry {
    struct amem_entry *hnext;  /* hash chain */
    struct amem_entry **hprev; /* the pointer that points at us */
    moat_list_t lru;           /* on dns_addrmem.lru */
    uint64_t hash;
    uint64_t expiry_ms;
    amem_addr_t client;
    amem_addr_t addr;
    uint8_t name_len;
    char name[]; /* normalised, NUL-terminated */
} amem_entry_t;

struct dns_addrmem {
    amem_entry_t **buckets;
    size_t mask;
    size_t max_entries;
    moat_list_t lru; /* most recently inserted first; the last is evicted first */
    uint8_t seed[FILTER_SIPHASH_KEY_LEN];
    dns_addrmem_stats_t st;
    bool shared; /* dns_addrmem_share: every call takes lock */
    pthread_mutex_t lock;
};

/* A shared memory is read by other workers' proxies: every public call
 * holds its lock (lookups drop expired entries, so they write too). */
static void amem_lock(const dns_addrmem_t *m)
{
    if (m->shared)
        pthread_mutex_lock(&((dns_addrmem_t *)m)->lock);
}

static void amem_unlock(const dns_addrmem_t *m)
{
    if (m->shared)
        pthread_mutex_unlock(&((dns_addrmem_t *)m)->lock);
}

static bool amem_addr_canon(const filter_addr_t *in, amem_addr_t *out)
{
    memset(out, 0, sizeof *out);
    if (in == NULL)
        return false;
    out->family = in->family;
    if (in->family == AF_INET)
        memcpy(out->bytes, in->bytes, 4);
    else if (in->family == AF_INET6)
        memcpy(out->bytes, in->bytes, 16);
    else
        return false;
    return true;
}

static bool amem_addr_eq(const amem_addr_t *a, const amem_addr_t *b)
{
    return a->family == b->family && memcmp(a->bytes, b->bytes, sizeof a->bytes) == 0;
}

static uint64_t amem_hash(const dns_addrmem_t *m, const amem_addr_t *client,
                          const amem_addr_t *addr)
{
    uint8_t buf[2 * sizeof(amem_addr_t)];
    memcpy(buf, client, sizeof *client);
    memcpy(buf + sizeof *client, addr, sizeof *addr);
    return filter_siphash(m->seed, buf, sizeof buf);
}

static void amem_remove(dns_addrmem_t *m, amem_entry_t *e)
{
    *e->hprev = e->hnext;
    if (e->hnext)
        e->hnext->hprev = e->hprev;
    moat_list_remove(&e->lru);
    m->st.entries--;
    free(e);
}

int dns_addrmem_create(size_t max_entries, dns_addrmem_t **out)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (max_entries > DNS_ADDRMEM_MAX_ENTRIES)
        return -EINVAL;
    dns_addrmem_t *m = calloc(1, sizeof *m);
    if (m == NULL)
        return -ENOMEM;
    size_t n = 16;
    while (n < max_entries)
        n <<= 1;
    m->buckets = calloc(max_entries ? n : 1, sizeof *m->buckets);
    if (m->buckets == NULL) {
        free(m);
        return -ENOMEM;
    }
    m->mask = max_entries ? n - 1 : 0;
    m->max_entries = max_entries;
    m->st.max_entries = max_entries;
    moat_list_init(&m->lru);
    filter_siphash_key(m->seed, m);
    *out = m;
    return 0;
}

static void amem_clear_locked(dns_addrmem_t *m)
{
    moat_list_foreach_safe(it, nx, &m->lru) amem_remove(m, container_of(it, amem_entry_t, lru));
}

void dns_addrmem_clear(dns_addrmem_t *m)
{
    if (m == NULL)
        return;
    amem_lock(m);
    amem_clear_locked(m);
    amem_unlock(m);
}

void dns_addrmem_share(dns_addrmem_t *m)
{
    if (m == NULL || m->shared)
        return;
    pthread_mutex_init(&m->lock, NULL);
    m->shared = true;
}

void dns_addrmem_free(dns_addrmem_t *m)
{
    if (m == NULL)
        return;
    amem_clear_locked(m);
    if (m->shared)
        pthread_mutex_destroy(&m->lock);
    free(m->buckets);
    free(m);
}

/* dns_addrmem_put_normalized, its lock held: norm[0..nlen) normalised. */
__attribute__((always_inline)) static inline int
amem_put_locked(dns_addrmem_t *m, const filter_addr_t *client, const char *norm, size_t nlen,
                const filter_addr_t *addr, uint32_t ttl_s, uint64_t now_ms)
{
    amem_addr_t c, a;
    if (!amem_addr_canon(client, &c) || !amem_addr_canon(addr, &a))
        return -EINVAL;
    if (m->max_entries == 0)
        return -ENODATA;
    if (ttl_s < DNS_ADDRMEM_MIN_TTL)
        ttl_s = DNS_ADDRMEM_MIN_TTL;
    if (ttl_s > DNS_ADDRMEM_MAX_TTL)
        ttl_s = DNS_ADDRMEM_MAX_TTL;
    uint64_t expiry = now_ms + (uint64_t)ttl_s * 1000;

    uint64_t h = amem_hash(m, &c, &a);
    amem_entry_t **b = &m->buckets[h & m->mask];
    amem_entry_t *soonest = NULL;
    size_t same = 0;
    for (amem_entry_t *e = *b, *nx; e; e = nx) {
        nx = e->hnext;
        if (e->hash != h || !amem_addr_eq(&e->client, &c) || !amem_addr_eq(&e->addr, &a))
            continue;
        if (e->expiry_ms <= now_ms) {
            amem_remove(m, e);
            m->st.expired++;
            continue;
        }
        if (e->name_len == nlen && memcmp(e->name, norm, nlen) == 0) {
            if (expiry > e->expiry_ms)
                e->expiry_ms = expiry;
            moat_list_remove(&e->lru);
            moat_list_push(&m->lru, &e->lru);
            m->st.refreshes++;
            return 0;
        }
        same++;
        if (soonest == NULL || e->expiry_ms < soonest->expiry_ms)
            soonest = e;
    }

    amem_entry_t *e = malloc(sizeof *e + nlen + 1);
    if (e == NULL)
        return -ENOMEM;
    memset(e, 0, sizeof *e);
    e->hash = h;
    e->expiry_ms = expiry;
    e->client = c;
    e->addr = a;
    e->name_len = (uint8_t)nlen;
    memcpy(e->name, norm, nlen + 1);

    if (same >= DNS_ADDRMEM_MAX_NAMES) {
        amem_remove(m, soonest);
        m->st.evictions++;
    } else if (m->st.entries >= m->max_entries) {
        amem_entry_t *t = container_of(m->lru.prev, amem_entry_t, lru);
        if (t->expiry_ms <= now_ms)
            m->st.expired++;
        else
            m->st.evictions++;
        amem_remove(m, t);
    }
    e->hnext = *b;
    if (*b)
        (*b)->hprev = &e->hnext;
    e->hprev = b;
    *b = e;
    moat_list_push(&m->lru, &e->lru);
    m->st.entries++;
    m->st.inserts++;
    return 0;
}

static bool amem_check_locked(dns_addrmem_t *m, const filter_addr_t *client, const char *name,
                              size_t len, const filter_addr_t *addr, uint64_t now_ms)
{
    if (m == NULL || name == NULL)
        return false;
    amem_addr_t c, a;
    char norm[FILTER_NAME_MAX + 1];
    size_t nlen;
    if (!amem_addr_canon(client, &c) || !amem_addr_canon(addr, &a) ||
        filter_name_normalize(name, len, norm, &nlen) != 0) {
        m->st.misses++;
        return false;
    }
    uint64_t h = amem_hash(m, &c, &a);
    for (amem_entry_t *e = m->buckets[h & m->mask], *nx; e; e = nx) {
        nx = e->hnext;
        if (e->hash != h || !amem_addr_eq(&e->client, &c) || !amem_addr_eq(&e->addr, &a))
            continue;
        if (e->expiry_ms <= now_ms) {
            amem_remove(m, e);
            m->st.expired++;
            continue;
        }
        if (e->name_len == nlen && memcmp(e->name, norm, nlen) == 0) {
            m->st.hits++;
            return true;
        }
    }
    m->st.misses++;
    return false;
}

static size_t amem_names_for_locked(dns_addrmem_t *m, const filter_addr_t *client,
                                    const filter_addr_t *addr, uint64_t now_ms,
                                    dns_addrmem_name_cb cb, void *arg)
{
    if (m == NULL || cb == NULL)
        return 0;
    amem_addr_t c, a;
    if (!amem_addr_canon(client, &c) || !amem_addr_canon(addr, &a))
        return 0;
    uint64_t h = amem_hash(m, &c, &a);
    size_t calls = 0;
    for (amem_entry_t *e = m->buckets[h & m->mask], *nx; e; e = nx) {
        nx = e->hnext;
        if (e->hash != h || !amem_addr_eq(&e->client, &c) || !amem_addr_eq(&e->addr, &a))
            continue;
        if (e->expiry_ms <= now_ms) {
            amem_remove(m, e);
            m->st.expired++;
            continue;
        }
        calls++;
        if (!cb(e->name, e->name_len, e->expiry_ms, arg))
            break;
    }
    return calls;
}

int dns_addrmem_put(dns_addrmem_t *m, const filter_addr_t *client, const char *name, size_t len,
                    const filter_addr_t *addr, uint32_t ttl_s, uint64_t now_ms)
{
    char norm[FILTER_NAME_MAX + 1];
    size_t nlen;
    if (m == NULL || name == NULL || filter_name_normalize(name, len, norm, &nlen) != 0)
        return -EINVAL;
    return dns_addrmem_put_normalized(m, client, norm, nlen, addr, ttl_s, now_ms);
}

int dns_addrmem_put_normalized(dns_addrmem_t *m, const filter_addr_t *client, const char *norm,
                               size_t len, const filter_addr_t *addr, uint32_t ttl_s,
                               uint64_t now_ms)
{
    if (m == NULL || norm == NULL || len == 0 || len > FILTER_NAME_MAX)
        return -EINVAL;
    amem_lock(m);
    int rc = amem_put_locked(m, client, norm, len, addr, ttl_s, now_ms);
    amem_unlock(m);
    return rc;
}

bool dns_addrmem_check(dns_addrmem_t *m, const filter_addr_t *client, const char *name, size_t len,
                       const filter_addr_t *addr, uint64_t now_ms)
{
    if (m == NULL || name == NULL)
        return false;
    amem_lock(m);
    bool ok = amem_check_locked(m, client, name, len, addr, now_ms);
    amem_unlock(m);
    return ok;
}

size_t dns_addrmem_names_for(dns_addrmem_t *m, const filter_addr_t *client,
                             const filter_addr_t *addr, uint64_t now_ms, dns_addrmem_name_cb cb,
                             void *arg)
{
    if (m == NULL || cb == NULL)
        return 0;
    amem_lock(m);
    size_t calls = amem_names_for_locked(m, client, addr, now_ms, cb, arg);
    amem_unlock(m);
    return calls;
}

void dns_addrmem_stats(const dns_addrmem_t *m, dns_addrmem_stats_t *out)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof *out);
    if (m == NULL)
        return;
    amem_lock(m);
    *out = m->st;
    amem_unlock(m);
}
