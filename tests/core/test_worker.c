/* tests/core/test_worker.c: a service on a worker's loop (core/worker.h),
 * driven through its wrapper from a "daemon" loop on the test's thread, as
 * the daemon drives it. The service's work is timers on the worker's loop;
 * every op records the thread it ran on. No sockets. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <uv.h>

#include "core/gen.h"
#include "core/service.h"
#include "core/stats.h"
#include "core/worker.h"

typedef struct remote {
    moat_service_t svc;
    uv_loop_t *loop;
    uv_timer_t work; /* one piece of work, ending WORK_MS after start */
    bool working;
    pthread_t op_thread[5]; /* start, reload, drain, close, free */
    atomic_int ops[5];
    int start_rc;
    uint64_t reload_gen;
    atomic_bool *freed;
} remote_t;

enum { OP_START, OP_RELOAD, OP_DRAIN, OP_CLOSE, OP_FREE };
#define WORK_MS 50

static void op(remote_t *r, int which)
{
    r->op_thread[which] = pthread_self();
    atomic_fetch_add(&r->ops[which], 1);
}

static void remote_work_closed_cb(uv_handle_t *h)
{
    remote_t *r = h->data;
    moat_service_handle_closed(&r->svc);
}

static void remote_work_cb(uv_timer_t *t)
{
    remote_t *r = t->data;
    r->working = false;
    /* Counted as the daemon's counters would be: on the worker's set. */
    stats_conn_decision(0, STATS_LISTENER_TLS, STATS_VERDICT_ALLOW, FILTER_REASON_ALLOWLIST, 1, 1);
    uv_close((uv_handle_t *)&r->work, remote_work_closed_cb);
    moat_service_busy_done(&r->svc);
}

static int remote_start(moat_service_t *svc, uv_loop_t *loop, moat_gen_t *gen)
{
    remote_t *r = svc->data;
    (void)gen;
    op(r, OP_START);
    if (r->start_rc)
        return r->start_rc;
    r->loop = loop;
    uv_timer_init(loop, &r->work);
    r->work.data = r;
    uv_timer_start(&r->work, remote_work_cb, WORK_MS, 0);
    r->working = true;
    moat_service_hold(svc);
    return 0;
}

static int remote_reload(moat_service_t *svc, moat_gen_t *gen)
{
    remote_t *r = svc->data;
    op(r, OP_RELOAD);
    r->reload_gen = gen->id;
    return gen->id == 99 ? -EADDRINUSE : 0;
}

static void remote_drain(moat_service_t *svc)
{
    op(svc->data, OP_DRAIN);
}

static void remote_close(moat_service_t *svc)
{
    remote_t *r = svc->data;
    op(r, OP_CLOSE);
    if (r->working) {
        r->working = false;
        uv_timer_stop(&r->work);
        uv_close((uv_handle_t *)&r->work, remote_work_closed_cb);
        moat_service_busy_done(svc);
    }
}

static void remote_free(moat_service_t *svc)
{
    remote_t *r = svc->data;
    op(r, OP_FREE);
    atomic_store(r->freed, true);
    /* ops[] is read after free by the test: the test owns r. */
}

static const moat_service_ops_t remote_ops = {
    .name = "remote",
    .start = remote_start,
    .reload = remote_reload,
    .drain = remote_drain,
    .close = remote_close,
    .free = remote_free,
};

typedef struct harness {
    uv_loop_t loop;
    moat_worker_t *w;
    remote_t r;
    atomic_bool freed;
    moat_service_t *wrap;
    moat_gen_t *gen;
    int drained, closed;
} harness_t;

static harness_t H;

static void h_setup(void)
{
    memset(&H, 0, sizeof H);
    cr_assert_eq(uv_loop_init(&H.loop), 0);
    cr_assert_eq(stats_workers(2), 0);
    cr_assert_eq(moat_worker_create(1, &H.w), 0);
    H.r.freed = &H.freed;
    moat_service_init(&H.r.svc, &remote_ops, &H.r);
    cr_assert_eq(moat_worker_wrap(H.w, &H.r.svc, &H.wrap), 0);
    cr_assert_eq(moat_gen_load(NULL, &H.gen, &(cfg_diag_t){0}), 0);
    H.gen->id = 1;
}

static void h_teardown(void)
{
    H.wrap->ops->free(H.wrap);
    moat_worker_free(H.w);
    moat_gen_unref(H.gen);
    cr_assert_eq(uv_loop_close(&H.loop), 0, "a handle left on the daemon's loop");
    stats_reset();
}

static void h_closed_cb(moat_service_t *svc)
{
    (void)svc;
    H.closed++;
}

static void h_drained_cb(moat_service_t *svc)
{
    H.drained++;
    cr_assert_eq(H.r.working, false, "drained before the worker's work ended");
    moat_service_close(svc, h_closed_cb);
}

TestSuite(worker, .init = h_setup, .fini = h_teardown);

Test(worker, every_op_runs_on_the_worker_thread_and_drain_waits_for_its_work)
{
    cr_assert_eq(moat_service_start(H.wrap, &H.loop, H.gen), 0);
    cr_assert_eq(moat_service_state(H.wrap), MOAT_SERVICE_STARTED);
    cr_assert_eq(atomic_load(&H.r.ops[OP_START]), 1, "start waited for the worker's result");
    cr_assert_neq(H.r.op_thread[OP_START], pthread_self());

    moat_gen_t *g2;
    cr_assert_eq(moat_gen_load(NULL, &g2, &(cfg_diag_t){0}), 0);
    g2->id = 2;
    cr_assert_eq(H.wrap->ops->reload(H.wrap, g2), 0);
    cr_assert_eq(H.r.reload_gen, 2, "reload waited for the worker");
    cr_assert(pthread_equal(H.r.op_thread[OP_RELOAD], H.r.op_thread[OP_START]));
    g2->id = 99; /* the remote reports a partial reload for this one */
    cr_assert_eq(H.wrap->ops->reload(H.wrap, g2), -EADDRINUSE);
    moat_gen_unref(g2); /* the worker dropped its own reference already */

    moat_service_drain(H.wrap, h_drained_cb);
    uv_run(&H.loop, UV_RUN_DEFAULT); /* ends once the wrapper's async is closed */
    cr_assert_eq(H.drained, 1);
    cr_assert_eq(H.closed, 1);
    cr_assert_eq(moat_service_state(H.wrap), MOAT_SERVICE_CLOSED);
    cr_assert_eq(atomic_load(&H.r.ops[OP_DRAIN]), 1);
    cr_assert_eq(atomic_load(&H.r.ops[OP_CLOSE]), 1);
    cr_assert(pthread_equal(H.r.op_thread[OP_DRAIN], H.r.op_thread[OP_START]));

    /* The worker's count went to the worker's own set; the render sums. */
    char *text;
    size_t len;
    cr_assert_eq(stats_render(&(stats_gauges_t){0}, &text, &len), 0);
    cr_assert(strstr(text, "moat_worker_connections_total{worker=\"1\"} 1\n"), "%s", text);
    cr_assert(strstr(text, "moat_worker_connections_total{worker=\"0\"} 0\n"), "%s", text);
    cr_assert(strstr(text, "moat_connections_total{listener=\"tls\",verdict=\"allow\","
                           "reason=\"allowlist\"} 1\n"),
              "%s", text);
    free(text);
}

static void h_closed_stop_cb(moat_service_t *svc)
{
    (void)svc;
    H.closed++;
}

Test(worker, close_while_draining_ends_the_work_at_once)
{
    cr_assert_eq(moat_service_start(H.wrap, &H.loop, H.gen), 0);
    moat_service_drain(H.wrap, h_drained_cb);
    moat_service_close(H.wrap, h_closed_stop_cb); /* the grace is over */
    uint64_t t0 = uv_hrtime();
    uv_run(&H.loop, UV_RUN_DEFAULT);
    cr_assert_lt((uv_hrtime() - t0) / 1000000, WORK_MS, "close waited for the work");
    cr_assert_eq(H.drained, 0, "a drain's done does not run after a close");
    cr_assert_eq(H.closed, 1);
    cr_assert_eq(moat_service_state(H.wrap), MOAT_SERVICE_CLOSED);
}

Test(worker, a_failed_start_is_reported_and_nothing_stays_open)
{
    H.r.start_rc = -EADDRINUSE;
    cr_assert_eq(moat_service_start(H.wrap, &H.loop, H.gen), -EADDRINUSE);
    cr_assert_eq(moat_service_state(H.wrap), MOAT_SERVICE_IDLE);
    uv_run(&H.loop, UV_RUN_DEFAULT); /* closes the wrapper's async */
}

Test(worker, free_runs_on_the_worker)
{
    cr_assert_eq(moat_service_start(H.wrap, &H.loop, H.gen), 0);
    moat_service_close(H.wrap, h_closed_stop_cb);
    uv_run(&H.loop, UV_RUN_DEFAULT);
    H.wrap->ops->free(H.wrap);
    cr_assert(atomic_load(&H.freed));
    cr_assert(pthread_equal(H.r.op_thread[OP_FREE], H.r.op_thread[OP_START]));
    cr_assert(!pthread_equal(H.r.op_thread[OP_FREE], pthread_self()));
    /* teardown frees the wrapper: make that a no-op wrapper of a fresh remote */
    static remote_t r2;
    static atomic_bool freed2;
    r2.freed = &freed2;
    moat_service_init(&r2.svc, &remote_ops, &r2);
    cr_assert_eq(moat_worker_wrap(H.w, &r2.svc, &H.wrap), 0);
}
