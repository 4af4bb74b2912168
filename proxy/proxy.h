/* proxy/proxy.h: the TCP proxy service (SPEC §2.3, §2.4): the transparent,
 * tls and http listeners, and every connection they accept (peek, decide,
 * dial, splice; see proxy/conn.c).
 *
 * It is a moat_service_t named "proxy" (core/service.h). main registers it
 * after the DNS service and hands it that service: the proxy resolves names
 * with the DNS service's upstream client (SPEC §2.3 step 6) and reads its
 * name → address memory (step 3). Both are borrowed: the DNS service must
 * outlive the proxy's registration (the daemon frees services only after all
 * of them are closed).
 *
 * Bounds: proxy.max_connections (accepted and reset past it), a pool of at
 * most PX_PIPE_POOL idle pipes shared by all connections; one peek buffer
 * (the largest max_hello / max_http_head) and one copy buffer for the whole
 * service, none per connection.
 */
#ifndef MOAT_PROXY_PROXY_H
#define MOAT_PROXY_PROXY_H

#include <stdatomic.h>
#include <stddef.h>

#include "core/service.h"

/* With `workers` above 1 (core/worker.h), what the copies of the proxy
 * share: every worker's DNS service, whose address memories step 3 asks
 * (a guest's answer and its connection may land on different workers), and
 * the count of connections open over all of them, which max_connections
 * bounds. Borrowed: they outlive every copy. */
typedef struct px_proxy_workers {
    size_t index, count;  /* this copy's worker, of count */
    moat_service_t **dns; /* [count]: each worker's DNS service, by index */
    atomic_uint *conns;   /* open connections, all workers */
} px_proxy_workers_t;

/* Create the service (not started: the daemon calls ops->start). dns is the
 * DNS service (resolver/server.h) of the same worker, borrowed; workers
 * NULL: the only worker. Returns 0 with *out set (owned by the daemon once
 * registered: it calls ops->free), or -ENOMEM / -EINVAL with *out NULL. */
int px_proxy_create(moat_service_t *dns, const px_proxy_workers_t *workers, moat_service_t **out);

#endif
