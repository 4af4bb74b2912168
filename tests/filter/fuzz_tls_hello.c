/* tests/filter/fuzz_tls_hello.c: libFuzzer target for the ClientHello reader.
 *
 * The input is the byte stream a guest sends. Besides "does not crash", it
 * checks the reader's promises and traps when one is broken:
 *   - a prefix answers NEED_MORE or the whole input's answer;
 *   - a complete hello answers the same without the bytes after it;
 *   - NEED_MORE only while fewer than max_hello bytes are in;
 *   - out is consistent (sni NUL-terminated, hello_len within bounds).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "filter/tls_hello.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fz_check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

static bool fz_complete(filter_tls_result_t r)
{
    return r == FILTER_TLS_SNI || r == FILTER_TLS_NO_SNI || r == FILTER_TLS_BAD_SNI ||
           r == FILTER_TLS_MULTI_SNI;
}

static filter_tls_result_t fz_one(const uint8_t *data, size_t size, size_t max)
{
    filter_tls_hello_t h;
    filter_tls_result_t r = filter_tls_hello_parse(data, size, max, &h);
    fz_check(r >= FILTER_TLS_SNI && r <= FILTER_TLS_TOO_BIG);
    fz_check(h.detail != NULL);
    fz_check(h.sni_len <= FILTER_TLS_SNI_MAX && h.sni[h.sni_len] == '\0');
    fz_check(strlen(h.sni) == h.sni_len);
    if (r == FILTER_TLS_SNI)
        fz_check(h.sni_len > 0);
    if (r != FILTER_TLS_SNI && r != FILTER_TLS_MULTI_SNI)
        fz_check(h.sni_len == 0);
    if (r == FILTER_TLS_NEED_MORE)
        fz_check(size < max);
    if (fz_complete(r)) {
        fz_check(h.hello_len > 0 && h.hello_len <= size && h.hello_len <= max);
        if (h.hello_len < size) {
            filter_tls_hello_t h2;
            fz_check(filter_tls_hello_parse(data, h.hello_len, max, &h2) == r);
            fz_check(h2.sni_len == h.sni_len && memcmp(h2.sni, h.sni, h.sni_len) == 0);
        }
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t maxes[] = {FILTER_TLS_MAX_HELLO_DEFAULT, 300, (size_t)-1};
    for (size_t m = 0; m < sizeof maxes / sizeof maxes[0]; m++) {
        filter_tls_result_t full = fz_one(data, size, maxes[m]);
        /* A few cuts rather than all of them, to stay fast. */
        size_t cuts[] = {0, size / 2, size / 3, size > 0 ? size - 1 : 0, size > 9 ? 9 : 0};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            filter_tls_result_t r = fz_one(data, cuts[i], maxes[m]);
            fz_check(r == FILTER_TLS_NEED_MORE || r == full);
        }
    }
    return 0;
}
