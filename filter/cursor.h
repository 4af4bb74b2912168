/* filter/cursor.h: a bounds-checked read cursor over untrusted bytes.
 *
 * Every parser of guest or upstream bytes (DNS, TLS ClientHello, HTTP head)
 * reads through this cursor and never does pointer arithmetic on the input
 * itself. A read past the end sets a sticky error and returns zero, so a
 * parser can do a run of reads and check filter_cur_ok() once (the same idea
 * as knot-dns's wire_ctx and c-ares's ares_buf_t). The error keeps the kind
 * of the first failure, for fuzz triage and tests: the cursor itself only
 * sets FILTER_CUR_TRUNCATED; a parser that finds the bytes wrong
 * (FILTER_CUR_MALFORMED) or past one of its limits (FILTER_CUR_OVERLIMIT)
 * says so with filter_cur_fail(). filter/writer.h is the writing twin.
 *
 * The cursor never owns the bytes; the caller keeps them alive.
 */
#ifndef MOAT_FILTER_CURSOR_H
#define MOAT_FILTER_CURSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum filter_cur_err {
    FILTER_CUR_OK = 0,
    FILTER_CUR_TRUNCATED = 1, /* a read went past the window */
    FILTER_CUR_MALFORMED = 2, /* the parser found the bytes wrong */
    FILTER_CUR_OVERLIMIT = 3, /* the parser found them past one of its limits */
} filter_cur_err_t;

typedef struct filter_cur {
    const uint8_t *base;  /* first byte of the window */
    size_t len;           /* window length */
    size_t off;           /* next byte to read */
    filter_cur_err_t err; /* sticky: the first failure */
} filter_cur_t;

/* Start a cursor over len bytes at p. */
static inline filter_cur_t filter_cur_make(const uint8_t *p, size_t len)
{
    filter_cur_t c = {p, len, 0, FILTER_CUR_OK};
    return c;
}

/* The first failure, FILTER_CUR_OK when none. */
static inline filter_cur_err_t filter_cur_error(const filter_cur_t *c)
{
    return c->err;
}

/* Set the failure kind unless one is set already; every later read fails. */
static inline void filter_cur_fail(filter_cur_t *c, filter_cur_err_t kind)
{
    if (c->err == FILTER_CUR_OK)
        c->err = kind;
}

/* Bytes left to read (0 once an error is set). */
static inline size_t filter_cur_left(const filter_cur_t *c)
{
    return c->err ? 0 : c->len - c->off;
}

/* True while no read has gone past the end. */
static inline bool filter_cur_ok(const filter_cur_t *c)
{
    return !c->err;
}

/* Current offset from the start of the window. */
static inline size_t filter_cur_pos(const filter_cur_t *c)
{
    return c->off;
}

/* True when n more bytes can be read; sets FILTER_CUR_TRUNCATED if not. */
static inline bool filter_cur_need(filter_cur_t *c, size_t n)
{
    if (c->err || c->len - c->off < n) {
        filter_cur_fail(c, FILTER_CUR_TRUNCATED);
        return false;
    }
    return true;
}

static inline uint8_t filter_cur_u8(filter_cur_t *c)
{
    if (!filter_cur_need(c, 1))
        return 0;
    return c->base[c->off++];
}

/* Network byte order. */
static inline uint16_t filter_cur_u16(filter_cur_t *c)
{
    if (!filter_cur_need(c, 2))
        return 0;
    uint16_t v = (uint16_t)((uint16_t)c->base[c->off] << 8 | c->base[c->off + 1]);
    c->off += 2;
    return v;
}

static inline uint32_t filter_cur_u24(filter_cur_t *c)
{
    if (!filter_cur_need(c, 3))
        return 0;
    uint32_t v =
        (uint32_t)c->base[c->off] << 16 | (uint32_t)c->base[c->off + 1] << 8 | c->base[c->off + 2];
    c->off += 3;
    return v;
}

static inline uint32_t filter_cur_u32(filter_cur_t *c)
{
    if (!filter_cur_need(c, 4))
        return 0;
    uint32_t v = (uint32_t)c->base[c->off] << 24 | (uint32_t)c->base[c->off + 1] << 16 |
                 (uint32_t)c->base[c->off + 2] << 8 | c->base[c->off + 3];
    c->off += 4;
    return v;
}

/* Skip n bytes. */
static inline void filter_cur_skip(filter_cur_t *c, size_t n)
{
    if (filter_cur_need(c, n))
        c->off += n;
}

/* Take n bytes: returns a pointer to them, or NULL (and sets the error). */
static inline const uint8_t *filter_cur_take(filter_cur_t *c, size_t n)
{
    if (!filter_cur_need(c, n))
        return NULL;
    const uint8_t *p = c->base + c->off;
    c->off += n;
    return p;
}

/* Take the next n bytes as a cursor of their own (for length-prefixed
 * vectors). On short input the returned cursor is already in error. */
static inline filter_cur_t filter_cur_sub(filter_cur_t *c, size_t n)
{
    const uint8_t *p = filter_cur_take(c, n);
    filter_cur_t s = {p, p ? n : 0, 0, p ? FILTER_CUR_OK : FILTER_CUR_TRUNCATED};
    return s;
}

/* Look at the byte at offset i from the current position without moving;
 * returns -1 when it is past the end (does not set the error). */
static inline int filter_cur_peek(const filter_cur_t *c, size_t i)
{
    if (c->err || c->len - c->off <= i)
        return -1;
    return c->base[c->off + i];
}

/* A cursor over bytes [start, start+n) of buf (in error when they are not
 * all inside it). */
static inline filter_cur_t filter_cur_window(const uint8_t *buf, size_t len, size_t start, size_t n)
{
    filter_cur_t c = filter_cur_make(buf, len);
    filter_cur_skip(&c, start);
    return filter_cur_sub(&c, n);
}

/* ASCII lowercase of a byte; other values as they are. */
static inline int filter_ascii_lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* True when the bytes of c are exactly lower (a lowercase literal), ASCII
 * case aside. */
static inline bool filter_cur_equals_lower(filter_cur_t c, const char *lower)
{
    size_t n = strlen(lower);
    if (filter_cur_left(&c) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (filter_ascii_lower(filter_cur_peek(&c, i)) != lower[i])
            return false;
    return true;
}

#endif
