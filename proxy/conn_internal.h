/* proxy/conn_internal.h: one connection, as conn.c (peek, decide, dial,
 * splice), tunnel.c (the explicit proxies' handshakes, SPEC §2.6) and
 * watch.c (every HTTP request decided, SPEC §2.3) share it. Not an API.
 */
#ifndef MOAT_PROXY_CONN_INTERNAL_H
#define MOAT_PROXY_CONN_INTERNAL_H

#include "filter/decide.h"
#include "filter/http_flow.h"
#include "proxy/proxy_internal.h"

/* A name this long or shorter, and this many addresses to dial, are kept in
 * the connection itself (no malloc and free per connection). */
#define PX_NAME_INLINE  48
#define PX_ADDRS_INLINE 2

/* Reads per direction and turn before other connections get theirs. */
#define PX_PUMP_ROUNDS 16

typedef enum px_state {
    PX_S_HANDSHAKE, /* connect / socks: reading the client's request (tunnel.c) */
    PX_S_PEEK,
    PX_S_RESOLVE,
    PX_S_DIAL,
    PX_S_SPLICE,
    PX_S_LINGER,
    PX_S_CLOSING,
} px_state_t;

/* How a client of an explicit proxy asked (SPEC §2.6). */
typedef enum px_proto {
    PX_PROTO_NONE,    /* transparent, tls, http: the client does not know */
    PX_PROTO_CONNECT, /* HTTP CONNECT: a tunnel, 200 once dialled */
    PX_PROTO_FORWARD, /* HTTP absolute-form: one request forwarded in origin form */
    PX_PROTO_SOCKS,   /* SOCKS5 CONNECT: a tunnel, reply 0 once dialled */
} px_proto_t;

/* Which requests of an HTTP connection are watched (watch.c), and against
 * what. */
typedef enum px_watch_mode {
    PX_WATCH_NONE,
    PX_WATCH_SWITCH,   /* http, transparent: every request names the first host (host-switch) */
    PX_WATCH_MISMATCH, /* a tunnel by name: every request names the tunnel's (host-mismatch) */
    PX_WATCH_ONE,      /* FORWARD: one request, then no more client bytes */
} px_watch_mode_t;

typedef struct px_watch px_watch_t;

typedef struct px_dir {
    px_pipe_t pipe; /* rfd -1 when none */
    size_t in_pipe; /* bytes in the pipe */
    uint64_t bytes; /* bytes delivered to the other side */
    bool eof;       /* the source reached EOF */
    bool shut;      /* delivered to the end: shutdown(dst, SHUT_WR), or close */
    bool stream;    /* splice from now on (else copy; see conn.c's top) */
} px_dir_t;

/* One socket of a connection, as the epoll set knows it (its data.ptr). */
typedef struct px_side {
    px_conn_t *c;
    bool server;  /* ufd, else cfd */
    bool rd;      /* bytes or EOF may be waiting */
    bool wr;      /* room for bytes may be free */
    bool fin;     /* the peer's FIN came in order (EPOLLRDHUP without error) */
    bool written; /* written to: the next write wants TCP_NODELAY */
    bool nodelay; /* TCP_NODELAY is set (inherited from the listener on cfd) */
} px_side_t;

struct px_conn {
    px_t *px;
    moat_list_t node;  /* on px->conns until closing */
    moat_list_t later; /* on px->later (or the round px_later_cb runs) */
    moat_list_t tnode; /* on px->tq[] while a deadline is set; on px->dead once closed */
    uint64_t deadline; /* loop time (ms) the state's timeout ends */
    int cfd, ufd;
    px_side_t cs, us; /* cfd, ufd in the epoll set */
    unsigned handles; /* 1: a connection of the service (0: px_log_refused's stand-in) */
    px_kind_t kind;
    px_state_t state;
    unsigned stats_tenant; /* the tenant its active gauge counts under (core/stats.h) */
    bool has_dest;         /* dest: the original destination or the address dialled */
    bool has_orig;         /* transparent: dest is the original destination */
    bool name_ok;          /* name is normalised (dialable) */
    bool by_name;          /* decided by a name (re-decided by name on reload) */
    bool log_at_close;     /* allowed (or audit-passed): log with bytes at close */
    bool reset;            /* close with RST */
    bool peek_tls;         /* PEEK: reading a ClientHello, else a request head */
    /* Explicit proxies (tunnel.c). */
    uint8_t proto;     /* px_proto_t */
    uint8_t hs_step;   /* HANDSHAKE: tunnel.c's step */
    bool replied;      /* the success reply went out (later failures reset) */
    bool check_sni;    /* a tunnel by name to a tls port: its SNI must name `name` */
    bool tunnel_peek;  /* PEEK: the ClientHello inside such a tunnel */
    long auth_tenant;  /* authenticated: the user's tenant index in generation auth_gen */
    uint64_t auth_gen; /* the id of the generation auth_tenant indexes */
    char *auth_name;   /* authenticated: the tenant's name (found again after a reload) */
    uint8_t *head_out; /* FORWARD: the request head for the server, sent once dialled */
    size_t head_out_len;
    uint8_t watch_mode;    /* px_watch_mode_t, set with the decision */
    px_watch_t *watch;     /* splicing with watch_mode: the request tracker (watch.c) */
    filter_decision_t dec; /* what log_at_close logs; its rule is owned by gen's policy */
    moat_gen_t *gen;       /* held from the decision on */
    filter_addr_t client, dest, orig;
    uint16_t cport, port;
    char *name; /* as seen (raw) or normalised when name_ok; NULL, name_inline or malloc'd */
    size_t name_len;
    uint64_t start_ms, last_ms;
    px_dialcache_waiter_t wait; /* waiting for a lookup of name (RESOLVE) */
    filter_addr_t *addrs;       /* NULL, addrs_inline or malloc'd */
    size_t n_addrs, next_addr;
    filter_addr_t addrs_inline[PX_ADDRS_INLINE];
    char name_inline[PX_NAME_INLINE];
    px_dir_t d_up, d_down; /* client → server, server → client */
};

/* ---- conn.c, for tunnel.c and watch.c ---- */

/* The scope (tenant, policy, mode) the connection is decided by in gen: its
 * authenticated user's tenant, else its client address's (SPEC §2.7). */
moat_scope_t px_conn_scope(const px_conn_t *c, const moat_gen_t *gen);
/* Log one decision line for the connection. */
void px_conn_log(px_conn_t *c, const filter_decision_t *dec);
/* The same line naming name instead of the connection's (a later request's). */
void px_conn_log_as(px_conn_t *c, const filter_decision_t *dec, const char *name, size_t name_len);
/* Close cleanly (logged when allowed). */
void px_conn_close(px_conn_t *c);
/* Record the name (see px_set_name in conn.c); false without memory. */
bool px_conn_set_name(px_conn_t *c, const char *name, size_t len, bool ok);
/* Hold the current generation (once). */
void px_conn_take_gen(px_conn_t *c);
/* What the connection knows, for filter_decide_conn at stage. */
void px_conn_input(px_conn_t *c, const moat_gen_t *gen, filter_conn_stage_t stage,
                   filter_conn_input_t *in);
/* Decide with the current generation as the connection's scope, and act. */
void px_conn_decide(px_conn_t *c, filter_conn_input_t *in);
/* Drop what the client sent, send data (may be NULL), half-close and
 * linger until the client closes (the answer of a refusal). */
void px_conn_answer(px_conn_t *c, const void *data, size_t len);
/* Send a small reply to the client now (the socket is fresh: it fits);
 * false, with the connection aborted, when it could not be sent whole. */
bool px_conn_reply(px_conn_t *c, const void *data, size_t len);
/* Start splicing (watching HTTP heads when the connection wants it). */
void px_conn_splice(px_conn_t *c);
/* Consume n bytes the client sent (already peeked); 0 or -errno. */
int px_conn_consume(px_conn_t *c, size_t n);
/* Peek what the client sent so far into the service's peek buffer (at most
 * limit bytes). > 0: bytes; 0: nothing yet (wait for an edge); -1: the
 * client closed or failed (the caller ends the connection). */
ssize_t px_conn_peek_bytes(px_conn_t *c, size_t limit);

/* Relay internals (conn.c's top says how a direction moves bytes). */
void px_conn_pre_write(px_conn_t *c, px_side_t *s);
void px_conn_dir_finish(px_conn_t *c, px_dir_t *d, int dst, const px_dir_t *other);
void px_conn_dir_release(px_t *px, px_dir_t *d);
int px_conn_pump(px_conn_t *c, px_dir_t *d, px_side_t *src, px_side_t *dst, px_dir_t *other);
/* Send buf to dst on d (whose pipe is empty); what dst does not take is
 * parked in d's pipe. 0 all sent, 1 parked (dst is full), -errno. */
int px_conn_send(px_conn_t *c, px_dir_t *d, px_side_t *dst, const uint8_t *buf, size_t len);
/* Empty d's pipe into dst: 1 empty now, 0 dst is full, -errno. */
int px_conn_flush(px_conn_t *c, px_dir_t *d, px_side_t *dst);
/* Work left after this turn's rounds: run again when the loop is idle. */
void px_conn_later(px_conn_t *c);

/* ---- watch.c ---- */

/* Start watching the requests of a connection about to splice (watch_mode
 * set); false, with the connection aborted, without memory. */
bool px_watch_start(px_conn_t *c);
/* The relay of a watched connection (instead of plain pumping). */
void px_watch_relay(px_conn_t *c);
/* Free the tracker (NULL is fine). */
void px_watch_free(px_conn_t *c);

/* ---- tunnel.c ---- */

/* HANDSHAKE: read and act on what the client of a connect or socks
 * listener sent so far. */
void px_tunnel_handshake(px_conn_t *c);
/* A handshake timed out or the client went away (logged as why). */
void px_tunnel_failed(px_conn_t *c, filter_reason_t why);
/* Refuse in the client's protocol (403, SOCKS 0x02, ...) as d says
 * (logged). */
void px_tunnel_refuse(px_conn_t *c, const filter_decision_t *d);
/* The server answered: tell the client (200, SOCKS success with the bound
 * address; FORWARD sends the request head to the server). False when the
 * connection was closed. */
bool px_tunnel_ready(px_conn_t *c);
/* The ClientHello inside a tunnel by name (check_sni): splice on when its
 * SNI names the tunnel's name (or there is none), else refuse. */
void px_tunnel_hello(px_conn_t *c, filter_tls_result_t r, const filter_tls_hello_t *hello);

#endif
