/* tests/filter/test_addr.c: addresses, prefixes and the ranges of SPEC §2.4. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "filter/addr.h"

static filter_addr_t A(const char *s)
{
    filter_addr_t a;
    cr_assert_eq(filter_addr_parse(s, strlen(s), &a), 0, "parse %s", s);
    return a;
}

static filter_prefix_t P(const char *s)
{
    filter_prefix_t p;
    const char *why = NULL;
    cr_assert_eq(filter_prefix_parse(s, strlen(s), &p, &why), 0, "parse %s: %s", s, why ? why : "");
    return p;
}

static int prefix_err(const char *s, const char **why)
{
    filter_prefix_t p;
    int rc = filter_prefix_parse(s, strlen(s), &p, why);
    if (rc != 0) {
        filter_prefix_t zero;
        memset(&zero, 0, sizeof zero);
        cr_assert_eq(memcmp(&p, &zero, sizeof p), 0, "failed parse of %s left data", s);
    }
    return rc;
}

Test(addr, parse_v4)
{
    filter_addr_t a = A("203.0.113.7");
    cr_assert_eq(a.family, AF_INET);
    uint8_t want[16] = {203, 0, 113, 7};
    cr_assert_eq(memcmp(a.bytes, want, 16), 0);
}

Test(addr, parse_v6)
{
    filter_addr_t a = A("2001:db8::7");
    cr_assert_eq(a.family, AF_INET6);
    uint8_t want[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 7};
    cr_assert_eq(memcmp(a.bytes, want, 16), 0);
}

Test(addr, parse_mapped_becomes_v4)
{
    filter_addr_t a = A("::ffff:127.0.0.1");
    cr_assert_eq(a.family, AF_INET);
    uint8_t want[16] = {127, 0, 0, 1};
    cr_assert_eq(memcmp(a.bytes, want, 16), 0);
    filter_addr_t b = A("::FFFF:7f00:1");
    cr_assert_eq(b.family, AF_INET);
    cr_assert_eq(memcmp(b.bytes, want, 16), 0);
}

Test(addr, parse_bad)
{
    filter_addr_t a;
    const char *bad[] = {"300.1.2.3",    "1.2.3",    "1.2.3.4.5", "",
                         "example.com",  "[::1]",    "::1%lo",    "1.2.3.4:80",
                         "2001:db8:::1", " 1.2.3.4", "1.2.3.04"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(filter_addr_parse(bad[i], strlen(bad[i]), &a), -EINVAL, "%s", bad[i]);
        cr_assert_eq(a.family, 0);
    }
    cr_assert_eq(filter_addr_parse("1.2.3.4\0", 8, &a), -EINVAL);
    /* longer than any address: refused before copying */
    char big[100];
    memset(big, '1', sizeof big);
    cr_assert_eq(filter_addr_parse(big, sizeof big, &a), -EINVAL);
}

Test(prefix, lengths)
{
    filter_prefix_t p = P("203.0.113.0/24");
    cr_assert_eq(p.len, 24);
    cr_assert_eq(p.addr.family, AF_INET);
    cr_assert_eq(P("0.0.0.0/0").len, 0);
    cr_assert_eq(P("203.0.113.7/32").len, 32);
    cr_assert_eq(P("203.0.113.7").len, 32);
    cr_assert_eq(P("::/0").len, 0);
    cr_assert_eq(P("2001:db8::/32").len, 32);
    cr_assert_eq(P("2001:db8::7/128").len, 128);
    cr_assert_eq(P("2001:db8::7").len, 128);
    /* an IPv4-mapped prefix is the IPv4 prefix it carries */
    p = P("::ffff:10.0.0.0/104");
    cr_assert_eq(p.addr.family, AF_INET);
    cr_assert_eq(p.len, 8);
}

Test(prefix, bad)
{
    const char *why = NULL;
    cr_assert_eq(prefix_err("10.0.0.0/33", &why), -EINVAL);
    cr_assert_str_eq(why, "prefix length over 32");
    cr_assert_eq(prefix_err("2001:db8::/129", &why), -EINVAL);
    cr_assert_str_eq(why, "prefix length over 128");
    cr_assert_eq(prefix_err("10.1.0.0/8", &why), -EINVAL);
    cr_assert_str_eq(why, "host bits set past the prefix length");
    cr_assert_eq(prefix_err("2001:db8::1/64", &why), -EINVAL);
    cr_assert_str_eq(why, "host bits set past the prefix length");
    cr_assert_eq(prefix_err("300.1.2.3", &why), -EINVAL);
    cr_assert_str_eq(why, "not a valid IPv4 address");
    cr_assert_eq(prefix_err("2001:zz8::/32", &why), -EINVAL);
    cr_assert_str_eq(why, "not a valid IPv6 address");
    const char *bad[] = {"10.0.0.0/",    "10.0.0.0/-1",       "10.0.0.0/ 8",
                         "10.0.0.0/8x",  "10.0.0.0/1000",     "/8",
                         "10.0.0.0/8/8", "::ffff:10.0.0.0/8", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why = NULL;
        cr_assert_eq(prefix_err(bad[i], &why), -EINVAL, "%s", bad[i]);
        cr_assert_not_null(why, "%s", bad[i]);
    }
    /* why may be NULL */
    filter_prefix_t p;
    cr_assert_eq(filter_prefix_parse("10.0.0.0/33", 11, &p, NULL), -EINVAL);
}

Test(prefix, contains)
{
    filter_prefix_t p = P("203.0.113.0/24");
    cr_assert(filter_prefix_contains(&p, &(filter_addr_t){0}) == false);
    filter_addr_t in = A("203.0.113.255"), out = A("203.0.114.0");
    cr_assert(filter_prefix_contains(&p, &in));
    cr_assert_not(filter_prefix_contains(&p, &out));
    filter_prefix_t odd = P("100.64.0.0/10");
    filter_addr_t e1 = A("100.127.255.255"), e2 = A("100.128.0.0"), e3 = A("100.63.255.255");
    cr_assert(filter_prefix_contains(&odd, &e1));
    cr_assert_not(filter_prefix_contains(&odd, &e2));
    cr_assert_not(filter_prefix_contains(&odd, &e3));
    filter_prefix_t all4 = P("0.0.0.0/0"), all6 = P("::/0");
    filter_addr_t v4 = A("8.8.8.8"), v6 = A("2001:db8::1");
    cr_assert(filter_prefix_contains(&all4, &v4));
    cr_assert_not(filter_prefix_contains(&all4, &v6)); /* families never mix */
    cr_assert(filter_prefix_contains(&all6, &v6));
    cr_assert_not(filter_prefix_contains(&all6, &v4));
    filter_prefix_t host6 = P("2001:db8::1/128");
    filter_addr_t v6b = A("2001:db8::2");
    cr_assert(filter_prefix_contains(&host6, &v6));
    cr_assert_not(filter_prefix_contains(&host6, &v6b));
}

Test(addr, sockaddr_round_trip)
{
    const char *addrs[] = {"203.0.113.7", "2001:db8::7", "0.0.0.0", "::"};
    for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
        filter_addr_t a = A(addrs[i]), b;
        struct sockaddr_storage ss;
        socklen_t sl = filter_addr_to_sockaddr(&a, 8443, &ss);
        cr_assert_eq(sl, a.family == AF_INET ? sizeof(struct sockaddr_in)
                                             : sizeof(struct sockaddr_in6));
        cr_assert_eq(ss.ss_family, a.family);
        uint16_t port = 0;
        cr_assert_eq(filter_addr_from_sockaddr((struct sockaddr *)&ss, &b, &port), 0);
        cr_assert_eq(port, 8443);
        cr_assert_eq(memcmp(&a, &b, sizeof a), 0, "%s", addrs[i]);
        cr_assert_eq(filter_addr_from_sockaddr((struct sockaddr *)&ss, &b, NULL), 0);
    }
}

Test(addr, sockaddr_mapped_and_unknown)
{
    struct sockaddr_in6 in6;
    memset(&in6, 0, sizeof in6);
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(80);
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &in6.sin6_addr);
    filter_addr_t a;
    uint16_t port;
    cr_assert_eq(filter_addr_from_sockaddr((struct sockaddr *)&in6, &a, &port), 0);
    cr_assert_eq(a.family, AF_INET);
    cr_assert_eq(port, 80);
    cr_assert(filter_addr_is_always_refused(&a));

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_family = AF_UNIX;
    cr_assert_eq(filter_addr_from_sockaddr((struct sockaddr *)&ss, &a, &port), -EAFNOSUPPORT);
}

Test(addr, format)
{
    char buf[FILTER_ADDR_STRLEN];
    filter_addr_t a = A("2001:DB8:0::7");
    cr_assert_str_eq(filter_addr_format(&a, buf, sizeof buf), "2001:db8::7");
    filter_prefix_t p = P("203.0.113.0/24");
    cr_assert_str_eq(filter_prefix_format(&p, buf, sizeof buf), "203.0.113.0/24");
    filter_prefix_t p6 = P("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124");
    cr_assert_str_eq(filter_prefix_format(&p6, buf, sizeof buf),
                     "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124");
    char tiny[4];
    cr_assert_str_eq(filter_addr_format(&a, tiny, sizeof tiny), "?");
}

static bool refused(const char *s)
{
    filter_addr_t a = A(s);
    return filter_addr_is_always_refused(&a);
}

static bool private_(const char *s)
{
    filter_addr_t a = A(s);
    return filter_addr_is_private(&a);
}

Test(ranges, always_refused)
{
    const char *yes[] = {"127.0.0.1",
                         "127.255.255.254",
                         "::1",
                         "169.254.169.254",
                         "169.254.0.1",
                         "fe80::1",
                         "febf::1",
                         "0.0.0.0",
                         "0.1.2.3",
                         "::",
                         "224.0.0.1",
                         "239.255.255.255",
                         "ff02::1",
                         "ff05::2",
                         "255.255.255.255",
                         "::ffff:127.0.0.1",
                         "::ffff:169.254.169.254"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        cr_assert(refused(yes[i]), "%s should be refused", yes[i]);
    const char *no[] = {"198.18.0.1",      "198.19.255.255",  "2001:db8::1",     "8.8.8.8",
                        "10.0.0.1",        "192.168.1.1",     "fec0::1",         "fd00::1",
                        "128.0.0.1",       "126.255.255.255", "169.253.255.255", "240.0.0.1",
                        "255.255.255.254", "1.0.0.0"};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_assert_not(refused(no[i]), "%s should not be refused", no[i]);
}

Test(ranges, private)
{
    const char *yes[] = {"10.0.0.0",    "10.255.255.255",  "172.16.0.0",   "172.31.255.255",
                         "192.168.0.1", "192.168.255.255", "100.64.0.0",   "100.127.255.255",
                         "fc00::1",     "fd00::1",         "fdff:ffff::1", "::ffff:10.1.2.3"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        cr_assert(private_(yes[i]), "%s should be private", yes[i]);
    const char *no[] = {"172.15.255.255",  "172.32.0.0",  "11.0.0.0",       "9.255.255.255",
                        "192.167.255.255", "192.169.0.0", "100.63.255.255", "100.128.0.0",
                        "fe00::1",         "fbff::1",     "8.8.8.8",        "2001:db8::1",
                        "198.18.0.1",      "127.0.0.1"};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_assert_not(private_(no[i]), "%s should not be private", no[i]);
}

/* ---- SPEC §2.5: IPv4 addresses carried in IPv6 ---------------------------- */

static bool embedded(const char *s, const char *want)
{
    filter_addr_t a = A(s), v4;
    memset(&v4, 0xa5, sizeof v4);
    bool yes = filter_addr_embedded_v4(&a, &v4);
    if (!yes) {
        filter_addr_t zero;
        memset(&zero, 0, sizeof zero);
        cr_assert_eq(memcmp(&v4, &zero, sizeof v4), 0, "%s: *v4 not zeroed", s);
        return false;
    }
    filter_addr_t w = A(want);
    cr_assert_eq(v4.family, AF_INET, "%s", s);
    cr_assert_eq(memcmp(&v4, &w, sizeof v4), 0, "%s should carry %s", s, want);
    return true;
}

Test(embedded, forms)
{
    /* IPv4-compatible, ::/96 */
    cr_assert(embedded("::127.0.0.1", "127.0.0.1"));
    cr_assert(embedded("::7f00:1", "127.0.0.1"));
    cr_assert(embedded("::10.0.0.1", "10.0.0.1"));
    cr_assert(embedded("::2", "0.0.0.2"));
    cr_assert(embedded("::1:0", "0.1.0.0"));
    cr_assert(embedded("::255.255.255.255", "255.255.255.255"));
    /* NAT64 well-known prefix */
    cr_assert(embedded("64:ff9b::a9fe:a9fe", "169.254.169.254"));
    cr_assert(embedded("64:ff9b::a00:1", "10.0.0.1"));
    cr_assert(embedded("64:ff9b::", "0.0.0.0"));
    cr_assert(embedded("64:ff9b::8.8.8.8", "8.8.8.8"));
    /* 6to4: the IPv4 address is bytes 2..5, whatever follows */
    cr_assert(embedded("2002:7f00:1::", "127.0.0.1"));
    cr_assert(embedded("2002:7f00:1:2:3:4:5:6", "127.0.0.1"));
    cr_assert(embedded("2002::", "0.0.0.0"));
    cr_assert(embedded("2002:0a00:0001::1", "10.0.0.1"));
    cr_assert(embedded("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "255.255.255.255"));
}

Test(embedded, not_forms)
{
    const char *no[] = {
        "::",  /* unspecified, itself */
        "::1", /* loopback, itself */
        "2001:db8::7f00:1",
        "64:ff9b:1::a00:1", /* the local-use NAT64 prefix: its length is the operator's */
        "64:ff9a::a00:1",
        "64:ff9b:0:0:0:1:a00:1", /* not /96 */
        "2003:7f00:1::",
        "2001:7f00:1::",
        "1::7f00:1",
        "0:0:0:0:0:1:7f00:1",
        "::fffe:7f00:1",
        "::ffff:0:7f00:1",
        "fe80::7f00:1",
        "fd00::a00:1",
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_assert_not(embedded(no[i], "0.0.0.0"), "%s carries no IPv4 address", no[i]);
    /* IPv4 addresses carry nothing; parsed ::ffff: forms are IPv4 already. */
    cr_assert_not(embedded("127.0.0.1", "0.0.0.0"));
    cr_assert_not(embedded("::ffff:127.0.0.1", "0.0.0.0"));
}

Test(embedded, mapped_built_by_hand)
{
    /* An address built from bytes, not parsed, may still be ::ffff:a.b.c.d. */
    filter_addr_t a = {.family = AF_INET6, .bytes = {[10] = 0xff, 0xff, 127, 0, 0, 1}}, v4;
    cr_assert(filter_addr_embedded_v4(&a, &v4));
    cr_assert_eq(v4.family, AF_INET);
    cr_assert_eq(v4.bytes[0], 127);
    cr_assert(filter_addr_is_always_refused(&a));
    cr_assert(filter_addr_embedded_v4(&a, NULL));
}

Test(embedded, always_refused)
{
    const char *yes[] = {"::127.0.0.1",
                         "::169.254.169.254",
                         "::224.0.0.1",
                         "::255.255.255.255",
                         "::0.1.2.3",
                         "::2",
                         "64:ff9b::a9fe:a9fe",
                         "64:ff9b::7f00:1",
                         "64:ff9b::",
                         "64:ff9b::e000:1",
                         "2002:7f00:1::",
                         "2002:a9fe:a9fe::1",
                         "2002::",
                         "2002:0:1::",
                         "2002:ffff:ffff::",
                         "2002:e000:1::"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        cr_assert(refused(yes[i]), "%s should be refused", yes[i]);
    const char *no[] = {"::8.8.8.8",      "::10.0.0.1",     "64:ff9b::808:808",
                        "64:ff9b::a00:1", "2002:808:808::", "2002:a00:1::",
                        "2001:db8::1",    "::1:0:0:0",      "64:ff9b:1::7f00:1"};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_assert_not(refused(no[i]), "%s should not be refused", no[i]);
}

Test(embedded, private)
{
    const char *yes[] = {"::10.0.0.1",        "::ffff:10.0.0.1", "64:ff9b::a00:1",
                         "64:ff9b::c0a8:101", "64:ff9b::6440:1", "64:ff9b::ac10:1",
                         "2002:a00:1::",      "2002:c0a8:101::", "2002:6440:1::1"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        cr_assert(private_(yes[i]), "%s should be private", yes[i]);
    const char *no[] = {"::8.8.8.8", "64:ff9b::808:808", "2002:808:808::", "64:ff9b::7f00:1",
                        "::127.0.0.1"};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_assert_not(private_(no[i]), "%s should not be private", no[i]);
}
