/* core/service.h: the service contract.
 *
 * A service is one part of the daemon that owns listeners and the work they
 * bring (the DNS resolver, the TCP proxy, metrics, the control socket). It
 * embeds a moat_service_t and fills in moat_service_ops_t; the daemon starts,
 * reloads, drains and closes it through moat_service_start/_drain/_close
 * below. Services never install signal handlers or stop the loop themselves.
 *
 * The state (started, draining, closing) and the "is it empty?" test belong
 * to this contract, not to each service. A service only counts:
 *   - busy: its open work, the things a drain waits for (a listener until
 *     its handle is closed, a connection, a query waiting for upstream);
 *   - handles: its libuv handles and other resources with a close callback
 *     (listeners, connections, timers, the upstream client), until closed.
 * It calls moat_service_busy_add / _done and moat_service_handle_open /
 * _closed as they come and go. Draining, the drain's done callback runs once
 * busy reaches zero; closing, the close's done callback runs once handles
 * reach zero. Either may run from inside the _done / _closed call that
 * brought its counter to zero, and the drain's done closes the service
 * there (ops->close runs inside it): call them last, once the service's own
 * state is consistent (the object freed, the list unlinked), and touch none
 * of the service's objects after them (the moat_service_t itself lives
 * until ops->free). Inside ops->drain and ops->close the callbacks wait
 * until the op returns.
 */
#ifndef MOAT_CORE_SERVICE_H
#define MOAT_CORE_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "config/config.h"
#include "core/gen.h"
#include "filter/list.h"

typedef struct moat_service moat_service_t;
typedef void (*moat_service_done_cb)(moat_service_t *svc);

typedef struct moat_service_ops {
    const char *name;
    /* Open listeners for gen on loop. Returns 0, or a negative errno after
     * logging what failed (e.g. "dns: listen 127.0.0.1:5353: address in
     * use"); the service then closes what it opened by itself, and the
     * daemon exits with status 2. */
    int (*start)(moat_service_t *svc, uv_loop_t *loop, moat_gen_t *gen);
    /* Apply a new generation (only while started, never draining or
     * closing): open added listeners, close removed ones, keep unchanged
     * sockets, re-check open work against the new policy. Returns 0 or a
     * negative errno after logging (the daemon keeps running). */
    int (*reload)(moat_service_t *svc, moat_gen_t *gen);
    /* Stop accepting and let open work finish, releasing busy as it ends. */
    void (*drain)(moat_service_t *svc);
    /* Close everything still open now (grace is over), releasing handles as
     * they close. May come during or after drain. */
    void (*close)(moat_service_t *svc);
    /* Free the service after close's done (no handles left), or after a
     * failed start once the loop has ended. */
    void (*free)(moat_service_t *svc);
} moat_service_ops_t;

typedef enum moat_service_state {
    MOAT_SERVICE_IDLE,     /* created, not started (or its start failed) */
    MOAT_SERVICE_STARTED,  /* serving */
    MOAT_SERVICE_DRAINING, /* accepting nothing new, finishing open work */
    MOAT_SERVICE_CLOSING,  /* closing its handles */
    MOAT_SERVICE_CLOSED,   /* every handle closed */
} moat_service_state_t;

struct moat_service {
    const moat_service_ops_t *ops;
    void *data;                 /* the service's own state */
    struct moat_daemon *daemon; /* set when registered */
    size_t stage;               /* set when registered: peers share one (daemon.h) */
    void *host;                 /* what drives it when the daemon does not (core/worker.c) */
    /* Private to service.c. */
    moat_service_state_t state;
    unsigned busy, handles;
    unsigned in_op; /* inside ops->drain / ops->close */
    moat_service_done_cb drain_done, close_done;
};

/* The ops of a service named label whose functions are prefix_start,
 * prefix_reload, prefix_drain, prefix_close and prefix_free. */
#define MOAT_SERVICE_OPS(prefix, label)                                                            \
    {                                                                                              \
        .name = (label), .start = prefix##_start, .reload = prefix##_reload,                       \
        .drain = prefix##_drain, .close = prefix##_close, .free = prefix##_free                    \
    }

/* Set svc up (IDLE, no counts) for ops, with data the service's own. */
void moat_service_init(moat_service_t *svc, const moat_service_ops_t *ops, void *data);

/* Start svc (ops->start); STARTED on success. Returns ops->start's result. */
int moat_service_start(moat_service_t *svc, uv_loop_t *loop, moat_gen_t *gen);

/* STARTED -> DRAINING: ops->drain, then done (once) when busy reaches zero. */
void moat_service_drain(moat_service_t *svc, moat_service_done_cb done);

/* STARTED or DRAINING -> CLOSING: ops->close, then done (once) when handles
 * reach zero (state CLOSED). A drain's done no longer runs. */
void moat_service_close(moat_service_t *svc, moat_service_done_cb done);

/* One more piece of open work. */
void moat_service_busy_add(moat_service_t *svc);
/* One piece of open work ended (may run the drain's done; see the top). */
void moat_service_busy_done(moat_service_t *svc);
/* One more open handle. */
void moat_service_handle_open(moat_service_t *svc);
/* One handle closed (may run the close's done; see the top). */
void moat_service_handle_closed(moat_service_t *svc);
/* One more thing that is both open work and an open handle (a listener, a
 * client served start to end). */
void moat_service_hold(moat_service_t *svc);
/* It is gone: busy_done, then handle_closed (may run either done). */
void moat_service_release(moat_service_t *svc);

/* The state, for the service's own decisions. */
moat_service_state_t moat_service_state(const moat_service_t *svc);
/* True while draining (not yet closing). */
bool moat_service_draining(const moat_service_t *svc);
/* True from close on. */
bool moat_service_closing(const moat_service_t *svc);
/* True from drain or close on: accept nothing new. */
bool moat_service_stopping(const moat_service_t *svc);

/* ---- listeners ----------------------------------------------------------------------- */

/* What moat_listeners_apply needs of a listening socket: embed it in the
 * service's listener and put it on the service's list. */
typedef struct moat_listener {
    moat_list_t node; /* on the service's list of listeners */
    bool keep;        /* moat_listeners_apply: still wanted */
} moat_listener_t;

typedef struct moat_listeners_ops {
    /* The i-th socket the config wants: its address and the service's kind
     * for it (e.g. udp / tcp, or the proxy's listener kind). */
    void (*wanted)(void *ctx, size_t i, const cfg_addr_t **addr, int *kind);
    /* Whether the open listener l serves addr as kind and is kept for it (it
     * may take the new kind over, logging that). */
    bool (*same)(void *ctx, moat_listener_t *l, const cfg_addr_t *addr, int kind);
    /* Open a listener for addr as kind: 0 with *out set (not yet on the
     * list), or a negative errno after logging. */
    int (*open)(void *ctx, const cfg_addr_t *addr, int kind, moat_listener_t **out);
    /* Close l, no longer wanted (logging that): off the list. */
    void (*close)(void *ctx, moat_listener_t *l);
} moat_listeners_ops_t;

/* Make list hold the n_wanted sockets ops->wanted names: keep an open one
 * that is the same, open (first on the list) what is missing, then close
 * the rest. Returns 0, or the first error of an open (the others are still
 * tried). */
int moat_listeners_apply(moat_list_t *list, size_t n_wanted, const moat_listeners_ops_t *ops,
                         void *ctx);

#endif
