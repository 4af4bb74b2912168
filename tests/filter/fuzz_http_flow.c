/* tests/filter/fuzz_http_flow.c: libFuzzer target for the HTTP/1.1
 * message-boundary tracker.
 *
 * The input is a connection: a flags byte, then records of one header byte
 * (bit 7: the direction, bits 0-6: a length) and that many bytes, which
 * arrive in that order on the client or the server side. The connection is
 * played the way the proxy plays it (request heads found by
 * filter_http_head_parse(), response heads by the tracker, bodies through
 * filter_http_flow_body() or opaque()/passed()), once with each record
 * whole and once byte by byte. Every call works on an exact-size copy of
 * the bytes not yet forwarded, so a read past them trips the sanitizers.
 * It traps when a promise is broken:
 *   - body() takes at most len bytes, all of them in EOF_BODY and RAW, and
 *     stops early only where the body ended or broke;
 *   - passed() takes what opaque() allowed; opaque() is nonzero only in a
 *     body, UINT64_MAX in EOF_BODY and RAW;
 *   - a response head is within len and max_head; NEED_MORE only below
 *     max_head;
 *   - WAIT only on the request side, EOF_BODY only on the response side,
 *     ERROR always with a reason, at most FILTER_HTTP_FLOW_PENDING pending;
 *   - the boundaries, states and errors do not depend on how the bytes were
 *     split, nor on whether bodies went by opaque or byte by byte.
 * Whole inputs are also handed to filter_http_flow_request() and
 * filter_http_flow_response() directly.
 */
#include <stdlib.h>
#include <string.h>

#include "filter/http_flow.h"
#include "filter/http_head.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_MARKS 256

static void fz_check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

typedef struct fz_dir {
    uint8_t *data;
    size_t len, avail, pos;
    size_t marks[FZ_MARKS], nmarks; /* heads and body ends, in order */
} fz_dir_t;

typedef struct fz_conn {
    filter_http_flow_t f;
    fz_dir_t d[2];
    bool opaque;
    size_t max_head;
} fz_conn_t;

static void fz_mark(fz_dir_t *d, size_t at)
{
    if (d->nmarks < FZ_MARKS)
        d->marks[d->nmarks] = at;
    d->nmarks++;
}

static void fz_invariants(const filter_http_flow_t *f)
{
    for (int dir = 0; dir < 2; dir++) {
        filter_http_flow_state_t st = filter_http_flow_state(f, dir);
        filter_http_flow_err_t err = filter_http_flow_error(f, dir);
        fz_check(st >= FILTER_HTTP_FLOW_HEAD && st <= FILTER_HTTP_FLOW_ERROR);
        fz_check((st == FILTER_HTTP_FLOW_ERROR) == (err != FILTER_HTTP_FLOW_E_NONE));
        fz_check(filter_http_flow_reason(err) != NULL);
        if (st == FILTER_HTTP_FLOW_WAIT)
            fz_check(dir == FILTER_HTTP_FLOW_REQ);
        if (st == FILTER_HTTP_FLOW_EOF_BODY)
            fz_check(dir == FILTER_HTTP_FLOW_RESP);
        uint64_t op = filter_http_flow_opaque(f, dir);
        if (st == FILTER_HTTP_FLOW_EOF_BODY || st == FILTER_HTTP_FLOW_RAW)
            fz_check(op == UINT64_MAX);
        else if (st != FILTER_HTTP_FLOW_BODY)
            fz_check(op == 0);
    }
    fz_check(filter_http_flow_pending(f) <= FILTER_HTTP_FLOW_PENDING);
}

/* One step on one direction; false when it cannot move. */
static bool fz_step(fz_conn_t *c, filter_http_flow_dir_t dir)
{
    fz_dir_t *d = &c->d[dir];
    size_t n = d->avail - d->pos;
    if (n == 0)
        return false;
    uint8_t *buf = malloc(n);
    fz_check(buf != NULL);
    memcpy(buf, d->data + d->pos, n);
    filter_http_flow_state_t st = filter_http_flow_state(&c->f, dir);
    size_t took = 0;
    bool moved = false;

    if (st == FILTER_HTTP_FLOW_HEAD && dir == FILTER_HTTP_FLOW_REQ) {
        filter_http_head_t h;
        filter_http_result_t r = filter_http_head_parse(buf, n, c->max_head, &h);
        if (h.head_len > 0) { /* any complete head, decided or not */
            filter_http_flow_result_t fr = filter_http_flow_request(&c->f, buf, h.head_len);
            fz_check(fr == FILTER_HTTP_FLOW_OK || fr == FILTER_HTTP_FLOW_BAD);
            fz_check((fr == FILTER_HTTP_FLOW_BAD) ==
                     (filter_http_flow_state(&c->f, dir) == FILTER_HTTP_FLOW_ERROR));
            if (fr == FILTER_HTTP_FLOW_OK) {
                fz_mark(d, d->pos);
                took = h.head_len;
            }
            moved = true;
        }
        (void)r;
    } else if (st == FILTER_HTTP_FLOW_HEAD) {
        size_t hl = 12345;
        filter_http_flow_result_t fr = filter_http_flow_response(&c->f, buf, n, c->max_head, &hl);
        fz_check(fr >= FILTER_HTTP_FLOW_OK && fr <= FILTER_HTTP_FLOW_BAD);
        if (fr == FILTER_HTTP_FLOW_OK) {
            fz_check(hl > 0 && hl <= n && hl <= c->max_head);
            fz_mark(d, d->pos);
            took = hl;
        } else {
            fz_check(hl == 0);
        }
        if (fr == FILTER_HTTP_FLOW_NEED_MORE)
            fz_check(n < c->max_head && filter_http_flow_state(&c->f, dir) == st);
        else
            moved = true;
    } else if (st == FILTER_HTTP_FLOW_BODY || st == FILTER_HTTP_FLOW_EOF_BODY ||
               st == FILTER_HTTP_FLOW_RAW) {
        uint64_t op = filter_http_flow_opaque(&c->f, dir);
        if (c->opaque && op > 0) {
            uint64_t want = op < n ? op : n;
            fz_check(filter_http_flow_passed(&c->f, dir, want) == want);
            took = (size_t)want;
        } else {
            took = filter_http_flow_body(&c->f, dir, buf, n);
            fz_check(took <= n);
            if (op > 0)
                fz_check(took >= (op < n ? op : n));
            if (st != FILTER_HTTP_FLOW_BODY)
                fz_check(took == n);
            if (took < n) /* the body ended or broke there */
                fz_check(filter_http_flow_state(&c->f, dir) != FILTER_HTTP_FLOW_BODY);
        }
        filter_http_flow_state_t now = filter_http_flow_state(&c->f, dir);
        if (st == FILTER_HTTP_FLOW_BODY && now != st && now != FILTER_HTTP_FLOW_RAW)
            fz_mark(d, d->pos + took);
        moved = took > 0 || now != st;
    }
    free(buf);
    d->pos += took;
    fz_invariants(&c->f);
    return moved;
}

static void fz_run(fz_conn_t *c)
{
    for (;;) {
        bool a = fz_step(c, FILTER_HTTP_FLOW_REQ);
        bool b = fz_step(c, FILTER_HTTP_FLOW_RESP);
        if (!a && !b)
            return;
    }
}

/* Play the records; byte_by_byte delivers each byte on its own. */
static void fz_play(fz_conn_t *c, const uint8_t *data, size_t size, bool byte_by_byte)
{
    size_t i = 1;
    while (i < size) {
        int dir = data[i] >> 7;
        size_t n = data[i] & 0x7f;
        i++;
        if (n > size - i)
            n = size - i;
        fz_dir_t *d = &c->d[dir];
        if (byte_by_byte) {
            for (size_t k = 0; k < n; k++) {
                d->avail++;
                fz_run(c);
            }
        } else {
            d->avail += n;
            fz_run(c);
        }
        i += n;
    }
}

static void fz_same(const fz_conn_t *a, const fz_conn_t *b)
{
    for (int dir = 0; dir < 2; dir++) {
        const fz_dir_t *x = &a->d[dir], *y = &b->d[dir];
        fz_check(x->pos == y->pos && x->nmarks == y->nmarks);
        size_t n = x->nmarks < FZ_MARKS ? x->nmarks : FZ_MARKS;
        fz_check(memcmp(x->marks, y->marks, n * sizeof x->marks[0]) == 0);
        fz_check(filter_http_flow_state(&a->f, dir) == filter_http_flow_state(&b->f, dir));
        fz_check(filter_http_flow_error(&a->f, dir) == filter_http_flow_error(&b->f, dir));
    }
    fz_check(filter_http_flow_pending(&a->f) == filter_http_flow_pending(&b->f));
}

/* The whole input as a request head, and as a response to each kind of
 * request. */
static void fz_direct(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    fz_check(copy != NULL);
    memcpy(copy, data, size);
    filter_http_flow_t f;
    filter_http_flow_init(&f);
    filter_http_flow_result_t r = filter_http_flow_request(&f, copy, size);
    fz_check(r == FILTER_HTTP_FLOW_OK || r == FILTER_HTTP_FLOW_BAD);
    fz_invariants(&f);

    static const char *const reqs[] = {
        "GET / HTTP/1.1\r\n\r\n",
        "HEAD / HTTP/1.1\r\n\r\n",
        "CONNECT a:1 HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nUpgrade: x\r\n\r\n",
    };
    for (size_t k = 0; k < sizeof reqs / sizeof reqs[0]; k++) {
        filter_http_flow_init(&f);
        fz_check(filter_http_flow_request(&f, (const uint8_t *)reqs[k], strlen(reqs[k])) ==
                 FILTER_HTTP_FLOW_OK);
        size_t hl = 1;
        r = filter_http_flow_response(&f, copy, size, size, &hl);
        fz_check(r != FILTER_HTTP_FLOW_NEED_MORE || size == 0);
        if (r == FILTER_HTTP_FLOW_OK) {
            fz_check(hl > 0 && hl <= size);
            size_t rest = size - hl;
            size_t took = filter_http_flow_body(&f, FILTER_HTTP_FLOW_RESP, copy + hl, rest);
            fz_check(took <= rest);
        }
        fz_invariants(&f);
    }
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fz_direct(data, size);

    /* Split the records into the two streams. */
    size_t len[2] = {0, 0};
    for (size_t i = 1; i < size;) {
        size_t n = data[i] & 0x7f;
        int dir = data[i] >> 7;
        i++;
        n = n < size - i ? n : size - i;
        len[dir] += n;
        i += n;
    }
    uint8_t *streams[2];
    for (int dir = 0; dir < 2; dir++) {
        streams[dir] = malloc(len[dir] ? len[dir] : 1);
        fz_check(streams[dir] != NULL);
        len[dir] = 0;
    }
    for (size_t i = 1; i < size;) {
        size_t n = data[i] & 0x7f;
        int dir = data[i] >> 7;
        i++;
        n = n < size - i ? n : size - i;
        memcpy(streams[dir] + len[dir], data + i, n);
        len[dir] += n;
        i += n;
    }

    static const size_t maxes[] = {FILTER_HTTP_MAX_HEAD_DEFAULT, 64, 200, 1000};
    fz_conn_t *runs = calloc(3, sizeof *runs);
    fz_check(runs != NULL);
    for (int r = 0; r < 3; r++) {
        filter_http_flow_init(&runs[r].f);
        for (int dir = 0; dir < 2; dir++) {
            runs[r].d[dir].data = streams[dir];
            runs[r].d[dir].len = len[dir];
        }
        runs[r].max_head = maxes[data[0] & 3];
    }
    runs[0].opaque = false;
    runs[1].opaque = true;
    runs[2].opaque = (data[0] & 4) != 0;
    fz_play(&runs[0], data, size, false);
    fz_play(&runs[1], data, size, false);
    fz_same(&runs[0], &runs[1]);
    if (size <= 2048) {
        fz_play(&runs[2], data, size, true);
        fz_same(&runs[0], &runs[2]);
    }
    free(runs);
    free(streams[0]);
    free(streams[1]);
    return 0;
}
