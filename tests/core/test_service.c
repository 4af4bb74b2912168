/* tests/core/test_service.c: the service contract (core/service.h) driven by
 * a fake service on a real libuv loop: its work is timers that end by
 * themselves, its handles are those timers. No sockets. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "filter/list.h"
#include "core/service.h"

#define FAKE_MAX 8

typedef struct fake {
    moat_service_t svc;
    uv_loop_t loop;
    uv_timer_t work[FAKE_MAX]; /* each a piece of work and a handle */
    size_t n_work;
    int drain_ops, close_ops; /* ops->drain / ops->close calls */
    bool in_op;               /* inside ops->drain or ops->close */
    int drained, closed;      /* done callbacks */
    unsigned busy_at_drained; /* svc.busy when drained ran */
    int work_done;            /* pieces of work ended so far */
    int work_done_at_drained; /* ... when drained ran */
    bool close_from_drained;  /* drained closes, as the daemon does */
    bool free_work_in_drain;  /* ops->drain ends every piece of work at once */
} fake_t;

static fake_t *fake_of(moat_service_t *svc)
{
    return svc->data;
}

static void fake_work_closed_cb(uv_handle_t *h)
{
    fake_t *f = h->data;
    moat_service_handle_closed(&f->svc);
}

static void fake_work_cb(uv_timer_t *t)
{
    fake_t *f = t->data;
    f->work_done++;
    moat_service_busy_done(&f->svc); /* may run drained */
}

static int fake_start(moat_service_t *svc, uv_loop_t *loop, moat_gen_t *gen)
{
    (void)svc;
    (void)loop;
    (void)gen;
    return 0;
}

static int fake_reload(moat_service_t *svc, moat_gen_t *gen)
{
    (void)svc;
    (void)gen;
    return 0;
}

static void fake_drain(moat_service_t *svc)
{
    fake_t *f = fake_of(svc);
    f->in_op = true;
    f->drain_ops++;
    if (f->free_work_in_drain)
        for (size_t i = 0; i < f->n_work; i++)
            if (uv_is_active((uv_handle_t *)&f->work[i])) {
                uv_timer_stop(&f->work[i]);
                fake_work_cb(&f->work[i]);
            }
    f->in_op = false;
}

static void fake_close(moat_service_t *svc)
{
    fake_t *f = fake_of(svc);
    f->in_op = true;
    f->close_ops++;
    for (size_t i = 0; i < f->n_work; i++) {
        if (uv_is_closing((uv_handle_t *)&f->work[i]))
            continue;
        if (uv_is_active((uv_handle_t *)&f->work[i])) {
            uv_timer_stop(&f->work[i]);
            f->work_done++;
            moat_service_busy_done(svc);
        }
        uv_close((uv_handle_t *)&f->work[i], fake_work_closed_cb);
    }
    f->in_op = false;
}

/* Freed by the test itself (fake_destroy). */
static void fake_free(moat_service_t *svc)
{
    (void)svc;
}

static const moat_service_ops_t fake_ops = MOAT_SERVICE_OPS(fake, "fake");

static void fake_closed_cb(moat_service_t *svc)
{
    fake_t *f = fake_of(svc);
    cr_assert(!f->in_op, "close's done ran inside an op");
    f->closed++;
}

static void fake_drained_cb(moat_service_t *svc)
{
    fake_t *f = fake_of(svc);
    cr_assert(!f->in_op, "drain's done ran inside an op");
    f->drained++;
    f->busy_at_drained = svc->busy;
    f->work_done_at_drained = f->work_done;
    if (f->close_from_drained)
        moat_service_close(svc, fake_closed_cb);
}

static fake_t *fake_new(void)
{
    fake_t *f = calloc(1, sizeof *f);
    cr_assert_not_null(f);
    cr_assert_eq(uv_loop_init(&f->loop), 0);
    moat_service_init(&f->svc, &fake_ops, f);
    cr_assert_eq(moat_service_start(&f->svc, &f->loop, NULL), 0);
    cr_assert_eq(moat_service_state(&f->svc), MOAT_SERVICE_STARTED);
    return f;
}

/* A piece of work that ends after ms (0: never by itself). */
static void fake_add_work(fake_t *f, uint64_t ms)
{
    cr_assert_lt(f->n_work, FAKE_MAX);
    uv_timer_t *t = &f->work[f->n_work++];
    uv_timer_init(&f->loop, t);
    t->data = f;
    moat_service_handle_open(&f->svc);
    moat_service_busy_add(&f->svc);
    uv_timer_start(t, fake_work_cb, ms ? ms : 1000000, 0);
}

static void fake_destroy(fake_t *f)
{
    cr_assert_eq(uv_run(&f->loop, UV_RUN_NOWAIT), 0, "handles left on the loop");
    cr_assert_eq(uv_loop_close(&f->loop), 0);
    free(f);
}

Test(service, drain_done_waits_for_the_last_work)
{
    fake_t *f = fake_new();
    fake_add_work(f, 5);
    fake_add_work(f, 20);
    moat_service_drain(&f->svc, fake_drained_cb);
    cr_assert_eq(f->drain_ops, 1);
    cr_assert_eq(f->drained, 0, "drained with work open");
    cr_assert(moat_service_draining(&f->svc));
    cr_assert(moat_service_stopping(&f->svc));
    cr_assert_not(moat_service_closing(&f->svc));
    uv_run(&f->loop, UV_RUN_ONCE);
    while (f->work_done < 2)
        uv_run(&f->loop, UV_RUN_ONCE);
    cr_assert_eq(f->drained, 1);
    cr_assert_eq(f->busy_at_drained, 0);
    cr_assert_eq(f->work_done_at_drained, 2, "drained before the last work ended");
    moat_service_close(&f->svc, fake_closed_cb);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    cr_assert_eq(f->closed, 1);
    cr_assert_eq(f->drained, 1);
    fake_destroy(f);
}

Test(service, drain_without_work_is_done_once_the_op_returns)
{
    fake_t *f = fake_new();
    moat_service_drain(&f->svc, fake_drained_cb);
    cr_assert_eq(f->drained, 1);
    moat_service_close(&f->svc, fake_closed_cb);
    cr_assert_eq(f->closed, 1, "no handles: closed at once");
    cr_assert_eq(moat_service_state(&f->svc), MOAT_SERVICE_CLOSED);
    fake_destroy(f);
}

Test(service, work_ended_inside_the_drain_op_is_reported_after_it)
{
    fake_t *f = fake_new();
    fake_add_work(f, 0);
    fake_add_work(f, 0);
    f->free_work_in_drain = true;
    moat_service_drain(&f->svc, fake_drained_cb); /* fake_drained_cb asserts !in_op */
    cr_assert_eq(f->drained, 1);
    moat_service_close(&f->svc, fake_closed_cb);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    cr_assert_eq(f->closed, 1);
    fake_destroy(f);
}

Test(service, close_done_waits_for_the_last_handle)
{
    fake_t *f = fake_new();
    fake_add_work(f, 0);
    fake_add_work(f, 0);
    fake_add_work(f, 0);
    moat_service_close(&f->svc, fake_closed_cb);
    cr_assert_eq(f->close_ops, 1);
    cr_assert(moat_service_closing(&f->svc));
    cr_assert_eq(f->closed, 0, "closed with handles open");
    uv_run(&f->loop, UV_RUN_DEFAULT);
    cr_assert_eq(f->closed, 1);
    cr_assert_eq(f->drained, 0);
    cr_assert_eq(moat_service_state(&f->svc), MOAT_SERVICE_CLOSED);
    fake_destroy(f);
}

/* The daemon's order: the drain's done closes the service, from inside the
 * busy_done of the last work (a timer callback here). */
Test(service, drain_then_close_from_the_drain_done)
{
    fake_t *f = fake_new();
    fake_add_work(f, 5);
    fake_add_work(f, 10);
    f->close_from_drained = true;
    moat_service_drain(&f->svc, fake_drained_cb);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    cr_assert_eq(f->drained, 1);
    cr_assert_eq(f->close_ops, 1);
    cr_assert_eq(f->closed, 1);
    fake_destroy(f);
}

/* Grace over: close comes while work is still open; the drain's done never
 * runs, the close's does once every handle is closed. */
Test(service, close_during_drain)
{
    fake_t *f = fake_new();
    fake_add_work(f, 5);
    fake_add_work(f, 0);
    moat_service_drain(&f->svc, fake_drained_cb);
    while (f->work_done < 1)
        uv_run(&f->loop, UV_RUN_ONCE);
    cr_assert_eq(f->drained, 0);
    moat_service_close(&f->svc, fake_closed_cb);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    cr_assert_eq(f->drained, 0, "a drain's done after close");
    cr_assert_eq(f->closed, 1);
    fake_destroy(f);
}

Test(service, busy_done_without_work_asserts, .signal = SIGABRT)
{
    moat_service_t svc;
    moat_service_init(&svc, &fake_ops, NULL);
    moat_service_busy_add(&svc);
    moat_service_busy_done(&svc);
    moat_service_busy_done(&svc); /* a double done */
}

Test(service, handle_closed_twice_asserts, .signal = SIGABRT)
{
    moat_service_t svc;
    moat_service_init(&svc, &fake_ops, NULL);
    moat_service_handle_open(&svc);
    moat_service_handle_closed(&svc);
    moat_service_handle_closed(&svc);
}

Test(service, drain_twice_asserts, .signal = SIGABRT)
{
    fake_t *f = fake_new();
    moat_service_drain(&f->svc, fake_drained_cb);
    moat_service_drain(&f->svc, fake_drained_cb);
}

/* ---- moat_listeners_apply ------------------------------------------------------------ */

typedef struct fake_lsn {
    moat_listener_t base;
    int addr; /* stands for the address */
    int kind;
} fake_lsn_t;

typedef struct fake_lsns {
    moat_list_t list;
    const int *want; /* addresses wanted, each as kind 0 */
    size_t n_want;
    cfg_addr_t addrs[8];
    int opened, closed;
    int fail_addr; /* open fails for it (0: none) */
} fake_lsns_t;

static void fl_wanted(void *ctx, size_t i, const cfg_addr_t **addr, int *kind)
{
    fake_lsns_t *x = ctx;
    x->addrs[i].sa_len = (socklen_t)x->want[i]; /* the address, in a field the test owns */
    *addr = &x->addrs[i];
    *kind = 0;
}

static bool fl_same(void *ctx, moat_listener_t *ml, const cfg_addr_t *addr, int kind)
{
    (void)ctx;
    fake_lsn_t *l = container_of(ml, fake_lsn_t, base);
    return l->addr == (int)addr->sa_len && l->kind == kind;
}

static int fl_open(void *ctx, const cfg_addr_t *addr, int kind, moat_listener_t **out)
{
    fake_lsns_t *x = ctx;
    *out = NULL;
    if ((int)addr->sa_len == x->fail_addr)
        return -EADDRINUSE;
    fake_lsn_t *l = calloc(1, sizeof *l);
    cr_assert_not_null(l);
    l->addr = (int)addr->sa_len;
    l->kind = kind;
    x->opened++;
    *out = &l->base;
    return 0;
}

static void fl_close(void *ctx, moat_listener_t *ml)
{
    fake_lsns_t *x = ctx;
    moat_list_remove(&ml->node);
    free(container_of(ml, fake_lsn_t, base));
    x->closed++;
}

static const moat_listeners_ops_t fl_ops = {
    .wanted = fl_wanted, .same = fl_same, .open = fl_open, .close = fl_close};

static bool fl_has(fake_lsns_t *x, int addr)
{
    moat_list_foreach(it, &x->list) if (container_of(it, fake_lsn_t, base.node)->addr ==
                                        addr) return true;
    return false;
}

Test(service, listeners_keep_open_and_close)
{
    fake_lsns_t x = {0};
    moat_list_init(&x.list);
    const int first[] = {1, 2, 3};
    x.want = first;
    x.n_want = 3;
    cr_assert_eq(moat_listeners_apply(&x.list, x.n_want, &fl_ops, &x), 0);
    cr_assert_eq(x.opened, 3);
    cr_assert_eq(x.closed, 0);

    const int second[] = {3, 4, 1};
    x.want = second;
    x.opened = 0;
    cr_assert_eq(moat_listeners_apply(&x.list, x.n_want, &fl_ops, &x), 0);
    cr_assert_eq(x.opened, 1, "only 4 is new");
    cr_assert_eq(x.closed, 1, "only 2 is gone");
    cr_assert(fl_has(&x, 1) && fl_has(&x, 3) && fl_has(&x, 4) && !fl_has(&x, 2));

    const int third[] = {5, 6};
    x.want = third;
    x.n_want = 2;
    x.fail_addr = 5;
    x.opened = x.closed = 0;
    cr_assert_eq(moat_listeners_apply(&x.list, x.n_want, &fl_ops, &x), -EADDRINUSE);
    cr_assert_eq(x.opened, 1, "6 is still tried after 5 failed");
    cr_assert_eq(x.closed, 3);
    cr_assert(fl_has(&x, 6) && !fl_has(&x, 5));

    x.n_want = 0;
    cr_assert_eq(moat_listeners_apply(&x.list, 0, &fl_ops, &x), 0);
    cr_assert(moat_list_empty(&x.list));
}

/* ---- filter/list.h ----------------------------------------------------------------------- */

typedef struct item {
    int v;
    moat_list_t node;
} item_t;

Test(list, push_append_remove_move)
{
    moat_list_t h, to;
    moat_list_init(&h);
    item_t a = {.v = 1}, b = {.v = 2}, c = {.v = 3};
    moat_list_push(&h, &a.node);   /* a */
    moat_list_push(&h, &b.node);   /* b a */
    moat_list_append(&h, &c.node); /* b a c */
    int seen[3], n = 0;
    moat_list_foreach(it, &h) seen[n++] = container_of(it, item_t, node)->v;
    cr_assert_eq(n, 3);
    cr_assert(seen[0] == 2 && seen[1] == 1 && seen[2] == 3);
    moat_list_remove(&a.node);
    cr_assert_not(moat_list_linked(&a.node));
    moat_list_remove(&a.node); /* twice: harmless */
    moat_list_move(&h, &to);
    cr_assert(moat_list_empty(&h));
    cr_assert_eq(container_of(moat_list_first(&to), item_t, node)->v, 2);
    moat_list_foreach_safe(it, nx, &to) moat_list_remove(it);
    cr_assert(moat_list_empty(&to));
    cr_assert_null(moat_list_first(&to));
    moat_list_move(&h, &to);
    cr_assert(moat_list_empty(&to));
}
