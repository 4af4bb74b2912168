/* bench/tcp/tcpload.c: the load side of bench/tcp (issue 4, Performance).
 *
 *   tcpload rate HOST PORT HELLO N K [SRC]   N connections, K at a time: each
 *       connects, sends the recorded ClientHello, reads the responder's
 *       fixed reply, closes. Prints conn/s and the connect-to-reply latency
 *       (from socket() to the last reply byte) p50 / p99 in microseconds;
 *       fails when 1% or more of the connections failed.
 *   tcpload bulk HOST PORT HELLO BYTES [SRC] one connection: the hello, the
 *       reply, then BYTES announced (8 bytes) and streamed (sendfile from a
 *       memfd, no copy on our side); the sink answers its 8-byte count once
 *       it has them all. Prints GB/s (10^9 bytes) from the first streamed
 *       byte to the count.
 *   tcpload hold HOST PORT HELLO N [SRC]     N connections held open: prints
 *       "connected N", waits for a line on stdin, sends the hello on each and
 *       reads each reply (64 connections at a time), prints "replied N",
 *       waits for stdin's EOF, exits.
 *
 * SRC binds the client's source address (the nftables REDIRECT in run.sh
 * matches it). One thread, nonblocking sockets and epoll for `rate`.
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
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* What tcpresp answers after the hello (same constant there). */
#define TL_REPLY_LEN  32
#define TL_CHUNK      (64u << 20)
#define TL_HOLD_BATCH 64

static uint8_t tl_hello[16384];
static size_t tl_hello_len;
static struct sockaddr_in tl_dst, tl_src;
static int tl_has_src;

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
        fprintf(stderr, "tcpload: empty hello %s\n", path);
        exit(2);
    }
}

static int tl_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- rate ------------------------------------------------------------------------- */

typedef struct tl_slot {
    int fd;
    int state; /* 0 connecting, 1 reading the reply */
    size_t got;
    uint64_t t0;
} tl_slot_t;

static int tl_rate(long n, long k)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    tl_slot_t *slots = calloc((size_t)k, sizeof *slots);
    uint32_t *lat = calloc((size_t)n, sizeof *lat);
    if (ep < 0 || !slots || !lat)
        tl_die("setup");
    long started = 0, done = 0, errors = 0, active = 0;
    /* What the failures were: connect (SO_ERROR), the hello's send, or the
     * reply (EOF or an error before 32 bytes); the first errno of each. */
    long fail_connect = 0, fail_send = 0, fail_reply = 0;
    int errno_connect = 0, errno_send = 0, errno_reply = 0;
    uint64_t t_start = tl_now_ns(), deadline = t_start + 60ull * 1000000000u;

    for (long i = 0; i < k; i++)
        slots[i].fd = -1;
    for (;;) {
        /* Keep K connections in flight. */
        for (long i = 0; i < k && started < n; i++) {
            tl_slot_t *s = &slots[i];
            if (s->fd >= 0)
                continue;
            s->t0 = tl_now_ns();
            s->fd = tl_socket(1);
            s->state = 0;
            s->got = 0;
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
        int m = epoll_wait(ep, evs, 256, 1000);
        for (int j = 0; j < m; j++) {
            tl_slot_t *s = &slots[evs[j].data.u64];
            int fail = 0;
            if (s->state == 0) {
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
                    fail = 1;
                    if (fail_connect++ == 0)
                        errno_connect = err ? err : errno;
                } else if (send(s->fd, tl_hello, tl_hello_len, MSG_NOSIGNAL) !=
                           (ssize_t)tl_hello_len) {
                    fail = 1;
                    if (fail_send++ == 0)
                        errno_send = errno;
                } else {
                    s->state = 1;
                    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = evs[j].data.u64};
                    (void)epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
                    continue;
                }
            } else {
                uint8_t buf[TL_REPLY_LEN];
                ssize_t r = recv(s->fd, buf, sizeof buf - s->got, 0);
                if (r < 0 && errno == EAGAIN)
                    continue;
                if (r <= 0) {
                    fail = 1;
                    if (fail_reply++ == 0)
                        errno_reply = r == 0 ? 0 : errno;
                } else {
                    s->got += (size_t)r;
                    if (s->got < TL_REPLY_LEN)
                        continue;
                    uint64_t us = (tl_now_ns() - s->t0) / 1000u;
                    lat[done++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
                }
            }
            if (fail)
                errors++;
            close(s->fd); /* epoll forgets it */
            s->fd = -1;
            active--;
        }
    }
    double secs = (double)(tl_now_ns() - t_start) / 1e9;
    qsort(lat, (size_t)done, sizeof *lat, tl_cmp_u32);
    uint32_t p50 = done ? lat[done / 2] : 0, p99 = done ? lat[done * 99 / 100] : 0;
    printf("conns=%ld errors=%ld secs=%.3f rate=%.0f p50_us=%u p99_us=%u", done, errors, secs,
           (double)done / secs, p50, p99);
    if (errors)
        printf(" (connect %ld: %s; send %ld: %s; reply %ld: %s)", fail_connect,
               fail_connect ? strerror(errno_connect) : "-", fail_send,
               fail_send ? strerror(errno_send) : "-", fail_reply,
               !fail_reply   ? "-"
               : errno_reply ? strerror(errno_reply)
                             : "EOF");
    printf("\n");
    free(slots);
    free(lat);
    close(ep);
    /* A few failures in tens of thousands (a reused port meeting a stale
     * NAT entry) are reported, not fatal. */
    return errors * 100 < n ? 0 : 1;
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
    if (send(fd, tl_hello, tl_hello_len, MSG_NOSIGNAL) != (ssize_t)tl_hello_len)
        tl_die("send hello");
    uint8_t reply[TL_REPLY_LEN];
    tl_read_full(fd, reply, sizeof reply);

    if (send(fd, &bytes, sizeof bytes, MSG_NOSIGNAL) != (ssize_t)sizeof bytes)
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
    for (long i = 0; i < n; i++) {
        fds[i] = tl_socket(0);
        if (connect(fds[i], (struct sockaddr *)&tl_dst, sizeof tl_dst) != 0)
            tl_die("connect");
    }
    printf("connected %ld\n", n);
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    /* In batches of TL_HOLD_BATCH: the state after the hello is what is
     * measured, not how a burst of thousands of hellos is absorbed. */
    struct timeval tv = {.tv_sec = 20};
    long ok = 0;
    for (long b = 0; b < n; b += TL_HOLD_BATCH) {
        long e = b + TL_HOLD_BATCH < n ? b + TL_HOLD_BATCH : n;
        for (long i = b; i < e; i++)
            if (send(fds[i], tl_hello, tl_hello_len, MSG_NOSIGNAL) != (ssize_t)tl_hello_len)
                tl_die("send hello");
        for (long i = b; i < e; i++) {
            uint8_t buf[TL_REPLY_LEN];
            size_t got = 0;
            (void)setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            while (got < sizeof buf) {
                ssize_t r = recv(fds[i], buf + got, sizeof buf - got, 0);
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
            ok += got == sizeof buf;
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

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: tcpload rate HOST PORT HELLO N K [SRC]\n"
                        "       tcpload bulk HOST PORT HELLO BYTES [SRC]\n"
                        "       tcpload hold HOST PORT HELLO N [SRC]\n");
        return 2;
    }
    const char *mode = argv[1];
    tl_dst.sin_family = AF_INET;
    tl_dst.sin_port = htons((uint16_t)atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &tl_dst.sin_addr) != 1) {
        fprintf(stderr, "tcpload: bad address %s\n", argv[2]);
        return 2;
    }
    tl_load_hello(argv[4]);
    int src_arg = strcmp(mode, "rate") == 0 ? 7 : 6;
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
        return tl_rate(atol(argv[5]), atol(argv[6]));
    if (strcmp(mode, "bulk") == 0)
        return tl_bulk(strtoull(argv[5], NULL, 10));
    if (strcmp(mode, "hold") == 0)
        return tl_hold(atol(argv[5]));
    fprintf(stderr, "tcpload: unknown mode %s\n", mode);
    return 2;
}
