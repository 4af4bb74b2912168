/* core/daemon.h: the daemon's lifecycle: services, signals, reload.
 *
 * The daemon holds the current generation (core/gen.h). SIGHUP loads and
 * compiles the file again on libuv's thread pool (off the loop), and on
 * success swaps the new generation in and hands it to every service; on
 * failure every error is logged as FILE:LINE:COL and the old generation keeps
 * serving. SIGUSR1 reopens log.file (log rotation).
 *
 * Services (core/service.h) are registered in order and started in that
 * order. SIGTERM / SIGINT: the services drain (stop accepting, let open work
 * finish) and close one after the other in reverse registration order, so a
 * service outlives every service registered after it (which may use it);
 * after shutdown_grace whatever is left is closed, last registered first; the
 * loop ends and moat_daemon_run() returns 0. A second signal closes at once.
 */
#ifndef MOAT_CORE_DAEMON_H
#define MOAT_CORE_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "core/gen.h"
#include "filter/list.h"
#include "core/service.h"

typedef struct moat_daemon moat_daemon_t;

/* Create a daemon around an initial generation (takes the reference) and the
 * config path for reloads (NULL: default config, reload re-reads nothing). */
int moat_daemon_create(const char *config_path, moat_gen_t *gen, moat_daemon_t **out);

/* Register a service (the daemon does not own svc until run returns; it
 * calls ops->free at the end). */
int moat_daemon_add_service(moat_daemon_t *d, moat_service_t *svc);

/* Register svc as a peer of peer, the service registered just before it:
 * a copy of the same service on another worker (core/worker.h). Peers
 * drain and close together, as one, in the reverse order above. 0,
 * -EINVAL (peer is not the last one registered) or -ENOMEM. */
int moat_daemon_add_peer(moat_daemon_t *d, moat_service_t *svc, const moat_service_t *peer);

/* The number of workers running (core/worker.h), for the reload's warning
 * when a new config asks for another number (applied at the next start
 * only); pinned: fixed by the command line, the config's is not asked. */
void moat_daemon_set_workers(moat_daemon_t *d, size_t n, bool pinned);

/* The current generation (borrowed; take a ref to keep it). */
moat_gen_t *moat_daemon_gen(const moat_daemon_t *d);

/* The daemon's loop. */
uv_loop_t *moat_daemon_loop(moat_daemon_t *d);

/* True from SIGTERM / SIGINT on (services are draining or closing). */
bool moat_daemon_stopping(const moat_daemon_t *d);

/* Called once every service has started, before the loop runs (e.g. the
 * program's first-run hints); arg is the caller's. */
typedef void (*moat_daemon_started_cb)(moat_daemon_t *d, void *arg);

/* Start every service and run until stopped; started (may be NULL) runs once
 * all of them serve. Returns the process exit status: 0 clean stop, 2 a
 * service failed to start. */
int moat_daemon_run(moat_daemon_t *d, moat_daemon_started_cb started, void *arg);

/* The config file reloads read, or NULL on the embedded default. */
const char *moat_daemon_config_path(const moat_daemon_t *d);

/* Ask for a reload as SIGHUP does. */
void moat_daemon_reload(moat_daemon_t *d);

/* The outcome of one reload, as moat_daemon_reload_request's callback sees
 * it (every pointer borrowed for the callback only). */
typedef struct moat_reload_result {
    int rc;                 /* 0 applied; -EINVAL config errors (in diag); -ESHUTDOWN the
                             * daemon is stopping; another negative errno (e.g. -ENOENT) */
    uint64_t generation;    /* the generation serving now (the new one when rc == 0) */
    const char *path;       /* the config file read */
    const cfg_diag_t *diag; /* the errors when rc == -EINVAL, every one with its position */
    size_t partial;         /* services that applied the new generation only in part
                             * (e.g. a new listen address in use; logged) */
} moat_reload_result_t;

typedef struct moat_reload_req moat_reload_req_t;
typedef void (*moat_reload_cb)(moat_reload_req_t *req, const moat_reload_result_t *res);

/* A caller-owned request (`moat reload` through the control socket). */
struct moat_reload_req {
    moat_reload_cb cb;
    void *data;       /* the caller's */
    moat_list_t node; /* daemon-private */
};

/* Reload and hear the outcome: cb runs once, on the loop, after a reload
 * that read the file after this call (reloads asked for while one runs are
 * coalesced into the next one, as SIGHUP's are). req must stay valid until
 * cb or moat_daemon_reload_cancel; cb may run before this returns if the
 * reload cannot even be queued. Returns 0, -ENOENT (running on the embedded
 * default: nothing to re-read) or -ESHUTDOWN (stopping); cb never runs then. */
int moat_daemon_reload_request(moat_daemon_t *d, moat_reload_req_t *req, moat_reload_cb cb);

/* Forget a request whose owner goes away; its cb will not run. */
void moat_daemon_reload_cancel(moat_daemon_t *d, moat_reload_req_t *req);

/* Free the daemon after run returned. */
void moat_daemon_free(moat_daemon_t *d);

#endif
