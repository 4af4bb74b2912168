/* core/sock.h: the listening sockets every service opens the same way. */
#ifndef MOAT_CORE_SOCK_H
#define MOAT_CORE_SOCK_H

#include <stdbool.h>

/* A non-blocking, close-on-exec socket of family (AF_INET, AF_INET6) and
 * type (SOCK_STREAM, SOCK_DGRAM) to bind a listener to: SO_REUSEADDR for a
 * stream socket (a restart binds while old connections linger), IPV6_V6ONLY
 * for AF_INET6 (an IPv6 address never takes IPv4 traffic), and with
 * reuseport SO_REUSEPORT, so every worker binds its own socket to the same
 * address and the kernel spreads the traffic over them (core/worker.h).
 * Returns the descriptor, or -errno. */
int moat_sock_listener(int family, int type, bool reuseport);

#endif
