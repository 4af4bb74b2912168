/* filter/addr.h: IP addresses and prefixes as the policy sees them.
 *
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is always turned into the IPv4
 * address it carries, on parse and when taken from a socket address, so that
 * no rule or refused range can be side-stepped by writing it the other way.
 * The other IPv6 forms that carry an IPv4 address (IPv4-compatible, NAT64,
 * 6to4) stay IPv6 addresses, and the ranges of SPEC §2.4 judge them twice:
 * as themselves and as the IPv4 address they carry (SPEC §2.5).
 */
#ifndef MOAT_FILTER_ADDR_H
#define MOAT_FILTER_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Large enough for any address or prefix written out, with the NUL. */
#define FILTER_ADDR_STRLEN 52

typedef struct filter_addr {
    uint8_t family;    /* AF_INET or AF_INET6 */
    uint8_t bytes[16]; /* network order; IPv4 uses bytes[0..3], the rest zero */
} filter_addr_t;

typedef struct filter_prefix {
    filter_addr_t addr; /* host bits are zero */
    uint8_t len;        /* 0..32 or 0..128 */
} filter_prefix_t;

/* Parse "203.0.113.7" or "2001:db8::7" (no brackets, no port, no scope).
 * Returns 0 or -EINVAL. */
int filter_addr_parse(const char *s, size_t len, filter_addr_t *out);

/* Parse an address or "address/len". A bare address is a /32 or /128. Host
 * bits set past the length ("10.1.0.0/8") are an error, not silently masked.
 * On error returns -EINVAL and, when why is not NULL, points it at a static
 * one-line message ("prefix length over 32", "not an IPv4 address", ...). */
int filter_prefix_parse(const char *s, size_t len, filter_prefix_t *out, const char **why);

/* Take the address from a sockaddr_in / sockaddr_in6 (IPv4-mapped unmapped).
 * *port, when not NULL, gets the port in host order. Returns 0 or -EAFNOSUPPORT. */
int filter_addr_from_sockaddr(const struct sockaddr *sa, filter_addr_t *out, uint16_t *port);

/* Build a sockaddr for addr:port; returns its length. */
socklen_t filter_addr_to_sockaddr(const filter_addr_t *addr, uint16_t port,
                                  struct sockaddr_storage *out);

/* True when a and b are the same socket address: family, address, port and
 * (IPv6) scope. Anything that is not AF_INET is compared as AF_INET6. */
bool filter_sockaddr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b);

/* Write the address (or prefix) out; returns buf. */
const char *filter_addr_format(const filter_addr_t *addr, char *buf, size_t n);
const char *filter_prefix_format(const filter_prefix_t *p, char *buf, size_t n);

/* True when p covers a (same family, first p->len bits equal). */
bool filter_prefix_contains(const filter_prefix_t *p, const filter_addr_t *a);

/* SPEC §2.5: the IPv4 address an IPv6 address carries, in *v4 (AF_INET; may
 * be NULL) when it is one of
 *   ::ffff:0:0/96  IPv4-mapped (RFC 4291 §2.5.5.2), bytes 12..15,
 *   ::/96          IPv4-compatible (RFC 4291 §2.5.5.1), bytes 12..15, but not
 *                  :: and ::1, which are the unspecified and loopback address,
 *   64:ff9b::/96   the NAT64 well-known prefix (RFC 6052 §2.1), bytes 12..15,
 *   2002::/16      6to4 (RFC 3056 §2), bytes 2..5;
 * false (and *v4 zeroed) for anything else, IPv4 addresses included. */
bool filter_addr_embedded_v4(const filter_addr_t *a, filter_addr_t *v4);

/* Ranges of SPEC §2.4, independent of any policy. Both judge a and, when it
 * carries one (filter_addr_embedded_v4), the IPv4 address it carries: true
 * when either is in the ranges. Every check of these ranges goes through
 * them (policy.c's refusals and private check, the DNS answer filter). */
/* Loopback, link-local, unspecified (0.0.0.0/8, ::), multicast, broadcast. */
bool filter_addr_is_always_refused(const filter_addr_t *a);
/* RFC 1918, fc00::/7, CGNAT 100.64.0.0/10. */
bool filter_addr_is_private(const filter_addr_t *a);

#endif
