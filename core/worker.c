/* core/worker.c: worker loops and the wrapper that drives a service on one
 * (see worker.h).
 *
 * Commands go from the daemon's loop to a worker through a queue under the
 * worker's lock and a uv_async_t on the worker's loop; start, reload and
 * free wait for their result on a condition variable. What comes back (a
 * wrapped copy drained, or closed) is two flags under the same lock and a
 * uv_async_t on the daemon's loop, one per wrapper. The worker never waits
 * for the daemon's loop, so the waits cannot deadlock.
 */
#include "core/worker.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/stats.h"

typedef enum worker_op {
    WORKER_START,
    WORKER_RELOAD,
    WORKER_DRAIN,
    WORKER_CLOSE,
    WORKER_FREE,
} worker_op_t;

typedef struct worker_wrap worker_wrap_t;

typedef struct worker_cmd {
    moat_list_t node;
    worker_op_t op;
    worker_wrap_t *wr;
    moat_gen_t *gen; /* START, RELOAD: a reference the worker drops */
    bool wait;       /* the sender waits: the cmd is on its stack, done set when run */
    bool done;
    int rc;
} worker_cmd_t;

struct moat_worker {
    size_t index;
    uv_loop_t loop;
    uv_async_t wake; /* on loop: commands queued */
    uv_thread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* a waited command is done */
    moat_list_t cmds;
    bool quit;
};

/* The service the daemon sees for worker w's copy inner. */
struct worker_wrap {
    moat_service_t svc; /* first: the daemon's handle */
    moat_worker_t *w;
    moat_service_t *inner;
    uv_async_t back; /* on the daemon's loop: inner drained or closed */
    bool back_open;
    bool drained, closed; /* under w->lock: set by the worker */
    bool busy_released;
};

size_t moat_workers_wanted(const cfg_t *cfg)
{
    if (cfg->workers)
        return cfg->workers;
    cpu_set_t set;
    long n = 1;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n < 1)
        n = 1;
    return n > CFG_WORKERS_MAX ? CFG_WORKERS_MAX : (size_t)n;
}

/* ---- on the worker's thread ------------------------------------------------------------- */

static worker_wrap_t *wrap_of_inner(moat_service_t *inner)
{
    return inner->host;
}

/* Tell the daemon's loop something about wr (flag set under the lock). */
static void worker_tell(worker_wrap_t *wr, bool *flag)
{
    pthread_mutex_lock(&wr->w->lock);
    *flag = true;
    pthread_mutex_unlock(&wr->w->lock);
    uv_async_send(&wr->back);
}

static void worker_inner_drained_cb(moat_service_t *inner)
{
    worker_wrap_t *wr = wrap_of_inner(inner);
    worker_tell(wr, &wr->drained);
}

static void worker_inner_closed_cb(moat_service_t *inner)
{
    worker_wrap_t *wr = wrap_of_inner(inner);
    worker_tell(wr, &wr->closed);
}

static void worker_run(moat_worker_t *w, worker_cmd_t *cmd)
{
    moat_service_t *inner = cmd->wr->inner;
    moat_service_state_t st = moat_service_state(inner);
    switch (cmd->op) {
    case WORKER_START:
        cmd->rc = moat_service_start(inner, &w->loop, cmd->gen);
        break;
    case WORKER_RELOAD:
        cmd->rc = st == MOAT_SERVICE_STARTED ? inner->ops->reload(inner, cmd->gen) : 0;
        break;
    case WORKER_DRAIN:
        if (st == MOAT_SERVICE_STARTED)
            moat_service_drain(inner, worker_inner_drained_cb);
        break;
    case WORKER_CLOSE:
        /* The daemon closes a wrapper once, from STARTED or DRAINING, and
         * the copy is then in one of those states too. */
        if (st == MOAT_SERVICE_STARTED || st == MOAT_SERVICE_DRAINING)
            moat_service_close(inner, worker_inner_closed_cb);
        break;
    case WORKER_FREE:
        if (inner->ops->free)
            inner->ops->free(inner);
        break;
    }
    moat_gen_unref(cmd->gen);
}

static void worker_wake_cb(uv_async_t *a)
{
    moat_worker_t *w = a->data;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        moat_list_t *n = moat_list_first(&w->cmds);
        if (n)
            moat_list_remove(n);
        bool quit = w->quit;
        pthread_mutex_unlock(&w->lock);
        if (!n) {
            if (quit)
                uv_close((uv_handle_t *)&w->wake, NULL);
            return;
        }
        worker_cmd_t *cmd = container_of(n, worker_cmd_t, node);
        worker_run(w, cmd);
        if (!cmd->wait) {
            free(cmd);
            continue;
        }
        pthread_mutex_lock(&w->lock);
        cmd->done = true;
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
    }
}

static void worker_main(void *arg)
{
    moat_worker_t *w = arg;
    stats_bind_worker(w->index);
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

/* ---- on the daemon's loop ----------------------------------------------------------------- */

/* Queue cmd (and wait for it when cmd->wait). A posted cmd belongs to the
 * worker once queued (it frees it, maybe before uv_async_send returns), so
 * nothing of it is read after the unlock. */
static void worker_send(moat_worker_t *w, worker_cmd_t *cmd)
{
    bool wait = cmd->wait;
    pthread_mutex_lock(&w->lock);
    moat_list_append(&w->cmds, &cmd->node);
    pthread_mutex_unlock(&w->lock);
    uv_async_send(&w->wake);
    if (!wait)
        return;
    pthread_mutex_lock(&w->lock);
    while (!cmd->done)
        pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

/* Run op on wr's copy and wait for its result. */
static int worker_call(worker_wrap_t *wr, worker_op_t op, moat_gen_t *gen)
{
    worker_cmd_t cmd = {.op = op, .wr = wr, .gen = gen ? moat_gen_ref(gen) : NULL, .wait = true};
    worker_send(wr->w, &cmd);
    return cmd.rc;
}

/* Post op on wr's copy. A command that cannot be allocated is run as a
 * waited one instead (on the stack): never lost. */
static void worker_post(worker_wrap_t *wr, worker_op_t op)
{
    worker_cmd_t *cmd = calloc(1, sizeof *cmd);
    if (!cmd) {
        (void)worker_call(wr, op, NULL);
        return;
    }
    cmd->op = op;
    cmd->wr = wr;
    worker_send(wr->w, cmd);
}

static worker_wrap_t *wrap_of(moat_service_t *svc)
{
    return (worker_wrap_t *)svc;
}

static void wrap_release_busy(worker_wrap_t *wr)
{
    if (wr->busy_released)
        return;
    wr->busy_released = true;
    moat_service_busy_done(&wr->svc); /* may drain-done: ops->close runs inside */
}

static void wrap_back_closed_cb(uv_handle_t *h)
{
    worker_wrap_t *wr = h->data;
    if (moat_service_state(&wr->svc) == MOAT_SERVICE_IDLE)
        return; /* a failed start: nothing counted */
    wrap_release_busy(wr);
    moat_service_handle_closed(&wr->svc); /* may close-done: touch nothing after */
}

static void wrap_back_cb(uv_async_t *a)
{
    worker_wrap_t *wr = a->data;
    pthread_mutex_lock(&wr->w->lock);
    bool drained = wr->drained, closed = wr->closed;
    pthread_mutex_unlock(&wr->w->lock);
    if (closed) {
        if (wr->back_open) {
            wr->back_open = false;
            uv_close((uv_handle_t *)&wr->back, wrap_back_closed_cb);
        }
        return;
    }
    if (drained)
        wrap_release_busy(wr);
}

static int wrap_start(moat_service_t *svc, uv_loop_t *loop, moat_gen_t *gen)
{
    worker_wrap_t *wr = wrap_of(svc);
    int rc = uv_async_init(loop, &wr->back, wrap_back_cb);
    if (rc != 0) {
        log_error("%s: worker %zu: %s", wr->inner->ops->name, wr->w->index, uv_strerror(rc));
        return rc;
    }
    wr->back.data = wr;
    wr->back_open = true;
    rc = worker_call(wr, WORKER_START, gen);
    if (rc != 0) {
        wr->back_open = false;
        uv_close((uv_handle_t *)&wr->back, wrap_back_closed_cb);
        return rc;
    }
    moat_service_hold(svc); /* busy until the copy drained, a handle until it closed */
    return 0;
}

static int wrap_reload(moat_service_t *svc, moat_gen_t *gen)
{
    return worker_call(wrap_of(svc), WORKER_RELOAD, gen);
}

static void wrap_drain(moat_service_t *svc)
{
    worker_post(wrap_of(svc), WORKER_DRAIN);
}

static void wrap_close(moat_service_t *svc)
{
    worker_post(wrap_of(svc), WORKER_CLOSE);
}

static void wrap_free(moat_service_t *svc)
{
    worker_wrap_t *wr = wrap_of(svc);
    (void)worker_call(wr, WORKER_FREE, NULL);
    free(wr);
}

static const moat_service_ops_t wrap_ops = {
    .name = "worker",
    .start = wrap_start,
    .reload = wrap_reload,
    .drain = wrap_drain,
    .close = wrap_close,
    .free = wrap_free,
};

int moat_worker_wrap(moat_worker_t *w, moat_service_t *inner, moat_service_t **out)
{
    *out = NULL;
    worker_wrap_t *wr = calloc(1, sizeof *wr);
    if (!wr) {
        inner->ops->free(inner);
        return -ENOMEM;
    }
    wr->w = w;
    wr->inner = inner;
    inner->host = wr;
    moat_service_init(&wr->svc, &wrap_ops, wr);
    *out = &wr->svc;
    return 0;
}

uv_loop_t *moat_worker_loop(moat_worker_t *w)
{
    return &w->loop;
}

int moat_worker_create(size_t index, moat_worker_t **out)
{
    *out = NULL;
    moat_worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->index = index;
    moat_list_init(&w->cmds);
    int rc = uv_loop_init(&w->loop);
    if (rc != 0) {
        free(w);
        return rc;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    if ((rc = uv_async_init(&w->loop, &w->wake, worker_wake_cb)) == 0) {
        w->wake.data = w;
        if ((rc = uv_thread_create(&w->thread, worker_main, w)) == 0) {
            *out = w;
            return 0;
        }
        uv_close((uv_handle_t *)&w->wake, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(&w->loop);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
    return rc;
}

void moat_worker_free(moat_worker_t *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->quit = true;
    pthread_mutex_unlock(&w->lock);
    uv_async_send(&w->wake);
    uv_thread_join(&w->thread);
    uv_loop_close(&w->loop);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
