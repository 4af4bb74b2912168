/* tests/config/test_parse.c: the value parsers config.h shares with the CLI
 * (durations, host:port, port ranges). */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "config/config.h"

static int dur(const char *s, uint64_t *ms)
{
    return cfg_parse_duration(s, strlen(s), ms);
}

Test(parse, duration_units)
{
    uint64_t ms = 1;
    cr_assert_eq(dur("250ms", &ms), 0);
    cr_assert_eq(ms, 250);
    cr_assert_eq(dur("2s", &ms), 0);
    cr_assert_eq(ms, 2000);
    cr_assert_eq(dur("5m", &ms), 0);
    cr_assert_eq(ms, 300000);
    cr_assert_eq(dur("1h", &ms), 0);
    cr_assert_eq(ms, 3600000);
    cr_assert_eq(dur("0s", &ms), 0);
    cr_assert_eq(ms, 0);
    cr_assert_eq(dur("007ms", &ms), 0);
    cr_assert_eq(ms, 7);
}

Test(parse, duration_errors)
{
    static const char *const bad[] = {
        "",
        "5",
        "s",
        "ms",
        "-1s",
        "+1s",
        "1.5s",
        "1 s",
        " 1s",
        "1s ",
        "1S",
        "1sec",
        "1d",
        "1us",
        "1mh",
        "1hm",
        "0x10s",
        "1e3ms",
        "18446744073709551616ms", /* 2^64 */
        "5124095576030432h",      /* * 3600000 overflows */
        "307445734561825861m",    /* * 60000 overflows */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t ms = 99;
        cr_assert_eq(dur(bad[i], &ms), -EINVAL, "\"%s\" accepted", bad[i]);
        cr_assert_eq(ms, 0, "\"%s\" left output set", bad[i]);
    }
    uint64_t ms;
    cr_assert_eq(dur("18446744073709551615ms", &ms), 0);
    cr_assert_eq(ms, UINT64_MAX);
    cr_assert_eq(cfg_parse_duration("10sXX", 3, &ms), 0);
    cr_assert_eq(ms, 10000);
}

static int pr(const char *s, filter_port_range_t *r)
{
    return cfg_parse_port_range(s, strlen(s), r);
}

Test(parse, port_ranges)
{
    filter_port_range_t r;
    cr_assert_eq(pr("443", &r), 0);
    cr_assert_eq(r.lo, 443);
    cr_assert_eq(r.hi, 443);
    cr_assert_eq(pr("8000-8100", &r), 0);
    cr_assert_eq(r.lo, 8000);
    cr_assert_eq(r.hi, 8100);
    cr_assert_eq(pr("1-65535", &r), 0);
    cr_assert_eq(r.hi, 65535);
    cr_assert_eq(pr("22-22", &r), 0);
    cr_assert_eq(pr("65535", &r), 0);
    static const char *const bad[] = {
        "",      "0",          "65536",          "0-10",    "10-0", "9000-8000", "-1",
        "1-",    "-",          "1--2",           "1-2-3",   "a",    "443 ",      " 443",
        "1 - 2", "4294967297", "99999999999999", "1-65536", "+1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = (filter_port_range_t){7, 7};
        cr_assert_eq(pr(bad[i], &r), -EINVAL, "\"%s\" accepted", bad[i]);
        cr_assert_eq(r.lo, 0);
        cr_assert_eq(r.hi, 0);
    }
}

static int hp(const char *s, uint16_t def, cfg_addr_t *a)
{
    return cfg_parse_hostport(s, strlen(s), def, a);
}

static uint16_t port_of(const cfg_addr_t *a)
{
    if (a->sa.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
}

Test(parse, hostport_forms)
{
    cfg_addr_t a;
    cr_assert_eq(hp("192.0.2.1", 53, &a), 0);
    cr_assert_eq(a.sa.ss_family, AF_INET);
    cr_assert_eq(port_of(&a), 53);
    cr_assert_eq(a.sa_len, sizeof(struct sockaddr_in));
    cr_assert_str_eq(a.text, "192.0.2.1");

    cr_assert_eq(hp("192.0.2.1:5353", 53, &a), 0);
    cr_assert_eq(port_of(&a), 5353);
    cr_assert_eq(hp("192.0.2.1:5353", 0, &a), 0);

    cr_assert_eq(hp("2001:db8::1", 53, &a), 0);
    cr_assert_eq(a.sa.ss_family, AF_INET6);
    cr_assert_eq(a.sa_len, sizeof(struct sockaddr_in6));
    cr_assert_eq(port_of(&a), 53);

    cr_assert_eq(hp("[2001:db8::1]:853", 53, &a), 0);
    cr_assert_eq(port_of(&a), 853);
    cr_assert_str_eq(a.text, "[2001:db8::1]:853");
    cr_assert_eq(hp("[::1]", 53, &a), 0);
    cr_assert_eq(port_of(&a), 53);

    struct in6_addr want;
    inet_pton(AF_INET6, "2001:db8::1", &want);
    cr_assert_eq(hp("[2001:db8::1]:1", 0, &a), 0);
    cr_assert_arr_eq(&((struct sockaddr_in6 *)&a.sa)->sin6_addr, &want, 16);
}

Test(parse, hostport_errors)
{
    static const struct {
        const char *s;
        uint16_t def;
    } bad[] = {
        {"", 53},
        {"192.0.2.1", 0},   /* port required */
        {"2001:db8::1", 0}, /* port required, and brackets */
        {"[::1]", 0},
        {"192.0.2.1:0", 53}, /* port 0 */
        {"192.0.2.1:65536", 53},
        {"192.0.2.1:", 53},
        {"192.0.2.1:x", 53},
        {"192.0.2.1:53:53", 53}, /* not IPv6 either */
        {"localhost", 53},
        {"localhost:53", 53},
        {"dns.google:53", 53},
        {"300.0.0.1", 53},
        {"[192.0.2.1]:53", 53},
        {"[::1]:", 53},
        {"[::1]x", 53},
        {"[::1", 53},
        {"[]:53", 53},
        {"fe80::1%eth0", 53},
        {"[::1]:53 ", 53},
        {" 192.0.2.1", 53},
        {"[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535-and-then-some-more-text", 53},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg_addr_t a;
        memset(&a, 0x5a, sizeof a);
        cr_assert_eq(hp(bad[i].s, bad[i].def, &a), -EINVAL, "\"%s\" accepted", bad[i].s);
        cr_assert_eq(a.sa_len, 0, "\"%s\" left output set", bad[i].s);
        cr_assert_eq(a.text[0], '\0');
    }
    cfg_addr_t a;
    cr_assert_eq(cfg_parse_hostport("1.2.3.4\0:53", 11, 53, &a), -EINVAL);
}
