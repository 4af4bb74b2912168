/* resolver/upstream.c: c-ares 1.18 on the daemon's libuv loop (see upstream.h).
 *
 * Objects:
 *   dns_upstream_t  the client; holds the current channel and the retired
 *                   ones still finishing their queries.
 *   up_chan_t       one ares_channel with its uv_poll_t per socket, a timer
 *                   for ares_timeout() and a timer for our own deadlines.
 *                   Every request on a channel has the same timeout, so the
 *                   list of live requests in start order is also in deadline
 *                   order and one timer on its head serves them all.
 *   dns_upstream_req_t  one user request: one ares_send (query) or two (A and
 *                   AAAA for resolve). It is freed when the user is done with
 *                   it (callback called or cancelled) AND c-ares has called
 *                   back every query it started (c-ares always calls back:
 *                   with an answer, an error, ARES_ECANCELLED or
 *                   ARES_EDESTRUCTION), so c-ares never holds a dangling arg.
 *
 * ares_destroy() is never called from inside a c-ares callback: a retired
 * channel whose last query ended is destroyed from its timer, on the next
 * loop turn.
 */
#include "resolver/upstream.h"

#include <ares.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/stats.h"
#include "dns/query.h"
#include "dns/rewrite.h"
#include "filter/list.h"

enum { UP_KIND_QUERY, UP_KIND_RESOLVE };

typedef struct up_chan up_chan_t;

typedef struct up_poll {
    uv_poll_t h;
    up_chan_t *chan;
    ares_socket_t fd;
    moat_list_t node; /* on chan->polls */
} up_poll_t;

struct up_chan {
    dns_upstream_t *up;
    ares_channel ch;
    uv_timer_t ares_timer;
    uv_timer_t deadline_timer;
    moat_list_t polls;   /* up_poll_t.node, one per socket c-ares watches */
    unsigned handles;    /* open handles; the channel is freed when it drops to 0 */
    size_t outstanding;  /* ares_send calls not yet called back */
    uint64_t timeout_ms; /* dns.timeout */
    moat_list_t reqs;    /* live requests (dns_upstream_req_t.node), oldest first */
    size_t live;
    struct sockaddr_storage *servers; /* as configured, to compare on reload */
    size_t n_servers;
    bool retired;     /* a newer channel takes new requests */
    bool destroying;  /* ares_destroy running or done */
    moat_list_t node; /* on up->retired once retired */
};

struct dns_upstream_req {
    up_chan_t *chan;
    int kind;
    dns_upstream_answer_cb answer_cb;
    dns_upstream_resolve_cb resolve_cb;
    void *arg;
    uint64_t deadline;
    uint64_t start_ns;     /* uv_hrtime() at the start, for the latency metric */
    moat_list_t node;      /* on chan->reqs while live */
    unsigned ares_pending; /* ares_send calls not yet called back */
    bool live;             /* the user still waits for the callback */
    bool in_send;          /* inside ares_send: a callback now is synchronous */
    int sync_fail;         /* ares_send called back synchronously with these many failures */
    /* resolve only */
    unsigned answered; /* sub-queries that gave an answer */
    int fail_status;   /* the first sub-query failure */
    size_t n_addrs;
    dns_cache_addr_t addrs[DNS_UPSTREAM_MAX_ADDRS];
};

struct dns_upstream {
    uv_loop_t *loop;
    up_chan_t *cur;
    moat_list_t retired; /* up_chan_t.node: retired channels still finishing */
    unsigned chans;      /* channels not yet freed */
    bool destroyed;
    dns_upstream_done_cb done;
    void *done_arg;
};

static void up_chan_update_timer(up_chan_t *c);
static void up_chan_destroy(up_chan_t *c);

/* c-ares counts ares_library_init / _cleanup calls in a plain integer: with
 * several workers each creates and destroys its own client, possibly at
 * once on two threads, so the calls are made under one lock. */
static pthread_mutex_t up_lib_lock = PTHREAD_MUTEX_INITIALIZER;

static int up_lib_init(void)
{
    pthread_mutex_lock(&up_lib_lock);
    int rc = ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS ? 0 : -EIO;
    pthread_mutex_unlock(&up_lib_lock);
    return rc;
}

static void up_lib_cleanup(void)
{
    pthread_mutex_lock(&up_lib_lock);
    ares_library_cleanup();
    pthread_mutex_unlock(&up_lib_lock);
}

/* ---- errors ---------------------------------------------------------------- */

static int up_errno(int ares_status)
{
    switch (ares_status) {
    case ARES_SUCCESS:
        return 0;
    case ARES_ETIMEOUT:
        return -ETIMEDOUT;
    case ARES_ECONNREFUSED:
        return -ECONNREFUSED;
    case ARES_ENOMEM:
        return -ENOMEM;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
        return -ECANCELED;
    default:
        return -EIO;
    }
}

/* ---- requests --------------------------------------------------------------- */

/* The oldest live request of c (the first deadline), or NULL. */
static dns_upstream_req_t *up_req_first(const up_chan_t *c)
{
    moat_list_t *n = moat_list_first(&c->reqs);
    return n ? container_of(n, dns_upstream_req_t, node) : NULL;
}

static void up_req_unlink(dns_upstream_req_t *r)
{
    moat_list_remove(&r->node);
    r->chan->live--;
}

/* The user is done with r: take it off the deadline list. */
static void up_req_finish(dns_upstream_req_t *r)
{
    if (!r->live)
        return;
    r->live = false;
    up_req_unlink(r);
}

static void up_req_maybe_free(dns_upstream_req_t *r)
{
    if (!r->live && r->ares_pending == 0 && !r->in_send)
        free(r);
}

static void up_req_complete(dns_upstream_req_t *r, int status, const uint8_t *wire, size_t len)
{
    up_req_finish(r);
    stats_dns_upstream(status == 0, (uv_hrtime() - r->start_ns) / 1000u);
    if (r->kind == UP_KIND_QUERY) {
        r->answer_cb(r->arg, status, wire, len);
    } else {
        r->resolve_cb(r->arg, status, status == 0 ? r->addrs : NULL, status == 0 ? r->n_addrs : 0);
    }
}

/* A resolve sub-query answered: collect its addresses (rewrite.h (c)). */
static void up_resolve_collect(dns_upstream_req_t *r, const uint8_t *abuf, size_t alen)
{
    dns_rewrite_result_t rr;
    if (dns_rewrite(NULL, abuf, alen, &rr) != 0) {
        if (r->fail_status == 0)
            r->fail_status = -EIO;
        return;
    }
    r->answered++;
    for (size_t i = 0; i < rr.n_addrs && r->n_addrs < DNS_UPSTREAM_MAX_ADDRS; i++)
        r->addrs[r->n_addrs++] = rr.addrs[i];
    dns_rewrite_result_free(&rr);
}

static void up_ares_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    dns_upstream_req_t *r = arg;
    up_chan_t *c = r->chan;
    r->ares_pending--;
    c->outstanding--;

    if (r->in_send) {
        /* ares_send failed at once; dns_upstream_* reports it. */
        r->sync_fail++;
        return;
    }
    if (r->live && !c->destroying) {
        /* An answer is an answer, whatever c-ares thinks of it. */
        int err = (abuf && alen > 0) ? 0 : up_errno(status);
        if (r->kind == UP_KIND_QUERY) {
            up_req_complete(r, err, abuf, err == 0 ? (size_t)alen : 0);
        } else {
            if (err == 0)
                up_resolve_collect(r, abuf, (size_t)alen);
            else if (r->fail_status == 0)
                r->fail_status = err;
            if (r->ares_pending == 0)
                up_req_complete(r, r->answered ? 0 : r->fail_status, NULL, 0);
        }
    } else if (r->live) {
        /* Channel destruction: the user is not called back (upstream.h). */
        up_req_finish(r);
    }
    /* A retired channel whose last query this was is destroyed by
     * up_chan_update_timer, which every caller of c-ares runs next. */
    up_req_maybe_free(r);
}

/* ---- channel: sockets and timers ------------------------------------------- */

static void up_chan_handle_closed_cb(uv_handle_t *h)
{
    up_chan_t *c = h->data;
    if (h->type == UV_POLL)
        free(h); /* an up_poll_t: h is its first member */
    if (--c->handles > 0)
        return;
    dns_upstream_t *up = c->up;
    free(c->servers);
    free(c);
    if (--up->chans == 0 && up->destroyed) {
        if (up->done)
            up->done(up->done_arg);
        free(up);
        up_lib_cleanup();
    }
}

static void up_poll_cb(uv_poll_t *h, int status, int events)
{
    up_poll_t *p = (up_poll_t *)h;
    up_chan_t *c = p->chan;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
    if (status < 0) {
        /* Let c-ares see the error on the socket. */
        rfd = wfd = p->fd;
    } else {
        if (events & UV_READABLE)
            rfd = p->fd;
        if (events & UV_WRITABLE)
            wfd = p->fd;
    }
    ares_process_fd(c->ch, rfd, wfd);
    up_chan_update_timer(c);
}

static void up_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    up_chan_t *c = data;
    up_poll_t *p = NULL;
    moat_list_foreach(it, &c->polls)
    {
        up_poll_t *q = container_of(it, up_poll_t, node);
        if (q->fd == fd) {
            p = q;
            break;
        }
    }

    if (!readable && !writable) {
        if (p) {
            moat_list_remove(&p->node);
            uv_poll_stop(&p->h);
            uv_close((uv_handle_t *)&p->h, up_chan_handle_closed_cb);
        }
        return;
    }
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p)
            return; /* c-ares times the query out; the deadline answers it */
        if (uv_poll_init_socket(c->up->loop, &p->h, fd) != 0) {
            free(p);
            return;
        }
        p->h.data = c;
        p->chan = c;
        p->fd = fd;
        moat_list_push(&c->polls, &p->node);
        c->handles++;
    }
    int ev = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
    uv_poll_start(&p->h, ev, up_poll_cb);
}

/* The ares timer: c-ares's timeouts, or the deferred destroy of a retired
 * channel (started with this function as callback, see up_ares_cb). */
static void up_ares_timer_cb(uv_timer_t *t)
{
    up_chan_t *c = t->data;
    if (c->destroying)
        return;
    if (c->retired && c->outstanding == 0) {
        up_chan_destroy(c);
        return;
    }
    ares_process_fd(c->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    up_chan_update_timer(c);
}

static void up_chan_update_timer(up_chan_t *c)
{
    if (c->destroying)
        return;
    if (c->retired && c->outstanding == 0) {
        uv_timer_start(&c->ares_timer, up_ares_timer_cb, 0, 0);
        return;
    }
    struct timeval tv;
    struct timeval *tvp = ares_timeout(c->ch, NULL, &tv);
    if (!tvp) {
        uv_timer_stop(&c->ares_timer);
        return;
    }
    uint64_t ms = (uint64_t)tvp->tv_sec * 1000u + (uint64_t)(tvp->tv_usec + 999) / 1000u;
    uv_timer_start(&c->ares_timer, up_ares_timer_cb, ms, 0);
}

static void up_deadline_cb(uv_timer_t *t)
{
    up_chan_t *c = t->data;
    uint64_t now = uv_now(c->up->loop);
    /* Callbacks may start requests on this channel (appended at the tail
     * with later deadlines) or cancel others; re-read the head each time. */
    dns_upstream_req_t *r;
    while ((r = up_req_first(c)) && r->deadline <= now) {
        /* A live request still has a query with c-ares (else it would have
         * completed), so r outlives the callback and is freed when c-ares
         * calls back. */
        if (r->kind == UP_KIND_RESOLVE && r->answered)
            up_req_complete(r, 0, NULL, 0);
        else
            up_req_complete(r, -ETIMEDOUT, NULL, 0);
    }
    if ((r = up_req_first(c))) {
        uint64_t left = r->deadline > now ? r->deadline - now : 0;
        uv_timer_start(&c->deadline_timer, up_deadline_cb, left, 0);
    }
}

/* ---- channel: life ---------------------------------------------------------- */

static void up_chan_destroy(up_chan_t *c)
{
    if (c->destroying)
        return;
    c->destroying = true;
    moat_list_remove(&c->node); /* off up->retired, if on it */
    /* Calls up_ares_cb with ARES_EDESTRUCTION for whatever is left (freeing
     * the requests without calling the user) and closes every socket through
     * up_sock_state_cb. */
    ares_destroy(c->ch);
    c->ch = NULL;
    for (dns_upstream_req_t *r; (r = up_req_first(c));) {
        up_req_finish(r);
        up_req_maybe_free(r);
    }
    moat_list_foreach_safe(it, nx, &c->polls)
    {
        up_poll_t *p = container_of(it, up_poll_t, node);
        moat_list_remove(&p->node);
        uv_poll_stop(&p->h);
        uv_close((uv_handle_t *)&p->h, up_chan_handle_closed_cb);
    }
    uv_close((uv_handle_t *)&c->ares_timer, up_chan_handle_closed_cb);
    uv_close((uv_handle_t *)&c->deadline_timer, up_chan_handle_closed_cb);
}

/* dns.upstream as c-ares's server list (a malloc'd array linked in order;
 * NULL when the list is empty: resolv.conf then). Also keeps the addresses
 * in c->servers for up_chan_same. 0 or -ENOMEM. */
static int up_chan_servers(up_chan_t *c, const cfg_t *cfg, struct ares_addr_port_node **out)
{
    *out = NULL;
    c->n_servers = cfg->dns.upstream.n;
    if (!c->n_servers)
        return 0;
    struct ares_addr_port_node *nodes = calloc(c->n_servers, sizeof *nodes);
    c->servers = calloc(c->n_servers, sizeof *c->servers);
    if (!c->servers || !nodes) {
        free(nodes);
        return -ENOMEM;
    }
    for (size_t i = 0; i < c->n_servers; i++) {
        const cfg_addr_t *a = &cfg->dns.upstream.items[i];
        c->servers[i] = a->sa;
        struct ares_addr_port_node *n = &nodes[i];
        n->next = i + 1 < c->n_servers ? &nodes[i + 1] : NULL;
        n->family = a->sa.ss_family;
        if (a->sa.ss_family == AF_INET) {
            const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->sa;
            n->addr.addr4 = s4->sin_addr;
            n->udp_port = n->tcp_port = ntohs(s4->sin_port);
        } else {
            const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->sa;
            memcpy(&n->addr.addr6, &s6->sin6_addr, sizeof s6->sin6_addr);
            n->udp_port = n->tcp_port = ntohs(s6->sin6_port);
        }
    }
    *out = nodes;
    return 0;
}

/* The c-ares channel for c: its retry schedule fitted inside dns.timeout.
 * 0, -ENOMEM or -EIO. */
static int up_chan_ares_init(up_chan_t *c)
{
    /* c-ares's schedule with T tries over N servers: N tries of t, then N of
     * 2t, ... With T = 2 that is 3Nt, so t = timeout / 3N fits it inside
     * dns.timeout (when N is not known yet, resolv.conf, assume up to 3). */
    size_t n_est = c->n_servers ? c->n_servers : 3;
    uint64_t try_ms = c->timeout_ms / (3 * n_est);
    if (try_ms < DNS_UPSTREAM_MIN_TRY_MS)
        try_ms = DNS_UPSTREAM_MIN_TRY_MS;
    struct ares_options opts;
    memset(&opts, 0, sizeof opts);
    /* STAYOPEN: without it c-ares closes its UDP socket whenever nothing is
     * pending, and a steady trickle of queries pays a socket, a bind and two
     * epoll changes each (every dialled connection would). */
    opts.flags = ARES_FLAG_EDNS | ARES_FLAG_NOSEARCH | ARES_FLAG_STAYOPEN;
    opts.timeout = (int)try_ms;
    opts.tries = DNS_UPSTREAM_TRIES;
    opts.ednspsz = DNS_EDNS_UDP_SIZE;
    opts.sock_state_cb = up_sock_state_cb;
    opts.sock_state_cb_data = c;
    int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_EDNSPSZ |
               ARES_OPT_SOCK_STATE_CB;
    int st = ares_init_options(&c->ch, &opts, mask);
    if (st != ARES_SUCCESS) {
        c->ch = NULL;
        return st == ARES_ENOMEM ? -ENOMEM : -EIO;
    }
    return 0;
}

static int up_chan_create(dns_upstream_t *up, const cfg_t *cfg, up_chan_t **out)
{
    *out = NULL;
    up_chan_t *c = calloc(1, sizeof *c);
    struct ares_addr_port_node *nodes = NULL;
    if (!c)
        return -ENOMEM;
    c->up = up;
    moat_list_init(&c->polls);
    moat_list_init(&c->reqs);
    moat_list_init(&c->node);
    c->timeout_ms = cfg->dns.timeout_ms ? cfg->dns.timeout_ms : 1;
    int rc = up_chan_servers(c, cfg, &nodes);
    if (rc == 0)
        rc = up_chan_ares_init(c);
    if (rc == 0 && nodes && ares_set_servers_ports(c->ch, nodes) != ARES_SUCCESS)
        rc = -EIO;
    free(nodes);
    if (rc != 0)
        goto fail;

    uv_timer_init(up->loop, &c->ares_timer);
    uv_timer_init(up->loop, &c->deadline_timer);
    c->ares_timer.data = c;
    c->deadline_timer.data = c;
    c->handles = 2;
    up->chans++;
    *out = c;
    return 0;
fail:
    if (c->ch)
        ares_destroy(c->ch);
    free(c->servers);
    free(c);
    return rc;
}

static bool up_chan_same(const up_chan_t *c, const cfg_t *cfg)
{
    uint64_t t = cfg->dns.timeout_ms ? cfg->dns.timeout_ms : 1;
    if (c->timeout_ms != t || c->n_servers != cfg->dns.upstream.n)
        return false;
    for (size_t i = 0; i < c->n_servers; i++) {
        const struct sockaddr_storage *a = &c->servers[i], *b = &cfg->dns.upstream.items[i].sa;
        size_t len =
            a->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
        if (a->ss_family != b->ss_family || memcmp(a, b, len) != 0)
            return false;
    }
    return true;
}

static void up_chan_retire(dns_upstream_t *up, up_chan_t *c)
{
    c->retired = true;
    moat_list_push(&up->retired, &c->node);
    up_chan_update_timer(c);
}

/* ---- public ----------------------------------------------------------------- */

int dns_upstream_create(uv_loop_t *loop, const cfg_t *cfg, dns_upstream_t **out)
{
    *out = NULL;
    if (up_lib_init() != 0)
        return -EIO;
    dns_upstream_t *up = calloc(1, sizeof *up);
    if (!up) {
        up_lib_cleanup();
        return -ENOMEM;
    }
    up->loop = loop;
    moat_list_init(&up->retired);
    int rc = up_chan_create(up, cfg, &up->cur);
    if (rc != 0) {
        free(up);
        up_lib_cleanup();
        return rc;
    }
    *out = up;
    return 0;
}

int dns_upstream_configure(dns_upstream_t *up, const cfg_t *cfg)
{
    if (!up || up->destroyed)
        return -ESHUTDOWN;
    if (up_chan_same(up->cur, cfg))
        return 0;
    up_chan_t *c;
    int rc = up_chan_create(up, cfg, &c);
    if (rc != 0)
        return rc;
    up_chan_t *old = up->cur;
    up->cur = c;
    up_chan_retire(up, old);
    return 0;
}

static dns_upstream_req_t *up_req_new(dns_upstream_t *up, int kind, void *arg)
{
    dns_upstream_req_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->chan = up->cur;
    r->kind = kind;
    r->arg = arg;
    r->start_ns = uv_hrtime();
    return r;
}

/* Build the query (RFC 1035 §4.1.1; RFC 6891 §6.1.2 OPT) and hand it to
 * c-ares, which sets its own ID. */
static void up_send(dns_upstream_req_t *r, const uint8_t *qname, size_t qname_len, uint16_t qtype,
                    bool dnssec_ok)
{
    up_chan_t *c = r->chan;
    uint8_t q[DNS_HEADER_LEN + DNS_NAME_WIRE_MAX + 4 + 11];
    size_t n = 0;
    memset(q, 0, DNS_HEADER_LEN);
    q[2] = 0x01; /* RD */
    q[5] = 1;    /* QDCOUNT */
    q[11] = 1;   /* ARCOUNT: the OPT */
    n = DNS_HEADER_LEN;
    /* Lowercase every octet: length octets are at most 63, below 'A'. */
    for (size_t i = 0; i < qname_len; i++) {
        uint8_t b = qname[i];
        q[n++] = (b >= 'A' && b <= 'Z') ? (uint8_t)(b + 32) : b;
    }
    q[n++] = (uint8_t)(qtype >> 8);
    q[n++] = (uint8_t)qtype;
    q[n++] = 0;
    q[n++] = DNS_CLASS_IN;
    q[n++] = 0; /* OPT: root owner */
    q[n++] = 0;
    q[n++] = DNS_TYPE_OPT;
    q[n++] = (uint8_t)(DNS_EDNS_UDP_SIZE >> 8);
    q[n++] = (uint8_t)DNS_EDNS_UDP_SIZE;
    q[n++] = 0; /* extended RCODE */
    q[n++] = 0; /* version */
    q[n++] = dnssec_ok ? 0x80 : 0;
    q[n++] = 0;
    q[n++] = 0; /* RDLEN */
    q[n++] = 0;
    r->ares_pending++;
    c->outstanding++;
    ares_send(c->ch, q, (int)n, up_ares_cb, r);
}

static void up_req_start(dns_upstream_req_t *r)
{
    up_chan_t *c = r->chan;
    r->live = true;
    r->deadline = uv_now(c->up->loop) + c->timeout_ms;
    moat_list_append(&c->reqs, &r->node);
    c->live++;
    if (c->reqs.next == &r->node)
        uv_timer_start(&c->deadline_timer, up_deadline_cb, c->timeout_ms, 0);
}

int dns_upstream_query(dns_upstream_t *up, const uint8_t *qname, size_t qname_len, uint16_t qtype,
                       bool dnssec_ok, dns_upstream_answer_cb cb, void *arg,
                       dns_upstream_req_t **out)
{
    if (out)
        *out = NULL;
    if (!up || up->destroyed)
        return -ESHUTDOWN;
    if (!cb || !qname || qname_len < 1 || qname_len > DNS_NAME_WIRE_MAX)
        return -EINVAL;
    dns_upstream_req_t *r = up_req_new(up, UP_KIND_QUERY, arg);
    if (!r)
        return -ENOMEM;
    r->answer_cb = cb;
    r->in_send = true;
    up_send(r, qname, qname_len, qtype, dnssec_ok);
    r->in_send = false;
    if (r->sync_fail) {
        free(r);
        return -EIO;
    }
    up_req_start(r);
    up_chan_update_timer(r->chan);
    if (out)
        *out = r;
    return 0;
}

int dns_upstream_resolve(dns_upstream_t *up, const char *name, size_t len,
                         dns_upstream_resolve_cb cb, void *arg, dns_upstream_req_t **out)
{
    if (out)
        *out = NULL;
    if (!up || up->destroyed)
        return -ESHUTDOWN;
    if (!cb || !name)
        return -EINVAL;
    dns_cache_key_t k;
    if (dns_cache_key_from_name(&k, name, len, DNS_TYPE_A, DNS_CLASS_IN) != 0)
        return -EINVAL;
    dns_upstream_req_t *r = up_req_new(up, UP_KIND_RESOLVE, arg);
    if (!r)
        return -ENOMEM;
    r->resolve_cb = cb;
    r->in_send = true;
    up_send(r, k.name, k.name_len, DNS_TYPE_A, false);
    up_send(r, k.name, k.name_len, DNS_TYPE_AAAA, false);
    r->in_send = false;
    if (r->sync_fail == 2) {
        free(r);
        return -EIO;
    }
    if (r->sync_fail)
        r->fail_status = -EIO;
    up_req_start(r);
    up_chan_update_timer(r->chan);
    if (out)
        *out = r;
    return 0;
}

void dns_upstream_cancel(dns_upstream_req_t *r)
{
    if (!r || !r->live)
        return;
    up_req_finish(r);
    up_req_maybe_free(r);
}

size_t dns_upstream_pending(const dns_upstream_t *up)
{
    if (!up)
        return 0;
    size_t n = up->cur ? up->cur->live : 0;
    moat_list_foreach(it, &up->retired) n += container_of(it, const up_chan_t, node)->live;
    return n;
}

void dns_upstream_destroy(dns_upstream_t *up, dns_upstream_done_cb done, void *arg)
{
    if (!up || up->destroyed)
        return;
    up->destroyed = true;
    up->done = done;
    up->done_arg = arg;
    up_chan_t *c = up->cur;
    up->cur = NULL;
    if (c)
        up_chan_destroy(c);
    moat_list_foreach_safe(it, nx, &up->retired) up_chan_destroy(container_of(it, up_chan_t, node));
}
