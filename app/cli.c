/* app/cli.c: `moat check` and `moat explain` (SPEC §1). */
#include "app/cli.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "filter/addr.h"
#include "filter/decide.h"
#include "filter/name.h"
#include "filter/policy.h"
#include "core/daemon.h"

/* "22, 443, 8000-8100", or "every port" for an empty list. */
static const char *cli_format_ports(const filter_port_range_t *p, size_t n, char *buf, size_t cap)
{
    if (n == 0) {
        snprintf(buf, cap, "every port");
        return buf;
    }
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && off < cap; i++) {
        int w = p[i].lo == p[i].hi
                    ? snprintf(buf + off, cap - off, "%s%u", i ? ", " : "", p[i].lo)
                    : snprintf(buf + off, cap - off, "%s%u-%u", i ? ", " : "", p[i].lo, p[i].hi);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    return buf;
}

static const char *cli_format_addrs(const cfg_addr_list_t *l, char *buf, size_t cap)
{
    size_t off = 0;
    snprintf(buf, cap, "-");
    for (size_t i = 0; i < l->n && off < cap; i++) {
        int w = snprintf(buf + off, cap - off, "%s%s", i ? ", " : "", l->items[i].text);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    return buf;
}

int cli_load_config(const char *path, moat_gen_t **gen, FILE *err)
{
    cfg_diag_t diag;
    int rc = moat_gen_load(path, gen, &diag);
    if (rc != 0) {
        if (diag.n > 0)
            cfg_diag_print(&diag, err);
        else
            fprintf(err, "%s: %s\n", path ? path : "<default>", strerror(-rc));
    }
    cfg_diag_free(&diag);
    return rc;
}

/* The summary lists this many rules at most, to stay on one screen. */
#define CLI_RULES_SHOWN 20

/* The summary's mode and filtering lines. */
static void cli_check_policy(const cfg_t *c, FILE *out)
{
    size_t n_exact = 0, n_wild = 0, n_addr = 0;
    for (size_t i = 0; i < c->n_allow; i++) {
        if (c->allow[i].kind == FILTER_RULE_ADDR)
            n_addr++;
        else if (c->allow[i].pattern.wildcard)
            n_wild++;
        else
            n_exact++;
    }
    fprintf(out, "  mode       %s\n",
            c->mode == CFG_MODE_AUDIT ? "audit (decide and log, block nothing)" : "enforce");
    if (!c->filtering)
        fprintf(out, "  filtering  off (no `allow` key): DNS forwarded, TCP spliced unchecked\n");
    else if (c->n_allow == 0)
        fprintf(out, "  filtering  on, allow: [] -- full air gap: every name sinkholed, every "
                     "connection refused\n");
    else
        fprintf(
            out,
            "  filtering  on: %zu rule%s (%zu exact name%s, %zu wildcard%s, %zu address rule%s)\n",
            c->n_allow, c->n_allow == 1 ? "" : "s", n_exact, n_exact == 1 ? "" : "s", n_wild,
            n_wild == 1 ? "" : "s", n_addr, n_addr == 1 ? "" : "s");
}

/* The summary's settings: DNS, sinkhole, listeners, ports, limits, log. */
static void cli_check_settings(const cfg_t *c, FILE *out)
{
    char a[512], b[512], cbuf[512], d[512], e[512];
    fprintf(out, "  dns        listen %s; upstream %s; timeout %llu ms; cache %u entries\n",
            cli_format_addrs(&c->dns.listen, a, sizeof a),
            c->dns.upstream.n ? cli_format_addrs(&c->dns.upstream, b, sizeof b)
                              : "/etc/resolv.conf",
            (unsigned long long)c->dns.timeout_ms, c->dns.cache_size);
    if (c->sinkhole.mode == CFG_SINKHOLE_NXDOMAIN) {
        fprintf(out, "  sinkhole   NXDOMAIN, negative TTL %u s\n", c->sinkhole.ttl_s);
    } else {
        char v4[INET_ADDRSTRLEN], v6[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET, c->sinkhole.ipv4, v4, sizeof v4);
        inet_ntop(AF_INET6, c->sinkhole.ipv6, v6, sizeof v6);
        fprintf(out, "  sinkhole   A %s, AAAA %s, TTL %u s\n", v4, v6, c->sinkhole.ttl_s);
    }
    fprintf(out, "  proxy      transparent %s; tls %s; http %s; connect %s; socks %s\n",
            cli_format_addrs(&c->proxy.transparent, a, sizeof a),
            cli_format_addrs(&c->proxy.tls, b, sizeof b),
            cli_format_addrs(&c->proxy.http, cbuf, sizeof cbuf),
            cli_format_addrs(&c->proxy.connect, d, sizeof d),
            cli_format_addrs(&c->proxy.socks, e, sizeof e));
    fprintf(out, "  ports      tls %s; http %s\n",
            cli_format_ports(c->proxy.tls_ports.items, c->proxy.tls_ports.n, a, sizeof a),
            cli_format_ports(c->proxy.http_ports.items, c->proxy.http_ports.n, b, sizeof b));
    fprintf(out,
            "  limits     max_hello %u B, max_http_head %u B, peek %llu ms, connect %llu ms, "
            "idle %llu ms, max_connections %u, shutdown_grace %llu ms\n",
            c->proxy.max_hello, c->proxy.max_http_head,
            (unsigned long long)c->proxy.peek_timeout_ms,
            (unsigned long long)c->proxy.connect_timeout_ms,
            (unsigned long long)c->proxy.idle_timeout_ms, c->proxy.max_connections,
            (unsigned long long)c->shutdown_grace_ms);
    fprintf(out, "  log        %s, level %s, to %s; metrics %s\n",
            c->log.format == CFG_LOG_JSON ? "json" : "text",
            (const char *[]){"debug", "info", "warn", "error"}[c->log.level],
            c->log.file ? c->log.file : "stderr",
            c->metrics.enabled ? c->metrics.listen.text : "off");
}

/* The first CLI_RULES_SHOWN rules with their positions and ports. */
static void cli_check_rules(const char *path, const cfg_t *c, FILE *out)
{
    char a[512];
    for (size_t i = 0; i < c->n_allow && i < CLI_RULES_SHOWN; i++) {
        const filter_rule_t *r = &c->allow[i];
        const char *ports;
        if (r->ports)
            ports = cli_format_ports(r->ports, r->n_ports, a, sizeof a);
        else if (r->kind == FILTER_RULE_ADDR)
            ports = "every port";
        else
            ports = "tls_ports and http_ports";
        fprintf(out, "  %s:%u:%u  %-40s %s\n", path, r->line, r->col, r->text, ports);
    }
    if (c->n_allow > CLI_RULES_SHOWN)
        fprintf(out, "  ... and %zu more rules\n", c->n_allow - CLI_RULES_SHOWN);
}

/* The summary lists this many tenants at most. */
#define CLI_TENANTS_SHOWN 20

/* The shared lists (name, rules, how many allow lists use each) and the
 * tenants (name, where, clients, own rules, lists used, mode). */
static void cli_check_tenants(const char *path, const moat_gen_t *gen, FILE *out)
{
    const cfg_t *c = gen->cfg;
    for (size_t i = 0; i < c->n_lists; i++) {
        size_t users = 0;
        for (size_t t = 0; t < c->n_tenants; t++)
            for (size_t j = 0; j < c->tenants[t].allow.n_lists; j++)
                users += c->tenants[t].allow.lists[j] == i;
        for (size_t j = 0; j < c->n_allow_lists; j++)
            users += c->allow_lists[j] == i;
        fprintf(out, "  list       %s: %zu rule%s, compiled once, used by %zu allow list%s\n",
                c->lists[i].name, c->lists[i].n_rules, c->lists[i].n_rules == 1 ? "" : "s", users,
                users == 1 ? "" : "s");
    }
    if (c->n_tenants == 0)
        return;
    fprintf(out, "  tenants    %zu (a client of none gets the top-level allow%s)\n", c->n_tenants,
            c->filtering ? "" : ": filtering off");
    for (size_t i = 0; i < c->n_tenants && i < CLI_TENANTS_SHOWN; i++) {
        const cfg_tenant_t *t = &c->tenants[i];
        char clients[512], lists[512];
        size_t o = 0;
        clients[0] = lists[0] = '\0';
        for (size_t j = 0; j < t->n_clients && o + FILTER_ADDR_STRLEN + 8 < sizeof clients; j++) {
            char p[FILTER_ADDR_STRLEN];
            o += (size_t)snprintf(clients + o, sizeof clients - o, "%s%s", j ? ", " : "",
                                  filter_prefix_format(&t->clients[j], p, sizeof p));
        }
        o = 0;
        for (size_t j = 0; j < t->allow.n_lists && o + 80 < sizeof lists; j++)
            o += (size_t)snprintf(lists + o, sizeof lists - o, "%s%s", j ? ", " : "; lists ",
                                  c->lists[t->allow.lists[j]].name);
        fprintf(out, "  tenant     %s (%s:%u): clients %s; %zu rule%s%s%s%s%s\n", t->name,
                t->file ? t->file : path, t->line, clients, t->allow.n_rules,
                t->allow.n_rules == 1 ? "" : "s", lists, t->n_users ? "; proxy users" : "",
                gen->tenants[i].audit ? "; mode audit" : "",
                t->allow.n_rules == 0 && t->allow.n_lists == 0 ? " (air gap)" : "");
    }
    if (c->n_tenants > CLI_TENANTS_SHOWN)
        fprintf(out, "  ... and %zu more tenants\n", c->n_tenants - CLI_TENANTS_SHOWN);
}

int cli_check(const char *path, FILE *out, FILE *err)
{
    moat_gen_t *gen;
    if (cli_load_config(path, &gen, err) != 0)
        return MOAT_EXIT_CONFIG;
    fprintf(out, "%s: OK\n", path);
    cli_check_policy(gen->cfg, out);
    cli_check_settings(gen->cfg, out);
    cli_check_rules(path, gen->cfg, out);
    cli_check_tenants(path, gen, out);
    moat_gen_unref(gen);
    return MOAT_EXIT_OK;
}

static int cli_parse_port(const char *s, int *port)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > 65535)
        return -EINVAL;
    *port = (int)v;
    return 0;
}

/* What `moat explain` decides as: the generation, the scope (a tenant's
 * or the top-level one) and which tenant (-1: none). */
typedef struct cli_who {
    const moat_gen_t *gen;
    moat_scope_t sc;
    long tenant;
    const char *path; /* the config file as given */
} cli_who_t;

static bool cli_rule_in(const filter_rule_t *rules, size_t n, const filter_rule_info_t *r)
{
    for (size_t i = 0; i < n; i++)
        if (rules[i].line == r->line && rules[i].col == r->col &&
            strcmp(rules[i].text, r->text) == 0)
            return true;
    return false;
}

/* The file a compiled rule was written in: a tenant's own rules are in the
 * tenant's file (an included one, maybe), everything else in the config. */
static const char *cli_rule_file(const cli_who_t *w, const filter_rule_info_t *r)
{
    if (w->tenant < 0)
        return w->path;
    const cfg_tenant_t *t = &w->gen->cfg->tenants[w->tenant];
    return cli_rule_in(t->allow.rules, t->allow.n_rules, r) && t->file ? t->file : w->path;
}

static void cli_print_rule(FILE *out, const cli_who_t *w, const filter_rule_info_t *r)
{
    char ports[512];
    fprintf(out, "  rule %s:%u:%u: %s (ports: %s)\n", cli_rule_file(w, r), r->line, r->col, r->text,
            cli_format_ports(r->ports, r->n_ports, ports, sizeof ports));
}

static bool cli_port_in(const cfg_port_list_t *l, int port)
{
    for (size_t i = 0; i < l->n; i++)
        if (port >= l->items[i].lo && port <= l->items[i].hi)
            return true;
    return false;
}

/* The proxy's decision for a connection with these facts (filter/decide.h),
 * as w's scope. */
static void cli_decide(const cli_who_t *w, filter_conn_input_t *in, filter_conn_out_t *out)
{
    const cfg_t *c = w->gen->cfg;
    in->listener = FILTER_LISTENER_TRANSPARENT;
    in->audit = w->sc.audit;
    in->tls_ports = c->proxy.tls_ports.items;
    in->n_tls_ports = c->proxy.tls_ports.n;
    in->http_ports = c->proxy.http_ports.items;
    in->n_http_ports = c->proxy.http_ports.n;
    filter_decide_conn(w->sc.policy, in, out);
}

/* An address: as a transparent connection to it is decided before any
 * peek (§2.4, step 0; step 3 without the DNS memory of a running moat). */
static int cli_explain_addr(const cli_who_t *w, const filter_addr_t *addr, int port, FILE *out)
{
    char text[FILTER_ADDR_STRLEN];
    filter_addr_format(addr, text, sizeof text);
    filter_conn_input_t in = {.stage = FILTER_STAGE_ACCEPT, .port = port, .dest = addr};
    filter_conn_out_t o;
    cli_decide(w, &in, &o);
    filter_decision_t d = o.decision;
    if (d.verdict == FILTER_BLOCK && filter_reason_is_hard(d.reason)) {
        /* SPEC §2.5: say which IPv4 address an IPv6 form was judged as. */
        char carried[FILTER_ADDR_STRLEN + 40] = "";
        filter_addr_t v4;
        if (filter_addr_embedded_v4(addr, &v4)) {
            char v4text[FILTER_ADDR_STRLEN];
            filter_addr_format(&v4, v4text, sizeof v4text);
            snprintf(carried, sizeof carried, " (it carries the IPv4 address %s)", v4text);
        }
        fprintf(out, "%s: blocked (%s): %s%s\n", text, filter_reason_str(d.reason),
                d.reason == FILTER_REASON_OWN_LISTENER
                    ? "one of moat's own listeners"
                    : "always refused (loopback, link-local, unspecified, multicast or "
                      "broadcast) unless an address rule names it",
                carried);
        return MOAT_EXIT_BLOCKED;
    }
    if (d.verdict == FILTER_ALLOW) {
        if (d.reason == FILTER_REASON_FILTER_OFF)
            fprintf(out, "%s: allowed (filter-off): the config has no `allow` key\n", text);
        else if (port == FILTER_ANY_PORT)
            fprintf(out, "%s: allowed (allowlist)\n", text);
        else
            fprintf(out, "%s port %d: allowed (allowlist)\n", text, port);
        if (d.rule)
            cli_print_rule(out, w, d.rule);
        return MOAT_EXIT_OK;
    }
    if (port == FILTER_ANY_PORT)
        fprintf(out, "%s: blocked (%s): no address rule covers it\n", text,
                filter_reason_str(d.reason));
    else
        fprintf(out, "%s port %d: blocked (%s)%s\n", text, port, filter_reason_str(d.reason),
                d.rule ? ": the rule covering it allows other ports"
                       : ": no address rule covers it");
    if (d.rule)
        cli_print_rule(out, w, d.rule);
    fprintf(out, "  (a connection through the tls or http listener is decided by the name it "
                 "carries, not its address)\n");
    return MOAT_EXIT_BLOCKED;
}

#define CLI_MAX_MATCHES 16

static int cli_explain_name(const cli_who_t *w, const char *target, int port, FILE *out)
{
    const cfg_t *c = w->gen->cfg;
    filter_conn_input_t in = {
        .stage = FILTER_STAGE_NAME, .port = port, .name = target, .name_len = strlen(target)};
    filter_conn_out_t o;
    cli_decide(w, &in, &o);
    filter_decision_t d = o.decision;
    if (!o.name_ok) {
        char norm[FILTER_NAME_MAX + 1];
        size_t nl;
        int nrc = filter_name_normalize(target, strlen(target), norm, &nl);
        fprintf(out, "%s: blocked (bad-name): %s\n", target, filter_name_strerror(nrc));
        return MOAT_EXIT_BLOCKED;
    }
    const char *name = o.name;
    size_t len = o.name_len;
    if (d.reason == FILTER_REASON_FILTER_OFF) {
        fprintf(out, "%s: allowed (filter-off): the config has no `allow` key\n", name);
        return MOAT_EXIT_OK;
    }

    const filter_rule_info_t *rules[CLI_MAX_MATCHES];
    size_t n = filter_match_name_all(w->sc.policy, name, len, rules, CLI_MAX_MATCHES);
    size_t shown = n < CLI_MAX_MATCHES ? n : CLI_MAX_MATCHES;
    /* What moat's DNS does with the name in enforce mode. */
    filter_dns_input_t dq = {.name = name, .name_len = len};
    bool resolves = filter_decide_dns(w->sc.policy, &dq).action == FILTER_DNS_RESOLVE;
    const char *dns = resolves ? "resolves through moat's DNS (upstream answer, rebinding-filtered)"
                               : (c->sinkhole.mode == CFG_SINKHOLE_NXDOMAIN
                                      ? "sinkholed (NXDOMAIN)"
                                      : "sinkholed (A/AAAA to the sinkhole addresses, other "
                                        "types empty)");

    if (port == FILTER_ANY_PORT) {
        if (d.verdict == FILTER_BLOCK) {
            fprintf(out, "%s: blocked (not-allowed): no rule matches\n  DNS: %s\n", name, dns);
            return MOAT_EXIT_BLOCKED;
        }
        fprintf(out, "%s: allowed (allowlist) on the ports of %zu matching rule%s\n", name, n,
                n == 1 ? "" : "s");
        for (size_t i = 0; i < shown; i++)
            cli_print_rule(out, w, rules[i]);
        fprintf(out, "  DNS: %s\n", dns);
        return MOAT_EXIT_OK;
    }

    if (d.verdict == FILTER_ALLOW) {
        fprintf(out, "%s port %d: allowed (allowlist)\n", name, port);
        cli_print_rule(out, w, d.rule);
        if (!cli_port_in(&c->proxy.tls_ports, port) && !cli_port_in(&c->proxy.http_ports, port))
            fprintf(out,
                    "  port %d is neither a tls nor an http port: a transparent connection "
                    "is admitted only to an address this client resolved the name to "
                    "through moat\n",
                    port);
        fprintf(out, "  DNS: %s\n", dns);
        return MOAT_EXIT_OK;
    }
    fprintf(out, "%s port %d: blocked (%s)%s\n", name, port, filter_reason_str(d.reason),
            d.reason == FILTER_REASON_PORT ? ": matching rules allow other ports"
                                           : ": no rule matches");
    for (size_t i = 0; i < shown; i++)
        cli_print_rule(out, w, rules[i]);
    fprintf(out, "  DNS: %s\n", dns);
    return MOAT_EXIT_BLOCKED;
}

/* Who `moat explain` decides as: the tenant of --client ADDR or --user
 * NAME, else no tenant. 0, or 1 (usage, said on err). */
static int cli_who(const moat_gen_t *gen, const char *client, const char *user, cli_who_t *w,
                   FILE *err)
{
    w->tenant = -1;
    if (client) {
        filter_addr_t a;
        if (filter_addr_parse(client, strlen(client), &a) != 0) {
            fprintf(err, "moat explain: --client '%s' is not an IPv4 or IPv6 address\n", client);
            return 1;
        }
        w->tenant = gen->clients ? filter_tenants_lookup(gen->clients, &a) : -1;
    } else if (user) {
        w->tenant = moat_gen_user_tenant(gen, user, strlen(user));
        if (w->tenant < 0) {
            fprintf(err, "moat explain: no tenant has a user '%s'\n", user);
            return 1;
        }
    }
    w->sc = moat_gen_scope_at(gen, w->tenant);
    return 0;
}

int cli_explain(const char *path, const char *target, const char *port_text, const char *client,
                const char *user, FILE *out, FILE *err)
{
    int port = FILTER_ANY_PORT;
    if (port_text && cli_parse_port(port_text, &port) != 0) {
        fprintf(err, "moat explain: PORT must be a number from 1 to 65535, not '%s'\n", port_text);
        return MOAT_EXIT_CONFIG;
    }
    size_t tlen = strlen(target);
    if (tlen == 0) {
        fprintf(err, "moat explain: TARGET is empty\n");
        return MOAT_EXIT_CONFIG;
    }
    /* "[2001:db8::1]" is accepted as written in URLs. */
    const char *t = target;
    if (tlen > 2 && target[0] == '[' && target[tlen - 1] == ']') {
        t = target + 1;
        tlen -= 2;
    }
    filter_addr_t addr;
    bool is_addr = filter_text_looks_like_addr(t, tlen);
    if (is_addr && filter_addr_parse(t, tlen, &addr) != 0) {
        fprintf(err, "moat explain: '%s' looks like an address but is not one\n", target);
        return MOAT_EXIT_CONFIG;
    }

    moat_gen_t *gen;
    if (cli_load_config(path, &gen, err) != 0)
        return MOAT_EXIT_CONFIG;
    cli_who_t w = {.gen = gen, .path = path};
    if (cli_who(gen, client, user, &w, err) != 0) {
        moat_gen_unref(gen);
        return MOAT_EXIT_CONFIG;
    }
    if (w.sc.tenant)
        fprintf(out, "as tenant %s (%s:%u)\n", w.sc.tenant,
                gen->cfg->tenants[w.tenant].file ? gen->cfg->tenants[w.tenant].file : path,
                gen->cfg->tenants[w.tenant].line);
    else if (client && gen->cfg->n_tenants)
        fprintf(out, "as no tenant: %s is in no tenant's clients (the top-level allow)\n", client);
    int rc =
        is_addr ? cli_explain_addr(&w, &addr, port, out) : cli_explain_name(&w, target, port, out);
    if (rc == MOAT_EXIT_BLOCKED && w.sc.audit)
        fprintf(out, "  mode: audit -- this would be blocked; audit logs it and lets it through\n");
    moat_gen_unref(gen);
    return rc;
}
