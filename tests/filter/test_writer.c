/* tests/filter/test_writer.c: the write cursor: every append at the edge of
 * the buffer, patches, cuts and rewinds in and out of range, the sticky
 * error and its kinds. */
#include <criterion/criterion.h>
#include <string.h>

#include "filter/writer.h"

/* A buffer with a guard byte after cap, to see that nothing is written past
 * the writer's end. */
#define GUARD 0xa5

static void fill(uint8_t *b, size_t n)
{
    memset(b, GUARD, n);
}

Test(writer, empty)
{
    uint8_t b[4];
    filter_wr_t w = filter_wr_make(b, sizeof b);
    cr_assert(filter_wr_ok(&w));
    cr_assert_eq(filter_wr_error(&w), FILTER_WR_OK);
    cr_assert_eq(filter_wr_pos(&w), 0);
    cr_assert_eq(filter_wr_left(&w), 4);
}

Test(writer, puts_big_endian)
{
    uint8_t b[16];
    filter_wr_t w = filter_wr_make(b, sizeof b);
    filter_wr_u8(&w, 0x01);
    filter_wr_u16(&w, 0x0203);
    filter_wr_u32(&w, 0x04050607);
    filter_wr_bytes(&w, "\x08\x09", 2);
    filter_wr_bytes(&w, NULL, 0);
    cr_assert(filter_wr_ok(&w));
    cr_assert_eq(filter_wr_pos(&w), 9);
    cr_assert_eq(filter_wr_left(&w), 7);
    cr_assert_arr_eq(b, "\x01\x02\x03\x04\x05\x06\x07\x08\x09", 9);
}

/* Each put fills the buffer to the last byte exactly, and the same put one
 * byte short of room fails with NOSPACE and writes nothing. */
typedef void (*put_fn)(filter_wr_t *);
static void put8(filter_wr_t *w)
{
    filter_wr_u8(w, 0x11);
}
static void put16(filter_wr_t *w)
{
    filter_wr_u16(w, 0x1122);
}
static void put32(filter_wr_t *w)
{
    filter_wr_u32(w, 0x11223344);
}
static void put3(filter_wr_t *w)
{
    filter_wr_bytes(w, "\x11\x22\x33", 3);
}
static void reserve5(filter_wr_t *w)
{
    (void)filter_wr_reserve(w, 5);
}

static void edge(put_fn put, size_t n)
{
    uint8_t b[16];
    for (size_t pre = 0; pre < 4; pre++) {
        /* exactly fits */
        fill(b, sizeof b);
        filter_wr_t w = filter_wr_make(b, pre + n);
        for (size_t i = 0; i < pre; i++)
            filter_wr_u8(&w, 0);
        put(&w);
        cr_assert(filter_wr_ok(&w), "n %zu pre %zu", n, pre);
        cr_assert_eq(filter_wr_pos(&w), pre + n);
        cr_assert_eq(filter_wr_left(&w), 0);
        cr_assert_eq(b[pre + n], GUARD);
        /* one byte short */
        fill(b, sizeof b);
        w = filter_wr_make(b, pre + n - 1);
        for (size_t i = 0; i < pre; i++)
            filter_wr_u8(&w, 0);
        put(&w);
        cr_assert_not(filter_wr_ok(&w));
        cr_assert_eq(filter_wr_error(&w), FILTER_WR_NOSPACE);
        cr_assert_eq(filter_wr_pos(&w), pre, "a failed put does not move");
        cr_assert_eq(filter_wr_left(&w), 0);
        for (size_t i = pre; i < sizeof b; i++)
            cr_assert_eq(b[i], GUARD, "byte %zu written by a failed put", i);
    }
}

Test(writer, every_put_at_the_edge)
{
    edge(put8, 1);
    edge(put16, 2);
    edge(put32, 4);
    edge(put3, 3);
    edge(reserve5, 5);
}

Test(writer, zero_capacity)
{
    filter_wr_t w = filter_wr_make(NULL, 0);
    filter_wr_bytes(&w, NULL, 0);
    cr_assert(filter_wr_ok(&w));
    filter_wr_u8(&w, 1);
    cr_assert_eq(filter_wr_error(&w), FILTER_WR_NOSPACE);
}

Test(writer, error_is_sticky)
{
    uint8_t b[8];
    fill(b, sizeof b);
    filter_wr_t w = filter_wr_make(b, 3);
    filter_wr_u16(&w, 0x0102);
    filter_wr_u16(&w, 0x0304); /* fails: one byte left */
    cr_assert_eq(filter_wr_error(&w), FILTER_WR_NOSPACE);
    filter_wr_u8(&w, 0x05); /* would fit, but the writer is closed */
    filter_wr_bytes(&w, "", 0);
    filter_wr_patch_u8(&w, 0, 0xff);
    filter_wr_rewind(&w, 0);
    filter_wr_cut(&w, 0, 1);
    cr_assert_eq(filter_wr_pos(&w), 2);
    cr_assert_eq(filter_wr_left(&w), 0);
    cr_assert_arr_eq(b, "\x01\x02\xa5", 3);
    /* a later failure of another kind does not replace the first */
    filter_wr_patch_u16(&w, 7, 0);
    cr_assert_eq(filter_wr_error(&w), FILTER_WR_NOSPACE);
}

Test(writer, reserve_and_patch)
{
    uint8_t b[16];
    filter_wr_t w = filter_wr_make(b, sizeof b);
    filter_wr_u8(&w, 0xee);
    size_t len_at = filter_wr_reserve(&w, 2);
    size_t ttl_at = filter_wr_reserve(&w, 4);
    cr_assert_eq(len_at, 1);
    cr_assert_eq(ttl_at, 3);
    cr_assert_arr_eq(b + 1, "\0\0\0\0\0\0", 6, "reserved bytes are zero");
    filter_wr_bytes(&w, "abc", 3);
    filter_wr_patch_u16(&w, len_at, 0x0102);
    filter_wr_patch_u32(&w, ttl_at, 0x03040506);
    filter_wr_patch_u8(&w, 0, 0x07);
    filter_wr_patch_bytes(&w, 7, "XY", 2);
    cr_assert(filter_wr_ok(&w));
    cr_assert_eq(filter_wr_pos(&w), 10);
    cr_assert_arr_eq(b,
                     "\x07\x01\x02\x03\x04\x05\x06"
                     "XYc",
                     10);
}

/* A patch ending exactly at the position succeeds; one byte further fails
 * with BADOFF and changes nothing. */
Test(writer, patch_at_the_edge)
{
    uint8_t b[8];
    fill(b, sizeof b);
    filter_wr_t w = filter_wr_make(b, sizeof b);
    filter_wr_bytes(&w, "\x01\x02\x03\x04", 4);
    filter_wr_patch_u32(&w, 0, 0x0a0b0c0d);
    filter_wr_patch_u16(&w, 2, 0x1112);
    filter_wr_patch_u8(&w, 3, 0x13);
    cr_assert(filter_wr_ok(&w));
    cr_assert_arr_eq(b, "\x0a\x0b\x11\x13", 4);

    struct {
        size_t at;
        int width;
    } bad[] = {{1, 4}, {3, 2}, {4, 1}, {SIZE_MAX, 1}, {SIZE_MAX - 1, 4}, {2, 3}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fill(b, sizeof b);
        w = filter_wr_make(b, sizeof b);
        filter_wr_bytes(&w, "\x01\x02\x03\x04", 4);
        switch (bad[i].width) {
        case 1:
            filter_wr_patch_u8(&w, bad[i].at, 0xff);
            break;
        case 2:
            filter_wr_patch_u16(&w, bad[i].at, 0xffff);
            break;
        case 3:
            filter_wr_patch_bytes(&w, bad[i].at, "\xff\xff\xff", 3);
            break;
        default:
            filter_wr_patch_u32(&w, bad[i].at, 0xffffffff);
            break;
        }
        cr_assert_eq(filter_wr_error(&w), FILTER_WR_BADOFF, "case %zu", i);
        cr_assert_arr_eq(b, "\x01\x02\x03\x04\xa5", 5, "case %zu wrote", i);
        /* closed to appends too */
        filter_wr_u8(&w, 0);
        cr_assert_eq(filter_wr_error(&w), FILTER_WR_BADOFF);
        cr_assert_eq(filter_wr_pos(&w), 4);
    }
}

Test(writer, cut)
{
    uint8_t b[8];
    filter_wr_t w = filter_wr_make(b, sizeof b);
    filter_wr_bytes(&w, "abcdef", 6);
    filter_wr_cut(&w, 1, 2); /* "bc" */
    cr_assert(filter_wr_ok(&w));
    cr_assert_eq(filter_wr_pos(&w), 4);
    cr_assert_arr_eq(b, "adef", 4);
    filter_wr_cut(&w, 2, 2); /* the tail */
    filter_wr_cut(&w, 2, 0);
    cr_assert_eq(filter_wr_pos(&w), 2);
    cr_assert_arr_eq(b, "ad", 2);
    filter_wr_u8(&w, 'z');
    cr_assert_arr_eq(b, "adz", 3);
    filter_wr_cut(&w, 2, 2); /* past the position */
    cr_assert_eq(filter_wr_error(&w), FILTER_WR_BADOFF);
    cr_assert_eq(filter_wr_pos(&w), 3);
    cr_assert_arr_eq(b, "adz", 3);
}

Test(writer, rewind)
{
    uint8_t b[8];
    filter_wr_t w = filter_wr_make(b, sizeof b);
    filter_wr_bytes(&w, "abcd", 4);
    filter_wr_rewind(&w, 4);
    filter_wr_rewind(&w, 1);
    cr_assert(filter_wr_ok(&w));
    cr_assert_eq(filter_wr_pos(&w), 1);
    cr_assert_eq(filter_wr_left(&w), 7);
    filter_wr_u8(&w, 'x');
    cr_assert_arr_eq(b, "ax", 2);
    filter_wr_rewind(&w, 3); /* forward: not written */
    cr_assert_eq(filter_wr_error(&w), FILTER_WR_BADOFF);
    cr_assert_eq(filter_wr_pos(&w), 2);
}

Test(writer, resume_in_place)
{
    uint8_t b[8] = "abcd";
    filter_wr_t w = filter_wr_resume(b, sizeof b, 4);
    cr_assert(filter_wr_ok(&w));
    cr_assert_eq(filter_wr_pos(&w), 4);
    cr_assert_eq(filter_wr_left(&w), 4);
    filter_wr_patch_u8(&w, 3, 'D');
    filter_wr_bytes(&w, "efgh", 4);
    cr_assert(filter_wr_ok(&w));
    cr_assert_arr_eq(b, "abcDefgh", 8);
    filter_wr_u8(&w, 0);
    cr_assert_eq(filter_wr_error(&w), FILTER_WR_NOSPACE);

    w = filter_wr_resume(b, 4, 5); /* more written than the buffer holds */
    cr_assert_eq(filter_wr_error(&w), FILTER_WR_BADOFF);
    cr_assert_eq(filter_wr_pos(&w), 0);
    cr_assert_eq(filter_wr_left(&w), 0);
    filter_wr_patch_u8(&w, 0, 'x');
    cr_assert_eq(b[0], 'a');
}

Test(writer, fail_keeps_the_first_kind)
{
    uint8_t b[4];
    filter_wr_t w = filter_wr_make(b, sizeof b);
    filter_wr_u8(&w, 1);
    cr_assert_not(filter_wr_fail(&w, FILTER_WR_BADOFF));
    cr_assert_not(filter_wr_fail(&w, FILTER_WR_NOSPACE));
    cr_assert_eq(filter_wr_error(&w), FILTER_WR_BADOFF);
    cr_assert_eq(filter_wr_pos(&w), 1);
    cr_assert_eq(filter_wr_left(&w), 0);
}
