/* core/worker.h: workers (`workers: N`): more event loops, each on its own
 * thread, each serving its own copy of the DNS service and the proxy.
 *
 * Worker 0 is the daemon's loop. Worker i > 0 is a thread running a libuv
 * loop of its own. Each copy of a service opens its own sockets on the same
 * addresses (SO_REUSEPORT: the kernel spreads queries and connections over
 * them) and keeps its own caches and upstream client, so nothing on the
 * path of a query or a connection is shared but the generation, which is
 * immutable (core/gen.h), and the few things named where they are shared
 * (the address memory, dns/addrmem.h; the count of open connections,
 * proxy/proxy.h).
 *
 * The daemon drives every copy through the service contract
 * (core/service.h): worker i's copy is wrapped (moat_worker_wrap) in a
 * service the daemon registers as a peer of worker 0's copy
 * (moat_daemon_add_peer). The wrapper runs each op on the worker's loop:
 *   - start and reload run there while the daemon's loop waits for their
 *     result (they open and close listeners and re-check open work, which
 *     is short), so their errors count exactly as worker 0's do;
 *   - drain and close are posted; the copy's busy and handle counts come
 *     back to the daemon's loop as the wrapper's, so shutdown waits for
 *     every worker's connections.
 * Counters go to the worker's own set (core/stats.h) and log lines to the
 * one log (core/log.h, thread-safe).
 */
#ifndef MOAT_CORE_WORKER_H
#define MOAT_CORE_WORKER_H

#include <stddef.h>
#include <uv.h>

#include "config/config.h"
#include "core/service.h"

typedef struct moat_worker moat_worker_t;

/* How many workers cfg asks for: `workers`, or for `auto` the CPUs this
 * process may run on (its affinity mask), at least 1, at most
 * CFG_WORKERS_MAX. */
size_t moat_workers_wanted(const cfg_t *cfg);

/* Start worker index (>= 1): a thread running a loop of its own, waiting
 * for services. 0 with *out set, or a negative errno (*out NULL). */
int moat_worker_create(size_t index, moat_worker_t **out);

/* The worker's loop: services for it are created against this loop's
 * thread, never touched from another one once started. */
uv_loop_t *moat_worker_loop(moat_worker_t *w);

/* Wrap inner, a service created for worker w, in a service the daemon can
 * drive from its own loop (see the top). Takes inner: the wrapper's free
 * frees it, on w's thread. 0 with *out set, or -ENOMEM (inner freed). */
int moat_worker_wrap(moat_worker_t *w, moat_service_t *inner, moat_service_t **out);

/* Stop w's thread and free w, once every service wrapped for it has been
 * freed (moat_daemon_free). NULL is a no-op. */
void moat_worker_free(moat_worker_t *w);

#endif
