/* filter/decide.h: the connection and DNS decisions (SPEC §2.2, §2.3 steps
 * 0–6, §2.4, mode audit) as pure functions of what is known about a query or
 * a connection.
 *
 * No sockets, no loop, no allocation: the caller gathers the facts (the
 * original destination, the peeked ClientHello or request head, the names
 * the DNS service told this client) and does what the answer says (peek,
 * dial, refuse with a reset, an alert or a 403). The proxy and `moat
 * explain` ask the same function, so what explain prints is what a
 * connection gets.
 *
 * A connection is decided in stages, each a call to filter_decide_conn():
 *   ACCEPT       transparent: §2.4, filtering off, step 0, step 3; otherwise
 *                which peek (step 1 or 2); tls and http listeners: peek.
 *   TLS / HTTP   the ClientHello or request head is complete (steps 1, 2).
 *   PEEK_FAILED  the peek ended without one (timeout, closed, too big).
 *   NAME         a name given directly (explain, and proxies told a name).
 *   RECHECK      a reload: the recorded name or address under a new policy.
 * and once it is allowed, filter_decide_dial() picks the addresses a name
 * may be dialled at (step 4, §2.4) and filter_decide_failed() says how a
 * failed dial is logged.
 *
 * Audit (SPEC §2, mode: audit): a block is decided and logged as in enforce,
 * but the connection goes on (by name when it has one, else to its address)
 * unless its reason is hard (filter_reason_is_hard: a refused range or one
 * of moat's own listeners, never let through) or it has nowhere to go.
 */
#ifndef MOAT_FILTER_DECIDE_H
#define MOAT_FILTER_DECIDE_H

#include <stdbool.h>
#include <stddef.h>

#include "filter/addr.h"
#include "filter/http_head.h"
#include "filter/name.h"
#include "filter/policy.h"
#include "filter/rule.h"
#include "filter/tls_hello.h"

/* True for reasons audit mode never lets through: refused ranges and moat's
 * own listeners (a metadata endpoint, or a loop back into moat). */
bool filter_reason_is_hard(filter_reason_t r);

/* The reason for a ClientHello or request head reader's result (the
 * results that carry a name give not-tls / not-http: callers decide those
 * by the name). */
filter_reason_t filter_tls_result_reason(filter_tls_result_t r);
filter_reason_t filter_http_result_reason(filter_http_result_t r);

/* ---- connections ---------------------------------------------------------------- */

/* The listener a connection came in on (SPEC §2.3). */
typedef enum filter_listener {
    FILTER_LISTENER_TRANSPARENT,
    FILTER_LISTENER_TLS,
    FILTER_LISTENER_HTTP,
} filter_listener_t;

typedef enum filter_conn_stage {
    FILTER_STAGE_ACCEPT,
    FILTER_STAGE_TLS,
    FILTER_STAGE_HTTP,
    FILTER_STAGE_PEEK_FAILED,
    FILTER_STAGE_NAME,
    FILTER_STAGE_RECHECK,
} filter_conn_stage_t;

/* Step 3's memory: calls each(name, len, each_arg) for every live name this
 * client resolved to the destination through moat (normalised, valid for
 * the call only), until each returns false. */
typedef bool (*filter_name_each_cb)(const char *name, size_t len, void *each_arg);
typedef void (*filter_names_for_cb)(void *arg, filter_name_each_cb each, void *each_arg);

/* What is known about a connection (pointers borrowed for the call). */
typedef struct filter_conn_input {
    filter_conn_stage_t stage;
    filter_listener_t listener;
    bool audit; /* mode: audit */
    /* Destination port: the original one on a transparent listener, 443 on
     * tls, 80 on http; FILTER_ANY_PORT for explain without a port. */
    int port;
    /* Transparent: the original destination (NULL when the socket did not
     * tell it). NULL on the tls and http listeners. */
    const filter_addr_t *dest;
    const filter_port_range_t *tls_ports; /* proxy.tls_ports */
    size_t n_tls_ports;
    const filter_port_range_t *http_ports; /* proxy.http_ports */
    size_t n_http_ports;
    /* ACCEPT: step 3's memory, or NULL for none. */
    filter_names_for_cb names_for;
    void *names_arg;
    /* TLS: the reader's result and what it read. */
    filter_tls_result_t tls;
    const filter_tls_hello_t *hello;
    /* HTTP: the reader's result and what it read. */
    filter_http_result_t http;
    const filter_http_head_t *head;
    /* PEEK_FAILED: why (client-closed, peek-timeout, hello-too-big,
     * head-too-big, dial-failed). */
    filter_reason_t failed;
    /* NAME: the name as given (guest bytes). RECHECK: the normalised name
     * the connection was decided or logged by, or NULL. */
    const char *name;
    size_t name_len;
    /* RECHECK: what the connection was admitted by: its name (by_name), else
     * dest, else addr (an IP literal Host). */
    bool by_name;
    const filter_addr_t *addr;
} filter_conn_input_t;

typedef enum filter_action {
    FILTER_ACT_PEEK_TLS,  /* read the ClientHello, then decide again (TLS) */
    FILTER_ACT_PEEK_HTTP, /* read the request head, then decide again (HTTP) */
    FILTER_ACT_DIAL_NAME, /* resolve the name and dial it (step 4) */
    FILTER_ACT_DIAL_ADDR, /* dial addr (the original destination or the Host literal) */
    FILTER_ACT_REFUSE,    /* log the block, answer, close */
} filter_action_t;

/* What a refused client gets before the close (SPEC §2.3 step 5). */
typedef enum filter_answer {
    FILTER_ANSWER_RESET,
    FILTER_ANSWER_ALERT, /* TLS access_denied */
    FILTER_ANSWER_403,
} filter_answer_t;

/* The answer. Pointers point into the input or into this struct (name_buf):
 * valid as long as both are and the struct is not copied. */
typedef struct filter_conn_out {
    filter_action_t action;
    filter_answer_t answer;     /* REFUSE */
    filter_decision_t decision; /* PEEK_*: what the address rules alone said */
    /* The name the connection is known by from now on (logged; dialled when
     * DIAL_NAME), or NULL when this stage found none. name_ok: normalised
     * (dialable), else raw guest bytes for the log. */
    const char *name;
    size_t name_len;
    bool name_ok;
    bool by_name; /* decided by the name (a reload re-decides it by name) */
    /* The destination address from now on (dialled when DIAL_ADDR), or NULL
     * when this stage has none (tls and http listeners, by name). */
    const filter_addr_t *addr;
    char name_buf[FILTER_NAME_MAX + 1];
} filter_conn_out_t;

/* Decide a connection at one stage (see the top). RECHECK answers REFUSE
 * when the connection must be cut (reason: the new decision's; the caller
 * logs policy-reload), otherwise DIAL_NAME / DIAL_ADDR with the decision it
 * goes on under. */
void filter_decide_conn(const filter_policy_t *p, const filter_conn_input_t *in,
                        filter_conn_out_t *out);

/* Step 4 and §2.4 on the addresses an allowed name resolved to: keeps in
 * addrs[0..*n) (in order) those that may be dialled on port, drops refused
 * ones and, with filtering on, private ones no address rule covers. Returns
 * the decision to go on with: admitted when addresses are left; in audit,
 * when only private ones were there, those are kept and the decision is
 * BLOCK/private-range audited (rule: admitted's); else *n is 0 and the
 * decision is BLOCK with the last dropped address's reason (no-address for
 * an empty answer). */
filter_decision_t filter_decide_dial(const filter_policy_t *p, bool audit, int port,
                                     filter_decision_t admitted, filter_addr_t *addrs, size_t *n);

/* An admitted connection that could not be made (why: dial-failed,
 * connect-timeout, no-address, or filter_decide_dial's reason): BLOCK/why
 * with admitted's rule, still marked audited when admitted was, unless why
 * is hard. */
filter_decision_t filter_decide_failed(filter_decision_t admitted, filter_reason_t why);

/* ---- DNS ------------------------------------------------------------------------ */

typedef struct filter_dns_input {
    bool audit;       /* mode: audit */
    bool canary;      /* the question is use-application-dns.net */
    bool not_host;    /* the name is not a host name (dns_query_t.not_host) */
    const char *name; /* presentation form, as asked */
    size_t name_len;
    /* The same name as filter_name_normalize() returns it (name_len octets),
     * when the caller has it already (dns_query_t.lname), or NULL. */
    const char *norm;
} filter_dns_input_t;

typedef enum filter_dns_action {
    FILTER_DNS_CANARY,   /* answer NXDOMAIN: the browser keeps DoH off */
    FILTER_DNS_SINKHOLE, /* answer from the sinkhole, never upstream */
    FILTER_DNS_RESOLVE,  /* answer from the cache or upstream */
} filter_dns_action_t;

typedef struct filter_dns_out {
    filter_dns_action_t action;
    filter_decision_t decision;
} filter_dns_out_t;

/* Decide a DNS question (SPEC §2.2): with filtering on, the canary and names
 * that are not host names are blocked; otherwise any name rule makes a name
 * resolvable. A block is sinkholed, or resolved and marked audited in audit
 * mode (the canary is answered in either mode). */
filter_dns_out_t filter_decide_dns(const filter_policy_t *p, const filter_dns_input_t *in);

#endif
