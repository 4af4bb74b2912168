/* bench/tcp/tcpload.c: the load side of bench/tcp (issues 4 and 14, Performance).
 *
 *   tcpload [PROXY] rate HOST PORT HELLO N K [SRC]   N connections, K at a
 *       time: each connects, sends the recorded ClientHello, reads the
 *       responder's fixed reply (checked byte for byte: a proxy's own
 *       answer, an alert or an error page, is a failure), closes. Prints conn/s and the
 *       connect-to-reply latency (from socket() to the last reply byte) p50
 *       / p99 in microseconds; fails when 1% or more of the connections
 *       failed.
 *   tcpload [PROXY] bulk HOST PORT HELLO BYTES [SRC] one connection: the
 *       hello, the reply, then BYTES announced (8 bytes) and streamed
 *       (sendfile from a memfd, no copy on our side); the sink answers its
 *       8-byte count once it has them all. Prints GB/s (10^9 bytes) from
 *       the first streamed byte to the count.
 *   tcpload [PROXY] hold HOST PORT HELLO N [SRC]     N connections held open:
 *       prints "connected N", waits for a line on stdin, sends the hello on
 *       each and reads each reply (64 connections at a time), prints
 *       "replied N", waits for stdin's EOF, exits.
 *   tcpload [PROXY] ka HOST PORT REQUEST N K M [SRC] N HTTP requests, M per
 *       kept-alive connection, K connections at a time: each connection
 *       sends the request (the file REQUEST, a whole head without a body),
 *       reads the response (its head, then Content-Length bytes), sends
 *       it again, M times, then closes. Prints requests/s and the request
 *       latency p50 / p99 (from send to the response's last byte; the
 *       first request of a connection from socket()).
 *
 * PROXY, before the mode, puts a proxy handshake between the connect and
 * the first byte of the load; HOST PORT are then the proxy's:
 *   --connect NAME:PORT   `CONNECT NAME:PORT HTTP/1.1` (RFC 9110 §9.3.6),
 *                         then a 200 response head;
 *   --socks NAME:PORT     SOCKS5 (RFC 1928): the no-authentication
 *                         greeting, its method reply, a CONNECT to the
 *                         domain name (ATYP 3), its success reply.
 * Each step waits for the proxy's answer before sending the next, as curl
 * does. In `hold`, "connected N" comes once every tunnel is set up (the
 * proxy is waiting for the hello).
 *
 * SRC binds the client's source address (the nftables REDIRECT in run.sh
 * matches it). One thread, nonblocking sockets and epoll for `rate` and
 * `ka`.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tcpresp.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* What tcpresp answers after the hello. */
#define TL_REPLY_LEN  TCPRESP_REPLY_LEN
#define TL_CHUNK      (64u << 20)
#define TL_HOLD_BATCH 64
/* A proxy's answer or an HTTP response head must fit (they are < 200 bytes). */
#define TL_BUF 1024

static uint8_t tl_hello[16384];
static size_t tl_hello_len;
static struct sockaddr_in tl_dst, tl_src;
static int tl_has_src;

/* ---- the proxy handshake (--connect, --socks) ---------------------------------------- */

enum { TL_PX_NONE, TL_PX_CONNECT, TL_PX_SOCKS };
static int tl_px_kind = TL_PX_NONE;
static char tl_px_connect[600]; /* the CONNECT request head */
static size_t tl_px_connect_len;
static uint8_t tl_px_socks[262]; /* the SOCKS5 CONNECT request */
static size_t tl_px_socks_len;
static const uint8_t tl_px_greeting[3] = {5, 1, 0}; /* version 5, one method: none */

/* One connection's progress through the handshake, then through a response. */
typedef struct tl_px {
    uint8_t step; /* SOCKS: 0 the method reply, 1 the CONNECT reply */
    uint16_t got;
    uint8_t buf[TL_BUF];
} tl_px_t;

/* Why a handshake failed, for the report: the first one. */
static const char *tl_px_why;

static uint64_t tl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void tl_die(const char *what)
{
    fprintf(stderr, "tcpload: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int tl_send_all(int fd, const void *p, size_t len)
{
    return send(fd, p, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

/* NAME:PORT into the CONNECT head and the SOCKS request. */
static void tl_px_setup(int kind, const char *target)
{
    const char *colon = strrchr(target, ':');
    size_t nlen = colon ? (size_t)(colon - target) : 0;
    long port = colon ? atol(colon + 1) : 0;
    if (nlen == 0 || nlen > 255 || port <= 0 || port > 65535) {
        fprintf(stderr, "tcpload: bad proxy target %s (NAME:PORT)\n", target);
        exit(2);
    }
    tl_px_kind = kind;
    int n =
        snprintf(tl_px_connect, sizeof tl_px_connect,
                 "CONNECT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tcpload\r\n\r\n", target, target);
    tl_px_connect_len = (size_t)n;
    uint8_t *q = tl_px_socks;
    *q++ = 5; /* version */
    *q++ = 1; /* CONNECT */
    *q++ = 0; /* reserved */
    *q++ = 3; /* ATYP: domain name */
    *q++ = (uint8_t)nlen;
    memcpy(q, target, nlen);
    q += nlen;
    *q++ = (uint8_t)(port >> 8);
    *q++ = (uint8_t)port;
    tl_px_socks_len = (size_t)(q - tl_px_socks);
}

/* The handshake's first message on a connected socket: 0, or -1. */
static int tl_px_begin(int fd, tl_px_t *p)
{
    p->step = 0;
    p->got = 0;
    if (tl_px_kind == TL_PX_CONNECT)
        return tl_send_all(fd, tl_px_connect, tl_px_connect_len);
    return tl_send_all(fd, tl_px_greeting, sizeof tl_px_greeting);
}

static int tl_px_fail(const char *why)
{
    if (!tl_px_why)
        tl_px_why = why;
    return -1;
}

/* The end of an HTTP head in p->buf (the offset after its CRLF CRLF), or 0. */
static size_t tl_head_end(const tl_px_t *p)
{
    for (size_t i = 3; i < p->got; i++)
        if (p->buf[i] == '\n' && p->buf[i - 1] == '\r' && p->buf[i - 2] == '\n' &&
            p->buf[i - 3] == '\r')
            return i + 1;
    return 0;
}

/* One recv of the handshake (never past the proxy's answer: the server
 * speaks only after the hello): 1 the tunnel is up, 0 more to come (or
 * EAGAIN), -1 failed. */
static int tl_px_step(int fd, tl_px_t *p)
{
    size_t want;
    if (tl_px_kind == TL_PX_CONNECT) {
        want = sizeof p->buf - p->got;
    } else if (p->step == 0) {
        want = 2u - p->got;
    } else if (p->got < 5) {
        want = 5u - p->got;
    } else {
        /* RFC 1928 §6: VER REP RSV ATYP BND.ADDR BND.PORT */
        size_t total = p->buf[3] == 1 ? 10u : p->buf[3] == 4 ? 22u : 7u + p->buf[4];
        want = total - p->got;
    }
    ssize_t r = recv(fd, p->buf + p->got, want, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (r <= 0)
        return tl_px_fail(r == 0 ? "proxy closed" : "proxy recv error");
    p->got = (uint16_t)(p->got + r);

    if (tl_px_kind == TL_PX_CONNECT) {
        size_t end = tl_head_end(p);
        if (end == 0)
            return p->got == sizeof p->buf ? tl_px_fail("CONNECT answer too long") : 0;
        if (end != p->got)
            return tl_px_fail("bytes after the CONNECT answer");
        if (p->got < 12 || memcmp(p->buf, "HTTP/1.", 7) != 0 || memcmp(p->buf + 8, " 200", 4) != 0)
            return tl_px_fail("CONNECT answer not 200");
        return 1;
    }
    if (p->step == 0) {
        if (p->got < 2)
            return 0;
        if (p->buf[0] != 5 || p->buf[1] != 0)
            return tl_px_fail("SOCKS method reply not 05 00");
        p->step = 1;
        p->got = 0;
        return tl_send_all(fd, tl_px_socks, tl_px_socks_len) == 0 ? 0 : tl_px_fail("send");
    }
    if (p->got < 5)
        return 0;
    if (p->buf[0] != 5 || p->buf[1] != 0)
        return tl_px_fail("SOCKS reply not success");
    if (p->buf[3] != 1 && p->buf[3] != 3 && p->buf[3] != 4)
        return tl_px_fail("SOCKS reply with a bad ATYP");
    size_t total = p->buf[3] == 1 ? 10u : p->buf[3] == 4 ? 22u : 7u + p->buf[4];
    return p->got == total ? 1 : 0;
}

/* The handshake on a blocking socket; exits on failure. */
static void tl_px_blocking(int fd)
{
    tl_px_t p;
    if (tl_px_kind == TL_PX_NONE)
        return;
    if (tl_px_begin(fd, &p) != 0)
        tl_die("proxy handshake send");
    int r;
    while ((r = tl_px_step(fd, &p)) == 0)
        ;
    if (r < 0) {
        fprintf(stderr, "tcpload: proxy handshake: %s\n", tl_px_why);
        exit(2);
    }
}

/* ---- sockets ------------------------------------------------------------------------ */

static int tl_socket(int nonblock)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        tl_die("socket");
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (tl_has_src) {
        /* Pick the port at connect time, per destination. */
        (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&tl_src, sizeof tl_src) != 0)
            tl_die("bind");
    }
    return fd;
}

static void tl_load_hello(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        tl_die(path);
    tl_hello_len = fread(tl_hello, 1, sizeof tl_hello, f);
    fclose(f);
    if (tl_hello_len == 0) {
        fprintf(stderr, "tcpload: empty file %s\n", path);
        exit(2);
    }
}

static int tl_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- rate and ka: K connections in flight ------------------------------------------- */

enum { TL_CONNECTING, TL_HANDSHAKE, TL_READING };

typedef struct tl_slot {
    int fd;
    uint8_t state;
    uint32_t left; /* requests still to send on this connection */
    uint64_t t0;
    tl_px_t px; /* the handshake, then the response being read */
} tl_slot_t;

/* The response in s->px is whole: 1; not yet: 0; malformed: -1. `http`:
 * an HTTP head with Content-Length and its body; else tcpresp's reply. */
static int tl_response_done(const tl_px_t *p, int http)
{
    if (!http)
        return p->got < TL_REPLY_LEN                              ? 0
               : memcmp(p->buf, TCPRESP_REPLY, TL_REPLY_LEN) == 0 ? 1
                                                                  : -1;
    size_t end = tl_head_end(p);
    if (end == 0)
        return p->got == sizeof p->buf ? -1 : 0;
    if (p->got < 12 || memcmp(p->buf, "HTTP/1.", 7) != 0 || memcmp(p->buf + 8, " 200", 4) != 0)
        return -1;
    long cl = -1;
    for (size_t i = 0; i + 15 < end; i++)
        if ((i == 0 || p->buf[i - 1] == '\n') &&
            strncasecmp((const char *)p->buf + i, "content-length:", 15) == 0)
            cl = strtol((const char *)p->buf + i + 15, NULL, 10);
    if (cl < 0)
        return -1;
    size_t total = end + (size_t)cl;
    return p->got == total ? 1 : p->got > total || total > sizeof p->buf ? -1 : 0;
}

/* N requests (the hello, or the HTTP request), M per connection, K
 * connections at a time. */
static int tl_run(long n, long k, long m, int http)
{
    long conns = (n + m - 1) / m;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    tl_slot_t *slots = calloc((size_t)k, sizeof *slots);
    uint32_t *lat = calloc((size_t)n, sizeof *lat);
    if (ep < 0 || !slots || !lat)
        tl_die("setup");
    long started = 0, finished = 0, done = 0, errors = 0, active = 0;
    /* What the failures were: connect (SO_ERROR), the proxy handshake, a
     * request's send, or the reply (EOF, an error or a malformed response);
     * the first errno (or reason) of each. */
    long fail_connect = 0, fail_proxy = 0, fail_send = 0, fail_reply = 0;
    int errno_connect = 0, errno_send = 0, errno_reply = 0;
    const char *why_reply = NULL;
    uint64_t t_start = tl_now_ns(), deadline = t_start + 60ull * 1000000000u;

    for (long i = 0; i < k; i++)
        slots[i].fd = -1;
    for (;;) {
        /* Keep K connections in flight. */
        for (long i = 0; i < k && started < conns; i++) {
            tl_slot_t *s = &slots[i];
            if (s->fd >= 0)
                continue;
            long reqs = n - started * m < m ? n - started * m : m;
            s->t0 = tl_now_ns();
            s->fd = tl_socket(1);
            s->state = TL_CONNECTING;
            s->left = (uint32_t)reqs;
            started++;
            active++;
            if (connect(s->fd, (struct sockaddr *)&tl_dst, sizeof tl_dst) != 0 &&
                errno != EINPROGRESS)
                tl_die("connect");
            struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)i};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev) != 0)
                tl_die("epoll_ctl");
        }
        if (active == 0 || tl_now_ns() > deadline)
            break;
        struct epoll_event evs[256];
        int nev = epoll_wait(ep, evs, 256, 1000);
        for (int j = 0; j < nev; j++) {
            tl_slot_t *s = &slots[evs[j].data.u64];
            int fail = 0, send_req = 0;
            if (s->state == TL_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
                    fail = 1;
                    if (fail_connect++ == 0)
                        errno_connect = err ? err : errno;
                } else {
                    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = evs[j].data.u64};
                    (void)epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
                    if (tl_px_kind == TL_PX_NONE) {
                        send_req = 1;
                    } else if (tl_px_begin(s->fd, &s->px) != 0) {
                        fail = 1;
                        fail_proxy++;
                        (void)tl_px_fail("send");
                    } else {
                        s->state = TL_HANDSHAKE;
                        continue;
                    }
                }
            } else if (s->state == TL_HANDSHAKE) {
                int r = tl_px_step(s->fd, &s->px);
                if (r == 0)
                    continue;
                if (r < 0) {
                    fail = 1;
                    fail_proxy++;
                } else {
                    send_req = 1;
                }
            } else {
                tl_px_t *p = &s->px;
                size_t want = http ? sizeof p->buf - p->got : TL_REPLY_LEN - p->got;
                ssize_t r = recv(s->fd, p->buf + p->got, want, 0);
                if (r < 0 && errno == EAGAIN)
                    continue;
                int d = -1;
                if (r > 0) {
                    p->got = (uint16_t)(p->got + r);
                    d = tl_response_done(p, http);
                    if (d == 0)
                        continue;
                }
                if (d < 0) {
                    fail = 1;
                    if (fail_reply++ == 0) {
                        errno_reply = r < 0 ? errno : 0;
                        why_reply = r == 0 ? "EOF" : r < 0 ? NULL : "malformed";
                    }
                } else {
                    uint64_t us = (tl_now_ns() - s->t0) / 1000u;
                    if (done < n)
                        lat[done++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
                    if (s->left > 0) {
                        s->t0 = tl_now_ns();
                        send_req = 1;
                    }
                }
            }
            if (send_req && !fail) {
                const uint8_t *req = tl_hello;
                if (tl_send_all(s->fd, req, tl_hello_len) != 0) {
                    fail = 1;
                    if (fail_send++ == 0)
                        errno_send = errno;
                } else {
                    s->left--;
                    s->state = TL_READING;
                    s->px.got = 0;
                    continue;
                }
            }
            if (fail)
                errors++;
            else
                finished++;
            close(s->fd); /* epoll forgets it */
            s->fd = -1;
            active--;
        }
    }
    double secs = (double)(tl_now_ns() - t_start) / 1e9;
    qsort(lat, (size_t)done, sizeof *lat, tl_cmp_u32);
    uint32_t p50 = done ? lat[done / 2] : 0, p99 = done ? lat[done * 99 / 100] : 0;
    if (http)
        printf("reqs=%ld conns=%ld errors=%ld secs=%.3f rate=%.0f p50_us=%u p99_us=%u", done,
               finished, errors, secs, (double)done / secs, p50, p99);
    else
        printf("conns=%ld errors=%ld secs=%.3f rate=%.0f p50_us=%u p99_us=%u", done, errors, secs,
               (double)done / secs, p50, p99);
    if (errors || started < conns)
        printf(" (not started %ld; connect %ld: %s; proxy %ld: %s; send %ld: %s; reply %ld: %s)",
               conns - started, fail_connect, fail_connect ? strerror(errno_connect) : "-",
               fail_proxy, fail_proxy && tl_px_why ? tl_px_why : "-", fail_send,
               fail_send ? strerror(errno_send) : "-", fail_reply,
               !fail_reply ? "-"
               : why_reply ? why_reply
                           : strerror(errno_reply));
    printf("\n");
    free(slots);
    free(lat);
    close(ep);
    /* A few failures in tens of thousands (a reused port meeting a stale
     * NAT entry) are reported, not fatal. */
    return errors * 100 < conns && started == conns ? 0 : 1;
}

/* ---- bulk ------------------------------------------------------------------------- */

static void tl_read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = recv(fd, (uint8_t *)buf + got, len - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            fprintf(stderr, "tcpload: short read (%zu of %zu)\n", got, len);
            exit(2);
        }
        got += (size_t)r;
    }
}

static int tl_bulk(uint64_t bytes)
{
    int mfd = memfd_create("tcpload", MFD_CLOEXEC);
    if (mfd < 0 || ftruncate(mfd, TL_CHUNK) != 0)
        tl_die("memfd");
    uint8_t *map = mmap(NULL, TL_CHUNK, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (map == MAP_FAILED)
        tl_die("mmap");
    for (size_t i = 0; i < TL_CHUNK; i++)
        map[i] = (uint8_t)(i * 131u + (i >> 12));
    munmap(map, TL_CHUNK);

    int fd = tl_socket(0);
    if (connect(fd, (struct sockaddr *)&tl_dst, sizeof tl_dst) != 0)
        tl_die("connect");
    tl_px_blocking(fd);
    if (tl_send_all(fd, tl_hello, tl_hello_len) != 0)
        tl_die("send hello");
    uint8_t reply[TL_REPLY_LEN];
    tl_read_full(fd, reply, sizeof reply);
    if (memcmp(reply, TCPRESP_REPLY, TL_REPLY_LEN) != 0) {
        fprintf(stderr, "tcpload: the reply is not tcpresp's\n");
        exit(2);
    }

    if (tl_send_all(fd, &bytes, sizeof bytes) != 0)
        tl_die("send count");
    uint64_t t0 = tl_now_ns(), sent = 0;
    while (sent < bytes) {
        off_t off = (off_t)(sent % TL_CHUNK);
        size_t want = (size_t)(TL_CHUNK - (uint64_t)off);
        if (want > bytes - sent)
            want = (size_t)(bytes - sent);
        ssize_t r = sendfile(fd, mfd, &off, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            tl_die("sendfile");
        sent += (uint64_t)r;
    }
    uint64_t count = 0;
    tl_read_full(fd, &count, sizeof count);
    double secs = (double)(tl_now_ns() - t0) / 1e9;
    printf("bytes=%llu received=%llu secs=%.3f gbps=%.3f\n", (unsigned long long)sent,
           (unsigned long long)count, secs, (double)sent / secs / 1e9);
    close(fd);
    close(mfd);
    return count == sent ? 0 : 1;
}

/* ---- hold ------------------------------------------------------------------------- */

static int tl_hold(long n)
{
    int *fds = calloc((size_t)n, sizeof *fds);
    if (!fds)
        tl_die("calloc");
    struct timeval tv = {.tv_sec = 20};
    for (long i = 0; i < n; i++) {
        fds[i] = tl_socket(0);
        (void)setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(fds[i], (struct sockaddr *)&tl_dst, sizeof tl_dst) != 0)
            tl_die("connect");
        tl_px_blocking(fds[i]);
    }
    printf("connected %ld\n", n);
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    /* In batches of TL_HOLD_BATCH: the state after the hello is what is
     * measured, not how a burst of thousands of hellos is absorbed. */
    long ok = 0;
    for (long b = 0; b < n; b += TL_HOLD_BATCH) {
        long e = b + TL_HOLD_BATCH < n ? b + TL_HOLD_BATCH : n;
        for (long i = b; i < e; i++)
            if (tl_send_all(fds[i], tl_hello, tl_hello_len) != 0)
                tl_die("send hello");
        for (long i = b; i < e; i++) {
            uint8_t buf[TL_REPLY_LEN];
            size_t got = 0;
            while (got < sizeof buf) {
                ssize_t r = recv(fds[i], buf + got, sizeof buf - got, 0);
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
            ok += got == sizeof buf && memcmp(buf, TCPRESP_REPLY, TL_REPLY_LEN) == 0;
        }
    }
    printf("replied %ld\n", ok);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin))
        ;
    for (long i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
    return ok == n ? 0 : 1;
}

static int tl_usage(void)
{
    fprintf(stderr, "usage: tcpload [PROXY] rate HOST PORT HELLO N K [SRC]\n"
                    "       tcpload [PROXY] bulk HOST PORT HELLO BYTES [SRC]\n"
                    "       tcpload [PROXY] hold HOST PORT HELLO N [SRC]\n"
                    "       tcpload [PROXY] ka HOST PORT REQUEST N K M [SRC]\n"
                    "PROXY: --connect NAME:PORT | --socks NAME:PORT\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "--connect") == 0)
        tl_px_setup(TL_PX_CONNECT, argv[2]);
    else if (argc > 2 && strcmp(argv[1], "--socks") == 0)
        tl_px_setup(TL_PX_SOCKS, argv[2]);
    if (tl_px_kind != TL_PX_NONE) {
        argc -= 2;
        argv += 2;
    }
    if (argc < 6)
        return tl_usage();
    const char *mode = argv[1];
    tl_dst.sin_family = AF_INET;
    tl_dst.sin_port = htons((uint16_t)atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &tl_dst.sin_addr) != 1) {
        fprintf(stderr, "tcpload: bad address %s\n", argv[2]);
        return 2;
    }
    tl_load_hello(argv[4]);
    int src_arg = strcmp(mode, "rate") == 0 ? 7 : strcmp(mode, "ka") == 0 ? 8 : 6;
    if (argc > src_arg) {
        tl_src.sin_family = AF_INET;
        if (inet_pton(AF_INET, argv[src_arg], &tl_src.sin_addr) != 1) {
            fprintf(stderr, "tcpload: bad address %s\n", argv[src_arg]);
            return 2;
        }
        tl_has_src = 1;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (strcmp(mode, "rate") == 0 && argc > 6)
        return tl_run(atol(argv[5]), atol(argv[6]), 1, 0);
    if (strcmp(mode, "ka") == 0 && argc > 7 && atol(argv[7]) > 0)
        return tl_run(atol(argv[5]), atol(argv[6]), atol(argv[7]), 1);
    if (strcmp(mode, "bulk") == 0)
        return tl_bulk(strtoull(argv[5], NULL, 10));
    if (strcmp(mode, "hold") == 0)
        return tl_hold(atol(argv[5]));
    fprintf(stderr, "tcpload: unknown mode %s\n", mode);
    return tl_usage();
}
