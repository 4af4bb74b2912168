/* bench/tcp/tcpresp.c: the server side of bench/tcp (issues 4 and 14, Performance).
 *
 *   tcpresp PORT HELLO_LEN
 *   tcpresp PORT http
 *
 * Listens on 0.0.0.0:PORT (plain TCP, not TLS: it stands for any server and
 * measures the proxy, not a handshake). Per connection: reads HELLO_LEN bytes
 * (the recorded ClientHello) and answers a fixed 32-byte reply. If the client
 * goes on (the bulk load), it announces a byte count (8 bytes, host order);
 * those bytes are discarded as they come (recv MSG_TRUNC: no copy) and, once
 * all are in, their count is answered back (no half-close needed: sniproxy
 * does not keep it). Closes at the client's EOF.
 *
 * With `http` instead of a length, it is a keep-alive HTTP/1.1 server for
 * the keep-alive load: every request head (up to its CRLF CRLF; requests
 * carry no body) is answered with TCPRESP_HTTP (a Content-Length response),
 * pipelined ones in order, until the client's EOF. Heads are not kept: a
 * connection's state is how much of the CRLF CRLF it has seen.
 * One thread, epoll, level-triggered.
 */
#include <errno.h>
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
#include "tcpresp.h"

#define TR_REPLY TCPRESP_REPLY /* 32 bytes, as tcpload expects */

typedef struct tr_conn {
    uint32_t got; /* hello bytes read */
    uint8_t replied;
    uint32_t hdr_got; /* bytes of expect read */
    uint64_t expect;  /* bulk: the byte count announced after the hello */
    uint64_t sunk;    /* bytes after it */
    uint8_t crlf;     /* http: bytes of "\r\n\r\n" matched so far */
} tr_conn_t;

static void tr_die(const char *what)
{
    fprintf(stderr, "tcpresp: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* http: answer every request head that ends in what is readable on fd; 1
 * when the connection is done (EOF, an error). */
static int tr_http(int fd, tr_conn_t *s)
{
    static const char resp[] = TCPRESP_HTTP;
    static char out[64 * (sizeof resp - 1)];
    for (;;) {
        uint8_t buf[16384];
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EAGAIN)
            return 0;
        if (r <= 0)
            return 1;
        size_t heads = 0, used = 0;
        for (ssize_t i = 0; i < r; i++) {
            uint8_t c = buf[i];
            if (c == (s->crlf & 1 ? '\n' : '\r'))
                s->crlf++;
            else
                s->crlf = c == '\r';
            if (s->crlf == 4) {
                s->crlf = 0;
                heads++;
            }
        }
        while (heads > 0) { /* pipelined heads: answered in batches of 64 */
            size_t batch = heads < 64 ? heads : 64;
            for (size_t i = 0; i < batch; i++)
                memcpy(out + i * (sizeof resp - 1), resp, sizeof resp - 1);
            used = batch * (sizeof resp - 1);
            if (send(fd, out, used, MSG_NOSIGNAL) != (ssize_t)used)
                return 1; /* the client reads every answer before its next request */
            heads -= batch;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: tcpresp PORT HELLO_LEN | tcpresp PORT http\n");
        return 2;
    }
    int http = strcmp(argv[2], "http") == 0;
    uint32_t hello_len = (uint32_t)atoi(argv[2]);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    size_t max_fd = (size_t)rl.rlim_cur;
    tr_conn_t *conns = calloc(max_fd, sizeof *conns);
    if (!conns)
        tr_die("calloc");

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    int one = 1, lfd, ep = bench_listen_epoll(&sa, (epoll_data_t){.fd = -1}, &lfd);
    if (ep < 0)
        tr_die("listen");

    for (;;) {
        struct epoll_event evs[256];
        int m = epoll_wait(ep, evs, 256, -1);
        if (m < 0 && errno == EINTR)
            continue;
        if (m < 0)
            tr_die("epoll_wait");
        for (int j = 0; j < m; j++) {
            int fd = evs[j].data.fd;
            if (fd < 0) { /* the listener (bench_listen_epoll above) */
                for (int i = 0; i < 64; i++) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0)
                        break;
                    if ((size_t)c >= max_fd) {
                        close(c);
                        continue;
                    }
                    (void)setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    memset(&conns[c], 0, sizeof conns[c]);
                    struct epoll_event ev = {.events = EPOLLIN, .data.fd = c};
                    (void)epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                }
                continue;
            }
            tr_conn_t *s = &conns[fd];
            int closing = 0;
            if (http) {
                if (tr_http(fd, s))
                    close(fd);
                continue;
            }
            while (!s->replied) {
                uint8_t buf[16384];
                size_t want = hello_len - s->got;
                ssize_t r = recv(fd, buf, want < sizeof buf ? want : sizeof buf, 0);
                if (r < 0 && errno == EAGAIN)
                    break;
                if (r <= 0) {
                    closing = 1;
                    break;
                }
                s->got += (uint32_t)r;
                if (s->got == hello_len) {
                    (void)send(fd, TR_REPLY, sizeof TR_REPLY - 1, MSG_NOSIGNAL);
                    s->replied = 1;
                }
            }
            while (!closing && s->replied && s->hdr_got < sizeof s->expect) {
                ssize_t r =
                    recv(fd, (uint8_t *)&s->expect + s->hdr_got, sizeof s->expect - s->hdr_got, 0);
                if (r < 0 && errno == EAGAIN)
                    break;
                if (r <= 0)
                    closing = 1;
                else
                    s->hdr_got += (uint32_t)r;
            }
            while (!closing && s->hdr_got == sizeof s->expect) {
                uint64_t left = s->expect - s->sunk;
                ssize_t r = left ? recv(fd, NULL, left < (1u << 22) ? left : (1u << 22), MSG_TRUNC)
                                 : recv(fd, NULL, 1 << 16, MSG_TRUNC);
                if (r < 0 && errno == EAGAIN)
                    break;
                if (r <= 0) {
                    closing = 1;
                    break;
                }
                s->sunk += (uint64_t)r;
                if (left && s->sunk == s->expect)
                    (void)send(fd, &s->sunk, sizeof s->sunk, MSG_NOSIGNAL);
            }
            if (closing)
                close(fd);
        }
    }
}
