/* core/stats.c: the daemon's counters and their Prometheus text rendering
 * (see stats.h, docs/METRICS.md).
 *
 * Every label value is an index into a table below, so the set of series is
 * fixed at compile time whatever the guests send. Multi-label families with a
 * reason or rcode label render only the combinations that have been counted
 * (most of the product is meaningless: an allowed connection with reason
 * no-sni); the small fixed families render every member, zeros included.
 */
#include "core/stats.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const stats_verdict_names[STATS_VERDICT_COUNT] = {"allow", "block", "audit",
                                                                     "none"};
static const char *const stats_listener_names[STATS_LISTENER_COUNT] = {"tls", "http", "transparent",
                                                                       "connect", "socks"};

/* The reason label: filter_reason_str() for every filter_reason_t (in that
 * enum's order), then "other" for a value out of range. */
#define STATS_N_REASONS    (FILTER_REASON_COUNT + 1)
#define STATS_REASON_OTHER FILTER_REASON_COUNT

/* RFC 1035 §4.1.1, RFC 6895 §2.3 (IANA "DNS RCODEs"): 12..15 are
 * unassigned. Index STATS_RCODE_OTHER: anything else; STATS_RCODE_NONE: no
 * answer went out. */
static const char *const stats_rcode_names[] = {
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN",  "NOTIMP",  "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE",  "DSOTYPENI", NULL,      NULL,      NULL,       NULL,
    "BADVERS", "BADKEY",  "BADTIME",  "BADMODE",   "BADNAME", "BADALG",  "BADTRUNC", "BADCOOKIE"};
#define STATS_N_RCODE_NAMES (sizeof stats_rcode_names / sizeof stats_rcode_names[0])
#define STATS_RCODE_OTHER   STATS_N_RCODE_NAMES
#define STATS_RCODE_NONE    (STATS_N_RCODE_NAMES + 1)
#define STATS_N_RCODES      (STATS_N_RCODE_NAMES + 2)

/* Upstream latency buckets (upper bounds, microseconds): 0.5 ms to 5 s; a
 * dns.timeout past 5 s lands in +Inf. */
static const uint64_t stats_buckets_us[] = {500,    1000,   2500,   5000,    10000,   25000,  50000,
                                            100000, 250000, 500000, 1000000, 2500000, 5000000};
#define STATS_N_BUCKETS (sizeof stats_buckets_us / sizeof stats_buckets_us[0])

enum { STATS_UP, STATS_DOWN };
enum { STATS_OK, STATS_ERROR };

/* The counters a tenant label splits (SPEC §2.7): one block per tenant that
 * has counted anything, allocated at its first count (3.8 KB), so the
 * memory follows the tenants in use, not the tenants configured. Block 0 is
 * the clients of no tenant: their series carry no tenant label. */
typedef struct stats_tenant {
    uint64_t dns_queries[STATS_VERDICT_COUNT][STATS_N_RCODES];
    uint64_t conns[STATS_LISTENER_COUNT][STATS_VERDICT_COUNT][STATS_N_REASONS];
    int64_t active[STATS_LISTENER_COUNT];
} stats_tenant_t;

/* Tenant names seen in any config so far, ids 1.. (never forgotten while
 * the process runs, so a reload keeps a tenant's counters; the set is
 * bounded by the configs the operator loads). An open-addressing hash
 * name -> id. Written and read by the daemon's loop only (moat_gen_publish
 * and the rendering): workers see ids, never this. */
static struct {
    char **names;    /* [id], names[0] NULL */
    size_t n, cap;   /* ids in use (with 0), slots of names */
    unsigned *slots; /* hash slots: an id, 0 empty */
    size_t n_slots;  /* a power of two, at least twice n */
} stats_t;

/* The counters without a tenant label. */
typedef struct stats_counts {
    uint64_t cache_hits, cache_misses;
    uint64_t upstream[2];
    uint64_t upstream_bucket[STATS_N_BUCKETS + 1]; /* per bucket, not cumulative; last: +Inf */
    uint64_t upstream_sum_us;
    uint64_t bytes[STATS_LISTENER_COUNT][2];
    uint64_t refused[STATS_LISTENER_COUNT][STATS_N_REASONS];
    uint64_t reloads[2];
    uint64_t dialcache[STATS_DIALCACHE_EVENT_COUNT];
    int64_t dialcache_entries;
} stats_counts_t;

/* One worker's counters (shard 0: the daemon's own loop). Only the worker's
 * thread writes them, so a count is a plain add with no lock and no locked
 * instruction: a relaxed atomic load and store (STATS_ADD), which the
 * rendering thread may read at any time without tearing. The lock guards
 * only the block table, which the owner grows and the rendering walks. */
typedef struct stats_shard {
    pthread_mutex_t lock;
    stats_tenant_t **blocks; /* [tenant id], NULL until the tenant counts here */
    size_t cap;
    stats_tenant_t none; /* block 0 */
    stats_counts_t c;
} stats_shard_t;

#define STATS_ADD(field, n)                                                                        \
    __atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#define STATS_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* stats_t.n for the workers: an id at or past it is no tenant's. */
static size_t stats_ids;

static stats_shard_t stats_main = {.lock = PTHREAD_MUTEX_INITIALIZER};
static stats_shard_t *stats_shards[STATS_MAX_WORKERS] = {&stats_main};
static size_t stats_n_shards = 1;
/* The shard of the calling thread: the daemon's loop and any thread not
 * bound (the thread pool never counts) use shard 0. initial-exec: the
 * library is linked into the program, so the variable is at a fixed offset
 * from the thread pointer (one load), not found through __tls_get_addr,
 * which the position-independent default would call on every count. */
static _Thread_local stats_shard_t *stats_self __attribute__((tls_model("initial-exec"))) =
    &stats_main;

static size_t stats_reason_index(filter_reason_t reason)
{
    return (unsigned)reason < FILTER_REASON_COUNT ? (size_t)reason : STATS_REASON_OTHER;
}

static const char *stats_reason_name(size_t i)
{
    return i < FILTER_REASON_COUNT ? filter_reason_str((filter_reason_t)i) : "other";
}

const char *stats_reason_label(filter_reason_t reason)
{
    return stats_reason_name(stats_reason_index(reason));
}

static size_t stats_rcode_index(int rcode)
{
    if (rcode < 0)
        return STATS_RCODE_NONE;
    if ((size_t)rcode < STATS_N_RCODE_NAMES && stats_rcode_names[rcode])
        return (size_t)rcode;
    return STATS_RCODE_OTHER;
}

static const char *stats_rcode_label(size_t i)
{
    if (i == STATS_RCODE_NONE)
        return "none";
    if (i == STATS_RCODE_OTHER)
        return "other";
    return stats_rcode_names[i];
}

static uint64_t stats_name_hash(const char *name)
{
    uint64_t h = 14695981039346656037ull;
    for (; *name; name++)
        h = (h ^ (uint8_t)*name) * 1099511628211ull;
    return h;
}

/* Rehash into n_slots slots (a power of two). 0 or -ENOMEM. */
static int stats_tenant_rehash(size_t n_slots)
{
    unsigned *slots = calloc(n_slots, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t id = 1; id < stats_t.n; id++) {
        size_t i = stats_name_hash(stats_t.names[id]) & (n_slots - 1);
        while (slots[i])
            i = (i + 1) & (n_slots - 1);
        slots[i] = (unsigned)id;
    }
    free(stats_t.slots);
    stats_t.slots = slots;
    stats_t.n_slots = n_slots;
    return 0;
}

/* Room for one more id. 0 or -ENOMEM. */
static int stats_tenant_grow(void)
{
    if (stats_t.n + 1 > stats_t.cap) {
        size_t cap = stats_t.cap ? stats_t.cap * 2 : 16;
        char **names = realloc(stats_t.names, cap * sizeof *names);
        if (!names)
            return -ENOMEM;
        stats_t.names = names;
        stats_t.cap = cap;
    }
    if (2 * (stats_t.n + 1) > stats_t.n_slots)
        return stats_tenant_rehash(stats_t.n_slots ? stats_t.n_slots * 2 : 32);
    return 0;
}

unsigned stats_tenant(const char *name)
{
    if (!name)
        return 0;
    if (stats_t.n == 0) {
        if (stats_tenant_grow() != 0)
            return 0;
        stats_t.names[0] = NULL;
        stats_t.n = 1;
    }
    for (size_t i = stats_name_hash(name) & (stats_t.n_slots - 1); stats_t.slots[i];
         i = (i + 1) & (stats_t.n_slots - 1))
        if (strcmp(stats_t.names[stats_t.slots[i]], name) == 0)
            return stats_t.slots[i];
    char *copy = strdup(name);
    if (!copy || stats_tenant_grow() != 0) {
        free(copy);
        return 0; /* counted as no tenant rather than not at all */
    }
    unsigned id = (unsigned)stats_t.n++;
    stats_t.names[id] = copy;
    __atomic_store_n(&stats_ids, stats_t.n, __ATOMIC_RELEASE);
    size_t i = stats_name_hash(copy) & (stats_t.n_slots - 1);
    while (stats_t.slots[i])
        i = (i + 1) & (stats_t.n_slots - 1);
    stats_t.slots[i] = id;
    return id;
}

int stats_workers(size_t n)
{
    if (n == 0 || n > STATS_MAX_WORKERS)
        return -EINVAL;
    for (size_t i = stats_n_shards; i < n; i++) {
        stats_shard_t *sh = calloc(1, sizeof *sh);
        if (!sh)
            return -ENOMEM;
        pthread_mutex_init(&sh->lock, NULL);
        stats_shards[i] = sh;
        stats_n_shards = i + 1;
    }
    return 0;
}

void stats_bind_worker(size_t i)
{
    stats_self = i < stats_n_shards ? stats_shards[i] : &stats_main;
}

/* stats_block's first count of tenant id on this worker: allocate its
 * block (NULL when it cannot be: the count is dropped). An id stats_tenant
 * never gave counts as no tenant. Out of line: the common case inlines. */
__attribute__((noinline)) static stats_tenant_t *stats_block_new(stats_shard_t *sh, unsigned id)
{
    if (id >= __atomic_load_n(&stats_ids, __ATOMIC_ACQUIRE))
        return &sh->none;
    stats_tenant_t *t = NULL;
    pthread_mutex_lock(&sh->lock);
    if (id >= sh->cap) {
        size_t cap = sh->cap ? sh->cap : 16;
        while (cap <= id)
            cap *= 2;
        stats_tenant_t **blocks = realloc(sh->blocks, cap * sizeof *blocks);
        if (!blocks)
            goto out;
        memset(blocks + sh->cap, 0, (cap - sh->cap) * sizeof *blocks);
        sh->blocks = blocks;
        sh->cap = cap;
    }
    t = sh->blocks[id] = calloc(1, sizeof *t);
out:
    pthread_mutex_unlock(&sh->lock);
    return t;
}

/* The calling worker's block of tenant id (see stats_block_new). */
static inline stats_tenant_t *stats_block(unsigned id)
{
    stats_shard_t *sh = stats_self;
    if (id == 0)
        return &sh->none;
    if (id < sh->cap && sh->blocks[id])
        return sh->blocks[id];
    return stats_block_new(sh, id);
}

void stats_dns_query(unsigned tenant, stats_verdict_t verdict, int rcode)
{
    stats_tenant_t *t = stats_block(tenant);
    if ((unsigned)verdict >= STATS_VERDICT_COUNT || !t)
        return;
    STATS_ADD(t->dns_queries[verdict][stats_rcode_index(rcode)], 1);
}

void stats_dns_cache(bool hit)
{
    if (hit)
        STATS_ADD(stats_self->c.cache_hits, 1);
    else
        STATS_ADD(stats_self->c.cache_misses, 1);
}

void stats_dns_upstream(bool ok, uint64_t elapsed_us)
{
    stats_counts_t *c = &stats_self->c;
    STATS_ADD(c->upstream[ok ? STATS_OK : STATS_ERROR], 1);
    size_t b = 0;
    while (b < STATS_N_BUCKETS && elapsed_us > stats_buckets_us[b])
        b++;
    STATS_ADD(c->upstream_bucket[b], 1);
    STATS_ADD(c->upstream_sum_us, elapsed_us);
}

void stats_conn_open(unsigned tenant, stats_listener_t listener)
{
    stats_tenant_t *t = stats_block(tenant);
    if ((unsigned)listener < STATS_LISTENER_COUNT && t)
        STATS_ADD(t->active[listener], 1);
}

void stats_conn_close(unsigned tenant, stats_listener_t listener)
{
    stats_tenant_t *t = stats_block(tenant);
    if ((unsigned)listener < STATS_LISTENER_COUNT && t)
        STATS_ADD(t->active[listener], -1);
}

void stats_conn_decision(unsigned tenant, stats_listener_t listener, stats_verdict_t verdict,
                         filter_reason_t reason, uint64_t bytes_up, uint64_t bytes_down)
{
    if ((unsigned)listener >= STATS_LISTENER_COUNT || (unsigned)verdict >= STATS_VERDICT_COUNT)
        return;
    stats_tenant_t *t = stats_block(tenant);
    if (t)
        STATS_ADD(t->conns[listener][verdict][stats_reason_index(reason)], 1);
    stats_counts_t *c = &stats_self->c;
    STATS_ADD(c->bytes[listener][STATS_UP], bytes_up);
    STATS_ADD(c->bytes[listener][STATS_DOWN], bytes_down);
}

void stats_conn_refused(stats_listener_t listener, filter_reason_t reason)
{
    if ((unsigned)listener < STATS_LISTENER_COUNT)
        STATS_ADD(stats_self->c.refused[listener][stats_reason_index(reason)], 1);
}

void stats_reload(bool ok)
{
    STATS_ADD(stats_self->c.reloads[ok ? STATS_OK : STATS_ERROR], 1);
}

void stats_dialcache(stats_dialcache_event_t ev)
{
    if ((unsigned)ev < STATS_DIALCACHE_EVENT_COUNT)
        STATS_ADD(stats_self->c.dialcache[ev], 1);
}

void stats_dialcache_entries(int delta)
{
    STATS_ADD(stats_self->c.dialcache_entries, delta);
}

static void stats_shard_clear(stats_shard_t *sh)
{
    for (size_t id = 0; id < sh->cap; id++)
        free(sh->blocks[id]);
    free(sh->blocks);
    sh->blocks = NULL;
    sh->cap = 0;
    memset(&sh->none, 0, sizeof sh->none);
    memset(&sh->c, 0, sizeof sh->c);
}

void stats_reset(void)
{
    stats_shard_clear(&stats_main);
    for (size_t i = 1; i < stats_n_shards; i++) {
        stats_shard_clear(stats_shards[i]);
        pthread_mutex_destroy(&stats_shards[i]->lock);
        free(stats_shards[i]);
        stats_shards[i] = NULL;
    }
    stats_n_shards = 1;
    stats_self = &stats_main;
    for (size_t id = 1; id < stats_t.n; id++)
        free(stats_t.names[id]);
    free(stats_t.names);
    free(stats_t.slots);
    memset(&stats_t, 0, sizeof stats_t);
    stats_ids = 0;
}

/* ---- summing the workers ---------------------------------------------------------------- */

/* Every worker's counters added up, for one rendering. */
typedef struct stats_sum {
    stats_counts_t c;
    stats_tenant_t none;
    stats_tenant_t **blocks; /* [tenant id < n], NULL: never counted */
    size_t n;
    uint64_t worker_dns[STATS_MAX_WORKERS], worker_conns[STATS_MAX_WORKERS];
} stats_sum_t;

/* Add n uint64_t counters read from src (another thread's) into dst. */
static void stats_add_all(uint64_t *dst, uint64_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += STATS_GET(src[i]);
}

#define STATS_WORDS(x) (sizeof(x) / sizeof(uint64_t))

/* What one block counted over every label: queries into *dns, decided
 * connections into *conns (the worker series; summed here, at a scrape,
 * rather than counted a second time on every query). */
static void stats_block_totals(const stats_tenant_t *t, uint64_t *dns, uint64_t *conns)
{
    const uint64_t *q = &t->dns_queries[0][0], *c = &t->conns[0][0][0];
    for (size_t i = 0; i < STATS_WORDS(t->dns_queries); i++)
        *dns += STATS_GET(q[i]);
    for (size_t i = 0; i < STATS_WORDS(t->conns); i++)
        *conns += STATS_GET(c[i]);
}

/* 0, or -ENOMEM (sum partly filled: free it with stats_sum_free). */
static int stats_sum_shard(stats_sum_t *sum, stats_shard_t *sh, size_t k)
{
    stats_add_all((uint64_t *)&sum->c, (uint64_t *)&sh->c, STATS_WORDS(sh->c));
    stats_add_all((uint64_t *)&sum->none, (uint64_t *)&sh->none, STATS_WORDS(sh->none));
    stats_block_totals(&sh->none, &sum->worker_dns[k], &sum->worker_conns[k]);
    int rc = 0;
    pthread_mutex_lock(&sh->lock);
    for (size_t id = 1; id < sh->cap && id < sum->n && rc == 0; id++) {
        if (!sh->blocks[id])
            continue;
        stats_block_totals(sh->blocks[id], &sum->worker_dns[k], &sum->worker_conns[k]);
        if (!sum->blocks[id] && !(sum->blocks[id] = calloc(1, sizeof *sum->blocks[id])))
            rc = -ENOMEM;
        else
            stats_add_all((uint64_t *)sum->blocks[id], (uint64_t *)sh->blocks[id],
                          STATS_WORDS(*sh->blocks[id]));
    }
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

static void stats_sum_free(stats_sum_t *sum)
{
    for (size_t id = 0; sum->blocks && id < sum->n; id++)
        free(sum->blocks[id]);
    free(sum->blocks);
    free(sum);
}

/* Sum every worker's counters: NULL on ENOMEM. */
static stats_sum_t *stats_sum(void)
{
    stats_sum_t *sum = calloc(1, sizeof *sum);
    if (!sum)
        return NULL;
    sum->n = stats_t.n ? stats_t.n : 1;
    if (!(sum->blocks = calloc(sum->n, sizeof *sum->blocks))) {
        free(sum);
        return NULL;
    }
    for (size_t k = 0; k < stats_n_shards; k++)
        if (stats_sum_shard(sum, stats_shards[k], k) != 0) {
            stats_sum_free(sum);
            return NULL;
        }
    return sum;
}

/* ---- rendering ----------------------------------------------------------------------- */

typedef struct stats_buf {
    char *p;
    size_t len, cap;
    bool err;
} stats_buf_t;

__attribute__((format(printf, 2, 3))) static void stats_put(stats_buf_t *b, const char *fmt, ...)
{
    if (b->err)
        return;
    for (int round = 0; round < 2; round++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->err = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap * 2;
        while (ncap - b->len <= (size_t)n)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->err = true;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

/* # HELP and # TYPE of a family (text format 0.0.4). */
static void stats_family(stats_buf_t *b, const char *name, const char *type, const char *help)
{
    stats_put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value as the text format wants it: backslash, double quote and
 * line feed escaped. Our values are constants; this only guards the
 * format against a future table entry. */
static const char *stats_label_escape(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (; *in && o + 3 < cap; in++) {
        if (*in == '\\' || *in == '"') {
            out[o++] = '\\';
            out[o++] = *in;
        } else if (*in == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *in;
        }
    }
    out[o] = '\0';
    return out;
}

/* The tenant label of block id ("" for no tenant: an empty label is no
 * label) into buf. */
static const char *stats_tenant_label(size_t id, char *buf, size_t cap)
{
    if (id == 0)
        return "";
    char esc[2 * 64 + 4];
    snprintf(buf, cap, "tenant=\"%s\",", stats_label_escape(stats_t.names[id], esc, sizeof esc));
    return buf;
}

/* Every block that has counted: t the block, tl its label text. */
#define STATS_EACH_TENANT(t, tl)                                                                   \
    for (char tl##_buf[2 * 64 + 16], *tl##_once = tl##_buf; tl##_once; tl##_once = NULL)           \
        for (size_t tl##_id = 0; tl##_id < s->n; tl##_id++)                                        \
            for (const stats_tenant_t *t = tl##_id ? s->blocks[tl##_id] : &s->none; t; t = NULL)   \
                for (const char *tl = stats_tenant_label(tl##_id, tl##_buf, sizeof tl##_buf); tl;  \
                     tl = NULL)

static void stats_render_dns(stats_buf_t *b, const stats_sum_t *s)
{
    stats_family(b, "moat_dns_queries_total", "counter",
                 "DNS queries answered, by verdict and the answer's RCODE (rcode none: no "
                 "answer sent).");
    STATS_EACH_TENANT(t, tl)
    {
        for (size_t v = 0; v < STATS_VERDICT_COUNT; v++)
            for (size_t r = 0; r < STATS_N_RCODES; r++)
                if (t->dns_queries[v][r])
                    stats_put(b, "moat_dns_queries_total{%sverdict=\"%s\",rcode=\"%s\"} %llu\n", tl,
                              stats_verdict_names[v], stats_rcode_label(r),
                              (unsigned long long)t->dns_queries[v][r]);
    }

    stats_family(b, "moat_dns_cache_hits_total", "counter",
                 "DNS cache lookups for allowed names answered from the cache.");
    stats_put(b, "moat_dns_cache_hits_total %llu\n", (unsigned long long)s->c.cache_hits);
    stats_family(b, "moat_dns_cache_misses_total", "counter",
                 "DNS cache lookups for allowed names that went upstream.");
    stats_put(b, "moat_dns_cache_misses_total %llu\n", (unsigned long long)s->c.cache_misses);

    stats_family(b, "moat_dns_upstream_queries_total", "counter",
                 "Upstream DNS exchanges (queries and the proxy's own resolutions), by result.");
    stats_put(b, "moat_dns_upstream_queries_total{result=\"ok\"} %llu\n",
              (unsigned long long)s->c.upstream[STATS_OK]);
    stats_put(b, "moat_dns_upstream_queries_total{result=\"error\"} %llu\n",
              (unsigned long long)s->c.upstream[STATS_ERROR]);

    stats_family(b, "moat_dns_upstream_latency_seconds", "histogram",
                 "Time from sending an upstream DNS exchange to its answer or failure.");
    uint64_t cum = 0;
    for (size_t i = 0; i < STATS_N_BUCKETS; i++) {
        cum += s->c.upstream_bucket[i];
        uint64_t us = stats_buckets_us[i];
        /* Exact decimal seconds: "0.0005", "2.5", "5". */
        char le[32];
        if (us % 1000000 == 0)
            snprintf(le, sizeof le, "%llu", (unsigned long long)(us / 1000000));
        else {
            snprintf(le, sizeof le, "%llu.%06llu", (unsigned long long)(us / 1000000),
                     (unsigned long long)(us % 1000000));
            size_t n = strlen(le);
            while (n > 0 && le[n - 1] == '0')
                le[--n] = '\0';
        }
        stats_put(b, "moat_dns_upstream_latency_seconds_bucket{le=\"%s\"} %llu\n", le,
                  (unsigned long long)cum);
    }
    cum += s->c.upstream_bucket[STATS_N_BUCKETS];
    stats_put(b, "moat_dns_upstream_latency_seconds_bucket{le=\"+Inf\"} %llu\n",
              (unsigned long long)cum);
    stats_put(b, "moat_dns_upstream_latency_seconds_sum %llu.%06llu\n",
              (unsigned long long)(s->c.upstream_sum_us / 1000000),
              (unsigned long long)(s->c.upstream_sum_us % 1000000));
    stats_put(b, "moat_dns_upstream_latency_seconds_count %llu\n", (unsigned long long)cum);
}

static void stats_render_tcp(stats_buf_t *b, const stats_sum_t *s)
{
    stats_family(b, "moat_connections_total", "counter",
                 "TCP connections decided, by listener, verdict and reason.");
    STATS_EACH_TENANT(t, tl)
    {
        for (size_t l = 0; l < STATS_LISTENER_COUNT; l++)
            for (size_t v = 0; v < STATS_VERDICT_COUNT; v++)
                for (size_t r = 0; r < STATS_N_REASONS; r++)
                    if (t->conns[l][v][r])
                        stats_put(b,
                                  "moat_connections_total{%slistener=\"%s\",verdict=\"%s\","
                                  "reason=\"%s\"} %llu\n",
                                  tl, stats_listener_names[l], stats_verdict_names[v],
                                  stats_reason_name(r), (unsigned long long)t->conns[l][v][r]);
    }

    stats_family(b, "moat_connections_active", "gauge",
                 "TCP connections open now, by tenant and listener.");
    STATS_EACH_TENANT(t, tl)
    {
        for (size_t l = 0; l < STATS_LISTENER_COUNT; l++)
            stats_put(b, "moat_connections_active{%slistener=\"%s\"} %lld\n", tl,
                      stats_listener_names[l], (long long)t->active[l]);
    }

    stats_family(b, "moat_bytes_total", "counter",
                 "Bytes spliced by closed TCP connections, by listener and direction (up: "
                 "client to server).");
    for (size_t l = 0; l < STATS_LISTENER_COUNT; l++) {
        stats_put(b, "moat_bytes_total{listener=\"%s\",direction=\"up\"} %llu\n",
                  stats_listener_names[l], (unsigned long long)s->c.bytes[l][STATS_UP]);
        stats_put(b, "moat_bytes_total{listener=\"%s\",direction=\"down\"} %llu\n",
                  stats_listener_names[l], (unsigned long long)s->c.bytes[l][STATS_DOWN]);
    }

    stats_family(b, "moat_connections_refused_total", "counter",
                 "TCP connections refused before any decision (max-connections, "
                 "accept-error), by listener and reason.");
    for (size_t l = 0; l < STATS_LISTENER_COUNT; l++)
        for (size_t r = 0; r < STATS_N_REASONS; r++)
            if (s->c.refused[l][r])
                stats_put(b, "moat_connections_refused_total{listener=\"%s\",reason=\"%s\"} %llu\n",
                          stats_listener_names[l], stats_reason_name(r),
                          (unsigned long long)s->c.refused[l][r]);
}

/* The proxy's dial address cache: label-free, every family always shown
 * (like the DNS cache's). */
static void stats_render_dialcache(stats_buf_t *b, const stats_sum_t *s)
{
    static const struct {
        stats_dialcache_event_t ev;
        const char *name, *help;
    } fams[] = {
        {STATS_DIALCACHE_HIT, "moat_proxy_dialcache_hits_total",
         "Dials answered from the proxy's dial address cache (positive or negative result)."},
        {STATS_DIALCACHE_MISS, "moat_proxy_dialcache_misses_total",
         "Lookups the proxy's dial address cache started upstream (name not held, or "
         "expired)."},
        {STATS_DIALCACHE_COALESCED, "moat_proxy_dialcache_coalesced_total",
         "Dials that joined a dial cache lookup already in flight for the same name."},
        {STATS_DIALCACHE_EXPIRED, "moat_proxy_dialcache_expired_total",
         "Dial cache entries found expired and looked up again."},
        {STATS_DIALCACHE_EVICTION, "moat_proxy_dialcache_evictions_total",
         "Dial cache entries dropped for room, least recently used first."},
    };
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++) {
        stats_family(b, fams[i].name, "counter", fams[i].help);
        stats_put(b, "%s %llu\n", fams[i].name, (unsigned long long)s->c.dialcache[fams[i].ev]);
    }
    stats_family(b, "moat_proxy_dialcache_entries", "gauge",
                 "Names held in the proxy's dial address cache (lookups in flight and answers).");
    stats_put(b, "moat_proxy_dialcache_entries %lld\n", (long long)s->c.dialcache_entries);
}

/* How the work spread over the workers (`workers`, core/worker.h). */
static void stats_render_workers(stats_buf_t *b, const stats_sum_t *s)
{
    stats_family(b, "moat_worker_dns_queries_total", "counter",
                 "DNS queries answered (or dropped) by each worker's loop.");
    for (size_t k = 0; k < stats_n_shards; k++)
        stats_put(b, "moat_worker_dns_queries_total{worker=\"%zu\"} %llu\n", k,
                  (unsigned long long)s->worker_dns[k]);
    stats_family(b, "moat_worker_connections_total", "counter",
                 "TCP connections decided by each worker's loop.");
    for (size_t k = 0; k < stats_n_shards; k++)
        stats_put(b, "moat_worker_connections_total{worker=\"%zu\"} %llu\n", k,
                  (unsigned long long)s->worker_conns[k]);
}

int stats_render(const stats_gauges_t *g, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    stats_buf_t b = {.cap = 16384};
    stats_sum_t *sum = stats_sum();
    b.p = malloc(b.cap);
    if (!b.p || !sum) {
        free(b.p);
        if (sum)
            stats_sum_free(sum);
        return -ENOMEM;
    }
    b.p[0] = '\0';
    const stats_sum_t *s = sum;

    stats_render_dns(&b, sum);
    stats_render_tcp(&b, sum);
    stats_render_dialcache(&b, sum);

    stats_family(&b, "moat_config_reloads_total", "counter", "Config reloads, by result.");
    stats_put(&b, "moat_config_reloads_total{result=\"ok\"} %llu\n",
              (unsigned long long)s->c.reloads[STATS_OK]);
    stats_put(&b, "moat_config_reloads_total{result=\"error\"} %llu\n",
              (unsigned long long)s->c.reloads[STATS_ERROR]);
    stats_family(&b, "moat_config_generation", "gauge",
                 "Generation of the config in use: 1 at start, +1 per successful reload.");
    stats_put(&b, "moat_config_generation %llu\n", (unsigned long long)g->config_generation);
    stats_family(&b, "moat_dns_cache_entries", "gauge", "Answers held in the DNS cache.");
    stats_put(&b, "moat_dns_cache_entries %llu\n", (unsigned long long)g->dns_cache_entries);
    stats_family(&b, "moat_addrmem_entries", "gauge",
                 "(client, name, address) entries in the address memory the proxy checks.");
    stats_put(&b, "moat_addrmem_entries %llu\n", (unsigned long long)g->addrmem_entries);
    stats_family(&b, "moat_log_dropped_lines_total", "counter",
                 "Log lines dropped because the log sink could not take them in time.");
    stats_put(&b, "moat_log_dropped_lines_total %llu\n", (unsigned long long)g->log_dropped_lines);
    stats_family(&b, "moat_start_time_seconds", "gauge",
                 "Start time of the process since the Unix epoch, in seconds.");
    stats_put(&b, "moat_start_time_seconds %.3f\n", g->start_time_seconds);
    char ver[64];
    stats_family(&b, "moat_build_info", "gauge", "Always 1; the version moat was built from.");
    stats_put(&b, "moat_build_info{version=\"%s\"} 1\n",
              stats_label_escape(MOAT_VERSION, ver, sizeof ver));

    stats_render_workers(&b, s);
    stats_sum_free(sum);
    if (b.err) {
        free(b.p);
        return -ENOMEM;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}
