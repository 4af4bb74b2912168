/* tests/filter/test_proxy_http.c: the HTTP proxy listener's protocol: the
 * request reader, the credentials, the rewrite for the origin and the
 * proxy's own answers. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "filter/http_head.h"
#include "filter/proxy_http.h"

#define MAXH FILTER_HTTP_MAX_HEAD_DEFAULT

static const char *const pxr_names[] = {"OK", "NEED_MORE", "TOO_BIG", "NOT_HTTP", "BAD"};

/* Parse an exact-size copy (so the sanitizers see reads past the end). */
static filter_pxhttp_result_t parse_n(const void *p, size_t n, size_t max, filter_pxhttp_req_t *r)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    filter_pxhttp_result_t res = filter_pxhttp_parse(copy, n, max, r);
    free(copy);
    return res;
}

static filter_pxhttp_result_t parse(const char *s, filter_pxhttp_req_t *r)
{
    return parse_n(s, strlen(s), MAXH, r);
}

static void expect(const char *s, filter_pxhttp_result_t want)
{
    filter_pxhttp_req_t r;
    filter_pxhttp_result_t got = parse(s, &r);
    cr_assert_eq(got, want, "%s (%s), want %s for <%s>", pxr_names[got], r.detail, pxr_names[want],
                 s);
    cr_assert_not_null(r.detail);
    if (got != FILTER_PXHTTP_OK) {
        cr_assert_eq(r.kind, FILTER_PXHTTP_NONE);
        cr_assert_eq(r.host_len, 0);
        cr_assert_eq(r.port, 0);
    }
}

/* Every proper prefix answers NEED_MORE; the whole answers want. */
static void check_prefixes(const char *s, filter_pxhttp_result_t want)
{
    size_t n = strlen(s);
    filter_pxhttp_req_t r;
    for (size_t cut = 0; cut < n; cut++) {
        filter_pxhttp_result_t got = parse_n(s, cut, MAXH, &r);
        cr_assert_eq(got, FILTER_PXHTTP_NEED_MORE, "prefix %zu of <%s>: %s (%s)", cut, s,
                     pxr_names[got], r.detail);
        cr_assert_eq(r.kind, FILTER_PXHTTP_NONE);
        cr_assert_eq(r.head_len, 0);
    }
    cr_assert_eq(parse_n(s, n, MAXH, &r), want);
}

/* RFC 4648 §4 base64 with padding, for building credentials. */
static void b64(const char *in, size_t n, char *out)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(uint8_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(uint8_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (uint8_t)in[i + 2];
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
        out[o++] = i + 1 < n ? al[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? al[v & 63] : '=';
    }
    out[o] = '\0';
}

Test(proxy_http, connect_name)
{
    const char *req = "CONNECT Example.COM:443 HTTP/1.1\r\nHost: example.com:443\r\n"
                      "User-Agent: curl/8.5.0\r\nProxy-Connection: Keep-Alive\r\n\r\n";
    filter_pxhttp_req_t r;
    cr_assert_eq(parse(req, &r), FILTER_PXHTTP_OK, "%s", r.detail);
    cr_assert_eq(r.kind, FILTER_PXHTTP_CONNECT);
    cr_assert_str_eq(r.host, "Example.COM"); /* raw: the caller normalises */
    cr_assert_eq(r.host_len, 11);
    cr_assert_eq(r.port, 443);
    cr_assert(!r.is_addr);
    cr_assert(!r.host_conflict);
    cr_assert(!r.has_auth);
    cr_assert(!r.auth_bad);
    cr_assert_eq(r.head, FILTER_HTTP_NAME);
    cr_assert_eq(r.head_len, strlen(req));
    cr_assert_eq(r.path_len, 0);
    cr_assert_eq(r.auth_len, strlen("Example.COM:443"));
    cr_assert_eq(memcmp(req + r.auth_off, "Example.COM:443", r.auth_len), 0);
    check_prefixes(req, FILTER_PXHTTP_OK);

    /* HTTP/1.0, no Host, bare LF. */
    const char *old = "CONNECT a.example:22 HTTP/1.0\n\n";
    cr_assert_eq(parse(old, &r), FILTER_PXHTTP_OK);
    cr_assert_eq(r.port, 22);
    cr_assert_eq(r.head_len, strlen(old));
    check_prefixes(old, FILTER_PXHTTP_OK);
}

Test(proxy_http, connect_bytes_after_head_are_not_the_heads)
{
    /* A client that sends its ClientHello without waiting for the 200. */
    const char head[] = "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n";
    char buf[sizeof head + 8];
    memcpy(buf, head, sizeof head - 1);
    memcpy(buf + sizeof head - 1, "\x16\x03\x01\x02\x00\x01\x00\x01", 8);
    filter_pxhttp_req_t r;
    cr_assert_eq(parse_n(buf, sizeof buf, MAXH, &r), FILTER_PXHTTP_OK);
    cr_assert_eq(r.head_len, sizeof head - 1);
}

Test(proxy_http, connect_literals)
{
    filter_pxhttp_req_t r;
    cr_assert_eq(parse("CONNECT 198.18.0.7:8443 HTTP/1.1\r\n\r\n", &r), FILTER_PXHTTP_OK);
    cr_assert(r.is_addr);
    cr_assert_eq(r.addr.family, AF_INET);
    cr_assert_eq(memcmp(r.addr.bytes, "\xc6\x12\x00\x07", 4), 0);
    cr_assert_str_eq(r.host, "198.18.0.7");
    cr_assert_eq(r.port, 8443);

    cr_assert_eq(parse("CONNECT [fd00::1]:443 HTTP/1.1\r\nHost: [fd00::1]:443\r\n\r\n", &r),
                 FILTER_PXHTTP_OK);
    cr_assert(r.is_addr);
    cr_assert_eq(r.addr.family, AF_INET6);
    cr_assert_str_eq(r.host, "fd00::1");
    cr_assert_eq(r.port, 443);
    cr_assert(!r.host_conflict);

    /* An IPv4-mapped literal is the IPv4 address it carries. */
    cr_assert_eq(parse("CONNECT [::ffff:127.0.0.1]:22 HTTP/1.1\r\n\r\n", &r), FILTER_PXHTTP_OK);
    cr_assert(r.is_addr);
    cr_assert_eq(r.addr.family, AF_INET);
    cr_assert_eq(memcmp(r.addr.bytes, "\x7f\x00\x00\x01", 4), 0);
}

Test(proxy_http, connect_needs_a_port)
{
    expect("CONNECT a.example HTTP/1.1\r\n\r\n", FILTER_PXHTTP_BAD);
    expect("CONNECT a.example: HTTP/1.1\r\n\r\n", FILTER_PXHTTP_BAD);
    expect("CONNECT a.example:0 HTTP/1.1\r\n\r\n", FILTER_PXHTTP_BAD);
    expect("CONNECT a.example:000 HTTP/1.1\r\n\r\n", FILTER_PXHTTP_BAD);
    expect("CONNECT a.example:65536 HTTP/1.1\r\n\r\n", FILTER_PXHTTP_BAD);
    expect("CONNECT [fd00::1] HTTP/1.1\r\n\r\n", FILTER_PXHTTP_BAD);
    expect("CONNECT [fd00::1]: HTTP/1.1\r\n\r\n", FILTER_PXHTTP_BAD);
    expect("CONNECT 198.18.0.1 HTTP/1.1\r\n\r\n", FILTER_PXHTTP_BAD);
    filter_pxhttp_req_t r;
    cr_assert_eq(parse("CONNECT a.example:0443 HTTP/1.1\r\n\r\n", &r), FILTER_PXHTTP_OK);
    cr_assert_eq(r.port, 443);
    cr_assert_eq(parse("CONNECT a.example:65535 HTTP/1.1\r\n\r\n", &r), FILTER_PXHTTP_OK);
    cr_assert_eq(r.port, 65535);
    cr_assert_eq(parse("CONNECT a.example HTTP/1.1\r\n\r\n", &r), FILTER_PXHTTP_BAD);
    cr_assert_not_null(strstr(r.detail, "port"), "%s", r.detail);
}

Test(proxy_http, connect_other_targets)
{
    expect("CONNECT / HTTP/1.1\r\nHost: a.example:443\r\n\r\n", FILTER_PXHTTP_BAD);
    expect("CONNECT http://a.example:443/ HTTP/1.1\r\n\r\n", FILTER_PXHTTP_BAD);
    expect("CONNECT user@a.example:443 HTTP/1.1\r\n\r\n", FILTER_PXHTTP_BAD);
    expect("CONNECT a.example:443:1 HTTP/1.1\r\n\r\n", FILTER_PXHTTP_BAD);
    expect("CONNECT a\\b.example:443 HTTP/1.1\r\n\r\n", FILTER_PXHTTP_BAD);
    /* Method names are case-sensitive (RFC 9110 §9.1): "connect" is another
     * method with an authority-form target, so no absolute URI. */
    expect("connect a.example:443 HTTP/1.1\r\n\r\n", FILTER_PXHTTP_BAD);
}

Test(proxy_http, connect_host_conflict_is_reported)
{
    filter_pxhttp_req_t r;
    cr_assert_eq(parse("CONNECT a.example:443 HTTP/1.1\r\nHost: b.example:443\r\n\r\n", &r),
                 FILTER_PXHTTP_OK);
    cr_assert(r.host_conflict);
    cr_assert_str_eq(r.host, "a.example");
}

Test(proxy_http, forward)
{
    const char *req = "GET http://www.example.com/a/b?c=d HTTP/1.1\r\nHost: www.example.com\r\n"
                      "Accept: */*\r\n\r\n";
    filter_pxhttp_req_t r;
    cr_assert_eq(parse(req, &r), FILTER_PXHTTP_OK, "%s", r.detail);
    cr_assert_eq(r.kind, FILTER_PXHTTP_FORWARD);
    cr_assert_str_eq(r.host, "www.example.com");
    cr_assert_eq(r.port, 80);
    cr_assert_eq(r.head_len, strlen(req));
    cr_assert_eq(r.auth_len, strlen("www.example.com"));
    cr_assert_eq(memcmp(req + r.auth_off, "www.example.com", r.auth_len), 0);
    cr_assert_eq(r.path_len, strlen("/a/b?c=d"));
    cr_assert_eq(memcmp(req + r.path_off, "/a/b?c=d", r.path_len), 0);
    cr_assert(!r.host_conflict);
    check_prefixes(req, FILTER_PXHTTP_OK);

    cr_assert_eq(parse("POST HTTP://a.example:8080 HTTP/1.0\r\n\r\n", &r), FILTER_PXHTTP_OK);
    cr_assert_eq(r.kind, FILTER_PXHTTP_FORWARD);
    cr_assert_eq(r.port, 8080);
    cr_assert_eq(r.path_len, 0);
    /* An empty port is the default one (RFC 3986 §3.2.3). */
    cr_assert_eq(parse("GET http://a.example:/ HTTP/1.1\r\n\r\n", &r), FILTER_PXHTTP_OK);
    cr_assert_eq(r.port, 80);
    cr_assert_eq(parse("GET hTtP://[fd00::2]:81?x HTTP/1.1\r\n\r\n", &r), FILTER_PXHTTP_OK);
    cr_assert(r.is_addr);
    cr_assert_str_eq(r.host, "fd00::2");
    cr_assert_eq(r.port, 81);
    cr_assert_eq(parse("GET http://198.18.0.9#f HTTP/1.1\r\n\r\n", &r), FILTER_PXHTTP_OK);
    cr_assert(r.is_addr);
    cr_assert_eq(r.port, 80);
    /* The URI wins; a Host naming another host is reported. */
    cr_assert_eq(parse("GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n", &r),
                 FILTER_PXHTTP_OK);
    cr_assert_str_eq(r.host, "a.example");
    cr_assert(r.host_conflict);
}

Test(proxy_http, forward_refusals)
{
    filter_pxhttp_req_t r;
    static const char *const bad[] = {
        /* origin-form and asterisk-form: a request for the proxy itself */
        "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "GET /x HTTP/1.1\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n",
        /* other schemes */
        "GET https://a.example/ HTTP/1.1\r\n\r\n",
        "GET ftp://a.example/ HTTP/1.1\r\n\r\n",
        "GET ws://a.example/ HTTP/1.1\r\n\r\n",
        "GET httpx://a.example/ HTTP/1.1\r\n\r\n",
        "GET htt://a.example/ HTTP/1.1\r\n\r\n",
        /* userinfo (RFC 9110 §4.2.4) */
        "GET http://user@a.example/ HTTP/1.1\r\n\r\n",
        "GET http://u:p@a.example:80/ HTTP/1.1\r\n\r\n",
        "GET http://@a.example/ HTTP/1.1\r\n\r\n",
        /* port 0, a bad port, no host */
        "GET http://a.example:0/ HTTP/1.1\r\n\r\n",
        "GET http://a.example:99999/ HTTP/1.1\r\n\r\n",
        "GET http://a.example:8x/ HTTP/1.1\r\n\r\n",
        "GET http:/// HTTP/1.1\r\n\r\n",
        "GET http:// HTTP/1.1\r\n\r\n",
        "GET http://:80/ HTTP/1.1\r\n\r\n",
        /* WHATWG backslash */
        "GET http://blocked.test\\@allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
        /* not a target at all */
        "GET a.example:80 HTTP/1.1\r\n\r\n",
        "GET http:a.example HTTP/1.1\r\n\r\n",
        /* Host problems http_head.h finds */
        "GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect(bad[i], FILTER_PXHTTP_BAD);
        parse(bad[i], &r);
        cr_assert_eq(r.head_len, strlen(bad[i]), "<%s>", bad[i]);
        cr_assert_neq(r.head, FILTER_HTTP_NAME, "<%s>", bad[i]);
        cr_assert_eq(r.auth_len, 0);
        cr_assert_eq(r.path_len, 0);
        check_prefixes(bad[i], FILTER_PXHTTP_BAD);
    }
    parse("GET http://a.example/ HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", &r);
    cr_assert_eq(r.head, FILTER_HTTP_MULTI_HOST);
    parse("GET / HTTP/1.1\r\n\r\n", &r);
    cr_assert_eq(r.head, FILTER_HTTP_NO_NAME);
    parse("GET https://a.example/ HTTP/1.1\r\n\r\n", &r);
    cr_assert_eq(r.head, FILTER_HTTP_BAD_NAME);
    cr_assert_not_null(strstr(r.detail, "scheme"), "%s", r.detail);
}

Test(proxy_http, not_http_too_big_need_more)
{
    filter_pxhttp_req_t r;
    expect("", FILTER_PXHTTP_NEED_MORE);
    expect("CONNECT a.example:443 HTTP/1.1\r\n", FILTER_PXHTTP_NEED_MORE);
    expect("\x16\x03\x01\x00", FILTER_PXHTTP_NOT_HTTP);
    expect("\x05\x01\x00", FILTER_PXHTTP_NOT_HTTP);
    expect("\x04\x01\x00\x50", FILTER_PXHTTP_NOT_HTTP);
    expect("CONNECT a.example:443 HTTP/2.0\r\n\r\n", FILTER_PXHTTP_NOT_HTTP);
    expect("CONNECT a.example:443 HTTP/1.1\r\nX : y\r\n\r\n", FILTER_PXHTTP_NOT_HTTP);
    expect("CONNECT a.example:443 HTTP/1.1\r\nX: \x01\r\n\r\n", FILTER_PXHTTP_NOT_HTTP);
    const char *req = "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n";
    cr_assert_eq(parse_n(req, strlen(req), 20, &r), FILTER_PXHTTP_TOO_BIG);
    cr_assert_eq(r.head_len, 0);
    cr_assert_eq(parse_n(req, strlen(req), strlen(req), &r), FILTER_PXHTTP_OK);
    cr_assert_eq(parse_n(req, strlen(req), strlen(req) - 1, &r), FILTER_PXHTTP_TOO_BIG);
    cr_assert_eq(filter_pxhttp_parse(NULL, 5, MAXH, &r), FILTER_PXHTTP_NEED_MORE);
}

/* The credentials of one Proxy-Authorization value. */
static filter_pxhttp_req_t auth_of(const char *value)
{
    char req[4096];
    snprintf(req, sizeof req,
             "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n"
             "Proxy-Authorization: %s\r\n\r\n",
             value);
    filter_pxhttp_req_t r;
    cr_assert_eq(parse(req, &r), FILTER_PXHTTP_OK, "%s", r.detail);
    cr_assert(r.has_auth);
    cr_assert_eq(r.user[r.user_len], '\0');
    cr_assert_eq(r.password[r.password_len], '\0');
    return r;
}

static void expect_cred(const char *userpass, const char *user, const char *password)
{
    char v[1200] = "Basic ";
    b64(userpass, strlen(userpass), v + 6);
    filter_pxhttp_req_t r = auth_of(v);
    cr_assert(!r.auth_bad, "%s for <%s>", r.detail, v);
    cr_assert_eq(r.user_len, strlen(user));
    cr_assert_str_eq(r.user, user);
    cr_assert_eq(r.password_len, strlen(password));
    cr_assert_str_eq(r.password, password);
}

/* The value is unusable: auth_bad, nothing kept, no secret in detail. */
static void expect_auth_bad(const char *value)
{
    filter_pxhttp_req_t r = auth_of(value);
    cr_assert(r.auth_bad, "<%s> accepted", value);
    cr_assert_eq(r.user_len, 0);
    cr_assert_eq(r.password_len, 0);
    static const char zero[FILTER_PXHTTP_CRED_MAX + 1];
    cr_assert_eq(memcmp(r.user, zero, sizeof zero), 0);
    cr_assert_eq(memcmp(r.password, zero, sizeof zero), 0);
    cr_assert_eq(r.kind, FILTER_PXHTTP_CONNECT); /* the request itself is fine */
}

Test(proxy_http, basic_credentials)
{
    filter_pxhttp_req_t r = auth_of("Basic dXNlcjpwYXNz");
    cr_assert(!r.auth_bad);
    cr_assert_str_eq(r.user, "user");
    cr_assert_str_eq(r.password, "pass");
    /* Scheme case, spaces before the token and around the value. */
    r = auth_of("basic   dXNlcjpwYXNz   ");
    cr_assert(!r.auth_bad);
    cr_assert_str_eq(r.password, "pass");
    r = auth_of("BASIC dXNlcjpwYXNz");
    cr_assert(!r.auth_bad);
    /* Every padding length. */
    expect_cred("a:b", "a", "b");     /* YTpi */
    expect_cred("ab:c", "ab", "c");   /* YWI6Yw== */
    expect_cred("ab:cd", "ab", "cd"); /* YWI6Y2Q= */
    expect_cred("abc:def", "abc", "def");
    /* The password keeps its ':'; the user is before the first one. */
    expect_cred("u:p:q", "u", "p:q");
    expect_cred("u::", "u", ":");
    expect_cred("u:", "u", "");
    expect_cred(":p", "", "p");
    expect_cred(":", "", "");
    /* UTF-8 is not a control byte. */
    expect_cred("\xc3\xa9l\xc3\xa8ve:m\xc3\xb6t", "\xc3\xa9l\xc3\xa8ve", "m\xc3\xb6t");

    /* The longest of each. */
    char up[600], user[300], pw[300];
    memset(user, 'u', 255);
    user[255] = '\0';
    memset(pw, 'p', 255);
    pw[255] = '\0';
    snprintf(up, sizeof up, "%s:%s", user, pw);
    expect_cred(up, user, pw);
}

Test(proxy_http, basic_credentials_refused)
{
    expect_auth_bad("Basic dXNlcg==");           /* "user": no ':' */
    expect_auth_bad("Basic ");                   /* no token */
    expect_auth_bad("Basic");                    /* no token */
    expect_auth_bad("Bearer dXNlcjpwYXNz");      /* another scheme */
    expect_auth_bad("Digest username=\"u\"");    /* another scheme */
    expect_auth_bad("Basicx dXNlcjpwYXNz");      /* another scheme */
    expect_auth_bad("dXNlcjpwYXNz");             /* no scheme */
    expect_auth_bad("Basic dXNl*jpwYXNz");       /* bad char */
    expect_auth_bad("Basic dXNlcjpwYXN6-");      /* bad char, length */
    expect_auth_bad("Basic dXNlcjpw_XNz");       /* base64url is not base64 */
    expect_auth_bad("Basic YWI6Yw");             /* padding left out */
    expect_auth_bad("Basic YWI6Yw=");            /* padding short */
    expect_auth_bad("Basic YWI6Yw===");          /* padding long */
    expect_auth_bad("Basic YWI6Yx==");           /* pad bits set (non-canonical) */
    expect_auth_bad("Basic YWI6Y2R=");           /* pad bits set (non-canonical) */
    expect_auth_bad("Basic YW=6Yw==");           /* '=' inside */
    expect_auth_bad("Basic YWI6=w==");           /* digit after '=' */
    expect_auth_bad("Basic YTpi====");           /* a whole quantum of '=' */
    expect_auth_bad("Basic YWI6Yw==YTpi");       /* padding before the end */
    expect_auth_bad("Basic dXNlcjpwYXNz extra"); /* junk after the token */
    expect_auth_bad("Basic\tdXNlcjpwYXNz");      /* 1*SP, not HTAB */

    /* Control bytes, too long. */
    char v[1200] = "Basic ";
    b64("u:p\x01", 4, v + 6);
    expect_auth_bad(v);
    b64("u\x7f:p", 4, v + 6);
    expect_auth_bad(v);
    b64("u\0x:p", 5, v + 6);
    expect_auth_bad(v);
    char up[600];
    memset(up, 'u', 256);
    memcpy(up + 256, ":p", 3);
    b64(up, strlen(up), v + 6);
    expect_auth_bad(v);
    memset(up, 'p', sizeof up);
    memcpy(up, "u:", 2);
    up[2 + 256] = '\0';
    b64(up, strlen(up), v + 6);
    expect_auth_bad(v);

    /* More than one field, even two good ones. */
    filter_pxhttp_req_t r;
    cr_assert_eq(parse("CONNECT a.example:443 HTTP/1.1\r\nProxy-Authorization: Basic YTpi\r\n"
                       "proxy-authorization: Basic YTpi\r\n\r\n",
                       &r),
                 FILTER_PXHTTP_OK);
    cr_assert(r.has_auth && r.auth_bad);
    cr_assert_eq(r.user_len, 0);
    /* Other fields are not credentials. */
    cr_assert_eq(parse("CONNECT a.example:443 HTTP/1.1\r\nAuthorization: Basic YTpi\r\n"
                       "X-Proxy-Authorization: Basic YTpi\r\nProxy-Authorization2: Basic YTpi\r\n"
                       "\r\n",
                       &r),
                 FILTER_PXHTTP_OK);
    cr_assert(!r.has_auth && !r.auth_bad);
}

Test(proxy_http, credentials_never_in_detail)
{
    static const char *const values[] = {
        "Basic czNjcjN0OnMzY3IzdA==", /* s3cr3t:s3cr3t */
        "Basic czNjcjN0",             /* s3cr3t */
        "Bearer s3cr3t",
        "Basic s3cr3t",
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        filter_pxhttp_req_t r = auth_of(values[i]);
        cr_assert_null(strstr(r.detail, "s3cr3t"), "%s", r.detail);
    }
    filter_pxhttp_req_t r;
    cr_assert_eq(parse("GET / HTTP/1.1\r\nProxy-Authorization: Basic s3cr3t\r\n\r\n", &r),
                 FILTER_PXHTTP_BAD);
    cr_assert_null(strstr(r.detail, "s3cr3t"));
    cr_assert(!r.has_auth); /* a refused request carries no credentials */
    cr_assert_eq(parse("GET http://a.example/ HTTP/1.1\r\nProxy-Authorization: Basic s3cr3t\r\n"
                       "\r\n",
                       &r),
                 FILTER_PXHTTP_OK);
    cr_assert(r.auth_bad);
    cr_assert_null(strstr(r.detail, "s3cr3t"));
}

/* Rewrite req (which must parse as FORWARD) and compare with want. */
static void expect_rewrite(const char *req, const char *want)
{
    filter_pxhttp_req_t r;
    size_t n = strlen(req);
    uint8_t *copy = malloc(n);
    memcpy(copy, req, n);
    cr_assert_eq(filter_pxhttp_parse(copy, n, MAXH, &r), FILTER_PXHTTP_OK, "%s", r.detail);
    cr_assert_eq(r.kind, FILTER_PXHTTP_FORWARD);
    size_t cap = 2 * r.head_len + FILTER_PXHTTP_REWRITE_EXTRA;
    uint8_t *out = malloc(cap);
    int w = filter_pxhttp_rewrite(copy, n, &r, out, cap);
    cr_assert_gt(w, 0, "%d", w);
    cr_assert_eq((size_t)w, strlen(want), "got <%.*s>\nwant <%s>", w, (const char *)out, want);
    cr_assert_eq(memcmp(out, want, (size_t)w), 0, "got <%.*s>\nwant <%s>", w, (const char *)out,
                 want);

    /* What the origin reads: an origin-form head with the URI's host. */
    filter_http_head_t h;
    cr_assert_eq(filter_http_head_parse(out, (size_t)w, (size_t)w, &h), FILTER_HTTP_NAME, "%s",
                 h.detail);
    cr_assert(!h.from_uri);
    cr_assert_eq(h.head_len, (size_t)w);
    cr_assert_str_eq(h.name, r.host);

    /* Every cap short of the length is -ENOSPC; the exact length fits. */
    for (size_t c = 0; c < (size_t)w; c++) {
        uint8_t *small = malloc(c ? c : 1);
        cr_assert_eq(filter_pxhttp_rewrite(copy, n, &r, small, c), -ENOSPC, "cap %zu", c);
        free(small);
    }
    uint8_t *exact = malloc((size_t)w);
    cr_assert_eq(filter_pxhttp_rewrite(copy, n, &r, exact, (size_t)w), w);
    cr_assert_eq(memcmp(exact, out, (size_t)w), 0);
    free(exact);
    free(out);
    free(copy);
}

Test(proxy_http, rewrite_drops_proxy_fields_and_replaces_connection)
{
    expect_rewrite("GET http://www.example.com/a/b?x=1&y=%2F#frag HTTP/1.1\r\n"
                   "Host: www.example.com\r\n"
                   "User-Agent: t/1\r\n"
                   "Proxy-Connection: keep-alive\r\n"
                   "Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"
                   "Accept: */*\r\n"
                   "Connection: keep-alive, X-Secret\r\n"
                   "Keep-Alive: timeout=5\r\n"
                   "Proxy: http://evil.example/\r\n"
                   "PROXY-whatever: x\r\n"
                   "X-Proxy-Thing: kept\r\n"
                   "Proxyish: kept\r\n"
                   "X-Secret: kept (Connection's options are not honoured)\r\n"
                   "X-Note:Connection: close\r\n"
                   "\r\n"
                   "BODY",
                   "GET /a/b?x=1&y=%2F HTTP/1.1\r\n"
                   "Host: www.example.com\r\n"
                   "User-Agent: t/1\r\n"
                   "Accept: */*\r\n"
                   "X-Proxy-Thing: kept\r\n"
                   "Proxyish: kept\r\n"
                   "X-Secret: kept (Connection's options are not honoured)\r\n"
                   "X-Note:Connection: close\r\n"
                   "Connection: close\r\n"
                   "\r\n");
}

Test(proxy_http, rewrite_host)
{
    /* Added first when missing, with the URI's port. */
    expect_rewrite("GET http://a.example:8080 HTTP/1.0\r\nAccept: x\r\n\r\n",
                   "GET / HTTP/1.0\r\nHost: a.example:8080\r\nAccept: x\r\nConnection: close\r\n"
                   "\r\n");
    /* Replaced in place by the URI's authority (RFC 9112 §3.2.2). */
    expect_rewrite(
        "GET http://a.example/ HTTP/1.1\r\nAccept: x\r\nHOST:  b.example \r\nX: y\r\n\r\n",
        "GET / HTTP/1.1\r\nAccept: x\r\nHost: a.example\r\nX: y\r\nConnection: close\r\n"
        "\r\n");
    expect_rewrite("GET http://A.Example:81/p HTTP/1.1\r\nHost: a.example:81\r\n\r\n",
                   "GET /p HTTP/1.1\r\nHost: A.Example:81\r\nConnection: close\r\n\r\n");
    /* Literals keep their brackets. */
    expect_rewrite("GET http://[fd00::2]:81/x HTTP/1.1\r\n\r\n",
                   "GET /x HTTP/1.1\r\nHost: [fd00::2]:81\r\nConnection: close\r\n\r\n");
    expect_rewrite(
        "PUT http://198.18.0.9 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "PUT / HTTP/1.1\r\nHost: 198.18.0.9\r\nContent-Length: 0\r\nConnection: close\r\n"
        "\r\n");
}

Test(proxy_http, rewrite_origin_form)
{
    expect_rewrite("GET http://a.example?q=1 HTTP/1.1\r\n\r\n",
                   "GET /?q=1 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n");
    expect_rewrite("GET http://a.example#f HTTP/1.1\r\n\r\n",
                   "GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n");
    expect_rewrite("GET http://a.example/?#f?x HTTP/1.1\r\n\r\n",
                   "GET /? HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n");
    expect_rewrite("GET http://a.example//x//y/../z?a=http://b.example/ HTTP/1.1\r\n\r\n",
                   "GET //x//y/../z?a=http://b.example/ HTTP/1.1\r\nHost: a.example\r\n"
                   "Connection: close\r\n\r\n");
    /* Lines end in CRLF whatever they ended in. */
    expect_rewrite("DELETE http://a.example/x HTTP/1.1\nA: 1\nB: 2\r\nProxy-Connection: x\n\n",
                   "DELETE /x HTTP/1.1\r\nHost: a.example\r\nA: 1\r\nB: 2\r\nConnection: close\r\n"
                   "\r\n");
    /* Framing fields are kept, even when Connection names them. */
    expect_rewrite("POST http://a.example/u HTTP/1.1\r\nConnection: Content-Length, "
                   "Transfer-Encoding, Host\r\nContent-Length: 3\r\n\r\nabc",
                   "POST /u HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n"
                   "Connection: close\r\n\r\n");
    /* Values are kept byte for byte (tabs, obs-text, inner spaces). */
    expect_rewrite("GET http://a.example/ HTTP/1.1\r\nX-A:\t v \t w\t\r\nX-B: \xe9\xff\r\n\r\n",
                   "GET / HTTP/1.1\r\nHost: a.example\r\nX-A:\t v \t w\t\r\nX-B: \xe9\xff\r\n"
                   "Connection: close\r\n\r\n");
}

Test(proxy_http, rewrite_worst_case_size)
{
    /* Short bare-LF lines and a long authority, no Host: the most growth. */
    char req[4096];
    size_t n = (size_t)snprintf(req, sizeof req, "G http://%0200d/ HTTP/1.1\n", 0);
    memcpy(req + 9, "a", 1);
    while (n + 4 < 4000) {
        memcpy(req + n, "a:\n", 3);
        n += 3;
    }
    req[n++] = '\n';
    req[n] = '\0';
    filter_pxhttp_req_t r;
    cr_assert_eq(parse(req, &r), FILTER_PXHTTP_OK, "%s", r.detail);
    size_t cap = 2 * r.head_len + FILTER_PXHTTP_REWRITE_EXTRA;
    uint8_t *out = malloc(cap);
    int w = filter_pxhttp_rewrite((const uint8_t *)req, n, &r, out, cap);
    cr_assert_gt(w, (int)r.head_len);
    free(out);
}

Test(proxy_http, rewrite_refuses_what_is_not_a_forward)
{
    const char *c = "CONNECT a.example:443 HTTP/1.1\r\n\r\n";
    filter_pxhttp_req_t r;
    uint8_t out[256];
    cr_assert_eq(parse(c, &r), FILTER_PXHTTP_OK);
    cr_assert_eq(filter_pxhttp_rewrite((const uint8_t *)c, strlen(c), &r, out, sizeof out),
                 -EINVAL);
    const char *f = "GET http://a.example/ HTTP/1.1\r\n\r\n";
    cr_assert_eq(parse(f, &r), FILTER_PXHTTP_OK);
    cr_assert_eq(filter_pxhttp_rewrite(NULL, strlen(f), &r, out, sizeof out), -EINVAL);
    cr_assert_eq(filter_pxhttp_rewrite((const uint8_t *)f, strlen(f), NULL, out, sizeof out),
                 -EINVAL);
    /* A buffer shorter than the head the request names. */
    cr_assert_eq(filter_pxhttp_rewrite((const uint8_t *)f, r.head_len - 1, &r, out, sizeof out),
                 -EINVAL);
    filter_pxhttp_req_t bogus = r;
    bogus.path_off = r.head_len;
    bogus.path_len = 1;
    cr_assert_eq(filter_pxhttp_rewrite((const uint8_t *)f, strlen(f), &bogus, out, sizeof out),
                 -EINVAL);
    bogus = r;
    bogus.auth_off = (size_t)-1;
    cr_assert_eq(filter_pxhttp_rewrite((const uint8_t *)f, strlen(f), &bogus, out, sizeof out),
                 -EINVAL);
    cr_assert_eq(parse("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &r), FILTER_PXHTTP_BAD);
    cr_assert_eq(filter_pxhttp_rewrite((const uint8_t *)f, strlen(f), &r, out, sizeof out),
                 -EINVAL);
    cr_assert_eq(parse(f, &r), FILTER_PXHTTP_OK);
    cr_assert_eq(filter_pxhttp_rewrite((const uint8_t *)f, strlen(f), &r, NULL, 0), -ENOSPC);
}

static void expect_answer(filter_pxhttp_answer_t a, const char *host, const char *want)
{
    char buf[FILTER_PXHTTP_ANSWER_MAX];
    int n = filter_pxhttp_format(a, host, host ? strlen(host) : 0, buf, sizeof buf);
    cr_assert_eq(n, (int)strlen(want), "%d: got <%s>\nwant <%s>", n, buf, want);
    cr_assert_str_eq(buf, want);
}

Test(proxy_http, answers_exact_bytes)
{
    expect_answer(FILTER_PXHTTP_ANSWER_200, "a.example",
                  "HTTP/1.1 200 Connection established\r\n\r\n");
    expect_answer(FILTER_PXHTTP_ANSWER_400, "a.example",
                  "HTTP/1.1 400 Bad Request\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: 24\r\n"
                  "Connection: close\r\n"
                  "\r\n"
                  "moat: bad proxy request\n");
    expect_answer(FILTER_PXHTTP_ANSWER_403, "a.example",
                  "HTTP/1.1 403 Forbidden\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: 47\r\n"
                  "Connection: close\r\n"
                  "X-Proxy-Error: blocked-by-allowlist\r\n"
                  "\r\n"
                  "moat: a.example is not on the egress allowlist\n");
    expect_answer(FILTER_PXHTTP_ANSWER_407, NULL,
                  "HTTP/1.1 407 Proxy Authentication Required\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: 36\r\n"
                  "Connection: close\r\n"
                  "Proxy-Authenticate: Basic realm=\"moat\"\r\n"
                  "\r\n"
                  "moat: proxy authentication required\n");
    expect_answer(FILTER_PXHTTP_ANSWER_502_DNS, "a.example",
                  "HTTP/1.1 502 Bad Gateway\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: 33\r\n"
                  "Connection: close\r\n"
                  "X-Proxy-Error: dns-failure\r\n"
                  "\r\n"
                  "moat: a.example does not resolve\n");
    expect_answer(FILTER_PXHTTP_ANSWER_502_DIAL, "a.example",
                  "HTTP/1.1 502 Bad Gateway\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: 34\r\n"
                  "Connection: close\r\n"
                  "X-Proxy-Error: dial-failed\r\n"
                  "\r\n"
                  "moat: cannot connect to a.example\n");
    expect_answer(FILTER_PXHTTP_ANSWER_504_TIMEOUT, "a.example",
                  "HTTP/1.1 504 Gateway Timeout\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: 40\r\n"
                  "Connection: close\r\n"
                  "X-Proxy-Error: connect-timeout\r\n"
                  "\r\n"
                  "moat: timed out connecting to a.example\n");
    /* The host is sanitised; none reads "(none)". */
    expect_answer(FILTER_PXHTTP_ANSWER_502_DIAL, "a b\r\nX: y",
                  "HTTP/1.1 502 Bad Gateway\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: 34\r\n"
                  "Connection: close\r\n"
                  "X-Proxy-Error: dial-failed\r\n"
                  "\r\n"
                  "moat: cannot connect to a?b??X:?y\n");
    expect_answer(FILTER_PXHTTP_ANSWER_504_TIMEOUT, "",
                  "HTTP/1.1 504 Gateway Timeout\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: 37\r\n"
                  "Connection: close\r\n"
                  "X-Proxy-Error: connect-timeout\r\n"
                  "\r\n"
                  "moat: timed out connecting to (none)\n");
}

Test(proxy_http, answers_bounds)
{
    char host[400];
    for (size_t i = 0; i < sizeof host; i++)
        host[i] = (char)(i % 3 ? 'a' : 0xff);
    char buf[FILTER_PXHTTP_ANSWER_MAX], ref[FILTER_HTTP_403_MAX];
    for (int a = FILTER_PXHTTP_ANSWER_200; a <= FILTER_PXHTTP_ANSWER_504_TIMEOUT; a++) {
        int n = filter_pxhttp_format((filter_pxhttp_answer_t)a, host, sizeof host, buf, sizeof buf);
        cr_assert_gt(n, 0, "answer %d: %d", a, n);
        cr_assert_eq(strlen(buf), (size_t)n);
        /* Content-Length is the body's length; one body line. */
        const char *body = strstr(buf, "\r\n\r\n") + 4;
        const char *cl = strstr(buf, "Content-Length: ");
        if (a == FILTER_PXHTTP_ANSWER_200) {
            cr_assert_null(cl);
            cr_assert_eq(*body, '\0');
            cr_assert_null(strstr(buf, "Connection:"));
        } else {
            cr_assert_not_null(cl);
            cr_assert_eq((size_t)atoi(cl + 16), strlen(body));
            cr_assert_eq(strchr(body, '\n'), buf + n - 1);
            cr_assert_null(strchr(body, '\r'));
            cr_assert_not_null(strstr(buf, "\r\nConnection: close\r\n"));
        }
        /* Every smaller buffer is -ENOSPC and left empty. */
        for (size_t cap = 0; cap <= (size_t)n; cap++) {
            char small[FILTER_PXHTTP_ANSWER_MAX];
            memset(small, 'x', sizeof small);
            cr_assert_eq(
                filter_pxhttp_format((filter_pxhttp_answer_t)a, host, sizeof host, small, cap),
                -ENOSPC, "answer %d cap %zu", a, cap);
            if (cap > 0)
                cr_assert_eq(small[0], '\0');
        }
    }
    /* The 403 is http_head.h's, byte for byte. */
    static const char *const hosts[] = {"a.example", "", "x y\r\n", "[fd00::1]"};
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        int n = filter_pxhttp_format(FILTER_PXHTTP_ANSWER_403, hosts[i], strlen(hosts[i]), buf,
                                     sizeof buf);
        int m = filter_http_format_403(hosts[i], strlen(hosts[i]), ref, sizeof ref);
        cr_assert_eq(n, m);
        cr_assert_str_eq(buf, ref);
    }
    int n = filter_pxhttp_format(FILTER_PXHTTP_ANSWER_403, host, sizeof host, buf, sizeof buf);
    cr_assert_eq(n, filter_http_format_403(host, sizeof host, ref, sizeof ref));
    cr_assert_str_eq(buf, ref);
    cr_assert_eq(filter_pxhttp_format((filter_pxhttp_answer_t)7, "a", 1, buf, sizeof buf), -EINVAL);
    cr_assert_eq(filter_pxhttp_format((filter_pxhttp_answer_t)-1, "a", 1, buf, sizeof buf),
                 -EINVAL);
    cr_assert_eq(filter_pxhttp_format(FILTER_PXHTTP_ANSWER_400, NULL, 0, NULL, 100), -ENOSPC);
}
