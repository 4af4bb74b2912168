/* resolver/server.h: the DNS service (SPEC §2.2): UDP and TCP listeners on
 * every dns.listen address, the per-query decision, the cache, coalescing of
 * identical questions, forwarding through resolver/upstream.h, and the name
 * → address memory the proxy reads.
 *
 * It is a moat_service_t named "dns" (core/service.h): the daemon starts,
 * reloads, drains, closes and frees it. main registers it whatever dns.listen
 * holds: with no listen address it serves no query but still owns the
 * upstream client and the address memory the proxy uses, and a reload that
 * adds dns.listen addresses opens them.
 *
 * Sharing with the proxy:
 *   - dns_server_addrmem(): the address memory, created with the service and
 *     freed by ops->free (after every service is closed), so a pointer taken
 *     at registration time is valid for as long as the daemon runs;
 *   - dns_server_upstream(): the upstream client, valid from start until
 *     close (NULL outside), for the proxy's own name resolution.
 * Both belong to the service's loop. With `workers` above 1 there is one
 * copy of the service per worker (core/worker.h), each with its own sockets
 * (SO_REUSEPORT), cache and upstream client; only the address memory is
 * read across workers (by every worker's proxy), under its own lock.
 *
 * Bounds (each a #define in server.c, documented there): TCP clients, bytes
 * queued for writing per TCP client, the TCP idle timeout, queries waiting for
 * upstream, address memory entries.
 */
#ifndef MOAT_RESOLVER_SERVER_H
#define MOAT_RESOLVER_SERVER_H

#include "core/service.h"
#include "dns/addrmem.h"
#include "resolver/upstream.h"

/* Create the service (not started: the daemon calls ops->start) for worker
 * worker of workers (0 of 1: the only one). Returns 0 with *out set, owned by
 * the daemon once registered (it calls ops->free), or -ENOMEM with *out
 * NULL. */
int dns_server_create(size_t worker, size_t workers, moat_service_t **out);

/* The address memory the resolver fills (borrowed; see the top). */
dns_addrmem_t *dns_server_addrmem(moat_service_t *svc);

/* The upstream client between start and close, else NULL (borrowed). */
dns_upstream_t *dns_server_upstream(moat_service_t *svc);

/* Entries held now in the answer cache and the address memory, for the
 * metrics endpoint (0 before start; svc may be NULL). Any thread: the
 * cache's count is the one published at its last insertion or within the
 * last second. */
void dns_server_entries(moat_service_t *svc, uint64_t *cache, uint64_t *addrmem);

#endif
