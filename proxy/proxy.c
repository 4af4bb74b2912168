/* proxy/proxy.c: the TCP proxy service (see proxy.h): listeners, accept,
 * accept back-off, max_connections, the pipe pool, reload / drain / close.
 * One connection's life is in conn.c.
 *
 * Listeners are plain nonblocking sockets watched by a uv_poll_t (not
 * uv_tcp_t): connections are accepted with accept4() straight into
 * nonblocking fds that conn.c peeks at with MSG_PEEK and splices with
 * splice(2), neither of which a uv_tcp_t allows. conn.c watches them in an
 * epoll set of its own (see there).
 */
#include "proxy/proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sock.h"
#include "proxy/proxy_internal.h"
#include "resolver/server.h"

/* Listen backlog (the kernel caps it at net.core.somaxconn). */
#define PX_BACKLOG 4096
/* Connections accepted per readable event before the loop gets a turn. */
#define PX_ACCEPT_BATCH 64
/* Accept back-off after EMFILE / ENFILE / ENOBUFS / ENOMEM: first delay,
 * doubled per failed retry up to the cap. sniproxy #89: an accept loop that
 * ignores EMFILE spins at 100% CPU, as the pending connection stays
 * readable. */
#define PX_BACKOFF_MIN_MS 100
#define PX_BACKOFF_MAX_MS 1000

static const moat_service_ops_t px_ops;

static px_t *px_of(moat_service_t *svc)
{
    return (px_t *)svc->data;
}

const char *px_kind_str(px_kind_t k)
{
    switch (k) {
    case PX_TRANSPARENT:
        return "transparent";
    case PX_TLS:
        return "tls";
    case PX_HTTP:
        return "http";
    case PX_CONNECT:
        return "connect";
    case PX_SOCKS:
        return "socks";
    }
    return "?";
}

stats_listener_t px_kind_stats(px_kind_t k)
{
    switch (k) {
    case PX_TLS:
        return STATS_LISTENER_TLS;
    case PX_HTTP:
        return STATS_LISTENER_HTTP;
    case PX_CONNECT:
        return STATS_LISTENER_CONNECT;
    case PX_SOCKS:
        return STATS_LISTENER_SOCKS;
    case PX_TRANSPARENT:
        break;
    }
    return STATS_LISTENER_TRANSPARENT;
}

void px_reset_fd(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* ---- pipe pool ------------------------------------------------------------------- */

int px_pipe_get(px_t *px, px_pipe_t *out)
{
    if (px->n_pipes > 0) {
        *out = px->pipes[--px->n_pipes];
        return 0;
    }
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        out->rfd = out->wfd = -1;
        return -errno;
    }
    (void)fcntl(fds[1], F_SETPIPE_SZ, PX_PIPE_SIZE);
    out->rfd = fds[0];
    out->wfd = fds[1];
    return 0;
}

void px_pipe_put(px_t *px, px_pipe_t *p)
{
    if (p->rfd < 0)
        return;
    if (px->n_pipes < PX_PIPE_POOL && !moat_service_closing(&px->svc)) {
        px->pipes[px->n_pipes++] = *p;
    } else {
        close(p->rfd);
        close(p->wfd);
    }
    p->rfd = p->wfd = -1;
}

static void px_pipes_free(px_t *px)
{
    while (px->n_pipes > 0) {
        px_pipe_t *p = &px->pipes[--px->n_pipes];
        close(p->rfd);
        close(p->wfd);
    }
}

/* ---- accept ---------------------------------------------------------------------- */

static void px_listener_poll_cb(uv_poll_t *h, int status, int events);

static px_listener_t *px_listener_of(moat_list_t *node)
{
    return container_of(container_of(node, moat_listener_t, node), px_listener_t, base);
}

static void px_listeners_resume(px_t *px)
{
    moat_list_foreach(it, &px->listeners)
        uv_poll_start(&px_listener_of(it)->poll, UV_READABLE, px_listener_poll_cb);
}

static void px_backoff_cb(uv_timer_t *t)
{
    px_t *px = t->data;
    if (moat_service_stopping(&px->svc))
        return;
    /* Try again; a failure doubles the delay, a success ends the burst. */
    px_listeners_resume(px);
}

static void px_backoff_start(px_t *px, int err)
{
    if (px->backoff_ms == 0) {
        px->backoff_ms = PX_BACKOFF_MIN_MS;
        log_warn("proxy: accept: %s; pausing accepts (back-off from %d ms up to %d ms)",
                 strerror(err), PX_BACKOFF_MIN_MS, PX_BACKOFF_MAX_MS);
    } else if (px->backoff_ms < PX_BACKOFF_MAX_MS) {
        px->backoff_ms *= 2;
        if (px->backoff_ms > PX_BACKOFF_MAX_MS)
            px->backoff_ms = PX_BACKOFF_MAX_MS;
    }
    moat_list_foreach(it, &px->listeners) uv_poll_stop(&px_listener_of(it)->poll);
    uv_timer_start(&px->backoff, px_backoff_cb, px->backoff_ms, 0);
}

/* The original destination of a transparent connection: SO_ORIGINAL_DST /
 * IP6T_SO_ORIGINAL_DST after an nftables/iptables REDIRECT (or DNAT), else
 * the socket's local address (TPROXY: the socket is bound to it). */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80 /* linux/netfilter_ipv4.h */
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80 /* linux/netfilter_ipv6/ip6_tables.h */
#endif
static socklen_t px_original_dst(int fd, int family, struct sockaddr_storage *out)
{
    socklen_t len = sizeof *out;
    memset(out, 0, sizeof *out);
    int r = family == AF_INET6 ? getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, out, &len)
                               : getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, out, &len);
    if (r == 0 && (out->ss_family == AF_INET || out->ss_family == AF_INET6))
        return len;
    len = sizeof *out;
    if (getsockname(fd, (struct sockaddr *)out, &len) != 0)
        return 0;
    return len;
}

static uint16_t px_sa_port(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)(const void *)a)->sin_port;
    return ((const struct sockaddr_in6 *)(const void *)a)->sin6_port;
}

/* A connection that reached the transparent listener without a redirect:
 * its original destination is the listener itself (the local address, on
 * the listener's port; under TPROXY the local address is the foreign one,
 * on the guest's port). Dialling it would connect moat to itself, again
 * and again until its fds run out (SPEC §2.4: a wildcard listener, or an
 * address rule covering the listener's address, would let a guest start
 * that loop), so it is refused as own-listener. */
static bool px_is_self(const px_listener_t *l, int fd, const struct sockaddr_storage *peer,
                       const struct sockaddr_storage *dest)
{
    /* The port first: a redirected connection's destination port is almost
     * never the listener's, and that saves the getsockname on the hot path. */
    if (px_sa_port(dest) != px_sa_port(&l->addr.sa))
        return false;
    struct sockaddr_storage local;
    socklen_t len = sizeof local;
    memset(&local, 0, sizeof local);
    if (getsockname(fd, (struct sockaddr *)&local, &len) != 0)
        return false;
    if (!filter_sockaddr_equal(&local, dest))
        return false;
    /* What §2.4 refuses anyway (loopback first) is left to conn.c, which
     * logs it with its destination. */
    filter_addr_t a, client;
    uint16_t port;
    if (filter_addr_from_sockaddr((const struct sockaddr *)dest, &a, &port) != 0 ||
        filter_addr_from_sockaddr((const struct sockaddr *)peer, &client, NULL) != 0)
        return true;
    const filter_policy_t *p = moat_gen_scope(l->px->gen, &client).policy;
    return filter_check_refused(p, &a, port).verdict != FILTER_BLOCK;
}

static void px_accept(px_listener_t *l)
{
    px_t *px = l->px;
    for (int i = 0; i < PX_ACCEPT_BATCH && !l->closing; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EAGAIN || e == EWOULDBLOCK)
                break;
            if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == EPERM)
                continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                stats_conn_refused(px_kind_stats(l->kind), FILTER_REASON_ACCEPT_ERROR);
                px_backoff_start(px, e);
                return;
            }
            log_warn("proxy: accept on %s %s: %s", px_kind_str(l->kind), l->addr.text, strerror(e));
            break;
        }
        if (px->backoff_ms) {
            px->backoff_ms = 0;
            log_info("proxy: accepting again");
        }
        /* SPEC §2.3 step 5: past max_connections, an immediate reset (never
         * accept and then blackhole). */
        size_t open =
            px->conns_all ? atomic_load_explicit(px->conns_all, memory_order_relaxed) : px->n_conns;
        if (open >= px->gen->cfg->proxy.max_connections) {
            px_reset_fd(fd);
            px_log_refused(px, l->kind, &peer, FILTER_REASON_MAX_CONNECTIONS);
            continue;
        }
        struct sockaddr_storage dest;
        socklen_t dlen = 0;
        if (l->kind == PX_TRANSPARENT) {
            dlen = px_original_dst(fd, peer.ss_family, &dest);
            if (dlen && px_is_self(l, fd, &peer, &dest)) {
                px_reset_fd(fd);
                px_log_refused(px, l->kind, &peer, FILTER_REASON_OWN_LISTENER);
                continue;
            }
        }
        px_conn_accept(px, l->kind, fd, &peer, dlen ? &dest : NULL, dlen);
    }
}

static void px_listener_poll_cb(uv_poll_t *h, int status, int events)
{
    px_listener_t *l = h->data;
    (void)events;
    if (status < 0) {
        log_warn("proxy: poll on %s %s: %s", px_kind_str(l->kind), l->addr.text,
                 uv_strerror(status));
        return;
    }
    px_accept(l);
}

/* ---- listeners ------------------------------------------------------------------- */

static void px_listener_closed_cb(uv_handle_t *h)
{
    px_listener_t *l = h->data;
    px_t *px = l->px;
    close(l->fd);
    free(l);
    moat_service_release(&px->svc);
}

static void px_listener_close(px_listener_t *l)
{
    if (l->closing)
        return;
    l->closing = true;
    moat_list_remove(&l->base.node);
    uv_close((uv_handle_t *)&l->poll, px_listener_closed_cb);
}

/* Open a listener for a as kind: 0 with *out set (not on px->listeners
 * yet), or a negative errno after logging. */
static int px_listener_open(px_t *px, px_kind_t kind, const cfg_addr_t *a, px_listener_t **out)
{
    *out = NULL;
    const char *ks = px_kind_str(kind);
    int family = a->sa.ss_family, one = 1, rc;
    int fd = moat_sock_listener(family, SOCK_STREAM, px->workers > 1);
    if (fd < 0) {
        rc = fd;
        goto fail;
    }
    /* Accepted sockets inherit TCP_NODELAY: the client side never waits
     * for Nagle (conn.c sets it on the server side before a second write). */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (kind == PX_TRANSPARENT) {
        /* TPROXY delivers connections for foreign addresses only to a
         * transparent socket; needs CAP_NET_ADMIN, so best effort: REDIRECT
         * works without it. */
        if (family == AF_INET6)
            (void)setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one);
        else
            (void)setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one);
    }
    if (bind(fd, (const struct sockaddr *)&a->sa, a->sa_len) != 0 || listen(fd, PX_BACKLOG) != 0) {
        rc = -errno;
        goto fail;
    }
    px_listener_t *l = calloc(1, sizeof *l);
    if (!l) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = uv_poll_init_socket(px->loop, &l->poll, fd);
    if (rc != 0) {
        free(l);
        goto fail;
    }
    l->px = px;
    l->kind = kind;
    l->addr = *a;
    l->fd = fd;
    l->poll.data = l;
    moat_list_init(&l->base.node);
    moat_service_hold(&px->svc);
    *out = l;
    if (px->backoff_ms == 0)
        uv_poll_start(&l->poll, UV_READABLE, px_listener_poll_cb);
    if (px->worker == 0) /* once, not once per worker */
        log_info("proxy listening on %s %s", ks, a->text);
    return 0;
fail:
    log_error("proxy: listen %s (%s): %s", a->text, ks, strerror(-rc));
    if (fd >= 0)
        close(fd);
    return rc;
}

/* moat_listeners_apply over the transparent, tls, http, connect and socks
 * lists, in that order (kind = px_kind_t). */
static void px_lsn_wanted(void *ctx, size_t i, const cfg_addr_t **addr, int *kind)
{
    const cfg_t *cfg = ((px_t *)ctx)->gen->cfg;
    const cfg_addr_list_t *lists[5] = {&cfg->proxy.transparent, &cfg->proxy.tls, &cfg->proxy.http,
                                       &cfg->proxy.connect, &cfg->proxy.socks};
    const px_kind_t kinds[5] = {PX_TRANSPARENT, PX_TLS, PX_HTTP, PX_CONNECT, PX_SOCKS};
    size_t k = 0;
    while (i >= lists[k]->n)
        i -= lists[k++]->n;
    *addr = &lists[k]->items[i];
    *kind = (int)kinds[k];
}

/* A socket whose address is still listed is kept, even when it moved to
 * another kind (it would otherwise be in use when the new one binds). */
static bool px_lsn_same(void *ctx, moat_listener_t *ml, const cfg_addr_t *a, int kind)
{
    px_t *px = ctx;
    px_listener_t *l = container_of(ml, px_listener_t, base);
    if (ml->keep || !filter_sockaddr_equal(&l->addr.sa, &a->sa))
        return false;
    if (l->kind != (px_kind_t)kind && px->worker == 0) /* once, not per worker */
        log_info("proxy: %s is now a %s listener (was %s)", a->text, px_kind_str((px_kind_t)kind),
                 px_kind_str(l->kind));
    l->kind = (px_kind_t)kind;
    return true;
}

static int px_lsn_open(void *ctx, const cfg_addr_t *a, int kind, moat_listener_t **out)
{
    px_listener_t *l = NULL;
    int rc = px_listener_open(ctx, (px_kind_t)kind, a, &l);
    *out = l ? &l->base : NULL;
    return rc;
}

static void px_lsn_close(void *ctx, moat_listener_t *ml)
{
    px_t *px = ctx;
    px_listener_t *l = container_of(ml, px_listener_t, base);
    if (px->worker == 0) /* once, not per worker */
        log_info("proxy: no longer listening on %s %s", px_kind_str(l->kind), l->addr.text);
    px_listener_close(l);
}

static const moat_listeners_ops_t px_lsn_ops = {
    .wanted = px_lsn_wanted, .same = px_lsn_same, .open = px_lsn_open, .close = px_lsn_close};

/* Open what px->gen's config lists and is not open, close the rest. */
static int px_listeners_apply(px_t *px)
{
    const cfg_t *cfg = px->gen->cfg;
    size_t n = cfg->proxy.transparent.n + cfg->proxy.tls.n + cfg->proxy.http.n +
               cfg->proxy.connect.n + cfg->proxy.socks.n;
    return moat_listeners_apply(&px->listeners, n, &px_lsn_ops, px);
}

static void px_listeners_close_all(px_t *px)
{
    moat_list_t *it;
    while ((it = moat_list_first(&px->listeners)))
        px_listener_close(px_listener_of(it));
}

/* ---- dial cache ------------------------------------------------------------------ */

/* The dial cache resolves through the DNS service's upstream client (SPEC
 * §2.3 step 6: the same servers). */
static int px_dc_start(void *ctx, const char *name, size_t len, dns_upstream_resolve_cb done,
                       void *done_arg, void **req)
{
    px_t *px = ctx;
    dns_upstream_t *up = dns_server_upstream(px->dns);
    dns_upstream_req_t *r = NULL;
    *req = NULL;
    if (!up)
        return -ESHUTDOWN;
    int rc = dns_upstream_resolve(up, name, len, done, done_arg, &r);
    *req = r;
    return rc;
}

static void px_dc_cancel(void *ctx, void *req)
{
    px_t *px = ctx;
    /* An upstream client that was destroyed dropped its requests without
     * calling back: req is gone then. The DNS service outlives us (daemon.c
     * stops services in reverse order) and has one client from start to
     * close, so a client still there is the one req belongs to. */
    if (dns_server_upstream(px->dns))
        dns_upstream_cancel(req);
}

static uint64_t px_dc_now(void *ctx)
{
    return uv_now(((px_t *)ctx)->loop);
}

/* Whether a and b name the same upstream servers (dns.upstream). */
/* ---- lifecycle ------------------------------------------------------------------- */

static void px_handle_closed_cb(uv_handle_t *h)
{
    px_t *px = h->data;
    moat_service_handle_closed(&px->svc);
}

/* Close everything now (close, or a failed start); safe to call twice. */
static void px_shutdown(px_t *px)
{
    px_listeners_close_all(px);
    moat_list_t *it;
    while ((it = moat_list_first(&px->conns)))
        px_conn_abort(px_conn_of(it), NULL);
    /* Every waiter went with its connection; lookups in flight are cancelled.
     * May run from inside a dial cache callback (the last connection of a
     * drain): the cache then finishes freeing itself when it returns. */
    px_dialcache_free(px->dialcache);
    px->dialcache = NULL;
    if (px->loop && !uv_is_closing((uv_handle_t *)&px->backoff)) {
        uv_timer_stop(&px->backoff);
        uv_close((uv_handle_t *)&px->backoff, px_handle_closed_cb);
    }
    px_conns_stop(px);
    px_pipes_free(px);
}

static int px_start(moat_service_t *svc, uv_loop_t *loop, moat_gen_t *gen)
{
    px_t *px = px_of(svc);
    px->loop = loop;
    moat_gen_swap(&px->gen, gen);
    uv_timer_init(loop, &px->backoff);
    px->backoff.data = px;
    moat_service_handle_open(&px->svc);
    int rc = px_conns_start(px);
    if (rc != 0) {
        log_error("proxy: epoll: %s", strerror(-rc));
        px_shutdown(px);
        return rc;
    }
    px_dialcache_ops_t ops = {
        .start = px_dc_start, .cancel = px_dc_cancel, .now = px_dc_now, .ctx = px};
    rc = px_dialcache_create(PX_DIALCACHE_ENTRIES, &ops, &px->dialcache);
    if (rc != 0) {
        log_error("proxy: dial cache: %s", strerror(-rc));
        px_shutdown(px);
        return rc;
    }
    rc = px_listeners_apply(px);
    if (rc != 0) {
        px_shutdown(px);
        return rc;
    }
    return 0;
}

static int px_reload(moat_service_t *svc, moat_gen_t *gen)
{
    px_t *px = px_of(svc);
    /* Cached addresses hold no policy (each dial filters them under its own)
     * and survive a reload, unless they came from other servers. */
    if (px->gen && !moat_gen_same_upstream(px->gen, gen))
        px_dialcache_flush(px->dialcache);
    moat_gen_swap(&px->gen, gen);
    int rc = px_listeners_apply(px);
    px_conns_recheck(px, gen);
    return rc;
}

/* Connections finish by themselves; the last one releases busy. */
static void px_drain(moat_service_t *svc)
{
    px_t *px = px_of(svc);
    uv_timer_stop(&px->backoff);
    px_listeners_close_all(px);
}

static void px_close(moat_service_t *svc)
{
    px_shutdown(px_of(svc));
}

static void px_free(moat_service_t *svc)
{
    if (!svc)
        return;
    px_t *px = px_of(svc);
    px_pipes_free(px);
    px_dialcache_free(px->dialcache);
    if (px->epfd >= 0)
        close(px->epfd);
    free(px->peek_buf);
    moat_list_t *it;
    while ((it = moat_list_first(&px->spare))) {
        moat_list_remove(it);
        free(px_conn_of(it));
    }
    moat_gen_unref(px->gen);
    free(px);
}

static const moat_service_ops_t px_ops = MOAT_SERVICE_OPS(px, "proxy");

int px_proxy_create(moat_service_t *dns, const px_proxy_workers_t *workers, moat_service_t **out)
{
    *out = NULL;
    if (!dns || (workers && (workers->count < 1 || workers->index >= workers->count ||
                             !workers->dns || !workers->conns)))
        return -EINVAL;
    px_t *px = calloc(1, sizeof *px);
    if (!px)
        return -ENOMEM;
    moat_service_init(&px->svc, &px_ops, px);
    px->dns = dns;
    px->workers = 1;
    if (workers && workers->count > 1) {
        px->worker = workers->index;
        px->workers = workers->count;
        px->dns_all = workers->dns;
        px->conns_all = workers->conns;
    }
    px->epfd = -1;
    moat_list_init(&px->listeners);
    moat_list_init(&px->conns);
    moat_list_init(&px->later);
    moat_list_init(&px->dead);
    moat_list_init(&px->spare);
    for (int i = 0; i < PX_TQ_N; i++)
        moat_list_init(&px->tq[i]);
    px->tq_due = UINT64_MAX;
    *out = &px->svc;
    return 0;
}
