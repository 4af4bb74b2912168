/* bench/dns/dnsload.c: a batched UDP DNS load generator (issue 3, Performance).
 *
 * dnsperf sends and receives one datagram per system call and tops out near
 * 130k QPS on the bench machine, below what a good server answers on one
 * core. This one keeps a fixed number of queries in flight over several
 * connected UDP sockets, sends and receives them with sendmmsg/recvmmsg in
 * batches, and busy-polls its own core (or, with -w, sleeps in poll(2) when a
 * pass over its sockets moved nothing, so that a server with several threads
 * can have the cores the load does not need: bench/workers). It is bounded: it stops after a fixed
 * duration (-t) or a fixed number of queries (-n), then waits at most the
 * query timeout for the last answers.
 *
 * Queries come from a dnsperf-format file ("name TYPE" per line) and are sent
 * round-robin, without EDNS, as dnsperf does by default. Each answer is
 * matched to its query by socket and ID; the latency is the time between the
 * sendmmsg that sent it and the recvmmsg that returned it. A query with no
 * answer after the timeout is lost; an answer that comes after that is late.
 *
 * Output: one line of key=value pairs on stdout (see usage()); not_noerror
 * counts answers whose RCODE was not NOERROR, so a misconfigured server that
 * answers REFUSED fast does not pass for a fast one.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DL_MAX_SOCKETS 64
#define DL_MAX_BATCH   256
#define DL_MAX_QUERY   300
/* IDs are handed out in order per socket; never more than this many between
 * the oldest unanswered one and the next, so a late answer cannot be taken
 * for a newer query with the same ID. */
#define DL_ID_WINDOW 60000
/* Latency histogram: 1 us buckets up to this, one overflow bucket. */
#define DL_HIST_US 1000000

typedef struct dl_query {
    uint8_t wire[DL_MAX_QUERY];
    uint16_t len;
} dl_query_t;

typedef struct dl_sock {
    int fd;
    uint16_t next, oldest; /* IDs: [oldest, next) were sent */
    uint32_t outstanding;
    uint64_t sent_ns[65536]; /* 0: not waiting for this ID */
} dl_sock_t;

typedef struct dl_opts {
    const char *server, *file;
    unsigned port;
    double seconds;
    uint64_t count;
    unsigned sockets, inflight, batch, timeout_ms;
    bool wait; /* -w: poll(2) when a pass moved nothing, instead of spinning */
} dl_opts_t;

static uint32_t dl_hist[DL_HIST_US + 1];

static void usage(void)
{
    fprintf(
        stderr,
        "usage: dnsload -s ADDR -p PORT -f QUERYFILE (-t SECONDS | -n COUNT)\n"
        "               [-c SOCKETS=8] [-q INFLIGHT=256] [-b BATCH=32] [-T TIMEOUT_MS=1000] [-w]\n"
        "-w: sleep in poll(2) when nothing moved, instead of busy-polling a core.\n"
        "QUERYFILE: dnsperf format, \"name TYPE\" per line (A, AAAA, TXT, MX, ...).\n"
        "Prints: sent= answered= lost= late= seconds= qps= p50_us= p99_us= max_us= not_noerror=\n");
}

static uint64_t dl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int dl_qtype(const char *s)
{
    static const struct {
        const char *name;
        int type;
    } types[] = {{"A", 1},    {"NS", 2},    {"CNAME", 5},  {"SOA", 6},
                 {"PTR", 12}, {"MX", 15},   {"TXT", 16},   {"AAAA", 28},
                 {"SRV", 33}, {"SVCB", 64}, {"HTTPS", 65}, {"ANY", 255}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcasecmp(s, types[i].name) == 0)
            return types[i].type;
    return -1;
}

/* RFC 1035 §4.1: header (ID filled in at send time, RD set) + question. */
static int dl_encode(const char *name, int qtype, dl_query_t *q)
{
    uint8_t *p = q->wire;
    static const uint8_t hdr[12] = {0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    memcpy(p, hdr, sizeof hdr);
    size_t off = sizeof hdr;
    const char *s = name;
    while (*s) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        if (n == 0 || n > 63 || off + 1 + n + 5 > DL_MAX_QUERY)
            return -EINVAL;
        p[off++] = (uint8_t)n;
        memcpy(p + off, s, n);
        off += n;
        s += n;
        if (*s == '.')
            s++;
    }
    p[off++] = 0;
    p[off++] = (uint8_t)(qtype >> 8);
    p[off++] = (uint8_t)qtype;
    p[off++] = 0;
    p[off++] = 1; /* IN */
    q->len = (uint16_t)off;
    return 0;
}

static int dl_load(const char *path, dl_query_t **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    size_t n = 0, cap = 1024;
    dl_query_t *qs = malloc(cap * sizeof *qs);
    char line[512], name[300], type[32];
    int rc = 0;
    if (!qs) {
        rc = -ENOMEM;
        goto fail;
    }
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || sscanf(line, "%299s %31s", name, type) != 2)
            continue;
        int t = dl_qtype(type);
        if (t < 0) {
            fprintf(stderr, "dnsload: unknown type %s\n", type);
            rc = -EINVAL;
            goto fail;
        }
        if (n == cap) {
            dl_query_t *nq = realloc(qs, 2 * cap * sizeof *qs);
            if (!nq) {
                rc = -ENOMEM;
                goto fail;
            }
            qs = nq;
            cap *= 2;
        }
        if (dl_encode(name, t, &qs[n]) != 0) {
            fprintf(stderr, "dnsload: bad name %s\n", name);
            rc = -EINVAL;
            goto fail;
        }
        n++;
    }
    if (n == 0) {
        rc = -ENODATA;
        goto fail;
    }
    fclose(f);
    *out = qs;
    *n_out = n;
    return 0;
fail:
    free(qs);
    fclose(f);
    return rc;
}

static uint64_t dl_percentile(uint64_t total, double pct)
{
    if (total == 0)
        return 0;
    uint64_t want = (uint64_t)((double)total * pct / 100.0);
    if (want == 0)
        want = 1;
    uint64_t acc = 0;
    for (size_t i = 0; i <= DL_HIST_US; i++) {
        acc += dl_hist[i];
        if (acc >= want)
            return i;
    }
    return DL_HIST_US;
}

static int dl_parse_opts(int argc, char **argv, dl_opts_t *o)
{
    *o = (dl_opts_t){.sockets = 8, .inflight = 256, .batch = 32, .timeout_ms = 1000};
    int c;
    while ((c = getopt(argc, argv, "s:p:f:t:n:c:q:b:T:wh")) != -1) {
        switch (c) {
        case 's':
            o->server = optarg;
            break;
        case 'p':
            o->port = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'f':
            o->file = optarg;
            break;
        case 't':
            o->seconds = strtod(optarg, NULL);
            break;
        case 'n':
            o->count = strtoull(optarg, NULL, 10);
            break;
        case 'c':
            o->sockets = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'q':
            o->inflight = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'b':
            o->batch = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'w':
            o->wait = true;
            break;
        case 'T':
            o->timeout_ms = (unsigned)strtoul(optarg, NULL, 10);
            break;
        default:
            return -EINVAL;
        }
    }
    if (!o->server || !o->file || o->port == 0 || o->port > 65535 ||
        (o->seconds <= 0 && o->count == 0) || o->seconds > 3600 || o->sockets == 0 ||
        o->sockets > DL_MAX_SOCKETS || o->batch == 0 || o->batch > DL_MAX_BATCH ||
        o->inflight < o->sockets || o->inflight / o->sockets > DL_ID_WINDOW / 2 ||
        o->timeout_ms == 0 || o->timeout_ms > 60000)
        return -EINVAL;
    return 0;
}

static int dl_open(const dl_opts_t *o, dl_sock_t *socks)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, o->server, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)o->port);
        sl = sizeof *s4;
    } else if (inet_pton(AF_INET6, o->server, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)o->port);
        sl = sizeof *s6;
    } else {
        return -EINVAL;
    }
    for (unsigned i = 0; i < o->sockets; i++) {
        int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int buf = 4 << 20;
        if (fd < 0)
            return -errno;
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
        if (connect(fd, (struct sockaddr *)&ss, sl) != 0) {
            int e = -errno;
            close(fd);
            return e;
        }
        socks[i].fd = fd;
        /* Different starting IDs per socket, so servers see varied IDs. */
        socks[i].next = socks[i].oldest = (uint16_t)(i * 7919u);
    }
    return 0;
}

int main(int argc, char **argv)
{
    dl_opts_t o;
    if (dl_parse_opts(argc, argv, &o) != 0) {
        usage();
        return 2;
    }
    dl_query_t *qs;
    size_t nq;
    int rc = dl_load(o.file, &qs, &nq);
    if (rc != 0) {
        fprintf(stderr, "dnsload: %s: %s\n", o.file, strerror(-rc));
        return 2;
    }
    dl_sock_t *socks = calloc(o.sockets, sizeof *socks);
    static struct mmsghdr msgs[DL_MAX_BATCH];
    static struct iovec iov[DL_MAX_BATCH];
    static uint8_t bufs[DL_MAX_BATCH][DL_MAX_QUERY > 1500 ? DL_MAX_QUERY : 1500];
    if (!socks) {
        free(qs);
        return 2;
    }
    rc = dl_open(&o, socks);
    if (rc != 0) {
        fprintf(stderr, "dnsload: %s:%u: %s\n", o.server, o.port, strerror(-rc));
        return 2;
    }

    uint32_t per_sock = o.inflight / o.sockets;
    uint64_t timeout_ns = (uint64_t)o.timeout_ms * 1000000u;
    uint64_t sent = 0, answered = 0, lost = 0, late = 0, outstanding = 0, bad_rcode = 0;
    size_t qi = 0;
    uint64_t start = dl_now_ns(), last_recv = start;
    uint64_t end = o.seconds > 0 ? start + (uint64_t)(o.seconds * 1e9) : UINT64_MAX;
    bool sending = true;
    uint64_t drain_end = 0;

    struct pollfd *pfds = calloc(o.sockets, sizeof *pfds);
    if (!pfds) {
        fprintf(stderr, "dnsload: out of memory\n");
        return 2;
    }
    for (unsigned si = 0; si < o.sockets; si++)
        pfds[si] = (struct pollfd){.fd = socks[si].fd, .events = POLLIN};
    for (;;) {
        uint64_t now = dl_now_ns();
        bool moved = false;
        if (sending && (now >= end || (o.count && sent >= o.count))) {
            sending = false;
            drain_end = now + timeout_ns;
        }
        if (!sending && (outstanding == 0 || now >= drain_end))
            break;
        for (unsigned si = 0; si < o.sockets; si++) {
            dl_sock_t *s = &socks[si];
            /* Receive. */
            for (unsigned i = 0; i < o.batch; i++) {
                iov[i].iov_base = bufs[i];
                iov[i].iov_len = sizeof bufs[i];
                memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
                msgs[i].msg_hdr.msg_iov = &iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            int got = recvmmsg(s->fd, msgs, o.batch, MSG_DONTWAIT, NULL);
            if (got > 0) {
                moved = true;
                uint64_t t = dl_now_ns();
                last_recv = t;
                for (int i = 0; i < got; i++) {
                    if (msgs[i].msg_len < 12 || !(bufs[i][2] & 0x80))
                        continue;
                    uint16_t id = (uint16_t)(bufs[i][0] << 8 | bufs[i][1]);
                    if (s->sent_ns[id] == 0) {
                        late++;
                        continue;
                    }
                    if ((bufs[i][3] & 0x0f) != 0)
                        bad_rcode++;
                    uint64_t us = (t - s->sent_ns[id]) / 1000;
                    dl_hist[us < DL_HIST_US ? us : DL_HIST_US]++;
                    s->sent_ns[id] = 0;
                    s->outstanding--;
                    outstanding--;
                    answered++;
                }
            }
            /* Retire answered IDs and expire the lost ones, oldest first. */
            uint64_t t = dl_now_ns();
            while (s->oldest != s->next) {
                uint64_t ts = s->sent_ns[s->oldest];
                if (ts != 0 && t - ts < timeout_ns)
                    break;
                if (ts != 0) {
                    s->sent_ns[s->oldest] = 0;
                    s->outstanding--;
                    outstanding--;
                    lost++;
                }
                s->oldest++;
            }
            if (!sending)
                continue;
            /* Send up to the in-flight limit. */
            uint32_t room = per_sock - s->outstanding;
            uint32_t window = (uint16_t)(s->next - s->oldest);
            if (window + room > DL_ID_WINDOW)
                room = window < DL_ID_WINDOW ? DL_ID_WINDOW - window : 0;
            if (room > o.batch)
                room = o.batch;
            if (o.count && room > o.count - sent)
                room = (uint32_t)(o.count - sent);
            if (room == 0)
                continue;
            for (uint32_t i = 0; i < room; i++) {
                const dl_query_t *q = &qs[qi];
                qi = qi + 1 == nq ? 0 : qi + 1;
                uint16_t id = (uint16_t)(s->next + i);
                memcpy(bufs[i], q->wire, q->len);
                bufs[i][0] = (uint8_t)(id >> 8);
                bufs[i][1] = (uint8_t)id;
                iov[i].iov_base = bufs[i];
                iov[i].iov_len = q->len;
                memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
                msgs[i].msg_hdr.msg_iov = &iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            t = dl_now_ns();
            int n = sendmmsg(s->fd, msgs, room, MSG_DONTWAIT);
            if (n <= 0) {
                /* Socket buffer full (or a refused port): the same queries
                 * go out on the next round. */
                qi = (qi + nq - room % nq) % nq;
                continue;
            }
            moved = true;
            if ((uint32_t)n < room)
                qi = (qi + nq - (room - (uint32_t)n) % nq) % nq;
            for (int i = 0; i < n; i++)
                s->sent_ns[(uint16_t)(s->next + i)] = t | 1;
            s->next = (uint16_t)(s->next + n);
            s->outstanding += (uint32_t)n;
            outstanding += (uint64_t)n;
            sent += (uint64_t)n;
        }
        /* Every query in flight and no answer yet: wait for one (1 ms at
         * most, so the expiry above still runs). */
        if (o.wait && !moved)
            (void)poll(pfds, o.sockets, 1);
    }
    free(pfds);
    /* Whatever is still unanswered at the end of the drain is lost. */
    lost += outstanding;
    double secs = (double)(last_recv - start) / 1e9;
    if (secs <= 0)
        secs = 1e-9;
    printf("sent=%llu answered=%llu lost=%llu late=%llu seconds=%.3f qps=%.0f p50_us=%llu "
           "p99_us=%llu max_us=%llu not_noerror=%llu\n",
           (unsigned long long)sent, (unsigned long long)answered, (unsigned long long)lost,
           (unsigned long long)late, secs, (double)answered / secs,
           (unsigned long long)dl_percentile(answered, 50),
           (unsigned long long)dl_percentile(answered, 99),
           (unsigned long long)dl_percentile(answered, 100), (unsigned long long)bad_rcode);
    for (unsigned i = 0; i < o.sockets; i++)
        close(socks[i].fd);
    free(socks);
    free(qs);
    return answered > 0 ? 0 : 1;
}
