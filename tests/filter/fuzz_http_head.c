/* tests/filter/fuzz_http_head.c: libFuzzer target for the HTTP head reader
 * and the 403 formatter.
 *
 * Besides "does not crash", it traps when a promise is broken:
 *   - a prefix answers NEED_MORE or the whole input's answer;
 *   - a complete head answers the same without the bytes after it;
 *   - NEED_MORE only while fewer than max_head bytes are in;
 *   - a NAME is non-empty, NUL-terminated and holds no byte that could
 *     break a log line or a response (no CTL, SP, '/', '@', ...);
 *   - the 403 naming any host has exactly one body line.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "filter/http_head.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fz_check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

static filter_http_result_t fz_one(const uint8_t *data, size_t size, size_t max)
{
    filter_http_head_t h;
    filter_http_result_t r = filter_http_head_parse(data, size, max, &h);
    fz_check(r >= FILTER_HTTP_NAME && r <= FILTER_HTTP_TOO_BIG);
    fz_check(h.detail != NULL);
    fz_check(h.name_len <= FILTER_HTTP_NAME_MAX && h.name[h.name_len] == '\0');
    fz_check(strlen(h.name) == h.name_len);
    if (r == FILTER_HTTP_NEED_MORE)
        fz_check(size < max);
    bool complete = r == FILTER_HTTP_NAME || r == FILTER_HTTP_NO_NAME ||
                    r == FILTER_HTTP_MULTI_HOST || r == FILTER_HTTP_BAD_NAME;
    if (!complete)
        fz_check(h.head_len == 0);
    if (r == FILTER_HTTP_NAME) {
        fz_check(h.name_len > 0);
        for (size_t i = 0; i < h.name_len; i++) {
            unsigned char c = (unsigned char)h.name[i];
            fz_check(c > 0x20 && c < 0x7f && !strchr("/?#@[]\\\"<>{}|^`", c));
        }
    } else {
        fz_check(h.name_len == 0 && !h.is_addr);
    }
    if (complete) {
        fz_check(h.head_len >= 4 && h.head_len <= size && h.head_len <= max);
        if (h.head_len < size) {
            filter_http_head_t h2;
            fz_check(filter_http_head_parse(data, h.head_len, max, &h2) == r);
            fz_check(h2.name_len == h.name_len && memcmp(h2.name, h.name, h.name_len) == 0);
        }
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t maxes[] = {FILTER_HTTP_MAX_HEAD_DEFAULT, 64, (size_t)-1};
    for (size_t m = 0; m < sizeof maxes / sizeof maxes[0]; m++) {
        filter_http_result_t full = fz_one(data, size, maxes[m]);
        size_t cuts[] = {0, 1, size / 2, size / 3, size > 0 ? size - 1 : 0};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            if (cuts[i] > size)
                continue;
            filter_http_result_t r = fz_one(data, cuts[i], maxes[m]);
            fz_check(r == FILTER_HTTP_NEED_MORE || r == full);
        }
    }

    /* The 403 with the raw input as the host: one body line, no CR. */
    char resp[FILTER_HTTP_403_MAX];
    int n = filter_http_format_403((const char *)data, size, resp, sizeof resp);
    fz_check(n > 0 && (size_t)n < sizeof resp);
    const char *body = strstr(resp, "\r\n\r\n");
    fz_check(body != NULL);
    body += 4;
    fz_check(strchr(body, '\r') == NULL && strchr(body, '\n') == resp + n - 1);
    return 0;
}
