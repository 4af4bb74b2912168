/* core/daemon.h: the daemon's lifecycle: generations, services, signals.
 *
 * A generation is one loaded config with its compiled policy. It is immutable
 * and reference-counted: the daemon holds the current one, and anything that
 * must keep deciding with the policy it started under (an open connection, a
 * query waiting for upstream) takes a reference. SIGHUP loads and compiles
 * the file again on libuv's thread pool (off the loop), and on success swaps
 * the new generation in and hands it to every service; on failure every error
 * is logged as FILE:LINE:COL and the old generation keeps serving. SIGUSR1
 * reopens log.file (log rotation).
 *
 * A service is one part of the daemon that owns listeners (the DNS resolver,
 * the TCP proxy, metrics). The daemon starts, reloads, drains and closes them
 * through moat_service_ops_t; services never install signal handlers or stop
 * the loop themselves.
 *
 * SIGTERM / SIGINT: the services drain (stop accepting, let open work
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
#include "filter/policy.h"

typedef struct moat_gen {
    unsigned refs;
    uint64_t id;             /* 1 for the first, +1 per successful reload */
    cfg_t *cfg;              /* owned */
    filter_policy_t *policy; /* owned */
} moat_gen_t;

/* Load path (NULL: the embedded default) and compile its policy. Returns 0
 * with *out holding one reference, -EINVAL with the errors in *diag (always
 * initialised; free with cfg_diag_free), or another negative errno. Pure:
 * safe to call off the loop thread. */
int moat_gen_load(const char *path, moat_gen_t **out, cfg_diag_t *diag);

/* Compile a generation from an already loaded config (takes ownership of cfg,
 * also on failure). */
int moat_gen_from_cfg(cfg_t *cfg, moat_gen_t **out);

moat_gen_t *moat_gen_ref(moat_gen_t *gen);
void moat_gen_unref(moat_gen_t *gen);

typedef struct moat_service moat_service_t;
typedef void (*moat_service_done_cb)(moat_service_t *svc);

typedef struct moat_service_ops {
    const char *name;
    /* Open listeners for gen on loop. Returns 0, or a negative errno after
     * logging what failed (e.g. "dns: listen 127.0.0.1:5353: address in
     * use"); the daemon then exits with status 2. */
    int (*start)(moat_service_t *svc, uv_loop_t *loop, moat_gen_t *gen);
    /* Apply a new generation: open added listeners, close removed ones, keep
     * unchanged sockets, re-check open work against the new policy. Returns 0
     * or a negative errno after logging (the daemon keeps running). */
    int (*reload)(moat_service_t *svc, moat_gen_t *gen);
    /* Stop accepting; call done once nothing is open any more. */
    void (*drain)(moat_service_t *svc, moat_service_done_cb done);
    /* Close everything still open now (grace is over); call done when every
     * handle is closed. May be called during or after drain. */
    void (*close)(moat_service_t *svc, moat_service_done_cb done);
    /* Free the service after close's done (no handles left). */
    void (*free)(moat_service_t *svc);
} moat_service_ops_t;

struct moat_service {
    const moat_service_ops_t *ops;
    void *data; /* the service's own state */
    /* Daemon-private bookkeeping. */
    struct moat_daemon *daemon;
    int state;
};

typedef struct moat_daemon moat_daemon_t;

/* Create a daemon around an initial generation (takes the reference) and the
 * config path for reloads (NULL: default config, reload re-reads nothing). */
int moat_daemon_create(const char *config_path, moat_gen_t *gen, moat_daemon_t **out);

/* Register a service (the daemon does not own svc until run returns; it
 * calls ops->free at the end). */
int moat_daemon_add_service(moat_daemon_t *d, moat_service_t *svc);

/* The current generation (borrowed; take a ref to keep it). */
moat_gen_t *moat_daemon_gen(const moat_daemon_t *d);

/* The daemon's loop. */
uv_loop_t *moat_daemon_loop(moat_daemon_t *d);

/* True from SIGTERM / SIGINT on (services are draining or closing). */
bool moat_daemon_stopping(const moat_daemon_t *d);

/* Start every service and run until stopped. Returns the process exit
 * status: 0 clean stop, 2 a service failed to start. */
int moat_daemon_run(moat_daemon_t *d);

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
    void *data;              /* the caller's */
    moat_reload_req_t *next; /* daemon-private */
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
