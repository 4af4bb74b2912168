/* bench/tcp/benchsock.h: the listening socket the bench's servers (tcpresp,
 * splicerelay, uringsni) all open the same way. */
#ifndef MOAT_BENCH_BENCHSOCK_H
#define MOAT_BENCH_BENCHSOCK_H

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

/* A TCP socket (socket(2) type flags in `flags`, e.g. SOCK_NONBLOCK) with
 * SO_REUSEADDR, bound to *sa and listening with a backlog of 4096 (bursts
 * of thousands of connects). The fd, or -1 with errno set. */
static inline int bench_listen(const struct sockaddr_in *sa, int flags)
{
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | flags, 0);
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)sa, sizeof *sa) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

#endif
