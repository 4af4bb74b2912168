/* bench/tcp/splicerelay.c: the reference for "moat with filtering off within
 * 5% of a bare splice relay" (issue 4, Performance).
 *
 *   splicerelay LISTEN_IP PORT [DEST_IP DEST_PORT]
 *
 * Accepts, connects to DEST (or, without it, to the original destination of
 * an nftables REDIRECT, SO_ORIGINAL_DST), then splices both ways through a
 * 1 MiB pipe per direction with half-close kept: the least a relay can do.
 * No peek, no policy, no logging, no timeouts. Pipes come from a small pool
 * and go back to it when the connection ends. One thread, edge-triggered
 * epoll.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "benchsock.h"

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#define SR_PIPE_SIZE (1 << 20)
#define SR_POOL      64

typedef struct sr_dir {
    int prd, pwr;
    size_t in_pipe;
    int eof, shut;
} sr_dir_t;

typedef struct sr_conn {
    struct sr_conn *next_dead;
    int cfd, ufd, dead;
    sr_dir_t up, down; /* client → server, server → client */
} sr_conn_t;

static int sr_pool[SR_POOL][2];
static int sr_n_pool;

static void sr_die(const char *what)
{
    fprintf(stderr, "splicerelay: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int sr_pipe(sr_dir_t *d)
{
    if (sr_n_pool > 0) {
        sr_n_pool--;
        d->prd = sr_pool[sr_n_pool][0];
        d->pwr = sr_pool[sr_n_pool][1];
        return 0;
    }
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0)
        return -1;
    (void)fcntl(p[1], F_SETPIPE_SZ, SR_PIPE_SIZE);
    d->prd = p[0];
    d->pwr = p[1];
    return 0;
}

static void sr_unpipe(sr_dir_t *d)
{
    if (d->prd < 0)
        return;
    if (d->in_pipe == 0 && sr_n_pool < SR_POOL) {
        sr_pool[sr_n_pool][0] = d->prd;
        sr_pool[sr_n_pool][1] = d->pwr;
        sr_n_pool++;
    } else {
        close(d->prd);
        close(d->pwr);
    }
    d->prd = d->pwr = -1;
}

/* Freed after the batch of events: the other fd may still have one. */
static sr_conn_t *sr_dead;

static void sr_close(sr_conn_t *c)
{
    sr_unpipe(&c->up);
    sr_unpipe(&c->down);
    close(c->cfd);
    close(c->ufd);
    c->dead = 1;
    c->next_dead = sr_dead;
    sr_dead = c;
}

/* src → pipe → dst until EAGAIN on either side; -1 on an error. */
static int sr_pump(sr_dir_t *d, int src, int dst)
{
    for (;;) {
        if (d->in_pipe > 0) {
            ssize_t n =
                splice(d->prd, NULL, dst, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                d->in_pipe -= (size_t)n;
                continue;
            }
            if (n < 0 && errno == EAGAIN)
                return 0;
            return -1;
        }
        if (d->eof) {
            if (!d->shut) {
                d->shut = 1;
                shutdown(dst, SHUT_WR);
            }
            return 0;
        }
        ssize_t n =
            splice(src, NULL, d->pwr, NULL, SR_PIPE_SIZE, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            d->in_pipe += (size_t)n;
            continue;
        }
        if (n == 0) {
            d->eof = 1;
            continue;
        }
        if (errno == EAGAIN)
            return 0;
        return -1;
    }
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 5) {
        fprintf(stderr, "usage: splicerelay LISTEN_IP PORT [DEST_IP DEST_PORT]\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    struct sockaddr_in dest = {.sin_family = AF_INET};
    int fixed = argc == 5;
    if (inet_pton(AF_INET, argv[1], &la.sin_addr) != 1 ||
        (fixed && inet_pton(AF_INET, argv[3], &dest.sin_addr) != 1)) {
        fprintf(stderr, "splicerelay: bad address\n");
        return 2;
    }
    if (fixed)
        dest.sin_port = htons((uint16_t)atoi(argv[4]));
    int one = 1, lfd, ep = bench_listen_epoll(&la, (epoll_data_t){.ptr = NULL}, &lfd);
    if (ep < 0)
        sr_die("listen");

    for (;;) {
        struct epoll_event evs[256];
        int m = epoll_wait(ep, evs, 256, -1);
        if (m < 0 && errno == EINTR)
            continue;
        if (m < 0)
            sr_die("epoll_wait");
        for (int j = 0; j < m; j++) {
            sr_conn_t *c = evs[j].data.ptr;
            if (!c) {
                for (int i = 0; i < 64; i++) {
                    int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0)
                        break;
                    struct sockaddr_in to = dest;
                    socklen_t tl = sizeof to;
                    if (!fixed && getsockopt(cfd, SOL_IP, SO_ORIGINAL_DST, &to, &tl) != 0) {
                        close(cfd);
                        continue;
                    }
                    int ufd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                    if (ufd < 0 || (connect(ufd, (struct sockaddr *)&to, sizeof to) != 0 &&
                                    errno != EINPROGRESS)) {
                        close(cfd);
                        if (ufd >= 0)
                            close(ufd);
                        continue;
                    }
                    (void)setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    (void)setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    if (!c || sr_pipe(&c->up) != 0 || sr_pipe(&c->down) != 0)
                        sr_die("conn");
                    c->cfd = cfd;
                    c->ufd = ufd;
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                             .data.ptr = c};
                    (void)epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
                    (void)epoll_ctl(ep, EPOLL_CTL_ADD, ufd, &ev);
                }
                continue;
            }
            if (c->dead)
                continue;
            /* Both directions on any event: a reference, not a scheduler.
             * A connect still in progress answers EAGAIN. */
            if ((evs[j].events & EPOLLERR) || sr_pump(&c->up, c->cfd, c->ufd) != 0 ||
                sr_pump(&c->down, c->ufd, c->cfd) != 0 || (c->up.shut && c->down.shut))
                sr_close(c); /* closing removes both fds from epoll */
        }
        while (sr_dead) {
            sr_conn_t *c = sr_dead;
            sr_dead = c->next_dead;
            free(c);
        }
    }
}
