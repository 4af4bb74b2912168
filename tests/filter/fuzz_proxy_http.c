/* tests/filter/fuzz_proxy_http.c: libFuzzer target for the HTTP proxy
 * request reader, the rewrite for the origin and the proxy's answers.
 *
 * Besides "does not crash", it traps when a promise is broken:
 *   - a prefix answers NEED_MORE or the whole input's answer;
 *   - a complete head answers the same without the bytes after it;
 *   - OK carries a kind, a host and a port that is not 0; anything else
 *     carries none of them;
 *   - credentials are NUL-terminated, within bounds, free of control bytes,
 *     and empty when auth_bad;
 *   - a FORWARD rewrites within 2 * head_len + FILTER_PXHTTP_REWRITE_EXTRA
 *     into an origin-form head that http_head.h reads as naming the same
 *     host, with no Proxy-* field, one Host and one Connection: close; one
 *     byte less of room is -ENOSPC;
 *   - every answer naming any host has exactly one body line.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "filter/http_head.h"
#include "filter/proxy_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fz_check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

static bool fz_prefix_ci(const uint8_t *p, size_t n, const char *word)
{
    size_t w = strlen(word);
    if (n < w)
        return false;
    for (size_t i = 0; i < w; i++) {
        int c = p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32 : p[i];
        if (c != word[i])
            return false;
    }
    return true;
}

static void fz_cred(const char *s, size_t n)
{
    fz_check(n <= FILTER_PXHTTP_CRED_MAX && s[n] == '\0');
    for (size_t i = 0; i < n; i++)
        fz_check((unsigned char)s[i] >= 0x20 && s[i] != 0x7f);
}

/* The rewrite of a FORWARD request, checked. */
static void fz_rewrite(const uint8_t *data, size_t size, const filter_pxhttp_req_t *r)
{
    static uint8_t out[2 * 65536 + FILTER_PXHTTP_REWRITE_EXTRA];
    size_t cap = 2 * r->head_len + FILTER_PXHTTP_REWRITE_EXTRA;
    if (cap > sizeof out)
        return;
    int w = filter_pxhttp_rewrite(data, size, r, out, cap);
    fz_check(w > 0 && (size_t)w <= cap);
    fz_check(filter_pxhttp_rewrite(data, size, r, out, (size_t)w - 1) == -ENOSPC);
    fz_check(filter_pxhttp_rewrite(data, size, r, out, (size_t)w) == w);

    filter_http_head_t h;
    fz_check(filter_http_head_parse(out, (size_t)w, (size_t)w, &h) == FILTER_HTTP_NAME);
    fz_check(!h.from_uri && !h.is_connect && !h.host_conflict);
    fz_check(h.head_len == (size_t)w);
    fz_check(h.name_len == r->host_len && memcmp(h.name, r->host, h.name_len) == 0);

    /* Field by field: every line ends in CRLF; no Proxy-*, one Host, one
     * Connection (close, last). */
    size_t pos = 0, hosts = 0, conns = 0, lines = 0;
    bool last_conn = false;
    while (pos < (size_t)w) {
        const uint8_t *nl = memchr(out + pos, '\n', (size_t)w - pos);
        fz_check(nl != NULL && nl > out + pos && nl[-1] == '\r');
        size_t n = (size_t)(nl - (out + pos)) - 1;
        const uint8_t *l = out + pos;
        if (lines++ > 0 && n > 0) {
            fz_check(!fz_prefix_ci(l, n, "proxy:") && !fz_prefix_ci(l, n, "proxy-"));
            fz_check(!fz_prefix_ci(l, n, "keep-alive:"));
            hosts += fz_prefix_ci(l, n, "host:");
            last_conn = fz_prefix_ci(l, n, "connection:");
            if (last_conn) {
                conns++;
                fz_check(n == 17 && memcmp(l, "Connection: close", 17) == 0);
            }
        }
        pos += n + 2;
    }
    fz_check(hosts == 1 && conns == 1 && last_conn);
}

static filter_pxhttp_result_t fz_one(const uint8_t *data, size_t size, size_t max)
{
    filter_pxhttp_req_t r;
    filter_pxhttp_result_t res = filter_pxhttp_parse(data, size, max, &r);
    fz_check(res <= FILTER_PXHTTP_BAD && r.detail != NULL);
    fz_check(r.host_len <= FILTER_HTTP_NAME_MAX && r.host[r.host_len] == '\0');
    fz_check(strlen(r.host) == r.host_len);
    fz_cred(r.user, r.user_len);
    fz_cred(r.password, r.password_len);
    if (r.auth_bad)
        fz_check(r.has_auth && r.user_len == 0 && r.password_len == 0);
    if (res == FILTER_PXHTTP_NEED_MORE)
        fz_check(size < max);
    if (res == FILTER_PXHTTP_OK) {
        fz_check(r.kind == FILTER_PXHTTP_CONNECT || r.kind == FILTER_PXHTTP_FORWARD);
        fz_check(r.host_len > 0 && r.port != 0 && r.head == FILTER_HTTP_NAME);
        fz_check(r.head_len >= 4 && r.head_len <= size && r.head_len <= max);
        fz_check(r.auth_off + r.auth_len <= r.head_len && r.path_off + r.path_len <= r.head_len);
        fz_check(r.auth_len >= r.host_len);
    } else {
        fz_check(r.kind == FILTER_PXHTTP_NONE && r.host_len == 0 && r.port == 0 && !r.is_addr);
        fz_check(!r.has_auth && r.user_len == 0 && r.password_len == 0);
        fz_check(r.auth_len == 0 && r.path_len == 0);
    }
    if (res == FILTER_PXHTTP_BAD)
        fz_check(r.head_len >= 4 && r.head_len <= size && r.head != FILTER_HTTP_NAME);
    if (res != FILTER_PXHTTP_OK && res != FILTER_PXHTTP_BAD)
        fz_check(r.head_len == 0);

    if (res == FILTER_PXHTTP_OK || res == FILTER_PXHTTP_BAD) {
        if (r.head_len < size) {
            filter_pxhttp_req_t r2;
            fz_check(filter_pxhttp_parse(data, r.head_len, max, &r2) == res);
            fz_check(r2.kind == r.kind && r2.port == r.port && r2.host_len == r.host_len &&
                     memcmp(r2.host, r.host, r.host_len) == 0);
            fz_check(r2.has_auth == r.has_auth && r2.auth_bad == r.auth_bad &&
                     r2.user_len == r.user_len && r2.password_len == r.password_len &&
                     memcmp(r2.user, r.user, r.user_len) == 0 &&
                     memcmp(r2.password, r.password, r.password_len) == 0);
        }
    }
    uint8_t small[64];
    if (res == FILTER_PXHTTP_OK && r.kind == FILTER_PXHTTP_FORWARD)
        fz_rewrite(data, size, &r);
    else
        fz_check(filter_pxhttp_rewrite(data, size, &r, small, sizeof small) == -EINVAL);
    return res;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t maxes[] = {FILTER_HTTP_MAX_HEAD_DEFAULT, 64, (size_t)-1};
    for (size_t m = 0; m < sizeof maxes / sizeof maxes[0]; m++) {
        filter_pxhttp_result_t full = fz_one(data, size, maxes[m]);
        size_t cuts[] = {0, 1, size / 2, size / 3, size > 0 ? size - 1 : 0};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            if (cuts[i] > size)
                continue;
            filter_pxhttp_result_t r = fz_one(data, cuts[i], maxes[m]);
            fz_check(r == FILTER_PXHTTP_NEED_MORE || r == full);
        }
    }

    /* Every answer with the raw input as the host. */
    for (int a = FILTER_PXHTTP_ANSWER_200; a <= FILTER_PXHTTP_ANSWER_504_TIMEOUT; a++) {
        char resp[FILTER_PXHTTP_ANSWER_MAX];
        int n = filter_pxhttp_format((filter_pxhttp_answer_t)a, (const char *)data, size, resp,
                                     sizeof resp);
        fz_check(n > 0 && (size_t)n < sizeof resp && strlen(resp) == (size_t)n);
        const char *body = strstr(resp, "\r\n\r\n");
        fz_check(body != NULL);
        body += 4;
        if (a == FILTER_PXHTTP_ANSWER_200)
            fz_check(*body == '\0');
        else
            fz_check(strchr(body, '\r') == NULL && strchr(body, '\n') == resp + n - 1);
    }
    return 0;
}
