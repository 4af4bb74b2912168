/* app/metrics.c: the metrics service (see metrics.h).
 *
 * One client's life: accept ─► read the request head (bounded, parsed with
 * filter/http_head.c, which checks every byte as it comes) ─► one answer
 * written with Connection: close ─► shutdown(SHUT_WR) ─► wait for the
 * client's EOF (reading and discarding, so our close never turns into a
 * reset that could destroy the answer in flight) ─► close. One timer per
 * client bounds the whole exchange.
 */
#include "app/metrics.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "filter/cursor.h"
#include "filter/http_head.h"
#include "core/log.h"
#include "core/stats.h"
#include "resolver/server.h"

/* Longest request head read; a longer one is answered 431. Prometheus sends
 * about 300 bytes. */
#define MX_HEAD_MAX 4096
/* Clients at once; a connection past this is closed at once. */
#define MX_MAX_CLIENTS 64
/* Time from accept until the answer is written. */
#define MX_CLIENT_TIMEOUT_MS 10000
/* Time after the answer is written for the client to close its side. */
#define MX_LINGER_MS 2000
#define MX_BACKLOG   128

typedef struct mx mx_t;

typedef struct mx_listener {
    uv_tcp_t h;
    mx_t *mx;
    cfg_addr_t addr;
} mx_listener_t;

typedef struct mx_client {
    uv_tcp_t h;
    uv_timer_t timer;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    mx_t *mx;
    struct mx_client *prev, *next;
    unsigned handles; /* initialised handles not yet closed */
    bool responded;   /* the answer is written or being written */
    bool closing;     /* uv_close called */
    bool eof;         /* the client closed its side */
    bool written;     /* the answer is out */
    char *body;       /* owned while being written */
    char head[512];   /* the answer's status line and header fields */
    size_t len;       /* request bytes in buf */
    uint8_t buf[MX_HEAD_MAX];
} mx_client_t;

struct mx {
    moat_service_t svc; /* first: the daemon's handle on us */
    moat_service_t *dns;
    uv_loop_t *loop;
    mx_listener_t *listener; /* the open listener, or NULL */
    mx_client_t *clients;
    size_t n_clients;
    unsigned open_handles; /* listeners (also closing ones) and clients not yet freed */
    bool started, draining, closing, drain_called, close_called;
    moat_service_done_cb drain_done, close_done;
    double start_time; /* Unix time, seconds */
};

static const moat_service_ops_t mx_ops;

static mx_t *mx_of(moat_service_t *svc)
{
    return (mx_t *)svc->data;
}

/* ---- lifecycle helpers ------------------------------------------------------------------ */

static void mx_check_drained(mx_t *mx)
{
    if (!mx->draining || mx->drain_called || mx->closing || mx->open_handles)
        return;
    mx->drain_called = true;
    if (mx->drain_done)
        mx->drain_done(&mx->svc);
}

static void mx_check_closed(mx_t *mx)
{
    if (!mx->closing || mx->close_called || mx->open_handles)
        return;
    mx->close_called = true;
    if (mx->close_done)
        mx->close_done(&mx->svc);
}

static void mx_handle_gone(mx_t *mx)
{
    mx->open_handles--;
    mx_check_drained(mx);
    mx_check_closed(mx);
}

/* ---- clients --------------------------------------------------------------------------- */

static void mx_client_closed_cb(uv_handle_t *h)
{
    mx_client_t *c = h->data;
    if (--c->handles > 0)
        return;
    mx_t *mx = c->mx;
    free(c->body);
    free(c);
    mx_handle_gone(mx);
}

static void mx_client_close(mx_client_t *c)
{
    if (c->closing)
        return;
    mx_t *mx = c->mx;
    c->closing = true;
    if (c->prev)
        c->prev->next = c->next;
    else
        mx->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    mx->n_clients--;
    uv_close((uv_handle_t *)&c->h, mx_client_closed_cb);
    uv_close((uv_handle_t *)&c->timer, mx_client_closed_cb);
}

static void mx_timer_cb(uv_timer_t *t)
{
    mx_client_close(t->data);
}

static void mx_shutdown_cb(uv_shutdown_t *req, int status)
{
    mx_client_t *c = req->data;
    (void)status;
    if (c->closing)
        return;
    if (c->eof)
        mx_client_close(c);
}

static void mx_write_cb(uv_write_t *req, int status)
{
    mx_client_t *c = req->data;
    free(c->body);
    c->body = NULL;
    if (c->closing)
        return;
    if (status < 0) {
        mx_client_close(c);
        return;
    }
    c->written = true;
    uv_timer_start(&c->timer, mx_timer_cb, MX_LINGER_MS, 0);
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->h, mx_shutdown_cb) != 0)
        mx_client_close(c);
}

/* Send one answer: head fields for status, then body (owned: freed once
 * written; not sent for HEAD). */
static void mx_respond(mx_client_t *c, int status, const char *reason, const char *ctype,
                       const char *extra, char *body, size_t body_len, bool head_only)
{
    c->responded = true;
    c->len = 0; /* from now on the buffer only takes what we discard */
    int n = snprintf(c->head, sizeof c->head,
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n"
                     "Connection: close\r\n"
                     "%s"
                     "\r\n",
                     status, reason, ctype, body_len, extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof c->head) {
        free(body);
        mx_client_close(c);
        return;
    }
    uv_buf_t bufs[2] = {uv_buf_init(c->head, (unsigned)n), uv_buf_init(body, (unsigned)body_len)};
    unsigned nbufs = head_only || body_len == 0 ? 1 : 2;
    c->body = body;
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->h, bufs, nbufs, mx_write_cb) != 0) {
        free(c->body);
        c->body = NULL;
        mx_client_close(c);
    }
}

/* A short fixed text answer. */
static void mx_respond_text(mx_client_t *c, int status, const char *reason, const char *extra,
                            const char *text, bool head_only)
{
    size_t len = strlen(text);
    char *body = malloc(len + 1);
    if (!body) {
        mx_client_close(c);
        return;
    }
    memcpy(body, text, len + 1);
    mx_respond(c, status, reason, "text/plain; charset=utf-8", extra, body, len, head_only);
}

static void mx_respond_metrics(mx_client_t *c, bool head_only)
{
    mx_t *mx = c->mx;
    stats_gauges_t g = {
        .log_dropped_lines = log_dropped_lines(),
        .start_time_seconds = mx->start_time,
    };
    dns_server_entries(mx->dns, &g.dns_cache_entries, &g.addrmem_entries);
    const moat_gen_t *gen = mx->svc.daemon ? moat_daemon_gen(mx->svc.daemon) : NULL;
    g.config_generation = gen ? gen->id : 0;
    char *body;
    size_t len;
    if (stats_render(&g, &body, &len) != 0) {
        mx_respond_text(c, 500, "Internal Server Error", NULL, "out of memory\n", head_only);
        return;
    }
    mx_respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", NULL, body, len,
               head_only);
}

/* Read "METHOD SP TARGET SP" off a head filter_http_head_parse() accepted
 * as complete (so both are there and well-formed). */
static bool mx_request_line(const uint8_t *buf, size_t len, filter_cur_t *method,
                            filter_cur_t *path)
{
    filter_cur_t cur = filter_cur_make(buf, len);
    size_t n = 0;
    while (filter_cur_peek(&cur, n) > 0 && filter_cur_peek(&cur, n) != ' ')
        n++;
    *method = filter_cur_sub(&cur, n);
    filter_cur_skip(&cur, 1);
    n = 0;
    while (filter_cur_peek(&cur, n) > 0 && filter_cur_peek(&cur, n) != ' ')
        n++;
    filter_cur_t target = filter_cur_sub(&cur, n);
    if (!filter_cur_ok(method) || !filter_cur_ok(&target))
        return false;
    /* The path is the target up to its query (RFC 9112 §3.2.1). */
    size_t p = 0;
    while (filter_cur_peek(&target, p) > 0 && filter_cur_peek(&target, p) != '?')
        p++;
    *path = filter_cur_sub(&target, p);
    return filter_cur_ok(path);
}

/* The cursor's remaining bytes are exactly s. */
static bool mx_cur_is(filter_cur_t c, const char *s)
{
    size_t n = strlen(s);
    if (filter_cur_left(&c) != n)
        return false;
    const uint8_t *p = filter_cur_take(&c, n);
    return p && memcmp(p, s, n) == 0;
}

static void mx_route(mx_client_t *c, const uint8_t *buf, size_t len)
{
    filter_cur_t method, path;
    if (!mx_request_line(buf, len, &method, &path)) {
        mx_respond_text(c, 400, "Bad Request", NULL, "bad request\n", false);
        return;
    }
    bool head = mx_cur_is(method, "HEAD");
    if (!head && !mx_cur_is(method, "GET")) {
        mx_respond_text(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n",
                        "method not allowed\n", false);
        return;
    }
    if (mx_cur_is(path, "/metrics")) {
        mx_respond_metrics(c, head);
    } else if (mx_cur_is(path, "/healthz")) {
        mx_t *mx = c->mx;
        bool stopping =
            mx->draining || mx->closing || (mx->svc.daemon && moat_daemon_stopping(mx->svc.daemon));
        if (stopping)
            mx_respond_text(c, 503, "Service Unavailable", NULL, "draining\n", head);
        else
            mx_respond_text(c, 200, "OK", NULL, "ok\n", head);
    } else {
        mx_respond_text(c, 404, "Not Found", NULL, "not found: try /metrics or /healthz\n", head);
    }
}

static void mx_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    mx_client_t *c = h->data;
    (void)suggested;
    /* Before the answer: room left for the head (never 0: a full buffer is
     * answered 431 first). After: the whole buffer, to discard into. */
    *b = uv_buf_init((char *)c->buf + c->len, (unsigned)(sizeof c->buf - c->len));
}

static void mx_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    mx_client_t *c = st->data;
    (void)b;
    if (c->closing || nread == 0)
        return;
    if (nread < 0) {
        /* EOF or an error. Before the answer: the client gave up on an
         * incomplete head. After: close once the answer is out. */
        c->eof = true;
        uv_read_stop(st);
        if (!c->responded || c->written || nread != UV_EOF)
            mx_client_close(c);
        return;
    }
    if (c->responded)
        return; /* discarded */
    c->len += (size_t)nread;
    filter_http_head_t hh;
    filter_http_result_t r = filter_http_head_parse(c->buf, c->len, sizeof c->buf, &hh);
    switch (r) {
    case FILTER_HTTP_NEED_MORE:
        if (c->len == sizeof c->buf) /* cannot happen: the parser says TOO_BIG */
            mx_respond_text(c, 431, "Request Header Fields Too Large", NULL,
                            "request head too large\n", false);
        return;
    case FILTER_HTTP_TOO_BIG:
        mx_respond_text(c, 431, "Request Header Fields Too Large", NULL, "request head too large\n",
                        false);
        return;
    case FILTER_HTTP_NOT_HTTP:
        mx_respond_text(c, 400, "Bad Request", NULL, "bad request\n", false);
        return;
    default:
        /* A complete head; whatever it says about Host does not matter. */
        mx_route(c, c->buf, hh.head_len);
        return;
    }
}

static void mx_connection_cb(uv_stream_t *server, int status)
{
    mx_listener_t *l = server->data;
    mx_t *mx = l->mx;
    if (status < 0) {
        log_warn("metrics: accept on %s: %s", l->addr.text, uv_strerror(status));
        return;
    }
    mx_client_t *c = calloc(1, sizeof *c);
    if (!c) {
        /* Without a handle the connection cannot be taken; libuv stops
         * watching the listener until one is (a restart or a reload that
         * moves metrics.listen). */
        log_error("metrics: accept on %s: out of memory; the endpoint stops accepting",
                  l->addr.text);
        return;
    }
    c->mx = mx;
    uv_tcp_init(mx->loop, &c->h);
    uv_timer_init(mx->loop, &c->timer);
    c->h.data = c->timer.data = c;
    c->handles = 2;
    mx->open_handles++;
    c->next = mx->clients;
    if (mx->clients)
        mx->clients->prev = c;
    mx->clients = c;
    mx->n_clients++;
    if (uv_accept(server, (uv_stream_t *)&c->h) != 0 || mx->n_clients > MX_MAX_CLIENTS ||
        mx->draining || mx->closing) {
        mx_client_close(c);
        return;
    }
    uv_timer_start(&c->timer, mx_timer_cb, MX_CLIENT_TIMEOUT_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->h, mx_alloc_cb, mx_read_cb) != 0)
        mx_client_close(c);
}

/* ---- listener --------------------------------------------------------------------------- */

static void mx_listener_closed_cb(uv_handle_t *h)
{
    mx_listener_t *l = h->data;
    mx_t *mx = l->mx;
    free(l);
    mx_handle_gone(mx);
}

static void mx_listener_close(mx_t *mx)
{
    mx_listener_t *l = mx->listener;
    if (!l)
        return;
    mx->listener = NULL;
    uv_close((uv_handle_t *)&l->h, mx_listener_closed_cb);
}

static int mx_listener_open(mx_t *mx, const cfg_addr_t *a)
{
    mx_listener_t *l = calloc(1, sizeof *l);
    if (!l) {
        log_error("metrics: listen %s: out of memory", a->text);
        return -ENOMEM;
    }
    l->mx = mx;
    l->addr = *a;
    uv_tcp_init(mx->loop, &l->h);
    l->h.data = l;
    mx->open_handles++;
    unsigned flags = a->sa.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0;
    int rc = uv_tcp_bind(&l->h, (const struct sockaddr *)&a->sa, flags);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->h, MX_BACKLOG, mx_connection_cb);
    if (rc != 0) {
        log_error("metrics: listen %s: %s", a->text, uv_strerror(rc));
        uv_close((uv_handle_t *)&l->h, mx_listener_closed_cb);
        return rc;
    }
    mx->listener = l;
    log_info("metrics listening on http://%s/metrics", a->text);
    return 0;
}

static bool mx_sa_equal(const cfg_addr_t *x, const cfg_addr_t *y)
{
    const struct sockaddr_storage *a = &x->sa, *b = &y->sa;
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *p = (const void *)a, *q = (const void *)b;
        return p->sin_port == q->sin_port && p->sin_addr.s_addr == q->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *p = (const void *)a, *q = (const void *)b;
    return p->sin6_port == q->sin6_port &&
           memcmp(&p->sin6_addr, &q->sin6_addr, sizeof p->sin6_addr) == 0 &&
           p->sin6_scope_id == q->sin6_scope_id;
}

/* Listen where cfg says: keep an unchanged socket, replace a changed one. */
static int mx_listener_apply(mx_t *mx, const cfg_t *cfg)
{
    if (mx->listener && cfg->metrics.enabled &&
        mx_sa_equal(&mx->listener->addr, &cfg->metrics.listen))
        return 0;
    if (mx->listener) {
        log_info("metrics: no longer listening on %s", mx->listener->addr.text);
        /* The fd is closed within uv_close, so the new address may reuse
         * the port at once. */
        mx_listener_close(mx);
    }
    if (!cfg->metrics.enabled)
        return 0;
    return mx_listener_open(mx, &cfg->metrics.listen);
}

/* ---- service ops ------------------------------------------------------------------------- */

static void mx_shutdown(mx_t *mx)
{
    if (mx->closing)
        return;
    mx->closing = true;
    mx_listener_close(mx);
    while (mx->clients)
        mx_client_close(mx->clients);
}

static int mx_start(moat_service_t *svc, uv_loop_t *loop, moat_gen_t *gen)
{
    mx_t *mx = mx_of(svc);
    mx->loop = loop;
    mx->started = true;
    return mx_listener_apply(mx, gen->cfg);
}

static int mx_reload(moat_service_t *svc, moat_gen_t *gen)
{
    mx_t *mx = mx_of(svc);
    if (mx->closing || mx->draining)
        return 0;
    return mx_listener_apply(mx, gen->cfg);
}

static void mx_drain(moat_service_t *svc, moat_service_done_cb done)
{
    mx_t *mx = mx_of(svc);
    mx->draining = true;
    mx->drain_done = done;
    mx_listener_close(mx);
    /* Clients finish their one exchange within MX_CLIENT_TIMEOUT_MS. */
    mx_check_drained(mx);
}

static void mx_close(moat_service_t *svc, moat_service_done_cb done)
{
    mx_t *mx = mx_of(svc);
    mx->close_done = done;
    mx_shutdown(mx);
    mx_check_closed(mx);
}

static void mx_free(moat_service_t *svc)
{
    if (!svc)
        return;
    free(mx_of(svc));
}

static const moat_service_ops_t mx_ops = {
    .name = "metrics",
    .start = mx_start,
    .reload = mx_reload,
    .drain = mx_drain,
    .close = mx_close,
    .free = mx_free,
};

int metrics_create(moat_service_t *dns, moat_service_t **out)
{
    *out = NULL;
    mx_t *mx = calloc(1, sizeof *mx);
    if (!mx)
        return -ENOMEM;
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0)
        mx->start_time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    mx->dns = dns;
    mx->svc.ops = &mx_ops;
    mx->svc.data = mx;
    *out = &mx->svc;
    return 0;
}
