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

#include "filter/addr.h"
#include "filter/cursor.h"
#include "filter/http_head.h"
#include "core/daemon.h"
#include "filter/list.h"
#include "core/log.h"
#include "core/service.h"
#include "core/stats.h"
#include "resolver/server.h"

/* Longest request head read; a longer one is answered 431. Prometheus sends
 * about 300 bytes. */
#define METRICS_HEAD_MAX 4096
/* Clients at once; a connection past this is closed at once. */
#define METRICS_MAX_CLIENTS 64
/* Time from accept until the answer is written. */
#define METRICS_CLIENT_TIMEOUT_MS 10000
/* Time after the answer is written for the client to close its side. */
#define METRICS_LINGER_MS 2000
#define METRICS_BACKLOG   128

typedef struct metrics metrics_t;

typedef struct metrics_listener {
    uv_tcp_t h;
    metrics_t *mx;
    cfg_addr_t addr;
} metrics_listener_t;

typedef struct metrics_client {
    uv_tcp_t h;
    uv_timer_t timer;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    metrics_t *mx;
    moat_list_t node; /* on mx->clients until closing */
    unsigned handles; /* initialised handles not yet closed */
    bool responded;   /* the answer is written or being written */
    bool closing;     /* uv_close called */
    bool eof;         /* the client closed its side */
    bool written;     /* the answer is out */
    char *body;       /* owned while being written */
    char head[512];   /* the answer's status line and header fields */
    size_t len;       /* request bytes in buf */
    uint8_t buf[METRICS_HEAD_MAX];
} metrics_client_t;

struct metrics {
    moat_service_t svc;         /* first: the daemon's handle on us */
    moat_service_t *const *dns; /* every worker's */
    size_t n_dns;
    uv_loop_t *loop;
    metrics_listener_t *listener; /* the open listener, or NULL */
    /* The service counts (core/service.h) listeners (also closing ones) and
     * clients not yet freed, as busy and as handles alike: a drain waits for
     * every client's one exchange. */
    moat_list_t clients; /* metrics_client_t, not closing */
    size_t n_clients;
    double start_time; /* Unix time, seconds */
};

static const moat_service_ops_t metrics_ops;

static metrics_t *metrics_of(moat_service_t *svc)
{
    return (metrics_t *)svc->data;
}

/* ---- clients --------------------------------------------------------------------------- */

static void metrics_client_closed_cb(uv_handle_t *h)
{
    metrics_client_t *c = h->data;
    if (--c->handles > 0)
        return;
    metrics_t *mx = c->mx;
    free(c->body);
    free(c);
    moat_service_release(&mx->svc);
}

static void metrics_client_close(metrics_client_t *c)
{
    if (c->closing)
        return;
    metrics_t *mx = c->mx;
    c->closing = true;
    moat_list_remove(&c->node);
    mx->n_clients--;
    uv_close((uv_handle_t *)&c->h, metrics_client_closed_cb);
    uv_close((uv_handle_t *)&c->timer, metrics_client_closed_cb);
}

static void metrics_timer_cb(uv_timer_t *t)
{
    metrics_client_close(t->data);
}

static void metrics_shutdown_cb(uv_shutdown_t *req, int status)
{
    metrics_client_t *c = req->data;
    (void)status;
    if (c->closing)
        return;
    if (c->eof)
        metrics_client_close(c);
}

static void metrics_write_cb(uv_write_t *req, int status)
{
    metrics_client_t *c = req->data;
    free(c->body);
    c->body = NULL;
    if (c->closing)
        return;
    if (status < 0) {
        metrics_client_close(c);
        return;
    }
    c->written = true;
    uv_timer_start(&c->timer, metrics_timer_cb, METRICS_LINGER_MS, 0);
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->h, metrics_shutdown_cb) != 0)
        metrics_client_close(c);
}

/* Send one answer: head fields for status, then body (owned: freed once
 * written; not sent for HEAD). */
static void metrics_respond(metrics_client_t *c, int status, const char *reason, const char *ctype,
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
        metrics_client_close(c);
        return;
    }
    uv_buf_t bufs[2] = {uv_buf_init(c->head, (unsigned)n), uv_buf_init(body, (unsigned)body_len)};
    unsigned nbufs = head_only || body_len == 0 ? 1 : 2;
    c->body = body;
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->h, bufs, nbufs, metrics_write_cb) != 0) {
        free(c->body);
        c->body = NULL;
        metrics_client_close(c);
    }
}

/* A short fixed text answer. */
static void metrics_respond_text(metrics_client_t *c, int status, const char *reason,
                                 const char *extra, const char *text, bool head_only)
{
    size_t len = strlen(text);
    char *body = malloc(len + 1);
    if (!body) {
        metrics_client_close(c);
        return;
    }
    memcpy(body, text, len + 1);
    metrics_respond(c, status, reason, "text/plain; charset=utf-8", extra, body, len, head_only);
}

static void metrics_respond_metrics(metrics_client_t *c, bool head_only)
{
    metrics_t *mx = c->mx;
    stats_gauges_t g = {
        .log_dropped_lines = log_dropped_lines(),
        .start_time_seconds = mx->start_time,
    };
    for (size_t i = 0; i < mx->n_dns; i++) {
        uint64_t cache, addrmem;
        dns_server_entries(mx->dns[i], &cache, &addrmem);
        g.dns_cache_entries += cache;
        g.addrmem_entries += addrmem;
    }
    const moat_gen_t *gen = mx->svc.daemon ? moat_daemon_gen(mx->svc.daemon) : NULL;
    g.config_generation = gen ? gen->id : 0;
    char *body;
    size_t len;
    if (stats_render(&g, &body, &len) != 0) {
        metrics_respond_text(c, 500, "Internal Server Error", NULL, "out of memory\n", head_only);
        return;
    }
    metrics_respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", NULL, body, len,
                    head_only);
}

/* Read "METHOD SP TARGET SP" off a head filter_http_head_parse() accepted
 * as complete (so both are there and well-formed). */
static bool metrics_request_line(const uint8_t *buf, size_t len, filter_cur_t *method,
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
static bool metrics_cur_is(filter_cur_t c, const char *s)
{
    size_t n = strlen(s);
    if (filter_cur_left(&c) != n)
        return false;
    const uint8_t *p = filter_cur_take(&c, n);
    return p && memcmp(p, s, n) == 0;
}

static void metrics_route(metrics_client_t *c, const uint8_t *buf, size_t len)
{
    filter_cur_t method, path;
    if (!metrics_request_line(buf, len, &method, &path)) {
        metrics_respond_text(c, 400, "Bad Request", NULL, "bad request\n", false);
        return;
    }
    bool head = metrics_cur_is(method, "HEAD");
    if (!head && !metrics_cur_is(method, "GET")) {
        metrics_respond_text(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n",
                             "method not allowed\n", false);
        return;
    }
    if (metrics_cur_is(path, "/metrics")) {
        metrics_respond_metrics(c, head);
    } else if (metrics_cur_is(path, "/healthz")) {
        metrics_t *mx = c->mx;
        bool stopping = moat_service_stopping(&mx->svc) ||
                        (mx->svc.daemon && moat_daemon_stopping(mx->svc.daemon));
        if (stopping)
            metrics_respond_text(c, 503, "Service Unavailable", NULL, "draining\n", head);
        else
            metrics_respond_text(c, 200, "OK", NULL, "ok\n", head);
    } else {
        metrics_respond_text(c, 404, "Not Found", NULL, "not found: try /metrics or /healthz\n",
                             head);
    }
}

static void metrics_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    metrics_client_t *c = h->data;
    (void)suggested;
    /* Before the answer: room left for the head (never 0: a full buffer is
     * answered 431 first). After: the whole buffer, to discard into. */
    *b = uv_buf_init((char *)c->buf + c->len, (unsigned)(sizeof c->buf - c->len));
}

static void metrics_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    metrics_client_t *c = st->data;
    (void)b;
    if (c->closing || nread == 0)
        return;
    if (nread < 0) {
        /* EOF or an error. Before the answer: the client gave up on an
         * incomplete head. After: close once the answer is out. */
        c->eof = true;
        uv_read_stop(st);
        if (!c->responded || c->written || nread != UV_EOF)
            metrics_client_close(c);
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
            metrics_respond_text(c, 431, "Request Header Fields Too Large", NULL,
                                 "request head too large\n", false);
        return;
    case FILTER_HTTP_TOO_BIG:
        metrics_respond_text(c, 431, "Request Header Fields Too Large", NULL,
                             "request head too large\n", false);
        return;
    case FILTER_HTTP_NOT_HTTP:
        metrics_respond_text(c, 400, "Bad Request", NULL, "bad request\n", false);
        return;
    default:
        /* A complete head; whatever it says about Host does not matter. */
        metrics_route(c, c->buf, hh.head_len);
        return;
    }
}

static void metrics_connection_cb(uv_stream_t *server, int status)
{
    metrics_listener_t *l = server->data;
    metrics_t *mx = l->mx;
    if (status < 0) {
        log_warn("metrics: accept on %s: %s", l->addr.text, uv_strerror(status));
        return;
    }
    metrics_client_t *c = calloc(1, sizeof *c);
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
    moat_service_hold(&mx->svc);
    moat_list_push(&mx->clients, &c->node);
    mx->n_clients++;
    if (uv_accept(server, (uv_stream_t *)&c->h) != 0 || mx->n_clients > METRICS_MAX_CLIENTS ||
        moat_service_stopping(&mx->svc)) {
        metrics_client_close(c);
        return;
    }
    uv_timer_start(&c->timer, metrics_timer_cb, METRICS_CLIENT_TIMEOUT_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->h, metrics_alloc_cb, metrics_read_cb) != 0)
        metrics_client_close(c);
}

/* ---- listener --------------------------------------------------------------------------- */

static void metrics_listener_closed_cb(uv_handle_t *h)
{
    metrics_listener_t *l = h->data;
    metrics_t *mx = l->mx;
    free(l);
    moat_service_release(&mx->svc);
}

static void metrics_listener_close(metrics_t *mx)
{
    metrics_listener_t *l = mx->listener;
    if (!l)
        return;
    mx->listener = NULL;
    uv_close((uv_handle_t *)&l->h, metrics_listener_closed_cb);
}

static int metrics_listener_open(metrics_t *mx, const cfg_addr_t *a)
{
    metrics_listener_t *l = calloc(1, sizeof *l);
    if (!l) {
        log_error("metrics: listen %s: out of memory", a->text);
        return -ENOMEM;
    }
    l->mx = mx;
    l->addr = *a;
    uv_tcp_init(mx->loop, &l->h);
    l->h.data = l;
    moat_service_hold(&mx->svc);
    unsigned flags = a->sa.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0;
    int rc = uv_tcp_bind(&l->h, (const struct sockaddr *)&a->sa, flags);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&l->h, METRICS_BACKLOG, metrics_connection_cb);
    if (rc != 0) {
        log_error("metrics: listen %s: %s", a->text, uv_strerror(rc));
        uv_close((uv_handle_t *)&l->h, metrics_listener_closed_cb);
        return rc;
    }
    mx->listener = l;
    log_info("metrics listening on http://%s/metrics", a->text);
    return 0;
}

/* Listen where cfg says: keep an unchanged socket, replace a changed one.
 * One socket, closed before the new one opens (the new address may overlap
 * the old), where moat_listeners_apply opens first. */
static int metrics_listener_apply(metrics_t *mx, const cfg_t *cfg)
{
    if (mx->listener && cfg->metrics.enabled &&
        filter_sockaddr_equal(&mx->listener->addr.sa, &cfg->metrics.listen.sa))
        return 0;
    if (mx->listener) {
        log_info("metrics: no longer listening on %s", mx->listener->addr.text);
        /* The fd is closed within uv_close, so the new address may reuse
         * the port at once. */
        metrics_listener_close(mx);
    }
    if (!cfg->metrics.enabled)
        return 0;
    return metrics_listener_open(mx, &cfg->metrics.listen);
}

/* ---- service ops ------------------------------------------------------------------------- */

static int metrics_start(moat_service_t *svc, uv_loop_t *loop, moat_gen_t *gen)
{
    metrics_t *mx = metrics_of(svc);
    mx->loop = loop;
    return metrics_listener_apply(mx, gen->cfg);
}

static int metrics_reload(moat_service_t *svc, moat_gen_t *gen)
{
    return metrics_listener_apply(metrics_of(svc), gen->cfg);
}

static void metrics_drain(moat_service_t *svc)
{
    /* Clients finish their one exchange within METRICS_CLIENT_TIMEOUT_MS. */
    metrics_listener_close(metrics_of(svc));
}

static void metrics_close(moat_service_t *svc)
{
    metrics_t *mx = metrics_of(svc);
    metrics_listener_close(mx);
    moat_list_t *it;
    while ((it = moat_list_first(&mx->clients)))
        metrics_client_close(container_of(it, metrics_client_t, node));
}

static void metrics_free(moat_service_t *svc)
{
    if (!svc)
        return;
    free(metrics_of(svc));
}

static const moat_service_ops_t metrics_ops = MOAT_SERVICE_OPS(metrics, "metrics");

int metrics_create(moat_service_t *const *dns, size_t n_dns, moat_service_t **out)
{
    *out = NULL;
    metrics_t *mx = calloc(1, sizeof *mx);
    if (!mx)
        return -ENOMEM;
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0)
        mx->start_time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    moat_service_init(&mx->svc, &metrics_ops, mx);
    mx->dns = dns;
    mx->n_dns = n_dns;
    moat_list_init(&mx->clients);
    *out = &mx->svc;
    return 0;
}
