/* tests/filter/fuzz_socks5.c: libFuzzer target for the SOCKS5 readers: the
 * greeting (auth required or not), the RFC 1929 sub-negotiation and the
 * request, all three on the same bytes, and the reply formatter.
 *
 * Besides "does not crash", it traps when a promise is broken:
 *   - a prefix answers NEED_MORE or the whole input's answer (the same
 *     method, the same reply code);
 *   - OK uses exactly one message: the same bytes without what follows
 *     answer the same; NEED_MORE and BAD use nothing;
 *   - strings are NUL-terminated and hold what the header promises;
 *   - a reply formatted with a request's address reads back, as a request
 *     whose REP is CONNECT's code, as that address and port.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "filter/socks5.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fz_check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

static filter_socks_greeting_t fz_greeting(const uint8_t *data, size_t size, bool auth,
                                           filter_socks_result_t *res)
{
    filter_socks_greeting_t g;
    filter_socks_result_t r = filter_socks_greeting_parse(data, size, auth, &g);
    fz_check(r <= FILTER_SOCKS_BAD && g.detail != NULL);
    if (r == FILTER_SOCKS_OK) {
        fz_check(g.used >= 3 && g.used <= size && g.used <= FILTER_SOCKS_GREETING_MAX);
        fz_check(g.used == 2u + data[1] && data[0] == 5);
        uint8_t want = auth ? FILTER_SOCKS_METHOD_USERPASS : FILTER_SOCKS_METHOD_NONE;
        fz_check(g.method == want || g.method == FILTER_SOCKS_METHOD_NO_ACCEPT);
        fz_check((g.method == want) == (memchr(data + 2, want, data[1]) != NULL));
    } else {
        fz_check(g.used == 0 && g.method == FILTER_SOCKS_METHOD_NO_ACCEPT);
    }
    *res = r;
    return g;
}

static filter_socks_auth_t fz_auth(const uint8_t *data, size_t size, filter_socks_result_t *res)
{
    filter_socks_auth_t a;
    filter_socks_result_t r = filter_socks_auth_parse(data, size, &a);
    fz_check(r <= FILTER_SOCKS_BAD && a.detail != NULL);
    fz_check(a.user_len <= FILTER_SOCKS_STR_MAX && a.password_len <= FILTER_SOCKS_STR_MAX);
    fz_check(a.user[a.user_len] == '\0' && a.password[a.password_len] == '\0');
    if (r == FILTER_SOCKS_OK) {
        fz_check(a.user_len >= 1 && strlen(a.user) == a.user_len);
        fz_check(strlen(a.password) == a.password_len);
        fz_check(a.used == 3 + a.user_len + a.password_len && a.used <= size);
        fz_check(memcmp(data + 2, a.user, a.user_len) == 0);
        fz_check(memcmp(data + 3 + a.user_len, a.password, a.password_len) == 0);
    } else {
        fz_check(a.used == 0 && a.user_len == 0 && a.password_len == 0);
    }
    *res = r;
    return a;
}

static filter_socks_request_t fz_request(const uint8_t *data, size_t size,
                                         filter_socks_result_t *res)
{
    filter_socks_request_t q;
    filter_socks_result_t r = filter_socks_request_parse(data, size, &q);
    fz_check(r <= FILTER_SOCKS_BAD && q.detail != NULL);
    fz_check(q.name_len <= FILTER_SOCKS_STR_MAX && q.name[q.name_len] == '\0');
    fz_check(strlen(q.name) == q.name_len);
    if (r == FILTER_SOCKS_OK) {
        fz_check(q.cmd == FILTER_SOCKS_CMD_CONNECT && q.reply == FILTER_SOCKS_REP_SUCCEEDED);
        fz_check(q.used <= size && q.used <= FILTER_SOCKS_REQUEST_MAX);
        if (q.atyp == FILTER_SOCKS_ATYP_DOMAIN) {
            fz_check(q.name_len >= 1 && q.used == 7 + q.name_len);
            for (size_t i = 0; i < q.name_len; i++)
                fz_check(q.name[i] > 0x20 && q.name[i] < 0x7f);
        } else {
            fz_check(q.atyp == FILTER_SOCKS_ATYP_IPV4 || q.atyp == FILTER_SOCKS_ATYP_IPV6);
            fz_check(q.is_addr && q.name_len == 0);
            fz_check(q.used == (q.atyp == FILTER_SOCKS_ATYP_IPV4 ? 10u : 22u));
        }
        if (q.is_addr)
            fz_check(q.addr.family == AF_INET || q.addr.family == AF_INET6);
        fz_check(q.port == (uint16_t)(data[q.used - 2] << 8 | data[q.used - 1]));
    } else {
        fz_check(q.used == 0 && q.name_len == 0 && !q.is_addr && q.port == 0);
    }
    if (r == FILTER_SOCKS_BAD)
        fz_check(q.reply == FILTER_SOCKS_REP_GENERAL_FAILURE ||
                 q.reply == FILTER_SOCKS_REP_HOST_UNREACHABLE ||
                 q.reply == FILTER_SOCKS_REP_CMD_UNSUPPORTED ||
                 q.reply == FILTER_SOCKS_REP_ATYP_UNSUPPORTED);
    *res = r;
    return q;
}

/* The three readers on size bytes; returns a summary to compare prefixes
 * with. */
typedef struct fz_sum {
    filter_socks_greeting_t g[2];
    filter_socks_result_t gr[2], ar, qr;
    size_t aused, qused;
    filter_socks_rep_t rep;
} fz_sum_t;

static fz_sum_t fz_all(const uint8_t *data, size_t size)
{
    fz_sum_t s;
    s.g[0] = fz_greeting(data, size, false, &s.gr[0]);
    s.g[1] = fz_greeting(data, size, true, &s.gr[1]);
    filter_socks_auth_t a = fz_auth(data, size, &s.ar);
    filter_socks_request_t q = fz_request(data, size, &s.qr);
    s.aused = a.used;
    s.qused = q.used;
    s.rep = q.reply;
    return s;
}

/* The prefix answers NEED_MORE or what the whole answers. */
static void fz_same_or_more(const fz_sum_t *p, const fz_sum_t *w)
{
    for (int i = 0; i < 2; i++)
        fz_check(p->gr[i] == FILTER_SOCKS_NEED_MORE ||
                 (p->gr[i] == w->gr[i] && p->g[i].used == w->g[i].used &&
                  p->g[i].method == w->g[i].method));
    fz_check(p->ar == FILTER_SOCKS_NEED_MORE || (p->ar == w->ar && p->aused == w->aused));
    fz_check(p->qr == FILTER_SOCKS_NEED_MORE ||
             (p->qr == w->qr && p->qused == w->qused && p->rep == w->rep));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_sum_t whole = fz_all(data, size);
    size_t cuts[] = {0, 1, 2, 3, 4, 5, size / 2, size / 3, size > 0 ? size - 1 : 0};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        if (cuts[i] > size)
            continue;
        fz_sum_t p = fz_all(data, cuts[i]);
        fz_same_or_more(&p, &whole);
    }
    /* A message answers the same without the bytes after it. */
    size_t ends[] = {whole.g[0].used, whole.g[1].used, whole.aused, whole.qused};
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        if (ends[i] == 0 || ends[i] >= size)
            continue;
        fz_sum_t p = fz_all(data, ends[i]);
        fz_same_or_more(&p, &whole);
    }

    /* A reply with the request's address reads back as that address. */
    filter_socks_result_t r;
    filter_socks_request_t q = fz_request(data, size, &r);
    if (r == FILTER_SOCKS_OK && q.is_addr) {
        uint8_t rep[FILTER_SOCKS_REPLY_MAX];
        int n = filter_socks_format_reply((filter_socks_rep_t)FILTER_SOCKS_CMD_CONNECT, &q.addr,
                                          q.port, rep, sizeof rep);
        fz_check(n == 10 || n == 22);
        filter_socks_request_t back;
        fz_check(filter_socks_request_parse(rep, (size_t)n, &back) == FILTER_SOCKS_OK);
        fz_check(back.used == (size_t)n && back.port == q.port);
        fz_check(memcmp(&back.addr, &q.addr, sizeof q.addr) == 0);
        fz_check(filter_socks_format_reply(FILTER_SOCKS_REP_SUCCEEDED, &q.addr, q.port, rep,
                                           (size_t)n - 1) < 0);
    }
    return 0;
}
