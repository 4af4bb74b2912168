/* app/metrics.h: the metrics service (SPEC §4): `metrics.listen` serves
 * GET /metrics (Prometheus text format 0.0.4, the series of core/stats.h,
 * listed in docs/METRICS.md) and GET /healthz.
 *
 * It is a moat_service_t named "metrics" (core/service.h) listening with a
 * libuv TCP handle on the daemon's loop. /healthz answers 200 "ok" while moat
 * serves and 503 "draining" from SIGTERM / SIGINT on. main registers it
 * before the DNS and proxy services: services drain in reverse registration
 * order, so the metrics endpoint outlives the others and reports the drain
 * while they finish their open work.
 *
 * Each client sends one request and gets one answer with Connection: close:
 * 200, 404 (another path), 405 (a method other than GET or HEAD), 400 (not
 * an HTTP/1.x request head), 431 (a head over METRICS_HEAD_MAX bytes). Bounds (in
 * metrics.c): the request head size, the time a client may take, and the
 * number of clients at once (past it a new connection is closed at once).
 *
 * Reload: a changed metrics.listen closes the old socket and opens the new
 * one; an unchanged one keeps its socket; an empty one closes it.
 */
#ifndef MOAT_APP_METRICS_H
#define MOAT_APP_METRICS_H

#include <stddef.h>

#include "core/service.h"

/* Create the service (not started: the daemon calls ops->start). dns holds
 * every worker's DNS service (resolver/server.h), n_dns of them, borrowed,
 * read for the cache and address-memory gauges (summed); n_dns 0 reports
 * them as 0. Returns 0 with *out set (owned by the daemon once registered:
 * it calls ops->free), or -ENOMEM with *out NULL. */
int metrics_create(moat_service_t *const *dns, size_t n_dns, moat_service_t **out);

#endif
