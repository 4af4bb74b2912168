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
 * Peeking: the hello / head is read with recv(MSG_PEEK) and never consumed,
 * so once the connection is allowed the splice simply moves it from the
 * client socket to the server together with whatever follows: there is no
 * replay buffer and no copy (SPEC §2.3 step 4's "replays the peeked bytes").
 * Because the bytes stay queued, a level-triggered poll would report the
 * socket readable again at once; SO_RCVLOWAT is set to one byte more than
 * what was peeked so the next wake-up means new bytes (or EOF / error,
 * which UV_DISCONNECT reports). The peek buffer exists only while peeking.
 *
 * Splicing: per direction, socket → pipe → socket with splice(2), no copy
 * through user space. A direction holds a pipe (from the service's pool)
 * only while bytes are in it, so an idle spliced connection has just its two
 * sockets open. A pipe is refilled only when it is empty: then EAGAIN from
 * socket → pipe can only mean "no data", never "pipe full".
 *
 * One uv_timer per connection serves peek_timeout (from accept),
 * connect_timeout (resolve + dial), idle_timeout (splice; re-armed lazily
 * from the last activity) and the linger bound.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "filter/http_head.h"
#include "filter/name.h"
#include "filter/tls_hello.h"
#include "proxy/log.h"
#include "proxy/proxy_internal.h"
#include "resolver/addrmem.h"
#include "resolver/server.h"

/* Splice rounds per wake-up before the loop gets a turn (fairness). */
#define PX_PUMP_ROUNDS 16
/* First peek buffer; grown up to max_hello / max_http_head as bytes come. */
#define PX_PEEK_FIRST 2048
/* How long a blocked connection that got its alert or 403 may keep sending
 * before we close it anyway. */
#define PX_LINGER_MS 2000

typedef enum px_state {
    PX_S_PEEK,
    PX_S_RESOLVE,
    PX_S_DIAL,
    PX_S_SPLICE,
    PX_S_LINGER,
    PX_S_CLOSING,
} px_state_t;

/* What a block sends before closing (SPEC §2.3 step 5). */
typedef enum px_answer { PX_ANS_RESET, PX_ANS_ALERT, PX_ANS_403 } px_answer_t;

typedef struct px_dir {
    px_pipe_t pipe; /* rfd -1 when none */
    size_t in_pipe; /* bytes in the pipe */
    uint64_t bytes; /* bytes delivered to the other side */
    bool eof;       /* the source reached EOF */
    bool shut;      /* shutdown(dst, SHUT_WR) done after the pipe drained */
} px_dir_t;

struct px_conn {
    px_t *px;
    px_conn_t *prev, *next;
    uv_poll_t cpoll, upoll;
    uv_timer_t timer;
    int cfd, ufd;
    unsigned handles; /* initialised handles not yet closed */
    int cmask, umask; /* events each poll is started with (-1: stopped) */
    px_kind_t kind;
    px_state_t state;
    bool upoll_init;   /* upoll initialised and not closing */
    bool has_dest;     /* dest: the original destination or the address dialled */
    bool has_orig;     /* transparent: dest is the original destination */
    bool name_ok;      /* name is normalised (dialable) */
    bool by_name;      /* decided by a name (re-decided by name on reload) */
    bool log_at_close; /* allowed (or audit-passed): log with bytes at close */
    bool reset;        /* close with RST */
    bool lowat;        /* SO_RCVLOWAT was raised */
    bool audit;
    filter_verdict_t verdict;
    const char *reason;
    const filter_rule_info_t *rule; /* owned by gen's policy */
    moat_gen_t *gen;                /* held from the decision on */
    filter_addr_t client, dest, orig;
    uint16_t cport, port;
    char *name; /* as seen (raw) or normalised when name_ok */
    size_t name_len;
    uint8_t *peek;
    size_t peek_len, peek_cap;
    uint64_t start_ms, last_ms;
    px_dialcache_waiter_t wait; /* waiting for a lookup of name (RESOLVE) */
    filter_addr_t *addrs;
    size_t n_addrs, next_addr;
    const char *no_addr_reason;
    px_dir_t d_up, d_down; /* client → server, server → client */
};

static void px_conn_close(px_conn_t *c);
static void px_dial_next(px_conn_t *c);
static void px_peek(px_conn_t *c, int events);

/* ---- logging ------------------------------------------------------------------------ */

static void px_fmt_addr(const filter_addr_t *a, uint16_t port, char *buf, size_t n)
{
    char ab[FILTER_ADDR_STRLEN];
    filter_addr_format(a, ab, sizeof ab);
    if (port)
        snprintf(buf, n, a->family == AF_INET6 ? "[%s]:%u" : "%s:%u", ab, port);
    else
        snprintf(buf, n, "%s", ab);
}

static void px_log(px_conn_t *c, filter_verdict_t verdict, const char *reason,
                   const filter_rule_info_t *rule, bool audit)
{
    /* px_log_refused's stand-in has no handles: counted as refused there. */
    if (c->handles)
        stats_conn_decision(px_kind_stats(c->kind),
                            audit                     ? STATS_VERDICT_AUDIT
                            : verdict == FILTER_BLOCK ? STATS_VERDICT_BLOCK
                                                      : STATS_VERDICT_ALLOW,
                            reason, c->d_up.bytes, c->d_down.bytes);
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
        .name = c->name,
        .name_len = c->name_len,
        .verdict = verdict,
        .reason = reason,
        .rule = rule,
        .audit = audit,
        .bytes_up = c->d_up.bytes,
        .bytes_down = c->d_down.bytes,
        .duration_ms = now > c->start_ms ? now - c->start_ms : 0,
    };
    log_decision(&d);
}

void px_log_refused(px_t *px, px_kind_t kind, const struct sockaddr_storage *peer,
                    const char *reason)
{
    px_conn_t c;
    memset(&c, 0, sizeof c);
    c.px = px;
    c.kind = kind;
    c.start_ms = uv_now(px->loop);
    (void)filter_addr_from_sockaddr((const struct sockaddr *)peer, &c.client, &c.cport);
    stats_conn_refused(px_kind_stats(kind), reason);
    px_log(&c, FILTER_BLOCK, reason, NULL, false);
}

/* ---- closing ------------------------------------------------------------------------ */

static void px_dir_release(px_t *px, px_dir_t *d)
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

static void px_conn_free(px_conn_t *c)
{
    px_t *px = c->px;
    if (c->cfd >= 0) {
        if (c->reset)
            px_reset_fd(c->cfd);
        else
            close(c->cfd);
    }
    if (c->ufd >= 0) {
        if (c->reset)
            px_reset_fd(c->ufd);
        else
            close(c->ufd);
    }
    if (c->gen)
        moat_gen_unref(c->gen);
    free(c->name);
    free(c);
    px->open_handles--;
    px_check_closed(px);
}

static void px_conn_handle_closed_cb(uv_handle_t *h)
{
    px_conn_t *c = h->data;
    if (--c->handles == 0)
        px_conn_free(c);
}

/* Stop waiting for a lookup in flight (the lookup goes on for other dials
 * of the name, and its answer is cached). */
static void px_req_cancel(px_conn_t *c)
{
    px_dialcache_unwait(&c->wait);
}

static void px_conn_close(px_conn_t *c)
{
    if (c->state == PX_S_CLOSING)
        return;
    px_t *px = c->px;
    if (c->log_at_close)
        px_log(c, c->verdict, c->reason, c->rule, c->audit);
    c->log_at_close = false;
    c->state = PX_S_CLOSING;
    px_req_cancel(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        px->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    px->n_conns--;
    stats_conn_close(px_kind_stats(c->kind));
    free(c->peek);
    c->peek = NULL;
    free(c->addrs);
    c->addrs = NULL;
    px_dir_release(px, &c->d_up);
    px_dir_release(px, &c->d_down);
    uv_close((uv_handle_t *)&c->cpoll, px_conn_handle_closed_cb);
    uv_close((uv_handle_t *)&c->timer, px_conn_handle_closed_cb);
    if (c->upoll_init) {
        c->upoll_init = false;
        uv_close((uv_handle_t *)&c->upoll, px_conn_handle_closed_cb);
    }
    px_check_drained(px);
}

void px_conn_abort(px_conn_t *c, const char *reason)
{
    if (reason && c->log_at_close) {
        c->log_at_close = false;
        px_log(c, FILTER_BLOCK, reason, c->rule, false);
    }
    c->reset = true;
    px_conn_close(c);
}

/* ---- polls ------------------------------------------------------------------------- */

static void px_poll_set(px_conn_t *c, uv_poll_t *h, int *cur, int mask, uv_poll_cb cb)
{
    if (*cur == mask)
        return;
    *cur = mask;
    if (mask)
        uv_poll_start(h, mask, cb);
    else
        uv_poll_stop(h);
    (void)c;
}

/* ---- decision helpers --------------------------------------------------------------- */

static bool px_port_in(const cfg_port_list_t *l, uint16_t port)
{
    for (size_t i = 0; i < l->n; i++)
        if (port >= l->items[i].lo && port <= l->items[i].hi)
            return true;
    return false;
}

static void px_set_name(px_conn_t *c, const char *name, size_t len, bool ok)
{
    char *n = malloc(len + 1);
    if (!n)
        return; /* logged without a name */
    memcpy(n, name, len);
    n[len] = '\0';
    free(c->name);
    c->name = n;
    c->name_len = len;
    c->name_ok = ok;
}

static void px_take_gen(px_conn_t *c)
{
    if (!c->gen)
        c->gen = moat_gen_ref(c->px->gen);
}

/* Discard what the client sent (the peeked hello or head, and more), then
 * answer and half-close; LINGER reads and drops the rest until EOF. */
static void px_linger_cb(uv_poll_t *h, int status, int events)
{
    px_conn_t *c = h->data;
    (void)events;
    if (status < 0) {
        px_conn_close(c);
        return;
    }
    uint8_t buf[4096];
    for (int i = 0; i < PX_PUMP_ROUNDS; i++) {
        ssize_t n = recv(c->cfd, buf, sizeof buf, 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EINTR)
            continue;
        px_conn_close(c);
        return;
    }
}

static void px_timer_cb(uv_timer_t *t);

static void px_send_answer(px_conn_t *c, px_answer_t ans)
{
    const uint8_t *data = NULL;
    size_t len = 0;
    char resp[FILTER_HTTP_403_MAX];
    if (ans == PX_ANS_ALERT) {
        data = filter_tls_alert_access_denied(&len);
    } else {
        int n = filter_http_format_403(c->name, c->name ? c->name_len : 0, resp, sizeof resp);
        if (n > 0) {
            data = (const uint8_t *)resp;
            len = (size_t)n;
        }
    }
    if (c->lowat) {
        int one = 1;
        (void)setsockopt(c->cfd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
        c->lowat = false;
    }
    free(c->peek);
    c->peek = NULL;
    uv_timer_stop(&c->timer);
    c->cmask = -1; /* a new callback */
    /* Drop what is queued so that closing does not reset (RFC 793: data
     * unread at close means RST, which can destroy our answer in flight). */
    uint8_t buf[4096];
    for (int i = 0; i < PX_PUMP_ROUNDS; i++)
        if (recv(c->cfd, buf, sizeof buf, 0) <= 0)
            break;
    if (data && send(c->cfd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        px_conn_abort(c, NULL);
        return;
    }
    (void)shutdown(c->cfd, SHUT_WR);
    c->state = PX_S_LINGER;
    px_poll_set(c, &c->cpoll, &c->cmask, UV_READABLE, px_linger_cb);
    uv_timer_start(&c->timer, px_timer_cb, PX_LINGER_MS, 0);
}

/* A blocked verdict: log it now, answer as step 5 says. In audit mode the
 * connection goes on (to the name when there is one, else to the original
 * destination) and is logged at close; refused ranges and our own
 * listeners are never let through (a loop, or a metadata endpoint). */
static bool px_block(px_conn_t *c, const char *reason, const filter_rule_info_t *rule,
                     px_answer_t ans);

static void px_allow(px_conn_t *c, const char *reason, const filter_rule_info_t *rule);

/* ---- dial -------------------------------------------------------------------------- */

static void px_splice_start(px_conn_t *c);

/* The connection was allowed but cannot be made. */
static void px_dial_fail(px_conn_t *c, const char *reason)
{
    if (c->log_at_close) {
        c->log_at_close = false;
        /* Refused ranges are never audited (px_block): not "passed". */
        bool hard = strcmp(reason, "refused-range") == 0 || strcmp(reason, "own-listener") == 0;
        px_log(c, FILTER_BLOCK, reason, c->rule, c->audit && !hard);
    }
    c->reset = true;
    px_conn_close(c);
}

static void px_dial_cb(uv_poll_t *h, int status, int events);

static void px_dial_retry_closed_cb(uv_handle_t *h)
{
    px_conn_t *c = h->data;
    close(c->ufd);
    c->ufd = -1;
    if (--c->handles == 0) {
        px_conn_free(c);
        return;
    }
    if (c->state == PX_S_DIAL)
        px_dial_next(c);
}

/* This address failed: close its socket, then try the next one. */
static void px_dial_retry(px_conn_t *c)
{
    c->upoll_init = false;
    c->umask = 0;
    uv_close((uv_handle_t *)&c->upoll, px_dial_retry_closed_cb);
}

static void px_dial_cb(uv_poll_t *h, int status, int events)
{
    px_conn_t *c = h->data;
    (void)events;
    int err = 0;
    socklen_t len = sizeof err;
    if (status < 0 || getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = status < 0 ? -status : errno;
    if (err == 0) {
        px_splice_start(c);
        return;
    }
    px_dial_retry(c);
}

static void px_dial_next(px_conn_t *c)
{
    px_t *px = c->px;
    while (c->next_addr < c->n_addrs) {
        const filter_addr_t *a = &c->addrs[c->next_addr++];
        struct sockaddr_storage ss;
        socklen_t sl = filter_addr_to_sockaddr(a, c->port, &ss);
        int fd = socket(a->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            px_dial_fail(c, "dial-failed");
            return;
        }
        if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS) {
            close(fd);
            continue;
        }
        if (uv_poll_init_socket(px->loop, &c->upoll, fd) != 0) {
            close(fd);
            px_dial_fail(c, "dial-failed");
            return;
        }
        c->ufd = fd;
        c->upoll.data = c;
        c->upoll_init = true;
        c->handles++;
        c->dest = *a;
        c->has_dest = true;
        c->umask = 0;
        px_poll_set(c, &c->upoll, &c->umask, UV_WRITABLE, px_dial_cb);
        return;
    }
    px_dial_fail(c, c->n_addrs          ? "dial-failed"
                    : c->no_addr_reason ? c->no_addr_reason
                                        : "no-address");
}

static void px_dial_start(px_conn_t *c)
{
    c->state = PX_S_DIAL;
    c->next_addr = 0;
    uv_timer_start(&c->timer, px_timer_cb, c->gen->cfg->proxy.connect_timeout_ms, 0);
    px_dial_next(c);
}

/* Dial one address (transparent original destination, an IP literal Host). */
static void px_dial_addr(px_conn_t *c, const filter_addr_t *a)
{
    free(c->addrs);
    c->addrs = malloc(sizeof *c->addrs);
    if (!c->addrs) {
        px_dial_fail(c, "dial-failed");
        return;
    }
    c->addrs[0] = *a;
    c->n_addrs = 1;
    px_dial_start(c);
}

/* §2.3 step 4 and §2.4: the name's addresses, minus refused ones and (with
 * filtering on) private ones no address rule covers. Cached or fresh, an
 * address is judged here, against this connection's policy. */
static void px_resolve_cb(void *arg, int status, const dns_cache_addr_t *addrs, size_t n)
{
    px_conn_t *c = arg;
    if (c->state != PX_S_RESOLVE)
        return;
    if (status != 0) {
        px_dial_fail(c, status == -ETIMEDOUT ? "connect-timeout" : "dial-failed");
        return;
    }
    const filter_policy_t *p = c->gen->policy;
    bool filtering = filter_policy_filtering(p), private = false;
    free(c->addrs);
    c->addrs = n ? malloc(n * sizeof *c->addrs) : NULL;
    c->n_addrs = 0;
    if (n && !c->addrs) {
        px_dial_fail(c, "dial-failed");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        filter_decision_t r = filter_check_refused(p, &addrs[i].addr, c->port);
        if (r.verdict == FILTER_BLOCK) {
            c->no_addr_reason = filter_reason_str(r.reason);
            continue;
        }
        if (filtering && filter_check_private(p, &addrs[i].addr)) {
            c->no_addr_reason = filter_reason_str(FILTER_REASON_PRIVATE_RANGE);
            private = true;
            continue;
        }
        c->addrs[c->n_addrs++] = addrs[i].addr;
    }
    /* Audit lets a private-range block through like any other (only refused
     * ranges and own listeners are enforced, px_block): dial the private
     * addresses and log the block enforce would have made. */
    if (c->n_addrs == 0 && private && c->gen->cfg->mode == CFG_MODE_AUDIT) {
        for (size_t i = 0; i < n; i++)
            if (filter_check_refused(p, &addrs[i].addr, c->port).verdict != FILTER_BLOCK)
                c->addrs[c->n_addrs++] = addrs[i].addr;
        c->verdict = FILTER_BLOCK;
        c->reason = filter_reason_str(FILTER_REASON_PRIVATE_RANGE);
        c->audit = true;
    }
    px_dial_start(c);
}

static void px_resolve(px_conn_t *c)
{
    c->state = PX_S_RESOLVE;
    const cfg_t *cfg = c->gen->cfg;
    /* The upstream answers within dns.timeout; the timer only matters if
     * the DNS service went away under us. */
    uv_timer_start(&c->timer, px_timer_cb, cfg->dns.timeout_ms + cfg->proxy.connect_timeout_ms, 0);
    px_dialcache_result_t hit;
    int rc = c->px->dialcache ? px_dialcache_get(c->px->dialcache, c->name, c->name_len, &c->wait,
                                                 px_resolve_cb, c, &hit)
                              : -ESHUTDOWN;
    if (rc == 0)
        px_resolve_cb(c, hit.status, hit.addrs, hit.n);
    else if (rc != -EINPROGRESS)
        px_dial_fail(c, "dial-failed");
}

/* Leave the peek phase: the peeked bytes stay queued for the splice. */
static void px_peek_end(px_conn_t *c)
{
    free(c->peek);
    c->peek = NULL;
    c->peek_cap = 0;
    if (c->lowat) {
        int one = 1;
        (void)setsockopt(c->cfd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
        c->lowat = false;
    }
    px_poll_set(c, &c->cpoll, &c->cmask, 0, NULL);
    uv_timer_stop(&c->timer);
}

/* Go to the destination: by name when there is a dialable one, else to the
 * address (original destination or IP literal). */
static void px_go(px_conn_t *c)
{
    px_peek_end(c);
    if (c->by_name && c->name_ok)
        px_resolve(c);
    else if (c->has_dest)
        px_dial_addr(c, &c->dest);
    else
        px_dial_fail(c, "no-address");
}

static void px_allow(px_conn_t *c, const char *reason, const filter_rule_info_t *rule)
{
    px_take_gen(c);
    c->verdict = FILTER_ALLOW;
    c->reason = reason;
    c->rule = rule;
    c->audit = false;
    c->log_at_close = true;
    px_go(c);
}

static bool px_block(px_conn_t *c, const char *reason, const filter_rule_info_t *rule,
                     px_answer_t ans)
{
    px_take_gen(c);
    bool hard = strcmp(reason, "refused-range") == 0 || strcmp(reason, "own-listener") == 0;
    bool target = (c->name_ok && c->by_name) || c->has_dest;
    if (c->gen->cfg->mode == CFG_MODE_AUDIT && !hard && target) {
        c->verdict = FILTER_BLOCK;
        c->reason = reason;
        c->rule = rule;
        c->audit = true;
        c->log_at_close = true;
        px_go(c);
        return false;
    }
    px_log(c, FILTER_BLOCK, reason, rule, false);
    if (ans == PX_ANS_RESET) {
        px_conn_abort(c, NULL);
        return true;
    }
    px_send_answer(c, ans);
    return true;
}

/* Decide a normalised name on port P (steps 1, 2; the tls and http
 * listeners route by it even with filtering off). */
static void px_decide_name(px_conn_t *c, px_answer_t ans)
{
    const filter_policy_t *p = c->px->gen->policy;
    c->by_name = true;
    if (!filter_policy_filtering(p)) {
        px_allow(c, filter_reason_str(FILTER_REASON_FILTER_OFF), NULL);
        return;
    }
    filter_decision_t d = filter_match_name(p, c->name, c->name_len, c->port);
    if (d.verdict == FILTER_ALLOW)
        px_allow(c, filter_reason_str(d.reason), d.rule);
    else
        px_block(c, filter_reason_str(d.reason), d.rule, ans);
}

/* An IP literal as the HTTP name: decided by the address rules (step 2). */
static void px_decide_literal(px_conn_t *c, const filter_addr_t *a, px_answer_t ans)
{
    const filter_policy_t *p = c->px->gen->policy;
    c->dest = *a;
    c->has_dest = true;
    c->by_name = false;
    filter_decision_t r = filter_check_refused(p, a, c->port);
    if (r.verdict == FILTER_BLOCK) {
        px_block(c, filter_reason_str(r.reason), r.rule, ans);
        return;
    }
    if (!filter_policy_filtering(p)) {
        px_allow(c, filter_reason_str(FILTER_REASON_FILTER_OFF), NULL);
        return;
    }
    filter_decision_t d = filter_match_addr(p, a, c->port);
    if (d.verdict == FILTER_ALLOW)
        px_allow(c, filter_reason_str(d.reason), d.rule);
    else
        px_block(c, filter_reason_str(d.reason), d.rule, ans);
}

static bool px_is_tls(const px_conn_t *c)
{
    if (c->kind == PX_TLS)
        return true;
    if (c->kind == PX_HTTP)
        return false;
    return px_port_in(&c->px->gen->cfg->proxy.tls_ports, c->port);
}

static void px_decide_tls(px_conn_t *c, filter_tls_result_t r, const filter_tls_hello_t *h)
{
    switch (r) {
    case FILTER_TLS_SNI: {
        char norm[FILTER_NAME_MAX + 1];
        size_t nl = 0;
        /* RFC 6066 §3: HostName is a DNS name, never an address; an IP
         * literal (or anything that does not normalise) is bad-sni. */
        if (filter_name_normalize(h->sni, h->sni_len, norm, &nl) != 0) {
            px_set_name(c, h->sni, h->sni_len, false);
            px_block(c, "bad-sni", NULL, PX_ANS_ALERT);
            return;
        }
        px_set_name(c, norm, nl, true);
        if (!c->name) {
            px_block(c, "dial-failed", NULL, PX_ANS_RESET);
            return;
        }
        px_decide_name(c, PX_ANS_ALERT);
        return;
    }
    case FILTER_TLS_MULTI_SNI:
        if (h->sni_len)
            px_set_name(c, h->sni, h->sni_len, false);
        px_block(c, filter_tls_reason(r), NULL, PX_ANS_ALERT);
        return;
    case FILTER_TLS_NO_SNI:
    case FILTER_TLS_BAD_SNI:
        px_block(c, filter_tls_reason(r), NULL, PX_ANS_ALERT);
        return;
    default:
        px_block(c, filter_tls_reason(r), NULL, PX_ANS_RESET);
        return;
    }
}

static void px_decide_http(px_conn_t *c, filter_http_result_t r, const filter_http_head_t *h)
{
    if (r != FILTER_HTTP_NAME) {
        bool complete =
            r == FILTER_HTTP_NO_NAME || r == FILTER_HTTP_MULTI_HOST || r == FILTER_HTTP_BAD_NAME;
        px_block(c, filter_http_reason(r), NULL, complete ? PX_ANS_403 : PX_ANS_RESET);
        return;
    }
    if (h->is_addr) {
        px_set_name(c, h->name, h->name_len, false);
        if (h->host_conflict) {
            px_block(c, "host-conflict", NULL, PX_ANS_403);
            return;
        }
        px_decide_literal(c, &h->addr, PX_ANS_403);
        return;
    }
    char norm[FILTER_NAME_MAX + 1];
    size_t nl = 0;
    if (filter_name_normalize(h->name, h->name_len, norm, &nl) != 0) {
        px_set_name(c, h->name, h->name_len, false);
        px_block(c, "bad-host", NULL, PX_ANS_403);
        return;
    }
    px_set_name(c, norm, nl, true);
    if (!c->name) {
        px_block(c, "dial-failed", NULL, PX_ANS_RESET);
        return;
    }
    /* Domain fronting: the absolute URI names one host, Host another; the
     * upstream would see both. */
    if (h->host_conflict) {
        c->by_name = true;
        px_block(c, "host-conflict", NULL, PX_ANS_403);
        return;
    }
    px_decide_name(c, PX_ANS_403);
}

/* ---- peek ---------------------------------------------------------------------------- */

static void px_peek_cb(uv_poll_t *h, int status, int events)
{
    px_conn_t *c = h->data;
    if (status < 0) {
        px_block(c, "client-closed", NULL, PX_ANS_RESET);
        return;
    }
    px_peek(c, events);
}

static void px_peek(px_conn_t *c, int events)
{
    const cfg_t *cfg = c->px->gen->cfg;
    bool tls = px_is_tls(c);
    size_t limit = tls ? cfg->proxy.max_hello : cfg->proxy.max_http_head;
    if (limit == 0)
        limit = 1;
    for (;;) {
        if (!c->peek) {
            c->peek_cap = limit < PX_PEEK_FIRST ? limit : PX_PEEK_FIRST;
            c->peek = malloc(c->peek_cap);
            if (!c->peek) {
                px_block(c, "dial-failed", NULL, PX_ANS_RESET);
                return;
            }
        }
        ssize_t n = recv(c->cfd, c->peek, c->peek_cap, MSG_PEEK);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            px_block(c, "client-closed", NULL, PX_ANS_RESET);
            return;
        }
        if (n == 0) {
            px_block(c, "client-closed", NULL, PX_ANS_RESET);
            return;
        }
        c->peek_len = (size_t)n;
        if (tls) {
            filter_tls_hello_t hello;
            filter_tls_result_t r = filter_tls_hello_parse(c->peek, c->peek_len, limit, &hello);
            if (r != FILTER_TLS_NEED_MORE) {
                px_decide_tls(c, r, &hello);
                return;
            }
        } else {
            filter_http_head_t head;
            filter_http_result_t r = filter_http_head_parse(c->peek, c->peek_len, limit, &head);
            if (r != FILTER_HTTP_NEED_MORE) {
                px_decide_http(c, r, &head);
                return;
            }
        }
        if (c->peek_len == c->peek_cap && c->peek_cap < limit) {
            size_t ncap = c->peek_cap * 4 < limit ? c->peek_cap * 4 : limit;
            uint8_t *nb = realloc(c->peek, ncap);
            if (!nb) {
                px_block(c, "dial-failed", NULL, PX_ANS_RESET);
                return;
            }
            c->peek = nb;
            c->peek_cap = ncap;
            continue; /* more may be queued already */
        }
        if (c->peek_len >= limit) { /* the reader wants more than the limit */
            px_block(c, tls ? "hello-too-big" : "head-too-big", NULL, PX_ANS_RESET);
            return;
        }
        if (events & UV_DISCONNECT) { /* EOF mid-request: nothing more will come */
            px_block(c, "client-closed", NULL, PX_ANS_RESET);
            return;
        }
        /* Wake up for new bytes only (see the top). */
        int lowat = (int)c->peek_len + 1;
        if (setsockopt(c->cfd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat) == 0)
            c->lowat = true;
        return;
    }
}

/* ---- splice ---------------------------------------------------------------------------- */

static void px_splice_cb(uv_poll_t *h, int status, int events);

/* src said EOF and every byte it sent reached dst: pass the half-close on. */
static void px_dir_finish(px_t *px, px_dir_t *d, int dst)
{
    px_dir_release(px, d);
    if (!d->shut) {
        d->shut = true;
        (void)shutdown(dst, SHUT_WR); /* half-close kept */
    }
}

/* Move bytes src → pipe → dst until src has none, dst is full, or the round
 * limit. 0, or -errno on a failure of either side. */
static int px_pump(px_conn_t *c, px_dir_t *d, int src, int dst)
{
    px_t *px = c->px;
    for (int round = 0; round < PX_PUMP_ROUNDS; round++) {
        if (d->in_pipe > 0) {
            ssize_t n =
                splice(d->pipe.rfd, NULL, dst, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                d->in_pipe -= (size_t)n;
                d->bytes += (uint64_t)n;
                c->last_ms = uv_now(px->loop);
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return 0; /* dst full: wait for writable */
            return n < 0 ? -errno : -EPIPE;
        }
        if (d->eof) {
            px_dir_finish(px, d, dst);
            return 0;
        }
        if (d->pipe.rfd < 0) {
            int r = px_pipe_get(px, &d->pipe);
            if (r != 0)
                return r;
        }
        ssize_t n =
            splice(src, NULL, d->pipe.wfd, NULL, PX_PIPE_SIZE, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
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
            px_dir_release(px, d); /* idle: give the pipe back */
            return 0;
        }
        return -errno;
    }
    /* EOF read on the last round: nothing will wake this direction again
     * (px_splice_update watches neither side once eof is set and the pipe is
     * empty), so the half-close must go out now. */
    if (d->eof && d->in_pipe == 0)
        px_dir_finish(px, d, dst);
    return 0;
}

static void px_splice_update(px_conn_t *c)
{
    int cm = 0, um = 0;
    if (!c->d_up.eof && c->d_up.in_pipe == 0)
        cm |= UV_READABLE;
    if (c->d_down.in_pipe > 0)
        cm |= UV_WRITABLE;
    if (!c->d_down.eof && c->d_down.in_pipe == 0)
        um |= UV_READABLE;
    if (c->d_up.in_pipe > 0)
        um |= UV_WRITABLE;
    px_poll_set(c, &c->cpoll, &c->cmask, cm, px_splice_cb);
    px_poll_set(c, &c->upoll, &c->umask, um, px_splice_cb);
}

static void px_splice_cb(uv_poll_t *h, int status, int events)
{
    px_conn_t *c = h->data;
    if (status < 0) {
        px_conn_abort(c, NULL);
        return;
    }
    int rc = 0;
    px_dir_t *rd = h == &c->cpoll ? &c->d_up : &c->d_down; /* read from this fd */
    px_dir_t *wr = h == &c->cpoll ? &c->d_down : &c->d_up; /* write to this fd */
    if (events & UV_READABLE)
        rc = h == &c->cpoll ? px_pump(c, rd, c->cfd, c->ufd) : px_pump(c, rd, c->ufd, c->cfd);
    if (rc == 0 && (events & UV_WRITABLE))
        rc = h == &c->cpoll ? px_pump(c, wr, c->ufd, c->cfd) : px_pump(c, wr, c->cfd, c->ufd);
    if (rc != 0) {
        /* One side failed (reset, or a write after its close): bytes may be
         * lost, so the other side gets a reset too, not a clean end. */
        px_conn_abort(c, NULL);
        return;
    }
    if (c->d_up.shut && c->d_down.shut) {
        px_conn_close(c);
        return;
    }
    px_splice_update(c);
}

static void px_splice_start(px_conn_t *c)
{
    int one = 1;
    (void)setsockopt(c->cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)setsockopt(c->ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    free(c->addrs);
    c->addrs = NULL;
    c->n_addrs = 0;
    c->state = PX_S_SPLICE;
    c->last_ms = uv_now(c->px->loop);
    c->umask = -1; /* force the first start */
    c->cmask = -1;
    uint64_t idle = c->gen->cfg->proxy.idle_timeout_ms;
    if (idle)
        uv_timer_start(&c->timer, px_timer_cb, idle, 0);
    else
        uv_timer_stop(&c->timer);
    px_splice_update(c);
}

/* ---- timer ------------------------------------------------------------------------------ */

static void px_timer_cb(uv_timer_t *t)
{
    px_conn_t *c = t->data;
    switch (c->state) {
    case PX_S_PEEK:
        px_block(c, "peek-timeout", NULL, PX_ANS_RESET);
        return;
    case PX_S_RESOLVE:
    case PX_S_DIAL:
        px_dial_fail(c, "connect-timeout");
        return;
    case PX_S_SPLICE: {
        uint64_t idle = c->gen->cfg->proxy.idle_timeout_ms, now = uv_now(c->px->loop);
        if (now - c->last_ms >= idle) {
            px_conn_close(c);
            return;
        }
        uv_timer_start(&c->timer, px_timer_cb, idle - (now - c->last_ms), 0);
        return;
    }
    case PX_S_LINGER:
        px_conn_close(c);
        return;
    case PX_S_CLOSING:
        return;
    }
}

/* ---- accept ------------------------------------------------------------------------------ */

typedef struct px_mem_ctx {
    px_conn_t *c;
    const filter_policy_t *p;
    filter_decision_t d;
    bool found;
} px_mem_ctx_t;

/* Step 3: a name this client resolved to dest through moat whose rule lists
 * the port. */
static bool px_mem_name_cb(const char *name, size_t len, uint64_t expiry_ms, void *arg)
{
    px_mem_ctx_t *x = arg;
    (void)expiry_ms;
    filter_decision_t d = filter_match_name(x->p, name, len, x->c->port);
    if (d.verdict != FILTER_ALLOW)
        return true;
    px_set_name(x->c, name, len, true);
    x->d = d;
    x->found = true;
    return false;
}

static void px_conn_begin(px_conn_t *c)
{
    px_t *px = c->px;
    const filter_policy_t *p = px->gen->policy;
    bool filtering = filter_policy_filtering(p);

    if (c->kind == PX_TRANSPARENT) {
        if (!c->has_orig) {
            px_block(c, "no-address", NULL, PX_ANS_RESET);
            return;
        }
        /* §2.4, filtering on or off. */
        filter_decision_t r = filter_check_refused(p, &c->dest, c->port);
        if (r.verdict == FILTER_BLOCK) {
            px_block(c, filter_reason_str(r.reason), r.rule, PX_ANS_RESET);
            return;
        }
        if (!filtering) { /* §6: no peek, straight to the original destination */
            px_allow(c, filter_reason_str(FILTER_REASON_FILTER_OFF), NULL);
            return;
        }
        /* Step 0. */
        filter_decision_t a = filter_match_addr(p, &c->dest, c->port);
        if (a.verdict == FILTER_ALLOW) {
            px_allow(c, filter_reason_str(a.reason), a.rule);
            return;
        }
        if (!px_port_in(&px->gen->cfg->proxy.tls_ports, c->port) &&
            !px_port_in(&px->gen->cfg->proxy.http_ports, c->port)) {
            /* Step 3. */
            dns_addrmem_t *mem = dns_server_addrmem(px->dns);
            px_mem_ctx_t x = {.c = c, .p = p};
            if (mem)
                dns_addrmem_names_for(mem, &c->client, &c->dest, uv_now(px->loop), px_mem_name_cb,
                                      &x);
            if (x.found) {
                /* Admitted to the address the guest chose, which is where
                 * the name pointed for it. */
                c->by_name = false;
                px_allow(c, filter_reason_str(x.d.reason), x.d.rule);
                return;
            }
            px_block(c, filter_reason_str(a.reason), a.rule, PX_ANS_RESET);
            return;
        }
    }
    /* Steps 1 and 2: peek, within peek_timeout counted from accept. */
    c->state = PX_S_PEEK;
    uv_timer_start(&c->timer, px_timer_cb, px->gen->cfg->proxy.peek_timeout_ms, 0);
    c->cmask = 0;
    px_poll_set(c, &c->cpoll, &c->cmask, UV_READABLE | UV_DISCONNECT, px_peek_cb);
}

void px_conn_accept(px_t *px, px_kind_t kind, int fd, const struct sockaddr_storage *peer,
                    const struct sockaddr_storage *dest, socklen_t dest_len)
{
    px_conn_t *c = calloc(1, sizeof *c);
    if (!c || uv_poll_init_socket(px->loop, &c->cpoll, fd) != 0) {
        free(c);
        px_reset_fd(fd);
        px_log_refused(px, kind, peer, "dial-failed");
        return;
    }
    c->px = px;
    c->cfd = fd;
    c->ufd = -1;
    c->kind = kind;
    c->d_up.pipe.rfd = c->d_up.pipe.wfd = -1;
    c->d_down.pipe.rfd = c->d_down.pipe.wfd = -1;
    c->cpoll.data = c;
    uv_timer_init(px->loop, &c->timer);
    c->timer.data = c;
    c->handles = 2;
    px->open_handles++;
    stats_conn_open(px_kind_stats(kind));
    c->start_ms = uv_now(px->loop);
    c->next = px->conns;
    if (px->conns)
        px->conns->prev = c;
    px->conns = c;
    px->n_conns++;
    (void)filter_addr_from_sockaddr((const struct sockaddr *)peer, &c->client, &c->cport);
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

/* ---- reload -------------------------------------------------------------------------------- */

/* Re-decide an open connection with gen, from what was recorded. */
static filter_decision_t px_redecide(const px_conn_t *c, moat_gen_t *gen)
{
    const filter_policy_t *p = gen->policy;
    filter_decision_t allow = {.verdict = FILTER_ALLOW, .reason = FILTER_REASON_FILTER_OFF};
    if (c->has_orig) {
        filter_decision_t r = filter_check_refused(p, &c->orig, c->port);
        if (r.verdict == FILTER_BLOCK)
            return r;
    }
    if (!filter_policy_filtering(p))
        return allow;
    if (c->name_ok && c->name) {
        filter_decision_t d = filter_match_name(p, c->name, c->name_len, c->port);
        /* Admitted by its original address (step 0) and not by name. */
        if (d.verdict == FILTER_BLOCK && c->has_orig && !c->by_name) {
            filter_decision_t a = filter_match_addr(p, &c->orig, c->port);
            if (a.verdict == FILTER_ALLOW)
                return a;
        }
        return d;
    }
    if (c->has_orig)
        return filter_match_addr(p, &c->orig, c->port);
    if (c->has_dest) /* an IP literal Host */
        return filter_match_addr(p, &c->dest, c->port);
    return (filter_decision_t){.verdict = FILTER_BLOCK, .reason = FILTER_REASON_NOT_ALLOWED};
}

void px_conns_recheck(px_t *px, moat_gen_t *gen)
{
    bool audit = gen->cfg->mode == CFG_MODE_AUDIT;
    for (px_conn_t *c = px->conns, *n; c; c = n) {
        n = c->next;
        if (!c->log_at_close || !c->gen)
            continue; /* peeking (decides with the new generation) or done */
        filter_decision_t d = px_redecide(c, gen);
        /* Audit never lets a refused range or an own listener through
         * (px_block), also not one a reload has just made refused. */
        bool hard =
            d.reason == FILTER_REASON_REFUSED_RANGE || d.reason == FILTER_REASON_OWN_LISTENER;
        if (d.verdict == FILTER_BLOCK && (!audit || hard)) {
            px_conn_abort(c, "policy-reload");
            continue;
        }
        moat_gen_t *old = c->gen;
        c->gen = moat_gen_ref(gen);
        c->verdict = d.verdict;
        c->reason = filter_reason_str(d.reason);
        c->rule = d.rule;
        c->audit = d.verdict == FILTER_BLOCK;
        moat_gen_unref(old);
    }
}
