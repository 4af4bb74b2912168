/* filter/decide.c: the connection and DNS decisions (see decide.h). */
#include "filter/decide.h"

#include <string.h>

bool filter_reason_is_hard(filter_reason_t r)
{
    return r == FILTER_REASON_REFUSED_RANGE || r == FILTER_REASON_OWN_LISTENER;
}

filter_reason_t filter_tls_result_reason(filter_tls_result_t r)
{
    switch (r) {
    case FILTER_TLS_NO_SNI:
        return FILTER_REASON_NO_SNI;
    case FILTER_TLS_BAD_SNI:
        return FILTER_REASON_BAD_SNI;
    case FILTER_TLS_MULTI_SNI:
        return FILTER_REASON_MULTI_SNI;
    case FILTER_TLS_TOO_BIG:
        return FILTER_REASON_HELLO_TOO_BIG;
    case FILTER_TLS_SNI:
    case FILTER_TLS_NEED_MORE:
    case FILTER_TLS_NOT_TLS:
        break;
    }
    return FILTER_REASON_NOT_TLS;
}

filter_reason_t filter_http_result_reason(filter_http_result_t r)
{
    switch (r) {
    case FILTER_HTTP_NO_NAME:
        return FILTER_REASON_NO_HOST;
    case FILTER_HTTP_MULTI_HOST:
        return FILTER_REASON_MULTI_HOST;
    case FILTER_HTTP_BAD_NAME:
        return FILTER_REASON_BAD_HOST;
    case FILTER_HTTP_TOO_BIG:
        return FILTER_REASON_HEAD_TOO_BIG;
    case FILTER_HTTP_NAME:
    case FILTER_HTTP_NEED_MORE:
    case FILTER_HTTP_NOT_HTTP:
        break;
    }
    return FILTER_REASON_NOT_HTTP;
}

static filter_decision_t dec_make(filter_verdict_t v, filter_reason_t r,
                                  const filter_rule_info_t *rule)
{
    filter_decision_t d = {.verdict = v, .reason = r, .rule = rule};
    return d;
}

static bool dec_port_in(const filter_port_range_t *r, size_t n, int port)
{
    for (size_t i = 0; i < n; i++)
        if (port >= r[i].lo && port <= r[i].hi)
            return true;
    return false;
}

/* ---- connections ---------------------------------------------------------------- */

static void dec_allow(filter_conn_out_t *o, filter_decision_t d)
{
    o->decision = d;
    o->action = o->by_name && o->name_ok ? FILTER_ACT_DIAL_NAME : FILTER_ACT_DIAL_ADDR;
}

/* A block: refused with ans; in audit let through (by name when there is a
 * dialable one, else to the address) unless hard or there is nowhere to go. */
static void dec_block(const filter_conn_input_t *in, filter_conn_out_t *o, filter_decision_t d,
                      filter_answer_t ans)
{
    bool to_name = o->by_name && o->name_ok;
    o->decision = d;
    o->answer = ans;
    if (in->audit && !filter_reason_is_hard(d.reason) && (to_name || o->addr)) {
        o->decision.audit = true;
        o->action = to_name ? FILTER_ACT_DIAL_NAME : FILTER_ACT_DIAL_ADDR;
        return;
    }
    o->action = FILTER_ACT_REFUSE;
}

static void dec_block_why(const filter_conn_input_t *in, filter_conn_out_t *o, filter_reason_t r,
                          filter_answer_t ans)
{
    dec_block(in, o, dec_make(FILTER_BLOCK, r, NULL), ans);
}

/* The name as the connection's: normalised into name_buf, or the raw bytes
 * (for the log) when it does not normalise. */
static bool dec_set_name(filter_conn_out_t *o, const char *raw, size_t len)
{
    size_t nl = 0;
    if (filter_name_normalize(raw, len, o->name_buf, &nl) != FILTER_NAME_OK) {
        o->name = raw;
        o->name_len = len;
        o->name_ok = false;
        return false;
    }
    o->name = o->name_buf;
    o->name_len = nl;
    o->name_ok = true;
    return true;
}

/* Steps 1 and 2: a normalised name on the port (the tls and http listeners
 * route by it even with filtering off). */
static void dec_name(const filter_policy_t *p, const filter_conn_input_t *in, filter_conn_out_t *o,
                     filter_answer_t ans)
{
    o->by_name = true;
    if (!filter_policy_filtering(p)) {
        dec_allow(o, dec_make(FILTER_ALLOW, FILTER_REASON_FILTER_OFF, NULL));
        return;
    }
    /* o->name was normalised by dec_set_name. */
    filter_decision_t d = o->name_ok
                              ? filter_match_name_normalized(p, o->name, o->name_len, in->port)
                              : filter_match_name(p, o->name, o->name_len, in->port);
    if (d.verdict == FILTER_ALLOW)
        dec_allow(o, d);
    else
        dec_block(in, o, d, ans);
}

/* An address by §2.4 and the address rules (step 2's IP literal Host). */
static void dec_addr(const filter_policy_t *p, const filter_conn_input_t *in, filter_conn_out_t *o,
                     const filter_addr_t *a, filter_answer_t ans)
{
    filter_decision_t r = filter_check_refused(p, a, in->port);
    if (r.verdict == FILTER_BLOCK) {
        dec_block(in, o, r, ans);
        return;
    }
    if (!filter_policy_filtering(p)) {
        dec_allow(o, dec_make(FILTER_ALLOW, FILTER_REASON_FILTER_OFF, NULL));
        return;
    }
    filter_decision_t d = filter_match_addr(p, a, in->port);
    if (d.verdict == FILTER_ALLOW)
        dec_allow(o, d);
    else
        dec_block(in, o, d, ans);
}

typedef struct dec_mem_ctx {
    const filter_policy_t *p;
    int port;
    filter_conn_out_t *o;
    filter_decision_t d;
    bool found;
} dec_mem_ctx_t;

/* Step 3: the first name this client resolved to the destination whose
 * rule lists the port. */
static bool dec_mem_each(const char *name, size_t len, void *arg)
{
    dec_mem_ctx_t *x = arg;
    if (len > FILTER_NAME_MAX)
        return true;
    filter_decision_t d = filter_match_name(x->p, name, len, x->port);
    if (d.verdict != FILTER_ALLOW)
        return true;
    memcpy(x->o->name_buf, name, len);
    x->o->name_buf[len] = '\0';
    x->o->name = x->o->name_buf;
    x->o->name_len = len;
    x->o->name_ok = true;
    x->d = d;
    x->found = true;
    return false;
}

/* A new connection: the tls and http listeners peek; a transparent one is
 * decided by its original destination (§2.4, filtering off, steps 0 and 3)
 * or peeks (steps 1, 2). */
static void dec_accept(const filter_policy_t *p, const filter_conn_input_t *in,
                       filter_conn_out_t *o)
{
    if (in->listener != FILTER_LISTENER_TRANSPARENT) {
        o->decision = dec_make(FILTER_BLOCK, FILTER_REASON_NOT_ALLOWED, NULL);
        o->action =
            in->listener == FILTER_LISTENER_TLS ? FILTER_ACT_PEEK_TLS : FILTER_ACT_PEEK_HTTP;
        return;
    }
    if (!in->dest) {
        dec_block_why(in, o, FILTER_REASON_NO_ADDRESS, FILTER_ANSWER_RESET);
        return;
    }
    /* §2.4, filtering on or off. */
    filter_decision_t r = filter_check_refused(p, in->dest, in->port);
    if (r.verdict == FILTER_BLOCK) {
        dec_block(in, o, r, FILTER_ANSWER_RESET);
        return;
    }
    if (!filter_policy_filtering(p)) { /* no peek, straight to the original destination */
        dec_allow(o, dec_make(FILTER_ALLOW, FILTER_REASON_FILTER_OFF, NULL));
        return;
    }
    /* Step 0. */
    filter_decision_t a = filter_match_addr(p, in->dest, in->port);
    if (a.verdict == FILTER_ALLOW) {
        dec_allow(o, a);
        return;
    }
    bool tls = dec_port_in(in->tls_ports, in->n_tls_ports, in->port);
    if (!tls && !dec_port_in(in->http_ports, in->n_http_ports, in->port)) {
        /* Step 3: admitted to the address the guest chose, which is where
         * the name pointed for it. */
        dec_mem_ctx_t x = {.p = p, .port = in->port, .o = o};
        if (in->names_for)
            in->names_for(in->names_arg, dec_mem_each, &x);
        if (x.found)
            dec_allow(o, x.d);
        else
            dec_block(in, o, a, FILTER_ANSWER_RESET);
        return;
    }
    /* Steps 1 and 2: peek. */
    o->decision = a;
    o->action = tls ? FILTER_ACT_PEEK_TLS : FILTER_ACT_PEEK_HTTP;
}

/* Step 1: a complete ClientHello. RFC 6066 §3: HostName is a DNS name,
 * never an address; an IP literal (or anything that does not normalise) is
 * bad-sni. */
static void dec_tls(const filter_policy_t *p, const filter_conn_input_t *in, filter_conn_out_t *o)
{
    const filter_tls_hello_t *h = in->hello;
    switch (in->tls) {
    case FILTER_TLS_SNI:
        if (!dec_set_name(o, h->sni, h->sni_len)) {
            dec_block_why(in, o, FILTER_REASON_BAD_SNI, FILTER_ANSWER_ALERT);
            return;
        }
        dec_name(p, in, o, FILTER_ANSWER_ALERT);
        return;
    case FILTER_TLS_MULTI_SNI:
        if (h->sni_len) {
            o->name = h->sni;
            o->name_len = h->sni_len;
        }
        dec_block_why(in, o, FILTER_REASON_MULTI_SNI, FILTER_ANSWER_ALERT);
        return;
    case FILTER_TLS_NO_SNI:
    case FILTER_TLS_BAD_SNI:
        dec_block_why(in, o, filter_tls_result_reason(in->tls), FILTER_ANSWER_ALERT);
        return;
    case FILTER_TLS_NEED_MORE:
    case FILTER_TLS_NOT_TLS:
    case FILTER_TLS_TOO_BIG:
        break;
    }
    dec_block_why(in, o, filter_tls_result_reason(in->tls), FILTER_ANSWER_RESET);
}

/* Step 2: a complete request head. */
static void dec_http(const filter_policy_t *p, const filter_conn_input_t *in, filter_conn_out_t *o)
{
    const filter_http_head_t *h = in->head;
    if (in->http != FILTER_HTTP_NAME) {
        bool complete = in->http == FILTER_HTTP_NO_NAME || in->http == FILTER_HTTP_MULTI_HOST ||
                        in->http == FILTER_HTTP_BAD_NAME;
        dec_block_why(in, o, filter_http_result_reason(in->http),
                      complete ? FILTER_ANSWER_403 : FILTER_ANSWER_RESET);
        return;
    }
    if (h->is_addr) {
        o->name = h->name;
        o->name_len = h->name_len;
        if (h->host_conflict) {
            dec_block_why(in, o, FILTER_REASON_HOST_CONFLICT, FILTER_ANSWER_403);
            return;
        }
        /* An IP literal: decided by the address rules, dialled as it is. */
        o->addr = &h->addr;
        dec_addr(p, in, o, &h->addr, FILTER_ANSWER_403);
        return;
    }
    if (!dec_set_name(o, h->name, h->name_len)) {
        dec_block_why(in, o, FILTER_REASON_BAD_HOST, FILTER_ANSWER_403);
        return;
    }
    /* Domain fronting: the absolute URI names one host, Host another; the
     * upstream would see both. */
    if (h->host_conflict) {
        o->by_name = true;
        dec_block_why(in, o, FILTER_REASON_HOST_CONFLICT, FILTER_ANSWER_403);
        return;
    }
    dec_name(p, in, o, FILTER_ANSWER_403);
}

/* What a reload makes of an open connection, from what it was admitted by. */
static filter_decision_t dec_recheck(const filter_policy_t *p, const filter_conn_input_t *in)
{
    if (in->dest) {
        filter_decision_t r = filter_check_refused(p, in->dest, in->port);
        if (r.verdict == FILTER_BLOCK)
            return r;
    }
    if (!filter_policy_filtering(p))
        return dec_make(FILTER_ALLOW, FILTER_REASON_FILTER_OFF, NULL);
    if (in->name) {
        filter_decision_t d = filter_match_name(p, in->name, in->name_len, in->port);
        /* Admitted by its original address (step 0) and not by name. */
        if (d.verdict == FILTER_BLOCK && in->dest && !in->by_name) {
            filter_decision_t a = filter_match_addr(p, in->dest, in->port);
            if (a.verdict == FILTER_ALLOW)
                return a;
        }
        return d;
    }
    if (in->dest)
        return filter_match_addr(p, in->dest, in->port);
    if (in->addr) /* an IP literal Host */
        return filter_match_addr(p, in->addr, in->port);
    return dec_make(FILTER_BLOCK, FILTER_REASON_NOT_ALLOWED, NULL);
}

void filter_decide_conn(const filter_policy_t *p, const filter_conn_input_t *in,
                        filter_conn_out_t *out)
{
    out->action = FILTER_ACT_REFUSE;
    out->answer = FILTER_ANSWER_RESET;
    out->decision = dec_make(FILTER_BLOCK, FILTER_REASON_NOT_ALLOWED, NULL);
    out->name = NULL;
    out->name_len = 0;
    out->name_ok = false;
    out->by_name = false;
    out->addr = in->dest;
    out->name_buf[0] = '\0';

    switch (in->stage) {
    case FILTER_STAGE_ACCEPT:
        dec_accept(p, in, out);
        return;
    case FILTER_STAGE_TLS:
        dec_tls(p, in, out);
        return;
    case FILTER_STAGE_HTTP:
        dec_http(p, in, out);
        return;
    case FILTER_STAGE_PEEK_FAILED:
        dec_block_why(in, out, in->failed, FILTER_ANSWER_RESET);
        return;
    case FILTER_STAGE_NAME:
        if (!dec_set_name(out, in->name, in->name_len)) {
            dec_block_why(in, out, FILTER_REASON_BAD_NAME, FILTER_ANSWER_RESET);
            return;
        }
        dec_name(p, in, out, FILTER_ANSWER_RESET);
        return;
    case FILTER_STAGE_RECHECK: {
        out->name = in->name;
        out->name_len = in->name ? in->name_len : 0;
        out->name_ok = in->name != NULL;
        out->by_name = in->by_name;
        if (!out->addr)
            out->addr = in->addr;
        filter_decision_t d = dec_recheck(p, in);
        if (d.verdict == FILTER_BLOCK && (!in->audit || filter_reason_is_hard(d.reason))) {
            out->decision = d;
            return; /* REFUSE */
        }
        d.audit = d.verdict == FILTER_BLOCK;
        dec_allow(out, d);
        return;
    }
    }
}

filter_decision_t filter_decide_dial(const filter_policy_t *p, bool audit, int port,
                                     filter_decision_t admitted, filter_addr_t *addrs, size_t *n)
{
    bool filtering = filter_policy_filtering(p);
    filter_reason_t last = FILTER_REASON_NO_ADDRESS;
    size_t kept = 0, n_private = 0;
    /* Refused ones go; private ones stay for now, in case they are all
     * there is and audit lets them through. */
    for (size_t i = 0; i < *n; i++) {
        filter_decision_t r = filter_check_refused(p, &addrs[i], port);
        if (r.verdict == FILTER_BLOCK) {
            last = r.reason;
            continue;
        }
        if (filtering && filter_check_private(p, &addrs[i])) {
            last = FILTER_REASON_PRIVATE_RANGE;
            n_private++;
        }
        addrs[kept++] = addrs[i];
    }
    *n = kept;
    if (n_private == 0 && kept > 0)
        return admitted;
    if (n_private == kept) {
        if (kept > 0 && audit) {
            filter_decision_t d = admitted;
            d.verdict = FILTER_BLOCK;
            d.reason = FILTER_REASON_PRIVATE_RANGE;
            d.audit = true;
            return d;
        }
        *n = 0;
        return filter_decide_failed(admitted, last);
    }
    /* Public and private: only the public ones are dialled. */
    size_t w = 0;
    for (size_t i = 0; i < kept; i++)
        if (!filter_check_private(p, &addrs[i]))
            addrs[w++] = addrs[i];
    *n = w;
    return admitted;
}

filter_decision_t filter_decide_failed(filter_decision_t admitted, filter_reason_t why)
{
    filter_decision_t d = admitted;
    d.verdict = FILTER_BLOCK;
    d.reason = why;
    d.audit = admitted.audit && !filter_reason_is_hard(why);
    return d;
}

/* ---- DNS ------------------------------------------------------------------------ */

filter_dns_out_t filter_decide_dns(const filter_policy_t *p, const filter_dns_input_t *in)
{
    filter_dns_out_t o = {.action = FILTER_DNS_RESOLVE};
    bool filtering = filter_policy_filtering(p);
    if (filtering && in->canary) {
        o.action = FILTER_DNS_CANARY;
        o.decision = dec_make(FILTER_BLOCK, FILTER_REASON_DOH_CANARY, NULL);
        return o;
    }
    if (filtering && in->not_host)
        o.decision = dec_make(FILTER_BLOCK, FILTER_REASON_BAD_NAME, NULL);
    else if (in->norm)
        o.decision = filter_match_name_normalized(p, in->norm, in->name_len, FILTER_ANY_PORT);
    else
        o.decision = filter_match_name(p, in->name, in->name_len, FILTER_ANY_PORT);
    if (o.decision.verdict == FILTER_BLOCK) {
        if (!in->audit) {
            o.action = FILTER_DNS_SINKHOLE; /* never upstream (SPEC §2.2, §6) */
            return o;
        }
        o.decision.audit = true;
    }
    return o;
}
