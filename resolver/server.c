/* resolver/server.c: the DNS service (see server.h, SPEC §2.2).
 *
 * One query, in order (srv_query):
 *   parse (drop what has no readable header or is a response) → error rcode
 *   answer → DoH canary (filtering on) → decide the name → blocked in
 *   enforce: sinkhole answer → cache hit: patched copy → otherwise join the
 *   pending upstream query for the same question (coalescing) or start one.
 * Blocked answers and cache hits are built straight into the send buffer: no
 * allocation on that path. A cache miss allocates one waiter (the client's
 * parsed query and where to answer) and, for the first asker, one pending
 * entry.
 *
 * UDP: we run the sockets ourselves on a uv_poll_t with recvmmsg/sendmmsg,
 * SRV_UDP_BATCH messages per system call. libuv 1.44's UV_UDP_RECVMMSG only
 * batches the receive side (and hands every datagram to a callback one at a
 * time), and it has no sendmmsg; answering with uv_udp_try_send costs one
 * sendmsg per answer. With batching both ways a burst of N queries costs
 * about 2N/64 system calls (bench/dns/README.md has the measurements). A UDP
 * answer that meets EAGAIN on send is dropped (the client retries), as
 * unbound and dnsmasq do: queueing copies for a full socket buffer only adds
 * latency to a flood.
 *
 * TCP (RFC 7766): 2-octet length framing (RFC 1035 §4.2.2), pipelining: each
 * complete message is answered as soon as it is parsed (from the cache or
 * locally at once, from upstream later: answers go out of order, §6.2.1.1),
 * answers up to 65535 octets and never TC, an idle timeout, a cap on clients
 * and on bytes queued for a slow reader.
 */
#include "resolver/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "filter/addr.h"
#include "filter/decide.h"
#include "filter/policy.h"
#include "filter/list.h"
#include "core/log.h"
#include "core/sock.h"
#include "core/service.h"
#include "core/stats.h"
#include "dns/answer.h"
#include "dns/cache.h"
#include "dns/query.h"
#include "dns/rewrite.h"

/* Datagrams per recvmmsg/sendmmsg call, and calls per wake-up before the
 * loop gets a turn (fairness with TCP and upstream answers). */
#define SRV_UDP_BATCH  64
#define SRV_UDP_ROUNDS 16
/* Busy reading (srv_udp_poll_cb): a wake-up that found at least
 * SRV_UDP_BUSY_MIN datagrams switches the socket from epoll to reading on
 * every turn of the loop, and SRV_UDP_SPIN turns in a row that found fewer
 * switch it back (so a moderate load, a few datagrams a turn, does not keep
 * the loop spinning where epoll would let it sleep). */
#define SRV_UDP_BUSY_MIN 8
#define SRV_UDP_SPIN     16
/* Room per received datagram: a query is header + question + OPT (+ a few
 * options), far below this; a longer datagram is read cut and fails to parse
 * (FORMERR), as it would anyway. */
#define SRV_UDP_RX_SLOT 4096
/* Room per UDP answer: at most DNS_EDNS_UDP_SIZE go out (dns_udp_limit). */
#define SRV_UDP_TX_SLOT 2048
/* Receive buffer asked for per UDP socket (best effort) to ride out bursts. */
#define SRV_UDP_RCVBUF (4 << 20)
/* RFC 7766 §6.2.3: close a TCP client idle this long (no query, no answer
 * written, nothing pending upstream). */
#define SRV_TCP_IDLE_MS 10000
/* Concurrent TCP clients; a connection past this is closed at once. */
#define SRV_TCP_MAX_CLIENTS 1024
/* Answer bytes queued for a TCP client that does not read; past this the
 * connection is closed (a pipelining client that never reads would otherwise
 * grow our memory without bound). */
#define SRV_TCP_MAX_QUEUED (256 * 1024)
#define SRV_TCP_BACKLOG    511
/* Connections taken per readiness of a TCP listener, and how long the TCP
 * listeners pause when accept runs out of descriptors (EMFILE and kin). */
#define SRV_TCP_ACCEPT_BATCH 64
#define SRV_TCP_PAUSE_MS     100
/* Largest TCP read buffer: one whole message with its length. */
#define SRV_TCP_RBUF_MAX (2 + DNS_TCP_MAX)
/* Queries (all clients) waiting for upstream answers; past this a miss is
 * answered SERVFAIL at once. Bounds waiter memory at ~1.4 KiB each. */
#define SRV_MAX_WAITERS     16384
#define SRV_PENDING_BUCKETS 4096 /* power of two */
/* Address memory entries (SPEC §2.2 last bullet): (client, name, address)
 * triples, ~100 bytes each, so about 6.5 MiB at most. */
#define DNS_SERVER_ADDRMEM_ENTRIES 65536
/* Scratch for TCP answers and upstream answers being patched: the length
 * prefix, the largest message, and room for the rewrite's re-encoding and an
 * appended OPT. */
#define SRV_SCRATCH (2 + DNS_TCP_MAX + 4096)

typedef struct dns_server dns_server_t;
typedef struct srv_conn srv_conn_t;
typedef struct srv_pending srv_pending_t;

typedef struct srv_listener {
    moat_listener_t base; /* on srv->listeners while active */
    dns_server_t *srv;
    bool tcp;
    cfg_addr_t addr;
    union {
        uv_poll_t poll; /* UDP, and TCP (accepted by srv_tcp_poll_cb) */
    } h;
    int fd;        /* the socket; -1 once closed */
    unsigned refs; /* UDP: waiters that will answer through this socket */
    bool stopped;  /* removed or draining: reads no more */
    bool busy;     /* UDP: read by srv_udp_idle_cb on every turn, not polled */
    bool closing;  /* uv_close called */
} srv_listener_t;

typedef struct srv_waiter {
    struct srv_waiter *next; /* in the pending entry */
    moat_list_t cnode;       /* on its TCP connection's waiters */
    dns_query_t q;
    filter_decision_t dec;
    moat_scope_t scope; /* the client's (pointers owned by the pending's gen) */
    uint64_t start_ms;
    filter_addr_t caddr;
    uint16_t cport;
    srv_listener_t *udp; /* UDP: the socket to answer from */
    struct sockaddr_storage peer;
    socklen_t peer_len;
    srv_conn_t *conn; /* TCP: NULL once the client went away */
} srv_waiter_t;

struct srv_pending {
    moat_list_t hnode; /* on its bucket */
    dns_server_t *srv;
    dns_cache_key_t key;
    size_t bucket;
    moat_gen_t *gen; /* the generation its waiters were decided under */
    /* The scope its waiters share (moat_scope_t): the answer is rewritten
     * under this policy, and only clients of the same view join. */
    const filter_policy_t *policy; /* gen's */
    uint64_t view;
    unsigned epoch; /* s->cache_epoch when it was sent */
    dns_upstream_req_t *req;
    srv_waiter_t *head, *tail;
};

struct srv_conn {
    uv_tcp_t h;
    dns_server_t *srv;
    moat_list_t node; /* on srv->conns until closing */
    struct sockaddr_storage peer;
    socklen_t peer_len;
    uint8_t *rbuf;
    size_t rlen, rcap;
    uint64_t last_active;
    size_t queued;       /* bytes handed to uv_write and not yet written */
    moat_list_t waiters; /* srv_waiter_t answering through this connection */
    size_t n_waiters;
    bool eof;     /* the client half-closed: answer what is pending, then close */
    bool closing; /* uv_close called */
};

typedef struct srv_write {
    uv_write_t req;
    srv_conn_t *conn;
    size_t len;
    uint8_t data[];
} srv_write_t;

struct dns_server {
    moat_service_t svc; /* first: the daemon's handle on us */
    uv_loop_t *loop;
    moat_gen_t *gen;
    dns_sinkhole_t sinkhole;
    dns_upstream_t *up;
    dns_cache_t *cache;
    uint32_t cache_size;
    unsigned cache_epoch; /* +1 each time the cache is emptied */
    dns_addrmem_t *addrmem;
    size_t worker, workers; /* which worker's copy this is, of how many (core/worker.h) */
    uint64_t cache_entries; /* published for the metrics' thread (srv_publish) */
    /* The service counts (core/service.h): busy, each listener until its
     * handle is closed, each connection until closed, each pending query;
     * handles, listeners, connections, the sweep timer, the upstream. */
    moat_list_t listeners; /* srv_listener_t, active (reading) ones */
    moat_list_t conns;     /* srv_conn_t, not closing */
    size_t n_conns;
    uv_timer_t sweep;
    uv_timer_t accept_pause; /* TCP listeners paused: out of descriptors */
    bool accept_paused;
    uv_idle_t udp_idle;                       /* runs while some UDP listener is busy */
    unsigned udp_empty;                       /* turns in a row the busy listeners had nothing */
    moat_list_t buckets[SRV_PENDING_BUCKETS]; /* srv_pending_t */
    size_t n_waiters;
    uint64_t hash_seed;
    /* UDP batches. */
    struct mmsghdr rx_msgs[SRV_UDP_BATCH], tx_msgs[SRV_UDP_BATCH];
    struct iovec rx_iov[SRV_UDP_BATCH], tx_iov[SRV_UDP_BATCH];
    struct sockaddr_storage rx_names[SRV_UDP_BATCH];
    uint8_t rx_buf[SRV_UDP_BATCH][SRV_UDP_RX_SLOT];
    uint8_t tx_buf[SRV_UDP_BATCH][SRV_UDP_TX_SLOT];
    uint8_t scratch[SRV_SCRATCH];
};

static void srv_publish(dns_server_t *s);

static const moat_service_ops_t srv_ops;

static void srv_conn_close(srv_conn_t *c);
static void srv_listener_stop(srv_listener_t *l);

/* ---- small helpers ---------------------------------------------------------- */

static dns_server_t *srv_of(moat_service_t *svc)
{
    return (dns_server_t *)svc->data;
}

static const char *srv_qtype_name(uint16_t t, char *buf, size_t n)
{
    switch (t) {
    case DNS_TYPE_A:
        return "A";
    case DNS_TYPE_NS:
        return "NS";
    case DNS_TYPE_CNAME:
        return "CNAME";
    case DNS_TYPE_SOA:
        return "SOA";
    case DNS_TYPE_PTR:
        return "PTR";
    case DNS_TYPE_MX:
        return "MX";
    case DNS_TYPE_TXT:
        return "TXT";
    case DNS_TYPE_AAAA:
        return "AAAA";
    case DNS_TYPE_SRV:
        return "SRV";
    case DNS_TYPE_SVCB:
        return "SVCB";
    case DNS_TYPE_HTTPS:
        return "HTTPS";
    case DNS_TYPE_ANY:
        return "ANY";
    case 13:
        return "HINFO";
    case 35:
        return "NAPTR";
    case 43:
        return "DS";
    case 46:
        return "RRSIG";
    case 48:
        return "DNSKEY";
    case 52:
        return "TLSA";
    case 257:
        return "CAA";
    default:
        snprintf(buf, n, "TYPE%u", t);
        return buf;
    }
}

static const char *srv_rcode_name(int rcode, char *buf, size_t n)
{
    switch (rcode) {
    case DNS_RCODE_NOERROR:
        return "NOERROR";
    case DNS_RCODE_FORMERR:
        return "FORMERR";
    case DNS_RCODE_SERVFAIL:
        return "SERVFAIL";
    case DNS_RCODE_NXDOMAIN:
        return "NXDOMAIN";
    case DNS_RCODE_NOTIMP:
        return "NOTIMP";
    case DNS_RCODE_REFUSED:
        return "REFUSED";
    default:
        snprintf(buf, n, "RCODE%d", rcode);
        return buf;
    }
}

/* Append v in decimal at p; returns the end. */
static char *srv_put_u(char *p, unsigned v)
{
    char d[10];
    size_t n = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = d[--n];
    return p;
}

/* "198.18.0.2:40000" or "[fd00::2]:40000" into out (FILTER_ADDR_STRLEN + 10
 * bytes). IPv4, the common case, by hand: inet_ntop and snprintf were most
 * of a logged query's cost. */
static void srv_client_format(const filter_addr_t *a, uint16_t port, char *out, size_t cap)
{
    if (a->family == AF_INET) {
        char *p = out;
        for (int i = 0; i < 4; i++) {
            p = srv_put_u(p, a->bytes[i]);
            *p++ = i < 3 ? '.' : ':';
        }
        *srv_put_u(p, port) = '\0';
        return;
    }
    char abuf[FILTER_ADDR_STRLEN];
    filter_addr_format(a, abuf, sizeof abuf);
    snprintf(out, cap, "[%s]:%u", abuf, port);
}

/* SPEC §4: one line per decision. Formats only when the line will be written. */
static void srv_log(dns_server_t *s, const dns_query_t *q, const filter_addr_t *caddr,
                    uint16_t cport, const moat_scope_t *sc, const filter_decision_t *dec,
                    const uint8_t *ans, int ans_len, uint64_t start_ms)
{
    const char *tenant = sc->tenant;
    stats_dns_query(sc->stats_id,
                    dec->audit                     ? STATS_VERDICT_AUDIT
                    : dec->verdict == FILTER_BLOCK ? STATS_VERDICT_BLOCK
                                                   : STATS_VERDICT_ALLOW,
                    ans_len >= 4 ? (ans[3] & 0x0f) : -1);
    bool loud = dec->verdict == FILTER_BLOCK || s->gen->cfg->log.allowed;
    if (!log_enabled(loud ? CFG_LOG_INFO : CFG_LOG_DEBUG))
        return;
    char client[FILTER_ADDR_STRLEN + 10], tbuf[16], rbuf[16];
    srv_client_format(caddr, cport, client, sizeof client);
    int rcode = ans_len >= 4 ? (ans[3] & 0x0f) : DNS_RCODE_SERVFAIL;
    uint64_t now = uv_now(s->loop);
    log_decision_t d = {
        .kind = "dns",
        .listener = "dns",
        .client = client,
        .tenant = tenant,
        .name = q->name,
        .name_len = q->name_len,
        .qtype = srv_qtype_name(q->qtype, tbuf, sizeof tbuf),
        .rcode = ans_len > 0 ? srv_rcode_name(rcode, rbuf, sizeof rbuf) : "NONE",
        .decision = *dec,
        .bytes_up = q->wire_len,
        .bytes_down = ans_len > 0 ? (uint64_t)ans_len : 0,
        .duration_ms = now > start_ms ? now - start_ms : 0,
    };
    log_decision(&d);
}

typedef struct srv_addr_ctx {
    dns_server_t *s;
    const filter_addr_t *client;
    const char *name;
    size_t name_len;
    uint64_t now;
    bool normalized; /* name is dns_query_t.lname */
} srv_addr_ctx_t;

/* SPEC §2.2 last bullet: remember what this client was told. */
static void srv_remember_cb(const dns_cache_addr_t *a, void *arg)
{
    srv_addr_ctx_t *x = arg;
    if (x->normalized)
        (void)dns_addrmem_put_normalized(x->s->addrmem, x->client, x->name, x->name_len, &a->addr,
                                         a->ttl, x->now);
    else
        (void)dns_addrmem_put(x->s->addrmem, x->client, x->name, x->name_len, &a->addr, a->ttl,
                              x->now);
}

/* ---- TCP connections ---------------------------------------------------------- */

static void srv_conn_closed_cb(uv_handle_t *h)
{
    srv_conn_t *c = h->data;
    dns_server_t *s = c->srv;
    free(c->rbuf);
    free(c);
    moat_service_release(&s->svc);
}

static void srv_conn_close(srv_conn_t *c)
{
    if (c->closing)
        return;
    dns_server_t *s = c->srv;
    c->closing = true;
    /* Waiters stay with their pending entry, answering nobody. */
    moat_list_t *it;
    while ((it = moat_list_first(&c->waiters))) {
        moat_list_remove(it);
        container_of(it, srv_waiter_t, cnode)->conn = NULL;
    }
    c->n_waiters = 0;
    moat_list_remove(&c->node);
    s->n_conns--;
    uv_close((uv_handle_t *)&c->h, srv_conn_closed_cb);
}

/* Close a connection that has nothing left to do once it stops reading. */
static void srv_conn_maybe_finish(srv_conn_t *c)
{
    if (c->closing)
        return;
    if ((c->eof || moat_service_stopping(&c->srv->svc)) && c->n_waiters == 0 && c->queued == 0)
        srv_conn_close(c);
}

static void srv_write_cb(uv_write_t *req, int status)
{
    srv_write_t *w = (srv_write_t *)req;
    srv_conn_t *c = w->conn;
    c->queued -= w->len;
    free(w);
    if (c->closing)
        return;
    if (status < 0) {
        srv_conn_close(c);
        return;
    }
    c->last_active = uv_now(c->srv->loop);
    srv_conn_maybe_finish(c);
}

/* Send one framed message; copies only what the socket did not take at once. */
static void srv_conn_send(srv_conn_t *c, const uint8_t *data, size_t len)
{
    if (c->closing)
        return;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->h, &b, 1);
    if (n >= 0 && (size_t)n == len)
        return;
    if (n < 0 && n != UV_EAGAIN) {
        srv_conn_close(c);
        return;
    }
    size_t done = n > 0 ? (size_t)n : 0, rest = len - done;
    if (c->queued + rest > SRV_TCP_MAX_QUEUED) {
        srv_conn_close(c);
        return;
    }
    srv_write_t *w = malloc(sizeof *w + rest);
    if (!w) {
        srv_conn_close(c);
        return;
    }
    w->conn = c;
    w->len = rest;
    memcpy(w->data, data + done, rest);
    b = uv_buf_init((char *)w->data, (unsigned)rest);
    if (uv_write(&w->req, (uv_stream_t *)&c->h, &b, 1, srv_write_cb) != 0) {
        free(w);
        srv_conn_close(c);
        return;
    }
    c->queued += rest;
}

/* ---- answering ------------------------------------------------------------------ */

/* Answer msg at out (cap bytes); the TCP caller puts its length in front. */
static void srv_send_udp(srv_listener_t *l, const struct sockaddr *sa, socklen_t len,
                         const uint8_t *msg, size_t n)
{
    if (l->fd < 0)
        return;
    (void)sendto(l->fd, msg, n, MSG_DONTWAIT, sa, len);
}

static void srv_waiter_detach(dns_server_t *s, srv_waiter_t *w)
{
    if (w->udp) {
        srv_listener_t *l = w->udp;
        w->udp = NULL;
        if (--l->refs == 0 && l->stopped)
            srv_listener_stop(l);
    }
    if (w->conn) {
        srv_conn_t *c = w->conn;
        moat_list_remove(&w->cnode);
        c->n_waiters--;
        w->conn = NULL;
    }
    s->n_waiters--;
}

/* Answer one waiter from the rewritten upstream answer rr, or SERVFAIL with
 * EDE ede when rr is NULL. */
static void srv_answer_waiter(dns_server_t *s, srv_waiter_t *w, const dns_rewrite_result_t *rr,
                              uint16_t ede)
{
    uint8_t *buf = s->scratch + 2;
    size_t cap = SRV_SCRATCH - 2;
    size_t limit = w->udp ? dns_udp_limit(&w->q) : DNS_TCP_MAX;
    int n = -1;
    if (rr && rr->len + 16 <= cap) {
        memcpy(buf, rr->wire, rr->len);
        n = dns_answer_patch(buf, rr->len, cap, &w->q, limit);
    }
    if (n < 0) {
        /* RFC 8914 §4.23 / §4.24. */
        n = dns_answer_error_ede(&w->q, DNS_RCODE_SERVFAIL, ede, NULL, buf, cap);
    } else if (rr->qname_len > 0 && rr->n_addrs > 0) {
        srv_addr_ctx_t x = {s, &w->caddr, rr->qname, rr->qname_len, uv_now(s->loop), false};
        for (size_t i = 0; i < rr->n_addrs; i++)
            srv_remember_cb(&rr->addrs[i], &x);
    }
    /* Counted and logged before it is sent, as an answer from the cache or
     * the sinkhole is: a client that has its answer finds it in /metrics. */
    srv_log(s, &w->q, &w->caddr, w->cport, &w->scope, &w->dec, buf, n, w->start_ms);
    if (n > 0) {
        if (w->udp) {
            srv_send_udp(w->udp, (const struct sockaddr *)&w->peer, w->peer_len, buf, (size_t)n);
        } else if (w->conn) {
            s->scratch[0] = (uint8_t)(n >> 8);
            s->scratch[1] = (uint8_t)n;
            srv_conn_send(w->conn, s->scratch, (size_t)n + 2);
        }
    }
}

/* Free p, off its bucket already, and release it as busy work (last: it
 * may end a drain). */
static void srv_pending_free(dns_server_t *s, srv_pending_t *p)
{
    for (srv_waiter_t *w = p->head, *n; w; w = n) {
        n = w->next;
        srv_waiter_detach(s, w);
        free(w);
    }
    moat_gen_unref(p->gen);
    free(p);
    moat_service_busy_done(&s->svc);
}

static void srv_upstream_cb(void *arg, int status, const uint8_t *wire, size_t len)
{
    srv_pending_t *p = arg;
    dns_server_t *s = p->srv;
    p->req = NULL;
    moat_list_remove(&p->hnode);

    dns_rewrite_result_t rr;
    bool ok = false;
    uint16_t ede = DNS_EDE_NETWORK_ERROR;
    if (status == 0) {
        ok = dns_rewrite(p->policy, wire, len, &rr) == 0;
        if (!ok)
            log_debug("dns: upstream answer for %s did not parse; SERVFAIL", p->head->q.name);
    } else {
        if (status == -ETIMEDOUT)
            ede = DNS_EDE_NO_REACHABLE_AUTHORITY;
        log_debug("dns: upstream failed for %s: %s", p->head->q.name, strerror(-status));
    }
    /* Answers rewritten under an older policy are not cached (the cache was
     * cleared when the policy changed). */
    /* Not into a cache cleared since the question left (other servers). */
    if (ok && p->epoch == s->cache_epoch) {
        (void)dns_cache_put(s->cache, &p->key, rr.wire, rr.len, rr.addrs, rr.n_addrs,
                            uv_now(s->loop));
        srv_publish(s);
    }
    for (srv_waiter_t *w = p->head; w; w = w->next)
        srv_answer_waiter(s, w, ok ? &rr : NULL, ede);
    if (ok)
        dns_rewrite_result_free(&rr);
    srv_pending_free(s, p);
}

static size_t srv_bucket(const dns_server_t *s, const dns_cache_key_t *k)
{
    /* FNV-1a with a per-process random seed; chains are also bounded by
     * SRV_MAX_WAITERS. */
    uint64_t h = 14695981039346656037ull ^ s->hash_seed;
    for (size_t i = 0; i < k->name_len; i++)
        h = (h ^ k->name[i]) * 1099511628211ull;
    h = (h ^ k->qtype) * 1099511628211ull;
    h = (h ^ k->qclass) * 1099511628211ull;
    return (size_t)(h ^ (h >> 32)) & (SRV_PENDING_BUCKETS - 1);
}

typedef struct srv_client {
    const struct sockaddr *sa;
    socklen_t sa_len;
    srv_listener_t *udp; /* UDP: the socket it came in on */
    srv_conn_t *conn;    /* TCP */
    filter_addr_t addr;
    uint16_t port;
} srv_client_t;

/* Cache miss: join or start the upstream query. 0, or negative errno (the
 * caller answers SERVFAIL). */
static int srv_forward(dns_server_t *s, const dns_query_t *q, const dns_cache_key_t *k,
                       const moat_scope_t *sc, const filter_decision_t *dec, const srv_client_t *cl)
{
    if (s->n_waiters >= SRV_MAX_WAITERS || !s->up)
        return -EBUSY;
    size_t b = srv_bucket(s, k);
    srv_pending_t *p = NULL;
    moat_list_foreach(it, &s->buckets[b])
    {
        srv_pending_t *e = container_of(it, srv_pending_t, hnode);
        if (e->gen == s->gen && e->view == sc->view && e->key.qtype == k->qtype &&
            e->key.qclass == k->qclass && e->key.name_len == k->name_len &&
            memcmp(e->key.name, k->name, k->name_len) == 0) {
            p = e;
            break;
        }
    }

    srv_waiter_t *w = malloc(sizeof *w);
    if (!w)
        return -ENOMEM;
    w->next = NULL;
    moat_list_init(&w->cnode);
    w->q = *q;
    w->dec = *dec;
    w->scope = *sc;
    w->start_ms = uv_now(s->loop);
    w->caddr = cl->addr;
    w->cport = cl->port;
    w->udp = NULL;
    w->conn = NULL;
    w->peer_len = 0;

    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p) {
            free(w);
            return -ENOMEM;
        }
        p->srv = s;
        p->key = *k;
        p->bucket = b;
        int rc = dns_upstream_query(s->up, q->qname, q->qname_len, q->qtype, q->edns_do,
                                    srv_upstream_cb, p, &p->req);
        if (rc != 0) {
            free(p);
            free(w);
            return rc;
        }
        p->gen = moat_gen_ref(s->gen);
        p->policy = sc->policy;
        p->view = sc->view;
        p->epoch = s->cache_epoch;
        moat_list_push(&s->buckets[b], &p->hnode);
        moat_service_busy_add(&s->svc);
    }
    if (p->tail)
        p->tail->next = w;
    else
        p->head = w;
    p->tail = w;
    w->next = NULL;
    s->n_waiters++;
    if (cl->udp) {
        w->udp = cl->udp;
        cl->udp->refs++;
        memcpy(&w->peer, cl->sa, cl->sa_len);
        w->peer_len = cl->sa_len;
    } else {
        srv_conn_t *c = cl->conn;
        w->conn = c;
        moat_list_push(&c->waiters, &w->cnode);
        c->n_waiters++;
    }
    return 0;
}

/* A cache hit for q (key k) fitted to q into out (cap bytes): its length,
 * or a SERVFAIL's when the stored answer does not fit q; -ENOENT on a miss.
 * The answer's addresses are remembered for the client (x). */
static int srv_answer_cached(dns_server_t *s, const dns_query_t *q, const dns_cache_key_t *k,
                             srv_addr_ctx_t *x, size_t limit, uint8_t *out, size_t cap)
{
    size_t alen;
    uint8_t *abuf = out;
    size_t acap = cap;
    uint64_t now = x->now;
    dns_answer_scan_t scan;
    int rc = dns_cache_get_scanned(s->cache, k, now, abuf, acap, &alen, srv_remember_cb, x, &scan);
    if (rc == -ENOSPC && out != s->scratch + 2) {
        /* A big cached answer for a UDP client: patch (truncate) it in the
         * scratch buffer, then copy what goes out. */
        abuf = s->scratch;
        acap = sizeof s->scratch;
        rc = dns_cache_get_scanned(s->cache, k, now, abuf, acap, &alen, srv_remember_cb, x, &scan);
    }
    if (rc != 0)
        return -ENOENT;
    int n = scan.end ? dns_answer_patch_scanned(abuf, alen, acap, q, limit, &scan)
                     : dns_answer_patch(abuf, alen, acap, q, limit);
    if (n > 0 && abuf != out) {
        if ((size_t)n <= cap)
            memcpy(out, abuf, (size_t)n);
        else
            n = -ENOSPC;
    }
    if (n < 0)
        n = dns_answer_error(q, DNS_RCODE_SERVFAIL, out, cap);
    return n;
}

/* One query (SPEC §2.2). Writes an answer to send now into out (cap bytes)
 * and returns its length, or returns 0: dropped, or waiting for upstream. */
static size_t srv_query(dns_server_t *s, const uint8_t *msg, size_t len, srv_client_t *cl,
                        uint8_t *out, size_t cap)
{
    dns_query_t q;
    if (dns_query_parse(msg, len, &q) != 0) {
        stats_dns_query(0, STATS_VERDICT_NONE, -1);
        return 0; /* no header, or a response: drop */
    }
    int n;
    if (q.rcode_hint != DNS_RCODE_NOERROR) {
        n = dns_answer_error(&q, q.rcode_hint, out, cap);
        stats_dns_query(0, STATS_VERDICT_NONE, n > 0 ? q.rcode_hint : -1);
        return n > 0 ? (size_t)n : 0;
    }
    size_t limit = cl->udp ? dns_udp_limit(&q) : DNS_TCP_MAX;
    const moat_gen_t *gen = s->gen;
    uint64_t now = uv_now(s->loop);
    if (filter_addr_from_sockaddr(cl->sa, &cl->addr, &cl->port) != 0)
        return 0;

    /* SPEC §2.7: decided as the client's tenant. */
    moat_scope_t sc = moat_gen_scope(gen, &cl->addr);
    filter_dns_input_t din = {
        .audit = sc.audit,
        .canary = dns_query_is_canary(&q),
        .not_host = q.not_host,
        .name = q.name,
        .name_len = q.name_len,
        .norm = q.host_name ? q.lname : NULL,
    };
    filter_dns_out_t d = filter_decide_dns(sc.policy, &din);
    const filter_decision_t *dec = &d.decision;
    if (d.action != FILTER_DNS_RESOLVE) {
        n = d.action == FILTER_DNS_CANARY ? dns_answer_canary(&q, &s->sinkhole, out, cap, limit)
                                          : dns_answer_sinkhole(&q, &s->sinkhole, out, cap, limit);
        srv_log(s, &q, &cl->addr, cl->port, &sc, dec, out, n, now);
        return n > 0 ? (size_t)n : 0;
    }

    dns_cache_key_t k;
    if (dns_cache_key_from_wire(&k, q.qname, q.qname_len, q.qtype, q.qclass) != 0) {
        n = dns_answer_error(&q, DNS_RCODE_SERVFAIL, out, cap);
        return n > 0 ? (size_t)n : 0;
    }
    k.view = sc.view;
    srv_addr_ctx_t x = {s, &cl->addr, q.host_name ? q.lname : q.name, q.name_len, now, q.host_name};
    n = srv_answer_cached(s, &q, &k, &x, limit, out, cap);
    if (n != -ENOENT) {
        stats_dns_cache(true);
        srv_log(s, &q, &cl->addr, cl->port, &sc, dec, out, n, now);
        return n > 0 ? (size_t)n : 0;
    }
    stats_dns_cache(false);

    if (srv_forward(s, &q, &k, &sc, dec, cl) == 0)
        return 0;
    n = dns_answer_error_ede(&q, DNS_RCODE_SERVFAIL, DNS_EDE_OTHER, "overloaded", out, cap);
    srv_log(s, &q, &cl->addr, cl->port, &sc, dec, out, n, now);
    return n > 0 ? (size_t)n : 0;
}

/* ---- UDP ----------------------------------------------------------------------- */

/* The fixed parts of every recvmmsg/sendmmsg header, once: each slot's
 * buffer and name, one iovec, no control data. */
static void srv_udp_batch_init(dns_server_t *s)
{
    for (int i = 0; i < SRV_UDP_BATCH; i++) {
        s->rx_iov[i].iov_base = s->rx_buf[i];
        s->rx_iov[i].iov_len = SRV_UDP_RX_SLOT;
        struct msghdr *m = &s->rx_msgs[i].msg_hdr;
        m->msg_name = &s->rx_names[i];
        m->msg_namelen = sizeof s->rx_names[i];
        m->msg_iov = &s->rx_iov[i];
        m->msg_iovlen = 1;
        s->tx_iov[i].iov_base = s->tx_buf[i];
        s->tx_msgs[i].msg_hdr.msg_iov = &s->tx_iov[i];
        s->tx_msgs[i].msg_hdr.msg_iovlen = 1;
    }
}

/* Read, answer and send what l holds, up to SRV_UDP_ROUNDS batches. Returns
 * the datagrams read. */
static unsigned srv_udp_read(srv_listener_t *l)
{
    dns_server_t *s = l->srv;
    unsigned total = 0;
    for (int round = 0; round < SRV_UDP_ROUNDS && !l->stopped; round++) {
        /* The headers were set up at create (srv_udp_batch_init); the
         * kernel writes back only msg_namelen, msg_flags and msg_len. */
        int got = recvmmsg(l->fd, s->rx_msgs, SRV_UDP_BATCH, MSG_DONTWAIT, NULL);
        if (got <= 0)
            break; /* EAGAIN: drained; other errors (ICMP reports): next wake-up */
        total += (unsigned)got;
        unsigned k = 0;
        for (int i = 0; i < got; i++) {
            struct msghdr *m = &s->rx_msgs[i].msg_hdr;
            socklen_t namelen = m->msg_namelen;
            m->msg_namelen = sizeof s->rx_names[i]; /* ready for the next round */
            srv_client_t cl = {
                .sa = (const struct sockaddr *)&s->rx_names[i],
                .sa_len = namelen,
                .udp = l,
            };
            size_t n = srv_query(s, s->rx_buf[i], s->rx_msgs[i].msg_len, &cl, s->tx_buf[k],
                                 SRV_UDP_TX_SLOT);
            if (n == 0)
                continue;
            s->tx_iov[k].iov_len = n;
            struct msghdr *o = &s->tx_msgs[k].msg_hdr;
            o->msg_name = &s->rx_names[i];
            o->msg_namelen = namelen;
            k++;
        }
        for (unsigned sent = 0; sent < k;) {
            int r = sendmmsg(l->fd, s->tx_msgs + sent, k - sent, MSG_DONTWAIT);
            if (r > 0) {
                sent += (unsigned)r;
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                sent++; /* this destination failed (e.g. unreachable): skip it */
                continue;
            }
            break; /* socket buffer full: drop the rest (see the top) */
        }
        if (got < SRV_UDP_BATCH)
            break;
    }
    return total;
}

static void srv_udp_poll_cb(uv_poll_t *h, int status, int events);

/* Every turn of the loop while some listener is busy: read the busy ones;
 * after SRV_UDP_SPIN turns with little, hand them back to epoll. */
static void srv_udp_idle_cb(uv_idle_t *h)
{
    dns_server_t *s = h->data;
    unsigned got = 0;
    moat_list_foreach(it, &s->listeners)
    {
        srv_listener_t *l = container_of(it, srv_listener_t, base.node);
        if (l->busy)
            got += srv_udp_read(l);
    }
    if (got >= SRV_UDP_BUSY_MIN) {
        s->udp_empty = 0;
        return;
    }
    if (++s->udp_empty < SRV_UDP_SPIN)
        return;
    moat_list_foreach(it, &s->listeners)
    {
        srv_listener_t *l = container_of(it, srv_listener_t, base.node);
        if (l->busy) {
            l->busy = false;
            uv_poll_start(&l->h.poll, UV_READABLE, srv_udp_poll_cb);
        }
    }
    uv_idle_stop(&s->udp_idle);
}

/* A UDP socket under load is read on every turn of the loop rather than
 * through epoll: while a socket sits in an epoll set, every datagram that
 * arrives wakes the set's wait queue (two IRQ-saving locks per datagram,
 * 7 % of the CPU of a loaded loop, measured with perf; a server blocked in
 * recvmmsg pays it only when it sleeps). Out of the set, datagrams queue
 * with no wake-up and each turn takes them in batches; the loop still
 * serves its other handles, with epoll_wait's timeout 0. */
static void srv_udp_poll_cb(uv_poll_t *h, int status, int events)
{
    srv_listener_t *l = h->data;
    dns_server_t *s = l->srv;
    (void)events;
    if (status < 0)
        return;
    if (srv_udp_read(l) < SRV_UDP_BUSY_MIN || l->stopped || moat_service_stopping(&s->svc))
        return;
    uv_poll_stop(&l->h.poll);
    l->busy = true;
    s->udp_empty = 0;
    uv_idle_start(&s->udp_idle, srv_udp_idle_cb);
}

/* ---- TCP ----------------------------------------------------------------------- */

static void srv_conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    srv_conn_t *c = h->data;
    (void)suggested;
    size_t want = c->rlen + 1024;
    if (c->rlen >= 2) {
        size_t frame = 2 + (((size_t)c->rbuf[0] << 8) | c->rbuf[1]);
        if (frame > want)
            want = frame;
    }
    if (want > SRV_TCP_RBUF_MAX)
        want = SRV_TCP_RBUF_MAX;
    if (c->rcap < want) {
        size_t ncap = c->rcap ? c->rcap * 2 : 1024;
        if (ncap < want)
            ncap = want;
        if (ncap > SRV_TCP_RBUF_MAX)
            ncap = SRV_TCP_RBUF_MAX;
        uint8_t *n = realloc(c->rbuf, ncap);
        if (n) {
            c->rbuf = n;
            c->rcap = ncap;
        }
    }
    *b = uv_buf_init((char *)c->rbuf + c->rlen, (unsigned)(c->rcap - c->rlen));
}

static void srv_conn_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    srv_conn_t *c = st->data;
    dns_server_t *s = c->srv;
    (void)b;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF) {
            /* Half-close: answer what is pending, then close (RFC 7766 §6.2.4). */
            c->eof = true;
            uv_read_stop(st);
            srv_conn_maybe_finish(c);
        } else {
            srv_conn_close(c);
        }
        return;
    }
    /* Activity is a message starting or completing, not any byte: a client
     * trickling one message a byte at a time (slowloris) must still meet
     * the idle timeout. */
    if (c->rlen == 0)
        c->last_active = uv_now(s->loop);
    c->rlen += (size_t)nread;
    size_t off = 0;
    /* RFC 1035 §4.2.2 framing; every complete message is answered now
     * (RFC 7766 §6.2.1.1: pipelined queries processed concurrently). */
    while (c->rlen - off >= 2 && !c->closing) {
        size_t mlen = ((size_t)c->rbuf[off] << 8) | c->rbuf[off + 1];
        if (c->rlen - off < 2 + mlen)
            break;
        if (mlen > 0) {
            srv_client_t cl = {
                .sa = (const struct sockaddr *)&c->peer,
                .sa_len = c->peer_len,
                .conn = c,
            };
            size_t n =
                srv_query(s, c->rbuf + off + 2, mlen, &cl, s->scratch + 2, sizeof s->scratch - 2);
            if (n > 0) {
                s->scratch[0] = (uint8_t)(n >> 8);
                s->scratch[1] = (uint8_t)n;
                srv_conn_send(c, s->scratch, n + 2);
            }
        }
        off += 2 + mlen;
    }
    if (c->closing)
        return;
    if (off > 0) {
        c->last_active = uv_now(s->loop);
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
}

/* A client accepted on l as fd: served until it closes. */
static void srv_tcp_client(dns_server_t *s, srv_listener_t *l, int fd)
{
    srv_conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->srv = s;
    uv_tcp_init(s->loop, &c->h);
    c->h.data = c;
    moat_list_init(&c->waiters);
    moat_service_hold(&s->svc);
    /* Linked first so srv_conn_close can unlink it whatever happens next. */
    moat_list_push(&s->conns, &c->node);
    s->n_conns++;
    if (uv_tcp_open(&c->h, fd) != 0) {
        close(fd);
        srv_conn_close(c);
        return;
    }
    if (s->n_conns > SRV_TCP_MAX_CLIENTS || moat_service_stopping(&s->svc) || l->stopped) {
        srv_conn_close(c);
        return;
    }
    int plen = sizeof c->peer;
    if (uv_tcp_getpeername(&c->h, (struct sockaddr *)&c->peer, &plen) != 0) {
        srv_conn_close(c);
        return;
    }
    c->peer_len = (socklen_t)plen;
    c->last_active = uv_now(s->loop);
    uv_tcp_nodelay(&c->h, 1);
    if (uv_read_start((uv_stream_t *)&c->h, srv_conn_alloc_cb, srv_conn_read_cb) != 0)
        srv_conn_close(c);
}

static void srv_tcp_poll_cb(uv_poll_t *p, int status, int events);

/* Start (or stop) polling every active TCP listener. */
static void srv_tcp_listeners_poll(dns_server_t *s, bool on)
{
    moat_list_foreach(it, &s->listeners)
    {
        srv_listener_t *l = container_of(it, srv_listener_t, base.node);
        if (!l->tcp)
            continue;
        if (on)
            uv_poll_start(&l->h.poll, UV_READABLE, srv_tcp_poll_cb);
        else
            uv_poll_stop(&l->h.poll);
    }
}

static void srv_accept_resume_cb(uv_timer_t *t)
{
    dns_server_t *s = t->data;
    s->accept_paused = false;
    if (!moat_service_stopping(&s->svc))
        srv_tcp_listeners_poll(s, true);
}

/* Out of descriptors: the TCP listeners pause for SRV_TCP_PAUSE_MS rather
 * than spin on a socket that stays readable (UDP needs none, and goes on). */
static void srv_accept_pause(dns_server_t *s, int err)
{
    if (s->accept_paused)
        return;
    log_warn("dns: accept (tcp): %s; pausing tcp accepts for %d ms", strerror(err),
             SRV_TCP_PAUSE_MS);
    s->accept_paused = true;
    srv_tcp_listeners_poll(s, false);
    uv_timer_start(&s->accept_pause, srv_accept_resume_cb, SRV_TCP_PAUSE_MS, 0);
}

/* DNS over TCP accepts on its own poll, not uv_listen: libuv meets EMFILE
 * by closing a spare descriptor it keeps per loop and accepting into it,
 * and with several workers another loop's accept takes that number first;
 * the loop that lost its spare then spins inside one callback (it never
 * returns to the loop, not even for SIGTERM). Here the listeners pause
 * instead, as the proxy's do. */
static void srv_tcp_poll_cb(uv_poll_t *p, int status, int events)
{
    srv_listener_t *l = p->data;
    dns_server_t *s = l->srv;
    (void)events;
    if (status < 0 || l->stopped)
        return;
    for (int i = 0; i < SRV_TCP_ACCEPT_BATCH; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            srv_tcp_client(s, l, fd);
            if (l->stopped || s->accept_paused)
                return;
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            srv_accept_pause(s, errno);
        return; /* EAGAIN: nothing more queued */
    }
}

/* The cache's size for dns_server_entries, which the daemon's loop calls
 * for every worker: after each insertion and every second (the sweep). */
static void srv_publish(dns_server_t *s)
{
    dns_cache_stats_t cs;
    dns_cache_stats(s->cache, &cs);
    __atomic_store_n(&s->cache_entries, (uint64_t)cs.entries, __ATOMIC_RELAXED);
}

static void srv_sweep_cb(uv_timer_t *t)
{
    dns_server_t *s = t->data;
    srv_publish(s);
    uint64_t now = uv_now(s->loop);
    moat_list_foreach_safe(it, nx, &s->conns)
    {
        srv_conn_t *c = container_of(it, srv_conn_t, node);
        if (c->n_waiters == 0 && now - c->last_active >= SRV_TCP_IDLE_MS)
            srv_conn_close(c);
    }
}

/* ---- listeners ------------------------------------------------------------------ */

static void srv_listener_closed_cb(uv_handle_t *h)
{
    srv_listener_t *l = h->data;
    dns_server_t *s = l->srv;
    if (l->fd >= 0)
        close(l->fd);
    free(l);
    moat_service_release(&s->svc);
}

/* Stop reading; close once no waiter answers through it. Unlinks it from the
 * active list. */
static void srv_listener_stop(srv_listener_t *l)
{
    if (!l->stopped) {
        l->stopped = true;
        l->busy = false;
        moat_list_remove(&l->base.node);
        uv_poll_stop(&l->h.poll);
    }
    if (l->closing || (!l->tcp && l->refs > 0))
        return;
    l->closing = true;
    uv_close((uv_handle_t *)&l->h, srv_listener_closed_cb);
}

/* Open a listener for a: 0 with *out set (not on srv->listeners yet), or a
 * negative errno after logging. */
static int srv_listener_open(dns_server_t *s, const cfg_addr_t *a, bool tcp, srv_listener_t **out)
{
    *out = NULL;
    srv_listener_t *l = calloc(1, sizeof *l);
    if (!l) {
        log_error("dns: listen %s (%s): out of memory", a->text, tcp ? "tcp" : "udp");
        return -ENOMEM;
    }
    moat_list_init(&l->base.node);
    l->srv = s;
    l->tcp = tcp;
    l->addr = *a;
    l->fd = -1;
    int family = a->sa.ss_family;
    int rc;
    bool reuseport = s->workers > 1;
    if (tcp) {
        int fd = moat_sock_listener(family, SOCK_STREAM, reuseport);
        rc = fd < 0 ? fd : 0;
        if (fd >= 0 && (bind(fd, (const struct sockaddr *)&a->sa, a->sa_len) != 0 ||
                        listen(fd, SRV_TCP_BACKLOG) != 0))
            rc = -errno;
        if (rc == 0)
            rc = uv_poll_init_socket(s->loop, &l->h.poll, fd);
        if (rc != 0) {
            if (fd >= 0)
                close(fd);
            log_error("dns: listen %s (tcp): %s", a->text, uv_strerror(rc));
            free(l);
            return rc;
        }
        l->fd = fd;
        l->h.poll.data = l;
        moat_service_hold(&s->svc);
        if (!s->accept_paused)
            uv_poll_start(&l->h.poll, UV_READABLE, srv_tcp_poll_cb);
    } else {
        int fd = moat_sock_listener(family, SOCK_DGRAM, reuseport);
        int rcvbuf = SRV_UDP_RCVBUF;
        if (fd < 0 || bind(fd, (const struct sockaddr *)&a->sa, a->sa_len) != 0) {
            rc = fd < 0 ? fd : -errno;
            if (fd >= 0)
                close(fd);
            log_error("dns: listen %s (udp): %s", a->text, uv_strerror(rc));
            free(l);
            return rc;
        }
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        rc = uv_poll_init(s->loop, &l->h.poll, fd);
        if (rc != 0) {
            close(fd);
            log_error("dns: listen %s (udp): %s", a->text, uv_strerror(rc));
            free(l);
            return rc;
        }
        l->fd = fd;
        l->h.poll.data = l;
        moat_service_hold(&s->svc);
        uv_poll_start(&l->h.poll, UV_READABLE, srv_udp_poll_cb);
    }
    *out = l;
    if (s->worker == 0) /* once, not once per worker */
        log_info("dns listening on %s %s", tcp ? "tcp" : "udp", a->text);
    return 0;
}

/* moat_listeners_apply over dns.listen: each address over UDP (kind 0),
 * then TCP (kind 1). */
static void srv_lsn_wanted(void *ctx, size_t i, const cfg_addr_t **addr, int *kind)
{
    const dns_server_t *s = ctx;
    *addr = &s->gen->cfg->dns.listen.items[i / 2];
    *kind = (int)(i % 2);
}

static bool srv_lsn_same(void *ctx, moat_listener_t *ml, const cfg_addr_t *a, int kind)
{
    (void)ctx;
    const srv_listener_t *l = container_of(ml, srv_listener_t, base);
    return l->tcp == (kind == 1) && filter_sockaddr_equal(&l->addr.sa, &a->sa);
}

static int srv_lsn_open(void *ctx, const cfg_addr_t *a, int kind, moat_listener_t **out)
{
    srv_listener_t *l = NULL;
    int rc = srv_listener_open(ctx, a, kind == 1, &l);
    *out = l ? &l->base : NULL;
    return rc;
}

static void srv_lsn_close(void *ctx, moat_listener_t *ml)
{
    (void)ctx;
    srv_listener_t *l = container_of(ml, srv_listener_t, base);
    if (l->srv->worker == 0)
        log_info("dns: no longer listening on %s %s", l->tcp ? "tcp" : "udp", l->addr.text);
    srv_listener_stop(l);
}

static const moat_listeners_ops_t srv_lsn_ops = {
    .wanted = srv_lsn_wanted, .same = srv_lsn_same, .open = srv_lsn_open, .close = srv_lsn_close};

/* Open what s->gen's dns.listen lists and is not open; stop the rest. */
static int srv_listeners_apply(dns_server_t *s)
{
    return moat_listeners_apply(&s->listeners, 2 * s->gen->cfg->dns.listen.n, &srv_lsn_ops, s);
}

static void srv_listeners_stop_all(dns_server_t *s)
{
    moat_list_t *it;
    while ((it = moat_list_first(&s->listeners)))
        srv_listener_stop(
            container_of(container_of(it, moat_listener_t, node), srv_listener_t, base));
}

/* ---- lifecycle -------------------------------------------------------------------- */

static void srv_set_gen(dns_server_t *s, moat_gen_t *gen)
{
    moat_gen_swap(&s->gen, gen);
    const cfg_t *cfg = gen->cfg;
    memcpy(s->sinkhole.ipv4, cfg->sinkhole.ipv4, 4);
    memcpy(s->sinkhole.ipv6, cfg->sinkhole.ipv6, 16);
    s->sinkhole.ttl = cfg->sinkhole.ttl_s;
    s->sinkhole.nxdomain = cfg->sinkhole.mode == CFG_SINKHOLE_NXDOMAIN;
}

static void srv_upstream_done_cb(void *arg)
{
    dns_server_t *s = arg;
    moat_service_handle_closed(&s->svc);
}

static void srv_handle_closed_cb(uv_handle_t *h)
{
    dns_server_t *s = h->data;
    moat_service_handle_closed(&s->svc);
}

/* Close everything now (close, or a failed start); safe to call twice. */
static void srv_shutdown(dns_server_t *s)
{
    for (size_t b = 0; b < SRV_PENDING_BUCKETS; b++) {
        moat_list_t *it;
        while ((it = moat_list_first(&s->buckets[b]))) {
            srv_pending_t *p = container_of(it, srv_pending_t, hnode);
            moat_list_remove(it);
            dns_upstream_cancel(p->req);
            srv_pending_free(s, p);
        }
    }
    srv_listeners_stop_all(s);
    moat_list_t *it;
    while ((it = moat_list_first(&s->conns)))
        srv_conn_close(container_of(it, srv_conn_t, node));
    if (s->loop && !uv_is_closing((uv_handle_t *)&s->sweep)) {
        uv_timer_stop(&s->sweep);
        uv_close((uv_handle_t *)&s->sweep, srv_handle_closed_cb);
        uv_close((uv_handle_t *)&s->accept_pause, srv_handle_closed_cb);
        uv_close((uv_handle_t *)&s->udp_idle, srv_handle_closed_cb);
    }
    if (s->up) {
        dns_upstream_t *up = s->up;
        s->up = NULL;
        dns_upstream_destroy(up, srv_upstream_done_cb, s);
    }
}

static int srv_start(moat_service_t *svc, uv_loop_t *loop, moat_gen_t *gen)
{
    dns_server_t *s = srv_of(svc);
    s->loop = loop;
    srv_set_gen(s, gen);
    const cfg_t *cfg = gen->cfg;
    if (getrandom(&s->hash_seed, sizeof s->hash_seed, GRND_NONBLOCK) != sizeof s->hash_seed)
        s->hash_seed = (uint64_t)uv_hrtime();

    int rc = dns_cache_create(cfg->dns.cache_size, &s->cache);
    if (rc != 0) {
        log_error("dns: cache of %u entries: %s", cfg->dns.cache_size, strerror(-rc));
        return rc;
    }
    s->cache_size = cfg->dns.cache_size;
    rc = dns_upstream_create(loop, cfg, &s->up);
    if (rc != 0) {
        log_error("dns: upstream client: %s%s", strerror(-rc),
                  cfg->dns.upstream.n ? "" : " (no dns.upstream: is /etc/resolv.conf usable?)");
        return rc;
    }
    moat_service_handle_open(svc); /* the upstream, until its done callback */
    uv_timer_init(loop, &s->sweep);
    s->sweep.data = s;
    uv_timer_init(loop, &s->accept_pause);
    s->accept_pause.data = s;
    uv_idle_init(loop, &s->udp_idle);
    s->udp_idle.data = s;
    moat_service_handle_open(svc); /* the UDP idle */
    moat_service_handle_open(svc); /* the sweep */
    moat_service_handle_open(svc); /* the accept pause */
    uv_timer_start(&s->sweep, srv_sweep_cb, 1000, 1000);

    rc = srv_listeners_apply(s);
    if (rc != 0) {
        srv_shutdown(s); /* the daemon exits 2; our handles close as its loop ends */
        return rc;
    }
    return 0;
}

static int srv_reload(moat_service_t *svc, moat_gen_t *gen)
{
    dns_server_t *s = srv_of(svc);
    bool same_upstream = moat_gen_same_upstream(s->gen, gen);
    srv_set_gen(s, gen);
    const cfg_t *cfg = gen->cfg;
    int rc = 0;
    /* Cached answers are kept apart by the view they were filtered under
     * (dns/cache.h), so they outlive a policy change: a tenant whose address
     * rules did not change keeps its answers. Answers from other servers
     * do not. */
    if (cfg->dns.cache_size != s->cache_size) {
        s->cache_epoch++;
        dns_cache_t *c;
        int r = dns_cache_create(cfg->dns.cache_size, &c);
        if (r == 0) {
            dns_cache_free(s->cache);
            s->cache = c;
            s->cache_size = cfg->dns.cache_size;
        } else {
            log_error("dns: cache of %u entries: %s; keeping the old size", cfg->dns.cache_size,
                      strerror(-r));
            dns_cache_clear(s->cache);
            rc = r;
        }
    } else if (!same_upstream) {
        s->cache_epoch++;
        dns_cache_clear(s->cache);
    }
    srv_publish(s);
    int r = dns_upstream_configure(s->up, cfg);
    if (r != 0) {
        log_error("dns: upstream servers: %s; keeping the old ones", strerror(-r));
        rc = rc ? rc : r;
    }
    r = srv_listeners_apply(s);
    return rc ? rc : r;
}

/* Stop reading; a connection closes once its answers are out. */
static void srv_drain(moat_service_t *svc)
{
    dns_server_t *s = srv_of(svc);
    srv_listeners_stop_all(s);
    moat_list_foreach_safe(it, nx, &s->conns)
    {
        srv_conn_t *c = container_of(it, srv_conn_t, node);
        uv_read_stop((uv_stream_t *)&c->h);
        srv_conn_maybe_finish(c);
    }
}

static void srv_close(moat_service_t *svc)
{
    srv_shutdown(srv_of(svc));
}

static void srv_free(moat_service_t *svc)
{
    if (!svc)
        return;
    dns_server_t *s = srv_of(svc);
    dns_cache_free(s->cache);
    dns_addrmem_free(s->addrmem);
    moat_gen_unref(s->gen);
    free(s);
}

static const moat_service_ops_t srv_ops = MOAT_SERVICE_OPS(srv, "dns");

int dns_server_create(size_t worker, size_t workers, moat_service_t **out)
{
    *out = NULL;
    dns_server_t *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    int rc = dns_addrmem_create(DNS_SERVER_ADDRMEM_ENTRIES, &s->addrmem);
    if (rc != 0) {
        free(s);
        return rc;
    }
    s->worker = worker;
    s->workers = workers;
    if (workers > 1)
        dns_addrmem_share(s->addrmem); /* other workers' proxies read it */
    moat_service_init(&s->svc, &srv_ops, s);
    moat_list_init(&s->listeners);
    moat_list_init(&s->conns);
    srv_udp_batch_init(s);
    for (size_t b = 0; b < SRV_PENDING_BUCKETS; b++)
        moat_list_init(&s->buckets[b]);
    *out = &s->svc;
    return 0;
}

dns_addrmem_t *dns_server_addrmem(moat_service_t *svc)
{
    return svc ? srv_of(svc)->addrmem : NULL;
}

dns_upstream_t *dns_server_upstream(moat_service_t *svc)
{
    return svc ? srv_of(svc)->up : NULL;
}

void dns_server_entries(moat_service_t *svc, uint64_t *cache, uint64_t *addrmem)
{
    dns_addrmem_stats_t ms;
    dns_addrmem_stats(svc ? srv_of(svc)->addrmem : NULL, &ms);
    *cache = svc ? __atomic_load_n(&srv_of(svc)->cache_entries, __ATOMIC_RELAXED) : 0;
    *addrmem = ms.entries;
}
