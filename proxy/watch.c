/* proxy/watch.c: every request of an HTTP connection decided (SPEC §2.3,
 * last paragraphs), not only the first: the relay of a connection whose
 * watch_mode is set.
 *
 * Requests: client bytes are read into the service's copy buffer and
 * scanned before they are sent on. filter/http_flow.h says where each body
 * ends; every request head is read whole with filter_http_head_parse() and
 * must name the connection's host (host-switch: the server is the first
 * host's, whatever later heads say; host-mismatch: a tunnel's, SPEC §2.6).
 * A head cut by the end of a read, or bytes behind a request that waits for
 * its answer (an Upgrade, a CONNECT), are held in a buffer of the
 * connection's until the rest comes; the common case (whole heads) holds
 * nothing. Bodies with a known length are moved without looking, in the
 * kernel once they are a stream (filter_http_flow_opaque()).
 *
 * Responses are never held or refused: they are followed only to match
 * requests (HEAD, 1xx, 101, a 2xx to CONNECT) and to know when the
 * responses owed before a refusal have gone out. A server whose answers
 * stop reading as HTTP is relayed as it is from there on; its client's
 * requests are still decided, but one that must wait for its answer (an
 * Upgrade, a CONNECT) can no longer be followed and closes the connection
 * (bad-framing).
 *
 * A refused request: nothing of it or after it reaches the server, whose
 * write side is shut; the responses owed for the requests before it are
 * relayed, then the client gets the 403 and the connection closes
 * (SPEC §2.3: "the 403 goes after the responses already owed").
 *
 * After a 101 or a 2xx to CONNECT both directions are opaque, the tracker is
 * freed and the connection is spliced like any other.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "filter/http_head.h"
#include "filter/name.h"
#include "proxy/conn_internal.h"

/* Longest response head followed (responses with big cookies included). */
#define WT_RESP_HEAD_MAX 65536

struct px_watch {
    filter_http_flow_t flow;
    uint8_t *held; /* client bytes read, not yet sent on */
    size_t held_len, held_cap;
    bool need_more; /* held ends in a partial head: read more before scanning again */
    uint8_t *resp;  /* a response head forwarded in parts: a copy until it is whole */
    size_t resp_len;
    bool sent_one;  /* ONE: the request went */
    bool resp_lost; /* the responses stopped reading as HTTP: relayed as they are */
    bool refused;   /* a request was refused: its 403 follows the owed responses */
    char refused_name[FILTER_HTTP_NAME_MAX + 1];
    size_t refused_len;
};

/* wt_scan's answers. */
typedef enum wt_scan {
    WT_ALL,  /* every byte may go */
    WT_MORE, /* the bytes from *fwd are a partial head */
    WT_HOLD, /* the bytes from *fwd wait (WAIT) */
    WT_DROP, /* the bytes from *fwd never go (refused, or ONE's end) */
    WT_DEAD, /* the connection was closed */
} wt_scan_t;

bool px_watch_start(px_conn_t *c)
{
    px_watch_t *w = calloc(1, sizeof *w);
    if (!w) {
        px_conn_abort(c, NULL);
        return false;
    }
    filter_http_flow_init(&w->flow);
    c->watch = w;
    if (c->watch_mode == PX_WATCH_ONE) {
        /* The forwarded head goes out before the client's bytes (tunnel.c
         * checked its framing before the dial). */
        (void)filter_http_flow_request(&w->flow, c->head_out, c->head_out_len);
        w->sent_one = true;
    }
    return true;
}

void px_watch_free(px_conn_t *c)
{
    px_watch_t *w = c->watch;
    if (!w)
        return;
    free(w->held);
    free(w->resp);
    free(w);
    c->watch = NULL;
}

/* Close on bytes that cannot be framed or read (logged as why, in place of
 * the connection's allowed line). */
static void wt_fail(px_conn_t *c, filter_reason_t why)
{
    filter_decision_t d = {.verdict = FILTER_BLOCK, .reason = why, .rule = c->dec.rule};
    c->log_at_close = false;
    px_conn_log(c, &d);
    px_conn_abort(c, NULL);
}

/* Host names alike, case and one trailing dot aside (IP literals as text). */
static bool wt_same_host(const char *a, size_t alen, const char *b, size_t blen)
{
    /* The usual case: the same spelling (b is the connection's name,
     * normalised when it is one). */
    if (alen == blen && strncasecmp(a, b, alen) == 0)
        return true;
    char na[FILTER_NAME_MAX + 1], nb[FILTER_NAME_MAX + 1];
    size_t la = 0, lb = 0;
    if (filter_name_normalize(a, alen, na, &la) == 0 &&
        filter_name_normalize(b, blen, nb, &lb) == 0)
        return la == lb && memcmp(na, nb, la) == 0;
    if (alen && a[alen - 1] == '.')
        alen--;
    if (blen && b[blen - 1] == '.')
        blen--;
    return alen == blen && strncasecmp(a, b, alen) == 0;
}

/* A later request names another host: refuse it (or, in audit, log it and
 * let it go: true). */
static bool wt_refuse(px_conn_t *c, filter_reason_t why, const char *name, size_t len)
{
    px_watch_t *w = c->watch;
    filter_decision_t d = {.verdict = FILTER_BLOCK, .reason = why, .rule = NULL};
    bool audit = px_conn_scope(c, c->gen).audit;
    d.audit = audit;
    px_conn_log_as(c, &d, name, len);
    if (audit)
        return true;
    w->refused = true;
    w->refused_len = len < sizeof w->refused_name ? len : sizeof w->refused_name - 1;
    memcpy(w->refused_name, name, w->refused_len);
    c->d_up.eof = true; /* the server's write side is shut once the pipe is empty */
    return false;
}

/* One request head at buf: decided, and read by the tracker. *hl is its
 * length on WT_ALL. */
static wt_scan_t wt_head(px_conn_t *c, const uint8_t *buf, size_t len, size_t *hl)
{
    size_t max = c->gen->cfg->proxy.max_http_head;
    filter_http_head_t h;
    filter_http_result_t r = filter_http_head_parse(buf, len, max, &h);
    if (r == FILTER_HTTP_NEED_MORE && len < max)
        return WT_MORE;
    if (r == FILTER_HTTP_NEED_MORE || r == FILTER_HTTP_TOO_BIG || r == FILTER_HTTP_NOT_HTTP) {
        wt_fail(c, r == FILTER_HTTP_NOT_HTTP ? FILTER_REASON_NOT_HTTP : FILTER_REASON_HEAD_TOO_BIG);
        return WT_DEAD;
    }
    filter_reason_t why = FILTER_REASON_COUNT;
    if (r != FILTER_HTTP_NAME)
        why = filter_http_result_reason(r);
    else if (h.host_conflict)
        why = FILTER_REASON_HOST_CONFLICT;
    else if (!wt_same_host(h.name, h.name_len, c->name ? c->name : "", c->name_len))
        why = c->watch_mode == PX_WATCH_MISMATCH ? FILTER_REASON_HOST_MISMATCH
                                                 : FILTER_REASON_HOST_SWITCH;
    if (why != FILTER_REASON_COUNT && !wt_refuse(c, why, h.name, h.name_len))
        return WT_DROP;
    if (filter_http_flow_request(&c->watch->flow, buf, h.head_len) != FILTER_HTTP_FLOW_OK) {
        wt_fail(c, FILTER_REASON_BAD_FRAMING);
        return WT_DEAD;
    }
    *hl = h.head_len;
    return WT_ALL;
}

/* Client bytes buf[0..len): how many may go to the server (*fwd). */
static wt_scan_t wt_scan_requests(px_conn_t *c, const uint8_t *buf, size_t len, size_t *fwd)
{
    px_watch_t *w = c->watch;
    size_t off = 0;
    wt_scan_t v = WT_ALL;
    while (off < len && v == WT_ALL) {
        size_t hl = 0;
        switch (filter_http_flow_state(&w->flow, FILTER_HTTP_FLOW_REQ)) {
        case FILTER_HTTP_FLOW_RAW:
            off = len;
            break;
        case FILTER_HTTP_FLOW_BODY:
        case FILTER_HTTP_FLOW_EOF_BODY:
            off += filter_http_flow_body(&w->flow, FILTER_HTTP_FLOW_REQ, buf + off, len - off);
            break;
        case FILTER_HTTP_FLOW_WAIT:
            v = WT_HOLD;
            break;
        case FILTER_HTTP_FLOW_ERROR:
            wt_fail(c, FILTER_REASON_BAD_FRAMING);
            return WT_DEAD;
        case FILTER_HTTP_FLOW_HEAD:
            if (c->watch_mode == PX_WATCH_ONE && w->sent_one) {
                c->d_up.eof = true; /* one request per proxy connection */
                v = WT_DROP;
                break;
            }
            v = wt_head(c, buf + off, len - off, &hl);
            off += hl;
            break;
        }
    }
    *fwd = off;
    return v;
}

/* Read from src into buf (at most cap). > 0 bytes, 0 EOF (d->eof set),
 * -EAGAIN nothing now, or -errno. */
static ssize_t wt_read(px_conn_t *c, px_dir_t *d, px_side_t *src, uint8_t *buf, size_t cap)
{
    int sfd = src->server ? c->ufd : c->cfd;
    ssize_t n;
    do
        n = recv(sfd, buf, cap, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            src->rd = false;
        return -errno;
    }
    if (n == 0)
        d->eof = true;
    else if ((size_t)n < cap && !src->fin)
        src->rd = false; /* a short read emptied the queue (conn.c's copy mode) */
    return n;
}

/* Move up to `op` opaque body bytes of dir from src to dst: 1 moved some,
 * 0 nothing now, -errno. */
static int wt_move(px_conn_t *c, px_dir_t *d, px_side_t *src, px_side_t *dst, uint64_t op,
                   filter_http_flow_dir_t dir)
{
    if (!src->rd || !dst->wr)
        return 0;
    if (d->stream) { /* socket → pipe in the kernel */
        if (d->pipe.rfd < 0) {
            int r = px_pipe_get(c->px, &d->pipe);
            if (r != 0)
                return r;
        }
        size_t want = op < PX_PIPE_SIZE ? (size_t)op : PX_PIPE_SIZE;
        ssize_t n = splice(src->server ? c->ufd : c->cfd, NULL, d->pipe.wfd, NULL, want,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            d->in_pipe += (size_t)n;
            (void)filter_http_flow_passed(&c->watch->flow, dir, (uint64_t)n);
            return 1;
        }
        if (n == 0) {
            d->eof = true;
            return 1;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            src->rd = false;
            px_conn_dir_release(c->px, d);
            return 0;
        }
        return errno == EINTR ? 1 : -errno;
    }
    size_t want = op < PX_COPY_BUF ? (size_t)op : PX_COPY_BUF;
    ssize_t n = wt_read(c, d, src, c->px->copy_buf, want);
    if (n == -EAGAIN || n == -EWOULDBLOCK)
        return 0;
    if (n <= 0)
        return n < 0 ? (int)n : 1;
    (void)filter_http_flow_passed(&c->watch->flow, dir, (uint64_t)n);
    if ((size_t)n == PX_COPY_BUF)
        d->stream = true; /* a stream: the kernel moves the rest */
    int r = px_conn_send(c, d, dst, c->px->copy_buf, (size_t)n);
    return r < 0 ? r : 1;
}

/* Room for want bytes in the held buffer. 0 or -ENOMEM (the held bytes
 * stay as they were). */
static int wt_held_room(px_watch_t *w, size_t want)
{
    if (want <= w->held_cap)
        return 0;
    uint8_t *nb = realloc(w->held, want);
    if (!nb)
        return -ENOMEM;
    w->held = nb;
    w->held_cap = want;
    return 0;
}

/* Keep buf[from..len) as the held bytes (buf may be the held buffer). */
static int wt_hold(px_watch_t *w, const uint8_t *buf, size_t from, size_t len)
{
    size_t rest = len - from;
    if (rest == 0) {
        w->held_len = 0;
        return 0;
    }
    if (buf == w->held) {
        memmove(w->held, w->held + from, rest);
        w->held_len = rest;
        return 0;
    }
    if (wt_held_room(w, rest) != 0)
        return -ENOMEM;
    memcpy(w->held, buf + from, rest);
    w->held_len = rest;
    return 0;
}

/* Read more client bytes behind the held ones. Same returns as wt_read. */
static ssize_t wt_read_held(px_conn_t *c, px_watch_t *w)
{
    if (wt_held_room(w, w->held_len + PX_COPY_BUF) != 0)
        return -ENOMEM;
    ssize_t n = wt_read(c, &c->d_up, &c->cs, w->held + w->held_len, PX_COPY_BUF);
    if (n > 0)
        w->held_len += (size_t)n;
    return n;
}

/* One look at client bytes (the held ones, or new ones): scan, send what
 * may go, hold or drop the rest. 1: go on; 0: nothing now; -errno. */
static int wt_up_scan(px_conn_t *c, px_watch_t *w)
{
    uint8_t *buf = w->held;
    size_t len = w->held_len;
    if (len == 0 || w->need_more) {
        if (!c->cs.rd || !c->us.wr)
            return 0;
        ssize_t n =
            len ? wt_read_held(c, w) : wt_read(c, &c->d_up, &c->cs, c->px->copy_buf, PX_COPY_BUF);
        if (n == -EAGAIN || n == -EWOULDBLOCK)
            return 0;
        if (n <= 0)
            return n < 0 ? (int)n : 1; /* EOF: d_up.eof, a partial head is dropped */
        buf = len ? w->held : c->px->copy_buf;
        len = len ? w->held_len : (size_t)n;
    }
    size_t fwd = 0;
    wt_scan_t v = wt_scan_requests(c, buf, len, &fwd);
    if (v == WT_DEAD)
        return -ECONNABORTED;
    int r = px_conn_send(c, &c->d_up, &c->us, buf, fwd);
    if (r < 0)
        return r;
    w->need_more = v == WT_MORE;
    if (v == WT_DROP)
        w->held_len = 0;
    else if (wt_hold(w, buf, fwd, len) != 0)
        return -ENOMEM;
    return v == WT_HOLD ? 0 : 1; /* a drop goes on to shut the server's side */
}

/* Client to server. As px_conn_pump: 0 done for now, 1 rounds ran out,
 * -errno (-ECONNABORTED: closed here, already logged). */
static int wt_up(px_conn_t *c)
{
    px_watch_t *w = c->watch;
    px_dir_t *d = &c->d_up;
    for (int round = 0; round < PX_PUMP_ROUNDS; round++) {
        int f = px_conn_flush(c, d, &c->us);
        if (f <= 0)
            return f;
        /* The client's EOF passes on once nothing it sent waits (bytes held
         * behind an Upgrade go first, when its answer lets them). */
        if (d->eof && (w->held_len == 0 || w->refused || w->need_more)) {
            px_conn_dir_finish(c, d, c->ufd, &c->d_down);
            return 0;
        }
        filter_http_flow_state_t st = filter_http_flow_state(&w->flow, FILTER_HTTP_FLOW_REQ);
        if (st == FILTER_HTTP_FLOW_WAIT && w->resp_lost) {
            wt_fail(c, FILTER_REASON_BAD_FRAMING);
            return -ECONNABORTED;
        }
        if (st == FILTER_HTTP_FLOW_WAIT)
            return 0;
        if (st == FILTER_HTTP_FLOW_RAW && w->held_len == 0)
            return px_conn_pump(c, d, &c->cs, &c->us, &c->d_down);
        uint64_t op = w->held_len ? 0 : filter_http_flow_opaque(&w->flow, FILTER_HTTP_FLOW_REQ);
        int r = op ? wt_move(c, d, &c->cs, &c->us, op, FILTER_HTTP_FLOW_REQ) : wt_up_scan(c, w);
        if (r <= 0)
            return r;
    }
    return 1;
}

/* Follow the response bytes buf[0..len) (all of them go to the client). */
static bool wt_scan_responses(px_conn_t *c, const uint8_t *buf, size_t len)
{
    px_watch_t *w = c->watch;
    filter_http_flow_t *f = &w->flow;
    size_t off = 0;
    while (off < len) {
        size_t hl = 0;
        switch (filter_http_flow_state(f, FILTER_HTTP_FLOW_RESP)) {
        case FILTER_HTTP_FLOW_RAW:
        case FILTER_HTTP_FLOW_EOF_BODY:
            return true;
        case FILTER_HTTP_FLOW_BODY:
            off += filter_http_flow_body(f, FILTER_HTTP_FLOW_RESP, buf + off, len - off);
            continue;
        case FILTER_HTTP_FLOW_HEAD: {
            /* A head cut by a read is followed on a copy (the bytes went on). */
            const uint8_t *h = buf + off;
            size_t hlen = len - off, had = w->resp_len;
            if (had) {
                size_t take = hlen < WT_RESP_HEAD_MAX + 1 - had ? hlen : WT_RESP_HEAD_MAX + 1 - had;
                uint8_t *nb = realloc(w->resp, had + take);
                if (!nb)
                    return false;
                memcpy(nb + had, h, take);
                w->resp = nb;
                w->resp_len = had + take;
                h = w->resp;
                hlen = w->resp_len;
            }
            filter_http_flow_result_t r =
                filter_http_flow_response(f, h, hlen, WT_RESP_HEAD_MAX, &hl);
            if (r == FILTER_HTTP_FLOW_NEED_MORE) {
                if (!had && !(w->resp = malloc(hlen)))
                    return false;
                if (!had) {
                    memcpy(w->resp, h, hlen);
                    w->resp_len = hlen;
                }
                return true;
            }
            free(w->resp);
            w->resp = NULL;
            w->resp_len = 0;
            if (r != FILTER_HTTP_FLOW_OK)
                return false;
            off += hl - had;
            continue;
        }
        case FILTER_HTTP_FLOW_WAIT:
        case FILTER_HTTP_FLOW_ERROR:
            return false;
        }
    }
    return true;
}

/* Server to client: as wt_up. */
static int wt_down(px_conn_t *c)
{
    px_watch_t *w = c->watch;
    px_dir_t *d = &c->d_down;
    for (int round = 0; round < PX_PUMP_ROUNDS; round++) {
        int f = px_conn_flush(c, d, &c->cs);
        if (f <= 0)
            return f;
        if (d->eof) {
            px_conn_dir_finish(c, d, c->cfd, &c->d_up);
            return 0;
        }
        filter_http_flow_state_t st = filter_http_flow_state(&w->flow, FILTER_HTTP_FLOW_RESP);
        if (w->resp_lost ||
            ((st == FILTER_HTTP_FLOW_RAW || st == FILTER_HTTP_FLOW_EOF_BODY) && !w->resp_len))
            return px_conn_pump(c, d, &c->us, &c->cs, &c->d_up);
        uint64_t op = filter_http_flow_opaque(&w->flow, FILTER_HTTP_FLOW_RESP);
        if (op) {
            int r = wt_move(c, d, &c->us, &c->cs, op, FILTER_HTTP_FLOW_RESP);
            if (r <= 0)
                return r;
            continue;
        }
        if (!c->us.rd || !c->cs.wr)
            return 0;
        ssize_t n = wt_read(c, d, &c->us, c->px->copy_buf, PX_COPY_BUF);
        if (n == -EAGAIN || n == -EWOULDBLOCK)
            return 0;
        if (n < 0)
            return (int)n;
        if (n == 0)
            continue;
        if (!wt_scan_responses(c, c->px->copy_buf, (size_t)n)) {
            if (filter_http_flow_error(&w->flow, FILTER_HTTP_FLOW_RESP) ==
                FILTER_HTTP_FLOW_E_UNREQUESTED) {
                /* More answers than requests: the server read a request
                 * where moat saw a body (a desync); what it answers now is
                 * not known. */
                wt_fail(c, FILTER_REASON_BAD_FRAMING);
                return -ECONNABORTED;
            }
            w->resp_lost = true;
            free(w->resp);
            w->resp = NULL;
            w->resp_len = 0;
        }
        int r = px_conn_send(c, d, &c->cs, c->px->copy_buf, (size_t)n);
        if (r < 0)
            return r;
    }
    return 1;
}

/* A refused request's 403 goes once the responses owed before it are out. */
static bool wt_owed_done(px_conn_t *c)
{
    px_watch_t *w = c->watch;
    if (!w->refused || !c->d_up.shut || c->d_down.in_pipe)
        return false;
    if (c->d_down.eof)
        return true;
    return !w->resp_lost && filter_http_flow_pending(&w->flow) == 0 &&
           filter_http_flow_state(&w->flow, FILTER_HTTP_FLOW_RESP) == FILTER_HTTP_FLOW_HEAD;
}

void px_watch_relay(px_conn_t *c)
{
    px_watch_t *w = c->watch;
    filter_http_flow_state_t before = filter_http_flow_state(&w->flow, FILTER_HTTP_FLOW_REQ);
    int up = wt_up(c);
    if (up == -ECONNABORTED)
        return;
    int down = up < 0 ? 0 : wt_down(c);
    if (down == -ECONNABORTED)
        return;
    /* A response let waiting requests go (or the connection turn opaque). */
    if (up >= 0 && down >= 0 && filter_http_flow_state(&w->flow, FILTER_HTTP_FLOW_REQ) != before) {
        up = wt_up(c);
        if (up == -ECONNABORTED)
            return;
    }
    if (up < 0 || down < 0) {
        px_conn_abort(c, NULL);
        return;
    }
    if (wt_owed_done(c)) {
        char resp[FILTER_HTTP_403_MAX];
        int n = filter_http_format_403(w->refused_name, w->refused_len, resp, sizeof resp);
        px_conn_answer(c, resp, n > 0 ? (size_t)n : 0);
        return;
    }
    if (c->d_up.shut && c->d_down.shut) {
        px_conn_close(c);
        return;
    }
    if (filter_http_flow_state(&w->flow, FILTER_HTTP_FLOW_REQ) == FILTER_HTTP_FLOW_RAW &&
        filter_http_flow_state(&w->flow, FILTER_HTTP_FLOW_RESP) == FILTER_HTTP_FLOW_RAW &&
        !w->held_len && !w->resp_len)
        px_watch_free(c); /* opaque both ways: plain splicing from now */
    if (up > 0 || down > 0)
        px_conn_later(c);
}
