/* tests/filter/test_http_flow.c: the HTTP/1.1 message-boundary tracker. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter/http_flow.h"
#include "filter/http_head.h"

#define REQ  FILTER_HTTP_FLOW_REQ
#define RESP FILTER_HTTP_FLOW_RESP
#define MAXH FILTER_HTTP_MAX_HEAD_DEFAULT

/* ---- a connection simulator: bytes arrive, the tracker says where the
 * messages are, the way the proxy will use it ---- */

#define SIM_MARKS 64

typedef struct sim_dir {
    const uint8_t *data;
    size_t len;                      /* the whole stream */
    size_t avail;                    /* bytes arrived so far */
    size_t pos;                      /* bytes forwarded (consumed) so far */
    size_t heads[SIM_MARKS], nheads; /* where each head started */
    size_t ends[SIM_MARKS], nends;   /* where each body ended */
} sim_dir_t;

typedef struct sim {
    filter_http_flow_t f;
    sim_dir_t d[2];
    bool opaque; /* pass body bytes with opaque()/passed() when it allows */
} sim_t;

static void sim_init(sim_t *s, const char *req, const char *resp, bool opaque)
{
    memset(s, 0, sizeof *s);
    filter_http_flow_init(&s->f);
    s->d[REQ].data = (const uint8_t *)req;
    s->d[REQ].len = strlen(req);
    s->d[RESP].data = (const uint8_t *)resp;
    s->d[RESP].len = strlen(resp);
    s->opaque = opaque;
}

static void sim_mark(size_t *marks, size_t *n, size_t at)
{
    cr_assert_lt(*n, SIM_MARKS);
    marks[(*n)++] = at;
}

/* One step on one direction over an exact-size copy of the bytes not yet
 * forwarded (so the sanitizers see a read past them). False: no progress. */
static bool sim_step(sim_t *s, filter_http_flow_dir_t dir)
{
    sim_dir_t *d = &s->d[dir];
    size_t n = d->avail - d->pos;
    if (n == 0)
        return false;
    uint8_t *buf = malloc(n);
    memcpy(buf, d->data + d->pos, n);
    bool progress = false;
    filter_http_flow_state_t st = filter_http_flow_state(&s->f, dir);

    if (st == FILTER_HTTP_FLOW_HEAD && dir == REQ) {
        filter_http_head_t h;
        filter_http_result_t r = filter_http_head_parse(buf, n, MAXH, &h);
        if (r == FILTER_HTTP_NAME) {
            filter_http_flow_result_t fr = filter_http_flow_request(&s->f, buf, h.head_len);
            if (fr == FILTER_HTTP_FLOW_OK) {
                sim_mark(d->heads, &d->nheads, d->pos);
                d->pos += h.head_len;
                progress = true;
            }
        }
    } else if (st == FILTER_HTTP_FLOW_HEAD) {
        size_t hl = 99;
        filter_http_flow_result_t fr = filter_http_flow_response(&s->f, buf, n, MAXH, &hl);
        if (fr == FILTER_HTTP_FLOW_OK) {
            cr_assert(hl > 0 && hl <= n);
            sim_mark(d->heads, &d->nheads, d->pos);
            d->pos += hl;
            progress = true;
        } else {
            cr_assert_eq(hl, 0);
        }
    } else if (st == FILTER_HTTP_FLOW_BODY || st == FILTER_HTTP_FLOW_EOF_BODY ||
               st == FILTER_HTTP_FLOW_RAW) {
        uint64_t op = filter_http_flow_opaque(&s->f, dir);
        size_t took;
        if (s->opaque && op > 0) {
            uint64_t want = op < n ? op : n;
            cr_assert_eq(filter_http_flow_passed(&s->f, dir, want), want);
            took = (size_t)want;
        } else {
            took = filter_http_flow_body(&s->f, dir, buf, n);
            cr_assert_leq(took, n);
            if (took < n)
                cr_assert_neq(filter_http_flow_state(&s->f, dir), FILTER_HTTP_FLOW_BODY);
        }
        d->pos += took;
        filter_http_flow_state_t now = filter_http_flow_state(&s->f, dir);
        if (st == FILTER_HTTP_FLOW_BODY &&
            (now == FILTER_HTTP_FLOW_HEAD || now == FILTER_HTTP_FLOW_WAIT))
            sim_mark(d->ends, &d->nends, d->pos);
        progress = took > 0 || now != st;
    }
    free(buf);
    return progress;
}

/* Run both directions until neither moves. */
static void sim_run(sim_t *s)
{
    for (int guard = 0; guard < 100000; guard++) {
        bool a = sim_step(s, REQ);
        bool b = sim_step(s, RESP);
        if (!a && !b)
            return;
    }
    cr_assert_fail("simulator does not settle");
}

/* Deliver dir's bytes up to `to`, then run. */
static void sim_arrive(sim_t *s, filter_http_flow_dir_t dir, size_t to)
{
    s->d[dir].avail = to < s->d[dir].len ? to : s->d[dir].len;
    sim_run(s);
}

/* All requests, then all responses, each in one piece. */
static void sim_whole(sim_t *s)
{
    sim_arrive(s, REQ, s->d[REQ].len);
    sim_arrive(s, RESP, s->d[RESP].len);
}

static void sim_same(const sim_t *a, const sim_t *b, const char *what, size_t at)
{
    for (int dir = 0; dir < 2; dir++) {
        const sim_dir_t *x = &a->d[dir], *y = &b->d[dir];
        cr_assert_eq(x->pos, y->pos, "%s %zu dir %d: consumed %zu vs %zu", what, at, dir, x->pos,
                     y->pos);
        cr_assert_eq(x->nheads, y->nheads, "%s %zu dir %d: heads", what, at, dir);
        cr_assert_arr_eq(x->heads, y->heads, x->nheads * sizeof x->heads[0], "%s %zu", what, at);
        cr_assert_eq(x->nends, y->nends, "%s %zu dir %d: body ends", what, at, dir);
        cr_assert_arr_eq(x->ends, y->ends, x->nends * sizeof x->ends[0], "%s %zu", what, at);
        cr_assert_eq(filter_http_flow_state(&a->f, dir), filter_http_flow_state(&b->f, dir),
                     "%s %zu dir %d: state", what, at, dir);
        cr_assert_eq(filter_http_flow_error(&a->f, dir), filter_http_flow_error(&b->f, dir));
    }
    cr_assert_eq(filter_http_flow_pending(&a->f), filter_http_flow_pending(&b->f));
}

/* The boundaries found with the streams whole must be found again byte by
 * byte and at every 2-way split of either stream, with and without opaque
 * passing. Returns the whole run in *out. */
static void sim_every_split(const char *req, const char *resp, sim_t *out)
{
    sim_init(out, req, resp, false);
    sim_whole(out);
    size_t rl = strlen(req), sl = strlen(resp);
    for (int op = 0; op < 2; op++) {
        sim_t *s = malloc(sizeof *s);
        /* Byte by byte, requests first. */
        sim_init(s, req, resp, op);
        for (size_t i = 1; i <= rl; i++)
            sim_arrive(s, REQ, i);
        for (size_t i = 1; i <= sl; i++)
            sim_arrive(s, RESP, i);
        sim_same(out, s, "byte by byte", 0);
        /* Every 2-way split of the request stream, then of the responses. */
        for (size_t cut = 0; cut <= rl; cut++) {
            sim_init(s, req, resp, op);
            sim_arrive(s, REQ, cut);
            sim_arrive(s, REQ, rl);
            sim_arrive(s, RESP, sl);
            sim_same(out, s, "request split", cut);
        }
        for (size_t cut = 0; cut <= sl; cut++) {
            sim_init(s, req, resp, op);
            sim_arrive(s, REQ, rl);
            sim_arrive(s, RESP, cut);
            sim_arrive(s, RESP, sl);
            sim_same(out, s, "response split", cut);
        }
        free(s);
    }
}

static void expect_marks(const size_t *got, size_t n, const size_t *want, size_t wn,
                         const char *what)
{
    cr_assert_eq(n, wn, "%s: %zu marks, want %zu", what, n, wn);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "%s mark %zu: %zu, want %zu", what, i, got[i], want[i]);
}

#define MARKS(got, n, ...)                                                                         \
    do {                                                                                           \
        const size_t want_[] = {__VA_ARGS__};                                                      \
        expect_marks(got, n, want_, sizeof want_ / sizeof want_[0], #got);                         \
    } while (0)

/* ---- direct helpers ---- */

static filter_http_flow_result_t request(filter_http_flow_t *f, const char *head)
{
    size_t n = strlen(head);
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, head, n);
    filter_http_flow_result_t r = filter_http_flow_request(f, copy, n);
    free(copy);
    return r;
}

static filter_http_flow_result_t response(filter_http_flow_t *f, const char *s, size_t *hl)
{
    size_t n = strlen(s);
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, s, n);
    filter_http_flow_result_t r = filter_http_flow_response(f, copy, n, MAXH, hl);
    free(copy);
    return r;
}

static size_t body(filter_http_flow_t *f, filter_http_flow_dir_t dir, const char *s)
{
    size_t n = strlen(s);
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, s, n);
    size_t r = filter_http_flow_body(f, dir, copy, n);
    free(copy);
    return r;
}

static void expect_state(const filter_http_flow_t *f, filter_http_flow_dir_t dir,
                         filter_http_flow_state_t want)
{
    filter_http_flow_state_t st = filter_http_flow_state(f, dir);
    cr_assert_eq(st, want, "dir %d: state %d, want %d (%s)", dir, st, want,
                 filter_http_flow_reason(filter_http_flow_error(f, dir)));
}

/* A request head is refused with err. */
static void refused(const char *head, filter_http_flow_err_t err)
{
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    cr_assert_eq(request(&f, head), FILTER_HTTP_FLOW_BAD, "accepted <%s>", head);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_ERROR);
    cr_assert_eq(filter_http_flow_error(&f, REQ), err, "<%s>: %s, want %s", head,
                 filter_http_flow_reason(filter_http_flow_error(&f, REQ)),
                 filter_http_flow_reason(err));
    cr_assert_eq(filter_http_flow_pending(&f), 0);
}

/* A request head is accepted with a body of n bytes (-1: chunked). */
static void accepted(const char *head, long n)
{
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    cr_assert_eq(request(&f, head), FILTER_HTTP_FLOW_OK, "refused <%s>: %s", head,
                 filter_http_flow_reason(filter_http_flow_error(&f, REQ)));
    if (n == 0) {
        expect_state(&f, REQ, FILTER_HTTP_FLOW_HEAD);
    } else {
        expect_state(&f, REQ, FILTER_HTTP_FLOW_BODY);
        if (n > 0)
            cr_assert_eq(filter_http_flow_opaque(&f, REQ), (uint64_t)n, "<%s>", head);
        else
            cr_assert_eq(filter_http_flow_opaque(&f, REQ), 0, "<%s>", head);
    }
}

/* ---- tests ---- */

Test(http_flow, small_struct)
{
    cr_assert_leq(sizeof(filter_http_flow_t), 96);
    filter_http_flow_t f;
    memset(&f, 0, sizeof f); /* zeroed is a fresh connection */
    expect_state(&f, REQ, FILTER_HTTP_FLOW_HEAD);
    expect_state(&f, RESP, FILTER_HTTP_FLOW_HEAD);
    cr_assert_eq(filter_http_flow_pending(&f), 0);
}

Test(http_flow, content_length_keep_alive)
{
    const char *req = "POST /a HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello"
                      "GET /b HTTP/1.1\r\nHost: a.example\r\n\r\n"
                      "PUT /c HTTP/1.1\r\nHost: a.example\r\ncontent-length:  3 \r\n\r\nxyz";
    const char *resp = "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
                       "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone";
    sim_t s;
    sim_every_split(req, resp, &s);
    size_t get = strstr(req, "GET /b") - req, put = strstr(req, "PUT /c") - req;
    MARKS(s.d[REQ].heads, s.d[REQ].nheads, 0, get, put);
    MARKS(s.d[REQ].ends, s.d[REQ].nends, get, strlen(req));
    cr_assert_eq(s.d[REQ].pos, strlen(req));
    size_t r2 = strstr(resp, "HTTP/1.1 200") - resp;
    size_t r3 = strstr(resp + r2 + 1, "HTTP/1.1 200") - resp;
    MARKS(s.d[RESP].heads, s.d[RESP].nheads, 0, r2, r3);
    MARKS(s.d[RESP].ends, s.d[RESP].nends, r2, strlen(resp));
    cr_assert_eq(s.d[RESP].pos, strlen(resp));
    expect_state(&s.f, REQ, FILTER_HTTP_FLOW_HEAD);
    expect_state(&s.f, RESP, FILTER_HTTP_FLOW_HEAD);
    cr_assert_eq(filter_http_flow_pending(&s.f), 0);
}

Test(http_flow, chunked_extensions_trailers)
{
    const char *req = "POST /up HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5;name=value;quoted=\"a b;c\"\r\nhello\r\n"
                      "A \t; ext\r\n0123456789\r\n"
                      "000\r\nTrailer-One: x\r\nTrailer-Two:\r\n\r\n"
                      "GET /next HTTP/1.1\r\nHost: a.example\r\n\r\n";
    const char *resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
                       "3\r\nabc\r\n0\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz";
    sim_t s;
    sim_every_split(req, resp, &s);
    size_t body_end = strstr(req, "GET /next") - req;
    MARKS(s.d[REQ].heads, s.d[REQ].nheads, 0, body_end);
    MARKS(s.d[REQ].ends, s.d[REQ].nends, body_end);
    cr_assert_eq(s.d[REQ].pos, strlen(req));
    size_t resp2 = strstr(resp, "HTTP/1.1 200 OK\r\nContent-Length") - resp;
    MARKS(s.d[RESP].heads, s.d[RESP].nheads, 0, resp2);
    MARKS(s.d[RESP].ends, s.d[RESP].nends, resp2, strlen(resp));
    expect_state(&s.f, REQ, FILTER_HTTP_FLOW_HEAD);
    expect_state(&s.f, RESP, FILTER_HTTP_FLOW_HEAD);
}

Test(http_flow, every_split_mixed_keep_alive)
{
    /* HEAD, chunked, Content-Length, no body, a 100 Continue, a 204, a 304. */
    const char *req = "HEAD /h HTTP/1.1\r\nHost: a.example\r\n\r\n"
                      "POST /c HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\nT: v\r\n\r\n"
                      "PUT /l HTTP/1.1\r\nHost: a.example\r\nExpect: 100-continue\r\n"
                      "Content-Length: 10\r\n\r\n0123456789"
                      "DELETE /d HTTP/1.1\r\nHost: a.example\r\n\r\n"
                      "GET /nm HTTP/1.1\r\nHost: a.example\r\nIf-None-Match: \"x\"\r\n\r\n";
    const char *resp = "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
                       "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n"
                       "1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"
                       "HTTP/1.1 100 Continue\r\n\r\n"
                       "HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"
                       "HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n"
                       "HTTP/1.0 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n";
    sim_t s;
    sim_every_split(req, resp, &s);
    cr_assert_eq(s.d[REQ].nheads, 5);
    cr_assert_eq(s.d[REQ].pos, strlen(req));
    cr_assert_eq(s.d[RESP].nheads, 6);
    cr_assert_eq(s.d[RESP].pos, strlen(resp));
    cr_assert_eq(s.d[RESP].nends, 2);
    expect_state(&s.f, REQ, FILTER_HTTP_FLOW_HEAD);
    expect_state(&s.f, RESP, FILTER_HTTP_FLOW_HEAD);
    cr_assert_eq(filter_http_flow_pending(&s.f), 0);
}

Test(http_flow, pipelined_requests_matched_in_order)
{
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    cr_assert_eq(request(&f, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"), FILTER_HTTP_FLOW_OK);
    cr_assert_eq(request(&f, "HEAD /2 HTTP/1.1\r\nHost: a\r\n\r\n"), FILTER_HTTP_FLOW_OK);
    cr_assert_eq(request(&f, "GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"), FILTER_HTTP_FLOW_OK);
    cr_assert_eq(filter_http_flow_pending(&f), 3);
    size_t hl;
    /* The first is a GET: its Content-Length frames a body. */
    cr_assert_eq(response(&f, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", &hl),
                 FILTER_HTTP_FLOW_OK);
    expect_state(&f, RESP, FILTER_HTTP_FLOW_BODY);
    cr_assert_eq(body(&f, RESP, "abcHTTP"), 3);
    /* The second answers HEAD: no body whatever Content-Length says. */
    cr_assert_eq(response(&f, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", &hl),
                 FILTER_HTTP_FLOW_OK);
    expect_state(&f, RESP, FILTER_HTTP_FLOW_HEAD);
    cr_assert_eq(filter_http_flow_pending(&f), 1);
    cr_assert_eq(response(&f, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", &hl),
                 FILTER_HTTP_FLOW_OK);
    expect_state(&f, RESP, FILTER_HTTP_FLOW_BODY);
    cr_assert_eq(body(&f, RESP, "xyz"), 3);
    cr_assert_eq(filter_http_flow_pending(&f), 0);
    /* Nothing pending now: more response bytes are refused. */
    cr_assert_eq(response(&f, "H", &hl), FILTER_HTTP_FLOW_BAD);
    cr_assert_eq(filter_http_flow_error(&f, RESP), FILTER_HTTP_FLOW_E_UNREQUESTED);
}

Test(http_flow, unrequested_response)
{
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    size_t hl = 7;
    cr_assert_eq(response(&f, "", &hl), FILTER_HTTP_FLOW_NEED_MORE);
    cr_assert_eq(response(&f, "HTTP/1.1 408 Request Timeout\r\n\r\n", &hl), FILTER_HTTP_FLOW_BAD);
    cr_assert_eq(hl, 0);
    expect_state(&f, RESP, FILTER_HTTP_FLOW_ERROR);
    cr_assert_str_eq(filter_http_flow_reason(filter_http_flow_error(&f, RESP)),
                     "unrequested-response");
    /* The request direction is not touched. */
    expect_state(&f, REQ, FILTER_HTTP_FLOW_HEAD);
}

Test(http_flow, bodyless_responses)
{
    struct {
        const char *resp;
        filter_http_flow_state_t after;
        unsigned pending;
    } cases[] = {
        {"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", FILTER_HTTP_FLOW_HEAD, 0},
        {"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", FILTER_HTTP_FLOW_HEAD,
         0},
        {"HTTP/1.1 100 Continue\r\n\r\n", FILTER_HTTP_FLOW_HEAD, 1},
        {"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n", FILTER_HTTP_FLOW_HEAD,
         1},
        {"HTTP/1.1 199\r\n\r\n", FILTER_HTTP_FLOW_HEAD, 1},
        {"HTTP/1.1 200 OK\r\n\r\n", FILTER_HTTP_FLOW_EOF_BODY, 0},
        {"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n", FILTER_HTTP_FLOW_BODY, 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", FILTER_HTTP_FLOW_EOF_BODY, 0},
        {"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", FILTER_HTTP_FLOW_EOF_BODY, 0},
        {"HTTP/1.1 500 x\r\nContent-Length: 0\r\n\r\n", FILTER_HTTP_FLOW_HEAD, 0},
        {"HTTP/1.1 404 Not Found\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n",
         FILTER_HTTP_FLOW_BODY, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        filter_http_flow_t f;
        filter_http_flow_init(&f);
        cr_assert_eq(request(&f, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), FILTER_HTTP_FLOW_OK);
        size_t hl;
        cr_assert_eq(response(&f, cases[i].resp, &hl), FILTER_HTTP_FLOW_OK, "%s", cases[i].resp);
        cr_assert_eq(hl, strlen(cases[i].resp));
        expect_state(&f, RESP, cases[i].after);
        cr_assert_eq(filter_http_flow_pending(&f), cases[i].pending, "%s", cases[i].resp);
    }
}

Test(http_flow, eof_body_takes_everything)
{
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    cr_assert_eq(request(&f, "GET / HTTP/1.0\r\nHost: a\r\n\r\n"), FILTER_HTTP_FLOW_OK);
    size_t hl;
    cr_assert_eq(response(&f, "HTTP/1.0 200 OK\r\n\r\n", &hl), FILTER_HTTP_FLOW_OK);
    expect_state(&f, RESP, FILTER_HTTP_FLOW_EOF_BODY);
    cr_assert_eq(filter_http_flow_opaque(&f, RESP), UINT64_MAX);
    cr_assert_eq(body(&f, RESP, "HTTP/1.1 101 x\r\n\r\n"), 18);
    cr_assert_eq(filter_http_flow_passed(&f, RESP, 1000000), 1000000);
    expect_state(&f, RESP, FILTER_HTTP_FLOW_EOF_BODY);
    /* The client may still send requests; they stay decided as heads. */
    expect_state(&f, REQ, FILTER_HTTP_FLOW_HEAD);
}

Test(http_flow, expect_100_continue)
{
    const char *req = "POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                      "Content-Length: 4\r\n\r\nbody"
                      "GET /y HTTP/1.1\r\nHost: a\r\n\r\n";
    const char *resp = "HTTP/1.1 100 Continue\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    sim_t s;
    sim_every_split(req, resp, &s);
    cr_assert_eq(s.d[REQ].nheads, 2);
    cr_assert_eq(s.d[RESP].nheads, 3);
    cr_assert_eq(s.d[RESP].pos, strlen(resp));
    cr_assert_eq(filter_http_flow_pending(&s.f), 0);

    /* Step by step: the 100 leaves the request pending while its body comes. */
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    cr_assert_eq(request(&f, "POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                             "Content-Length: 4\r\n\r\n"),
                 FILTER_HTTP_FLOW_OK);
    size_t hl;
    cr_assert_eq(response(&f, "HTTP/1.1 100 Continue\r\n\r\n", &hl), FILTER_HTTP_FLOW_OK);
    cr_assert_eq(filter_http_flow_pending(&f), 1);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_BODY);
    cr_assert_eq(body(&f, REQ, "body"), 4);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_HEAD);
    cr_assert_eq(response(&f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &hl),
                 FILTER_HTTP_FLOW_OK);
    cr_assert_eq(filter_http_flow_pending(&f), 0);
}

Test(http_flow, upgrade_switched)
{
    const char *req = "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
                      "Upgrade: websocket\r\n\r\n"
                      "\x81\x85websocket frame, not HTTP";
    const char *resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\n\r\n"
                       "\x81\x05hello";
    sim_t s;
    sim_every_split(req, resp, &s);
    MARKS(s.d[REQ].heads, s.d[REQ].nheads, 0);
    MARKS(s.d[RESP].heads, s.d[RESP].nheads, 0);
    expect_state(&s.f, REQ, FILTER_HTTP_FLOW_RAW);
    expect_state(&s.f, RESP, FILTER_HTTP_FLOW_RAW);
    cr_assert_eq(s.d[REQ].pos, strlen(req));
    cr_assert_eq(s.d[RESP].pos, strlen(resp));

    /* Until the answer, the request direction waits. */
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    cr_assert_eq(request(&f, "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                             "Upgrade: websocket\r\n\r\n"),
                 FILTER_HTTP_FLOW_OK);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_WAIT);
    cr_assert_eq(request(&f, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), FILTER_HTTP_FLOW_BAD);
    cr_assert_eq(filter_http_flow_error(&f, REQ), FILTER_HTTP_FLOW_E_STATE);
}

Test(http_flow, upgrade_refused_then_more_requests)
{
    const char *answers[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno",
        "HTTP/1.1 426 Upgrade Required\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
    };
    for (size_t i = 0; i < 2; i++) {
        char resp[256];
        snprintf(resp, sizeof resp, "%sHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!", answers[i]);
        /* The second request is held back (WAIT) until the answer, then read
         * as a head: it is not tunnel bytes. */
        const char *req = "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                          "HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
                          "GET /second HTTP/1.1\r\nHost: b\r\n\r\n";
        sim_t s;
        sim_init(&s, req, resp, false);
        sim_arrive(&s, REQ, strlen(req));
        MARKS(s.d[REQ].heads, s.d[REQ].nheads, 0);
        expect_state(&s.f, REQ, FILTER_HTTP_FLOW_WAIT);
        sim_arrive(&s, RESP, strlen(resp));
        size_t second = strstr(req, "GET /second") - req;
        MARKS(s.d[REQ].heads, s.d[REQ].nheads, 0, second);
        expect_state(&s.f, REQ, FILTER_HTTP_FLOW_HEAD);
        expect_state(&s.f, RESP, FILTER_HTTP_FLOW_HEAD);
        cr_assert_eq(s.d[RESP].pos, strlen(resp));
        cr_assert_eq(filter_http_flow_pending(&s.f), 0);
        sim_t whole;
        sim_every_split(req, resp, &whole);
        sim_same(&s, &whole, "upgrade refused", i);
    }
}

Test(http_flow, upgrade_with_body_and_interim)
{
    /* The body comes before the switch; a 100 does not end the wait. */
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    cr_assert_eq(request(&f, "POST / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: upgrade\r\n"
                             "Content-Length: 3\r\n\r\n"),
                 FILTER_HTTP_FLOW_OK);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_BODY);
    cr_assert_eq(body(&f, REQ, "abcGET"), 3);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_WAIT);
    size_t hl;
    cr_assert_eq(response(&f, "HTTP/1.1 100 Continue\r\n\r\n", &hl), FILTER_HTTP_FLOW_OK);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_WAIT);
    cr_assert_eq(response(&f, "HTTP/1.1 101 Switching\r\n\r\n", &hl), FILTER_HTTP_FLOW_OK);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_RAW);
    expect_state(&f, RESP, FILTER_HTTP_FLOW_RAW);
    cr_assert_eq(filter_http_flow_opaque(&f, REQ), UINT64_MAX);
    cr_assert_eq(body(&f, REQ, "anything"), 8);

    /* A switch answered before the request body is all in: RAW at once. */
    filter_http_flow_init(&f);
    cr_assert_eq(request(&f, "POST / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\n"
                             "Content-Length: 30\r\n\r\n"),
                 FILTER_HTTP_FLOW_OK);
    cr_assert_eq(body(&f, REQ, "abc"), 3);
    cr_assert_eq(response(&f, "HTTP/1.1 101 Switching\r\n\r\n", &hl), FILTER_HTTP_FLOW_OK);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_RAW);

    /* A refusal before the body is all in: the body is followed to its
     * end, then HEAD (not WAIT). */
    filter_http_flow_init(&f);
    cr_assert_eq(request(&f, "POST / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\n"
                             "Content-Length: 5\r\n\r\n"),
                 FILTER_HTTP_FLOW_OK);
    cr_assert_eq(body(&f, REQ, "abc"), 3);
    cr_assert_eq(response(&f, "HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n", &hl),
                 FILTER_HTTP_FLOW_OK);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_BODY);
    cr_assert_eq(body(&f, REQ, "deGET"), 2);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_HEAD);
}

Test(http_flow, switch_not_asked_for)
{
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    /* Connection: upgrade without an Upgrade field does not ask. */
    cr_assert_eq(request(&f, "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n"),
                 FILTER_HTTP_FLOW_OK);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_HEAD);
    size_t hl;
    cr_assert_eq(response(&f, "HTTP/1.1 101 Switching Protocols\r\n\r\n", &hl),
                 FILTER_HTTP_FLOW_BAD);
    cr_assert_eq(filter_http_flow_error(&f, RESP), FILTER_HTTP_FLOW_E_SWITCH);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_HEAD);

    /* Nor does CONNECT. */
    filter_http_flow_init(&f);
    cr_assert_eq(request(&f, "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"), FILTER_HTTP_FLOW_OK);
    cr_assert_eq(response(&f, "HTTP/1.1 101 Switching Protocols\r\n\r\n", &hl),
                 FILTER_HTTP_FLOW_BAD);
    cr_assert_eq(filter_http_flow_error(&f, RESP), FILTER_HTTP_FLOW_E_SWITCH);
}

Test(http_flow, connect_answered_200_and_407)
{
    const char *req = "CONNECT b.example:443 HTTP/1.1\r\nHost: b.example:443\r\n\r\n"
                      "\x16\x03\x01 a ClientHello, not HTTP";
    const char *resp = "HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x03 tls";
    sim_t s;
    sim_every_split(req, resp, &s);
    MARKS(s.d[REQ].heads, s.d[REQ].nheads, 0);
    MARKS(s.d[RESP].heads, s.d[RESP].nheads, 0);
    expect_state(&s.f, REQ, FILTER_HTTP_FLOW_RAW);
    expect_state(&s.f, RESP, FILTER_HTTP_FLOW_RAW);
    cr_assert_eq(s.d[REQ].pos, strlen(req));
    cr_assert_eq(s.d[RESP].pos, strlen(resp));

    /* A 2xx with a Content-Length is still a tunnel (RFC 9112 §6.3 rule 2). */
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    cr_assert_eq(request(&f, "CONNECT b:443 HTTP/1.1\r\nHost: b:443\r\n\r\n"), FILTER_HTTP_FLOW_OK);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_WAIT);
    size_t hl;
    cr_assert_eq(response(&f, "HTTP/1.1 204 OK\r\nContent-Length: 10\r\n\r\n", &hl),
                 FILTER_HTTP_FLOW_OK);
    expect_state(&f, RESP, FILTER_HTTP_FLOW_RAW);

    /* 407: no tunnel; its body is framed and the next request is a head. */
    const char *req2 = "CONNECT b.example:443 HTTP/1.1\r\nHost: b.example:443\r\n\r\n"
                       "CONNECT b.example:443 HTTP/1.1\r\nHost: b.example:443\r\n"
                       "Proxy-Authorization: Basic dTpw\r\n\r\n";
    const char *resp2 = "HTTP/1.1 407 Proxy Authentication Required\r\n"
                        "Proxy-Authenticate: Basic realm=\"x\"\r\nContent-Length: 3\r\n\r\nno!"
                        "HTTP/1.1 200 OK\r\n\r\n";
    sim_every_split(req2, resp2, &s);
    size_t second = strstr(req2 + 1, "CONNECT") - req2;
    MARKS(s.d[REQ].heads, s.d[REQ].nheads, 0, second);
    MARKS(s.d[RESP].heads, s.d[RESP].nheads, 0, strstr(resp2, "HTTP/1.1 200") - resp2);
    expect_state(&s.f, REQ, FILTER_HTTP_FLOW_RAW);
}

Test(http_flow, ring_full_waits)
{
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    for (unsigned i = 0; i < FILTER_HTTP_FLOW_PENDING; i++) {
        expect_state(&f, REQ, FILTER_HTTP_FLOW_HEAD);
        cr_assert_eq(request(&f, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), FILTER_HTTP_FLOW_OK);
    }
    cr_assert_eq(filter_http_flow_pending(&f), FILTER_HTTP_FLOW_PENDING);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_WAIT);
    size_t hl;
    /* An interim response does not free a place. */
    cr_assert_eq(response(&f, "HTTP/1.1 100 Continue\r\n\r\n", &hl), FILTER_HTTP_FLOW_OK);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_WAIT);
    cr_assert_eq(response(&f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &hl),
                 FILTER_HTTP_FLOW_OK);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_HEAD);
    cr_assert_eq(request(&f, "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"), FILTER_HTTP_FLOW_OK);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_WAIT);
    /* The ring wraps: the 32 answers that follow match in order, the last
     * one answering the HEAD. */
    for (unsigned i = 0; i < FILTER_HTTP_FLOW_PENDING - 1; i++) {
        cr_assert_eq(response(&f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", &hl),
                     FILTER_HTTP_FLOW_OK);
        expect_state(&f, RESP, FILTER_HTTP_FLOW_HEAD);
    }
    cr_assert_eq(response(&f, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", &hl),
                 FILTER_HTTP_FLOW_OK);
    expect_state(&f, RESP, FILTER_HTTP_FLOW_HEAD); /* HEAD: no body */
    cr_assert_eq(filter_http_flow_pending(&f), 0);
}

Test(http_flow, request_framing_accepted)
{
    accepted("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0);
    accepted("POST / HTTP/1.1\r\nHost: a\r\n\r\n", 0); /* no framing field: no body */
    accepted("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 0);
    accepted("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n", 12);
    accepted("POST / HTTP/1.1\r\nHost: a\r\nCONTENT-LENGTH:\t007\t\r\n\r\n", 7);
    accepted("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5 ,5\r\nContent-Length: 5\r\n\r\n",
             5);
    accepted("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1844674407370955161\r\n\r\n",
             1844674407370955161);
    accepted("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", -1);
    accepted("POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: CHUNKED\r\n\r\n", -1);
    accepted("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip ,chunked\r\n\r\n", -1);
    accepted("POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n", -1);
    /* Names that only look like framing fields. */
    accepted("POST / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 5\r\nContent-Lengths: 3\r\n"
             "Transfer-Encodings: chunked\r\n\r\n",
             0);
}

Test(http_flow, request_framing_refused)
{
    /* Request smuggling: both framing fields. */
    refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            FILTER_HTTP_FLOW_E_TE_AND_LENGTH);
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
            FILTER_HTTP_FLOW_E_TE_AND_LENGTH);
    /* Bad Content-Length. */
    const char *bad_cl[] = {"abc",
                            "",
                            "-1",
                            "+5",
                            "5 5",
                            "0x10",
                            "5;",
                            "1e3",
                            "5,",
                            ",5",
                            "5,,5",
                            "18446744073709551616",
                            "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad_cl / sizeof bad_cl[0]; i++) {
        char head[160];
        snprintf(head, sizeof head, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n",
                 bad_cl[i]);
        refused(head, FILTER_HTTP_FLOW_E_CONTENT_LENGTH);
    }
    refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            FILTER_HTTP_FLOW_E_LENGTHS_DIFFER);
    refused("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 50\r\n\r\n",
            FILTER_HTTP_FLOW_E_LENGTHS_DIFFER);
    /* Transfer-Encoding that does not end in chunked, or that could be read
     * another way. */
    const char *bad_te[] = {"gzip",      "chunked, gzip", "chunked, chunked", "",
                            "chunked,",  ", chunked",     "chunked;q=1",      "\"chunked\"",
                            "chunked x", "identity",      "xchunked",         "chunke"};
    for (size_t i = 0; i < sizeof bad_te / sizeof bad_te[0]; i++) {
        char head[160];
        snprintf(head, sizeof head, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: %s\r\n\r\n",
                 bad_te[i]);
        refused(head, FILTER_HTTP_FLOW_E_TRANSFER_CODING);
    }
    refused("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
            "Transfer-Encoding: chunked\r\n\r\n",
            FILTER_HTTP_FLOW_E_TRANSFER_CODING);
    refused("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            FILTER_HTTP_FLOW_E_TRANSFER_CODING);
}

Test(http_flow, request_heads_not_whole_or_not_http)
{
    refused("", FILTER_HTTP_FLOW_E_HEAD);
    refused("GET / HTTP/1.1\r\nHost: a\r\n", FILTER_HTTP_FLOW_E_HEAD);
    refused("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET", FILTER_HTTP_FLOW_E_HEAD);
    refused("GET / HTTP/2.0\r\nHost: a\r\n\r\n", FILTER_HTTP_FLOW_E_HEAD);
    refused("GET /HTTP/1.1\r\nHost: a\r\n\r\n", FILTER_HTTP_FLOW_E_HEAD);
    refused(" GET / HTTP/1.1\r\n\r\n", FILTER_HTTP_FLOW_E_HEAD);
    refused("\r\nGET / HTTP/1.1\r\n\r\n", FILTER_HTTP_FLOW_E_HEAD);
    refused("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", FILTER_HTTP_FLOW_E_HEAD);
    refused("GET / HTTP/1.1\r\nHost : a\r\n\r\n", FILTER_HTTP_FLOW_E_HEAD);
    refused("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", FILTER_HTTP_FLOW_E_HEAD);
    refused("GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", FILTER_HTTP_FLOW_E_HEAD);
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    cr_assert_eq(filter_http_flow_request(&f, NULL, 10), FILTER_HTTP_FLOW_BAD);
    /* A NUL inside the head (strlen would stop there). */
    static const uint8_t nul[] = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n";
    filter_http_flow_init(&f);
    cr_assert_eq(filter_http_flow_request(&f, nul, sizeof nul - 1), FILTER_HTTP_FLOW_BAD);
    cr_assert_eq(filter_http_flow_error(&f, REQ), FILTER_HTTP_FLOW_E_HEAD);
}

/* A chunked request body fed whole: how much it takes, the state after. */
static void chunked(const char *b, size_t want_taken, filter_http_flow_state_t want,
                    filter_http_flow_err_t err)
{
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    cr_assert_eq(request(&f, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
                 FILTER_HTTP_FLOW_OK);
    size_t took = body(&f, REQ, b);
    cr_assert_eq(took, want_taken, "<%s>: took %zu, want %zu", b, took, want_taken);
    expect_state(&f, REQ, want);
    cr_assert_eq(filter_http_flow_error(&f, REQ), err, "<%s>: %s", b,
                 filter_http_flow_reason(filter_http_flow_error(&f, REQ)));
    /* The same byte by byte. */
    filter_http_flow_init(&f);
    request(&f, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    size_t total = 0;
    for (size_t i = 0; b[i] != '\0'; i++) {
        size_t t = body(&f, REQ, (char[]){b[i], '\0'});
        total += t;
        if (t == 0)
            break;
    }
    cr_assert_eq(total, want_taken, "<%s> byte by byte", b);
    expect_state(&f, REQ, want);
}

#define OK_BODY FILTER_HTTP_FLOW_HEAD, FILTER_HTTP_FLOW_E_NONE
#define MORE    FILTER_HTTP_FLOW_BODY, FILTER_HTTP_FLOW_E_NONE
#define BAD(e)  FILTER_HTTP_FLOW_ERROR, FILTER_HTTP_FLOW_E_##e

Test(http_flow, chunk_syntax)
{
    chunked("0\r\n\r\n", 5, OK_BODY);
    chunked("0\r\n\r\nGET", 5, OK_BODY);
    chunked("1\r\na\r\n0\r\n\r\n", 11, OK_BODY);
    chunked("fF\r\n", 4, MORE);
    chunked("0;a=b;c\r\n\r\n", 11, OK_BODY);
    chunked("0 ;a\r\n\r\n", 8, OK_BODY);
    chunked("0\t \t;a\r\n\r\n", 10, OK_BODY);
    chunked("0;\x80\xff\t\"\\\r\n\r\n", 11, OK_BODY);
    chunked("0\r\nA: b\r\nC-d:\r\n\r\n", 17, OK_BODY);
    chunked("ffffffffffffffff\r\n", 18, MORE);                  /* 16 digits: fits */
    chunked("0000000000000001\r\nx\r\n0\r\n\r\n", 26, OK_BODY); /* 16 with zeros */

    chunked("", 0, MORE);
    chunked("g\r\n", 0, BAD(CHUNK_SIZE));
    chunked("\r\n", 0, BAD(CHUNK_SIZE));
    chunked(";a\r\n", 0, BAD(CHUNK_SIZE));
    chunked(" 1\r\n", 0, BAD(CHUNK_SIZE));
    chunked("-1\r\n", 0, BAD(CHUNK_SIZE));
    chunked("0x1\r\n", 1, BAD(CHUNK_SIZE));
    chunked("1 \r\n", 2, BAD(CHUNK_SIZE)); /* BWS must lead to a ';' */
    chunked("1 2\r\n", 2, BAD(CHUNK_SIZE));
    chunked("1\n", 1, BAD(CHUNK_SIZE)); /* bare LF */
    chunked("1\rx", 2, BAD(CHUNK_SIZE));
    chunked("1;a\nb\r\n", 3, BAD(CHUNK_SIZE));
    chunked("1;a\x01\r\n", 3, BAD(CHUNK_SIZE));
    chunked("1;a\x7f\r\n", 3, BAD(CHUNK_SIZE));
    chunked("00000000000000001\r\n", 16, BAD(CHUNK_TOO_BIG));
    chunked("10000000000000000\r\n", 16, BAD(CHUNK_TOO_BIG));
    chunked("fffffffffffffffff\r\n", 16, BAD(CHUNK_TOO_BIG));
    chunked("5\r\nhelloX\r\n", 8, BAD(CHUNK_END));
    chunked("5\r\nhello\rX", 9, BAD(CHUNK_END));
    chunked("5\r\nhello\n0\r\n\r\n", 8, BAD(CHUNK_END));
    chunked("5\r\nhello0\r\n\r\n", 8, BAD(CHUNK_END));
    chunked("3\r\nhello\r\n", 6, BAD(CHUNK_END));
    chunked("0\r\n\n", 3, BAD(TRAILER));
    chunked("0\r\nA: b\n\r\n", 7, BAD(TRAILER));
    chunked("0\r\n\rX", 4, BAD(TRAILER));
    chunked("0\r\n b: c\r\n\r\n", 3, BAD(TRAILER));
    chunked("0\r\nb : c\r\n\r\n", 4, BAD(TRAILER));
    chunked("0\r\nb: c\x01\r\n\r\n", 7, BAD(TRAILER));
    chunked("0\r\nb\r\n\r\n", 4, BAD(TRAILER));
}

Test(http_flow, chunked_response_and_smuggled_head_in_body)
{
    /* A request smuggled in a body is body, and the boundary found is the
     * one the server finds. */
    const char *req = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 34\r\n\r\n"
                      "GET /x HTTP/1.1\r\nHost: blocked\r\n\r\n"
                      "GET /y HTTP/1.1\r\nHost: a\r\n\r\n";
    const char *resp = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "2a\r\nHTTP/1.1 101 Switching Protocols\r\n\r\nxxxxxx\r\n0\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    sim_t s;
    sim_every_split(req, resp, &s);
    size_t y = strstr(req, "GET /y") - req;
    MARKS(s.d[REQ].heads, s.d[REQ].nheads, 0, y);
    cr_assert_eq(s.d[RESP].nheads, 2);
    expect_state(&s.f, RESP, FILTER_HTTP_FLOW_HEAD);
    expect_state(&s.f, REQ, FILTER_HTTP_FLOW_HEAD);
}

Test(http_flow, opaque_counts)
{
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    cr_assert_eq(filter_http_flow_opaque(&f, REQ), 0);
    cr_assert_eq(filter_http_flow_passed(&f, REQ, 5), 0);
    cr_assert_eq(request(&f, "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"),
                 FILTER_HTTP_FLOW_OK);
    cr_assert_eq(filter_http_flow_opaque(&f, REQ), 100000);
    cr_assert_eq(filter_http_flow_passed(&f, REQ, 65536), 65536);
    cr_assert_eq(filter_http_flow_opaque(&f, REQ), 100000 - 65536);
    cr_assert_eq(body(&f, REQ, "abcd"), 4);
    cr_assert_eq(filter_http_flow_opaque(&f, REQ), 100000 - 65540);
    /* Never more than the body. */
    cr_assert_eq(filter_http_flow_passed(&f, REQ, 1000000), 100000 - 65540);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_HEAD);
    cr_assert_eq(filter_http_flow_opaque(&f, REQ), 0);

    /* Chunked: only chunk data is opaque. */
    cr_assert_eq(request(&f, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
                 FILTER_HTTP_FLOW_OK);
    cr_assert_eq(filter_http_flow_opaque(&f, REQ), 0);
    cr_assert_eq(body(&f, REQ, "1000;x"), 6);
    cr_assert_eq(filter_http_flow_opaque(&f, REQ), 0);
    cr_assert_eq(body(&f, REQ, "\r\n"), 2);
    cr_assert_eq(filter_http_flow_opaque(&f, REQ), 0x1000);
    cr_assert_eq(filter_http_flow_passed(&f, REQ, 0x0fff), 0x0fff);
    cr_assert_eq(filter_http_flow_opaque(&f, REQ), 1);
    cr_assert_eq(body(&f, REQ, "z\r"), 2);
    cr_assert_eq(filter_http_flow_opaque(&f, REQ), 0);
    cr_assert_eq(filter_http_flow_passed(&f, REQ, 1), 0);
    cr_assert_eq(body(&f, REQ, "\n2\r\n"), 4);
    cr_assert_eq(filter_http_flow_passed(&f, REQ, 2), 2);
    cr_assert_eq(body(&f, REQ, "\r\n0\r\n\r\nG"), 7);
    expect_state(&f, REQ, FILTER_HTTP_FLOW_HEAD);

    /* A response body too, and nothing in HEAD or ERROR. */
    size_t hl;
    cr_assert_eq(response(&f, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", &hl),
                 FILTER_HTTP_FLOW_OK);
    cr_assert_eq(filter_http_flow_opaque(&f, RESP), 7);
    cr_assert_eq(filter_http_flow_passed(&f, RESP, 7), 7);
    expect_state(&f, RESP, FILTER_HTTP_FLOW_HEAD);
    cr_assert_eq(body(&f, RESP, "HTTP"), 0);
}

Test(http_flow, response_heads)
{
    static const char *ok[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.0 200 OK\nContent-Length: 0\n\n",
        "HTTP/1.1 599 Whatever \t reason\x80\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length:0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        filter_http_flow_t f;
        filter_http_flow_init(&f);
        request(&f, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        size_t hl = 0, n = strlen(ok[i]);
        /* Every proper prefix: NEED_MORE and no change. */
        for (size_t cut = 0; cut < n; cut++) {
            char pre[128];
            memcpy(pre, ok[i], cut);
            pre[cut] = '\0';
            cr_assert_eq(response(&f, pre, &hl), FILTER_HTTP_FLOW_NEED_MORE, "%zu of <%s>", cut,
                         ok[i]);
            cr_assert_eq(hl, 0);
            expect_state(&f, RESP, FILTER_HTTP_FLOW_HEAD);
        }
        cr_assert_eq(response(&f, ok[i], &hl), FILTER_HTTP_FLOW_OK, "<%s>", ok[i]);
        cr_assert_eq(hl, n);
        expect_state(&f, RESP, FILTER_HTTP_FLOW_HEAD);
    }

    struct {
        const char *s;
        filter_http_flow_err_t err;
    } bad[] = {
        {"X", FILTER_HTTP_FLOW_E_STATUS},
        {"HTTP/2", FILTER_HTTP_FLOW_E_STATUS},
        {"HTTP/1.1  200", FILTER_HTTP_FLOW_E_STATUS},
        {"HTTP/1.1 2x", FILTER_HTTP_FLOW_E_STATUS},
        {"\r\nHTTP/1.1 200 OK\r\n\r\n", FILTER_HTTP_FLOW_E_STATUS},
        {"HTTP/1.1 099 x\r\n\r\n", FILTER_HTTP_FLOW_E_STATUS},
        {"HTTP/1.1 600 x\r\n\r\n", FILTER_HTTP_FLOW_E_STATUS},
        {"HTTP/1.1 2000\r\n\r\n", FILTER_HTTP_FLOW_E_STATUS},
        {"HTTP/1.1 200\tOK\r\n\r\n", FILTER_HTTP_FLOW_E_STATUS},
        {"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", FILTER_HTTP_FLOW_E_HEAD},
        {"HTTP/1.1 200 OK\r\nA : b\r\n\r\n", FILTER_HTTP_FLOW_E_HEAD},
        {"HTTP/1.1 200 OK\rX", FILTER_HTTP_FLOW_E_HEAD},
        {"HTTP/1.1 200 OK\r\nA: \x01\r\n\r\n", FILTER_HTTP_FLOW_E_HEAD},
        {"HTTP/1.1 200 OK\r\n\rX", FILTER_HTTP_FLOW_E_HEAD},
        {"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", FILTER_HTTP_FLOW_E_CONTENT_LENGTH},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
         FILTER_HTTP_FLOW_E_LENGTHS_DIFFER},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
         FILTER_HTTP_FLOW_E_TE_AND_LENGTH},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\n",
         FILTER_HTTP_FLOW_E_TE_AND_LENGTH},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        filter_http_flow_t f;
        filter_http_flow_init(&f);
        request(&f, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        size_t hl = 5;
        cr_assert_eq(response(&f, bad[i].s, &hl), FILTER_HTTP_FLOW_BAD, "<%s>", bad[i].s);
        cr_assert_eq(hl, 0);
        cr_assert_eq(filter_http_flow_error(&f, RESP), bad[i].err, "<%s>: %s", bad[i].s,
                     filter_http_flow_reason(filter_http_flow_error(&f, RESP)));
        /* Sticky: the next call is refused too, with the first reason. */
        cr_assert_eq(response(&f, "HTTP/1.1 200 OK\r\n\r\n", &hl), FILTER_HTTP_FLOW_BAD);
        cr_assert_eq(filter_http_flow_error(&f, RESP), bad[i].err);
    }

    /* Framing fields of a body-less answer are not looked at. */
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    request(&f, "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    size_t hl;
    cr_assert_eq(
        response(&f, "HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: y\r\n\r\n", &hl),
        FILTER_HTTP_FLOW_OK);
}

Test(http_flow, response_too_big)
{
    const char *r = "HTTP/1.1 200 OK\r\nA: b\r\n\r\n"; /* 25 bytes */
    for (size_t max = 20; max < 30; max++) {
        filter_http_flow_t f;
        filter_http_flow_init(&f);
        request(&f, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        size_t hl;
        filter_http_flow_result_t got =
            filter_http_flow_response(&f, (const uint8_t *)r, strlen(r), max, &hl);
        if (max >= strlen(r)) {
            cr_assert_eq(got, FILTER_HTTP_FLOW_OK, "max %zu", max);
        } else {
            cr_assert_eq(got, FILTER_HTTP_FLOW_TOO_BIG, "max %zu", max);
            cr_assert_eq(filter_http_flow_error(&f, RESP), FILTER_HTTP_FLOW_E_HEAD_TOO_BIG);
        }
    }
}

Test(http_flow, calls_in_the_wrong_state)
{
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    request(&f, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n");
    cr_assert_eq(request(&f, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), FILTER_HTTP_FLOW_BAD);
    cr_assert_eq(filter_http_flow_error(&f, REQ), FILTER_HTTP_FLOW_E_STATE);
    cr_assert_eq(body(&f, REQ, "abc"), 0);
    cr_assert_eq(filter_http_flow_opaque(&f, REQ), 0);

    filter_http_flow_init(&f);
    request(&f, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    size_t hl;
    cr_assert_eq(response(&f, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", &hl),
                 FILTER_HTTP_FLOW_OK);
    cr_assert_eq(response(&f, "HTTP/1.1 200 OK\r\n\r\n", &hl), FILTER_HTTP_FLOW_BAD);
    cr_assert_eq(filter_http_flow_error(&f, RESP), FILTER_HTTP_FLOW_E_STATE);
    cr_assert_eq(filter_http_flow_body(&f, RESP, NULL, 5), 0);
}

Test(http_flow, reasons)
{
    for (int e = FILTER_HTTP_FLOW_E_NONE; e <= FILTER_HTTP_FLOW_E_STATE; e++) {
        const char *r = filter_http_flow_reason((filter_http_flow_err_t)e);
        cr_assert(r != NULL && strcmp(r, "unknown") != 0, "error %d", e);
        for (int o = FILTER_HTTP_FLOW_E_NONE; o < e; o++)
            cr_assert_str_neq(r, filter_http_flow_reason((filter_http_flow_err_t)o));
    }
    cr_assert_str_eq(filter_http_flow_reason((filter_http_flow_err_t)99), "unknown");
}
