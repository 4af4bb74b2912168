/* tests/filter/test_cursor.c: the read cursor: every read at the edge of the
 * window, the sticky error and its kinds, sub-cursors, peek. */
#include <criterion/criterion.h>

#include "filter/cursor.h"

static const uint8_t bytes[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07};

Test(cursor, reads_big_endian)
{
    filter_cur_t c = filter_cur_make(bytes, sizeof bytes);
    cr_assert_eq(filter_cur_u8(&c), 0x01);
    cr_assert_eq(filter_cur_u16(&c), 0x0203);
    cr_assert_eq(filter_cur_u32(&c), 0x04050607);
    cr_assert(filter_cur_ok(&c));
    cr_assert_eq(filter_cur_error(&c), FILTER_CUR_OK);
    cr_assert_eq(filter_cur_left(&c), 0);
    cr_assert_eq(filter_cur_pos(&c), 7);
    c = filter_cur_make(bytes, sizeof bytes);
    cr_assert_eq(filter_cur_u24(&c), 0x010203);
    cr_assert_eq(*filter_cur_take(&c, 2), 0x04);
    filter_cur_skip(&c, 2);
    cr_assert_eq(filter_cur_pos(&c), 7);
    cr_assert(filter_cur_ok(&c));
}

/* A read that needs one byte more than is left returns zero, sets
 * TRUNCATED and does not move. */
Test(cursor, every_read_at_the_edge)
{
    for (size_t n = 1; n <= 4; n++) {
        filter_cur_t c = filter_cur_make(bytes, n - 1);
        uint32_t v = 0;
        switch (n) {
        case 1:
            v = filter_cur_u8(&c);
            break;
        case 2:
            v = filter_cur_u16(&c);
            break;
        case 3:
            v = filter_cur_u24(&c);
            break;
        default:
            v = filter_cur_u32(&c);
            break;
        }
        cr_assert_eq(v, 0, "n %zu", n);
        cr_assert_eq(filter_cur_error(&c), FILTER_CUR_TRUNCATED, "n %zu", n);
        cr_assert_eq(filter_cur_pos(&c), 0);
        cr_assert_eq(filter_cur_left(&c), 0);
    }
    filter_cur_t c = filter_cur_make(bytes, 3);
    cr_assert_null(filter_cur_take(&c, 4));
    cr_assert_eq(filter_cur_error(&c), FILTER_CUR_TRUNCATED);
    c = filter_cur_make(bytes, 3);
    filter_cur_skip(&c, 4);
    cr_assert_eq(filter_cur_error(&c), FILTER_CUR_TRUNCATED);
    c = filter_cur_make(bytes, 3);
    cr_assert_not_null(filter_cur_take(&c, 3));
    cr_assert(filter_cur_ok(&c));
}

Test(cursor, error_is_sticky)
{
    filter_cur_t c = filter_cur_make(bytes, 3);
    filter_cur_u32(&c);
    cr_assert_eq(filter_cur_u8(&c), 0, "a read after a failure returns zero");
    cr_assert_eq(filter_cur_pos(&c), 0);
    cr_assert_eq(filter_cur_peek(&c, 0), -1);
    filter_cur_fail(&c, FILTER_CUR_MALFORMED);
    cr_assert_eq(filter_cur_error(&c), FILTER_CUR_TRUNCATED, "the first kind stays");
}

Test(cursor, parser_kinds)
{
    filter_cur_t c = filter_cur_make(bytes, sizeof bytes);
    filter_cur_u8(&c);
    filter_cur_fail(&c, FILTER_CUR_MALFORMED);
    cr_assert_not(filter_cur_ok(&c));
    cr_assert_eq(filter_cur_left(&c), 0);
    cr_assert_eq(filter_cur_u8(&c), 0);
    cr_assert_eq(filter_cur_error(&c), FILTER_CUR_MALFORMED, "a later read does not replace it");
    c = filter_cur_make(bytes, sizeof bytes);
    filter_cur_fail(&c, FILTER_CUR_OVERLIMIT);
    filter_cur_fail(&c, FILTER_CUR_MALFORMED);
    cr_assert_eq(filter_cur_error(&c), FILTER_CUR_OVERLIMIT);
}

Test(cursor, sub_and_peek)
{
    filter_cur_t c = filter_cur_make(bytes, sizeof bytes);
    filter_cur_skip(&c, 1);
    filter_cur_t s = filter_cur_sub(&c, 3);
    cr_assert(filter_cur_ok(&s));
    cr_assert_eq(filter_cur_left(&s), 3);
    cr_assert_eq(filter_cur_peek(&s, 2), 0x04);
    cr_assert_eq(filter_cur_peek(&s, 3), -1);
    cr_assert(filter_cur_ok(&s), "peek past the end sets no error");
    cr_assert_eq(filter_cur_u32(&s), 0);
    cr_assert_eq(filter_cur_error(&s), FILTER_CUR_TRUNCATED);
    cr_assert(filter_cur_ok(&c), "the parent is not affected");
    cr_assert_eq(filter_cur_pos(&c), 4);
    s = filter_cur_sub(&c, 4);
    cr_assert_eq(filter_cur_error(&s), FILTER_CUR_TRUNCATED);
    cr_assert_eq(filter_cur_left(&s), 0);
    cr_assert_eq(filter_cur_error(&c), FILTER_CUR_TRUNCATED);
}
