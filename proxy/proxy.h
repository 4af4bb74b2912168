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

#include "core/service.h"

/* Create the service (not started: the daemon calls ops->start). dns is the
 * DNS service (resolver/server.h), borrowed. Returns 0 with *out set (owned
 * by the daemon once registered: it calls ops->free), or -ENOMEM / -EINVAL
 * with *out NULL. */
int px_proxy_create(moat_service_t *dns, moat_service_t **out);

#endif
