/* tests/proxy/test_dialcache.c: the proxy's dial address cache
 * (proxy/dialcache.h): hits, misses, coalescing, TTL clamp and expiry on an
 * injected clock, negative caching, LRU eviction around pinned lookups,
 * waiters leaving (also from inside callbacks), flush, free, hostile sizes,
 * and the process-wide series /metrics shows (core/stats.h).
 *
 * The resolver is a fake: start records the request, the test answers it
 * when it likes (never from inside start, as the real upstream client).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "filter/name.h"
#include "proxy/dialcache.h"
#include "core/stats.h"

#define FAKE_MAX 64

typedef struct fake_req {
    char name[300];
    size_t len;
    dns_upstream_resolve_cb done;
    void *arg;
    bool live;
} fake_req_t;

typedef struct fake {
    uint64_t now;
    fake_req_t reqs[FAKE_MAX];
    size_t n;       /* requests started */
    size_t cancels; /* requests cancelled */
    int fail;       /* start returns this when not 0 */
} fake_t;

static int fake_start(void *ctx, const char *name, size_t len, dns_upstream_resolve_cb done,
                      void *done_arg, void **req)
{
    fake_t *f = ctx;
    *req = NULL;
    if (f->fail)
        return f->fail;
    cr_assert_lt(f->n, FAKE_MAX);
    fake_req_t *r = &f->reqs[f->n++];
    cr_assert_leq(len, sizeof r->name);
    memcpy(r->name, name, len);
    r->len = len;
    r->done = done;
    r->arg = done_arg;
    r->live = true;
    *req = r;
    return 0;
}

static void fake_cancel(void *ctx, void *req)
{
    fake_t *f = ctx;
    fake_req_t *r = req;
    cr_assert(r->live, "cancel of a request that is not live");
    r->live = false;
    f->cancels++;
}

static uint64_t fake_now(void *ctx)
{
    return ((fake_t *)ctx)->now;
}

static px_dialcache_t *mk(fake_t *f, size_t max)
{
    memset(f, 0, sizeof *f);
    f->now = 1000000;
    px_dialcache_ops_t ops = {
        .start = fake_start, .cancel = fake_cancel, .now = fake_now, .ctx = f};
    px_dialcache_t *dc = NULL;
    cr_assert_eq(px_dialcache_create(max, &ops, &dc), 0);
    cr_assert_not_null(dc);
    return dc;
}

static dns_cache_addr_t A(const char *s, uint32_t ttl)
{
    dns_cache_addr_t a = {.ttl = ttl};
    cr_assert_eq(filter_addr_parse(s, strlen(s), &a.addr), 0, "%s", s);
    return a;
}

/* Answer request i. */
static void answer(fake_t *f, size_t i, int status, const dns_cache_addr_t *addrs, size_t n)
{
    cr_assert_lt(i, f->n);
    fake_req_t *r = &f->reqs[i];
    cr_assert(r->live, "answer to a request that is not live");
    r->live = false;
    r->done(r->arg, status, addrs, n);
}

/* A waiter that records what it was told. */
typedef struct rec {
    px_dialcache_waiter_t w;
    int calls;
    int status;
    size_t n;
    dns_cache_addr_t first;
    /* optional actions from inside the callback */
    struct rec *unwait_other;
    bool free_other;
    px_dialcache_t *free_cache;
    px_dialcache_t *flush_cache;
    bool free_self;
} rec_t;

static void rec_cb(void *arg, int status, const dns_cache_addr_t *addrs, size_t n)
{
    rec_t *r = arg;
    cr_assert(!px_dialcache_waiting(&r->w), "called while still queued");
    r->calls++;
    r->status = status;
    r->n = n;
    if (n)
        r->first = addrs[0];
    if (r->unwait_other) {
        px_dialcache_unwait(&r->unwait_other->w);
        if (r->free_other)
            free(r->unwait_other);
    }
    if (r->flush_cache)
        px_dialcache_flush(r->flush_cache);
    if (r->free_cache)
        px_dialcache_free(r->free_cache);
    if (r->free_self)
        free(r);
}

static int get(px_dialcache_t *dc, const char *name, rec_t *r, px_dialcache_result_t *res)
{
    px_dialcache_result_t tmp;
    return px_dialcache_get(dc, name, strlen(name), &r->w, rec_cb, r, res ? res : &tmp);
}

/* A get of name that misses and starts a lookup, which is then answered
 * with status and addrs; returns the lookup's index. */
static size_t miss_answered(fake_t *f, px_dialcache_t *dc, const char *name, rec_t *r, int status,
                            const dns_cache_addr_t *addrs, size_t n)
{
    size_t i = f->n;
    px_dialcache_result_t res;
    cr_assert_eq(get(dc, name, r, &res), -EINPROGRESS, "%s", name);
    answer(f, i, status, addrs, n);
    return i;
}

static px_dialcache_stats_t stats(px_dialcache_t *dc)
{
    px_dialcache_stats_t st;
    px_dialcache_stats(dc, &st);
    return st;
}

Test(dialcache, miss_then_hit)
{
    fake_t f;
    px_dialcache_t *dc = mk(&f, 16);
    rec_t r = {0};
    px_dialcache_result_t res;
    cr_assert_eq(get(dc, "example.test", &r, &res), -EINPROGRESS);
    cr_assert_eq(f.n, 1);
    cr_assert_eq(f.reqs[0].len, strlen("example.test"));
    cr_assert_eq(memcmp(f.reqs[0].name, "example.test", f.reqs[0].len), 0);
    cr_assert(px_dialcache_waiting(&r.w));
    cr_assert_eq(r.calls, 0, "called from inside get");
    dns_cache_addr_t ans[2] = {A("198.18.0.2", 60), A("2001:db8::2", 30)};
    answer(&f, 0, 0, ans, 2);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.n, 2);
    cr_assert_eq(r.first.addr.family, AF_INET);
    cr_assert(!px_dialcache_waiting(&r.w));

    /* Any spelling of the name hits. */
    const char *names[] = {"example.test", "EXAMPLE.test", "Example.Test."};
    for (size_t i = 0; i < 3; i++) {
        rec_t r2 = {0};
        cr_assert_eq(get(dc, names[i], &r2, &res), 0, "%s", names[i]);
        cr_assert_eq(res.status, 0);
        cr_assert_eq(res.n, 2);
        cr_assert_eq(memcmp(&res.addrs[1], &ans[1], sizeof ans[1]), 0);
        cr_assert(!px_dialcache_waiting(&r2.w));
        cr_assert_eq(r2.calls, 0);
    }
    cr_assert_eq(f.n, 1, "a hit went upstream");
    px_dialcache_stats_t st = stats(dc);
    cr_assert_eq(st.hits, 3);
    cr_assert_eq(st.misses, 1);
    cr_assert_eq(st.entries, 1);
    cr_assert_eq(st.in_flight, 0);
    /* Another name is another entry. */
    rec_t r3 = {0};
    cr_assert_eq(get(dc, "other.test", &r3, &res), -EINPROGRESS);
    cr_assert_eq(f.n, 2);
    px_dialcache_free(dc);
    cr_assert_eq(f.cancels, 1, "the lookup in flight was not cancelled at free");
    cr_assert(!px_dialcache_waiting(&r3.w));
}

Test(dialcache, coalescing_one_lookup_for_many_dials)
{
    fake_t f;
    px_dialcache_t *dc = mk(&f, 16);
    enum { N = 500 };
    rec_t *rs = calloc(N, sizeof *rs);
    cr_assert_not_null(rs);
    for (size_t i = 0; i < N; i++)
        cr_assert_eq(get(dc, i % 2 ? "Burst.test" : "burst.test", &rs[i], NULL), -EINPROGRESS);
    cr_assert_eq(f.n, 1, "%zu lookups for one name", f.n);
    px_dialcache_stats_t st = stats(dc);
    cr_assert_eq(st.coalesced, N - 1);
    cr_assert_eq(st.in_flight, 1);
    dns_cache_addr_t ans = A("198.18.0.30", 5);
    answer(&f, 0, 0, &ans, 1);
    for (size_t i = 0; i < N; i++) {
        cr_assert_eq(rs[i].calls, 1, "waiter %zu called %d times", i, rs[i].calls);
        cr_assert_eq(rs[i].n, 1);
        cr_assert_eq(memcmp(&rs[i].first, &ans, sizeof ans), 0);
    }
    free(rs);
    px_dialcache_free(dc);
}

Test(dialcache, ttl_clamp_and_expiry)
{
    fake_t f;
    px_dialcache_t *dc = mk(&f, 16);
    struct {
        const char *name;
        uint32_t ttl;
        uint64_t live_ms;
    } cases[] = {
        {"ten.test", 10, 10000},
        {"zero.test", 0, PX_DIALCACHE_MIN_TTL_MS},
        {"huge.test", 86400, PX_DIALCACHE_MAX_TTL_MS},
        {"max.test", UINT32_MAX, PX_DIALCACHE_MAX_TTL_MS},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rec_t r = {0};
        px_dialcache_result_t res;
        uint64_t t0 = f.now;
        dns_cache_addr_t ans = A("198.18.0.2", cases[i].ttl);
        size_t before = miss_answered(&f, dc, cases[i].name, &r, 0, &ans, 1);
        f.now = t0 + cases[i].live_ms - 1;
        cr_assert_eq(get(dc, cases[i].name, &r, &res), 0, "%s expired early", cases[i].name);
        f.now = t0 + cases[i].live_ms;
        cr_assert_eq(get(dc, cases[i].name, &r, &res), -EINPROGRESS, "%s did not expire",
                     cases[i].name);
        cr_assert_eq(f.n, before + 2);
        /* The new answer replaces the old one: a changed address is used. */
        dns_cache_addr_t moved = A("198.18.0.3", 60);
        answer(&f, before + 1, 0, &moved, 1);
        cr_assert_eq(r.calls, 2);
        cr_assert_eq(get(dc, cases[i].name, &r, &res), 0);
        cr_assert_eq(memcmp(&res.addrs[0], &moved, sizeof moved), 0);
    }
    /* The entry's lifetime is the smallest TTL among its addresses. */
    rec_t r = {0};
    px_dialcache_result_t res;
    uint64_t t0 = f.now;
    dns_cache_addr_t ans[3] = {A("198.18.0.2", 100), A("2001:db8::2", 7), A("198.18.0.4", 50)};
    miss_answered(&f, dc, "mixed.test", &r, 0, ans, 3);
    f.now = t0 + 6999;
    cr_assert_eq(get(dc, "mixed.test", &r, &res), 0);
    f.now = t0 + 7000;
    cr_assert_eq(get(dc, "mixed.test", &r, &res), -EINPROGRESS);
    cr_assert_eq(stats(dc).expired, 5);
    px_dialcache_free(dc);
}

Test(dialcache, negative_results_cached_briefly)
{
    fake_t f;
    px_dialcache_t *dc = mk(&f, 16);
    struct {
        const char *name;
        int status;
    } cases[] = {
        {"nx.test", 0}, /* no such name / no address: status 0, no address */
        {"servfail.test", -EIO},
        {"timeout.test", -ETIMEDOUT},
        {"refused.test", -ECONNREFUSED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rec_t r = {0};
        px_dialcache_result_t res;
        uint64_t t0 = f.now;
        size_t before = miss_answered(&f, dc, cases[i].name, &r, cases[i].status, NULL, 0);
        cr_assert_eq(r.calls, 1);
        cr_assert_eq(r.status, cases[i].status);
        cr_assert_eq(r.n, 0);
        /* A flood of dials within the negative TTL: no lookup. */
        for (int k = 0; k < 100; k++) {
            f.now = t0 + (uint64_t)k * (PX_DIALCACHE_NEG_TTL_MS - 1) / 99;
            cr_assert_eq(get(dc, cases[i].name, &r, &res), 0, "%s at +%llu ms", cases[i].name,
                         (unsigned long long)(f.now - t0));
            cr_assert_eq(res.status, cases[i].status);
            cr_assert_eq(res.n, 0);
        }
        cr_assert_eq(f.n, before + 1);
        f.now = t0 + PX_DIALCACHE_NEG_TTL_MS;
        cr_assert_eq(get(dc, cases[i].name, &r, &res), -EINPROGRESS);
        cr_assert_eq(f.n, before + 2);
        answer(&f, before + 1, 0, NULL, 0);
    }
    /* Out of memory and cancellation are not answers about the name. */
    const int nocache[] = {-ENOMEM, -ECANCELED};
    const char *nocache_names[] = {"nomem.test", "cancelled.test"};
    for (size_t i = 0; i < 2; i++) {
        rec_t r = {0};
        px_dialcache_result_t res;
        size_t before = miss_answered(&f, dc, nocache_names[i], &r, nocache[i], NULL, 0);
        cr_assert_eq(r.status, nocache[i]);
        cr_assert_eq(get(dc, nocache_names[i], &r, &res), -EINPROGRESS, "status %d cached",
                     nocache[i]);
        dns_cache_addr_t ans = A("198.18.0.2", 60);
        answer(&f, before + 1, 0, &ans, 1);
        cr_assert_eq(get(dc, nocache_names[i], &r, &res), 0);
        cr_assert_eq(res.n, 1);
    }
    px_dialcache_free(dc);
}

Test(dialcache, lru_eviction_spares_pinned_lookup)
{
    fake_t f;
    px_dialcache_t *dc = mk(&f, 3);
    px_dialcache_result_t res;
    rec_t pin = {0}, r = {0};
    dns_cache_addr_t ans = A("198.18.0.2", 60);
    /* a: in flight with a waiter (pinned), the oldest entry. */
    cr_assert_eq(get(dc, "a.test", &pin, &res), -EINPROGRESS);
    f.now++;
    cr_assert_eq(get(dc, "b.test", &r, &res), -EINPROGRESS);
    answer(&f, 1, 0, &ans, 1);
    f.now++;
    cr_assert_eq(get(dc, "c.test", &r, &res), -EINPROGRESS);
    answer(&f, 2, 0, &ans, 1);
    /* Touch b: c is now the least recently used unpinned entry. */
    cr_assert_eq(get(dc, "b.test", &r, &res), 0);
    cr_assert_eq(get(dc, "d.test", &r, &res), -EINPROGRESS);
    answer(&f, 3, 0, &ans, 1);
    px_dialcache_stats_t st = stats(dc);
    cr_assert_eq(st.entries, 3);
    cr_assert_eq(st.evictions, 1);
    cr_assert(px_dialcache_waiting(&pin.w), "the pinned lookup lost its waiter");
    cr_assert(f.reqs[0].live, "the pinned lookup was cancelled");
    cr_assert_eq(get(dc, "b.test", &r, &res), 0, "b evicted instead of c");
    cr_assert_eq(get(dc, "d.test", &r, &res), 0);
    size_t before = f.n;
    cr_assert_eq(get(dc, "c.test", &r, &res), -EINPROGRESS, "c not evicted");
    cr_assert_eq(f.n, before + 1);
    answer(&f, before, 0, &ans, 1);
    /* The pinned lookup still answers its waiter. */
    answer(&f, 0, 0, &ans, 1);
    cr_assert_eq(pin.calls, 1);
    cr_assert_eq(pin.n, 1);
    cr_assert_leq(stats(dc).entries, 3);
    px_dialcache_free(dc);
}

Test(dialcache, all_pinned_admits_then_trims)
{
    fake_t f;
    px_dialcache_t *dc = mk(&f, 2);
    rec_t rs[4] = {0};
    const char *names[] = {"p1.test", "p2.test", "p3.test", "p4.test"};
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(get(dc, names[i], &rs[i], NULL), -EINPROGRESS);
    /* Every entry has a waiter: none was evicted, none cancelled. */
    cr_assert_eq(stats(dc).entries, 4);
    cr_assert_eq(f.cancels, 0);
    dns_cache_addr_t ans = A("198.18.0.2", 60);
    for (size_t i = 0; i < 4; i++) {
        answer(&f, i, 0, &ans, 1);
        cr_assert_eq(rs[i].calls, 1);
    }
    cr_assert_eq(stats(dc).entries, 2, "not trimmed back to the bound");
    /* An unpinned lookup in flight is evictable: it is cancelled. */
    rec_t a = {0}, b = {0}, c = {0};
    cr_assert_eq(get(dc, "q1.test", &a, NULL), -EINPROGRESS);
    px_dialcache_unwait(&a.w);
    cr_assert(f.reqs[4].live, "the lookup stops when its waiter leaves");
    cr_assert_eq(get(dc, "q2.test", &b, NULL), -EINPROGRESS);
    cr_assert_eq(get(dc, "q3.test", &c, NULL), -EINPROGRESS);
    cr_assert(!f.reqs[4].live, "evicted lookup in flight not cancelled");
    cr_assert_eq(a.calls, 0);
    px_dialcache_free(dc);
}

Test(dialcache, waiter_removal)
{
    fake_t f;
    px_dialcache_t *dc = mk(&f, 16);
    rec_t r[3] = {0};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(get(dc, "w.test", &r[i], NULL), -EINPROGRESS);
    cr_assert_eq(get(dc, "w.test", &r[1], NULL), -EALREADY, "one waiter queued twice");
    px_dialcache_unwait(&r[1].w);
    cr_assert(!px_dialcache_waiting(&r[1].w));
    px_dialcache_unwait(&r[1].w); /* twice: a no-op */
    px_dialcache_unwait(NULL);
    dns_cache_addr_t ans = A("198.18.0.2", 60);
    answer(&f, 0, 0, &ans, 1);
    cr_assert_eq(r[0].calls, 1);
    cr_assert_eq(r[1].calls, 0, "a removed waiter was called");
    cr_assert_eq(r[2].calls, 1);

    /* Every waiter leaves: the lookup goes on and its answer is kept. */
    rec_t x[2] = {0};
    for (int i = 0; i < 2; i++)
        cr_assert_eq(get(dc, "gone.test", &x[i], NULL), -EINPROGRESS);
    px_dialcache_unwait(&x[0].w);
    px_dialcache_unwait(&x[1].w);
    cr_assert_eq(f.cancels, 0);
    cr_assert(f.reqs[1].live);
    answer(&f, 1, 0, &ans, 1);
    cr_assert_eq(x[0].calls + x[1].calls, 0);
    px_dialcache_result_t res;
    cr_assert_eq(get(dc, "gone.test", &x[0], &res), 0);
    cr_assert_eq(res.n, 1);
    px_dialcache_free(dc);
}

Test(dialcache, waiters_leave_from_inside_callbacks)
{
    fake_t f;
    px_dialcache_t *dc = mk(&f, 16);
    /* Heap waiters: ASan reports any touch after they are freed. */
    rec_t *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b), *c = calloc(1, sizeof *c);
    rec_t *d = calloc(1, sizeof *d);
    cr_assert(a && b && c && d);
    cr_assert_eq(get(dc, "cb.test", a, NULL), -EINPROGRESS);
    cr_assert_eq(get(dc, "cb.test", b, NULL), -EINPROGRESS);
    cr_assert_eq(get(dc, "cb.test", c, NULL), -EINPROGRESS);
    cr_assert_eq(get(dc, "cb.test", d, NULL), -EINPROGRESS);
    a->unwait_other = c; /* a's connection closes c's, which frees it */
    a->free_other = true;
    b->free_self = true; /* b's callback frees b itself */
    dns_cache_addr_t ans = A("198.18.0.2", 60);
    answer(&f, 0, 0, &ans, 1);
    cr_assert_eq(a->calls, 1);
    cr_assert_eq(d->calls, 1);
    /* A callback asks for the same name: a hit, from the fresh answer. */
    rec_t *e = calloc(1, sizeof *e), *g = calloc(1, sizeof *g);
    cr_assert(e && g);
    cr_assert_eq(get(dc, "cb2.test", e, NULL), -EINPROGRESS);
    cr_assert_eq(get(dc, "cb2.test", g, NULL), -EINPROGRESS);
    e->flush_cache = dc; /* a reload flushes while the answer is delivered */
    answer(&f, 1, 0, &ans, 1);
    cr_assert_eq(g->calls, 1, "flush from a callback dropped the other waiters");
    cr_assert_eq(stats(dc).entries, 0);
    cr_assert_eq(get(dc, "cb2.test", g, NULL), -EINPROGRESS, "answer kept after flush");
    px_dialcache_unwait(&g->w);
    free(a);
    free(d);
    free(e);
    free(g);
    px_dialcache_free(dc);
}

Test(dialcache, free_from_inside_callback)
{
    fake_t f;
    px_dialcache_t *dc = mk(&f, 16);
    rec_t r[3] = {0}, other = {0};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(get(dc, "shut.test", &r[i], NULL), -EINPROGRESS);
    cr_assert_eq(get(dc, "other.test", &other, NULL), -EINPROGRESS);
    /* The first callback ends the proxy (the last connection drained). */
    r[0].free_cache = dc;
    answer(&f, 0, -EIO, NULL, 0);
    cr_assert_eq(r[0].calls, 1);
    cr_assert_eq(r[1].calls + r[2].calls, 0, "called after the free");
    cr_assert(!px_dialcache_waiting(&r[1].w));
    cr_assert(!px_dialcache_waiting(&other.w));
    cr_assert_eq(f.cancels, 1, "the other lookup was not cancelled");
    cr_assert(!f.reqs[1].live);
}

Test(dialcache, flush_keeps_waiters_drops_answers)
{
    fake_t f;
    px_dialcache_t *dc = mk(&f, 16);
    rec_t r = {0}, w1 = {0}, idle = {0};
    px_dialcache_result_t res;
    dns_cache_addr_t old = A("198.18.0.2", 60), neu = A("198.18.0.3", 60);
    cr_assert_eq(get(dc, "done.test", &r, &res), -EINPROGRESS);
    answer(&f, 0, 0, &old, 1);
    cr_assert_eq(get(dc, "wait.test", &w1, &res), -EINPROGRESS);   /* req 1 */
    cr_assert_eq(get(dc, "idle.test", &idle, &res), -EINPROGRESS); /* req 2 */
    px_dialcache_unwait(&idle.w);
    px_dialcache_flush(dc);
    cr_assert_eq(stats(dc).entries, 0);
    cr_assert(!f.reqs[2].live, "a lookup nobody waits for survived the flush");
    cr_assert(f.reqs[1].live, "a lookup with waiters was cancelled");
    cr_assert(px_dialcache_waiting(&w1.w));
    /* New dials go to the new servers, not to the old lookup. */
    rec_t w2 = {0};
    cr_assert_eq(get(dc, "wait.test", &w2, &res), -EINPROGRESS);
    cr_assert_eq(f.n, 4);
    cr_assert_eq(get(dc, "done.test", &r, &res), -EINPROGRESS);
    cr_assert_eq(f.n, 5);
    answer(&f, 1, 0, &old, 1);
    cr_assert_eq(w1.calls, 1);
    cr_assert_eq(memcmp(&w1.first, &old, sizeof old), 0);
    cr_assert_eq(w2.calls, 0);
    answer(&f, 3, 0, &neu, 1);
    cr_assert_eq(w2.calls, 1);
    cr_assert_eq(memcmp(&w2.first, &neu, sizeof neu), 0);
    rec_t w3 = {0};
    cr_assert_eq(get(dc, "wait.test", &w3, &res), 0);
    cr_assert_eq(memcmp(&res.addrs[0], &neu, sizeof neu), 0, "the old answer was kept");
    /* A flushed lookup whose last waiter leaves is cancelled. */
    rec_t w4 = {0};
    cr_assert_eq(get(dc, "late.test", &w4, &res), -EINPROGRESS); /* req 5 */
    px_dialcache_flush(dc);
    cr_assert(f.reqs[5].live);
    px_dialcache_unwait(&w4.w);
    cr_assert(!f.reqs[5].live);
    px_dialcache_free(dc);
    cr_assert(!f.reqs[4].live, "done.test's lookup not cancelled at free");
}

Test(dialcache, start_failure_caches_nothing)
{
    fake_t f;
    px_dialcache_t *dc = mk(&f, 16);
    rec_t r = {0};
    px_dialcache_result_t res;
    f.fail = -ESHUTDOWN;
    cr_assert_eq(get(dc, "x.test", &r, &res), -ESHUTDOWN);
    cr_assert(!px_dialcache_waiting(&r.w));
    cr_assert_eq(stats(dc).entries, 0);
    f.fail = 0;
    cr_assert_eq(get(dc, "x.test", &r, &res), -EINPROGRESS);
    dns_cache_addr_t ans = A("198.18.0.2", 1);
    answer(&f, 0, 0, &ans, 1);
    /* An expired entry whose new lookup cannot start is dropped. */
    f.now += 1000;
    f.fail = -EIO;
    cr_assert_eq(get(dc, "x.test", &r, &res), -EIO);
    cr_assert_eq(stats(dc).entries, 0);
    f.fail = 0;
    px_dialcache_free(dc);
}

Test(dialcache, hostile_sizes)
{
    fake_t f;
    px_dialcache_t *dc = mk(&f, 16);
    rec_t r = {0};
    px_dialcache_result_t res;
    char big[1024];
    memset(big, 'a', sizeof big);
    cr_assert_eq(px_dialcache_get(dc, big, 0, &r.w, rec_cb, &r, &res), -EINVAL);
    cr_assert_eq(px_dialcache_get(dc, ".", 1, &r.w, rec_cb, &r, &res), -EINVAL);
    cr_assert_eq(px_dialcache_get(dc, big, FILTER_NAME_MAX + 1, &r.w, rec_cb, &r, &res), -EINVAL);
    cr_assert_eq(px_dialcache_get(dc, big, sizeof big, &r.w, rec_cb, &r, &res), -EINVAL);
    cr_assert_eq(px_dialcache_get(dc, big, SIZE_MAX, &r.w, rec_cb, &r, &res), -EINVAL);
    cr_assert_eq(px_dialcache_get(dc, NULL, 3, &r.w, rec_cb, &r, &res), -EINVAL);
    cr_assert_eq(px_dialcache_get(dc, "a.test", 6, NULL, rec_cb, &r, &res), -EINVAL);
    cr_assert_eq(px_dialcache_get(dc, "a.test", 6, &r.w, NULL, &r, &res), -EINVAL);
    cr_assert_eq(px_dialcache_get(NULL, "a.test", 6, &r.w, rec_cb, &r, &res), -EINVAL);
    cr_assert_eq(f.n, 0);
    /* The longest name, and the longest with its trailing dot. */
    cr_assert_eq(px_dialcache_get(dc, big, FILTER_NAME_MAX, &r.w, rec_cb, &r, &res), -EINPROGRESS);
    big[FILTER_NAME_MAX] = '.';
    rec_t r2 = {0};
    cr_assert_eq(px_dialcache_get(dc, big, FILTER_NAME_MAX + 1, &r2.w, rec_cb, &r2, &res),
                 -EINPROGRESS);
    cr_assert_eq(f.n, 1, "the trailing dot made another entry");
    /* An answer with more addresses than the cache keeps. */
    enum { MANY = 1000 };
    dns_cache_addr_t *many = calloc(MANY, sizeof *many);
    cr_assert_not_null(many);
    for (size_t i = 0; i < MANY; i++) {
        char s[32];
        snprintf(s, sizeof s, "198.18.%zu.%zu", i / 250, i % 250 + 1);
        many[i] = A(s, (uint32_t)(1000 - i));
    }
    answer(&f, 0, 0, many, MANY);
    cr_assert_eq(r.n, PX_DIALCACHE_MAX_ADDRS);
    cr_assert_eq(r2.n, PX_DIALCACHE_MAX_ADDRS);
    rec_t r3 = {0};
    cr_assert_eq(px_dialcache_get(dc, big, FILTER_NAME_MAX, &r3.w, rec_cb, &r3, &res), 0);
    cr_assert_eq(res.n, PX_DIALCACHE_MAX_ADDRS);
    cr_assert_eq(memcmp(res.addrs, many, PX_DIALCACHE_MAX_ADDRS * sizeof *many), 0);
    free(many);
    /* Names with bytes the policy never lets through are still just keys. */
    const char odd[] = {'a', 0, (char)0xff, '.', 'b'};
    cr_assert_eq(px_dialcache_get(dc, odd, sizeof odd, &r3.w, rec_cb, &r3, &res), -EINPROGRESS);
    px_dialcache_unwait(&r3.w);
    px_dialcache_free(dc);

    /* Bounds at create. */
    px_dialcache_ops_t ops = {
        .start = fake_start, .cancel = fake_cancel, .now = fake_now, .ctx = &f};
    px_dialcache_t *bad = (px_dialcache_t *)&f;
    cr_assert_eq(px_dialcache_create(0, &ops, &bad), -EINVAL);
    cr_assert_null(bad);
    cr_assert_eq(px_dialcache_create(PX_DIALCACHE_MAX_ENTRIES + 1, &ops, &bad), -EINVAL);
    cr_assert_eq(px_dialcache_create(SIZE_MAX, &ops, &bad), -EINVAL);
    cr_assert_eq(px_dialcache_create(16, NULL, &bad), -EINVAL);
    ops.cancel = NULL;
    cr_assert_eq(px_dialcache_create(16, &ops, &bad), -EINVAL);
    cr_assert_eq(px_dialcache_create(16, &ops, NULL), -EINVAL);
    px_dialcache_free(NULL);
    px_dialcache_flush(NULL);
}

Test(dialcache, many_names_stay_bounded)
{
    fake_t f;
    px_dialcache_t *dc = mk(&f, 8);
    dns_cache_addr_t ans = A("198.18.0.2", 300);
    /* A guest walking random names below a wildcard rule. */
    for (int round = 0; round < 4; round++) {
        f.n = 0;
        for (int i = 0; i < FAKE_MAX; i++) {
            char name[64];
            snprintf(name, sizeof name, "n%d-%d.wild.test", round, i);
            rec_t r = {0};
            cr_assert_eq(get(dc, name, &r, NULL), -EINPROGRESS);
            answer(&f, (size_t)i, 0, &ans, 1);
            cr_assert_eq(r.calls, 1);
            cr_assert_leq(stats(dc).entries, 8);
        }
    }
    px_dialcache_stats_t st = stats(dc);
    cr_assert_eq(st.entries, 8);
    cr_assert_eq(st.evictions, 4 * FAKE_MAX - 8);
    cr_assert_eq(st.in_flight, 0);
    px_dialcache_free(dc);
}

/* The value of the /metrics sample named series (no labels), or -1. */
static double metric(const char *series)
{
    char *text = NULL;
    size_t len = 0;
    stats_gauges_t g = {0};
    cr_assert_eq(stats_render(&g, &text, &len), 0);
    double v = -1;
    size_t n = strlen(series);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            v = strtod(p + n + 1, NULL);
            break;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    free(text);
    return v;
}

/* The /metrics series equal the sum of every cache's own counters. */
static void check_metrics(px_dialcache_t *a, px_dialcache_t *b, size_t entries)
{
    px_dialcache_stats_t sa = stats(a), sb = {0};
    if (b)
        sb = stats(b);
    cr_assert_eq(metric("moat_proxy_dialcache_hits_total"), (double)(sa.hits + sb.hits));
    cr_assert_eq(metric("moat_proxy_dialcache_misses_total"), (double)(sa.misses + sb.misses));
    cr_assert_eq(metric("moat_proxy_dialcache_coalesced_total"),
                 (double)(sa.coalesced + sb.coalesced));
    cr_assert_eq(metric("moat_proxy_dialcache_expired_total"), (double)(sa.expired + sb.expired));
    cr_assert_eq(metric("moat_proxy_dialcache_evictions_total"),
                 (double)(sa.evictions + sb.evictions));
    cr_assert_eq(sa.entries + sb.entries, entries);
    cr_assert_eq(metric("moat_proxy_dialcache_entries"), (double)entries);
}

Test(dialcache, metrics_follow_every_event, .init = stats_reset)
{
    fake_t f, g;
    px_dialcache_t *dc = mk(&f, 2);
    rec_t r1 = {0}, r2 = {0}, r = {0};
    px_dialcache_result_t res;
    dns_cache_addr_t ans = A("198.18.0.2", 10);
    /* One miss, two dials joining it, then two hits. */
    cr_assert_eq(get(dc, "a.test", &r1, &res), -EINPROGRESS);
    cr_assert_eq(get(dc, "A.test", &r2, &res), -EINPROGRESS);
    cr_assert_eq(get(dc, "a.test.", &r, &res), -EINPROGRESS);
    answer(&f, 0, 0, &ans, 1);
    cr_assert_eq(get(dc, "a.test", &r, &res), 0);
    cr_assert_eq(get(dc, "a.test", &r, &res), 0);
    cr_assert_eq(metric("moat_proxy_dialcache_misses_total"), 1);
    cr_assert_eq(metric("moat_proxy_dialcache_coalesced_total"), 2);
    cr_assert_eq(metric("moat_proxy_dialcache_hits_total"), 2);
    check_metrics(dc, NULL, 1);
    /* Two more names: a (least recently used) is evicted. */
    f.now++;
    miss_answered(&f, dc, "b.test", &r, 0, &ans, 1);
    miss_answered(&f, dc, "c.test", &r, 0, &ans, 1);
    cr_assert_eq(metric("moat_proxy_dialcache_evictions_total"), 1);
    check_metrics(dc, NULL, 2);
    /* b expires: looked up again in place (one more miss). */
    f.now += 10000;
    cr_assert_eq(get(dc, "b.test", &r, &res), -EINPROGRESS);
    cr_assert_eq(metric("moat_proxy_dialcache_expired_total"), 1);
    cr_assert_eq(metric("moat_proxy_dialcache_misses_total"), 4);
    check_metrics(dc, NULL, 2);
    /* A second cache adds to the same series. */
    px_dialcache_t *dc2 = mk(&g, 4);
    rec_t q = {0};
    miss_answered(&g, dc2, "d.test", &q, 0, &ans, 1);
    check_metrics(dc, dc2, 3);
    /* Flush drops the names (the lookup in flight keeps its waiter, detached). */
    px_dialcache_flush(dc);
    check_metrics(dc, dc2, 1);
    answer(&f, 3, 0, &ans, 1);
    check_metrics(dc, dc2, 1);
    /* Freed caches hold nothing; the counters stay. */
    px_dialcache_free(dc2);
    px_dialcache_free(dc);
    cr_assert_eq(metric("moat_proxy_dialcache_entries"), 0);
    cr_assert_eq(metric("moat_proxy_dialcache_misses_total"), 5);
    cr_assert_eq(metric("moat_proxy_dialcache_hits_total"), 2);
}
