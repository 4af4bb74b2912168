/* tests/filter/test_decide.c: the connection and DNS decisions (SPEC §2.2,
 * §2.3 steps 0–6, §2.4, mode audit) as tables: what filter_decide_conn,
 * filter_decide_dial, filter_decide_failed and filter_decide_dns answer for
 * each step and reason, without a socket. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "filter/decide.h"

/* ---- policies ---------------------------------------------------------------------- */

typedef struct spec {
    const char *text;
    const char *ports; /* NULL, or one port or range "8000-8100" */
} spec_t;

static const filter_port_range_t tls_ports[] = {{443, 443}};
static const filter_port_range_t http_ports[] = {{80, 80}, {8080, 8080}};

/* The addresses §2.4 always refuses, v4 and v6. */
static const char *const refused[] = {
    "127.0.0.1", "::1",       "169.254.169.254", "fe80::1",         "0.0.0.0",
    "::",        "224.0.0.1", "ff02::1",         "255.255.255.255",
};
#define N_REFUSED (sizeof refused / sizeof refused[0])

enum {
    P_MAIN,  /* filtering on: the rules below */
    P_OFF,   /* no `allow` key */
    P_NAMED, /* address rules naming every refused address and the own listeners */
    P_V6,    /* address rules naming IPv6 forms of IPv4 addresses (SPEC §2.5) */
    P_COUNT,
};

static const spec_t main_rules[] = {
    {"allowed.example", NULL}, {"*.wild.example", NULL}, {"ssh.example", "22"},
    {"198.51.100.0/24", NULL}, {"203.0.113.7", "8443"},  {"10.9.0.0/16", NULL},
    {"private.example", NULL},
};

/* The IPv6 forms that carry an always-refused IPv4 address (SPEC §2.5). */
static const char *const refused_v6_forms[] = {
    "::127.0.0.1",     "::169.254.169.254",  "64:ff9b::a9fe:a9fe",
    "64:ff9b::7f00:1", "2002:7f00:1::",      "2002:a9fe:a9fe::1",
    "2002::", /* 6to4 of 0.0.0.0 */
    "::224.0.0.1",     "64:ff9b::ffff:ffff",
};
/* The P_V6 rule that covers each of refused_v6_forms. */
static const char *const refused_v6_rule[] = {
    "::127.0.0.1",     "::169.254.169.254", "64:ff9b::a9fe:a9fe",
    "64:ff9b::7f00:1", "2002:7f00::/24",    "2002:a9fe::/32",
    "2002::/32",       "::224.0.0.1",       "64:ff9b::ffff:ffff",
};
_Static_assert(sizeof refused_v6_rule == sizeof refused_v6_forms, "one rule per form");
#define N_REFUSED_V6_FORMS (sizeof refused_v6_forms / sizeof refused_v6_forms[0])

static const spec_t v6_rules[] = {
    {"::127.0.0.1", NULL},        {"64:ff9b::a9fe:a9fe", NULL}, {"2002:7f00::/24", NULL},
    {"2002::/32", NULL},          {"::169.254.169.254", NULL},  {"2002:a9fe::/32", NULL},
    {"::224.0.0.1", NULL},        {"64:ff9b::ffff:ffff", NULL}, {"64:ff9b::7f00:1", NULL},
    {"64:ff9b::a00:0/120", NULL}, {"64:ff9b::c612:1", "8443"},  {"allowed.example", NULL},
};

static filter_policy_t *pol[P_COUNT];

static void own_listener(struct sockaddr_storage *ss, const char *addr, uint16_t port)
{
    memset(ss, 0, sizeof *ss);
    if (strchr(addr, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        cr_assert_eq(inet_pton(AF_INET6, addr, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        cr_assert_eq(inet_pton(AF_INET, addr, &s4->sin_addr), 1);
    }
}

static filter_policy_t *compile(const spec_t *specs, size_t n, bool filtering)
{
    filter_rule_t rules[32];
    filter_port_range_t ports[32];
    cr_assert(n <= 32);
    memset(rules, 0, sizeof rules);
    for (size_t i = 0; i < n; i++) {
        filter_rule_t *r = &rules[i];
        const char *t = specs[i].text;
        r->text = t;
        r->line = (unsigned)(i + 1);
        r->col = 3;
        if (filter_text_looks_like_addr(t, strlen(t))) {
            r->kind = FILTER_RULE_ADDR;
            cr_assert_eq(filter_prefix_parse(t, strlen(t), &r->prefix, NULL), 0, "%s", t);
        } else {
            r->kind = FILTER_RULE_NAME;
            cr_assert_eq(filter_pattern_parse(t, strlen(t), &r->pattern), 0, "%s", t);
        }
        if (specs[i].ports) {
            unsigned lo = 0, hi = 0;
            int k = sscanf(specs[i].ports, "%u-%u", &lo, &hi);
            ports[i] = (filter_port_range_t){(uint16_t)lo, (uint16_t)(k == 2 ? hi : lo)};
            r->ports = &ports[i];
            r->n_ports = 1;
        }
    }
    struct sockaddr_storage own[2];
    own_listener(&own[0], "198.18.0.1", 8443);
    own_listener(&own[1], "2001:db8::1", 8443);
    filter_policy_input_t in = {
        .filtering = filtering,
        .rules = rules,
        .n_rules = n,
        .tls_ports = tls_ports,
        .n_tls_ports = 1,
        .http_ports = http_ports,
        .n_http_ports = 2,
        .own = own,
        .n_own = 2,
    };
    filter_policy_t *p = NULL;
    cr_assert_eq(filter_policy_compile(&in, &p), 0);
    return p;
}

static void setup(void)
{
    pol[P_MAIN] = compile(main_rules, sizeof main_rules / sizeof main_rules[0], true);
    pol[P_OFF] = compile(NULL, 0, false);
    spec_t named[N_REFUSED + 2];
    for (size_t i = 0; i < N_REFUSED; i++)
        named[i] = (spec_t){refused[i], NULL};
    named[N_REFUSED] = (spec_t){"198.18.0.1", "8443"};
    named[N_REFUSED + 1] = (spec_t){"2001:db8::1", "8443"};
    pol[P_NAMED] = compile(named, N_REFUSED + 2, true);
    pol[P_V6] = compile(v6_rules, sizeof v6_rules / sizeof v6_rules[0], true);
}

static void teardown(void)
{
    for (int i = 0; i < P_COUNT; i++) {
        filter_policy_free(pol[i]);
        pol[i] = NULL;
    }
}

TestSuite(decide, .init = setup, .fini = teardown);

static filter_addr_t A(const char *s)
{
    filter_addr_t a;
    cr_assert_eq(filter_addr_parse(s, strlen(s), &a), 0, "%s", s);
    return a;
}

static bool same_addr(const filter_addr_t *a, const char *s)
{
    filter_addr_t b = A(s);
    return a->family == b.family && memcmp(a->bytes, b.bytes, sizeof b.bytes) == 0;
}

/* ---- connections ------------------------------------------------------------------- */

enum { T, L_TLS, L_HTTP }; /* listener, as rows name it */

typedef struct row {
    const char *what;
    int pol;
    filter_conn_stage_t stage;
    int listener;
    bool audit;
    int port;
    const char *dest; /* transparent: the original destination */
    const char *mem;  /* ACCEPT: a name this client resolved to dest */
    /* TLS: result and SNI; HTTP: result and Host (literal when it parses
     * as an address); NAME, RECHECK: the name. */
    int result;
    const char *name;
    bool conflict; /* HTTP: host_conflict */
    filter_reason_t failed;
    bool by_name;     /* RECHECK */
    const char *addr; /* RECHECK: the IP literal Host */
    /* expected */
    filter_action_t act;
    filter_answer_t ans; /* REFUSE only */
    filter_verdict_t v;
    filter_reason_t r;
    bool audited;
    const char *rule;   /* the deciding rule's text, or NULL */
    const char *dialed; /* DIAL_ADDR: the address, DIAL_NAME: the name (normalised) */
} row_t;

#define PEEK_TLS  FILTER_ACT_PEEK_TLS
#define PEEK_HTTP FILTER_ACT_PEEK_HTTP
#define DIAL_NAME FILTER_ACT_DIAL_NAME
#define DIAL_ADDR FILTER_ACT_DIAL_ADDR
#define REFUSE    FILTER_ACT_REFUSE
#define RESET     FILTER_ANSWER_RESET
#define ALERT     FILTER_ANSWER_ALERT
#define H403      FILTER_ANSWER_403
#define ALLOW     FILTER_ALLOW
#define BLOCK     FILTER_BLOCK
#define R(x)      FILTER_REASON_##x

#define ACCEPT  FILTER_STAGE_ACCEPT
#define S_TLS   FILTER_STAGE_TLS
#define S_HTTP  FILTER_STAGE_HTTP
#define FAILED  FILTER_STAGE_PEEK_FAILED
#define S_NAME  FILTER_STAGE_NAME
#define RECHECK FILTER_STAGE_RECHECK

static const char *mem_name;

static void mem_names(void *arg, filter_name_each_cb each, void *each_arg)
{
    (void)arg;
    if (mem_name)
        (void)each(mem_name, strlen(mem_name), each_arg);
}

static const char *act_str(filter_action_t a)
{
    static const char *const s[] = {"peek-tls", "peek-http", "dial-name", "dial-addr", "refuse"};
    return s[a];
}

static void check_row(const row_t *w)
{
    filter_addr_t dest, lit;
    filter_tls_hello_t hello;
    filter_http_head_t head;
    filter_conn_input_t in = {
        .stage = w->stage,
        .listener = w->listener == L_TLS    ? FILTER_LISTENER_TLS
                    : w->listener == L_HTTP ? FILTER_LISTENER_HTTP
                                            : FILTER_LISTENER_TRANSPARENT,
        .audit = w->audit,
        .port = w->port,
        .tls_ports = tls_ports,
        .n_tls_ports = 1,
        .http_ports = http_ports,
        .n_http_ports = 2,
        .names_for = mem_names,
    };
    if (w->dest) {
        dest = A(w->dest);
        in.dest = &dest;
    }
    mem_name = w->mem;
    switch (w->stage) {
    case FILTER_STAGE_TLS:
        memset(&hello, 0, sizeof hello);
        if (w->name) {
            snprintf(hello.sni, sizeof hello.sni, "%s", w->name);
            hello.sni_len = strlen(w->name);
        }
        in.tls = (filter_tls_result_t)w->result;
        in.hello = &hello;
        break;
    case FILTER_STAGE_HTTP:
        memset(&head, 0, sizeof head);
        if (w->name) {
            snprintf(head.name, sizeof head.name, "%s", w->name);
            head.name_len = strlen(w->name);
            head.is_addr = filter_addr_parse(w->name, head.name_len, &head.addr) == 0;
        }
        head.host_conflict = w->conflict;
        in.http = (filter_http_result_t)w->result;
        in.head = &head;
        break;
    case FILTER_STAGE_PEEK_FAILED:
        in.failed = w->failed;
        break;
    case FILTER_STAGE_NAME:
    case FILTER_STAGE_RECHECK:
        in.name = w->name;
        in.name_len = w->name ? strlen(w->name) : 0;
        in.by_name = w->by_name;
        if (w->addr) {
            lit = A(w->addr);
            in.addr = &lit;
        }
        break;
    case FILTER_STAGE_ACCEPT:
        break;
    }
    filter_conn_out_t o;
    memset(&o, 0x5a, sizeof o);
    filter_decide_conn(pol[w->pol], &in, &o);
    const filter_decision_t *d = &o.decision;
    cr_assert_eq(o.action, w->act, "%s: action %s, want %s (reason %s)", w->what, act_str(o.action),
                 act_str(w->act), filter_reason_str(d->reason));
    if (w->act == REFUSE)
        cr_assert_eq(o.answer, w->ans, "%s: answer %d, want %d", w->what, o.answer, w->ans);
    cr_assert_eq(d->verdict, w->v, "%s: verdict", w->what);
    cr_assert_eq(d->reason, w->r, "%s: reason %s, want %s", w->what, filter_reason_str(d->reason),
                 filter_reason_str(w->r));
    cr_assert_eq(d->audit, w->audited, "%s: audit %d", w->what, d->audit);
    if (w->rule) {
        cr_assert_not_null(d->rule, "%s: no rule, want %s", w->what, w->rule);
        cr_assert_str_eq(d->rule->text, w->rule, "%s", w->what);
    } else {
        cr_assert_null(d->rule, "%s: rule %s", w->what, d->rule ? d->rule->text : "");
    }
    if (w->act == DIAL_NAME) {
        cr_assert(o.name_ok && o.by_name, "%s", w->what);
        cr_assert_eq(o.name_len, strlen(o.name), "%s", w->what);
        if (w->dialed)
            cr_assert_str_eq(o.name, w->dialed, "%s", w->what);
    }
    if (w->act == DIAL_ADDR) {
        cr_assert_not_null(o.addr, "%s: dial-addr without an address", w->what);
        if (w->dialed)
            cr_assert(same_addr(o.addr, w->dialed), "%s: dials elsewhere", w->what);
    }
}

static void check_rows(const row_t *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        check_row(&rows[i]);
}

#define CHECK_ROWS(rows) check_rows((rows), sizeof(rows) / sizeof((rows)[0]))

Test(decide, step0_address_rules_admit_without_peeking)
{
    static const row_t rows[] = {
        {"covered, any port", P_MAIN, ACCEPT, T, false, 5000, "198.51.100.9", .act = DIAL_ADDR,
         .v = ALLOW, .r = R(ALLOWLIST), .rule = "198.51.100.0/24", .dialed = "198.51.100.9"},
        {"covered on a tls port: no peek", P_MAIN, ACCEPT, T, false, 443, "198.51.100.9",
         .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST), .rule = "198.51.100.0/24"},
        {"covered on an http port: no peek", P_MAIN, ACCEPT, T, false, 80, "198.51.100.9",
         .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST), .rule = "198.51.100.0/24"},
        {"rule with its port", P_MAIN, ACCEPT, T, false, 8443, "203.0.113.7", .act = DIAL_ADDR,
         .v = ALLOW, .r = R(ALLOWLIST), .rule = "203.0.113.7"},
        {"rule without this port, other port", P_MAIN, ACCEPT, T, false, 9000, "203.0.113.7",
         .act = REFUSE, .ans = RESET, .v = BLOCK, .r = R(PORT), .rule = "203.0.113.7"},
        {"rule without this port, tls port: peek", P_MAIN, ACCEPT, T, false, 443, "203.0.113.7",
         .act = PEEK_TLS, .v = BLOCK, .r = R(PORT), .rule = "203.0.113.7"},
        {"private address covered by a rule", P_MAIN, ACCEPT, T, false, 5432, "10.9.3.4",
         .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST), .rule = "10.9.0.0/16"},
    };
    CHECK_ROWS(rows);
}

Test(decide, steps1_2_tls_and_http_ports_peek)
{
    static const row_t rows[] = {
        {"tls port", P_MAIN, ACCEPT, T, false, 443, "192.0.2.1", .act = PEEK_TLS, .v = BLOCK,
         .r = R(NOT_ALLOWED)},
        {"http port", P_MAIN, ACCEPT, T, false, 80, "192.0.2.1", .act = PEEK_HTTP, .v = BLOCK,
         .r = R(NOT_ALLOWED)},
        {"second http port", P_MAIN, ACCEPT, T, false, 8080, "192.0.2.1", .act = PEEK_HTTP,
         .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"audit peeks too", P_MAIN, ACCEPT, T, true, 443, "192.0.2.1", .act = PEEK_TLS, .v = BLOCK,
         .r = R(NOT_ALLOWED)},
        {"tls listener", P_MAIN, ACCEPT, L_TLS, false, 443, NULL, .act = PEEK_TLS, .v = BLOCK,
         .r = R(NOT_ALLOWED)},
        {"http listener", P_MAIN, ACCEPT, L_HTTP, false, 80, NULL, .act = PEEK_HTTP, .v = BLOCK,
         .r = R(NOT_ALLOWED)},
        {"tls listener, filtering off: still routes by name", P_OFF, ACCEPT, L_TLS, false, 443,
         NULL, .act = PEEK_TLS, .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"http listener, filtering off", P_OFF, ACCEPT, L_HTTP, false, 80, NULL, .act = PEEK_HTTP,
         .v = BLOCK, .r = R(NOT_ALLOWED)},
    };
    CHECK_ROWS(rows);
}

Test(decide, step3_other_ports_by_address_or_resolved_name)
{
    static const row_t rows[] = {
        {"name rule lists the port, resolved here", P_MAIN, ACCEPT, T, false, 22, "192.0.2.1",
         "ssh.example", .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST), .rule = "ssh.example",
         .dialed = "192.0.2.1"},
        {"resolved name, rule without the port", P_MAIN, ACCEPT, T, false, 23, "192.0.2.1",
         "ssh.example", .act = REFUSE, .ans = RESET, .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"resolved name on default ports only", P_MAIN, ACCEPT, T, false, 22, "192.0.2.1",
         "allowed.example", .act = REFUSE, .ans = RESET, .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"nothing resolved", P_MAIN, ACCEPT, T, false, 22, "192.0.2.1", .act = REFUSE, .ans = RESET,
         .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"audit: to the original destination", P_MAIN, ACCEPT, T, true, 22, "192.0.2.1",
         .act = DIAL_ADDR, .v = BLOCK, .r = R(NOT_ALLOWED), .audited = true, .dialed = "192.0.2.1"},
        {"no original destination", P_MAIN, ACCEPT, T, false, 0, NULL, .act = REFUSE, .ans = RESET,
         .v = BLOCK, .r = R(NO_ADDRESS)},
        {"no original destination, audit: nowhere to go", P_MAIN, ACCEPT, T, true, 0, NULL,
         .act = REFUSE, .ans = RESET, .v = BLOCK, .r = R(NO_ADDRESS)},
        {"explain without a port", P_MAIN, ACCEPT, T, false, FILTER_ANY_PORT, "192.0.2.1",
         .act = REFUSE, .ans = RESET, .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"explain without a port, covered", P_MAIN, ACCEPT, T, false, FILTER_ANY_PORT,
         "203.0.113.7", .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST), .rule = "203.0.113.7"},
    };
    CHECK_ROWS(rows);
}

Test(decide, filtering_off_splices_transparent_at_once)
{
    static const row_t rows[] = {
        {"tls port", P_OFF, ACCEPT, T, false, 443, "192.0.2.1", .act = DIAL_ADDR, .v = ALLOW,
         .r = R(FILTER_OFF), .dialed = "192.0.2.1"},
        {"other port", P_OFF, ACCEPT, T, false, 22, "192.0.2.1", .act = DIAL_ADDR, .v = ALLOW,
         .r = R(FILTER_OFF)},
        {"private address", P_OFF, ACCEPT, T, false, 22, "10.0.0.5", .act = DIAL_ADDR, .v = ALLOW,
         .r = R(FILTER_OFF)},
        {"§2.4 still applies", P_OFF, ACCEPT, T, false, 80, "127.0.0.1", .act = REFUSE,
         .ans = RESET, .v = BLOCK, .r = R(REFUSED_RANGE)},
        {"tls: any name, unchecked", P_OFF, S_TLS, L_TLS, false, 443, .result = FILTER_TLS_SNI,
         .name = "anything.example", .act = DIAL_NAME, .v = ALLOW, .r = R(FILTER_OFF),
         .dialed = "anything.example"},
        {"http: any name, unchecked", P_OFF, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NAME,
         .name = "anything.example", .act = DIAL_NAME, .v = ALLOW, .r = R(FILTER_OFF)},
        {"http: an IP literal", P_OFF, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NAME,
         .name = "192.0.2.9", .act = DIAL_ADDR, .v = ALLOW, .r = R(FILTER_OFF),
         .dialed = "192.0.2.9"},
        {"http: a refused IP literal", P_OFF, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NAME,
         .name = "169.254.169.254", .act = REFUSE, .ans = H403, .v = BLOCK, .r = R(REFUSED_RANGE)},
        {"no hello is still refused", P_OFF, S_TLS, L_TLS, false, 443, .result = FILTER_TLS_NO_SNI,
         .act = REFUSE, .ans = ALERT, .v = BLOCK, .r = R(NO_SNI)},
    };
    CHECK_ROWS(rows);
}

/* §2.4: each always-refused address, on a tls port, another port, with
 * filtering off and in audit; admitted when an address rule names it. */
Test(decide, refused_ranges_v4_and_v6)
{
    for (size_t i = 0; i < N_REFUSED; i++) {
        const char *a = refused[i];
        const row_t rows[] = {
            {a, P_MAIN, ACCEPT, T, false, 443, a, .act = REFUSE, .ans = RESET, .v = BLOCK,
             .r = R(REFUSED_RANGE)},
            {a, P_MAIN, ACCEPT, T, false, 5000, a, .act = REFUSE, .ans = RESET, .v = BLOCK,
             .r = R(REFUSED_RANGE)},
            {a, P_MAIN, ACCEPT, T, true, 443, a, .act = REFUSE, .ans = RESET, .v = BLOCK,
             .r = R(REFUSED_RANGE)},
            {a, P_OFF, ACCEPT, T, false, 443, a, .act = REFUSE, .ans = RESET, .v = BLOCK,
             .r = R(REFUSED_RANGE)},
            {a, P_OFF, ACCEPT, T, true, 443, a, .act = REFUSE, .ans = RESET, .v = BLOCK,
             .r = R(REFUSED_RANGE)},
            {a, P_NAMED, ACCEPT, T, false, 443, a, .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST),
             .rule = a, .dialed = a},
            {a, P_NAMED, ACCEPT, T, false, 5000, a, .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST),
             .rule = a, .dialed = a},
            /* As an HTTP Host literal: the 403, never let through by audit. */
            {a, P_MAIN, S_HTTP, L_HTTP, true, 80, .result = FILTER_HTTP_NAME, .name = a,
             .act = REFUSE, .ans = H403, .v = BLOCK, .r = R(REFUSED_RANGE)},
            {a, P_NAMED, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NAME, .name = a,
             .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST), .rule = a, .dialed = a},
            /* A reload re-check of a connection to it. */
            {a, P_MAIN, RECHECK, T, true, 443, a, .act = REFUSE, .v = BLOCK, .r = R(REFUSED_RANGE)},
            {a, P_NAMED, RECHECK, T, false, 443, a, .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST),
             .rule = a},
        };
        CHECK_ROWS(rows);
    }
}

Test(decide, own_listeners)
{
    static const row_t rows[] = {
        {"own v4", P_MAIN, ACCEPT, T, false, 8443, "198.18.0.1", .act = REFUSE, .ans = RESET,
         .v = BLOCK, .r = R(OWN_LISTENER)},
        {"own v6", P_MAIN, ACCEPT, T, false, 8443, "2001:db8::1", .act = REFUSE, .ans = RESET,
         .v = BLOCK, .r = R(OWN_LISTENER)},
        {"own, audit", P_MAIN, ACCEPT, T, true, 8443, "198.18.0.1", .act = REFUSE, .ans = RESET,
         .v = BLOCK, .r = R(OWN_LISTENER)},
        {"own, filtering off", P_OFF, ACCEPT, T, false, 8443, "198.18.0.1", .act = REFUSE,
         .ans = RESET, .v = BLOCK, .r = R(OWN_LISTENER)},
        {"own, filtering off, v6", P_OFF, ACCEPT, T, false, 8443, "2001:db8::1", .act = REFUSE,
         .ans = RESET, .v = BLOCK, .r = R(OWN_LISTENER)},
        {"another port of that address", P_OFF, ACCEPT, T, false, 8444, "198.18.0.1",
         .act = DIAL_ADDR, .v = ALLOW, .r = R(FILTER_OFF)},
        {"named on its port", P_NAMED, ACCEPT, T, false, 8443, "198.18.0.1", .act = DIAL_ADDR,
         .v = ALLOW, .r = R(ALLOWLIST), .rule = "198.18.0.1"},
        {"named on its port, v6", P_NAMED, ACCEPT, T, false, 8443, "2001:db8::1", .act = DIAL_ADDR,
         .v = ALLOW, .r = R(ALLOWLIST), .rule = "2001:db8::1"},
        {"own, reload, audit", P_MAIN, RECHECK, T, true, 8443, "198.18.0.1", .act = REFUSE,
         .v = BLOCK, .r = R(OWN_LISTENER)},
    };
    CHECK_ROWS(rows);
}

/* SPEC §2.5: an IPv6 address that carries an always-refused IPv4 address is
 * refused as that address is, on every path; a rule naming the IPv6 form
 * lifts it, a rule naming only the IPv4 address does not. */
Test(decide, refused_ipv4_in_ipv6_forms)
{
    for (size_t i = 0; i < N_REFUSED_V6_FORMS; i++) {
        const char *a = refused_v6_forms[i], *rule = refused_v6_rule[i];
        const row_t rows[] = {
            {a, P_MAIN, ACCEPT, T, false, 443, a, .act = REFUSE, .ans = RESET, .v = BLOCK,
             .r = R(REFUSED_RANGE)},
            {a, P_MAIN, ACCEPT, T, false, 5000, a, .act = REFUSE, .ans = RESET, .v = BLOCK,
             .r = R(REFUSED_RANGE)},
            {a, P_MAIN, ACCEPT, T, true, 80, a, .act = REFUSE, .ans = RESET, .v = BLOCK,
             .r = R(REFUSED_RANGE)},
            {a, P_OFF, ACCEPT, T, false, 443, a, .act = REFUSE, .ans = RESET, .v = BLOCK,
             .r = R(REFUSED_RANGE)},
            {a, P_OFF, ACCEPT, T, true, 5000, a, .act = REFUSE, .ans = RESET, .v = BLOCK,
             .r = R(REFUSED_RANGE)},
            /* P_NAMED names the IPv4 addresses only: not enough. */
            {a, P_NAMED, ACCEPT, T, false, 443, a, .act = REFUSE, .ans = RESET, .v = BLOCK,
             .r = R(REFUSED_RANGE)},
            {a, P_V6, ACCEPT, T, false, 5000, a, .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST),
             .rule = rule, .dialed = a},
            {a, P_MAIN, S_HTTP, L_HTTP, true, 80, .result = FILTER_HTTP_NAME, .name = a,
             .act = REFUSE, .ans = H403, .v = BLOCK, .r = R(REFUSED_RANGE)},
            {a, P_OFF, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NAME, .name = a,
             .act = REFUSE, .ans = H403, .v = BLOCK, .r = R(REFUSED_RANGE)},
            {a, P_V6, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NAME, .name = a,
             .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST), .rule = rule, .dialed = a},
            {a, P_MAIN, RECHECK, T, true, 443, a, .act = REFUSE, .v = BLOCK, .r = R(REFUSED_RANGE)},
            {a, P_OFF, RECHECK, T, false, 443, a, .act = REFUSE, .v = BLOCK, .r = R(REFUSED_RANGE)},
        };
        CHECK_ROWS(rows);
    }
    /* ::ffff: forms are IPv4 from the parse on, so a rule for the IPv4
     * address is the rule for them; ::, ::1 are themselves. */
    static const row_t more[] = {
        {"mapped", P_MAIN, ACCEPT, T, false, 443, "::ffff:127.0.0.1", .act = REFUSE, .ans = RESET,
         .v = BLOCK, .r = R(REFUSED_RANGE)},
        {"mapped, named as IPv4", P_NAMED, ACCEPT, T, false, 443, "::ffff:127.0.0.1",
         .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST), .rule = "127.0.0.1",
         .dialed = "127.0.0.1"},
        {"mapped metadata", P_OFF, ACCEPT, T, false, 80, "::ffff:169.254.169.254", .act = REFUSE,
         .ans = RESET, .v = BLOCK, .r = R(REFUSED_RANGE)},
        {"public in NAT64", P_OFF, ACCEPT, T, false, 443, "64:ff9b::808:808", .act = DIAL_ADDR,
         .v = ALLOW, .r = R(FILTER_OFF)},
        {"public in 6to4", P_OFF, ACCEPT, T, false, 443, "2002:808:808::1", .act = DIAL_ADDR,
         .v = ALLOW, .r = R(FILTER_OFF)},
        {"private in NAT64, transparent: not refused", P_OFF, ACCEPT, T, false, 443,
         "64:ff9b::a00:1", .act = DIAL_ADDR, .v = ALLOW, .r = R(FILTER_OFF)},
    };
    CHECK_ROWS(more);
}

/* SPEC §2.5 for moat's own listeners: 64:ff9b::c612:1 and 2002:c612:1:: reach
 * 198.18.0.1 through a translator. */
Test(decide, own_listeners_in_ipv6_forms)
{
    static const row_t rows[] = {
        {"NAT64", P_MAIN, ACCEPT, T, false, 8443, "64:ff9b::c612:1", .act = REFUSE, .ans = RESET,
         .v = BLOCK, .r = R(OWN_LISTENER)},
        {"6to4", P_MAIN, ACCEPT, T, false, 8443, "2002:c612:1::", .act = REFUSE, .ans = RESET,
         .v = BLOCK, .r = R(OWN_LISTENER)},
        {"compatible, filtering off", P_OFF, ACCEPT, T, false, 8443, "::198.18.0.1", .act = REFUSE,
         .ans = RESET, .v = BLOCK, .r = R(OWN_LISTENER)},
        {"NAT64, audit", P_MAIN, ACCEPT, T, true, 8443, "64:ff9b::c612:1", .act = REFUSE,
         .ans = RESET, .v = BLOCK, .r = R(OWN_LISTENER)},
        {"NAT64, another port", P_OFF, ACCEPT, T, false, 8444, "64:ff9b::c612:1", .act = DIAL_ADDR,
         .v = ALLOW, .r = R(FILTER_OFF)},
        {"named as IPv4 only", P_NAMED, ACCEPT, T, false, 8443, "64:ff9b::c612:1", .act = REFUSE,
         .ans = RESET, .v = BLOCK, .r = R(OWN_LISTENER)},
        {"named on its port", P_V6, ACCEPT, T, false, 8443, "64:ff9b::c612:1", .act = DIAL_ADDR,
         .v = ALLOW, .r = R(ALLOWLIST), .rule = "64:ff9b::c612:1"},
        {"NAT64, reload", P_MAIN, RECHECK, T, false, 8443, "64:ff9b::c612:1", .act = REFUSE,
         .v = BLOCK, .r = R(OWN_LISTENER)},
    };
    CHECK_ROWS(rows);
}

Test(decide, tls_hello)
{
    static const row_t rows[] = {
        {"allowed name", P_MAIN, S_TLS, T, false, 443, "192.0.2.1", .result = FILTER_TLS_SNI,
         .name = "allowed.example", .act = DIAL_NAME, .v = ALLOW, .r = R(ALLOWLIST),
         .rule = "allowed.example", .dialed = "allowed.example"},
        {"normalised", P_MAIN, S_TLS, L_TLS, false, 443, .result = FILTER_TLS_SNI,
         .name = "Allowed.EXAMPLE.", .act = DIAL_NAME, .v = ALLOW, .r = R(ALLOWLIST),
         .rule = "allowed.example", .dialed = "allowed.example"},
        {"wildcard", P_MAIN, S_TLS, L_TLS, false, 443, .result = FILTER_TLS_SNI,
         .name = "a.b.wild.example", .act = DIAL_NAME, .v = ALLOW, .r = R(ALLOWLIST),
         .rule = "*.wild.example"},
        {"wildcard is strictly below", P_MAIN, S_TLS, L_TLS, false, 443, .result = FILTER_TLS_SNI,
         .name = "wild.example", .act = REFUSE, .ans = ALERT, .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"not allowed", P_MAIN, S_TLS, L_TLS, false, 443, .result = FILTER_TLS_SNI,
         .name = "blocked.example", .act = REFUSE, .ans = ALERT, .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"not allowed, audit: dialled by name", P_MAIN, S_TLS, L_TLS, true, 443,
         .result = FILTER_TLS_SNI, .name = "blocked.example", .act = DIAL_NAME, .v = BLOCK,
         .r = R(NOT_ALLOWED), .audited = true, .dialed = "blocked.example"},
        {"rule for other ports", P_MAIN, S_TLS, L_TLS, false, 443, .result = FILTER_TLS_SNI,
         .name = "ssh.example", .act = REFUSE, .ans = ALERT, .v = BLOCK, .r = R(PORT),
         .rule = "ssh.example"},
        {"an IP literal is bad-sni", P_MAIN, S_TLS, L_TLS, false, 443, .result = FILTER_TLS_SNI,
         .name = "198.51.100.9", .act = REFUSE, .ans = ALERT, .v = BLOCK, .r = R(BAD_SNI)},
        {"bad-sni, audit, tls listener: nowhere to go", P_MAIN, S_TLS, L_TLS, true, 443,
         .result = FILTER_TLS_SNI, .name = "a..b", .act = REFUSE, .ans = ALERT, .v = BLOCK,
         .r = R(BAD_SNI)},
        {"bad-sni, audit, transparent: the original destination", P_MAIN, S_TLS, T, true, 443,
         "192.0.2.1", .result = FILTER_TLS_SNI, .name = "a..b", .act = DIAL_ADDR, .v = BLOCK,
         .r = R(BAD_SNI), .audited = true, .dialed = "192.0.2.1"},
        {"no sni", P_MAIN, S_TLS, L_TLS, false, 443, .result = FILTER_TLS_NO_SNI, .act = REFUSE,
         .ans = ALERT, .v = BLOCK, .r = R(NO_SNI)},
        {"bad sni", P_MAIN, S_TLS, L_TLS, false, 443, .result = FILTER_TLS_BAD_SNI, .act = REFUSE,
         .ans = ALERT, .v = BLOCK, .r = R(BAD_SNI)},
        {"two sni", P_MAIN, S_TLS, L_TLS, false, 443, .result = FILTER_TLS_MULTI_SNI,
         .name = "allowed.example", .act = REFUSE, .ans = ALERT, .v = BLOCK, .r = R(MULTI_SNI)},
        {"not tls", P_MAIN, S_TLS, L_TLS, false, 443, .result = FILTER_TLS_NOT_TLS, .act = REFUSE,
         .ans = RESET, .v = BLOCK, .r = R(NOT_TLS)},
        {"too big", P_MAIN, S_TLS, L_TLS, false, 443, .result = FILTER_TLS_TOO_BIG, .act = REFUSE,
         .ans = RESET, .v = BLOCK, .r = R(HELLO_TOO_BIG)},
        {"no sni, audit, transparent", P_MAIN, S_TLS, T, true, 443, "192.0.2.1",
         .result = FILTER_TLS_NO_SNI, .act = DIAL_ADDR, .v = BLOCK, .r = R(NO_SNI),
         .audited = true},
    };
    CHECK_ROWS(rows);
}

Test(decide, http_head)
{
    static const row_t rows[] = {
        {"allowed host", P_MAIN, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NAME,
         .name = "allowed.example", .act = DIAL_NAME, .v = ALLOW, .r = R(ALLOWLIST),
         .rule = "allowed.example", .dialed = "allowed.example"},
        {"second http port", P_MAIN, S_HTTP, T, false, 8080, "192.0.2.1",
         .result = FILTER_HTTP_NAME, .name = "allowed.example", .act = DIAL_NAME, .v = ALLOW,
         .r = R(ALLOWLIST), .rule = "allowed.example"},
        {"not allowed: 403", P_MAIN, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NAME,
         .name = "blocked.example", .act = REFUSE, .ans = H403, .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"not allowed, audit", P_MAIN, S_HTTP, L_HTTP, true, 80, .result = FILTER_HTTP_NAME,
         .name = "blocked.example", .act = DIAL_NAME, .v = BLOCK, .r = R(NOT_ALLOWED),
         .audited = true},
        {"IP literal covered", P_MAIN, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NAME,
         .name = "198.51.100.9", .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST),
         .rule = "198.51.100.0/24", .dialed = "198.51.100.9"},
        {"IP literal v6 not covered", P_MAIN, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NAME,
         .name = "2001:db8::9", .act = REFUSE, .ans = H403, .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"IP literal not covered, audit: dialled", P_MAIN, S_HTTP, L_HTTP, true, 80,
         .result = FILTER_HTTP_NAME, .name = "192.0.2.9", .act = DIAL_ADDR, .v = BLOCK,
         .r = R(NOT_ALLOWED), .audited = true, .dialed = "192.0.2.9"},
        {"IP literal, host conflict", P_MAIN, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NAME,
         .name = "198.51.100.9", .conflict = true, .act = REFUSE, .ans = H403, .v = BLOCK,
         .r = R(HOST_CONFLICT)},
        {"IP literal, host conflict, audit: nowhere", P_MAIN, S_HTTP, L_HTTP, true, 80,
         .result = FILTER_HTTP_NAME, .name = "198.51.100.9", .conflict = true, .act = REFUSE,
         .ans = H403, .v = BLOCK, .r = R(HOST_CONFLICT)},
        {"host conflict", P_MAIN, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NAME,
         .name = "allowed.example", .conflict = true, .act = REFUSE, .ans = H403, .v = BLOCK,
         .r = R(HOST_CONFLICT)},
        {"host conflict, audit: by name", P_MAIN, S_HTTP, L_HTTP, true, 80,
         .result = FILTER_HTTP_NAME, .name = "allowed.example", .conflict = true, .act = DIAL_NAME,
         .v = BLOCK, .r = R(HOST_CONFLICT), .audited = true},
        {"bad host", P_MAIN, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NAME,
         .name = "bad_host!", .act = REFUSE, .ans = H403, .v = BLOCK, .r = R(BAD_HOST)},
        {"no host", P_MAIN, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NO_NAME, .act = REFUSE,
         .ans = H403, .v = BLOCK, .r = R(NO_HOST)},
        {"two hosts", P_MAIN, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_MULTI_HOST,
         .act = REFUSE, .ans = H403, .v = BLOCK, .r = R(MULTI_HOST)},
        {"malformed host", P_MAIN, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_BAD_NAME,
         .act = REFUSE, .ans = H403, .v = BLOCK, .r = R(BAD_HOST)},
        {"not http", P_MAIN, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_NOT_HTTP,
         .act = REFUSE, .ans = RESET, .v = BLOCK, .r = R(NOT_HTTP)},
        {"too big", P_MAIN, S_HTTP, L_HTTP, false, 80, .result = FILTER_HTTP_TOO_BIG, .act = REFUSE,
         .ans = RESET, .v = BLOCK, .r = R(HEAD_TOO_BIG)},
        {"not http, audit, transparent", P_MAIN, S_HTTP, T, true, 80, "192.0.2.1",
         .result = FILTER_HTTP_NOT_HTTP, .act = DIAL_ADDR, .v = BLOCK, .r = R(NOT_HTTP),
         .audited = true, .dialed = "192.0.2.1"},
    };
    CHECK_ROWS(rows);
}

Test(decide, failed_peeks)
{
    static const row_t rows[] = {
        {"timeout", P_MAIN, FAILED, L_TLS, false, 443, .failed = R(PEEK_TIMEOUT), .act = REFUSE,
         .ans = RESET, .v = BLOCK, .r = R(PEEK_TIMEOUT)},
        {"closed", P_MAIN, FAILED, L_HTTP, false, 80, .failed = R(CLIENT_CLOSED), .act = REFUSE,
         .ans = RESET, .v = BLOCK, .r = R(CLIENT_CLOSED)},
        {"too big", P_MAIN, FAILED, T, false, 443, "192.0.2.1", .failed = R(HELLO_TOO_BIG),
         .act = REFUSE, .ans = RESET, .v = BLOCK, .r = R(HELLO_TOO_BIG)},
        {"timeout, audit, tls listener", P_MAIN, FAILED, L_TLS, true, 443,
         .failed = R(PEEK_TIMEOUT), .act = REFUSE, .ans = RESET, .v = BLOCK, .r = R(PEEK_TIMEOUT)},
        {"timeout, audit, transparent", P_MAIN, FAILED, T, true, 443, "192.0.2.1",
         .failed = R(PEEK_TIMEOUT), .act = DIAL_ADDR, .v = BLOCK, .r = R(PEEK_TIMEOUT),
         .audited = true, .dialed = "192.0.2.1"},
    };
    CHECK_ROWS(rows);
}

/* A name given directly: what `moat explain NAME [PORT]` asks. */
Test(decide, given_names)
{
    static const row_t rows[] = {
        {"allowed", P_MAIN, S_NAME, T, false, 443, .name = "allowed.example", .act = DIAL_NAME,
         .v = ALLOW, .r = R(ALLOWLIST), .rule = "allowed.example"},
        {"any port", P_MAIN, S_NAME, T, false, FILTER_ANY_PORT, .name = "ssh.example",
         .act = DIAL_NAME, .v = ALLOW, .r = R(ALLOWLIST), .rule = "ssh.example"},
        {"its port", P_MAIN, S_NAME, T, false, 22, .name = "SSH.example", .act = DIAL_NAME,
         .v = ALLOW, .r = R(ALLOWLIST), .rule = "ssh.example", .dialed = "ssh.example"},
        {"other port", P_MAIN, S_NAME, T, false, 2222, .name = "ssh.example", .act = REFUSE,
         .ans = RESET, .v = BLOCK, .r = R(PORT), .rule = "ssh.example"},
        {"no rule", P_MAIN, S_NAME, T, false, FILTER_ANY_PORT, .name = "blocked.example",
         .act = REFUSE, .ans = RESET, .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"bad name", P_MAIN, S_NAME, T, false, 443, .name = "a b", .act = REFUSE, .ans = RESET,
         .v = BLOCK, .r = R(BAD_NAME)},
        {"bad name, filtering off", P_OFF, S_NAME, T, false, 443, .name = "a b", .act = REFUSE,
         .ans = RESET, .v = BLOCK, .r = R(BAD_NAME)},
        {"filtering off", P_OFF, S_NAME, T, false, 443, .name = "blocked.example", .act = DIAL_NAME,
         .v = ALLOW, .r = R(FILTER_OFF)},
        {"audit", P_MAIN, S_NAME, T, true, 443, .name = "blocked.example", .act = DIAL_NAME,
         .v = BLOCK, .r = R(NOT_ALLOWED), .audited = true},
    };
    CHECK_ROWS(rows);
}

/* A reload re-decides an open connection from what it was admitted by. */
Test(decide, reload_recheck)
{
    static const row_t rows[] = {
        {"by name, still allowed", P_MAIN, RECHECK, L_TLS, false, 443, .name = "allowed.example",
         .by_name = true, .act = DIAL_NAME, .v = ALLOW, .r = R(ALLOWLIST),
         .rule = "allowed.example"},
        {"by name, no longer", P_MAIN, RECHECK, L_TLS, false, 443, .name = "gone.example",
         .by_name = true, .act = REFUSE, .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"by name, no longer, audit: goes on", P_MAIN, RECHECK, L_TLS, true, 443,
         .name = "gone.example", .by_name = true, .act = DIAL_NAME, .v = BLOCK, .r = R(NOT_ALLOWED),
         .audited = true},
        {"by address", P_MAIN, RECHECK, T, false, 5000, "198.51.100.9", .act = DIAL_ADDR,
         .v = ALLOW, .r = R(ALLOWLIST), .rule = "198.51.100.0/24"},
        {"by address, no longer", P_MAIN, RECHECK, T, false, 5000, "192.0.2.1", .act = REFUSE,
         .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"step 3 name, still listed", P_MAIN, RECHECK, T, false, 22, "192.0.2.1",
         .name = "ssh.example", .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST),
         .rule = "ssh.example"},
        {"logged name, admitted by address", P_MAIN, RECHECK, T, false, 5000, "198.51.100.9",
         .name = "gone.example", .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST),
         .rule = "198.51.100.0/24"},
        {"by name over the address", P_MAIN, RECHECK, T, false, 443, "198.51.100.9",
         .name = "gone.example", .by_name = true, .act = REFUSE, .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"IP literal Host", P_MAIN, RECHECK, L_HTTP, false, 80, .addr = "198.51.100.9",
         .act = DIAL_ADDR, .v = ALLOW, .r = R(ALLOWLIST), .rule = "198.51.100.0/24"},
        {"IP literal Host, no longer", P_MAIN, RECHECK, L_HTTP, false, 80, .addr = "192.0.2.9",
         .act = REFUSE, .v = BLOCK, .r = R(NOT_ALLOWED)},
        {"filtering off now", P_OFF, RECHECK, L_TLS, false, 443, .name = "gone.example",
         .by_name = true, .act = DIAL_NAME, .v = ALLOW, .r = R(FILTER_OFF)},
    };
    CHECK_ROWS(rows);
}

/* ---- dialling a name's addresses ----------------------------------------------------- */

typedef struct dial_row {
    const char *what;
    int pol;
    bool audit;
    int port;
    const char *addrs[4];
    const char *kept[4];
    filter_verdict_t v;
    filter_reason_t r;
    bool audited;
} dial_row_t;

static void check_dial_rows(const dial_row_t *rows, size_t n_rows);

Test(decide, dial_addresses_step4_and_private_ranges)
{
    static const dial_row_t rows[] = {
        {"public",
         P_MAIN,
         false,
         443,
         {"192.0.2.1", "2001:db8::5"},
         {"192.0.2.1", "2001:db8::5"},
         ALLOW,
         R(ALLOWLIST),
         false},
        {"public and private: the public ones",
         P_MAIN,
         false,
         443,
         {"10.0.0.5", "192.0.2.1", "100.64.1.1", "192.0.2.2"},
         {"192.0.2.1", "192.0.2.2"},
         ALLOW,
         R(ALLOWLIST),
         false},
        {"RFC 1918 only",
         P_MAIN,
         false,
         443,
         {"10.0.0.5", "192.168.1.1", "172.16.0.1"},
         {},
         BLOCK,
         R(PRIVATE_RANGE),
         false},
        {"CGNAT only", P_MAIN, false, 443, {"100.64.1.1"}, {}, BLOCK, R(PRIVATE_RANGE), false},
        {"fc00::/7 only", P_MAIN, false, 443, {"fd00::1"}, {}, BLOCK, R(PRIVATE_RANGE), false},
        {"private only, audit: dialled",
         P_MAIN,
         true,
         443,
         {"10.0.0.5", "fd00::1"},
         {"10.0.0.5", "fd00::1"},
         BLOCK,
         R(PRIVATE_RANGE),
         true},
        {"private covered by an address rule",
         P_MAIN,
         false,
         443,
         {"10.9.1.1", "10.0.0.5"},
         {"10.9.1.1"},
         ALLOW,
         R(ALLOWLIST),
         false},
        {"refused", P_MAIN, false, 443, {"127.0.0.1", "::1"}, {}, BLOCK, R(REFUSED_RANGE), false},
        {"refused, audit: never",
         P_MAIN,
         true,
         443,
         {"169.254.169.254"},
         {},
         BLOCK,
         R(REFUSED_RANGE),
         false},
        {"refused and private, audit: the private one",
         P_MAIN,
         true,
         443,
         {"127.0.0.1", "10.0.0.5"},
         {"10.0.0.5"},
         BLOCK,
         R(PRIVATE_RANGE),
         true},
        {"own listener", P_MAIN, true, 8443, {"198.18.0.1"}, {}, BLOCK, R(OWN_LISTENER), false},
        {"nothing", P_MAIN, false, 443, {}, {}, BLOCK, R(NO_ADDRESS), false},
        {"filtering off: private is fine, refused is not",
         P_OFF,
         false,
         443,
         {"10.0.0.5", "127.0.0.1"},
         {"10.0.0.5"},
         ALLOW,
         R(ALLOWLIST),
         false},
        {"refused ones named by a rule",
         P_NAMED,
         false,
         443,
         {"127.0.0.1", "::1"},
         {"127.0.0.1", "::1"},
         ALLOW,
         R(ALLOWLIST),
         false},
    };
    check_dial_rows(rows, sizeof rows / sizeof rows[0]);
}

/* SPEC §2.5: a name resolving to IPv6 forms of refused or private IPv4
 * addresses. */
Test(decide, dial_ipv4_in_ipv6_forms)
{
    static const dial_row_t rows[] = {
        {"NAT64 of a private address",
         P_MAIN,
         false,
         443,
         {"64:ff9b::a00:1"},
         {},
         BLOCK,
         R(PRIVATE_RANGE),
         false},
        {"mapped private (IPv4 once parsed)",
         P_MAIN,
         false,
         443,
         {"::ffff:10.0.0.1"},
         {},
         BLOCK,
         R(PRIVATE_RANGE),
         false},
        {"compatible and 6to4 of private addresses",
         P_MAIN,
         false,
         443,
         {"::192.168.1.1", "2002:6440:1::", "2002:ac10:1::1"},
         {},
         BLOCK,
         R(PRIVATE_RANGE),
         false},
        {"NAT64 of the metadata address",
         P_MAIN,
         false,
         443,
         {"64:ff9b::a9fe:a9fe"},
         {},
         BLOCK,
         R(REFUSED_RANGE),
         false},
        {"refused, audit: never",
         P_MAIN,
         true,
         443,
         {"2002:7f00:1::", "::127.0.0.1"},
         {},
         BLOCK,
         R(REFUSED_RANGE),
         false},
        {"private only, audit: dialled",
         P_MAIN,
         true,
         443,
         {"64:ff9b::a00:1"},
         {"64:ff9b::a00:1"},
         BLOCK,
         R(PRIVATE_RANGE),
         true},
        {"public and private forms: the public ones",
         P_MAIN,
         false,
         443,
         {"64:ff9b::a00:1", "64:ff9b::808:808", "2002:a00:1::", "2002:808:808::"},
         {"64:ff9b::808:808", "2002:808:808::"},
         ALLOW,
         R(ALLOWLIST),
         false},
        {"a rule for 10.9.0.0/16 does not cover the NAT64 form",
         P_MAIN,
         false,
         443,
         {"64:ff9b::a09:101"},
         {},
         BLOCK,
         R(PRIVATE_RANGE),
         false},
        {"a rule for the NAT64 form covers it",
         P_V6,
         false,
         443,
         {"64:ff9b::a00:1", "64:ff9b::a01:1"},
         {"64:ff9b::a00:1"},
         ALLOW,
         R(ALLOWLIST),
         false},
        {"a rule for the 6to4 form lifts the refusal",
         P_V6,
         false,
         443,
         {"2002:7f00:1::"},
         {"2002:7f00:1::"},
         ALLOW,
         R(ALLOWLIST),
         false},
        {"filtering off: private forms are fine, refused ones are not",
         P_OFF,
         false,
         443,
         {"64:ff9b::a00:1", "64:ff9b::a9fe:a9fe", "2002::"},
         {"64:ff9b::a00:1"},
         ALLOW,
         R(ALLOWLIST),
         false},
        {"own listener in NAT64",
         P_MAIN,
         true,
         8443,
         {"64:ff9b::c612:1"},
         {},
         BLOCK,
         R(OWN_LISTENER),
         false},
        {"::, ::1 themselves",
         P_MAIN,
         false,
         443,
         {"::", "::1"},
         {},
         BLOCK,
         R(REFUSED_RANGE),
         false},
    };
    check_dial_rows(rows, sizeof rows / sizeof rows[0]);
}

static void check_dial_rows(const dial_row_t *rows, size_t n_rows)
{
    const filter_rule_info_t *rule = filter_policy_rule_at(pol[P_MAIN], 0);
    filter_decision_t admitted = {.verdict = FILTER_ALLOW, .reason = R(ALLOWLIST), .rule = rule};
    for (size_t i = 0; i < n_rows; i++) {
        const dial_row_t *w = &rows[i];
        filter_addr_t a[4];
        size_t n = 0, n_kept = 0;
        while (n < 4 && w->addrs[n])
            a[n] = A(w->addrs[n]), n++;
        while (n_kept < 4 && w->kept[n_kept])
            n_kept++;
        filter_decision_t d = filter_decide_dial(pol[w->pol], w->audit, w->port, admitted, a, &n);
        cr_assert_eq(n, n_kept, "%s: %zu kept, want %zu", w->what, n, n_kept);
        for (size_t j = 0; j < n; j++)
            cr_assert(same_addr(&a[j], w->kept[j]), "%s: address %zu", w->what, j);
        cr_assert_eq(d.verdict, w->v, "%s", w->what);
        cr_assert_eq(d.reason, w->r, "%s: %s", w->what, filter_reason_str(d.reason));
        cr_assert_eq(d.audit, w->audited, "%s", w->what);
        cr_assert_eq(d.rule, rule, "%s: the admitting rule is kept", w->what);
    }
}

Test(decide, failed_dials_keep_audit_unless_hard)
{
    filter_decision_t passed = {.verdict = FILTER_BLOCK, .reason = R(NOT_ALLOWED), .audit = true};
    filter_decision_t allowed = {.verdict = FILTER_ALLOW, .reason = R(ALLOWLIST)};
    filter_decision_t d = filter_decide_failed(passed, R(DIAL_FAILED));
    cr_assert(d.verdict == FILTER_BLOCK && d.reason == R(DIAL_FAILED) && d.audit);
    d = filter_decide_failed(passed, R(REFUSED_RANGE));
    cr_assert(d.verdict == FILTER_BLOCK && d.reason == R(REFUSED_RANGE) && !d.audit);
    d = filter_decide_failed(passed, R(OWN_LISTENER));
    cr_assert(!d.audit);
    d = filter_decide_failed(allowed, R(CONNECT_TIMEOUT));
    cr_assert(d.verdict == FILTER_BLOCK && d.reason == R(CONNECT_TIMEOUT) && !d.audit);
}

/* ---- DNS ------------------------------------------------------------------------------- */

Test(decide, dns_questions)
{
    static const struct {
        const char *what;
        int pol;
        bool audit, canary, not_host;
        const char *name;
        filter_dns_action_t act;
        filter_verdict_t v;
        filter_reason_t r;
        bool audited;
    } rows[] = {
        {"allowed", P_MAIN, false, false, false, "allowed.example", FILTER_DNS_RESOLVE, ALLOW,
         R(ALLOWLIST), false},
        {"wildcard", P_MAIN, false, false, false, "x.wild.example", FILTER_DNS_RESOLVE, ALLOW,
         R(ALLOWLIST), false},
        {"a rule on other ports resolves too", P_MAIN, false, false, false, "ssh.example",
         FILTER_DNS_RESOLVE, ALLOW, R(ALLOWLIST), false},
        {"not allowed: sinkholed", P_MAIN, false, false, false, "blocked.example",
         FILTER_DNS_SINKHOLE, BLOCK, R(NOT_ALLOWED), false},
        {"not allowed, audit: resolved", P_MAIN, true, false, false, "blocked.example",
         FILTER_DNS_RESOLVE, BLOCK, R(NOT_ALLOWED), true},
        {"not a host name", P_MAIN, false, false, true, "_srv.allowed.example", FILTER_DNS_SINKHOLE,
         BLOCK, R(BAD_NAME), false},
        {"not a host name, audit", P_MAIN, true, false, true, "_srv.allowed.example",
         FILTER_DNS_RESOLVE, BLOCK, R(BAD_NAME), true},
        {"canary", P_MAIN, false, true, false, "use-application-dns.net", FILTER_DNS_CANARY, BLOCK,
         R(DOH_CANARY), false},
        {"canary, audit: answered all the same", P_MAIN, true, true, false,
         "use-application-dns.net", FILTER_DNS_CANARY, BLOCK, R(DOH_CANARY), false},
        {"filtering off", P_OFF, false, false, false, "anything.example", FILTER_DNS_RESOLVE, ALLOW,
         R(FILTER_OFF), false},
        {"filtering off: the canary is forwarded", P_OFF, false, true, false,
         "use-application-dns.net", FILTER_DNS_RESOLVE, ALLOW, R(FILTER_OFF), false},
        {"filtering off: any name", P_OFF, false, false, true, "_srv.example", FILTER_DNS_RESOLVE,
         ALLOW, R(FILTER_OFF), false},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        filter_dns_input_t in = {.audit = rows[i].audit,
                                 .canary = rows[i].canary,
                                 .not_host = rows[i].not_host,
                                 .name = rows[i].name,
                                 .name_len = strlen(rows[i].name)};
        filter_dns_out_t o = filter_decide_dns(pol[rows[i].pol], &in);
        cr_assert_eq(o.action, rows[i].act, "%s", rows[i].what);
        cr_assert_eq(o.decision.verdict, rows[i].v, "%s", rows[i].what);
        cr_assert_eq(o.decision.reason, rows[i].r, "%s: %s", rows[i].what,
                     filter_reason_str(o.decision.reason));
        cr_assert_eq(o.decision.audit, rows[i].audited, "%s", rows[i].what);
    }
}

/* ---- reasons --------------------------------------------------------------------------- */

Test(decide, every_reason_has_its_own_text_and_only_two_are_hard)
{
    for (int i = 0; i < FILTER_REASON_COUNT; i++) {
        const char *s = filter_reason_str((filter_reason_t)i);
        cr_assert_str_neq(s, "unknown", "reason %d", i);
        for (int j = 0; j < i; j++)
            cr_assert_str_neq(s, filter_reason_str((filter_reason_t)j), "%s twice", s);
        bool hard = i == FILTER_REASON_REFUSED_RANGE || i == FILTER_REASON_OWN_LISTENER;
        cr_assert_eq(filter_reason_is_hard((filter_reason_t)i), hard, "%s", s);
    }
    cr_assert_str_eq(filter_reason_str(FILTER_REASON_COUNT), "unknown");
    cr_assert_eq(filter_tls_result_reason(FILTER_TLS_TOO_BIG), R(HELLO_TOO_BIG));
    cr_assert_eq(filter_http_result_reason(FILTER_HTTP_TOO_BIG), R(HEAD_TOO_BIG));
    /* The readers' texts and the enum's agree. */
    for (int r = FILTER_TLS_NO_SNI; r <= FILTER_TLS_TOO_BIG; r++)
        cr_assert_str_eq(filter_reason_str(filter_tls_result_reason((filter_tls_result_t)r)),
                         filter_tls_reason((filter_tls_result_t)r));
    for (int r = FILTER_HTTP_NO_NAME; r <= FILTER_HTTP_TOO_BIG; r++)
        cr_assert_str_eq(filter_reason_str(filter_http_result_reason((filter_http_result_t)r)),
                         filter_http_reason((filter_http_result_t)r));
}
