/* core/service.c: the service contract (see service.h). */
#include "core/service.h"

#include <assert.h>
#include <string.h>

void moat_service_init(moat_service_t *svc, const moat_service_ops_t *ops, void *data)
{
    memset(svc, 0, sizeof *svc);
    svc->ops = ops;
    svc->data = data;
    svc->state = MOAT_SERVICE_IDLE;
}

/* Run the done callback the state waits for, once, when its counter is
 * zero; not while an op runs (its caller checks again when it returns). */
static void service_check(moat_service_t *svc)
{
    if (svc->in_op)
        return;
    if (svc->state == MOAT_SERVICE_DRAINING && svc->busy == 0 && svc->drain_done) {
        moat_service_done_cb done = svc->drain_done;
        svc->drain_done = NULL;
        done(svc);
    } else if (svc->state == MOAT_SERVICE_CLOSING && svc->handles == 0) {
        moat_service_done_cb done = svc->close_done;
        svc->state = MOAT_SERVICE_CLOSED;
        svc->close_done = NULL;
        if (done)
            done(svc);
    }
}

/* One of svc's counters goes down; at zero a done may be due. Going below
 * zero is a double done: a bug in the service. */
static void service_down(moat_service_t *svc, unsigned *counter)
{
    assert(*counter > 0);
    if (--*counter == 0)
        service_check(svc);
}

int moat_service_start(moat_service_t *svc, uv_loop_t *loop, moat_gen_t *gen)
{
    assert(svc->state == MOAT_SERVICE_IDLE);
    int rc = svc->ops->start(svc, loop, gen);
    if (rc == 0)
        svc->state = MOAT_SERVICE_STARTED;
    return rc;
}

/* Run op; a counter reaching zero inside it is reported once it returns. */
static void service_op(moat_service_t *svc, void (*op)(moat_service_t *svc))
{
    svc->in_op++;
    op(svc);
    svc->in_op--;
    service_check(svc);
}

void moat_service_drain(moat_service_t *svc, moat_service_done_cb done)
{
    assert(svc->state == MOAT_SERVICE_STARTED);
    svc->state = MOAT_SERVICE_DRAINING;
    svc->drain_done = done;
    service_op(svc, svc->ops->drain);
}

void moat_service_close(moat_service_t *svc, moat_service_done_cb done)
{
    assert(svc->state == MOAT_SERVICE_STARTED || svc->state == MOAT_SERVICE_DRAINING);
    svc->state = MOAT_SERVICE_CLOSING;
    svc->drain_done = NULL;
    svc->close_done = done;
    service_op(svc, svc->ops->close);
}

void moat_service_busy_add(moat_service_t *svc)
{
    svc->busy++;
}

void moat_service_busy_done(moat_service_t *svc)
{
    service_down(svc, &svc->busy);
}

void moat_service_handle_open(moat_service_t *svc)
{
    assert(svc->state != MOAT_SERVICE_CLOSED);
    svc->handles++;
}

void moat_service_handle_closed(moat_service_t *svc)
{
    service_down(svc, &svc->handles);
}

void moat_service_hold(moat_service_t *svc)
{
    moat_service_busy_add(svc);
    moat_service_handle_open(svc);
}

void moat_service_release(moat_service_t *svc)
{
    moat_service_busy_done(svc);
    moat_service_handle_closed(svc);
}

moat_service_state_t moat_service_state(const moat_service_t *svc)
{
    return svc->state;
}

bool moat_service_draining(const moat_service_t *svc)
{
    return svc->state == MOAT_SERVICE_DRAINING;
}

bool moat_service_closing(const moat_service_t *svc)
{
    return svc->state >= MOAT_SERVICE_CLOSING;
}

bool moat_service_stopping(const moat_service_t *svc)
{
    return svc->state >= MOAT_SERVICE_DRAINING;
}

/* ---- listeners ----------------------------------------------------------------------- */

int moat_listeners_apply(moat_list_t *list, size_t n_wanted, const moat_listeners_ops_t *ops,
                         void *ctx)
{
    int rc = 0;
    moat_list_foreach(it, list) container_of(it, moat_listener_t, node)->keep = false;
    for (size_t i = 0; i < n_wanted; i++) {
        const cfg_addr_t *addr;
        int kind;
        ops->wanted(ctx, i, &addr, &kind);
        moat_listener_t *found = NULL;
        moat_list_foreach(it, list)
        {
            moat_listener_t *l = container_of(it, moat_listener_t, node);
            if (ops->same(ctx, l, addr, kind)) {
                found = l;
                break;
            }
        }
        if (found) {
            found->keep = true;
            continue;
        }
        moat_listener_t *l = NULL;
        int r = ops->open(ctx, addr, kind, &l);
        if (r != 0) {
            if (rc == 0)
                rc = r;
            continue;
        }
        l->keep = true;
        moat_list_push(list, &l->node);
    }
    moat_list_foreach_safe(it, nx, list)
    {
        moat_listener_t *l = container_of(it, moat_listener_t, node);
        if (!l->keep)
            ops->close(ctx, l);
    }
    return rc;
}
