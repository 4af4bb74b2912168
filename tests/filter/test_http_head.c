/* tests/filter/test_http_head.c: the HTTP request-head reader and the 403. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "filter/http_head.h"

#define MAXH FILTER_HTTP_MAX_HEAD_DEFAULT

/* Parse an exact-size copy (so the sanitizers see reads past the end). */
static filter_http_result_t parse_n(const void *p, size_t n, size_t max, filter_http_head_t *h)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    filter_http_result_t r = filter_http_head_parse(copy, n, max, h);
    free(copy);
    return r;
}

static filter_http_result_t parse(const char *s, filter_http_head_t *h)
{
    return parse_n(s, strlen(s), MAXH, h);
}

static void expect(const char *s, filter_http_result_t want)
{
    filter_http_head_t h;
    filter_http_result_t r = parse(s, &h);
    cr_assert_eq(r, want, "%s (%s), want %s for <%s>", filter_http_reason(r), h.detail,
                 filter_http_reason(want), s);
}

static void expect_name(const char *s, const char *name)
{
    filter_http_head_t h;
    filter_http_result_t r = parse(s, &h);
    cr_assert_eq(r, FILTER_HTTP_NAME, "%s (%s) for <%s>", filter_http_reason(r), h.detail, s);
    cr_assert_str_eq(h.name, name);
    cr_assert_eq(h.name_len, strlen(name));
}

/* Every proper prefix answers NEED_MORE (strict) or the final answer; the
 * whole answers want. */
static void check_prefixes(const char *s, size_t n, size_t max, filter_http_result_t want,
                           bool strict)
{
    filter_http_head_t h;
    for (size_t cut = 0; cut < n; cut++) {
        filter_http_result_t r = parse_n(s, cut, max, &h);
        if (strict)
            cr_assert_eq(r, FILTER_HTTP_NEED_MORE, "prefix %zu: %s (%s)", cut,
                         filter_http_reason(r), h.detail);
        else
            cr_assert(r == FILTER_HTTP_NEED_MORE || r == want, "prefix %zu: %s (%s)", cut,
                      filter_http_reason(r), h.detail);
    }
    filter_http_result_t r = parse_n(s, n, max, &h);
    cr_assert_eq(r, want, "whole: %s (%s)", filter_http_reason(r), h.detail);
}

Test(http_head, get_with_host)
{
    const char *req = "GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\n"
                      "Accept: */*\r\n\r\n";
    filter_http_head_t h;
    cr_assert_eq(parse(req, &h), FILTER_HTTP_NAME);
    cr_assert_str_eq(h.name, "example.com");
    cr_assert_eq(h.port, 0);
    cr_assert(!h.from_uri);
    cr_assert(!h.is_addr);
    cr_assert(!h.is_connect);
    cr_assert_eq(h.head_len, strlen(req));
    check_prefixes(req, strlen(req), MAXH, FILTER_HTTP_NAME, true);
}

Test(http_head, body_after_head)
{
    const char *req = "POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello";
    filter_http_head_t h;
    cr_assert_eq(parse(req, &h), FILTER_HTTP_NAME);
    cr_assert_eq(h.head_len, strlen(req) - 5);
}

Test(http_head, host_with_port_and_case)
{
    filter_http_head_t h;
    cr_assert_eq(parse("GET / HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n", &h), FILTER_HTTP_NAME);
    cr_assert_str_eq(h.name, "Example.COM"); /* raw: the caller normalises */
    cr_assert_eq(h.port, 8080);
    expect_name("GET / HTTP/1.1\r\nhost: lower.example\r\n\r\n", "lower.example");
    expect_name("GET / HTTP/1.1\r\nHOST:nospace.example\r\n\r\n", "nospace.example");
    expect_name("GET / HTTP/1.1\r\nhOsT: \t padded.example \t\r\n\r\n", "padded.example");
    expect_name("GET / HTTP/1.1\r\nHost: trailing.example.\r\n\r\n", "trailing.example.");
    expect_name("GET / HTTP/1.1\r\nHost: emptyport.example:\r\n\r\n", "emptyport.example");
    /* Other fields that merely start or end like "host" do not count. */
    expect_name(
        "GET / HTTP/1.1\r\nX-Host: no.example\r\nHosts: no2.example\r\nHost: yes.example\r\n"
        "Ghost: no3.example\r\n\r\n",
        "yes.example");
}

Test(http_head, absolute_form_beats_host)
{
    filter_http_head_t h;
    cr_assert_eq(
        parse("GET http://uri.example:8080/x?y HTTP/1.1\r\nHost: header.example\r\n\r\n", &h),
        FILTER_HTTP_NAME);
    cr_assert_str_eq(h.name, "uri.example");
    cr_assert_eq(h.port, 8080);
    cr_assert(h.from_uri);
    cr_assert(h.host_conflict);
    cr_assert_eq(parse("GET http://Same.Example/ HTTP/1.1\r\nHost: same.example.:80\r\n\r\n", &h),
                 FILTER_HTTP_NAME);
    cr_assert(!h.host_conflict);
    cr_assert_eq(parse("GET HTTPS://nohost.example HTTP/1.1\r\n\r\n", &h), FILTER_HTTP_NAME);
    cr_assert_str_eq(h.name, "nohost.example");
    cr_assert(!h.host_conflict);
    expect_name("GET http://q.example?x=/ HTTP/1.1\r\n\r\n", "q.example");
    expect_name("GET http://f.example#frag HTTP/1.1\r\n\r\n", "f.example");
}

Test(http_head, userinfo)
{
    expect_name("GET http://user@host.example/ HTTP/1.1\r\n\r\n", "host.example");
    expect_name("GET http://user:pw@evil.example@real.example:81/ HTTP/1.1\r\n\r\n",
                "real.example");
    /* '@' is userinfo only in a URI, never in Host. */
    expect("GET / HTTP/1.1\r\nHost: user@host.example\r\n\r\n", FILTER_HTTP_BAD_NAME);
}

/* A backslash in an absolute URI's authority is '/' to WHATWG URL parsers:
 * `http://blocked.test\@allowed.test/` names blocked.test to a browser-like
 * client and allowed.test to RFC 3986. Refused wherever it sits in the
 * authority; after the authority it is path and harmless. */
Test(http_head, backslash_in_authority)
{
    static const char *const bad[] = {
        "GET http://blocked.test\\@allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
        "GET http://blocked.test\\@allowed.test HTTP/1.1\r\n\r\n",
        "GET http://u:p\\@allowed.test:80/x HTTP/1.1\r\n\r\n",
        "GET http://\\@allowed.test/ HTTP/1.1\r\n\r\n",
        "GET http://allowed.test\\ HTTP/1.1\r\n\r\n",
        "GET http://allowed.test:80\\x/ HTTP/1.1\r\n\r\n",
        "GET HTTPS://a\\b@allowed.test?q HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        filter_http_head_t h;
        cr_assert_eq(parse(bad[i], &h), FILTER_HTTP_BAD_NAME, "<%s>: %s", bad[i], h.detail);
        cr_assert_not_null(strstr(h.detail, "WHATWG"), "<%s>: %s", bad[i], h.detail);
        cr_assert_eq(h.name_len, 0);
        check_prefixes(bad[i], strlen(bad[i]), MAXH, FILTER_HTTP_BAD_NAME, true);
    }
    /* Past the authority (path, query, fragment) a backslash is not the host's. */
    expect_name("GET http://allowed.test/\\blocked.test HTTP/1.1\r\n\r\n", "allowed.test");
    expect_name("GET http://allowed.test?\\@blocked.test HTTP/1.1\r\n\r\n", "allowed.test");
    expect_name("GET http://allowed.test#\\@blocked.test HTTP/1.1\r\n\r\n", "allowed.test");
    /* In origin-form the target is not read for a host at all. */
    expect_name("GET /\\@x HTTP/1.1\r\nHost: allowed.test\r\n\r\n", "allowed.test");
}

Test(http_head, ip_literals)
{
    filter_http_head_t h;
    cr_assert_eq(parse("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", &h), FILTER_HTTP_NAME);
    cr_assert_str_eq(h.name, "::1");
    cr_assert(h.is_addr);
    cr_assert_eq(h.addr.family, AF_INET6);
    cr_assert_eq(h.port, 8080);
    cr_assert_eq(parse("GET http://[2001:db8::7]/ HTTP/1.1\r\n\r\n", &h), FILTER_HTTP_NAME);
    cr_assert_str_eq(h.name, "2001:db8::7");
    cr_assert(h.is_addr);
    cr_assert_eq(parse("GET / HTTP/1.1\r\nHost: 203.0.113.7:80\r\n\r\n", &h), FILTER_HTTP_NAME);
    cr_assert_str_eq(h.name, "203.0.113.7");
    cr_assert(h.is_addr);
    cr_assert_eq(h.addr.family, AF_INET);
    cr_assert_eq(parse("GET / HTTP/1.1\r\nHost: 300.1.2.3\r\n\r\n", &h), FILTER_HTTP_NAME);
    cr_assert(!h.is_addr); /* a name the caller's normaliser refuses */
    expect("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET / HTTP/1.1\r\nHost: [zz::1]\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET / HTTP/1.1\r\nHost: [1.2.3.4]\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET / HTTP/1.1\r\nHost: [::1:::::]\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", FILTER_HTTP_BAD_NAME);
}

Test(http_head, connect_authority_form)
{
    filter_http_head_t h;
    const char *req = "CONNECT tunnel.example:443 HTTP/1.1\r\nHost: tunnel.example:443\r\n\r\n";
    cr_assert_eq(parse(req, &h), FILTER_HTTP_NAME);
    cr_assert_str_eq(h.name, "tunnel.example");
    cr_assert_eq(h.port, 443);
    cr_assert(h.is_connect);
    cr_assert(h.from_uri);
    cr_assert(!h.host_conflict);
    cr_assert_eq(parse("CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n", &h), FILTER_HTTP_NAME);
    cr_assert(h.is_addr);
    expect("CONNECT / HTTP/1.1\r\nHost: x.example\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("CONNECT u@x.example:443 HTTP/1.1\r\n\r\n", FILTER_HTTP_BAD_NAME);
    /* Only the exact method is CONNECT (methods are case-sensitive). */
    cr_assert_eq(parse("CONNECTX / HTTP/1.1\r\nHost: a.example\r\n\r\n", &h), FILTER_HTTP_NAME);
    cr_assert(!h.is_connect);
    cr_assert_eq(parse("connect / HTTP/1.1\r\nHost: a.example\r\n\r\n", &h), FILTER_HTTP_NAME);
    cr_assert(!h.is_connect);
}

Test(http_head, no_name)
{
    expect("GET / HTTP/1.0\r\n\r\n", FILTER_HTTP_NO_NAME);
    expect("GET / HTTP/1.0\r\nAccept: */*\r\n\r\n", FILTER_HTTP_NO_NAME);
    expect("GET / HTTP/1.1\r\nHost:\r\n\r\n", FILTER_HTTP_NO_NAME);
    expect("GET / HTTP/1.1\r\nHost:   \r\n\r\n", FILTER_HTTP_NO_NAME);
    expect("OPTIONS * HTTP/1.1\r\n\r\n", FILTER_HTTP_NO_NAME);
    expect_name("OPTIONS * HTTP/1.1\r\nHost: star.example\r\n\r\n", "star.example");
}

Test(http_head, multiple_hosts)
{
    expect("GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", FILTER_HTTP_MULTI_HOST);
    expect("GET / HTTP/1.1\r\nHost: a.example\r\nhost: a.example\r\n\r\n", FILTER_HTTP_MULTI_HOST);
    expect("GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nHOST: b\r\n\r\n",
           FILTER_HTTP_MULTI_HOST);
    expect("GET / HTTP/1.1\r\nHost:\r\nHost: b.example\r\n\r\n", FILTER_HTTP_MULTI_HOST);
}

Test(http_head, bad_names)
{
    char longname[400];
    int n = snprintf(longname, sizeof longname, "GET / HTTP/1.1\r\nHost: ");
    memset(longname + n, 'a', 256);
    strcpy(longname + n + 256, "\r\n\r\n");
    expect(longname, FILTER_HTTP_BAD_NAME);
    strcpy(longname + n + 255, "\r\n\r\n");
    expect(longname, FILTER_HTTP_NAME);
    expect("GET / HTTP/1.1\r\nHost: a.example:99999\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET / HTTP/1.1\r\nHost: a.example:8x\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET / HTTP/1.1\r\nHost: a.example:80:80\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET / HTTP/1.1\r\nHost: :80\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET / HTTP/1.1\r\nHost: a/b.example\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET / HTTP/1.1\r\nHost: a b.example\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET / HTTP/1.1\r\nHost: caf\xc3\xa9.example\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET http:///x HTTP/1.1\r\nHost: a.example\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET http://:80/x HTTP/1.1\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET mailto:x@y.example HTTP/1.1\r\nHost: a.example\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET example.com:80 HTTP/1.1\r\nHost: a.example\r\n\r\n", FILTER_HTTP_BAD_NAME);
    expect("GET 1http://x/ HTTP/1.1\r\n\r\n", FILTER_HTTP_BAD_NAME);
}

Test(http_head, bare_lf_accepted_bare_cr_refused)
{
    const char *lf = "GET / HTTP/1.1\nHost: lf.example\n\n";
    expect_name(lf, "lf.example");
    check_prefixes(lf, strlen(lf), MAXH, FILTER_HTTP_NAME, true);
    expect_name("GET / HTTP/1.1\r\nHost: mixed.example\n\r\n", "mixed.example");
    expect("GET / HTTP/1.1\rHost: x\r\n\r\n", FILTER_HTTP_NOT_HTTP);
    expect("GET / HTTP/1.1\r\nHost: x\r\r\n\r\n", FILTER_HTTP_NOT_HTTP);
    expect("GET / HTTP/1.1\r\nHost: x\r\n\rX", FILTER_HTTP_NOT_HTTP);
}

Test(http_head, too_big_at_the_boundary)
{
    char req[MAXH + 100];
    const char *start = "GET / HTTP/1.1\r\nHost: big.example\r\nX-Pad: ";
    size_t n = strlen(start);
    memcpy(req, start, n);
    /* Pad so the final CRLFCRLF ends exactly at max_head. */
    size_t pad = MAXH - n - 4;
    memset(req + n, 'p', pad);
    memcpy(req + n + pad, "\r\n\r\n", 4);
    size_t len = n + pad + 4;
    cr_assert_eq(len, MAXH);
    filter_http_head_t h;
    cr_assert_eq(parse_n(req, len, MAXH, &h), FILTER_HTTP_NAME);
    cr_assert_eq(h.head_len, MAXH);
    cr_assert_eq(parse_n(req, len, MAXH - 1, &h), FILTER_HTTP_TOO_BIG);
    cr_assert_eq(parse_n(req, len - 1, MAXH - 1, &h), FILTER_HTTP_TOO_BIG);
    cr_assert_eq(parse_n(req, len - 2, MAXH - 1, &h), FILTER_HTTP_NEED_MORE);
    /* More bytes than max_head but the head ends inside: fine. */
    memcpy(req + len, "body", 4);
    cr_assert_eq(parse_n(req, len + 4, MAXH, &h), FILTER_HTTP_NAME);
    cr_assert_eq(h.head_len, MAXH);
    /* An endless field: too big once max_head bytes are in, not before. */
    memset(req + n, 'p', sizeof req - n);
    cr_assert_eq(parse_n(req, MAXH - 1, MAXH, &h), FILTER_HTTP_NEED_MORE);
    cr_assert_eq(parse_n(req, MAXH, MAXH, &h), FILTER_HTTP_TOO_BIG);
    cr_assert_eq(parse_n(req, sizeof req, MAXH, &h), FILTER_HTTP_TOO_BIG);
    cr_assert_eq(parse_n(req, 0, 0, &h), FILTER_HTTP_TOO_BIG);
}

Test(http_head, every_prefix)
{
    const char *reqs[] = {
        ("GET http://user@abs.example:8080/a/b?c HTTP/1.1\r\nHost: abs.example:8080\r\n"
         "Accept: */*\r\nProxy-Connection: Keep-Alive\r\n\r\n"),
        "CONNECT c.example:443 HTTP/1.1\r\nHost: c.example:443\r\n\r\n",
        "HEAD / HTTP/1.0\r\n\r\n",
    };
    static const filter_http_result_t want[] = {FILTER_HTTP_NAME, FILTER_HTTP_NAME,
                                                FILTER_HTTP_NO_NAME};
    for (size_t i = 0; i < 3; i++)
        check_prefixes(reqs[i], strlen(reqs[i]), MAXH, want[i], true);
}

Test(http_head, not_http_early)
{
    /* A TLS record is refused at its first byte. */
    static const uint8_t tls[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01};
    filter_http_head_t h;
    cr_assert_eq(parse_n(tls, 1, MAXH, &h), FILTER_HTTP_NOT_HTTP);
    cr_assert_eq(parse_n(tls, sizeof tls, MAXH, &h), FILTER_HTTP_NOT_HTTP);
    cr_assert_eq(parse_n("", 0, MAXH, &h), FILTER_HTTP_NEED_MORE);
    const char *bad[] = {
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", /* HTTP/2 preface */
        "GET / HTTP/2\r\n\r\n",
        "GET / http/1.1\r\n\r\n",
        "GET / HTTP/1.1x\r\n\r\n",
        "GET /\r\n",               /* HTTP/0.9 */
        "GET  / HTTP/1.1\r\n\r\n", /* two spaces */
        "GET / HTTP/1.1 \r\n\r\n",
        " GET / HTTP/1.1\r\n\r\n",
        "\r\nGET / HTTP/1.1\r\n\r\n", /* leading empty line */
        "G(T / HTTP/1.1\r\n\r\n",
        "GET /\x7f HTTP/1.1\r\n\r\n",
        "GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
        "GET /\t HTTP/1.1\r\n\r\n",
        "SSH-2.0-OpenSSH_9.6\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        check_prefixes(bad[i], strlen(bad[i]), MAXH, FILTER_HTTP_NOT_HTTP, false);
}

Test(http_head, field_syntax)
{
    expect("GET / HTTP/1.1\r\nHost : a.example\r\n\r\n", FILTER_HTTP_NOT_HTTP);
    expect("GET / HTTP/1.1\r\nHost\t: a.example\r\n\r\n", FILTER_HTTP_NOT_HTTP);
    expect("GET / HTTP/1.1\r\nHost: a.example\r\n continued\r\n\r\n", FILTER_HTTP_NOT_HTTP);
    expect("GET / HTTP/1.1\r\nHost: a.example\r\n\tcontinued\r\n\r\n", FILTER_HTTP_NOT_HTTP);
    expect("GET / HTTP/1.1\r\n: novalue\r\n\r\n", FILTER_HTTP_NOT_HTTP);
    expect("GET / HTTP/1.1\r\nNo-Colon\r\n\r\n", FILTER_HTTP_NOT_HTTP);
    expect("GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", FILTER_HTTP_NOT_HTTP);
    expect("GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", FILTER_HTTP_NOT_HTTP);
    expect("GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", FILTER_HTTP_NOT_HTTP);
    /* obs-text and HTAB in values are fine. */
    expect_name("GET / HTTP/1.1\r\nX: caf\xc3\xa9\tok\r\nHost: ok.example\r\n\r\n", "ok.example");
    /* An empty line ends the head even if junk follows. */
    expect_name("GET / HTTP/1.1\r\nHost: ok.example\r\n\r\n\x00\x01", "ok.example");
}

Test(http_head, nul_bytes)
{
    static const char withnul[] = "GET / HTTP/1.1\r\nHost: a\0.example\r\n\r\n";
    static const char namenul[] = "GET / HTTP/1.1\r\nHo\0st: a.example\r\n\r\n";
    static const char linenul[] = "GET /\0 HTTP/1.1\r\n\r\n";
    filter_http_head_t h;
    cr_assert_eq(parse_n(withnul, sizeof withnul - 1, MAXH, &h), FILTER_HTTP_NOT_HTTP);
    cr_assert_eq(parse_n(namenul, sizeof namenul - 1, MAXH, &h), FILTER_HTTP_NOT_HTTP);
    cr_assert_eq(parse_n(linenul, sizeof linenul - 1, MAXH, &h), FILTER_HTTP_NOT_HTTP);
}

Test(http_head, garbage)
{
    uint8_t buf[65536];
    srand(7);
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(rand() & 0xff);
    filter_http_head_t h;
    filter_http_result_t r = parse_n(buf, sizeof buf, MAXH, &h);
    cr_assert(r == FILTER_HTTP_NOT_HTTP || r == FILTER_HTTP_TOO_BIG);
    memset(buf, 'A', sizeof buf);
    cr_assert_eq(parse_n(buf, sizeof buf, MAXH, &h), FILTER_HTTP_TOO_BIG);
    cr_assert_eq(parse_n(buf, 100, MAXH, &h), FILTER_HTTP_NEED_MORE);
    memset(buf, 0, sizeof buf);
    cr_assert_eq(parse_n(buf, sizeof buf, MAXH, &h), FILTER_HTTP_NOT_HTTP);
}

Test(http_head, format_403)
{
    char buf[FILTER_HTTP_403_MAX];
    int n = filter_http_format_403("blocked.example", 15, buf, sizeof buf);
    cr_assert_gt(n, 0);
    cr_assert_eq((size_t)n, strlen(buf));
    cr_assert(strncmp(buf, "HTTP/1.1 403 Forbidden\r\n", 24) == 0);
    cr_assert_not_null(strstr(buf, "\r\nX-Proxy-Error: blocked-by-allowlist\r\n"));
    cr_assert_not_null(strstr(buf, "\r\nContent-Type: text/plain"));
    cr_assert_not_null(strstr(buf, "\r\nConnection: close\r\n"));
    const char *body = strstr(buf, "\r\n\r\n");
    cr_assert_not_null(body);
    body += 4;
    cr_assert_not_null(strstr(body, "blocked.example"));
    cr_assert_eq(strchr(body, '\n'), body + strlen(body) - 1, "one line");
    const char *cl = strstr(buf, "Content-Length: ");
    cr_assert_not_null(cl);
    cr_assert_eq((size_t)atoi(cl + 16), strlen(body));

    /* The response is itself a complete head our reader would accept
     * (status line aside), and the host is sanitised. */
    n = filter_http_format_403("evil\r\nSet-Cookie: x=<script>", 28, buf, sizeof buf);
    cr_assert_gt(n, 0);
    cr_assert_null(strstr(buf, "Set-Cookie: x"));
    cr_assert_null(strstr(buf, "<script>"));
    cr_assert_not_null(strstr(buf, "evil??Set-Cookie:?x??script?"));
    n = filter_http_format_403("[2001:db8::1]", 13, buf, sizeof buf);
    cr_assert_not_null(strstr(buf, "[2001:db8::1]"));

    /* No host, a huge host, a small buffer. */
    n = filter_http_format_403(NULL, 0, buf, sizeof buf);
    cr_assert_gt(n, 0);
    cr_assert_not_null(strstr(buf, "(none)"));
    char huge[2000];
    memset(huge, 'h', sizeof huge);
    n = filter_http_format_403(huge, sizeof huge, buf, sizeof buf);
    cr_assert_gt(n, 0);
    cr_assert_lt((size_t)n, sizeof buf);
    cr_assert_eq(filter_http_format_403("x", 1, buf, 40), -ENOSPC);
    cr_assert_eq(buf[0], '\0');
}

Test(http_head, reasons)
{
    cr_assert_str_eq(filter_http_reason(FILTER_HTTP_NO_NAME), "no-host");
    cr_assert_str_eq(filter_http_reason(FILTER_HTTP_NOT_HTTP), "not-http");
    cr_assert_str_eq(filter_http_reason(FILTER_HTTP_TOO_BIG), "head-too-big");
    cr_assert_str_eq(filter_http_reason(FILTER_HTTP_MULTI_HOST), "multi-host");
    cr_assert_str_eq(filter_http_reason((filter_http_result_t)99), "unknown");
}
