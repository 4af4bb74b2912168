/* filter/writer.h: a bounds-checked write cursor over a caller's buffer, the
 * twin of filter/cursor.h for the wire moat builds itself (DNS answers, the
 * SvcParams and EDNS options it rewrites).
 *
 * A writer appends at its position and never past cap; it can also patch
 * bytes it has already written (DNS counts, lengths and TTLs known only
 * later), cut a range out of them, or rewind to an earlier position. The
 * first failure is kept, sticky, with its kind; every later call does
 * nothing, so a builder writes a whole message and checks filter_wr_ok()
 * once. The kinds tell a fuzz crash or a failed test what went wrong:
 *   FILTER_WR_NOSPACE  an append did not fit in cap (an answer to truncate);
 *   FILTER_WR_BADOFF   a patch, cut or rewind named bytes not yet written
 *                      (always a bug in the builder, never the input's fault).
 * The writer never owns the buffer. Everything is static inline: the DNS
 * answer path calls it per byte field.
 */
#ifndef MOAT_FILTER_WRITER_H
#define MOAT_FILTER_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum filter_wr_err {
    FILTER_WR_OK = 0,
    FILTER_WR_NOSPACE = 1, /* an append went past cap */
    FILTER_WR_BADOFF = 2,  /* a patch, cut or rewind outside the written bytes */
} filter_wr_err_t;

typedef struct filter_wr {
    uint8_t *base;       /* first byte of the buffer */
    size_t cap;          /* buffer size */
    size_t off;          /* bytes written so far: the next append goes here */
    filter_wr_err_t err; /* sticky: the first failure */
} filter_wr_t;

/* Start an empty writer over cap bytes at p. */
static inline filter_wr_t filter_wr_make(uint8_t *p, size_t cap)
{
    filter_wr_t w = {p, cap, 0, FILTER_WR_OK};
    return w;
}

/* Start a writer over a buffer whose first len bytes are already written
 * (to edit a message in place); len > cap gives a writer in BADOFF. */
static inline filter_wr_t filter_wr_resume(uint8_t *p, size_t cap, size_t len)
{
    filter_wr_t w = {p, cap, len, FILTER_WR_OK};
    if (len > cap)
        w = (filter_wr_t){p, 0, 0, FILTER_WR_BADOFF};
    return w;
}

/* True while nothing has failed. */
static inline bool filter_wr_ok(const filter_wr_t *w)
{
    return w->err == FILTER_WR_OK;
}

/* The first failure, FILTER_WR_OK when none. */
static inline filter_wr_err_t filter_wr_error(const filter_wr_t *w)
{
    return w->err;
}

/* Bytes written so far (the message length). */
static inline size_t filter_wr_pos(const filter_wr_t *w)
{
    return w->off;
}

/* Room left for appends (0 once a failure is set). */
static inline size_t filter_wr_left(const filter_wr_t *w)
{
    return w->cap - w->off;
}

/* Set the failure kind unless one is set already, and close the writer to
 * appends (cap := the position, so the append check is one comparison);
 * returns false. */
static inline bool filter_wr_fail(filter_wr_t *w, filter_wr_err_t kind)
{
    if (w->err == FILTER_WR_OK)
        w->err = kind;
    w->cap = w->off;
    return false;
}

/* Room for an append of n bytes (n > 0 fails once a failure is set). */
static inline bool filter_wr_room(filter_wr_t *w, size_t n)
{
    if (w->cap - w->off < n)
        return filter_wr_fail(w, FILTER_WR_NOSPACE);
    return true;
}

/* True when [at, at + n) lies inside the written bytes and nothing failed. */
static inline bool filter_wr_written(filter_wr_t *w, size_t at, size_t n)
{
    if (w->err)
        return false;
    if (at > w->off || w->off - at < n)
        return filter_wr_fail(w, FILTER_WR_BADOFF);
    return true;
}

/* Store v big-endian at p (the caller has checked the bounds). */
static inline void filter_wr_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void filter_wr_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void filter_wr_u8(filter_wr_t *w, uint8_t v)
{
    if (filter_wr_room(w, 1))
        w->base[w->off++] = v;
}

/* Network byte order. */
static inline void filter_wr_u16(filter_wr_t *w, uint16_t v)
{
    if (!filter_wr_room(w, 2))
        return;
    filter_wr_be16(w->base + w->off, v);
    w->off += 2;
}

static inline void filter_wr_u32(filter_wr_t *w, uint32_t v)
{
    if (!filter_wr_room(w, 4))
        return;
    filter_wr_be32(w->base + w->off, v);
    w->off += 4;
}

/* Append n bytes from src (src may be NULL when n is 0). */
static inline void filter_wr_bytes(filter_wr_t *w, const void *src, size_t n)
{
    if (!filter_wr_room(w, n) || n == 0)
        return;
    memcpy(w->base + w->off, src, n);
    w->off += n;
}

/* Append n zero bytes to fill in later with the patch calls; returns their
 * offset (meaningless once a failure is set). */
static inline size_t filter_wr_reserve(filter_wr_t *w, size_t n)
{
    size_t at = w->off;
    if (filter_wr_room(w, n)) {
        memset(w->base + at, 0, n);
        w->off += n;
    }
    return at;
}

/* Overwrite written bytes at offset at. */
static inline void filter_wr_patch_u8(filter_wr_t *w, size_t at, uint8_t v)
{
    if (filter_wr_written(w, at, 1))
        w->base[at] = v;
}

static inline void filter_wr_patch_u16(filter_wr_t *w, size_t at, uint16_t v)
{
    if (filter_wr_written(w, at, 2))
        filter_wr_be16(w->base + at, v);
}

static inline void filter_wr_patch_u32(filter_wr_t *w, size_t at, uint32_t v)
{
    if (filter_wr_written(w, at, 4))
        filter_wr_be32(w->base + at, v);
}

static inline void filter_wr_patch_bytes(filter_wr_t *w, size_t at, const void *src, size_t n)
{
    if (filter_wr_written(w, at, n) && n > 0)
        memcpy(w->base + at, src, n);
}

/* Remove the written bytes [at, at + n), moving what follows down. */
static inline void filter_wr_cut(filter_wr_t *w, size_t at, size_t n)
{
    if (!filter_wr_written(w, at, n))
        return;
    memmove(w->base + at, w->base + at + n, w->off - at - n);
    w->off -= n;
}

/* Drop everything written from offset at on (at <= the position). */
static inline void filter_wr_rewind(filter_wr_t *w, size_t at)
{
    if (filter_wr_written(w, at, 0))
        w->off = at;
}

#endif
