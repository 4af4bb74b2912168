/* proxy/tunnel.c: the explicit proxies' side of a connection (SPEC §2.6):
 * the `connect` listener's request head (CONNECT host:port, or an
 * absolute-form request forwarded in origin form) and the `socks`
 * listener's SOCKS5 greeting, RFC 1929 login and CONNECT request; then the
 * answers in the client's protocol and the ClientHello check inside a
 * tunnel by name.
 *
 * The handshake is read like a peek (conn.c): MSG_PEEK from the start into
 * the service's peek buffer, parsed whole by the pure readers of
 * filter/proxy_http.h and filter/socks5.h, and consumed only once a message
 * is complete; a connection holds no buffer while it waits. Pipelined
 * bytes (a SOCKS request right behind the greeting, a ClientHello right
 * behind a CONNECT) stay queued for the next step or the splice.
 *
 * The destination is then decided as SPEC §2.6 says, by
 * filter_decide_conn() as a transparent connection to it would be: a name
 * at stage NAME (with the requested port), an address at stage ACCEPT as
 * the original destination (step 0, peeking on tls and http ports, step 3's
 * DNS memory), an absolute-form request at stage HTTP as the http listener
 * decides its head. conn.c dials; the success reply goes out once the
 * server answered (so a failed dial can still be told: 502, 504, SOCKS
 * 0x04-0x06), except for an address on a tls or http port, which must be
 * told first to get the hello or head it is decided by.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "filter/name.h"
#include "filter/proxy_http.h"
#include "filter/socks5.h"
#include "filter/tls_hello.h"
#include "proxy/conn_internal.h"

/* hs_step values. */
enum { TN_HTTP, TN_SOCKS_GREETING, TN_SOCKS_LOGIN, TN_SOCKS_REQUEST };

/* ---- answers ------------------------------------------------------------------------- */

static filter_pxhttp_answer_t tn_http_answer(filter_reason_t r)
{
    switch (r) {
    case FILTER_REASON_CONNECT_TIMEOUT:
        return FILTER_PXHTTP_ANSWER_504_TIMEOUT;
    case FILTER_REASON_DIAL_FAILED:
        return FILTER_PXHTTP_ANSWER_502_DIAL;
    case FILTER_REASON_NO_ADDRESS:
        return FILTER_PXHTTP_ANSWER_502_DNS;
    case FILTER_REASON_PROXY_AUTH:
        return FILTER_PXHTTP_ANSWER_407;
    case FILTER_REASON_BAD_REQUEST:
        return FILTER_PXHTTP_ANSWER_400;
    default:
        return FILTER_PXHTTP_ANSWER_403;
    }
}

/* RFC 1928 §6 reply codes for SPEC §2.6's cases. */
static filter_socks_rep_t tn_socks_code(filter_reason_t r)
{
    switch (r) {
    case FILTER_REASON_CONNECT_TIMEOUT:
        return FILTER_SOCKS_REP_TTL_EXPIRED;
    case FILTER_REASON_DIAL_FAILED:
        return FILTER_SOCKS_REP_REFUSED;
    case FILTER_REASON_NO_ADDRESS:
        return FILTER_SOCKS_REP_HOST_UNREACHABLE;
    default:
        return FILTER_SOCKS_REP_NOT_ALLOWED;
    }
}

/* A SOCKS reply with the bound address of fd (0.0.0.0:0 without one). */
static size_t tn_socks_reply(filter_socks_rep_t code, int fd, uint8_t *out)
{
    filter_addr_t bound = {.family = AF_INET};
    uint16_t port = 0;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (fd >= 0 && getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        (void)filter_addr_from_sockaddr((const struct sockaddr *)&ss, &bound, &port);
    int n = filter_socks_format_reply(code, &bound, port, out, FILTER_SOCKS_REPLY_MAX);
    return n > 0 ? (size_t)n : 0;
}

/* Log d and refuse with code (SOCKS) or answer (HTTP). */
static void tn_refuse_as(px_conn_t *c, const filter_decision_t *d, filter_socks_rep_t socks_code,
                         filter_pxhttp_answer_t answer)
{
    px_conn_log(c, d);
    if (c->kind == PX_SOCKS) {
        uint8_t rep[FILTER_SOCKS_REPLY_MAX];
        size_t n = tn_socks_reply(socks_code, -1, rep);
        px_conn_answer(c, rep, n);
        return;
    }
    char buf[FILTER_PXHTTP_ANSWER_MAX];
    int n = filter_pxhttp_format(answer, c->name, c->name ? c->name_len : 0, buf, sizeof buf);
    px_conn_answer(c, buf, n > 0 ? (size_t)n : 0);
}

void px_tunnel_refuse(px_conn_t *c, const filter_decision_t *d)
{
    tn_refuse_as(c, d, tn_socks_code(d->reason), tn_http_answer(d->reason));
}

/* Refused before anything was decided (a malformed request, no login). */
static void tn_refuse_why(px_conn_t *c, filter_reason_t why, filter_socks_rep_t socks_code)
{
    filter_decision_t d = {.verdict = FILTER_BLOCK, .reason = why};
    tn_refuse_as(c, &d, socks_code, tn_http_answer(why));
}

void px_tunnel_failed(px_conn_t *c, filter_reason_t why)
{
    filter_decision_t d = {.verdict = FILTER_BLOCK, .reason = why};
    px_conn_log(c, &d);
    px_conn_abort(c, NULL);
}

/* Send the rewritten head to the server before anything of the client's;
 * what the socket does not take waits in the up direction's pipe. */
static bool tn_forward_head(px_conn_t *c)
{
    int r = px_conn_send(c, &c->d_up, &c->us, c->head_out, c->head_out_len);
    if (r < 0) {
        px_conn_abort(c, NULL);
        return false;
    }
    free(c->head_out);
    c->head_out = NULL;
    c->head_out_len = 0;
    return true;
}

bool px_tunnel_ready(px_conn_t *c)
{
    c->replied = true;
    switch ((px_proto_t)c->proto) {
    case PX_PROTO_CONNECT: {
        char buf[FILTER_PXHTTP_ANSWER_MAX];
        int n = filter_pxhttp_format(FILTER_PXHTTP_ANSWER_200, NULL, 0, buf, sizeof buf);
        return n > 0 && px_conn_reply(c, buf, (size_t)n);
    }
    case PX_PROTO_SOCKS: {
        uint8_t rep[FILTER_SOCKS_REPLY_MAX];
        size_t n = tn_socks_reply(FILTER_SOCKS_REP_SUCCEEDED, c->ufd, rep);
        return px_conn_reply(c, rep, n);
    }
    case PX_PROTO_FORWARD:
        return tn_forward_head(c);
    case PX_PROTO_NONE:
        break;
    }
    return true;
}

/* ---- the hello inside a tunnel ------------------------------------------------------- */

void px_tunnel_hello(px_conn_t *c, filter_tls_result_t r, const filter_tls_hello_t *hello)
{
    c->tunnel_peek = false;
    filter_decision_t d = c->dec;
    d.verdict = FILTER_BLOCK;
    d.audit = false;
    char norm[FILTER_NAME_MAX + 1];
    size_t nlen = 0;
    switch (r) {
    case FILTER_TLS_NO_SNI: /* SPEC §2.6: no SNI is allowed */
        px_conn_splice(c);
        return;
    case FILTER_TLS_SNI:
        if (filter_name_normalize(hello->sni, hello->sni_len, norm, &nlen) == 0 &&
            nlen == c->name_len && memcmp(norm, c->name, nlen) == 0) {
            px_conn_splice(c);
            return;
        }
        d.reason = FILTER_REASON_SNI_MISMATCH;
        break;
    case FILTER_TLS_MULTI_SNI:
    case FILTER_TLS_BAD_SNI:
        d.reason = filter_tls_result_reason(r);
        break;
    default: /* not TLS, too big: as step 1, a reset */
        d.reason = filter_tls_result_reason(r);
        c->log_at_close = false;
        px_conn_log(c, &d);
        px_conn_abort(c, NULL);
        return;
    }
    /* Audit: logged with the name the hello asked for, and let through. */
    if (px_conn_scope(c, c->gen).audit) {
        d.audit = true;
        px_conn_log_as(c, &d, hello->sni, hello->sni_len);
        px_conn_splice(c);
        return;
    }
    /* Logged with the name the hello asked for: the one it was refused for. */
    c->log_at_close = false;
    if (hello->sni_len)
        (void)px_conn_set_name(c, hello->sni, hello->sni_len, false);
    px_conn_log(c, &d);
    size_t alen = 0;
    const uint8_t *alert = filter_tls_alert_access_denied(&alen);
    px_conn_answer(c, alert, alen);
}

/* ---- deciding the destination --------------------------------------------------------- */

static bool tn_port_in(const cfg_port_list_t *l, int port)
{
    for (size_t i = 0; i < l->n; i++)
        if (port >= l->items[i].lo && port <= l->items[i].hi)
            return true;
    return false;
}

/* A name or an address the client asked for (CONNECT, SOCKS). */
static void tn_decide_target(px_conn_t *c, const char *host, size_t host_len, bool is_addr,
                             const filter_addr_t *addr, uint16_t port)
{
    filter_conn_input_t in;
    c->port = port;
    if (is_addr) {
        /* As the original destination of a transparent connection. */
        c->dest = c->orig = *addr;
        c->has_dest = c->has_orig = true;
        px_conn_input(c, c->px->gen, FILTER_STAGE_ACCEPT, &in);
    } else {
        /* By name; with filtering on, in a tunnel to a tls port its hello
         * must name it too, and to an http port every request head. */
        const cfg_t *cfg = c->px->gen->cfg;
        if (filter_policy_filtering(px_conn_scope(c, c->px->gen).policy)) {
            c->check_sni = tn_port_in(&cfg->proxy.tls_ports, port);
            if (!c->check_sni && tn_port_in(&cfg->proxy.http_ports, port))
                c->watch_mode = PX_WATCH_MISMATCH;
        }
        px_conn_input(c, c->px->gen, FILTER_STAGE_NAME, &in);
        in.name = host;
        in.name_len = host_len;
    }
    px_conn_decide(c, &in);
}

/* Check a user's password (SPEC §2.6); on success the connection is its
 * tenant's from now on (px_conn_scope). False for a wrong login or no
 * memory. */
static bool tn_user(px_conn_t *c, const char *user, size_t ulen, const char *pass, size_t plen)
{
    const moat_gen_t *gen = c->px->gen;
    long i = moat_gen_user_auth(gen, &c->client, user, ulen, pass, plen);
    if (i < 0 || !(c->auth_name = strdup(gen->tenants[i].name)))
        return false;
    c->auth_tenant = i;
    c->auth_gen = gen->id;
    return true;
}

/* Proxy users (SPEC §2.6): when some tenant names users, every client logs
 * in, and the user's tenant decides. False (refused, logged) otherwise. */
static bool tn_login(px_conn_t *c, bool given, const char *user, size_t ulen, const char *pass,
                     size_t plen, filter_socks_rep_t socks_code)
{
    if (!moat_gen_has_users(c->px->gen) || (given && tn_user(c, user, ulen, pass, plen)))
        return true;
    tn_refuse_why(c, FILTER_REASON_PROXY_AUTH, socks_code);
    return false;
}

/* What the client sent so far, peeked (see px_conn_peek_bytes): > 0 bytes;
 * 0 nothing yet, or the connection ended (logged). */
static ssize_t tn_peek(px_conn_t *c, size_t limit)
{
    ssize_t got = px_conn_peek_bytes(c, limit);
    if (got < 0)
        px_tunnel_failed(c,
                         got == -ENOMEM ? FILTER_REASON_DIAL_FAILED : FILTER_REASON_CLIENT_CLOSED);
    return got;
}

/* ---- the connect listener -------------------------------------------------------------- */

/* An absolute-form request: decided as the http listener decides its head
 * (the URI's name, or an IP literal by the address rules), on its port. */
static void tn_forward(px_conn_t *c, const filter_pxhttp_req_t *req, size_t len)
{
    const uint8_t *buf = c->px->peek_buf;
    filter_http_head_t head;
    filter_http_result_t hr = filter_http_head_parse(buf, req->head_len, req->head_len, &head);
    size_t cap = 2 * req->head_len + FILTER_PXHTTP_REWRITE_EXTRA;
    c->head_out = malloc(cap);
    int n = c->head_out ? filter_pxhttp_rewrite(buf, len, req, c->head_out, cap) : -ENOMEM;
    if (n < 0 || px_conn_consume(c, req->head_len) != 0) {
        px_tunnel_failed(c, FILTER_REASON_DIAL_FAILED);
        return;
    }
    c->head_out_len = (size_t)n;
    /* Its body must be framed before it goes (RFC 9112 §6.3: a request
     * whose length cannot be told is refused, not guessed). */
    filter_http_flow_t flow;
    filter_http_flow_init(&flow);
    if (filter_http_flow_request(&flow, c->head_out, c->head_out_len) != FILTER_HTTP_FLOW_OK) {
        tn_refuse_why(c, FILTER_REASON_BAD_FRAMING, FILTER_SOCKS_REP_GENERAL_FAILURE);
        return;
    }
    c->watch_mode = PX_WATCH_ONE;
    c->proto = PX_PROTO_FORWARD;
    c->port = req->port;
    filter_conn_input_t in;
    px_conn_input(c, c->px->gen, FILTER_STAGE_HTTP, &in);
    in.listener = FILTER_LISTENER_HTTP;
    in.http = hr;
    in.head = &head;
    px_conn_decide(c, &in);
}

static void tn_http(px_conn_t *c)
{
    size_t limit = c->px->gen->cfg->proxy.max_http_head;
    ssize_t got = tn_peek(c, limit);
    if (got <= 0)
        return;
    filter_pxhttp_req_t req;
    filter_pxhttp_result_t r = filter_pxhttp_parse(c->px->peek_buf, (size_t)got, limit, &req);
    switch (r) {
    case FILTER_PXHTTP_NEED_MORE:
        if ((size_t)got >= limit)
            px_tunnel_failed(c, FILTER_REASON_HEAD_TOO_BIG);
        else if (c->cs.fin)
            px_tunnel_failed(c, FILTER_REASON_CLIENT_CLOSED);
        else
            c->cs.rd = false; /* all seen: new bytes bring an edge */
        break;
    case FILTER_PXHTTP_TOO_BIG:
        px_tunnel_failed(c, FILTER_REASON_HEAD_TOO_BIG);
        break;
    case FILTER_PXHTTP_NOT_HTTP:
        px_tunnel_failed(c, FILTER_REASON_NOT_HTTP);
        break;
    case FILTER_PXHTTP_BAD:
        if (req.host_len)
            (void)px_conn_set_name(c, req.host, req.host_len, false);
        tn_refuse_why(c, FILTER_REASON_BAD_REQUEST, FILTER_SOCKS_REP_GENERAL_FAILURE);
        break;
    case FILTER_PXHTTP_OK:
        if (!tn_login(c, req.has_auth && !req.auth_bad, req.user, req.user_len, req.password,
                      req.password_len, FILTER_SOCKS_REP_NOT_ALLOWED))
            break;
        if (req.kind == FILTER_PXHTTP_FORWARD) {
            tn_forward(c, &req, (size_t)got);
            break;
        }
        if (px_conn_consume(c, req.head_len) != 0) {
            px_tunnel_failed(c, FILTER_REASON_CLIENT_CLOSED);
            break;
        }
        c->proto = PX_PROTO_CONNECT;
        tn_decide_target(c, req.host, req.host_len, req.is_addr, &req.addr, req.port);
        break;
    }
    /* The request held a secret: not left on the stack. */
    memset(req.password, 0, sizeof req.password);
}

/* ---- the socks listener ------------------------------------------------------------------ */

/* Refused at login (logged): the failure status, then close. */
static void tn_socks_login_failed(px_conn_t *c)
{
    uint8_t rep[2];
    int n = filter_socks_format_auth_reply(false, rep, sizeof rep);
    filter_decision_t d = {.verdict = FILTER_BLOCK, .reason = FILTER_REASON_PROXY_AUTH};
    px_conn_log(c, &d);
    px_conn_answer(c, rep, n > 0 ? (size_t)n : 0);
}

static bool tn_socks_greeting(px_conn_t *c, const uint8_t *buf, size_t len)
{
    bool login = moat_gen_has_users(c->px->gen);
    filter_socks_greeting_t g;
    filter_socks_result_t r = filter_socks_greeting_parse(buf, len, login, &g);
    if (r == FILTER_SOCKS_NEED_MORE)
        return false;
    if (r != FILTER_SOCKS_OK) { /* SOCKS4 or not SOCKS: nothing to say */
        px_tunnel_failed(c, FILTER_REASON_BAD_REQUEST);
        return false;
    }
    uint8_t rep[2];
    int n = filter_socks_format_method(g.method, rep, sizeof rep);
    if (px_conn_consume(c, g.used) != 0 || n < 0 || !px_conn_reply(c, rep, (size_t)n))
        return false;
    if (g.method == FILTER_SOCKS_METHOD_NO_ACCEPT) {
        filter_decision_t d = {.verdict = FILTER_BLOCK,
                               .reason =
                                   login ? FILTER_REASON_PROXY_AUTH : FILTER_REASON_BAD_REQUEST};
        px_conn_log(c, &d);
        px_conn_answer(c, NULL, 0);
        return false;
    }
    c->hs_step = g.method == FILTER_SOCKS_METHOD_USERPASS ? TN_SOCKS_LOGIN : TN_SOCKS_REQUEST;
    return true;
}

static bool tn_socks_login(px_conn_t *c, const uint8_t *buf, size_t len)
{
    filter_socks_auth_t a;
    filter_socks_result_t r = filter_socks_auth_parse(buf, len, &a);
    if (r == FILTER_SOCKS_NEED_MORE)
        return false;
    bool ok = r == FILTER_SOCKS_OK && px_conn_consume(c, a.used) == 0 &&
              tn_user(c, a.user, a.user_len, a.password, a.password_len);
    memset(a.password, 0, sizeof a.password); /* a secret: not left on the stack */
    if (!ok) {
        tn_socks_login_failed(c);
        return false;
    }
    uint8_t rep[2];
    int n = filter_socks_format_auth_reply(true, rep, sizeof rep);
    if (n < 0 || !px_conn_reply(c, rep, (size_t)n))
        return false;
    c->hs_step = TN_SOCKS_REQUEST;
    return true;
}

static void tn_socks_request(px_conn_t *c, const uint8_t *buf, size_t len)
{
    filter_socks_request_t req;
    filter_socks_result_t r = filter_socks_request_parse(buf, len, &req);
    if (r == FILTER_SOCKS_NEED_MORE)
        return;
    if (r != FILTER_SOCKS_OK) {
        if (req.name_len)
            (void)px_conn_set_name(c, req.name, req.name_len, false);
        tn_refuse_why(c, FILTER_REASON_BAD_REQUEST, req.reply);
        return;
    }
    if (px_conn_consume(c, req.used) != 0) {
        px_tunnel_failed(c, FILTER_REASON_CLIENT_CLOSED);
        return;
    }
    c->proto = PX_PROTO_SOCKS;
    tn_decide_target(c, req.name, req.name_len, req.is_addr, &req.addr, req.port);
}

/* One SOCKS step over what is queued; true when it consumed a message and
 * the next step may already have its bytes. */
static bool tn_socks_step(px_conn_t *c, const uint8_t *buf, size_t len)
{
    switch (c->hs_step) {
    case TN_SOCKS_GREETING:
        return tn_socks_greeting(c, buf, len);
    case TN_SOCKS_LOGIN:
        return tn_socks_login(c, buf, len);
    default:
        tn_socks_request(c, buf, len);
        return false;
    }
}

static void tn_socks(px_conn_t *c)
{
    const size_t limit = FILTER_SOCKS_AUTH_MAX; /* the longest message */
    for (;;) {
        ssize_t got = tn_peek(c, limit);
        if (got <= 0)
            return;
        uint8_t step = c->hs_step;
        if (tn_socks_step(c, c->px->peek_buf, (size_t)got))
            continue;
        if (c->state == PX_S_HANDSHAKE && c->hs_step == step) { /* needs more */
            if (c->cs.fin)
                px_tunnel_failed(c, FILTER_REASON_CLIENT_CLOSED);
            else
                c->cs.rd = false;
        }
        return;
    }
}

void px_tunnel_handshake(px_conn_t *c)
{
    if (c->kind == PX_SOCKS) {
        if (c->hs_step == TN_HTTP)
            c->hs_step = TN_SOCKS_GREETING;
        tn_socks(c);
    } else {
        tn_http(c);
    }
}
