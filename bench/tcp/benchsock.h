/* bench/tcp/benchsock.h: the listening socket the bench's servers (tcpresp,
 * splicerelay, uringsni) all open the same way, and the epoll set the first
 * two watch it in. */
#ifndef MOAT_BENCH_BENCHSOCK_H
#define MOAT_BENCH_BENCHSOCK_H

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/epoll.h>
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

/* A non-blocking listener as above (*lfd) in a new epoll set, watched for
 * EPOLLIN under `data`; then "listening" on stdout (run.sh waits for the
 * port, a person for the line). The epoll fd, or -1 with errno set. */
static inline int bench_listen_epoll(const struct sockaddr_in *sa, epoll_data_t data, int *lfd)
{
    *lfd = bench_listen(sa, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (*lfd < 0)
        return -1;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data = data};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, *lfd, &ev) != 0)
        return -1;
    printf("listening\n");
    fflush(stdout);
    return ep;
}

#endif
