/* filter/http_flow.c: HTTP/1.1 message boundaries on one connection, both
 * ways (SPEC §2.3; RFC 9112 §6, §7.1).
 *
 * Three parts:
 *   - a head scanner that checks a head's grammar byte by byte and finds its
 *     end (the empty line);
 *   - a field reader that takes the framing out of a whole head:
 *     Content-Length, Transfer-Encoding, Upgrade;
 *   - the body follower: byte counts for Content-Length bodies and chunk
 *     data, and a byte-at-a-time machine for the rest of a chunked body,
 *     its state kept in the caller's struct between calls.
 * Requests queue what their response needs in a ring; responses take from
 * it in order (RFC 9112 §9.3.2).
 */
#include "filter/http_flow.h"

#include <string.h>

#include "filter/cursor.h"
#include "filter/name.h"

/* Where a direction is (filter_http_flow_side_t.phase). WAIT is not a phase:
 * it is HEAD on the request side while the ring says to hold back. */
typedef enum fl_phase {
    FL_HEAD = 0,
    FL_LENGTH,  /* Content-Length body: left bytes to go */
    FL_CHUNKED, /* chunked body: see fl_chunk_t */
    FL_EOF,     /* response body delimited by the close */
    FL_RAW,
    FL_ERROR,
} fl_phase_t;

/* Where in a chunked body (RFC 9112 §7.1):
 *   chunked-body = *chunk last-chunk trailer-section CRLF
 *   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF */
typedef enum fl_chunk {
    FL_CK_SIZE0 = 0,     /* the first hex digit of a chunk-size */
    FL_CK_SIZE,          /* more hex digits, BWS, ';' or CR */
    FL_CK_SIZE_WS,       /* BWS after the size: a ';' must follow */
    FL_CK_EXT,           /* chunk-ext, up to the CR */
    FL_CK_SIZE_LF,       /* the LF that ends the size line */
    FL_CK_DATA,          /* chunk-data: left bytes to go */
    FL_CK_DATA_CR,       /* the CRLF after chunk-data */
    FL_CK_DATA_LF,       /* */
    FL_CK_TRAILER,       /* start of a trailer field line, or of the last CRLF */
    FL_CK_TRAILER_NAME,  /* field-name, up to ':' */
    FL_CK_TRAILER_VALUE, /* field-value, up to the CR */
    FL_CK_TRAILER_LF,    /* the LF that ends a trailer field line */
    FL_CK_END_LF,        /* the LF that ends the body */
    FL_CK_DONE,
} fl_chunk_t;

/* What a pending request needs for its response (RFC 9112 §6.3). */
enum {
    FL_WANTS_HEAD = 1,    /* method HEAD: the response has no body */
    FL_WANTS_CONNECT = 2, /* method CONNECT: a 2xx opens a tunnel */
    FL_WANTS_UPGRADE = 4, /* an Upgrade field: a 101 switches protocols */
};

/* The longest chunk-size: 16 hex digits fill 64 bits. */
#define FL_CHUNK_DIGITS 16

/* ---- small helpers ---- */

static filter_http_flow_side_t *fl_side(filter_http_flow_t *f, filter_http_flow_dir_t dir)
{
    return &f->side[dir == FILTER_HTTP_FLOW_RESP];
}

static const filter_http_flow_side_t *fl_cside(const filter_http_flow_t *f,
                                               filter_http_flow_dir_t dir)
{
    return &f->side[dir == FILTER_HTTP_FLOW_RESP];
}

/* Put a direction in ERROR, keeping the first reason. */
static filter_http_flow_result_t fl_fail(filter_http_flow_side_t *s, filter_http_flow_err_t e)
{
    if (s->phase != FL_ERROR) {
        s->phase = FL_ERROR;
        s->err = (uint8_t)e;
    }
    s->left = 0;
    return FILTER_HTTP_FLOW_BAD;
}

/* RFC 9110 §5.6.2 tchar */
static bool fl_tchar(int c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c > 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A control byte other than HTAB (RFC 9110 §5.5: not allowed in a value). */
static bool fl_ctl(int c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

/* The window without leading and trailing OWS (RFC 9110 §5.6.3). */
static filter_cur_t fl_trim(filter_cur_t w)
{
    size_t lead = 0, n = filter_cur_left(&w);
    while (lead < n && (filter_cur_peek(&w, lead) == ' ' || filter_cur_peek(&w, lead) == '\t'))
        lead++;
    while (n > lead && (filter_cur_peek(&w, n - 1) == ' ' || filter_cur_peek(&w, n - 1) == '\t'))
        n--;
    filter_cur_skip(&w, lead);
    return filter_cur_sub(&w, n - lead);
}

/* 1*tchar */
static bool fl_token(filter_cur_t w)
{
    if (filter_cur_left(&w) == 0)
        return false;
    for (size_t i = 0; filter_cur_peek(&w, i) >= 0; i++)
        if (!fl_tchar(filter_cur_peek(&w, i)))
            return false;
    return true;
}

/* Content-Length = 1*DIGIT (RFC 9110 §8.6), within 64 bits. */
static bool fl_digits(filter_cur_t w, uint64_t *out)
{
    uint64_t v = 0;
    if (filter_cur_left(&w) == 0)
        return false;
    while (filter_cur_left(&w) > 0) {
        int c = filter_cur_u8(&w);
        if (c < '0' || c > '9')
            return false;
        uint64_t d = (uint64_t)(c - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* A comma-separated list (RFC 9110 §5.6.1), one element at a time. */
typedef struct fl_list {
    filter_cur_t rest;
    bool done;
} fl_list_t;

/* The next element, OWS trimmed (possibly empty); false past the last. */
static bool fl_list_next(fl_list_t *l, filter_cur_t *elem)
{
    if (l->done)
        return false;
    size_t n = 0;
    while (filter_cur_peek(&l->rest, n) >= 0 && filter_cur_peek(&l->rest, n) != ',')
        n++;
    *elem = fl_trim(filter_cur_sub(&l->rest, n));
    if (filter_cur_left(&l->rest) == 0)
        l->done = true;
    else
        filter_cur_skip(&l->rest, 1);
    return true;
}

/* ---- the head scanner ---- */

typedef enum fl_scan {
    FL_SC_TEXT,   /* the start line or a field value, up to its line end */
    FL_SC_CR,     /* CR at the end of a line: LF must follow */
    FL_SC_LINE,   /* the start of a field line or of the empty line */
    FL_SC_NAME,   /* a field name, up to ':' */
    FL_SC_END_CR, /* CR on the empty line */
    FL_SC_DONE,
    FL_SC_BAD,
} fl_scan_t;

static fl_scan_t fl_scan_byte(fl_scan_t st, int b)
{
    switch (st) {
    case FL_SC_TEXT:
        if (b == '\r')
            return FL_SC_CR;
        if (b == '\n')
            return FL_SC_LINE; /* RFC 9112 §2.2: a bare LF may end a line */
        return fl_ctl(b) ? FL_SC_BAD : FL_SC_TEXT;
    case FL_SC_CR:
        return b == '\n' ? FL_SC_LINE : FL_SC_BAD;
    case FL_SC_LINE:
        if (b == '\r')
            return FL_SC_END_CR;
        if (b == '\n')
            return FL_SC_DONE;
        /* A space here is obs-fold (RFC 9112 §5.2), refused like other junk. */
        return fl_tchar(b) ? FL_SC_NAME : FL_SC_BAD;
    case FL_SC_NAME:
        if (b == ':')
            return FL_SC_TEXT;
        /* RFC 9112 §5.1: no whitespace between the name and the colon. */
        return fl_tchar(b) ? FL_SC_NAME : FL_SC_BAD;
    case FL_SC_END_CR:
        return b == '\n' ? FL_SC_DONE : FL_SC_BAD;
    case FL_SC_DONE:
    case FL_SC_BAD:
        break;
    }
    return FL_SC_BAD;
}

/* Find the end of the head at buf within max bytes: OK with *end just past
 * the empty line, NEED_MORE, TOO_BIG or BAD (grammar). */
static filter_http_flow_result_t fl_scan(const uint8_t *buf, size_t len, size_t max, size_t *end)
{
    filter_cur_t c = filter_cur_make(buf, len < max ? len : max);
    fl_scan_t st = FL_SC_TEXT;
    while (st != FL_SC_DONE) {
        int b = filter_cur_peek(&c, 0);
        if (b < 0)
            return len >= max ? FILTER_HTTP_FLOW_TOO_BIG : FILTER_HTTP_FLOW_NEED_MORE;
        filter_cur_skip(&c, 1);
        st = fl_scan_byte(st, b);
        if (st == FL_SC_BAD)
            return FILTER_HTTP_FLOW_BAD;
    }
    *end = filter_cur_pos(&c);
    return FILTER_HTTP_FLOW_OK;
}

/* The next line of a scanned head, without its CRLF or LF. */
static filter_cur_t fl_line(filter_cur_t *c)
{
    size_t n = 0;
    while (filter_cur_peek(c, n) >= 0 && filter_cur_peek(c, n) != '\n')
        n++;
    size_t text = n > 0 && filter_cur_peek(c, n - 1) == '\r' ? n - 1 : n;
    filter_cur_t line = filter_cur_sub(c, text);
    filter_cur_skip(c, n - text + 1);
    return line;
}

/* ---- the field reader ---- */

/* What a head's fields say about framing. */
typedef struct fl_framing {
    bool length;          /* a Content-Length field */
    bool length_bad;      /* ... not 1*DIGIT or over 64 bits */
    bool lengths_differ;  /* ... values that differ */
    uint64_t length_val;  /* ... the value */
    unsigned te_fields;   /* Transfer-Encoding fields */
    bool te_bad;          /* ... an element that is not a plain token */
    bool te_chunked;      /* ... the last coding is chunked */
    bool te_chunked_more; /* ... chunked before the last */
    bool upgrade;         /* a non-empty Upgrade field (RFC 9110 §7.8) */
} fl_framing_t;

static void fl_content_length(fl_framing_t *fr, filter_cur_t value)
{
    fl_list_t l = {value, false};
    filter_cur_t e;
    while (fl_list_next(&l, &e)) {
        uint64_t v = 0;
        if (!fl_digits(e, &v)) {
            fr->length_bad = true;
        } else if (fr->length && v != fr->length_val) {
            fr->lengths_differ = true;
        } else {
            fr->length_val = v;
        }
        fr->length = true;
    }
}

static void fl_transfer_encoding(fl_framing_t *fr, filter_cur_t value)
{
    fl_list_t l = {value, false};
    filter_cur_t e;
    fr->te_fields++;
    while (fl_list_next(&l, &e)) {
        /* Only plain codings: a parameter or an empty element is refused
         * rather than read one way here and another by the server. */
        if (!fl_token(e))
            fr->te_bad = true;
        if (fr->te_chunked)
            fr->te_chunked_more = true;
        fr->te_chunked = filter_cur_equals_lower(e, "chunked");
    }
}

/* Read the fields of a scanned head, c placed after its start line. */
static void fl_fields(filter_cur_t c, fl_framing_t *fr)
{
    memset(fr, 0, sizeof *fr);
    for (;;) {
        filter_cur_t line = fl_line(&c);
        if (!filter_cur_ok(&c) || filter_cur_left(&line) == 0)
            return;
        size_t colon = 0;
        while (filter_cur_peek(&line, colon) >= 0 && filter_cur_peek(&line, colon) != ':')
            colon++;
        filter_cur_t name = filter_cur_sub(&line, colon);
        filter_cur_skip(&line, 1);
        filter_cur_t value = fl_trim(line);
        if (filter_cur_equals_lower(name, "content-length"))
            fl_content_length(fr, value);
        else if (filter_cur_equals_lower(name, "transfer-encoding"))
            fl_transfer_encoding(fr, value);
        else if (filter_cur_equals_lower(name, "upgrade") && filter_cur_left(&value) > 0)
            fr->upgrade = true;
    }
}

/* ---- the pending ring ---- */

static uint8_t fl_newest(const filter_http_flow_t *f)
{
    return f->pending[(f->first + f->count - 1) % FILTER_HTTP_FLOW_PENDING];
}

/* The request direction must hold back at a head boundary. */
static bool fl_must_wait(const filter_http_flow_t *f)
{
    if (f->count >= FILTER_HTTP_FLOW_PENDING)
        return true;
    return f->count > 0 && (fl_newest(f) & (FL_WANTS_CONNECT | FL_WANTS_UPGRADE)) != 0;
}

/* No more HTTP either way (RFC 9110 §7.8, §9.3.6). */
static void fl_go_raw(filter_http_flow_t *f)
{
    for (size_t i = 0; i < 2; i++) {
        if (f->side[i].phase != FL_ERROR) {
            f->side[i].phase = FL_RAW;
            f->side[i].left = 0;
        }
    }
}

/* ---- bodies ---- */

static void fl_body_end(filter_http_flow_side_t *s)
{
    s->phase = FL_HEAD;
    s->chunk = FL_CK_SIZE0;
    s->digits = 0;
    s->left = 0;
}

/* Start the body a head announced: n bytes, chunked, or none. */
static void fl_body_start(filter_http_flow_side_t *s, bool chunked, uint64_t n)
{
    fl_body_end(s);
    if (chunked)
        s->phase = FL_CHUNKED;
    else if (n > 0) {
        s->phase = FL_LENGTH;
        s->left = n;
    }
}

/* One byte of a chunk-size (FL_CK_SIZE0, FL_CK_SIZE): a hex digit, or what
 * ends the size. */
static filter_http_flow_err_t fl_chunk_size_byte(filter_http_flow_side_t *s, int b)
{
    int h = filter_hex_value(b);
    if (h >= 0) {
        if (s->digits >= FL_CHUNK_DIGITS)
            return FILTER_HTTP_FLOW_E_CHUNK_TOO_BIG;
        s->left = s->left << 4 | (uint64_t)h;
        s->digits++;
        s->chunk = FL_CK_SIZE;
    } else if (s->chunk == FL_CK_SIZE0) {
        return FILTER_HTTP_FLOW_E_CHUNK_SIZE;
    } else if (b == ';') {
        s->chunk = FL_CK_EXT;
    } else if (b == ' ' || b == '\t') {
        s->chunk = FL_CK_SIZE_WS;
    } else if (b == '\r') {
        s->chunk = FL_CK_SIZE_LF;
    } else {
        return FILTER_HTTP_FLOW_E_CHUNK_SIZE;
    }
    return FILTER_HTTP_FLOW_E_NONE;
}

/* One byte of the trailer section (after the last chunk). */
static filter_http_flow_err_t fl_chunk_trailer_byte(filter_http_flow_side_t *s, int b)
{
    switch ((fl_chunk_t)s->chunk) {
    case FL_CK_TRAILER:
        if (b == '\r')
            s->chunk = FL_CK_END_LF;
        else if (fl_tchar(b))
            s->chunk = FL_CK_TRAILER_NAME;
        else
            return FILTER_HTTP_FLOW_E_TRAILER;
        return FILTER_HTTP_FLOW_E_NONE;
    case FL_CK_TRAILER_NAME:
        if (b == ':')
            s->chunk = FL_CK_TRAILER_VALUE;
        else if (!fl_tchar(b))
            return FILTER_HTTP_FLOW_E_TRAILER;
        return FILTER_HTTP_FLOW_E_NONE;
    case FL_CK_TRAILER_VALUE:
        if (b == '\r')
            s->chunk = FL_CK_TRAILER_LF;
        else if (fl_ctl(b))
            return FILTER_HTTP_FLOW_E_TRAILER;
        return FILTER_HTTP_FLOW_E_NONE;
    case FL_CK_TRAILER_LF:
    case FL_CK_END_LF:
        if (b != '\n')
            return FILTER_HTTP_FLOW_E_TRAILER;
        s->chunk = s->chunk == FL_CK_TRAILER_LF ? FL_CK_TRAILER : FL_CK_DONE;
        return FILTER_HTTP_FLOW_E_NONE;
    default:
        return FILTER_HTTP_FLOW_E_STATE;
    }
}

/* One byte of a chunked body outside chunk-data; E_NONE or why it is wrong. */
static filter_http_flow_err_t fl_chunk_byte(filter_http_flow_side_t *s, int b)
{
    switch ((fl_chunk_t)s->chunk) {
    case FL_CK_SIZE0:
    case FL_CK_SIZE:
        return fl_chunk_size_byte(s, b);
    case FL_CK_SIZE_WS: /* chunk-ext = *( BWS ";" ... ) */
        if (b == ';')
            s->chunk = FL_CK_EXT;
        else if (b != ' ' && b != '\t')
            return FILTER_HTTP_FLOW_E_CHUNK_SIZE;
        return FILTER_HTTP_FLOW_E_NONE;
    case FL_CK_EXT:
        if (b == '\r')
            s->chunk = FL_CK_SIZE_LF;
        else if (fl_ctl(b))
            return FILTER_HTTP_FLOW_E_CHUNK_SIZE;
        return FILTER_HTTP_FLOW_E_NONE;
    case FL_CK_SIZE_LF:
        if (b != '\n')
            return FILTER_HTTP_FLOW_E_CHUNK_SIZE;
        s->digits = 0;
        s->chunk = s->left > 0 ? FL_CK_DATA : FL_CK_TRAILER; /* last-chunk: size 0 */
        return FILTER_HTTP_FLOW_E_NONE;
    case FL_CK_DATA_CR:
    case FL_CK_DATA_LF:
        if (b != (s->chunk == FL_CK_DATA_CR ? '\r' : '\n'))
            return FILTER_HTTP_FLOW_E_CHUNK_END;
        s->chunk = s->chunk == FL_CK_DATA_CR ? FL_CK_DATA_LF : FL_CK_SIZE0;
        return FILTER_HTTP_FLOW_E_NONE;
    case FL_CK_DATA:
    case FL_CK_DONE:
        return FILTER_HTTP_FLOW_E_STATE;
    default:
        return fl_chunk_trailer_byte(s, b);
    }
}

/* Follow a chunked body through the bytes of c; returns how many it took. */
static size_t fl_chunked(filter_http_flow_side_t *s, filter_cur_t c)
{
    while (s->phase == FL_CHUNKED && filter_cur_left(&c) > 0) {
        if (s->chunk == FL_CK_DATA) {
            size_t take = filter_cur_left(&c);
            if (take > s->left)
                take = (size_t)s->left;
            filter_cur_skip(&c, take);
            s->left -= take;
            if (s->left == 0)
                s->chunk = FL_CK_DATA_CR;
            continue;
        }
        filter_http_flow_err_t e = fl_chunk_byte(s, filter_cur_peek(&c, 0));
        if (e != FILTER_HTTP_FLOW_E_NONE) {
            fl_fail(s, e); /* the bad byte is not part of the body */
            break;
        }
        filter_cur_skip(&c, 1);
        if (s->chunk == FL_CK_DONE)
            fl_body_end(s);
    }
    return filter_cur_pos(&c);
}

/* ---- the API ---- */

void filter_http_flow_init(filter_http_flow_t *f)
{
    memset(f, 0, sizeof *f);
}

filter_http_flow_state_t filter_http_flow_state(const filter_http_flow_t *f,
                                                filter_http_flow_dir_t dir)
{
    switch ((fl_phase_t)fl_cside(f, dir)->phase) {
    case FL_HEAD:
        if (dir == FILTER_HTTP_FLOW_REQ && fl_must_wait(f))
            return FILTER_HTTP_FLOW_WAIT;
        return FILTER_HTTP_FLOW_HEAD;
    case FL_LENGTH:
    case FL_CHUNKED:
        return FILTER_HTTP_FLOW_BODY;
    case FL_EOF:
        return FILTER_HTTP_FLOW_EOF_BODY;
    case FL_RAW:
        return FILTER_HTTP_FLOW_RAW;
    case FL_ERROR:
        break;
    }
    return FILTER_HTTP_FLOW_ERROR;
}

filter_http_flow_err_t filter_http_flow_error(const filter_http_flow_t *f,
                                              filter_http_flow_dir_t dir)
{
    const filter_http_flow_side_t *s = fl_cside(f, dir);
    return s->phase == FL_ERROR ? (filter_http_flow_err_t)s->err : FILTER_HTTP_FLOW_E_NONE;
}

const char *filter_http_flow_reason(filter_http_flow_err_t e)
{
    switch (e) {
    case FILTER_HTTP_FLOW_E_NONE:
        return "none";
    case FILTER_HTTP_FLOW_E_HEAD:
        return "bad-head";
    case FILTER_HTTP_FLOW_E_HEAD_TOO_BIG:
        return "head-too-big";
    case FILTER_HTTP_FLOW_E_STATUS:
        return "bad-status";
    case FILTER_HTTP_FLOW_E_CONTENT_LENGTH:
        return "bad-content-length";
    case FILTER_HTTP_FLOW_E_LENGTHS_DIFFER:
        return "content-lengths-differ";
    case FILTER_HTTP_FLOW_E_TE_AND_LENGTH:
        return "te-and-content-length";
    case FILTER_HTTP_FLOW_E_TRANSFER_CODING:
        return "bad-transfer-encoding";
    case FILTER_HTTP_FLOW_E_CHUNK_SIZE:
        return "bad-chunk-size";
    case FILTER_HTTP_FLOW_E_CHUNK_TOO_BIG:
        return "chunk-too-big";
    case FILTER_HTTP_FLOW_E_CHUNK_END:
        return "bad-chunk-end";
    case FILTER_HTTP_FLOW_E_TRAILER:
        return "bad-trailer";
    case FILTER_HTTP_FLOW_E_UNREQUESTED:
        return "unrequested-response";
    case FILTER_HTTP_FLOW_E_SWITCH:
        return "unrequested-switch";
    case FILTER_HTTP_FLOW_E_STATE:
        return "wrong-state";
    }
    return "unknown";
}

unsigned filter_http_flow_pending(const filter_http_flow_t *f)
{
    return f->count;
}

/* The bytes of w, as far as they go, have the shape: '#' a digit, any
 * other byte itself. */
static bool fl_shape(filter_cur_t w, const char *shape)
{
    for (size_t i = 0; shape[i] != '\0' && filter_cur_peek(&w, i) >= 0; i++) {
        int b = filter_cur_peek(&w, i);
        if (shape[i] == '#' ? (b < '0' || b > '9') : b != shape[i])
            return false;
    }
    return true;
}

/* The first n bytes of w are the literal, case-sensitively (methods are,
 * RFC 9110 §9.1). */
static bool fl_word(filter_cur_t w, size_t n, const char *lit)
{
    if (n != strlen(lit))
        return false;
    for (size_t i = 0; i < n; i++)
        if (filter_cur_peek(&w, i) != lit[i])
            return false;
    return true;
}

/* The request line `method SP target SP HTTP/1.d` (RFC 9112 §3): what the
 * method means for the response, and whether the version is HTTP/1.0. */
static bool fl_request_line(filter_cur_t line, uint8_t *wants, bool *http10)
{
    size_t len = filter_cur_left(&line), n = 0;
    while (fl_tchar(filter_cur_peek(&line, n)))
        n++;
    if (n == 0 || len < n + 11 || filter_cur_peek(&line, n) != ' ' ||
        filter_cur_peek(&line, len - 9) != ' ')
        return false;
    *wants = 0;
    if (fl_word(line, n, "HEAD"))
        *wants = FL_WANTS_HEAD;
    else if (fl_word(line, n, "CONNECT"))
        *wants = FL_WANTS_CONNECT;
    filter_cur_skip(&line, len - 8);
    if (!fl_shape(line, "HTTP/1.#"))
        return false;
    *http10 = filter_cur_peek(&line, 7) == '0';
    return true;
}

filter_http_flow_result_t filter_http_flow_request(filter_http_flow_t *f, const uint8_t *head,
                                                   size_t head_len)
{
    filter_http_flow_side_t *s = fl_side(f, FILTER_HTTP_FLOW_REQ);
    if (filter_http_flow_state(f, FILTER_HTTP_FLOW_REQ) != FILTER_HTTP_FLOW_HEAD)
        return fl_fail(s, FILTER_HTTP_FLOW_E_STATE);
    if (head == NULL)
        head_len = 0;

    size_t end = 0;
    if (fl_scan(head, head_len, head_len, &end) != FILTER_HTTP_FLOW_OK || end != head_len)
        return fl_fail(s, FILTER_HTTP_FLOW_E_HEAD);
    filter_cur_t c = filter_cur_make(head, head_len);
    uint8_t wants = 0;
    bool http10 = false;
    if (!fl_request_line(fl_line(&c), &wants, &http10))
        return fl_fail(s, FILTER_HTTP_FLOW_E_HEAD);
    fl_framing_t fr;
    fl_fields(c, &fr);

    /* RFC 9112 §6.1, §6.3 rules 3-6, §11.2. */
    bool te = fr.te_fields > 0;
    if (te && fr.length)
        return fl_fail(s, FILTER_HTTP_FLOW_E_TE_AND_LENGTH);
    if (fr.length_bad)
        return fl_fail(s, FILTER_HTTP_FLOW_E_CONTENT_LENGTH);
    if (fr.lengths_differ)
        return fl_fail(s, FILTER_HTTP_FLOW_E_LENGTHS_DIFFER);
    if (te && (fr.te_fields > 1 || fr.te_bad || !fr.te_chunked || fr.te_chunked_more || http10))
        return fl_fail(s, FILTER_HTTP_FLOW_E_TRANSFER_CODING);

    if (fr.upgrade)
        wants |= FL_WANTS_UPGRADE;
    f->pending[(f->first + f->count) % FILTER_HTTP_FLOW_PENDING] = wants;
    f->count++;
    fl_body_start(s, te, fr.length_val);
    return FILTER_HTTP_FLOW_OK;
}

/* The status line `HTTP/1.d SP DDD`, as far as it has come. */
static const char fl_status_shape[] = "HTTP/1.# ###";

/* The status code of a whole status line (RFC 9112 §4), or -1. */
static int fl_status_line(filter_cur_t line, bool *http10)
{
    size_t n = sizeof fl_status_shape - 1;
    if (filter_cur_left(&line) < n || !fl_shape(line, fl_status_shape))
        return -1;
    if (filter_cur_left(&line) > n && filter_cur_peek(&line, n) != ' ')
        return -1;
    *http10 = filter_cur_peek(&line, 7) == '0';
    int code = 0;
    for (size_t i = 9; i < n; i++)
        code = code * 10 + (filter_cur_peek(&line, i) - '0');
    return code >= 100 && code <= 599 ? code : -1;
}

filter_http_flow_result_t filter_http_flow_response(filter_http_flow_t *f, const uint8_t *buf,
                                                    size_t len, size_t max_head, size_t *head_len)
{
    filter_http_flow_side_t *s = fl_side(f, FILTER_HTTP_FLOW_RESP);
    *head_len = 0;
    if (s->phase != FL_HEAD)
        return fl_fail(s, FILTER_HTTP_FLOW_E_STATE);
    if (buf == NULL)
        len = 0;
    if (len == 0)
        return FILTER_HTTP_FLOW_NEED_MORE;
    if (f->count == 0)
        return fl_fail(s, FILTER_HTTP_FLOW_E_UNREQUESTED);
    if (!fl_shape(filter_cur_make(buf, len < max_head ? len : max_head), fl_status_shape))
        return fl_fail(s, FILTER_HTTP_FLOW_E_STATUS);

    size_t end = 0;
    filter_http_flow_result_t r = fl_scan(buf, len, max_head, &end);
    if (r == FILTER_HTTP_FLOW_NEED_MORE)
        return r;
    if (r == FILTER_HTTP_FLOW_TOO_BIG) {
        fl_fail(s, FILTER_HTTP_FLOW_E_HEAD_TOO_BIG);
        return r;
    }
    if (r != FILTER_HTTP_FLOW_OK)
        return fl_fail(s, FILTER_HTTP_FLOW_E_HEAD);
    filter_cur_t c = filter_cur_make(buf, end);
    bool http10 = false;
    int code = fl_status_line(fl_line(&c), &http10);
    if (code < 0)
        return fl_fail(s, FILTER_HTTP_FLOW_E_STATUS);
    fl_framing_t fr;
    fl_fields(c, &fr);

    uint8_t wants = f->pending[f->first];
    if (code == 101) {
        /* RFC 9110 §15.2.2: only an answer to an Upgrade request. */
        if (!(wants & FL_WANTS_UPGRADE))
            return fl_fail(s, FILTER_HTTP_FLOW_E_SWITCH);
        f->first = (uint8_t)((f->first + 1) % FILTER_HTTP_FLOW_PENDING);
        f->count--;
        fl_go_raw(f);
        *head_len = end;
        return FILTER_HTTP_FLOW_OK;
    }
    if (code < 200) { /* interim: the request still waits for its answer */
        *head_len = end;
        return FILTER_HTTP_FLOW_OK;
    }

    /* RFC 9112 §6.3, in its order. */
    bool te = fr.te_fields > 0;
    bool raw = (wants & FL_WANTS_CONNECT) && code < 300;
    bool no_body = (wants & FL_WANTS_HEAD) || code == 204 || code == 304;
    if (!raw && !no_body) {
        if (te && fr.length)
            return fl_fail(s, FILTER_HTTP_FLOW_E_TE_AND_LENGTH);
        if (!te && fr.length_bad)
            return fl_fail(s, FILTER_HTTP_FLOW_E_CONTENT_LENGTH);
        if (!te && fr.lengths_differ)
            return fl_fail(s, FILTER_HTTP_FLOW_E_LENGTHS_DIFFER);
    }
    f->first = (uint8_t)((f->first + 1) % FILTER_HTTP_FLOW_PENDING);
    f->count--;
    *head_len = end;
    if (raw)
        fl_go_raw(f);
    else if (no_body)
        fl_body_start(s, false, 0);
    else if (te && (!fr.te_chunked || http10))
        s->phase = FL_EOF; /* RFC 9112 §6.3 rule 4, §6.1 */
    else if (te || fr.length)
        fl_body_start(s, te, fr.length_val);
    else
        s->phase = FL_EOF; /* rule 8 */
    return FILTER_HTTP_FLOW_OK;
}

size_t filter_http_flow_body(filter_http_flow_t *f, filter_http_flow_dir_t dir, const uint8_t *buf,
                             size_t len)
{
    filter_http_flow_side_t *s = fl_side(f, dir);
    if (buf == NULL)
        len = 0;
    switch ((fl_phase_t)s->phase) {
    case FL_EOF:
    case FL_RAW:
        return len;
    case FL_LENGTH:
        return (size_t)filter_http_flow_passed(f, dir, len);
    case FL_CHUNKED:
        return fl_chunked(s, filter_cur_make(buf, len));
    case FL_HEAD:
    case FL_ERROR:
        break;
    }
    return 0;
}

uint64_t filter_http_flow_opaque(const filter_http_flow_t *f, filter_http_flow_dir_t dir)
{
    const filter_http_flow_side_t *s = fl_cside(f, dir);
    switch ((fl_phase_t)s->phase) {
    case FL_EOF:
    case FL_RAW:
        return UINT64_MAX;
    case FL_LENGTH:
        return s->left;
    case FL_CHUNKED:
        return s->chunk == FL_CK_DATA ? s->left : 0;
    case FL_HEAD:
    case FL_ERROR:
        break;
    }
    return 0;
}

uint64_t filter_http_flow_passed(filter_http_flow_t *f, filter_http_flow_dir_t dir, uint64_t n)
{
    filter_http_flow_side_t *s = fl_side(f, dir);
    uint64_t can = filter_http_flow_opaque(f, dir);
    if (n > can)
        n = can;
    if (n == 0)
        return 0;
    if (s->phase == FL_LENGTH || s->phase == FL_CHUNKED) {
        s->left -= n;
        if (s->left == 0 && s->phase == FL_LENGTH)
            fl_body_end(s);
        else if (s->left == 0)
            s->chunk = FL_CK_DATA_CR;
    }
    return n;
}
