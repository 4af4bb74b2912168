/* bench/soak/soakload.c: the load side of bench/soak (issue 6, load and soak).
 *
 * One thread, nonblocking sockets, one epoll set. In order:
 *  1. ramp: N connections to moat's tls listener; each sends the allowed
 *     ClientHello and must get tcpresp's reply byte for byte; then it stays
 *     open and idle. From then on any byte, EOF or error on a held connection
 *     is an error. With -g GATE, it then waits for a line from GATE (run.sh's
 *     FIFO), so that moat is sampled in that state; the mix starts after it.
 *  2. mix, for S seconds at fixed rates (a schedule, not a closed loop; what
 *     falls more than a second behind is skipped and counted, not made up):
 *     DNS queries over UDP, every answer parsed (ldns) and checked: allowed
 *     names that hit moat's cache (64 names, TTL 3600), allowed names that
 *     miss it (500 names, TTL 1 s, visited in turn), blocked names (unique)
 *     asked A (0.0.0.0, AA), AAAA (::, AA) and TXT / HTTPS / MX / SRV
 *     (NOERROR, AA, no answer, SOA in authority); and short TCP connections:
 *     allowed TLS and HTTP (tcpresp's reply byte for byte, then a payload of
 *     1..4096 bytes whose exact count tcpresp must send back), blocked TLS
 *     (exactly the access_denied alert, then EOF), blocked HTTP (the 403
 *     with X-Proxy-Error, then EOF) and not-TLS bytes (a reset, no byte).
 *  3. end: what is in flight finishes (each operation has a deadline); with
 *     -g, a second line from GATE (moat is sampled with the load over and
 *     every held connection still open); then every held connection must
 *     still carry a payload round trip.
 *
 * stdout, line-buffered: `held ...` after the ramp, `stat ...` (cumulative
 * counters) every second, `done ...` and `error-class ...` lines at the
 * end. The first errors are described on stderr as they happen. Exit 0 only
 * when there was no error at all.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ldns/ldns.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "tcpresp.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define SL_NS           1000000000ull
#define SL_SHORT_SLOTS  512 /* short TCP connections in flight at most */
#define SL_RAMP_PAR     128 /* held connections being set up at once */
#define SL_SHORT_TTL_NS (10 * SL_NS)
#define SL_HELD_TTL_NS  (30 * SL_NS) /* ramp and final check, per connection */
#define SL_DNS_TTL_NS   (3 * SL_NS)  /* moat's dns.timeout is 2 s */
#define SL_DNS_HITS     64
#define SL_DNS_MISSES   500
#define SL_PAYLOAD_MAX  4096
#define SL_IN_MAX       512
#define SL_ERR_SHOWN    20
#define SL_ERR_CLASSES  48

/* ---- options ------------------------------------------------------------------------ */

typedef struct sl_opts {
    struct sockaddr_in tls, http, dns, src;
    struct in_addr expect; /* what allowed names resolve to */
    long held, seconds;
    double qps, cps;
} sl_opts_t;

static sl_opts_t sl_o;
static const char *sl_gate; /* -g: wait for a line from this file (a FIFO) before the check */
static uint8_t *sl_hello_ok, *sl_hello_block, *sl_req_ok, *sl_req_block;
static size_t sl_hello_ok_len, sl_hello_block_len, sl_req_ok_len, sl_req_block_len;
static uint8_t sl_payload[SL_PAYLOAD_MAX];
static const uint8_t sl_not_tls[] = "SSH-2.0-moat-soak\r\n";
/* RFC 8446 §6: alert record, fatal (2), access_denied (49). */
static const uint8_t sl_alert[7] = {21, 3, 3, 0, 2, 2, 49};

static uint64_t sl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * SL_NS + (uint64_t)ts.tv_nsec;
}

static void sl_die(const char *what, const char *detail)
{
    fprintf(stderr, "soakload: %s: %s\n", what, detail);
    exit(2);
}

static void sl_read_file(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        sl_die(path, strerror(errno));
    *out = malloc(65536);
    if (!*out)
        sl_die("malloc", strerror(errno));
    *len = fread(*out, 1, 65536, f);
    fclose(f);
    if (*len == 0 || *len == 65536)
        sl_die(path, "empty or over 64 KiB");
}

static void sl_hostport(const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    size_t n = colon ? (size_t)(colon - s) : 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    if (!colon || n == 0 || n >= sizeof host)
        sl_die("not ADDR:PORT", s);
    memcpy(host, s, n);
    host[n] = '\0';
    long port = strtol(colon + 1, NULL, 10);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1 || port <= 0 || port > 65535)
        sl_die("not ADDR:PORT", s);
    sa->sin_port = htons((uint16_t)port);
}

/* ---- counters and errors --------------------------------------------------------------- */

typedef enum sl_kind {
    SL_HOLD,
    SL_TLS_OK,
    SL_TLS_BLOCK,
    SL_HTTP_OK,
    SL_HTTP_BLOCK,
    SL_NOT_TLS,
    SL_KIND_N,
} sl_kind_t;

static const char *const sl_kind_name[SL_KIND_N] = {
    "held", "tls-allowed", "tls-blocked", "http-allowed", "http-blocked", "not-tls",
};

typedef enum sl_dkind {
    SL_D_HIT,
    SL_D_MISS,
    SL_D_BLOCK_A,
    SL_D_BLOCK_AAAA,
    SL_D_BLOCK_OTHER,
    SL_DKIND_N,
} sl_dkind_t;

static const char *const sl_dkind_name[SL_DKIND_N] = {
    "dns-hit", "dns-miss", "dns-blocked-a", "dns-blocked-aaaa", "dns-blocked-other",
};

static struct {
    uint64_t tcp_started[SL_KIND_N], tcp_ok[SL_KIND_N];
    uint64_t dns_sent[SL_DKIND_N], dns_ok[SL_DKIND_N];
    uint64_t dns_late;    /* answers after their deadline (the timeout was counted) */
    uint64_t late_starts; /* short connections skipped: every slot busy, or > 1 s behind */
    uint64_t dns_skipped; /* queries skipped: more than a second behind the schedule */
    uint64_t held_up, held_verified;
    uint64_t errors;
} sl_c;

static struct {
    char what[96];
    uint64_t n;
} sl_err_class[SL_ERR_CLASSES];
static size_t sl_n_err_class;

static void sl_error(const char *kind, const char *what)
{
    char key[96];
    snprintf(key, sizeof key, "%s: %s", kind, what);
    sl_c.errors++;
    if (sl_c.errors <= SL_ERR_SHOWN)
        fprintf(stderr, "soakload: error: %s\n", key);
    for (size_t i = 0; i < sl_n_err_class; i++) {
        if (strcmp(sl_err_class[i].what, key) == 0) {
            sl_err_class[i].n++;
            return;
        }
    }
    if (sl_n_err_class < SL_ERR_CLASSES) {
        memcpy(sl_err_class[sl_n_err_class].what, key, sizeof key);
        sl_err_class[sl_n_err_class++].n = 1;
    }
}

static uint64_t sl_sum(const uint64_t *v, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s += v[i];
    return s;
}

/* ---- TCP connections ------------------------------------------------------------------- */

typedef enum sl_state {
    SL_FREE,
    SL_CONNECTING,
    SL_SENDING,    /* out: the hello / request, or count + payload */
    SL_READ_REPLY, /* tcpresp's fixed reply */
    SL_READ_COUNT, /* tcpresp's 8-byte count of the payload */
    SL_READ_EOF,   /* a blocked answer, up to EOF */
    SL_HELD,       /* idle; nothing may happen */
} sl_state_t;

typedef struct sl_conn {
    int fd;
    uint8_t kind;  /* sl_kind_t */
    uint8_t state; /* sl_state_t */
    bool counted;  /* count+payload sent already (next read: the count) */
    uint32_t events;
    uint64_t count; /* payload bytes announced */
    uint64_t deadline;
    /* What is being sent: a head (hello, request, or the count) and payload. */
    const uint8_t *head;
    size_t head_len, pay_len, off;
    uint8_t in[SL_IN_MAX];
    size_t in_len;
} sl_conn_t;

static int sl_ep;
static sl_conn_t *sl_conns; /* [0, held) held, then SL_SHORT_SLOTS short */
static size_t sl_n_conns;
static long sl_held_active; /* held connections not yet HELD or failed (ramp / check) */

/* epoll data: 0 is the DNS socket, i + 1 the connection i. */
static void sl_watch(sl_conn_t *c, uint32_t events)
{
    if (c->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)(c - sl_conns) + 1};
    if (epoll_ctl(sl_ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) != 0)
        sl_die("epoll_ctl", strerror(errno));
    c->events = events;
}

static void sl_close(sl_conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd); /* epoll forgets it */
    c->fd = -1;
    c->events = 0;
    c->state = SL_FREE;
}

static void sl_fail(sl_conn_t *c, const char *what)
{
    sl_error(sl_kind_name[c->kind], what);
    if (c->kind == SL_HOLD && sl_held_active > 0 && c->state != SL_HELD)
        sl_held_active--;
    sl_close(c);
}

static void sl_done(sl_conn_t *c)
{
    sl_c.tcp_ok[c->kind]++;
    sl_close(c);
}

static void sl_send_more(sl_conn_t *c);

/* Start sending head then pay_len bytes of the payload. */
static void sl_send(sl_conn_t *c, const uint8_t *head, size_t head_len, size_t pay_len)
{
    c->head = head;
    c->head_len = head_len;
    c->pay_len = pay_len;
    c->off = 0;
    c->state = SL_SENDING;
    sl_send_more(c);
}

static void sl_after_send(sl_conn_t *c)
{
    c->in_len = 0;
    if (c->counted) {
        c->state = SL_READ_COUNT;
    } else if (c->kind == SL_HOLD || c->kind == SL_TLS_OK || c->kind == SL_HTTP_OK) {
        c->state = SL_READ_REPLY;
    } else {
        c->state = SL_READ_EOF;
    }
    sl_watch(c, EPOLLIN | EPOLLRDHUP);
}

static void sl_send_more(sl_conn_t *c)
{
    size_t total = c->head_len + c->pay_len;
    while (c->off < total) {
        struct iovec iov[2];
        int n = 0;
        if (c->off < c->head_len)
            iov[n++] = (struct iovec){(void *)(c->head + c->off), c->head_len - c->off};
        size_t poff = c->off > c->head_len ? c->off - c->head_len : 0;
        if (c->pay_len > poff)
            iov[n++] = (struct iovec){sl_payload + poff, c->pay_len - poff};
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            sl_watch(c, EPOLLOUT);
            return;
        }
        if (w < 0) {
            sl_fail(c, strerror(errno));
            return;
        }
        c->off += (size_t)w;
    }
    sl_after_send(c);
}

/* After the fixed reply: a payload whose count tcpresp must send back. */
static void sl_send_counted(sl_conn_t *c, size_t n)
{
    c->count = n;
    c->counted = true;
    /* tcpresp reads the count in host order (same machine). */
    sl_send(c, (const uint8_t *)&c->count, sizeof c->count, n);
}

static void sl_connected(sl_conn_t *c)
{
    switch ((sl_kind_t)c->kind) {
    case SL_HOLD:
    case SL_TLS_OK:
        sl_send(c, sl_hello_ok, sl_hello_ok_len, 0);
        break;
    case SL_TLS_BLOCK:
        sl_send(c, sl_hello_block, sl_hello_block_len, 0);
        break;
    case SL_HTTP_OK:
        sl_send(c, sl_req_ok, sl_req_ok_len, 0);
        break;
    case SL_HTTP_BLOCK:
        sl_send(c, sl_req_block, sl_req_block_len, 0);
        break;
    case SL_NOT_TLS:
        sl_send(c, sl_not_tls, sizeof sl_not_tls - 1, 0);
        break;
    case SL_KIND_N:
        break;
    }
}

static bool sl_start(sl_conn_t *c, sl_kind_t kind, uint64_t ttl)
{
    const struct sockaddr_in *dst =
        kind == SL_HTTP_OK || kind == SL_HTTP_BLOCK ? &sl_o.http : &sl_o.tls;
    memset(c, 0, sizeof *c);
    c->kind = (uint8_t)kind;
    c->deadline = sl_now() + ttl;
    if (kind != SL_HOLD)
        sl_c.tcp_started[kind]++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        sl_fail(c, strerror(errno));
        return false;
    }
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(c->fd, (const struct sockaddr *)&sl_o.src, sizeof sl_o.src) != 0) {
        sl_fail(c, strerror(errno));
        return false;
    }
    if (connect(c->fd, (const struct sockaddr *)dst, sizeof *dst) == 0) {
        sl_connected(c);
    } else if (errno == EINPROGRESS) {
        c->state = SL_CONNECTING;
        sl_watch(c, EPOLLOUT);
    } else {
        sl_fail(c, strerror(errno));
        return false;
    }
    return true;
}

/* A blocked answer is complete (EOF reached): is it the right one? */
static void sl_check_blocked(sl_conn_t *c)
{
    const char *in = (const char *)c->in;
    c->in[c->in_len < SL_IN_MAX ? c->in_len : SL_IN_MAX - 1] = '\0';
    if (c->kind == SL_TLS_BLOCK) {
        if (c->in_len == sizeof sl_alert && memcmp(c->in, sl_alert, sizeof sl_alert) == 0)
            sl_done(c);
        else
            sl_fail(c, "not exactly the TLS access_denied alert before EOF");
    } else if (c->kind == SL_HTTP_BLOCK) {
        static const char status[] = "HTTP/1.1 403 Forbidden\r\n";
        if (c->in_len >= sizeof status - 1 && memcmp(in, status, sizeof status - 1) == 0 &&
            strstr(in, "\r\nX-Proxy-Error: blocked-by-allowlist\r\n") && strstr(in, "\r\n\r\n"))
            sl_done(c);
        else
            sl_fail(c, "not a 403 with X-Proxy-Error: blocked-by-allowlist before EOF");
    } else {
        sl_fail(c, "EOF where a reset was expected");
    }
}

static void sl_readable(sl_conn_t *c)
{
    for (;;) {
        size_t want;
        switch ((sl_state_t)c->state) {
        case SL_READ_REPLY:
            want = TCPRESP_REPLY_LEN - c->in_len;
            break;
        case SL_READ_COUNT:
            want = sizeof c->count - c->in_len;
            break;
        case SL_READ_EOF:
            want = SL_IN_MAX - 1 - c->in_len;
            break;
        case SL_HELD:
            sl_fail(c, "held connection: unexpected bytes, EOF or error");
            return;
        default:
            sl_fail(c, "readable in an unexpected state");
            return;
        }
        if (want == 0) {
            sl_fail(c, "more bytes than expected");
            return;
        }
        ssize_t r = recv(c->fd, c->in + c->in_len, want, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        if (r < 0) {
            if (c->kind == SL_NOT_TLS && errno == ECONNRESET && c->in_len == 0)
                sl_done(c);
            else
                sl_fail(c, strerror(errno));
            return;
        }
        if (r == 0) {
            if (c->state == SL_READ_EOF)
                sl_check_blocked(c);
            else
                sl_fail(c, "EOF before the whole reply");
            return;
        }
        c->in_len += (size_t)r;
        if (c->state == SL_READ_REPLY && c->in_len == TCPRESP_REPLY_LEN) {
            if (memcmp(c->in, TCPRESP_REPLY, TCPRESP_REPLY_LEN) != 0) {
                sl_fail(c, "reply differs from tcpresp's");
                return;
            }
            if (c->kind == SL_HOLD) {
                c->state = SL_HELD;
                sl_c.held_up++;
                sl_held_active--;
                return; /* still watched: anything now is an error */
            }
            sl_send_counted(c, 1 + (size_t)(rand() % SL_PAYLOAD_MAX));
            return;
        }
        if (c->state == SL_READ_COUNT && c->in_len == sizeof c->count) {
            uint64_t got;
            memcpy(&got, c->in, sizeof got);
            if (got != c->count) {
                sl_fail(c, "tcpresp counted a different number of payload bytes");
                return;
            }
            if (c->kind == SL_HOLD) {
                sl_c.held_verified++;
                sl_held_active--;
                sl_close(c);
            } else {
                sl_done(c);
            }
            return;
        }
    }
}

static void sl_conn_event(sl_conn_t *c, uint32_t ev)
{
    if (c->state == SL_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            sl_fail(c, err ? strerror(err) : "connect failed");
            return;
        }
        sl_connected(c);
        return;
    }
    if (c->state == SL_SENDING) {
        if (ev & (EPOLLERR | EPOLLHUP)) {
            sl_fail(c, "error while sending");
            return;
        }
        sl_send_more(c);
        return;
    }
    sl_readable(c);
}

/* Deadlines of the connections in [from, to). */
static void sl_sweep(size_t from, size_t to, uint64_t now)
{
    for (size_t i = from; i < to; i++) {
        sl_conn_t *c = &sl_conns[i];
        if (c->state != SL_FREE && c->state != SL_HELD && now > c->deadline)
            sl_fail(c, "no answer before the deadline");
    }
}

/* ---- DNS ------------------------------------------------------------------------------ */

typedef struct sl_dq {
    uint64_t deadline; /* 0: not waiting */
    uint32_t seq;
    uint16_t type;
    uint8_t kind;
} sl_dq_t;

static sl_dq_t sl_dq[65536];
static uint16_t sl_dq_next, sl_dq_oldest;
static int sl_dns_fd;
static uint64_t sl_dns_outstanding;

static void sl_dns_name(const sl_dq_t *q, char *buf, size_t n)
{
    switch ((sl_dkind_t)q->kind) {
    case SL_D_HIT:
        snprintf(buf, n, "h%u.allowed.test.", q->seq % SL_DNS_HITS);
        break;
    case SL_D_MISS:
        snprintf(buf, n, "m%u.miss.allowed.test.", q->seq % SL_DNS_MISSES);
        break;
    default:
        snprintf(buf, n, "b%u.blocked.test.", q->seq);
        break;
    }
}

static void sl_dns_send(sl_dkind_t kind, uint32_t seq)
{
    static const uint16_t other[] = {LDNS_RR_TYPE_TXT, LDNS_RR_TYPE_HTTPS, LDNS_RR_TYPE_MX,
                                     LDNS_RR_TYPE_SRV};
    uint16_t id = sl_dq_next;
    sl_dq_t *q = &sl_dq[id];
    sl_c.dns_sent[kind]++;
    if (q->deadline != 0) { /* 65536 in flight: cannot happen below 20k QPS */
        sl_error(sl_dkind_name[kind], "query ID window full");
        return;
    }
    q->kind = (uint8_t)kind;
    q->seq = seq;
    q->type = kind == SL_D_BLOCK_AAAA    ? LDNS_RR_TYPE_AAAA
              : kind == SL_D_BLOCK_OTHER ? other[seq % 4]
                                         : LDNS_RR_TYPE_A;
    char name[64];
    sl_dns_name(q, name, sizeof name);
    ldns_rdf *dname = ldns_dname_new_frm_str(name);
    ldns_pkt *p =
        dname ? ldns_pkt_query_new(dname, (ldns_rr_type)q->type, LDNS_RR_CLASS_IN, LDNS_RD) : NULL;
    uint8_t *wire = NULL;
    size_t len = 0;
    if (!p) {
        ldns_rdf_deep_free(dname);
        sl_die("ldns", "cannot build a query");
    }
    ldns_pkt_set_id(p, id);
    if (ldns_pkt2wire(&wire, p, &len) != LDNS_STATUS_OK)
        sl_die("ldns", "cannot encode a query");
    ldns_pkt_free(p);
    ssize_t w = send(sl_dns_fd, wire, len, 0);
    free(wire);
    if (w != (ssize_t)len) {
        sl_error(sl_dkind_name[kind], w < 0 ? strerror(errno) : "short send");
        return;
    }
    q->deadline = sl_now() + SL_DNS_TTL_NS;
    sl_dq_next++;
    sl_dns_outstanding++;
}

static bool sl_rr_is(const ldns_rr *rr, ldns_rr_type type, const void *data, size_t len)
{
    if (ldns_rr_get_type(rr) != type || ldns_rr_rd_count(rr) < 1)
        return false;
    const ldns_rdf *rd = ldns_rr_rdf(rr, 0);
    return ldns_rdf_size(rd) == len && memcmp(ldns_rdf_data(rd), data, len) == 0;
}

/* Why the answer is wrong, or NULL. */
static const char *sl_dns_check(const sl_dq_t *q, const ldns_pkt *p)
{
    static const uint8_t zero16[16];
    if (!ldns_pkt_qr(p) || ldns_pkt_get_opcode(p) != LDNS_PACKET_QUERY)
        return "not a response";
    if (ldns_pkt_get_rcode(p) != LDNS_RCODE_NOERROR)
        return "RCODE not NOERROR";
    const ldns_rr_list *qs = ldns_pkt_question(p);
    if (ldns_rr_list_rr_count(qs) != 1)
        return "not one question";
    const ldns_rr *qr = ldns_rr_list_rr(qs, 0);
    char name[64];
    sl_dns_name(q, name, sizeof name);
    ldns_rdf *want = ldns_dname_new_frm_str(name);
    bool same = want && ldns_dname_compare(want, ldns_rr_owner(qr)) == 0 &&
                ldns_rr_get_type(qr) == (ldns_rr_type)q->type;
    ldns_rdf_deep_free(want);
    if (!same)
        return "question differs from the query's";
    const ldns_rr_list *an = ldns_pkt_answer(p), *ns = ldns_pkt_authority(p);
    size_t n_an = ldns_rr_list_rr_count(an);
    switch ((sl_dkind_t)q->kind) {
    case SL_D_HIT:
    case SL_D_MISS:
        for (size_t i = 0; i < n_an; i++)
            if (sl_rr_is(ldns_rr_list_rr(an, i), LDNS_RR_TYPE_A, &sl_o.expect, 4))
                return NULL;
        return "allowed name without the upstream's A record";
    case SL_D_BLOCK_A:
        if (!ldns_pkt_aa(p) || n_an != 1 ||
            !sl_rr_is(ldns_rr_list_rr(an, 0), LDNS_RR_TYPE_A, zero16, 4))
            return "blocked A is not one AA answer 0.0.0.0";
        return NULL;
    case SL_D_BLOCK_AAAA:
        if (!ldns_pkt_aa(p) || n_an != 1 ||
            !sl_rr_is(ldns_rr_list_rr(an, 0), LDNS_RR_TYPE_AAAA, zero16, 16))
            return "blocked AAAA is not one AA answer ::";
        return NULL;
    case SL_D_BLOCK_OTHER:
        if (!ldns_pkt_aa(p) || n_an != 0 || ldns_rr_list_rr_count(ns) != 1 ||
            ldns_rr_get_type(ldns_rr_list_rr(ns, 0)) != LDNS_RR_TYPE_SOA)
            return "blocked non-address type is not AA NODATA with an SOA";
        return NULL;
    case SL_DKIND_N:
        break;
    }
    return "unknown kind";
}

static void sl_dns_readable(void)
{
    uint8_t buf[4096];
    for (int i = 0; i < 256; i++) {
        ssize_t r = recv(sl_dns_fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        if (r < 0) { /* e.g. ECONNREFUSED: nothing listens any more */
            sl_error("dns", strerror(errno));
            return;
        }
        if (r < 12) {
            sl_error("dns", "answer shorter than a header");
            continue;
        }
        uint16_t id = (uint16_t)(buf[0] << 8 | buf[1]);
        sl_dq_t *q = &sl_dq[id];
        if (q->deadline == 0) {
            sl_c.dns_late++;
            continue;
        }
        ldns_pkt *p = NULL;
        const char *why = ldns_wire2pkt(&p, buf, (size_t)r) == LDNS_STATUS_OK
                              ? sl_dns_check(q, p)
                              : "answer ldns cannot parse";
        ldns_pkt_free(p);
        if (why)
            sl_error(sl_dkind_name[q->kind], why);
        else
            sl_c.dns_ok[q->kind]++;
        q->deadline = 0;
        sl_dns_outstanding--;
    }
}

/* Oldest first: IDs go out in order. */
static void sl_dns_sweep(uint64_t now)
{
    while (sl_dq_oldest != sl_dq_next) {
        sl_dq_t *q = &sl_dq[sl_dq_oldest];
        if (q->deadline != 0 && now <= q->deadline)
            break;
        if (q->deadline != 0) {
            sl_error(sl_dkind_name[q->kind], "no answer within 3 s");
            q->deadline = 0;
            sl_dns_outstanding--;
        }
        sl_dq_oldest++;
    }
}

static void sl_dns_open(void)
{
    sl_dns_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (sl_dns_fd < 0 ||
        bind(sl_dns_fd, (const struct sockaddr *)&sl_o.src, sizeof sl_o.src) != 0 ||
        connect(sl_dns_fd, (const struct sockaddr *)&sl_o.dns, sizeof sl_o.dns) != 0)
        sl_die("dns socket", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (epoll_ctl(sl_ep, EPOLL_CTL_ADD, sl_dns_fd, &ev) != 0)
        sl_die("epoll_ctl", strerror(errno));
}

/* ---- the loop ------------------------------------------------------------------------- */

static void sl_poll(int timeout_ms)
{
    struct epoll_event evs[256];
    int m = epoll_wait(sl_ep, evs, 256, timeout_ms);
    if (m < 0 && errno != EINTR)
        sl_die("epoll_wait", strerror(errno));
    for (int j = 0; j < m; j++) {
        if (evs[j].data.u64 == 0) {
            sl_dns_readable();
            continue;
        }
        sl_conn_t *c = &sl_conns[evs[j].data.u64 - 1];
        if (c->state != SL_FREE) /* an earlier event of this batch may have closed it */
            sl_conn_event(c, evs[j].events);
    }
}

/* Held connections still open (HELD), counted. */
static long sl_held_open(void)
{
    long n = 0;
    for (long i = 0; i < sl_o.held; i++)
        n += sl_conns[i].state == SL_HELD;
    return n;
}

static void sl_stat(const char *phase, uint64_t t0)
{
    printf("stat t=%.1f phase=%s dns_sent=%llu dns_ok=%llu tcp_started=%llu tcp_ok=%llu "
           "held=%ld errors=%llu late_starts=%llu dns_skipped=%llu\n",
           (double)(sl_now() - t0) / 1e9, phase,
           (unsigned long long)sl_sum(sl_c.dns_sent, SL_DKIND_N),
           (unsigned long long)sl_sum(sl_c.dns_ok, SL_DKIND_N),
           (unsigned long long)sl_sum(sl_c.tcp_started, SL_KIND_N),
           (unsigned long long)sl_sum(sl_c.tcp_ok, SL_KIND_N), sl_held_open(),
           (unsigned long long)sl_c.errors, (unsigned long long)sl_c.late_starts,
           (unsigned long long)sl_c.dns_skipped);
}

static void sl_ramp(void)
{
    uint64_t t0 = sl_now(), last = t0;
    long next = 0;
    while (next < sl_o.held || sl_held_active > 0) {
        while (next < sl_o.held && sl_held_active < SL_RAMP_PAR) {
            sl_held_active++;
            sl_start(&sl_conns[next++], SL_HOLD, SL_HELD_TTL_NS);
        }
        sl_poll(100);
        uint64_t now = sl_now();
        sl_sweep(0, (size_t)sl_o.held, now);
        if (now - last >= SL_NS) {
            last = now;
            sl_stat("ramp", t0);
        }
    }
    sl_stat("ramp", t0);
    printf("held n=%ld ok=%llu secs=%.1f errors=%llu\n", sl_o.held,
           (unsigned long long)sl_c.held_up, (double)(sl_now() - t0) / 1e9,
           (unsigned long long)sl_c.errors);
}

static sl_conn_t *sl_free_short(void)
{
    for (size_t i = (size_t)sl_o.held; i < sl_n_conns; i++)
        if (sl_conns[i].state == SL_FREE)
            return &sl_conns[i];
    return NULL;
}

static bool sl_short_busy(void)
{
    for (size_t i = (size_t)sl_o.held; i < sl_n_conns; i++)
        if (sl_conns[i].state != SL_FREE)
            return true;
    return false;
}

static void sl_mix(void)
{
    /* Out of every 10: the DNS mix and the TCP mix. */
    static const sl_dkind_t dmix[10] = {
        SL_D_HIT,  SL_D_HIT,     SL_D_HIT,     SL_D_HIT,        SL_D_MISS,
        SL_D_MISS, SL_D_BLOCK_A, SL_D_BLOCK_A, SL_D_BLOCK_AAAA, SL_D_BLOCK_OTHER};
    static const sl_kind_t tmix[10] = {SL_TLS_OK,     SL_TLS_OK,  SL_TLS_OK,    SL_TLS_OK,
                                       SL_HTTP_OK,    SL_HTTP_OK, SL_TLS_BLOCK, SL_TLS_BLOCK,
                                       SL_HTTP_BLOCK, SL_NOT_TLS};
    uint64_t t0 = sl_now(), end = t0 + (uint64_t)sl_o.seconds * SL_NS, last = t0;
    uint64_t dns_n = 0, tcp_n = 0;
    uint32_t seq[SL_DKIND_N] = {0};
    for (;;) {
        uint64_t now = sl_now();
        if (now >= end)
            break;
        double el = (double)(now - t0) / 1e9;
        /* The schedule: what fell more than a second behind it (this
         * process did not get the CPU) is skipped and counted, never made
         * up in a burst. */
        uint64_t dns_due = (uint64_t)(el * sl_o.qps), tcp_due = (uint64_t)(el * sl_o.cps);
        if (dns_due > dns_n + (uint64_t)sl_o.qps + 1) {
            sl_c.dns_skipped += dns_due - dns_n - (uint64_t)sl_o.qps;
            dns_n = dns_due - (uint64_t)sl_o.qps;
        }
        if (tcp_due > tcp_n + (uint64_t)sl_o.cps + 1) {
            sl_c.late_starts += tcp_due - tcp_n - (uint64_t)sl_o.cps;
            tcp_n = tcp_due - (uint64_t)sl_o.cps;
        }
        for (; dns_n < dns_due; dns_n++) {
            sl_dkind_t kind = dmix[dns_n % 10];
            sl_dns_send(kind, seq[kind]++);
        }
        for (; tcp_n < tcp_due; tcp_n++) {
            sl_conn_t *c = sl_free_short();
            if (!c) { /* every slot busy: moat is that slow */
                sl_c.late_starts += tcp_due - tcp_n;
                tcp_n = tcp_due;
                break;
            }
            sl_start(c, tmix[tcp_n % 10], SL_SHORT_TTL_NS);
        }
        sl_poll(2);
        now = sl_now();
        sl_dns_sweep(now);
        sl_sweep((size_t)sl_o.held, sl_n_conns, now);
        if (now - last >= SL_NS) {
            last = now;
            sl_stat("mix", t0);
        }
    }
    /* Let what is in flight finish; every operation has a deadline. */
    uint64_t stop = sl_now() + SL_SHORT_TTL_NS + SL_NS;
    while ((sl_dns_outstanding > 0 || sl_short_busy()) && sl_now() < stop) {
        sl_poll(10);
        uint64_t now = sl_now();
        sl_dns_sweep(now);
        sl_sweep((size_t)sl_o.held, sl_n_conns, now);
    }
    sl_stat("mix-end", t0);
}

/* Every held connection must still carry a round trip. */
static void sl_check_held(void)
{
    long open = sl_held_open();
    if (open != (long)sl_c.held_up)
        fprintf(stderr, "soakload: %ld of %llu held connections open at the end\n", open,
                (unsigned long long)sl_c.held_up);
    uint64_t t0 = sl_now();
    long next = 0;
    sl_held_active = 0;
    while (next < sl_o.held || sl_held_active > 0) {
        while (next < sl_o.held && sl_held_active < SL_RAMP_PAR) {
            sl_conn_t *c = &sl_conns[next++];
            if (c->state != SL_HELD)
                continue;
            sl_held_active++;
            c->deadline = sl_now() + SL_HELD_TTL_NS;
            sl_send_counted(c, 16);
        }
        sl_poll(100);
        sl_sweep(0, (size_t)sl_o.held, sl_now());
    }
    printf("held-check ok=%llu of=%llu secs=%.1f\n", (unsigned long long)sl_c.held_verified,
           (unsigned long long)sl_c.held_up, (double)(sl_now() - t0) / 1e9);
}

/* With -g: block until run.sh writes a line to the gate (a FIFO). */
static void sl_gate_wait(void)
{
    if (!sl_gate)
        return;
    char line[16];
    FILE *g = fopen(sl_gate, "r");
    if (!g || !fgets(line, sizeof line, g))
        fprintf(stderr, "soakload: gate %s: no line, going on\n", sl_gate);
    if (g)
        fclose(g);
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: soakload -t TLS_ADDR:PORT -w HTTP_ADDR:PORT -d DNS_ADDR:PORT -S SRC_ADDR\n"
        "                -H HELLO_ALLOWED -B HELLO_BLOCKED -R REQUEST_ALLOWED "
        "-X REQUEST_BLOCKED\n"
        "                -e ALLOWED_A -n HELD -s SECONDS [-q DNS_QPS] [-c TCP_CPS] [-g GATE]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *need = "twdSHBRXens";
    bool seen[128] = {false};
    sl_o.qps = 200;
    sl_o.cps = 50;
    int opt;
    while ((opt = getopt(argc, argv, "t:w:d:S:H:B:R:X:e:n:s:q:c:g:")) != -1) {
        seen[opt & 127] = true;
        switch (opt) {
        case 't':
            sl_hostport(optarg, &sl_o.tls);
            break;
        case 'w':
            sl_hostport(optarg, &sl_o.http);
            break;
        case 'd':
            sl_hostport(optarg, &sl_o.dns);
            break;
        case 'S':
            sl_o.src.sin_family = AF_INET;
            if (inet_pton(AF_INET, optarg, &sl_o.src.sin_addr) != 1)
                sl_die("bad source address", optarg);
            break;
        case 'H':
            sl_read_file(optarg, &sl_hello_ok, &sl_hello_ok_len);
            break;
        case 'B':
            sl_read_file(optarg, &sl_hello_block, &sl_hello_block_len);
            break;
        case 'R':
            sl_read_file(optarg, &sl_req_ok, &sl_req_ok_len);
            break;
        case 'X':
            sl_read_file(optarg, &sl_req_block, &sl_req_block_len);
            break;
        case 'e':
            if (inet_pton(AF_INET, optarg, &sl_o.expect) != 1)
                sl_die("bad address", optarg);
            break;
        case 'n':
            sl_o.held = strtol(optarg, NULL, 10);
            break;
        case 's':
            sl_o.seconds = strtol(optarg, NULL, 10);
            break;
        case 'q':
            sl_o.qps = strtod(optarg, NULL);
            break;
        case 'c':
            sl_o.cps = strtod(optarg, NULL);
            break;
        case 'g':
            sl_gate = optarg;
            break;
        default:
            usage();
        }
    }
    for (const char *p = need; *p; p++)
        if (!seen[(int)*p])
            usage();
    if (sl_o.held < 0 || sl_o.held > 1000000 || sl_o.seconds <= 0 || sl_o.seconds > 86400 ||
        !(sl_o.qps >= 0 && sl_o.qps <= 20000) || !(sl_o.cps >= 0 && sl_o.cps <= 5000))
        usage();
    setvbuf(stdout, NULL, _IOLBF, 0);
    srand(42);
    for (size_t i = 0; i < sizeof sl_payload; i++)
        sl_payload[i] = (uint8_t)(i * 131u + (i >> 7));

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 ||
        rl.rlim_cur < (rlim_t)sl_o.held + SL_SHORT_SLOTS + 64) {
        fprintf(stderr, "soakload: RLIMIT_NOFILE %llu is too low for %ld held connections\n",
                (unsigned long long)rl.rlim_cur, sl_o.held);
        return 2;
    }
    sl_ep = epoll_create1(EPOLL_CLOEXEC);
    sl_n_conns = (size_t)sl_o.held + SL_SHORT_SLOTS;
    sl_conns = calloc(sl_n_conns, sizeof *sl_conns);
    if (sl_ep < 0 || !sl_conns)
        sl_die("setup", strerror(errno));
    for (size_t i = 0; i < sl_n_conns; i++)
        sl_conns[i].fd = -1;
    sl_dns_open();

    sl_ramp();
    sl_gate_wait(); /* run.sh samples moat with the held ones open and idle */
    sl_mix();
    sl_gate_wait(); /* again: the mix is over, the held ones still open */
    sl_check_held();
    for (size_t i = 0; i < sl_n_conns; i++)
        sl_close(&sl_conns[i]);
    sl_stat("done", sl_now());

    printf("done held=%llu held_verified=%llu errors=%llu late_starts=%llu dns_skipped=%llu "
           "dns_late=%llu",
           (unsigned long long)sl_c.held_up, (unsigned long long)sl_c.held_verified,
           (unsigned long long)sl_c.errors, (unsigned long long)sl_c.late_starts,
           (unsigned long long)sl_c.dns_skipped, (unsigned long long)sl_c.dns_late);
    for (int k = 0; k < SL_DKIND_N; k++)
        printf(" %s=%llu/%llu", sl_dkind_name[k], (unsigned long long)sl_c.dns_ok[k],
               (unsigned long long)sl_c.dns_sent[k]);
    for (int k = SL_TLS_OK; k < SL_KIND_N; k++)
        printf(" %s=%llu/%llu", sl_kind_name[k], (unsigned long long)sl_c.tcp_ok[k],
               (unsigned long long)sl_c.tcp_started[k]);
    printf("\n");
    for (size_t i = 0; i < sl_n_err_class; i++)
        printf("error-class n=%llu %s\n", (unsigned long long)sl_err_class[i].n,
               sl_err_class[i].what);
    close(sl_dns_fd);
    close(sl_ep);
    free(sl_conns);
    free(sl_hello_ok);
    free(sl_hello_block);
    free(sl_req_ok);
    free(sl_req_block);
    bool all_held = sl_c.held_up == (uint64_t)sl_o.held && sl_c.held_verified == sl_c.held_up;
    return sl_c.errors == 0 && all_held ? 0 : 1;
}
