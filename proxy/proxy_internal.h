/* proxy/proxy_internal.h: what proxy.c (service, listeners, accept) and
 * conn.c (one connection: peek, decide, dial, splice) share. Not an API.
 */
#ifndef MOAT_PROXY_PROXY_INTERNAL_H
#define MOAT_PROXY_PROXY_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "config/config.h"
#include "filter/addr.h"
#include "filter/policy.h"
#include "filter/list.h"
#include "core/service.h"
#include "proxy/dialcache.h"
#include "core/stats.h"
#include "resolver/upstream.h"

/* Idle pipes kept for reuse by all connections (two fds each). A spliced
 * connection holds a pipe per direction only while bytes are in flight, so
 * an idle spliced connection costs its two sockets and nothing else. */
#define PX_PIPE_POOL 64
/* Pipe size asked for (best effort, F_SETPIPE_SZ): bigger pipes mean fewer
 * splice calls per byte on bulk transfers. Memory is only used while bytes
 * are in flight. */
#define PX_PIPE_SIZE (1024 * 1024)
/* Small transfers are copied through one buffer shared by every connection
 * (recv + send: two system calls, where a splice needs three and a pipe);
 * a read that fills it means a stream, which the direction then splices.
 * At most two pages: a partial send parks the rest in a pipe, and the
 * smallest pipe the kernel hands out (over pipe-user-pages-soft) holds two. */
#define PX_COPY_BUF 8192
/* Freed connections kept for the next accepts: bursts of closes and
 * accepts outnumber what malloc's per-thread cache keeps, and would go
 * through its bins. */
#define PX_CONN_SPARE 256

typedef enum px_kind { PX_TRANSPARENT, PX_TLS, PX_HTTP, PX_CONNECT, PX_SOCKS } px_kind_t;

/* The connections' timeouts (conn.c), one deadline list each. */
typedef enum px_tq_kind {
    PX_TQ_PEEK,    /* peek_timeout: the hello, head or handshake */
    PX_TQ_RESOLVE, /* dns.timeout + connect_timeout */
    PX_TQ_DIAL,    /* connect_timeout */
    PX_TQ_IDLE,    /* idle_timeout, from the last activity */
    PX_TQ_LINGER,  /* a refused connection's linger */
    PX_TQ_N,
} px_tq_kind_t;

typedef struct px px_t;
typedef struct px_conn px_conn_t;

typedef struct px_listener {
    moat_listener_t base; /* on px->listeners while open */
    px_t *px;
    px_kind_t kind;
    cfg_addr_t addr;
    uv_poll_t poll;
    int fd;
    bool closing; /* uv_close called */
} px_listener_t;

typedef struct px_pipe {
    int rfd, wfd;
} px_pipe_t;

struct px {
    moat_service_t svc; /* first: the daemon's handle on us */
    moat_service_t *dns;
    uv_loop_t *loop;
    moat_gen_t *gen;
    moat_list_t listeners; /* px_listener_t, open (not closing) */
    moat_list_t conns;     /* px_conn_t, not closing */
    size_t n_conns;
    /* Workers (core/worker.h): this copy's index, how many copies run, every
     * worker's DNS service (this worker's first: §2.3 step 3 asks every
     * address memory, since a guest's answer and its connection may land on
     * different workers), and the connections open over all of them
     * (max_connections is per process). conns_all NULL: one worker, n_conns
     * is the count. */
    size_t worker, workers;
    moat_service_t **dns_all;
    atomic_uint *conns_all;
    /* Accept back-off (EMFILE and friends): listeners stop polling until the
     * timer fires. */
    uv_timer_t backoff;
    uint64_t backoff_ms; /* 0: not backing off */
    px_pipe_t pipes[PX_PIPE_POOL];
    size_t n_pipes;
    /* Allowed names → addresses, shared by every dial (proxy/dialcache.h):
     * from start until the shutdown, NULL outside. */
    px_dialcache_t *dialcache;
    /* Connection sockets (conn.c): one edge-triggered epoll set, watched by
     * one uv_poll; connections that used up their rounds with work left
     * wait in `later` for the idle handle. epfd -1 outside start..close. */
    int epfd;
    uv_poll_t ep_poll;
    uv_idle_t later_idle;
    moat_list_t later; /* px_conn_t with work left */
    bool conns_started;
    /* Connection deadlines: a list per kind of timeout, each in deadline
     * order (a timeout is the same for every connection of a generation,
     * so a new deadline goes last), and one timer for the earliest head.
     * tq_due: when tq_timer fires, UINT64_MAX when it is not armed. */
    moat_list_t tq[PX_TQ_N];
    uv_timer_t tq_timer;
    uint64_t tq_due;
    /* Closed connections, freed by the check handle after this turn's
     * events (an event taken in the same batch may still name one). */
    moat_list_t dead;
    uv_check_t reap;
    moat_list_t spare; /* px_conn_t memory for reuse (by node), at most PX_CONN_SPARE */
    size_t n_spare;
    uint8_t copy_buf[PX_COPY_BUF];
    /* Peeks (conn.c), grown to the largest max_hello / max_http_head. */
    uint8_t *peek_buf;
    size_t peek_cap;
};

/* proxy.c. The service counts (core/service.h): busy, each listener until
 * its handle is closed and each connection until it is closing; handles,
 * each listener and connection until freed, the back-off timer and the
 * connections' epoll handles. */
/* Get a pipe (from the pool or new); 0 or -errno. */
int px_pipe_get(px_t *px, px_pipe_t *out);
/* Give back an empty pipe (pooled, or closed when the pool is full). */
void px_pipe_put(px_t *px, px_pipe_t *p);
const char *px_kind_str(px_kind_t k);
/* The listener label of the metrics (core/stats.h). */
stats_listener_t px_kind_stats(px_kind_t k);

/* conn.c */
/* Create the connections' epoll set, deadline timer and reaper (counted as
 * the service's handles); 0 or -errno. */
int px_conns_start(px_t *px);
/* Close them; every connection must be closing already. */
void px_conns_stop(px_t *px);
/* Take over an accepted socket (nonblocking, cloexec). peer is the client's
 * address; dest / dest_len the original destination for transparent
 * listeners (dest_len 0 otherwise). Never fails visibly: on error the
 * socket is reset and the event logged. */
void px_conn_accept(px_t *px, px_kind_t kind, int fd, const struct sockaddr_storage *peer,
                    const struct sockaddr_storage *dest, socklen_t dest_len);
/* The connection on px->conns at node. */
px_conn_t *px_conn_of(moat_list_t *node);
/* Close a connection at once (logged as why, when not NULL, if it was
 * allowed). */
void px_conn_abort(px_conn_t *c, const filter_decision_t *why);
/* Reload: re-decide open connections with gen; close those no longer
 * allowed (reason policy-reload). */
void px_conns_recheck(px_t *px, moat_gen_t *gen);
/* Log a connection that is refused before it gets a px_conn_t (max
 * connections). */
void px_log_refused(px_t *px, px_kind_t kind, const struct sockaddr_storage *peer,
                    filter_reason_t reason);
/* Reset a socket: RST instead of FIN (SO_LINGER {1, 0}), then close it. */
void px_reset_fd(int fd);

#endif
