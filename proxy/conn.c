/* proxy/conn.c: one proxied TCP connection (SPEC §2.3, §2.4).
 *
 * Life of a connection:
 *   accept ─► [transparent, step 0: refused? address rule?]
 *          ─► PEEK (MSG_PEEK the ClientHello or request head; steps 1, 2)
 *             or an address decision without peeking (step 3, filtering off)
 *          ─► RESOLVE (an allowed name: moat resolves it itself, step 4/6,
 *             through the service's dial cache: a cached answer dials at
 *             once, a lookup in flight for the name is joined; dialcache.h)
 *          ─► DIAL (nonblocking connect, address after address)
 *          ─► SPLICE (both directions, half-close kept) ─► closed, logged.
 *   A block ends in LINGER (the TLS alert or the 403 was sent: we discard
 *   what the client still sends until it closes, so our close does not turn
 *   into a reset that could destroy the answer in flight) or in an
 *   immediate reset.
 *
 * Every decision on the way (which peek, allow, block, audit's pass, the
 * addresses a name may be dialled at, a reload's re-check) is asked of
 * filter/decide.h with what the connection knows; this file gathers the
 * facts and does what the answer says.
 *
 * Readiness: both sockets of every connection are in one epoll set of the
 * service's, edge-triggered, added once (EPOLLIN | EPOLLOUT | EPOLLRDHUP)
 * and removed by close(); one uv_poll watches the set. libuv's uv_poll per
 * socket cost 16 epoll_ctl and 2 ioctl per connection (its start/stop
 * re-arms, docs/BENCH-TCP.md); this costs 2 epoll_ctl. Each side keeps what
 * the events said (rd: bytes or EOF may be waiting; wr: room may be free)
 * until a call says otherwise (EAGAIN, a short read, a partial write): an
 * edge comes only for what happens after that. Work is bounded per turn
 * (PX_PUMP_ROUNDS); a connection with work left waits in px->later for an
 * idle handle, as no new edge would wake it.
 *
 * Peeking: the hello / head is read with recv(MSG_PEEK) and never consumed,
 * so once the connection is allowed the relay simply moves it from the
 * client socket to the server together with whatever follows: there is no
 * replay buffer (SPEC §2.3 step 4's "replays the peeked bytes"). Under
 * edge triggering the queued bytes do not wake us again; new bytes do.
 * Every peek reads from the start into one buffer of the service's, so a
 * connection holds no buffer while it waits for the rest of its hello.
 *
 * Relaying: a direction starts by copying: recv into the service's shared
 * buffer, send on (two calls; a handshake or a request and its answer are
 * a few hundred bytes). A read that fills the buffer means a stream, and the
 * direction switches for good to socket → pipe → socket with splice(2), no
 * copy through user space. A send that takes only part parks the rest in a
 * pipe and switches too. A direction holds a pipe (from the service's pool)
 * only while bytes are in it, so an idle connection has just its two
 * sockets open. A pipe is refilled only when it is empty: then EAGAIN from
 * socket → pipe can only mean "no data", never "pipe full".
 *
 * Timeouts: a connection has one deadline at a time (peek_timeout from
 * accept, connect_timeout for resolve + dial, idle_timeout while splicing,
 * re-armed lazily from the last activity, and the linger bound), on the
 * service's list for that kind of timeout. A timeout is the same for every
 * connection of a generation, so a new deadline is the list's last and the
 * lists stay in deadline order at O(1) a change; one uv_timer serves the
 * earliest head of all lists, and is re-armed only when a deadline comes
 * before the one it is armed for (a uv_timer per connection would mean a
 * heap insert per state change and a uv_close per connection).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "filter/decide.h"
#include "filter/http_head.h"
#include "filter/name.h"
#include "filter/tls_hello.h"
#include "core/log.h"
#include "proxy/conn_internal.h"
#include "dns/addrmem.h"
#include "resolver/server.h"

/* Events taken from the epoll set per wake-up. */
#define PX_EP_BATCH 128
/* How long a blocked connection that got its alert or 403 may keep sending
 * before we close it anyway. */
#define PX_LINGER_MS 2000

static void px_dial_next(px_conn_t *c);
static void px_peek(px_conn_t *c);
static void px_peek_failed(px_conn_t *c, filter_reason_t why);
static void px_names_for(void *arg, filter_name_each_cb each, void *each_arg);

/* ---- logging ------------------------------------------------------------------------ */

moat_scope_t px_conn_scope(const px_conn_t *c, const moat_gen_t *gen)
{
    if (!c->auth_name)
        return moat_gen_scope(gen, &c->client);
    /* The index is the held generation's; another one is asked by name. */
    long i = gen->id == c->auth_gen ? c->auth_tenant : moat_gen_tenant_find(gen, c->auth_name);
    return i >= 0 ? moat_gen_scope_at(gen, i) : moat_gen_scope(gen, &c->client);
}

static void px_fmt_addr(const filter_addr_t *a, uint16_t port, char *buf, size_t n)
{
    char ab[FILTER_ADDR_STRLEN];
    filter_addr_format(a, ab, sizeof ab);
    if (port)
        snprintf(buf, n, a->family == AF_INET6 ? "[%s]:%u" : "%s:%u", ab, port);
    else
        snprintf(buf, n, "%s", ab);
}

void px_conn_log(px_conn_t *c, const filter_decision_t *dec)
{
    px_conn_log_as(c, dec, c->name, c->name_len);
}

void px_conn_log_as(px_conn_t *c, const filter_decision_t *dec, const char *name, size_t name_len)
{
    /* The tenant it was decided as: by the generation it holds, else (not
     * yet admitted) the current one. */
    moat_scope_t sc = px_conn_scope(c, c->gen ? c->gen : c->px->gen);
    /* px_log_refused's stand-in has no handles: counted as refused there. */
    if (c->handles)
        stats_conn_decision(sc.stats_id, px_kind_stats(c->kind),
                            dec->audit                     ? STATS_VERDICT_AUDIT
                            : dec->verdict == FILTER_BLOCK ? STATS_VERDICT_BLOCK
                                                           : STATS_VERDICT_ALLOW,
                            dec->reason, c->d_up.bytes, c->d_down.bytes);
    if (!log_decision_enabled(dec)) /* below the level: nothing to format */
        return;
    char client[FILTER_ADDR_STRLEN + 10], dest[FILTER_ADDR_STRLEN];
    px_fmt_addr(&c->client, c->cport, client, sizeof client);
    if (c->has_dest)
        px_fmt_addr(&c->dest, 0, dest, sizeof dest);
    uint64_t now = uv_now(c->px->loop);
    log_decision_t d = {
        .kind = "tcp",
        .listener = px_kind_str(c->kind),
        .client = client,
        .dest = c->has_dest ? dest : NULL,
        .dest_port = c->port,
        .name = name,
        .name_len = name_len,
        .decision = *dec,
        .tenant = sc.tenant,
        .bytes_up = c->d_up.bytes,
        .bytes_down = c->d_down.bytes,
        .duration_ms = now > c->start_ms ? now - c->start_ms : 0,
    };
    log_decision(&d);
}

void px_log_refused(px_t *px, px_kind_t kind, const struct sockaddr_storage *peer,
                    filter_reason_t reason)
{
    filter_decision_t d = {.verdict = FILTER_BLOCK, .reason = reason};
    px_conn_t c;
    memset(&c, 0, sizeof c);
    c.px = px;
    c.kind = kind;
    c.start_ms = uv_now(px->loop);
    (void)filter_addr_from_sockaddr((const struct sockaddr *)peer, &c.client, &c.cport);
    stats_conn_refused(px_kind_stats(kind), reason);
    px_conn_log(&c, &d);
}

/* ---- closing ------------------------------------------------------------------------ */

void px_conn_dir_release(px_t *px, px_dir_t *d)
{
    if (d->pipe.rfd < 0)
        return;
    if (d->in_pipe == 0) {
        px_pipe_put(px, &d->pipe);
    } else { /* bytes that will never be delivered: not reusable */
        close(d->pipe.rfd);
        close(d->pipe.wfd);
        d->pipe.rfd = d->pipe.wfd = -1;
        d->in_pipe = 0;
    }
}

/* Drop the addresses to dial. */
static void px_addrs_free(px_conn_t *c)
{
    if (c->addrs != c->addrs_inline)
        free(c->addrs);
    c->addrs = NULL;
    c->n_addrs = 0;
}

/* Room for n addresses to dial (replacing any); NULL without memory. */
static filter_addr_t *px_addrs_alloc(px_conn_t *c, size_t n)
{
    px_addrs_free(c);
    c->addrs = n <= PX_ADDRS_INLINE ? c->addrs_inline : malloc(n * sizeof *c->addrs);
    return c->addrs;
}

static void px_name_free(px_conn_t *c)
{
    if (c->name != c->name_inline)
        free(c->name);
    c->name = NULL;
}

static void px_conn_free(px_conn_t *c)
{
    px_t *px = c->px;
    if (c->gen)
        moat_gen_unref(c->gen);
    px_name_free(c);
    px_addrs_free(c);
    free(c->auth_name);
    free(c->head_out);
    px_watch_free(c);
    if (px->n_spare < PX_CONN_SPARE) {
        moat_list_push(&px->spare, &c->node); /* off px->conns since closing */
        px->n_spare++;
    } else {
        free(c);
    }
    moat_service_handle_closed(&px->svc);
}

/* Free the connections closed so far (after the events of the turn that
 * closed them). */
static void px_reap(px_t *px)
{
    moat_list_t *it;
    while ((it = moat_list_first(&px->dead))) {
        moat_list_remove(it);
        px_conn_free(container_of(it, px_conn_t, tnode));
    }
}

static void px_reap_cb(uv_check_t *h)
{
    px_t *px = h->data;
    uv_check_stop(h);
    px_reap(px);
}

/* ---- deadlines ------------------------------------------------------------------------ */

static void px_tq_cb(uv_timer_t *t);

/* Arm the service's timer for due if it would fire later. */
static void px_tq_arm(px_t *px, uint64_t due)
{
    if (due >= px->tq_due)
        return;
    px->tq_due = due;
    uint64_t now = uv_now(px->loop);
    uv_timer_start(&px->tq_timer, px_tq_cb, due > now ? due - now : 0, 0);
}

/* The connection's timeout: ms from now, on the list of its kind (replaces
 * any deadline it had). */
static void px_deadline(px_conn_t *c, px_tq_kind_t k, uint64_t ms)
{
    px_t *px = c->px;
    moat_list_remove(&c->tnode);
    c->deadline = uv_now(px->loop) + ms;
    /* Last, unless a reload shortened the timeout: then before the later
     * deadlines of the previous generation's. */
    moat_list_t *q = &px->tq[k], *p = q->prev;
    while (p != q && container_of(p, px_conn_t, tnode)->deadline > c->deadline)
        p = p->prev;
    moat_list_push(p, &c->tnode);
    px_tq_arm(px, c->deadline);
}

static void px_deadline_stop(px_conn_t *c)
{
    moat_list_remove(&c->tnode); /* the timer may fire for nothing: it re-arms */
}

static void px_close_fd(int *fd, bool reset)
{
    if (*fd < 0)
        return;
    if (reset)
        px_reset_fd(*fd);
    else
        close(*fd);
    *fd = -1;
}

/* Stop waiting for a lookup in flight (the lookup goes on for other dials
 * of the name, and its answer is cached). */
static void px_req_cancel(px_conn_t *c)
{
    px_dialcache_unwait(&c->wait);
}

void px_conn_close(px_conn_t *c)
{
    if (c->state == PX_S_CLOSING)
        return;
    px_t *px = c->px;
    if (c->log_at_close)
        px_conn_log(c, &c->dec);
    c->log_at_close = false;
    c->state = PX_S_CLOSING;
    px_req_cancel(c);
    moat_list_remove(&c->node);
    px->n_conns--;
    if (px->conns_all)
        atomic_fetch_sub_explicit(px->conns_all, 1, memory_order_relaxed);
    stats_conn_close(c->stats_tenant, px_kind_stats(c->kind));
    px_addrs_free(c);
    px_conn_dir_release(px, &c->d_up);
    px_conn_dir_release(px, &c->d_down);
    moat_list_remove(&c->later);
    px_close_fd(&c->cfd, c->reset);
    px_close_fd(&c->ufd, c->reset);
    /* Closing takes the sockets out of the epoll set; the memory stays
     * until the reaper runs after this turn's events, so events already
     * taken from the set for this connection find it CLOSING. */
    moat_list_remove(&c->tnode);
    moat_list_append(&px->dead, &c->tnode);
    uv_check_start(&px->reap, px_reap_cb);
    moat_service_busy_done(&px->svc);
}

void px_conn_abort(px_conn_t *c, const filter_decision_t *why)
{
    if (why && c->log_at_close) {
        c->log_at_close = false;
        px_conn_log(c, why);
    }
    c->reset = true;
    px_conn_close(c);
}

/* ---- readiness ------------------------------------------------------------------------ */

/* Put fd in the epoll set for good (until close). 0 or -errno. */
static int px_watch(px_conn_t *c, px_side_t *s, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = s};
    return epoll_ctl(c->px->epfd, EPOLL_CTL_ADD, fd, &ev) == 0 ? 0 : -errno;
}

static void px_later_cb(uv_idle_t *h);

/* Work left after this turn's rounds: run again when the loop is idle. */
void px_conn_later(px_conn_t *c)
{
    if (moat_list_linked(&c->later) || c->state == PX_S_CLOSING)
        return;
    moat_list_push(&c->px->later, &c->later);
    uv_idle_start(&c->px->later_idle, px_later_cb);
}

/* ---- decision helpers --------------------------------------------------------------- */

/* Record the connection's name (for the log, and to dial when ok). False
 * when there is no memory for it. */
bool px_conn_set_name(px_conn_t *c, const char *name, size_t len, bool ok)
{
    if (len < PX_NAME_INLINE) { /* name may be the connection's own */
        memmove(c->name_inline, name, len);
        c->name_inline[len] = '\0';
        if (c->name != c->name_inline)
            free(c->name);
        c->name = c->name_inline;
        c->name_len = len;
        c->name_ok = ok;
        return true;
    }
    char *n = malloc(len + 1);
    if (!n)
        return false;
    memcpy(n, name, len);
    n[len] = '\0';
    px_name_free(c);
    c->name = n;
    c->name_len = len;
    c->name_ok = ok;
    return true;
}

void px_conn_take_gen(px_conn_t *c)
{
    if (!c->gen)
        c->gen = moat_gen_ref(c->px->gen);
}

/* Discard what the client sent (the peeked hello or head, and more), then
 * answer and half-close; LINGER reads and drops the rest until EOF. */
static void px_linger(px_conn_t *c)
{
    for (int i = 0; i < PX_PUMP_ROUNDS; i++) {
        ssize_t n = recv(c->cfd, c->px->copy_buf, PX_COPY_BUF, 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->cs.rd = false;
            return;
        }
        if (n < 0 && errno == EINTR)
            continue;
        px_conn_close(c);
        return;
    }
    px_conn_later(c);
}

void px_conn_answer(px_conn_t *c, const void *data, size_t len)
{
    px_deadline_stop(c);
    px_close_fd(&c->ufd, false); /* a tunnel refused after its dial */
    /* Drop what is queued so that closing does not reset (RFC 793: data
     * unread at close means RST, which can destroy our answer in flight). */
    for (int i = 0; i < PX_PUMP_ROUNDS; i++)
        if (recv(c->cfd, c->px->copy_buf, PX_COPY_BUF, 0) <= 0)
            break;
    if (data && send(c->cfd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        px_conn_abort(c, NULL);
        return;
    }
    (void)shutdown(c->cfd, SHUT_WR);
    c->state = PX_S_LINGER;
    px_deadline(c, PX_TQ_LINGER, PX_LINGER_MS);
    c->cs.rd = true; /* what came after the loop above */
    px_linger(c);
}

static void px_send_answer(px_conn_t *c, filter_answer_t ans)
{
    const uint8_t *data = NULL;
    size_t len = 0;
    char resp[FILTER_HTTP_403_MAX];
    if (ans == FILTER_ANSWER_ALERT) {
        data = filter_tls_alert_access_denied(&len);
    } else {
        int n = filter_http_format_403(c->name, c->name ? c->name_len : 0, resp, sizeof resp);
        if (n > 0) {
            data = (const uint8_t *)resp;
            len = (size_t)n;
        }
    }
    px_conn_answer(c, data, len);
}

bool px_conn_reply(px_conn_t *c, const void *data, size_t len)
{
    px_conn_pre_write(c, &c->cs);
    ssize_t n = send(c->cfd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 || (size_t)n != len) {
        px_conn_abort(c, NULL);
        return false;
    }
    return true;
}

int px_conn_consume(px_conn_t *c, size_t n)
{
    while (n > 0) {
        ssize_t r = recv(c->cfd, c->px->copy_buf, n < PX_COPY_BUF ? n : PX_COPY_BUF, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) /* peeked bytes are queued: this does not happen */
            return r < 0 ? -errno : -EPIPE;
        n -= (size_t)r;
    }
    return 0;
}

ssize_t px_conn_peek_bytes(px_conn_t *c, size_t limit)
{
    px_t *px = c->px;
    if (limit == 0)
        limit = 1;
    if (px->peek_cap < limit) {
        uint8_t *nb = realloc(px->peek_buf, limit);
        if (!nb)
            return -ENOMEM;
        px->peek_buf = nb;
        px->peek_cap = limit;
    }
    ssize_t n;
    do
        n = recv(c->cfd, px->peek_buf, limit, MSG_PEEK);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        c->cs.rd = false;
        return 0;
    }
    return n <= 0 ? -EPIPE : n;
}

/* ---- dial -------------------------------------------------------------------------- */

/* The connection was allowed but cannot be made. */
static void px_dial_fail(px_conn_t *c, filter_reason_t why)
{
    if (c->proto != PX_PROTO_NONE && !c->replied) { /* told in the client's protocol */
        c->log_at_close = false;
        filter_decision_t d = filter_decide_failed(c->dec, why);
        px_tunnel_refuse(c, &d);
        return;
    }
    if (c->log_at_close) {
        c->log_at_close = false;
        filter_decision_t d = filter_decide_failed(c->dec, why);
        px_conn_log(c, &d);
    }
    c->reset = true;
    px_conn_close(c);
}

/* The dialled socket's first event: connected, or this address failed
 * (EPOLLERR / EPOLLHUP: refused, unreachable, reset; which one does not
 * matter) and its socket goes, for the next address. */
static void px_dial_event(px_conn_t *c, uint32_t events)
{
    if (events & (EPOLLERR | EPOLLHUP)) {
        px_close_fd(&c->ufd, false);
        px_dial_next(c);
        return;
    }
    if (events & EPOLLOUT)
        px_conn_splice(c);
}

static void px_dial_next(px_conn_t *c)
{
    while (c->next_addr < c->n_addrs) {
        const filter_addr_t *a = &c->addrs[c->next_addr++];
        struct sockaddr_storage ss;
        socklen_t sl = filter_addr_to_sockaddr(a, c->port, &ss);
        int fd = socket(a->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            px_dial_fail(c, FILTER_REASON_DIAL_FAILED);
            return;
        }
        if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS) {
            close(fd);
            continue;
        }
        /* Added after connect(): a socket not yet connecting reports
         * EPOLLHUP. Its flags come from its events from here on. */
        c->ufd = fd;
        c->us = (px_side_t){.c = c, .server = true};
        if (px_watch(c, &c->us, fd) != 0) {
            px_close_fd(&c->ufd, false);
            px_dial_fail(c, FILTER_REASON_DIAL_FAILED);
            return;
        }
        c->dest = *a;
        c->has_dest = true;
        return;
    }
    px_dial_fail(c, c->n_addrs ? FILTER_REASON_DIAL_FAILED : FILTER_REASON_NO_ADDRESS);
}

static void px_dial_start(px_conn_t *c)
{
    c->state = PX_S_DIAL;
    c->next_addr = 0;
    px_deadline(c, PX_TQ_DIAL, c->gen->cfg->proxy.connect_timeout_ms);
    px_dial_next(c);
}

/* Dial one address (transparent original destination, an IP literal Host). */
static void px_dial_addr(px_conn_t *c, const filter_addr_t *a)
{
    if (!px_addrs_alloc(c, 1)) {
        px_dial_fail(c, FILTER_REASON_DIAL_FAILED);
        return;
    }
    c->addrs[0] = *a;
    c->n_addrs = 1;
    px_dial_start(c);
}

/* §2.3 step 4 and §2.4: the name's addresses that may be dialled
 * (filter_decide_dial). Cached or fresh, an address is judged here, against
 * this connection's policy. */
static void px_resolve_cb(void *arg, int status, const dns_cache_addr_t *addrs, size_t n)
{
    px_conn_t *c = arg;
    if (c->state != PX_S_RESOLVE)
        return;
    if (status != 0) { /* an upstream error (SERVFAIL, REFUSED) leaves nothing to dial */
        px_dial_fail(c, status == -ETIMEDOUT ? FILTER_REASON_CONNECT_TIMEOUT
                        : status == -ENOMEM  ? FILTER_REASON_DIAL_FAILED
                                             : FILTER_REASON_NO_ADDRESS);
        return;
    }
    if (!px_addrs_alloc(c, n)) {
        px_dial_fail(c, FILTER_REASON_DIAL_FAILED);
        return;
    }
    for (size_t i = 0; i < n; i++)
        c->addrs[i] = addrs[i].addr;
    size_t kept = n;
    moat_scope_t sc = px_conn_scope(c, c->gen);
    filter_decision_t d = filter_decide_dial(sc.policy, sc.audit, c->port, c->dec, c->addrs, &kept);
    if (kept == 0) {
        px_dial_fail(c, d.reason);
        return;
    }
    c->n_addrs = kept;
    c->dec = d;
    px_dial_start(c);
}

static void px_resolve(px_conn_t *c)
{
    c->state = PX_S_RESOLVE;
    const cfg_t *cfg = c->gen->cfg;
    /* The upstream answers within dns.timeout; the timer only matters if
     * the DNS service went away under us. */
    px_deadline(c, PX_TQ_RESOLVE, cfg->dns.timeout_ms + cfg->proxy.connect_timeout_ms);
    px_dialcache_result_t hit;
    int rc = c->px->dialcache ? px_dialcache_get(c->px->dialcache, c->name, c->name_len, &c->wait,
                                                 px_resolve_cb, c, &hit)
                              : -ESHUTDOWN;
    if (rc == 0)
        px_resolve_cb(c, hit.status, hit.addrs, hit.n);
    else if (rc != -EINPROGRESS)
        px_dial_fail(c, FILTER_REASON_DIAL_FAILED);
}

/* Leave the peek phase: the peeked bytes stay queued for the splice. */
static void px_peek_end(px_conn_t *c)
{
    c->cs.rd = true; /* the peeked bytes are still queued */
    px_deadline_stop(c);
}

static bool px_port_in(const filter_port_range_t *r, size_t n, int port)
{
    for (size_t i = 0; i < n; i++)
        if (port >= r[i].lo && port <= r[i].hi)
            return true;
    return false;
}

/* What the connection knows, as filter_decide_conn wants it (with gen's
 * config); the stage's own facts are filled in by the caller, and the
 * client's scope (its tenant's mode and policy) by px_decide. */
void px_conn_input(px_conn_t *c, const moat_gen_t *gen, filter_conn_stage_t stage,
                   filter_conn_input_t *in)
{
    const cfg_t *cfg = gen->cfg;
    *in = (filter_conn_input_t){
        .stage = stage,
        .listener = c->kind == PX_TLS    ? FILTER_LISTENER_TLS
                    : c->kind == PX_HTTP ? FILTER_LISTENER_HTTP
                                         : FILTER_LISTENER_TRANSPARENT,
        .port = c->port,
        .dest = c->has_orig ? &c->orig : NULL,
        .tls_ports = cfg->proxy.tls_ports.items,
        .n_tls_ports = cfg->proxy.tls_ports.n,
        .http_ports = cfg->proxy.http_ports.items,
        .n_http_ports = cfg->proxy.http_ports.n,
        .names_for = px_names_for,
        .names_arg = c,
    };
}

/* Do what the decision says: peek, dial (allowed, or let through by
 * audit; logged at close), or log the block and answer as step 5 says. */
static void px_act(px_conn_t *c, const filter_conn_out_t *o)
{
    if (o->name && !px_conn_set_name(c, o->name, o->name_len, o->name_ok) && o->name_ok &&
        o->by_name) {
        px_peek_failed(c, FILTER_REASON_DIAL_FAILED);
        return;
    }
    c->by_name = o->by_name;
    if (o->addr) {
        c->dest = *o->addr;
        c->has_dest = true;
    }
    switch (o->action) {
    case FILTER_ACT_PEEK_TLS:
    case FILTER_ACT_PEEK_HTTP:
        /* Within peek_timeout counted from accept. */
        c->peek_tls = o->action == FILTER_ACT_PEEK_TLS;
        /* An explicit proxy's client sends its hello or head once told the
         * tunnel is open (an address target on a tls or http port). */
        if (c->proto != PX_PROTO_NONE && !c->replied && !px_tunnel_ready(c))
            return;
        c->state = PX_S_PEEK;
        px_deadline(c, PX_TQ_PEEK, c->px->gen->cfg->proxy.peek_timeout_ms);
        px_peek(c); /* the hello is often there already */
        return;
    case FILTER_ACT_DIAL_NAME:
    case FILTER_ACT_DIAL_ADDR:
        px_conn_take_gen(c);
        c->dec = o->decision;
        c->log_at_close = true;
        px_peek_end(c);
        if (o->action == FILTER_ACT_DIAL_NAME)
            px_resolve(c);
        else
            px_dial_addr(c, &c->dest);
        return;
    case FILTER_ACT_REFUSE:
        px_conn_take_gen(c);
        if (c->proto != PX_PROTO_NONE && !c->replied) {
            px_tunnel_refuse(c, &o->decision);
            return;
        }
        px_conn_log(c, &o->decision);
        if (o->answer == FILTER_ANSWER_RESET)
            px_conn_abort(c, NULL);
        else
            px_send_answer(c, o->answer);
        return;
    }
}

static bool px_first_name_cb(const char *name, size_t len, void *arg)
{
    px_conn_t *c = arg;
    (void)px_conn_set_name(c, name, len, false); /* for the log only: no memory, no name */
    return false;
}

/* SPEC §2.8: a transparent connection on a port that is neither a tls nor
 * an http port, refused or let through by audit at step 3, is logged with
 * the name this client resolved to the destination through moat, when
 * there is one (so `moat learn` proposes the name on that port, not the
 * address). Not name_ok: a reload still decides it by its address. */
static void px_name_for_log(px_conn_t *c, const filter_conn_input_t *in, const filter_conn_out_t *o)
{
    if (in->stage != FILTER_STAGE_ACCEPT || in->listener != FILTER_LISTENER_TRANSPARENT ||
        !in->dest || o->name || o->decision.verdict != FILTER_BLOCK ||
        filter_reason_is_hard(o->decision.reason))
        return;
    if (px_port_in(in->tls_ports, in->n_tls_ports, in->port) ||
        px_port_in(in->http_ports, in->n_http_ports, in->port))
        return;
    px_names_for(c, px_first_name_cb, c);
}

/* Decide with the current generation, as the client's tenant (SPEC §2.7),
 * and act on it. */
void px_conn_decide(px_conn_t *c, filter_conn_input_t *in)
{
    moat_scope_t sc = px_conn_scope(c, c->px->gen);
    in->audit = sc.audit;
    filter_conn_out_t o;
    filter_decide_conn(sc.policy, in, &o);
    px_name_for_log(c, in, &o);
    /* SPEC §2.3: with filtering on, every later request of a connection
     * admitted by its request head is decided too (watch.c). */
    if ((o.action == FILTER_ACT_DIAL_NAME || o.action == FILTER_ACT_DIAL_ADDR) &&
        in->stage == FILTER_STAGE_HTTP && c->watch_mode == PX_WATCH_NONE &&
        filter_policy_filtering(sc.policy))
        c->watch_mode = PX_WATCH_SWITCH;
    px_act(c, &o);
}

/* The peek ended without a hello or head to decide by. */
static void px_peek_failed(px_conn_t *c, filter_reason_t why)
{
    if (c->tunnel_peek && why == FILTER_REASON_CLIENT_CLOSED) {
        /* The client left its open tunnel before sending anything to
         * refuse: the tunnel was allowed, and is logged so at close. */
        px_conn_close(c);
        return;
    }
    if (c->tunnel_peek) { /* the tunnel's hello never came: logged as why, not allowed */
        c->log_at_close = false;
        c->tunnel_peek = false;
    }
    filter_conn_input_t in;
    px_conn_input(c, c->px->gen, FILTER_STAGE_PEEK_FAILED, &in);
    in.failed = why;
    px_conn_decide(c, &in);
}

/* ---- peek ---------------------------------------------------------------------------- */

static void px_peek(px_conn_t *c)
{
    px_t *px = c->px;
    const cfg_t *cfg = px->gen->cfg;
    bool tls = c->peek_tls;
    size_t limit = tls ? cfg->proxy.max_hello : cfg->proxy.max_http_head;
    if (limit == 0)
        limit = 1;
    /* MSG_PEEK reads from the start every time, so nothing needs keeping
     * between peeks: one buffer serves every connection. */
    ssize_t n = px_conn_peek_bytes(c, limit);
    if (n == 0)
        return;
    if (n < 0) {
        px_peek_failed(c, n == -ENOMEM ? FILTER_REASON_DIAL_FAILED : FILTER_REASON_CLIENT_CLOSED);
        return;
    }
    size_t len = (size_t)n;
    filter_conn_input_t in;
    filter_tls_hello_t hello;
    filter_http_head_t head;
    if (tls) {
        filter_tls_result_t r = filter_tls_hello_parse(px->peek_buf, len, limit, &hello);
        if (r != FILTER_TLS_NEED_MORE && c->tunnel_peek) {
            px_tunnel_hello(c, r, &hello);
            return;
        }
        if (r != FILTER_TLS_NEED_MORE) {
            px_conn_input(c, px->gen, FILTER_STAGE_TLS, &in);
            in.tls = r;
            in.hello = &hello;
            px_conn_decide(c, &in);
            return;
        }
    } else {
        filter_http_result_t r = filter_http_head_parse(px->peek_buf, len, limit, &head);
        if (r != FILTER_HTTP_NEED_MORE) {
            px_conn_input(c, px->gen, FILTER_STAGE_HTTP, &in);
            in.http = r;
            in.head = &head;
            px_conn_decide(c, &in);
            return;
        }
    }
    if (len >= limit) { /* the reader wants more than the limit */
        px_peek_failed(c, tls ? FILTER_REASON_HELLO_TOO_BIG : FILTER_REASON_HEAD_TOO_BIG);
        return;
    }
    if (c->cs.fin) { /* EOF mid-request: nothing more will come */
        px_peek_failed(c, FILTER_REASON_CLIENT_CLOSED);
        return;
    }
    /* Everything queued was seen (less than the limit): new bytes bring an
     * edge. */
    c->cs.rd = false;
}

/* ---- relay ----------------------------------------------------------------------------- */

/* Before writing to s: a socket written to before gets TCP_NODELAY, so a
 * second small write is not held back by Nagle behind an unacknowledged
 * first one (interactive protocols). The first write never waits, and a
 * connection that writes once each way (a request and its answer) saves
 * the call. */
void px_conn_pre_write(px_conn_t *c, px_side_t *s)
{
    if (s->written && !s->nodelay) {
        int one = 1;
        (void)setsockopt(s->server ? c->ufd : c->cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        s->nodelay = true;
    }
    s->written = true;
}

/* src said EOF and every byte it sent reached dst: pass the half-close on.
 * When the other direction has ended too, the connection closes right
 * after and close() sends the FIN: no shutdown() needed. */
void px_conn_dir_finish(px_conn_t *c, px_dir_t *d, int dst, const px_dir_t *other)
{
    px_conn_dir_release(c->px, d);
    if (!d->shut) {
        d->shut = true;
        if (!other->shut)
            (void)shutdown(dst, SHUT_WR); /* half-close kept */
    }
}

/* Copy mode: one read into the shared buffer, sent on. Returns 1 to go on,
 * 0 when src has nothing more now or dst is full, -errno on a failure. */
static int px_copy_once(px_conn_t *c, px_dir_t *d, px_side_t *src, px_side_t *dst, int sfd)
{
    px_t *px = c->px;
    ssize_t n = recv(sfd, px->copy_buf, PX_COPY_BUF, 0);
    if (n < 0) {
        if (errno == EINTR)
            return 1;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            src->rd = false;
            return 0;
        }
        return -errno;
    }
    if (n == 0) {
        d->eof = true;
        return 1;
    }
    int r = px_conn_send(c, d, dst, px->copy_buf, (size_t)n);
    if (r != 0) { /* parked in a pipe: a stream from now on (the pipe is the buffer) */
        d->stream = r > 0;
        return r > 0 ? 0 : r;
    }
    if (n == PX_COPY_BUF) {
        d->stream = true; /* a stream: the kernel moves the rest */
        return 1;
    }
    /* A short read emptied the queue; if the FIN had come before it, it was
     * behind these bytes, and the next read would say EOF. */
    if (src->fin)
        d->eof = true;
    else
        src->rd = false;
    return 1;
}

int px_conn_send(px_conn_t *c, px_dir_t *d, px_side_t *dst, const uint8_t *buf, size_t len)
{
    if (len == 0)
        return 0;
    px_conn_pre_write(c, dst);
    ssize_t m = send(dst->server ? c->ufd : c->cfd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (m < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        return -errno;
    if (m < 0)
        m = 0;
    d->bytes += (uint64_t)m;
    c->last_ms = uv_now(c->px->loop);
    if ((size_t)m == len)
        return 0;
    int r = px_pipe_get(c->px, &d->pipe);
    if (r != 0)
        return r;
    size_t rest = len - (size_t)m;
    ssize_t w = write(d->pipe.wfd, buf + m, rest);
    if (w < 0 || (size_t)w != rest) /* an empty pipe holds at least two pages */
        return w < 0 ? -errno : -ENOBUFS;
    d->in_pipe = rest;
    dst->wr = false;
    return 1;
}

int px_conn_flush(px_conn_t *c, px_dir_t *d, px_side_t *dst)
{
    int dfd = dst->server ? c->ufd : c->cfd;
    while (d->in_pipe > 0) {
        if (!dst->wr)
            return 0;
        px_conn_pre_write(c, dst);
        ssize_t n =
            splice(d->pipe.rfd, NULL, dfd, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            d->in_pipe -= (size_t)n;
            d->bytes += (uint64_t)n;
            c->last_ms = uv_now(c->px->loop);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            dst->wr = false; /* an edge comes when there is room */
            return 0;
        } else {
            return n < 0 ? -errno : -EPIPE;
        }
    }
    return 1;
}

/* Move bytes src → dst until src has none, dst is full, or the round
 * limit. 0 when done for now, 1 when rounds ran out with work left, -errno
 * on a failure of either side. */
int px_conn_pump(px_conn_t *c, px_dir_t *d, px_side_t *src, px_side_t *dst, px_dir_t *other)
{
    px_t *px = c->px;
    int sfd = src->server ? c->ufd : c->cfd, dfd = dst->server ? c->ufd : c->cfd;
    for (int round = 0; round < PX_PUMP_ROUNDS; round++) {
        if (d->in_pipe > 0) {
            int f = px_conn_flush(c, d, dst);
            if (f <= 0)
                return f;
        }
        if (d->eof) {
            px_conn_dir_finish(c, d, dfd, other);
            return 0;
        }
        if (!src->rd || !dst->wr)
            return 0;
        if (!d->stream) {
            int r = px_copy_once(c, d, src, dst, sfd);
            if (r <= 0)
                return r;
            continue;
        }
        if (d->pipe.rfd < 0) {
            int r = px_pipe_get(px, &d->pipe);
            if (r != 0)
                return r;
        }
        ssize_t n =
            splice(sfd, NULL, d->pipe.wfd, NULL, PX_PIPE_SIZE, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            d->in_pipe += (size_t)n;
            continue;
        }
        if (n == 0) {
            d->eof = true;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            src->rd = false;
            px_conn_dir_release(px, d); /* idle: give the pipe back */
            return 0;
        }
        return -errno;
    }
    return 1;
}

static void px_relay(px_conn_t *c)
{
    if (c->watch) {
        px_watch_relay(c);
        return;
    }
    int up = px_conn_pump(c, &c->d_up, &c->cs, &c->us, &c->d_down);
    int down = up < 0 ? 0 : px_conn_pump(c, &c->d_down, &c->us, &c->cs, &c->d_up);
    if (up < 0 || down < 0) {
        /* One side failed (reset, or a write after its close): bytes may be
         * lost, so the other side gets a reset too, not a clean end. */
        px_conn_abort(c, NULL);
        return;
    }
    if (c->d_up.shut && c->d_down.shut) {
        px_conn_close(c);
        return;
    }
    if (up > 0 || down > 0)
        px_conn_later(c);
}

void px_conn_splice(px_conn_t *c)
{
    px_addrs_free(c);
    if (c->watch_mode != PX_WATCH_NONE && !c->watch && !px_watch_start(c))
        return;
    if (c->proto != PX_PROTO_NONE && !c->replied && !px_tunnel_ready(c))
        return;
    if (c->check_sni) { /* SPEC §2.6: the hello inside the tunnel, as in step 1 */
        c->check_sni = false;
        c->tunnel_peek = true;
        c->peek_tls = true;
        c->state = PX_S_PEEK;
        px_deadline(c, PX_TQ_PEEK, c->gen->cfg->proxy.peek_timeout_ms);
        px_peek(c);
        return;
    }
    c->state = PX_S_SPLICE;
    c->last_ms = uv_now(c->px->loop);
    uint64_t idle = c->gen->cfg->proxy.idle_timeout_ms;
    if (idle)
        px_deadline(c, PX_TQ_IDLE, idle);
    else
        px_deadline_stop(c);
    px_relay(c);
}

/* ---- timer ------------------------------------------------------------------------------ */

/* The connection's deadline passed (it is off its list). */
static void px_timeout(px_conn_t *c)
{
    switch (c->state) {
    case PX_S_HANDSHAKE:
        px_tunnel_failed(c, FILTER_REASON_PEEK_TIMEOUT);
        return;
    case PX_S_PEEK:
        px_peek_failed(c, FILTER_REASON_PEEK_TIMEOUT);
        return;
    case PX_S_RESOLVE:
    case PX_S_DIAL:
        px_dial_fail(c, FILTER_REASON_CONNECT_TIMEOUT);
        return;
    case PX_S_SPLICE: {
        uint64_t idle = c->gen->cfg->proxy.idle_timeout_ms, now = uv_now(c->px->loop);
        if (now - c->last_ms >= idle) {
            px_conn_close(c);
            return;
        }
        px_deadline(c, PX_TQ_IDLE, idle - (now - c->last_ms));
        return;
    }
    case PX_S_LINGER:
        px_conn_close(c);
        return;
    case PX_S_CLOSING:
        return;
    }
}

static void px_tq_cb(uv_timer_t *t)
{
    px_t *px = t->data;
    uint64_t now = uv_now(px->loop), next = UINT64_MAX;
    px->tq_due = UINT64_MAX;
    for (int k = 0; k < PX_TQ_N; k++) {
        moat_list_t *it;
        while ((it = moat_list_first(&px->tq[k]))) {
            px_conn_t *c = container_of(it, px_conn_t, tnode);
            if (c->deadline > now)
                break;
            moat_list_remove(it);
            px_timeout(c); /* may set a later deadline (and arm the timer) */
        }
    }
    for (int k = 0; k < PX_TQ_N; k++) {
        moat_list_t *it = moat_list_first(&px->tq[k]);
        if (it && container_of(it, px_conn_t, tnode)->deadline < next)
            next = container_of(it, px_conn_t, tnode)->deadline;
    }
    if (next != UINT64_MAX)
        px_tq_arm(px, next);
}

/* ---- accept ------------------------------------------------------------------------------ */

typedef struct px_mem_ctx {
    filter_name_each_cb each;
    void *each_arg;
    bool stop;
} px_mem_ctx_t;

static bool px_mem_name_cb(const char *name, size_t len, uint64_t expiry_ms, void *arg)
{
    px_mem_ctx_t *x = arg;
    (void)expiry_ms;
    x->stop = !x->each(name, len, x->each_arg);
    return !x->stop;
}

/* Step 3: the names this client resolved to the destination through moat,
 * in this worker's address memory, then in the other workers'. */
static void px_names_for(void *arg, filter_name_each_cb each, void *each_arg)
{
    px_conn_t *c = arg;
    px_t *px = c->px;
    px_mem_ctx_t x = {.each = each, .each_arg = each_arg};
    uint64_t now = uv_now(px->loop);
    size_t n = px->dns_all ? px->workers : 1;
    for (size_t i = 0; i < n && !x.stop; i++) {
        dns_addrmem_t *mem = dns_server_addrmem(px->dns_all ? px->dns_all[i] : px->dns);
        if (mem)
            dns_addrmem_names_for(mem, &c->client, &c->dest, now, px_mem_name_cb, &x);
    }
}

static void px_conn_begin(px_conn_t *c)
{
    filter_conn_input_t in;
    px_conn_input(c, c->px->gen, FILTER_STAGE_ACCEPT, &in);
    px_conn_decide(c, &in);
}

void px_conn_accept(px_t *px, px_kind_t kind, int fd, const struct sockaddr_storage *peer,
                    const struct sockaddr_storage *dest, socklen_t dest_len)
{
    px_conn_t *c;
    moat_list_t *spare = moat_list_first(&px->spare);
    if (spare) {
        moat_list_remove(spare);
        px->n_spare--;
        c = px_conn_of(spare);
        memset(c, 0, sizeof *c);
    } else {
        c = calloc(1, sizeof *c);
    }
    /* Readable and writable until a call says otherwise (see the top). */
    if (c) {
        c->px = px;
        c->cs = (px_side_t){.c = c, .rd = true, .wr = true, .nodelay = true};
    }
    if (!c || px_watch(c, &c->cs, fd) != 0) {
        free(c);
        px_reset_fd(fd);
        px_log_refused(px, kind, peer, FILTER_REASON_DIAL_FAILED);
        return;
    }
    c->cfd = fd;
    c->ufd = -1;
    c->kind = kind;
    c->d_up.pipe.rfd = c->d_up.pipe.wfd = -1;
    c->d_down.pipe.rfd = c->d_down.pipe.wfd = -1;
    moat_list_init(&c->tnode);
    c->handles = 1;
    moat_service_handle_open(&px->svc);
    moat_service_busy_add(&px->svc);
    c->start_ms = uv_now(px->loop);
    moat_list_init(&c->later);
    moat_list_push(&px->conns, &c->node);
    px->n_conns++;
    if (px->conns_all)
        atomic_fetch_add_explicit(px->conns_all, 1, memory_order_relaxed);
    (void)filter_addr_from_sockaddr((const struct sockaddr *)peer, &c->client, &c->cport);
    c->auth_tenant = -1;
    c->stats_tenant = moat_gen_scope(px->gen, &c->client).stats_id;
    stats_conn_open(c->stats_tenant, px_kind_stats(kind));
    if (kind == PX_CONNECT || kind == PX_SOCKS) {
        /* SPEC §2.6: the client names its destination first (tunnel.c),
         * within peek_timeout. */
        c->state = PX_S_HANDSHAKE;
        px_deadline(c, PX_TQ_PEEK, px->gen->cfg->proxy.peek_timeout_ms);
        px_tunnel_handshake(c);
        return;
    }
    if (kind == PX_TLS) {
        c->port = 443;
    } else if (kind == PX_HTTP) {
        c->port = 80; /* SPEC §2.3: port 80, whatever port the Host names */
    } else if (dest && dest_len &&
               filter_addr_from_sockaddr((const struct sockaddr *)dest, &c->dest, &c->port) == 0) {
        c->orig = c->dest;
        c->has_dest = c->has_orig = true;
    }
    px_conn_begin(c);
}

px_conn_t *px_conn_of(moat_list_t *node)
{
    return container_of(node, px_conn_t, node);
}

/* ---- events ------------------------------------------------------------------------------ */

/* What the state does with readiness. */
static void px_conn_run(px_conn_t *c)
{
    switch (c->state) {
    case PX_S_HANDSHAKE:
        if (c->cs.rd)
            px_tunnel_handshake(c);
        return;
    case PX_S_PEEK:
        if (c->cs.rd)
            px_peek(c);
        return;
    case PX_S_SPLICE:
        px_relay(c);
        return;
    case PX_S_LINGER:
        if (c->cs.rd)
            px_linger(c);
        return;
    case PX_S_RESOLVE: /* readiness is kept for the relay */
    case PX_S_DIAL:    /* ufd's events go to px_dial_event */
    case PX_S_CLOSING:
        return;
    }
}

static void px_ep_cb(uv_poll_t *h, int status, int events)
{
    px_t *px = h->data;
    (void)events;
    if (status < 0) {
        log_warn("proxy: poll on the connections' epoll set: %s", uv_strerror(status));
        return;
    }
    struct epoll_event ev[PX_EP_BATCH];
    int n = epoll_wait(px->epfd, ev, PX_EP_BATCH, 0);
    for (int i = 0; i < n; i++) {
        px_side_t *s = ev[i].data.ptr;
        px_conn_t *c = s->c;
        uint32_t e = ev[i].events;
        if (c->state == PX_S_CLOSING)
            continue;
        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            s->rd = true;
        if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR))
            s->wr = true;
        if ((e & EPOLLRDHUP) && !(e & EPOLLERR))
            s->fin = true;
        if (s->server && c->state == PX_S_DIAL)
            px_dial_event(c, e);
        else if (!s->server && c->state == PX_S_PEEK && (e & EPOLLERR))
            px_peek_failed(c, FILTER_REASON_CLIENT_CLOSED);
        else if (!s->server && c->state == PX_S_HANDSHAKE && (e & EPOLLERR))
            px_tunnel_failed(c, FILTER_REASON_CLIENT_CLOSED);
        else
            px_conn_run(c);
    }
}

static void px_later_cb(uv_idle_t *h)
{
    px_t *px = h->data;
    moat_list_t round, *it;
    moat_list_move(&px->later, &round);
    uv_idle_stop(h);
    while ((it = moat_list_first(&round))) {
        moat_list_remove(it);
        px_conn_run(container_of(it, px_conn_t, later)); /* may put it on px->later again */
    }
}

static void px_conns_closed_cb(uv_handle_t *h)
{
    px_t *px = h->data;
    if (h == (uv_handle_t *)&px->ep_poll) {
        close(px->epfd);
        px->epfd = -1;
    }
    if (h == (uv_handle_t *)&px->reap)
        px_reap(px); /* connections closed since the last check */
    moat_service_handle_closed(&px->svc);
}

int px_conns_start(px_t *px)
{
    px->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (px->epfd < 0)
        return -errno;
    int rc = uv_poll_init(px->loop, &px->ep_poll, px->epfd);
    if (rc != 0) {
        close(px->epfd);
        px->epfd = -1;
        return rc;
    }
    px->ep_poll.data = px;
    uv_idle_init(px->loop, &px->later_idle);
    px->later_idle.data = px;
    uv_timer_init(px->loop, &px->tq_timer);
    px->tq_timer.data = px;
    px->tq_due = UINT64_MAX;
    uv_check_init(px->loop, &px->reap);
    px->reap.data = px;
    moat_service_handle_open(&px->svc);
    moat_service_handle_open(&px->svc);
    moat_service_handle_open(&px->svc);
    moat_service_handle_open(&px->svc);
    px->conns_started = true;
    return uv_poll_start(&px->ep_poll, UV_READABLE, px_ep_cb);
}

void px_conns_stop(px_t *px)
{
    if (!px->conns_started)
        return;
    px->conns_started = false;
    uv_close((uv_handle_t *)&px->ep_poll, px_conns_closed_cb);
    uv_close((uv_handle_t *)&px->later_idle, px_conns_closed_cb);
    uv_close((uv_handle_t *)&px->tq_timer, px_conns_closed_cb);
    uv_close((uv_handle_t *)&px->reap, px_conns_closed_cb);
}

/* ---- reload -------------------------------------------------------------------------------- */

void px_conns_recheck(px_t *px, moat_gen_t *gen)
{
    moat_list_foreach_safe(it, nx, &px->conns)
    {
        px_conn_t *c = px_conn_of(it);
        if (!c->log_at_close || !c->gen)
            continue; /* peeking (decides with the new generation) or done */
        /* Re-decided from what was recorded: its name (when normalised),
         * its original destination, or the IP literal it was dialled at. */
        filter_conn_input_t in;
        px_conn_input(c, gen, FILTER_STAGE_RECHECK, &in);
        in.name = c->name_ok ? c->name : NULL;
        in.name_len = c->name_len;
        in.by_name = c->by_name;
        in.addr = c->has_dest ? &c->dest : NULL;
        /* As its tenant in the new generation: a tenant added, changed or
         * removed may move the client to another policy. */
        moat_scope_t sc = px_conn_scope(c, gen);
        in.audit = sc.audit;
        filter_conn_out_t o;
        filter_decide_conn(sc.policy, &in, &o);
        /* An authenticated user whose tenant is gone has no policy left. */
        long tenant = c->auth_name ? moat_gen_tenant_find(gen, c->auth_name) : -1;
        if (o.action == FILTER_ACT_REFUSE || (c->auth_name && tenant < 0)) {
            filter_decision_t why = {.verdict = FILTER_BLOCK,
                                     .reason = FILTER_REASON_POLICY_RELOAD,
                                     .rule = c->dec.rule};
            px_conn_abort(c, &why);
            continue;
        }
        moat_gen_t *old = c->gen;
        c->gen = moat_gen_ref(gen);
        c->auth_tenant = tenant;
        c->auth_gen = gen->id;
        c->dec = o.decision;
        moat_gen_unref(old);
    }
}
