/* filter/addr.c: addresses, prefixes and the fixed ranges of SPEC §2.4. */
#include "filter/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* ::ffff:a.b.c.d becomes a.b.c.d so rules and ranges see one form. */
static void addr_unmap(filter_addr_t *a)
{
    if (a->family == AF_INET6 && memcmp(a->bytes, v4mapped_prefix, 12) == 0) {
        uint8_t v4[4];
        memcpy(v4, a->bytes + 12, 4);
        memset(a->bytes, 0, sizeof a->bytes);
        memcpy(a->bytes, v4, 4);
        a->family = AF_INET;
    }
}

int filter_addr_parse(const char *s, size_t len, filter_addr_t *out)
{
    char buf[INET6_ADDRSTRLEN];
    memset(out, 0, sizeof *out);
    if (len == 0 || len >= sizeof buf || memchr(s, '\0', len) != NULL)
        return -EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, out->bytes) == 1) {
        out->family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, out->bytes) == 1) {
        out->family = AF_INET6;
        addr_unmap(out);
        return 0;
    }
    memset(out, 0, sizeof *out);
    return -EINVAL;
}

static unsigned addr_bits(const filter_addr_t *a)
{
    return a->family == AF_INET ? 32u : 128u;
}

static bool addr_host_bits_zero(const filter_addr_t *a, unsigned plen)
{
    for (unsigned bit = plen; bit < addr_bits(a); bit++)
        if (a->bytes[bit / 8] & (0x80u >> (bit % 8)))
            return false;
    return true;
}

int filter_prefix_parse(const char *s, size_t len, filter_prefix_t *out, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    *why = NULL;
    memset(out, 0, sizeof *out);

    if (len == 0) {
        *why = "not a valid IPv4 address";
        return -EINVAL; /* and s may be NULL: memchr must not see it */
    }
    const char *slash = memchr(s, '/', len);
    size_t addr_len = slash ? (size_t)(slash - s) : len;
    bool mapped_v6_text = addr_len > 0 && memchr(s, ':', addr_len) != NULL;
    if (filter_addr_parse(s, addr_len, &out->addr) != 0) {
        *why = mapped_v6_text ? "not a valid IPv6 address" : "not a valid IPv4 address";
        return -EINVAL;
    }
    unsigned max = addr_bits(&out->addr);
    if (!slash) {
        out->len = (uint8_t)max;
        return 0;
    }
    const char *p = slash + 1;
    size_t plen_chars = len - addr_len - 1;
    if (plen_chars == 0 || plen_chars > 3) {
        *why = "bad prefix length";
        goto fail;
    }
    unsigned plen = 0;
    for (size_t i = 0; i < plen_chars; i++) {
        if (p[i] < '0' || p[i] > '9') {
            *why = "bad prefix length";
            goto fail;
        }
        plen = plen * 10 + (unsigned)(p[i] - '0');
    }
    if (mapped_v6_text && out->addr.family == AF_INET) {
        /* ::ffff:10.0.0.0/104 covers 10.0.0.0/8: shift the length. */
        if (plen < 96) {
            *why = "prefix of an IPv4-mapped address shorter than /96";
            goto fail;
        }
        plen -= 96;
    }
    if (plen > max) {
        *why = max == 32 ? "prefix length over 32" : "prefix length over 128";
        goto fail;
    }
    if (!addr_host_bits_zero(&out->addr, plen)) {
        *why = "host bits set past the prefix length";
        goto fail;
    }
    out->len = (uint8_t)plen;
    return 0;
fail:
    memset(out, 0, sizeof *out);
    return -EINVAL;
}

int filter_addr_from_sockaddr(const struct sockaddr *sa, filter_addr_t *out, uint16_t *port)
{
    memset(out, 0, sizeof *out);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        out->family = AF_INET;
        memcpy(out->bytes, &in->sin_addr, 4);
        if (port)
            *port = ntohs(in->sin_port);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        out->family = AF_INET6;
        memcpy(out->bytes, &in6->sin6_addr, 16);
        addr_unmap(out);
        if (port)
            *port = ntohs(in6->sin6_port);
        return 0;
    }
    return -EAFNOSUPPORT;
}

socklen_t filter_addr_to_sockaddr(const filter_addr_t *addr, uint16_t port,
                                  struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    if (addr->family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)out;
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        memcpy(&in->sin_addr, addr->bytes, 4);
        return sizeof *in;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    memcpy(&in6->sin6_addr, addr->bytes, 16);
    return sizeof *in6;
}

const char *filter_addr_format(const filter_addr_t *addr, char *buf, size_t n)
{
    if (!inet_ntop(addr->family == AF_INET ? AF_INET : AF_INET6, addr->bytes, buf, (socklen_t)n))
        snprintf(buf, n, "?");
    return buf;
}

const char *filter_prefix_format(const filter_prefix_t *p, char *buf, size_t n)
{
    char a[INET6_ADDRSTRLEN];
    filter_addr_format(&p->addr, a, sizeof a);
    snprintf(buf, n, "%s/%u", a, p->len);
    return buf;
}

bool filter_prefix_contains(const filter_prefix_t *p, const filter_addr_t *a)
{
    if (p->addr.family != a->family)
        return false;
    unsigned full = p->len / 8u, rest = p->len % 8u;
    if (memcmp(p->addr.bytes, a->bytes, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8u - rest));
    return (p->addr.bytes[full] & mask) == (a->bytes[full] & mask);
}

typedef struct range {
    uint8_t family;
    uint8_t bytes[16];
    uint8_t len;
} range_t;

static bool ranges_contain(const range_t *r, size_t n, const filter_addr_t *a)
{
    for (size_t i = 0; i < n; i++) {
        filter_prefix_t p = {.len = r[i].len};
        p.addr.family = r[i].family;
        memcpy(p.addr.bytes, r[i].bytes, 16);
        if (filter_prefix_contains(&p, a))
            return true;
    }
    return false;
}

/* SPEC §2.4, always refused. IPv4 addresses written in IPv6 are checked
 * again as the IPv4 address they carry (filter_addr_embedded_v4). */
static const range_t always_refused[] = {
    {AF_INET, {0}, 8},                   /* 0.0.0.0/8: unspecified, "this network" */
    {AF_INET, {127}, 8},                 /* loopback */
    {AF_INET, {169, 254}, 16},           /* link-local, incl. 169.254.169.254 */
    {AF_INET, {224}, 4},                 /* multicast */
    {AF_INET, {255, 255, 255, 255}, 32}, /* limited broadcast */
    {AF_INET6, {0}, 128},                /* :: unspecified */
    {AF_INET6, {[15] = 1}, 128},         /* ::1 loopback */
    {AF_INET6, {0xfe, 0x80}, 10},        /* link-local */
    {AF_INET6, {0xff}, 8},               /* multicast */
};

/* SPEC §2.4, refused for names unless an address rule covers them. */
static const range_t private_ranges[] = {
    {AF_INET, {10}, 8},        {AF_INET, {172, 16}, 12},
    {AF_INET, {192, 168}, 16}, {AF_INET, {100, 64}, 10}, /* CGNAT, RFC 6598 */
    {AF_INET6, {0xfc}, 7},                               /* unique local */
};

static const uint8_t nat64_prefix[12] = {0, 0x64, 0xff, 0x9b}; /* 64:ff9b::/96, RFC 6052 §2.1 */
static const uint8_t zero_prefix[12] = {0};

bool filter_addr_embedded_v4(const filter_addr_t *a, filter_addr_t *v4)
{
    filter_addr_t out;
    memset(&out, 0, sizeof out);
    const uint8_t *carried = NULL;
    if (a->family == AF_INET6) {
        const uint8_t *b = a->bytes;
        if (memcmp(b, v4mapped_prefix, 12) == 0 || memcmp(b, nat64_prefix, 12) == 0)
            carried = b + 12; /* RFC 4291 §2.5.5.2; RFC 6052 §2.2 at /96 */
        else if (memcmp(b, zero_prefix, 12) == 0 && (b[12] | b[13] | b[14] | (b[15] & 0xfe)) != 0)
            carried = b + 12; /* RFC 4291 §2.5.5.1, but :: and ::1 are themselves */
        else if (b[0] == 0x20 && b[1] == 0x02)
            carried = b + 2; /* 6to4, RFC 3056 §2 */
    }
    if (carried) {
        out.family = AF_INET;
        memcpy(out.bytes, carried, 4);
    }
    if (v4)
        *v4 = out;
    return carried != NULL;
}

/* a, and the IPv4 address it carries if it carries one (SPEC §2.5), in one
 * of the ranges r[0..n). */
static bool ranges_judge(const range_t *r, size_t n, const filter_addr_t *a)
{
    if (ranges_contain(r, n, a))
        return true;
    filter_addr_t v4;
    return filter_addr_embedded_v4(a, &v4) && ranges_contain(r, n, &v4);
}

bool filter_addr_is_always_refused(const filter_addr_t *a)
{
    return ranges_judge(always_refused, sizeof always_refused / sizeof always_refused[0], a);
}

bool filter_addr_is_private(const filter_addr_t *a)
{
    return ranges_judge(private_ranges, sizeof private_ranges / sizeof private_ranges[0], a);
}

bool filter_sockaddr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0 &&
           x->sin6_scope_id == y->sin6_scope_id;
}
