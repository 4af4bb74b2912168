/* tests/filter/test_socks5.c: SOCKS5 (RFC 1928) and its username/password
 * sub-negotiation (RFC 1929): the three readers and the replies. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "filter/socks5.h"

/* Each reader on an exact-size copy (so the sanitizers see reads past the
 * end). */
static filter_socks_result_t greet_n(const void *p, size_t n, bool auth, filter_socks_greeting_t *g)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    filter_socks_result_t r = filter_socks_greeting_parse(copy, n, auth, g);
    free(copy);
    return r;
}

static filter_socks_result_t auth_n(const void *p, size_t n, filter_socks_auth_t *a)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    filter_socks_result_t r = filter_socks_auth_parse(copy, n, a);
    free(copy);
    return r;
}

static filter_socks_result_t req_n(const void *p, size_t n, filter_socks_request_t *q)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    filter_socks_result_t r = filter_socks_request_parse(copy, n, q);
    free(copy);
    return r;
}

#define B(s) (const uint8_t *)(s), sizeof(s) - 1

/* Every proper prefix of a valid message is NEED_MORE with nothing used. */
static void greet_prefixes(const uint8_t *p, size_t n, bool auth)
{
    filter_socks_greeting_t g;
    for (size_t cut = 0; cut < n; cut++) {
        cr_assert_eq(greet_n(p, cut, auth, &g), FILTER_SOCKS_NEED_MORE, "prefix %zu", cut);
        cr_assert_eq(g.used, 0);
        cr_assert_not_null(g.detail);
    }
}

static void auth_prefixes(const uint8_t *p, size_t n)
{
    filter_socks_auth_t a;
    for (size_t cut = 0; cut < n; cut++) {
        cr_assert_eq(auth_n(p, cut, &a), FILTER_SOCKS_NEED_MORE, "prefix %zu", cut);
        cr_assert_eq(a.used, 0);
        cr_assert_eq(a.user_len, 0);
        cr_assert_eq(a.password_len, 0);
        cr_assert_eq(a.user[0], '\0');
    }
}

static void req_prefixes(const uint8_t *p, size_t n)
{
    filter_socks_request_t q;
    for (size_t cut = 0; cut < n; cut++) {
        cr_assert_eq(req_n(p, cut, &q), FILTER_SOCKS_NEED_MORE, "prefix %zu", cut);
        cr_assert_eq(q.used, 0);
        cr_assert_eq(q.name_len, 0);
        cr_assert(!q.is_addr);
        cr_assert_eq(q.port, 0);
    }
}

/* A bad request: the whole answers BAD with rep; every prefix NEED_MORE or
 * that same BAD and rep. */
static void expect_req_bad(const uint8_t *p, size_t n, filter_socks_rep_t rep)
{
    filter_socks_request_t q;
    cr_assert_eq(req_n(p, n, &q), FILTER_SOCKS_BAD, "%s", q.detail);
    cr_assert_eq(q.reply, rep, "reply %d, want %d (%s)", q.reply, rep, q.detail);
    cr_assert_eq(q.used, 0);
    cr_assert(!q.is_addr);
    cr_assert_eq(q.name_len, 0);
    for (size_t cut = 0; cut < n; cut++) {
        filter_socks_result_t r = req_n(p, cut, &q);
        cr_assert(r == FILTER_SOCKS_NEED_MORE || (r == FILTER_SOCKS_BAD && q.reply == rep),
                  "prefix %zu: %d %d", cut, r, q.reply);
    }
}

Test(socks5, greeting)
{
    filter_socks_greeting_t g;
    cr_assert_eq(greet_n(B("\x05\x01\x00"), false, &g), FILTER_SOCKS_OK);
    cr_assert_eq(g.method, FILTER_SOCKS_METHOD_NONE);
    cr_assert_eq(g.used, 3);
    greet_prefixes(B("\x05\x01\x00"), false);

    /* curl with credentials offers both. */
    cr_assert_eq(greet_n(B("\x05\x02\x00\x02"), true, &g), FILTER_SOCKS_OK);
    cr_assert_eq(g.method, FILTER_SOCKS_METHOD_USERPASS);
    cr_assert_eq(g.used, 4);
    cr_assert_eq(greet_n(B("\x05\x02\x00\x02"), false, &g), FILTER_SOCKS_OK);
    cr_assert_eq(g.method, FILTER_SOCKS_METHOD_NONE);
    greet_prefixes(B("\x05\x02\x00\x02"), true);

    /* Nothing acceptable: answered with 0xFF, then closed. */
    cr_assert_eq(greet_n(B("\x05\x01\x00"), true, &g), FILTER_SOCKS_OK);
    cr_assert_eq(g.method, FILTER_SOCKS_METHOD_NO_ACCEPT);
    cr_assert_eq(g.used, 3);
    cr_assert_eq(greet_n(B("\x05\x01\x02"), false, &g), FILTER_SOCKS_OK);
    cr_assert_eq(g.method, FILTER_SOCKS_METHOD_NO_ACCEPT);
    cr_assert_eq(greet_n(B("\x05\x03\x01\x03\x80"), false, &g), FILTER_SOCKS_OK);
    cr_assert_eq(g.method, FILTER_SOCKS_METHOD_NO_ACCEPT);
    cr_assert_eq(g.used, 5);

    /* 255 methods, the wanted one last. */
    uint8_t big[FILTER_SOCKS_GREETING_MAX];
    big[0] = 5;
    big[1] = 255;
    memset(big + 2, 0x80, 254);
    big[256] = 0x02;
    cr_assert_eq(greet_n(big, sizeof big, true, &g), FILTER_SOCKS_OK);
    cr_assert_eq(g.method, FILTER_SOCKS_METHOD_USERPASS);
    cr_assert_eq(g.used, FILTER_SOCKS_GREETING_MAX);
    greet_prefixes(big, sizeof big, true);
}

Test(socks5, greeting_hostile)
{
    filter_socks_greeting_t g;
    /* SOCKS4 and SOCKS4a are not spoken; nor is anything else. */
    cr_assert_eq(greet_n(B("\x04\x01\x00\x50\xc6\x12\x00\x01\x00"), false, &g), FILTER_SOCKS_BAD);
    cr_assert_eq(greet_n(B("\x04"), false, &g), FILTER_SOCKS_BAD);
    cr_assert_eq(g.used, 0);
    cr_assert_eq(g.method, FILTER_SOCKS_METHOD_NO_ACCEPT);
    cr_assert_eq(greet_n(B("\x00"), false, &g), FILTER_SOCKS_BAD);
    cr_assert_eq(greet_n(B("CONNECT a:443 HTTP/1.1\r\n"), false, &g), FILTER_SOCKS_BAD);
    cr_assert_eq(greet_n(B("\x16\x03\x01"), true, &g), FILTER_SOCKS_BAD);
    /* NMETHODS 0. */
    cr_assert_eq(greet_n(B("\x05\x00"), false, &g), FILTER_SOCKS_BAD);
    cr_assert_eq(greet_n(B("\x05\x00\x00"), false, &g), FILTER_SOCKS_BAD);
    cr_assert_eq(g.used, 0);
    /* NMETHODS longer than what came: wait (the peek timeout ends it). */
    cr_assert_eq(greet_n(B("\x05\x05\x00\x02"), true, &g), FILTER_SOCKS_NEED_MORE);
    cr_assert_eq(g.used, 0);
    /* NMETHODS shorter than what came: the rest is not the greeting's, and
     * a method past NMETHODS is not offered. */
    cr_assert_eq(greet_n(B("\x05\x01\x00\x02"), true, &g), FILTER_SOCKS_OK);
    cr_assert_eq(g.used, 3);
    cr_assert_eq(g.method, FILTER_SOCKS_METHOD_NO_ACCEPT);
    cr_assert_eq(filter_socks_greeting_parse(NULL, 3, false, &g), FILTER_SOCKS_NEED_MORE);
}

Test(socks5, pipelined_greeting_and_request)
{
    /* A client that does not wait for the method answer. */
    static const uint8_t msg[] = "\x05\x01\x00"
                                 "\x05\x01\x00\x03\x09"
                                 "a.example"
                                 "\x01\xbb"
                                 "\x16\x03\x01";
    size_t n = sizeof msg - 1;
    filter_socks_greeting_t g;
    cr_assert_eq(greet_n(msg, n, false, &g), FILTER_SOCKS_OK);
    cr_assert_eq(g.used, 3);
    filter_socks_request_t q;
    cr_assert_eq(req_n(msg + g.used, n - g.used, &q), FILTER_SOCKS_OK, "%s", q.detail);
    cr_assert_eq(q.used, 7 + 9);
    cr_assert_str_eq(q.name, "a.example");
    cr_assert_eq(q.port, 443);
}

Test(socks5, auth)
{
    static const uint8_t m[] = "\x01\x05"
                               "alice"
                               "\x07"
                               "s3:cr3t";
    filter_socks_auth_t a;
    cr_assert_eq(auth_n(m, sizeof m - 1, &a), FILTER_SOCKS_OK, "%s", a.detail);
    cr_assert_eq(a.used, sizeof m - 1);
    cr_assert_str_eq(a.user, "alice");
    cr_assert_eq(a.user_len, 5);
    cr_assert_str_eq(a.password, "s3:cr3t");
    cr_assert_eq(a.password_len, 7);
    cr_assert_null(strstr(a.detail, "s3"));
    auth_prefixes(m, sizeof m - 1);

    /* Trailing bytes are not the message's. */
    static const uint8_t t[] = "\x01\x01u\x01p\x05\x01\x00";
    cr_assert_eq(auth_n(t, sizeof t - 1, &a), FILTER_SOCKS_OK);
    cr_assert_eq(a.used, 5);

    /* PLEN 0: an empty password (curl sends it for a user alone). */
    cr_assert_eq(auth_n(B("\x01\x03"
                          "bob"
                          "\x00"),
                        &a),
                 FILTER_SOCKS_OK);
    cr_assert_eq(a.used, 6);
    cr_assert_str_eq(a.user, "bob");
    cr_assert_eq(a.password_len, 0);
    cr_assert_str_eq(a.password, "");
    auth_prefixes(B("\x01\x03"
                    "bob"
                    "\x00"));

    /* 255 and 255. */
    uint8_t big[FILTER_SOCKS_AUTH_MAX];
    big[0] = 1;
    big[1] = 255;
    memset(big + 2, 'u', 255);
    big[257] = 255;
    memset(big + 258, 'p', 255);
    cr_assert_eq(auth_n(big, sizeof big, &a), FILTER_SOCKS_OK);
    cr_assert_eq(a.used, FILTER_SOCKS_AUTH_MAX);
    cr_assert_eq(a.user_len, 255);
    cr_assert_eq(a.password_len, 255);
    cr_assert_eq(strlen(a.user), 255);
    cr_assert_eq(strlen(a.password), 255);
    auth_prefixes(big, sizeof big);
    /* Non-ASCII is not a control byte. */
    cr_assert_eq(auth_n(B("\x01\x02\xc3\xa9\x02\xff\x80"), &a), FILTER_SOCKS_OK);
}

static void expect_auth_bad(const uint8_t *p, size_t n)
{
    filter_socks_auth_t a;
    cr_assert_eq(auth_n(p, n, &a), FILTER_SOCKS_BAD);
    cr_assert_eq(a.used, 0);
    cr_assert_eq(a.user_len, 0);
    cr_assert_eq(a.password_len, 0);
    static const char zero[FILTER_SOCKS_STR_MAX + 1];
    cr_assert_eq(memcmp(a.user, zero, sizeof zero), 0);
    cr_assert_eq(memcmp(a.password, zero, sizeof zero), 0);
    cr_assert_null(strstr(a.detail, "s3cr3t"));
    for (size_t cut = 0; cut < n; cut++) {
        filter_socks_result_t r = auth_n(p, cut, &a);
        cr_assert(r == FILTER_SOCKS_NEED_MORE || r == FILTER_SOCKS_BAD, "prefix %zu", cut);
    }
}

Test(socks5, auth_hostile)
{
    expect_auth_bad(B("\x05\x01\x00"));             /* a greeting, not VER=1 */
    expect_auth_bad(B("\x00\x01u\x01p"));           /* VER 0 */
    expect_auth_bad(B("\x01\x00\x01p"));            /* ULEN 0 */
    expect_auth_bad(B("\x01\x03u\x00r\x06s3cr3t")); /* NUL in the user */
    expect_auth_bad(B("\x01\x02u\n\x06s3cr3t"));    /* LF in the user */
    expect_auth_bad(B("\x01\x01u\x07s3cr3t\x7f"));  /* DEL in the password */
    expect_auth_bad(B("\x01\x01u\x07s3\x00"
                      "cr3t")); /* NUL in the password */
    /* Found at the first bad byte, before the message is whole. */
    filter_socks_auth_t a;
    cr_assert_eq(auth_n(B("\x01\x09u\x01"), &a), FILTER_SOCKS_BAD);
    cr_assert_eq(auth_n(B("\x01\x01u\x09s3\x00"), &a), FILTER_SOCKS_BAD);
    /* Lengths that promise more than came: wait. */
    cr_assert_eq(auth_n(B("\x01\xff"
                          "user"),
                        &a),
                 FILTER_SOCKS_NEED_MORE);
    cr_assert_eq(auth_n(B("\x01\x04"
                          "user"
                          "\xff"
                          "s3cr3t"),
                        &a),
                 FILTER_SOCKS_NEED_MORE);
    cr_assert_eq(a.user_len, 0);
    cr_assert_eq(a.user[0], '\0');
    cr_assert_eq(filter_socks_auth_parse(NULL, 9, &a), FILTER_SOCKS_NEED_MORE);
}

Test(socks5, request_ipv4)
{
    static const uint8_t m[] = "\x05\x01\x00\x01\xc6\x12\x00\x07\x01\xbb";
    filter_socks_request_t q;
    cr_assert_eq(req_n(m, sizeof m - 1, &q), FILTER_SOCKS_OK, "%s", q.detail);
    cr_assert_eq(q.used, 10);
    cr_assert_eq(q.cmd, FILTER_SOCKS_CMD_CONNECT);
    cr_assert_eq(q.atyp, FILTER_SOCKS_ATYP_IPV4);
    cr_assert(q.is_addr);
    cr_assert_eq(q.addr.family, AF_INET);
    cr_assert_eq(memcmp(q.addr.bytes, "\xc6\x12\x00\x07", 4), 0);
    cr_assert_eq(q.port, 443);
    cr_assert_eq(q.name_len, 0);
    cr_assert_eq(q.reply, FILTER_SOCKS_REP_SUCCEEDED);
    req_prefixes(m, sizeof m - 1);
    /* Trailing garbage is not consumed. */
    static const uint8_t t[] = "\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x16GARBAGE";
    cr_assert_eq(req_n(t, sizeof t - 1, &q), FILTER_SOCKS_OK);
    cr_assert_eq(q.used, 10);
    cr_assert_eq(q.port, 22);
}

Test(socks5, request_ipv6)
{
    static const uint8_t m[] = "\x05\x01\x00\x04"
                               "\xfd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
                               "\x00\x50";
    filter_socks_request_t q;
    cr_assert_eq(req_n(m, sizeof m - 1, &q), FILTER_SOCKS_OK);
    cr_assert_eq(q.used, 22);
    cr_assert_eq(q.atyp, FILTER_SOCKS_ATYP_IPV6);
    cr_assert(q.is_addr);
    cr_assert_eq(q.addr.family, AF_INET6);
    cr_assert_eq(memcmp(q.addr.bytes, m + 4, 16), 0);
    cr_assert_eq(q.port, 80);
    req_prefixes(m, sizeof m - 1);
    /* IPv4-mapped: the IPv4 address it carries (filter/addr.h). */
    static const uint8_t mapped[] =
        "\x05\x01\x00\x04"
        "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\x7f\x00\x00\x01"
        "\x00\x16";
    cr_assert_eq(req_n(mapped, sizeof mapped - 1, &q), FILTER_SOCKS_OK);
    cr_assert_eq(q.addr.family, AF_INET);
    cr_assert_eq(memcmp(q.addr.bytes, "\x7f\x00\x00\x01", 4), 0);
    cr_assert_eq(q.atyp, FILTER_SOCKS_ATYP_IPV6);
}

Test(socks5, request_domain)
{
    static const uint8_t m[] = "\x05\x01\x00\x03\x0b"
                               "Example.COM"
                               "\x01\xbb";
    filter_socks_request_t q;
    cr_assert_eq(req_n(m, sizeof m - 1, &q), FILTER_SOCKS_OK);
    cr_assert_eq(q.used, sizeof m - 1);
    cr_assert_eq(q.atyp, FILTER_SOCKS_ATYP_DOMAIN);
    cr_assert_str_eq(q.name, "Example.COM"); /* raw: the caller normalises */
    cr_assert_eq(q.name_len, 11);
    cr_assert(!q.is_addr);
    cr_assert_eq(q.port, 443);
    req_prefixes(m, sizeof m - 1);

    /* Length 255, and 1. */
    uint8_t big[FILTER_SOCKS_REQUEST_MAX];
    memcpy(big, "\x05\x01\x00\x03\xff", 5);
    memset(big + 5, 'a', 255);
    big[260] = 0x00;
    big[261] = 0x50;
    cr_assert_eq(req_n(big, sizeof big, &q), FILTER_SOCKS_OK);
    cr_assert_eq(q.used, FILTER_SOCKS_REQUEST_MAX);
    cr_assert_eq(q.name_len, 255);
    cr_assert_eq(strlen(q.name), 255);
    req_prefixes(big, sizeof big);
    cr_assert_eq(req_n(B("\x05\x01\x00\x03\x01x\x00\x01"), &q), FILTER_SOCKS_OK);
    cr_assert_str_eq(q.name, "x");
    cr_assert_eq(q.port, 1);

    /* A literal sent as a name is decided as the address. */
    cr_assert_eq(req_n(B("\x05\x01\x00\x03\x09"
                         "127.0.0.1"
                         "\x00\x16"),
                       &q),
                 FILTER_SOCKS_OK);
    cr_assert(q.is_addr);
    cr_assert_eq(q.addr.family, AF_INET);
    cr_assert_str_eq(q.name, "127.0.0.1");
    cr_assert_eq(req_n(B("\x05\x01\x00\x03\x10"
                         "::ffff:10.0.0.1"
                         "\x00"
                         "\x00\x16"),
                       &q),
                 FILTER_SOCKS_BAD); /* NUL */
    cr_assert_eq(req_n(B("\x05\x01\x00\x03\x0f"
                         "::ffff:10.0.0.1"
                         "\x00\x16"),
                       &q),
                 FILTER_SOCKS_OK);
    cr_assert(q.is_addr);
    cr_assert_eq(q.addr.family, AF_INET);
    cr_assert_eq(memcmp(q.addr.bytes, "\x0a\x00\x00\x01", 4), 0);
    cr_assert_eq(req_n(B("\x05\x01\x00\x03\x07"
                         "fd00::1"
                         "\x00\x16"),
                       &q),
                 FILTER_SOCKS_OK);
    cr_assert(q.is_addr);
    cr_assert_eq(q.addr.family, AF_INET6);
    cr_assert_eq(req_n(B("\x05\x01\x00\x03\x09"
                         "[fd00::1]"
                         "\x00\x16"),
                       &q),
                 FILTER_SOCKS_OK);
    cr_assert(!q.is_addr); /* a name the normaliser refuses */
}

Test(socks5, request_hostile)
{
    /* Bad versions, RSV. */
    expect_req_bad(B("\x04\x01\x00\x50\x7f\x00\x00\x01\x00"), FILTER_SOCKS_REP_GENERAL_FAILURE);
    expect_req_bad(B("\x01\x01\x00\x01"), FILTER_SOCKS_REP_GENERAL_FAILURE);
    expect_req_bad(B("\x05\x01\x01\x01\x7f\x00\x00\x01\x00\x16"), FILTER_SOCKS_REP_GENERAL_FAILURE);
    /* Commands other than CONNECT. */
    expect_req_bad(B("\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x16"), FILTER_SOCKS_REP_CMD_UNSUPPORTED);
    expect_req_bad(B("\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00"), FILTER_SOCKS_REP_CMD_UNSUPPORTED);
    expect_req_bad(B("\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x16"), FILTER_SOCKS_REP_CMD_UNSUPPORTED);
    expect_req_bad(B("\x05\xff"), FILTER_SOCKS_REP_CMD_UNSUPPORTED);
    /* Unknown address types. */
    expect_req_bad(B("\x05\x01\x00\x00\x7f\x00\x00\x01\x00\x16"),
                   FILTER_SOCKS_REP_ATYP_UNSUPPORTED);
    expect_req_bad(B("\x05\x01\x00\x02\x7f\x00\x00\x01\x00\x16"),
                   FILTER_SOCKS_REP_ATYP_UNSUPPORTED);
    expect_req_bad(B("\x05\x01\x00\x05"), FILTER_SOCKS_REP_ATYP_UNSUPPORTED);
    expect_req_bad(B("\x05\x01\x00\xff"), FILTER_SOCKS_REP_ATYP_UNSUPPORTED);
    /* The first bad field decides. */
    expect_req_bad(B("\x05\x02\x00\x09"), FILTER_SOCKS_REP_CMD_UNSUPPORTED);
    expect_req_bad(B("\x05\x01\x01\x09"), FILTER_SOCKS_REP_GENERAL_FAILURE);
    /* Domain length 0. */
    expect_req_bad(B("\x05\x01\x00\x03\x00\x00\x50"), FILTER_SOCKS_REP_GENERAL_FAILURE);
    /* Domains no DNS name is spelt with. */
    expect_req_bad(B("\x05\x01\x00\x03\x05"
                     "a\x00.ex"
                     "\x00\x50"),
                   FILTER_SOCKS_REP_HOST_UNREACHABLE);
    expect_req_bad(B("\x05\x01\x00\x03\x05"
                     "a b.x"
                     "\x00\x50"),
                   FILTER_SOCKS_REP_HOST_UNREACHABLE);
    expect_req_bad(B("\x05\x01\x00\x03\x05"
                     "a\nb.x"
                     "\x00\x50"),
                   FILTER_SOCKS_REP_HOST_UNREACHABLE);
    expect_req_bad(B("\x05\x01\x00\x03\x05"
                     "\xc3\xa9.xy"
                     "\x00\x50"),
                   FILTER_SOCKS_REP_HOST_UNREACHABLE);
    expect_req_bad(B("\x05\x01\x00\x03\x05"
                     "ab.x\x7f"
                     "\x00\x50"),
                   FILTER_SOCKS_REP_HOST_UNREACHABLE);
    /* ... found at the bad byte, however much the length promised. */
    filter_socks_request_t q;
    cr_assert_eq(req_n(B("\x05\x01\x00\x03\xff"
                         "ab\x00"),
                       &q),
                 FILTER_SOCKS_BAD);
    cr_assert_eq(q.reply, FILTER_SOCKS_REP_HOST_UNREACHABLE);
    /* Lengths that promise more than came: wait. */
    cr_assert_eq(req_n(B("\x05\x01\x00\x03\xff"
                         "a.example"
                         "PP"),
                       &q),
                 FILTER_SOCKS_NEED_MORE);
    cr_assert_eq(q.name_len, 0);
    cr_assert_eq(q.port, 0);
    cr_assert_eq(req_n(B("\x05\x01\x00\x04\x7f\x00\x00\x01\x00\x16"), &q), FILTER_SOCKS_NEED_MORE);
    cr_assert(!q.is_addr);
    cr_assert_eq(filter_socks_request_parse(NULL, 10, &q), FILTER_SOCKS_NEED_MORE);
    /* Lengths that promise less: the rest is not the request's. */
    cr_assert_eq(req_n(B("\x05\x01\x00\x03\x01"
                         "a.example"
                         "\x01\xbb"),
                       &q),
                 FILTER_SOCKS_OK);
    cr_assert_eq(q.used, 8);
    cr_assert_str_eq(q.name, "a");
    cr_assert_eq(q.port, ('.' << 8) | 'e');
}

Test(socks5, replies)
{
    uint8_t buf[FILTER_SOCKS_REPLY_MAX];
    filter_addr_t v4 = {.family = AF_INET, .bytes = {198, 18, 0, 1}};
    cr_assert_eq(filter_socks_format_reply(FILTER_SOCKS_REP_SUCCEEDED, &v4, 40000, buf, sizeof buf),
                 10);
    cr_assert_eq(memcmp(buf, "\x05\x00\x00\x01\xc6\x12\x00\x01\x9c\x40", 10), 0);

    filter_addr_t v6 = {.family = AF_INET6, .bytes = {0xfd, 0, [15] = 2}};
    cr_assert_eq(filter_socks_format_reply(FILTER_SOCKS_REP_SUCCEEDED, &v6, 443, buf, sizeof buf),
                 22);
    cr_assert_eq(memcmp(buf,
                        "\x05\x00\x00\x04\xfd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
                        "\x00\x02\x01\xbb",
                        22),
                 0);

    /* No bound address: 0.0.0.0:0, whatever port is passed. */
    cr_assert_eq(
        filter_socks_format_reply(FILTER_SOCKS_REP_NOT_ALLOWED, NULL, 1234, buf, sizeof buf), 10);
    cr_assert_eq(memcmp(buf, "\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00", 10), 0);
    cr_assert_eq(filter_socks_format_reply(FILTER_SOCKS_REP_ATYP_UNSUPPORTED, NULL, 0, buf, 10),
                 10);
    cr_assert_eq(buf[1], 0x08);

    for (size_t cap = 0; cap < 10; cap++)
        cr_assert_eq(filter_socks_format_reply(FILTER_SOCKS_REP_SUCCEEDED, &v4, 1, buf, cap),
                     -ENOSPC);
    for (size_t cap = 0; cap < 22; cap++)
        cr_assert_eq(filter_socks_format_reply(FILTER_SOCKS_REP_SUCCEEDED, &v6, 1, buf, cap),
                     -ENOSPC);
    cr_assert_eq(filter_socks_format_reply(FILTER_SOCKS_REP_SUCCEEDED, NULL, 0, NULL, 22), -ENOSPC);
    filter_addr_t none = {0};
    cr_assert_eq(filter_socks_format_reply(FILTER_SOCKS_REP_SUCCEEDED, &none, 1, buf, sizeof buf),
                 -EINVAL);

    cr_assert_eq(filter_socks_format_method(FILTER_SOCKS_METHOD_USERPASS, buf, sizeof buf), 2);
    cr_assert_eq(memcmp(buf, "\x05\x02", 2), 0);
    cr_assert_eq(filter_socks_format_method(FILTER_SOCKS_METHOD_NO_ACCEPT, buf, 2), 2);
    cr_assert_eq(memcmp(buf, "\x05\xff", 2), 0);
    cr_assert_eq(filter_socks_format_method(0, buf, 1), -ENOSPC);

    cr_assert_eq(filter_socks_format_auth_reply(true, buf, sizeof buf), 2);
    cr_assert_eq(memcmp(buf, "\x01\x00", 2), 0);
    cr_assert_eq(filter_socks_format_auth_reply(false, buf, sizeof buf), 2);
    cr_assert_eq(memcmp(buf, "\x01\x01", 2), 0);
    cr_assert_eq(filter_socks_format_auth_reply(false, buf, 1), -ENOSPC);
    cr_assert_eq(filter_socks_format_auth_reply(false, NULL, 2), -ENOSPC);
}
