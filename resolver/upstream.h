/* resolver/upstream.h: the upstream DNS client (SPEC §2.2 "forwarded to the
 * upstream servers ... through c-ares", §2.3 step 6 "moat dials names with
 * the same upstream servers its DNS uses").
 *
 * A c-ares 1.18 channel driven by the daemon's libuv loop: c-ares reports the
 * sockets it wants watched through ARES_OPT_SOCK_STATE_CB and gets one
 * uv_poll_t per socket; a uv_timer follows ares_timeout(). c-ares does the
 * retries, the server rotation and the TCP retry of a truncated answer.
 *
 * Servers: cfg dns.upstream, or /etc/resolv.conf's when the list is empty.
 * Timeout: every request gets an answer or an error within cfg dns.timeout,
 * counted from the call, by a deadline timer of our own: c-ares's retry
 * schedule (ARES_OPT_TIMEOUTMS, ARES_OPT_TRIES) is sized to fit inside it,
 * but the deadline does not depend on that. A request that hit its deadline
 * stays with c-ares until c-ares gives up on it; its callback is not called
 * again.
 *
 * Reload: dns_upstream_configure() with new servers or a new timeout builds a
 * new channel for new requests and lets the old one finish what it has in
 * flight, then destroys it.
 *
 * Callbacks run on the loop, never from inside the call that started the
 * request, and at most once per request. They must not call
 * dns_upstream_destroy(). Requests may be started and cancelled from inside
 * a callback.
 *
 * Errors: 0 or a negative errno code. Callback statuses: 0 (an answer, maybe
 * NXDOMAIN), -ETIMEDOUT (the deadline passed, or c-ares timed out),
 * -ECONNREFUSED (no server reachable), -EIO (every server failed: SERVFAIL,
 * REFUSED, NOTIMP, FORMERR, a bad answer), -ENOMEM.
 */
#ifndef MOAT_RESOLVER_UPSTREAM_H
#define MOAT_RESOLVER_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "dns/cache.h"

/* Most addresses dns_upstream_resolve() reports (A and AAAA together). */
#define DNS_UPSTREAM_MAX_ADDRS 64
/* Tries per server c-ares makes within dns.timeout. */
#define DNS_UPSTREAM_TRIES 2
/* Shortest first-try timeout given to c-ares, whatever dns.timeout is. */
#define DNS_UPSTREAM_MIN_TRY_MS 100

typedef struct dns_upstream dns_upstream_t;
/* A request in flight. Owned by the upstream: valid from the start call until
 * its callback returns or dns_upstream_cancel() is called on it. */
typedef struct dns_upstream_req dns_upstream_req_t;

/* The answer to dns_upstream_query(): on status 0, the upstream's response
 * wire[0..len) (any RCODE; its ID is c-ares's), valid for the call only. */
typedef void (*dns_upstream_answer_cb)(void *arg, int status, const uint8_t *wire, size_t len);

/* The answer to dns_upstream_resolve(): on status 0, the A and AAAA addresses
 * of the name with their TTLs (the CNAME chain followed, see rewrite.h (c)),
 * n may be 0 (no such name, no address); valid for the call only. A failure
 * of one family while the other answered counts as that family having no
 * address. */
typedef void (*dns_upstream_resolve_cb)(void *arg, int status, const dns_cache_addr_t *addrs,
                                        size_t n);

typedef void (*dns_upstream_done_cb)(void *arg);

/* Create a client on loop for cfg's dns.upstream and dns.timeout (cfg is
 * read during the call only). Returns 0, -ENOMEM, or -EIO when c-ares cannot
 * be set up (e.g. no usable /etc/resolv.conf); *out NULL on error. */
int dns_upstream_create(uv_loop_t *loop, const cfg_t *cfg, dns_upstream_t **out);

/* Apply cfg (reload): a new channel when servers or timeout changed, the old
 * one finishing its requests; nothing when they did not. 0 or negative errno
 * (the old channel keeps serving). */
int dns_upstream_configure(dns_upstream_t *up, const cfg_t *cfg);

/* Send a query for the wire-form name qname[0..qname_len) (as a parsed query
 * holds it; it is lowercased on the wire), QTYPE qtype, class IN, with RD and
 * an OPT advertising 1232 bytes with DO = dnssec_ok. *out (may be NULL) gets
 * the request handle. Returns 0 (cb will be called), -EINVAL, -ENOMEM,
 * -ESHUTDOWN after destroy, or -EIO when c-ares refused the query (cb is
 * then never called). */
int dns_upstream_query(dns_upstream_t *up, const uint8_t *qname, size_t qname_len, uint16_t qtype,
                       bool dnssec_ok, dns_upstream_answer_cb cb, void *arg,
                       dns_upstream_req_t **out);

/* Resolve a host name (presentation form, case-insensitive, one trailing dot
 * allowed) to its A and AAAA addresses, both queried at once. Same returns
 * as dns_upstream_query. For the proxy (SPEC §2.3 step 4). */
int dns_upstream_resolve(dns_upstream_t *up, const char *name, size_t len,
                         dns_upstream_resolve_cb cb, void *arg, dns_upstream_req_t **out);

/* Forget a request: its callback is never called. NULL is fine. Must not be
 * called after the callback has run. */
void dns_upstream_cancel(dns_upstream_req_t *req);

/* Requests whose callbacks are still due (for drain and tests). */
size_t dns_upstream_pending(const dns_upstream_t *up);

/* Destroy: every request still in flight is dropped without its callback,
 * every channel destroyed, every handle closed; done(arg) (may be NULL) runs
 * from a close callback once the last handle is closed, after which up is
 * freed. NULL is fine. Not from inside a dns_upstream callback. */
void dns_upstream_destroy(dns_upstream_t *up, dns_upstream_done_cb done, void *arg);

#endif
