/* config/config.c: the schema of SPEC §3, walked over parse.c's node tree,
 * and the public loader API.
 *
 * Defaults are not a second copy of the values in C: every load first walks
 * the embedded default YAML (default.c) into the cfg_t, then the operator's
 * file over it, so the documented block and the behaviour cannot drift.
 * Every error is collected (the walk never stops at the first one) and the
 * list is sorted by position before it is handed back.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_internal.h"
#include "filter/addr.h"
#include "filter/name.h"

static const char *const cfg_listen_key[CFG_L_N] = {
    "dns.listen",    "proxy.transparent", "proxy.tls",     "proxy.http",
    "proxy.connect", "proxy.socks",       "metrics.listen"};

/* Add an error; an allocation failure becomes the sticky -ENOMEM. */
void cfg_err(cfg_ctx_t *c, unsigned line, unsigned col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cfg_diag_vadd_in(c->diag, c->file, line, col, fmt, ap);
    va_end(ap);
    if (rc < 0)
        c->rc = rc;
}

void cfg_err_in(cfg_ctx_t *c, const char *file, unsigned line, unsigned col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    /* The config itself is the diag's file: its errors carry none. */
    if (c->cfg->n_files > 0 && file == c->cfg->files[0])
        file = NULL;
    int rc = cfg_diag_vadd_in(c->diag, file, line, col, fmt, ap);
    va_end(ap);
    if (rc < 0)
        c->rc = rc;
}

/* ---- scalar types ---- */

bool cfg_is(const cfg_node_t *n, const char *s)
{
    return n->kind == CFG_NODE_SCALAR && n->len == strlen(s) && memcmp(n->str, s, n->len) == 0;
}

/* YAML null, only for plain scalars: "null" quoted (or !!str null) is a string. */
bool cfg_is_null(const cfg_node_t *n)
{
    return n->kind == CFG_NODE_SCALAR && n->plain &&
           (n->len == 0 || cfg_is(n, "~") || cfg_is(n, "null") || cfg_is(n, "Null") ||
            cfg_is(n, "NULL"));
}

const char *cfg_kind_name(const cfg_node_t *n)
{
    return n->kind == CFG_NODE_SEQ ? "a list" : n->kind == CFG_NODE_MAP ? "a mapping" : "a value";
}

/* A non-null scalar where one is expected; reports "KEY: expected WHAT". */
bool cfg_value(cfg_ctx_t *c, const cfg_node_t *n, const char *key, const char *what)
{
    if (n->kind == CFG_NODE_BAD)
        return false; /* reported when parsed */
    if (n->kind != CFG_NODE_SCALAR) {
        cfg_err(c, CFG_AT(n), "%s: expected %s, not %s", key, what, cfg_kind_name(n));
        return false;
    }
    if (cfg_is_null(n)) {
        cfg_err(c, CFG_AT(n), "%s: no value (expected %s; leave the key out for the default)", key,
                what);
        return false;
    }
    return true;
}

bool cfg_get_enum(cfg_ctx_t *c, const cfg_node_t *n, const char *key, const char *const *names,
                  size_t count, const char *expect, int *out)
{
    if (!cfg_value(c, n, key, expect))
        return false;
    for (size_t i = 0; i < count; i++) {
        if (cfg_is(n, names[i])) {
            *out = (int)i;
            return true;
        }
    }
    char show[CFG_SHOW_MAX];
    cfg_err(c, CFG_AT(n), "%s: %s: expected %s", key, cfg_show(n->str, n->len, show), expect);
    return false;
}

static bool cfg_get_bool(cfg_ctx_t *c, const cfg_node_t *n, const char *key, bool *out)
{
    if (!cfg_value(c, n, key, "true or false"))
        return false;
    if (n->plain && (cfg_is(n, "true") || cfg_is(n, "True") || cfg_is(n, "TRUE"))) {
        *out = true;
        return true;
    }
    if (n->plain && (cfg_is(n, "false") || cfg_is(n, "False") || cfg_is(n, "FALSE"))) {
        *out = false;
        return true;
    }
    char show[CFG_SHOW_MAX];
    cfg_err(c, CFG_AT(n), "%s: %s: expected true or false", key, cfg_show(n->str, n->len, show));
    return false;
}

/* A decimal integer in [min, max]; quoted digits are accepted too. */
static bool cfg_get_uint(cfg_ctx_t *c, const cfg_node_t *n, const char *key, uint64_t min,
                         uint64_t max, uint64_t *out)
{
    if (!cfg_value(c, n, key, "a whole number"))
        return false;
    char show[CFG_SHOW_MAX];
    cfg_show(n->str, n->len, show);
    size_t i = n->str[0] == '-' || n->str[0] == '+' ? 1 : 0;
    bool range = n->str[0] == '-';
    uint64_t v = 0;
    if (i == n->len) {
        cfg_err(c, CFG_AT(n), "%s: %s: expected a whole number", key, show);
        return false;
    }
    for (; i < n->len; i++) {
        if (n->str[i] < '0' || n->str[i] > '9') {
            cfg_err(c, CFG_AT(n), "%s: %s: expected a whole number", key, show);
            return false;
        }
        if (v > max)
            range = true; /* keeps scanning for a non-digit, never overflows */
        else
            v = v * 10 + (uint64_t)(n->str[i] - '0');
    }
    if (range || v < min || v > max) {
        cfg_err(c, CFG_AT(n), "%s: %s: must be between %llu and %llu", key, show,
                (unsigned long long)min, (unsigned long long)max);
        return false;
    }
    *out = v;
    return true;
}

static const char *cfg_fmt_ms(uint64_t ms, char *buf, size_t n)
{
    if (ms != 0 && ms % 3600000 == 0)
        snprintf(buf, n, "%lluh", (unsigned long long)(ms / 3600000));
    else if (ms != 0 && ms % 60000 == 0)
        snprintf(buf, n, "%llum", (unsigned long long)(ms / 60000));
    else if (ms % 1000 == 0)
        snprintf(buf, n, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, n, "%llums", (unsigned long long)ms);
    return buf;
}

static bool cfg_get_duration(cfg_ctx_t *c, const cfg_node_t *n, const char *key, uint64_t min,
                             uint64_t max, uint64_t *out)
{
    if (!cfg_value(c, n, key, "a duration like 2s"))
        return false;
    char show[CFG_SHOW_MAX], lo[32], hi[32];
    cfg_show(n->str, n->len, show);
    const char *why;
    uint64_t ms;
    if (cfg_duration_parse(n->str, n->len, &ms, &why) != 0) {
        cfg_err(c, CFG_AT(n), "%s: %s: %s", key, show, why);
        return false;
    }
    if (ms < min || ms > max) {
        cfg_err(c, CFG_AT(n), "%s: %s: must be between %s and %s", key, show,
                cfg_fmt_ms(min, lo, sizeof lo), cfg_fmt_ms(max, hi, sizeof hi));
        return false;
    }
    *out = ms;
    return true;
}

/* ---- lists ---- */

static void cfg_set_pos(cfg_ctx_t *c, cfg_pos_t **slot, cfg_pos_t *pos)
{
    free(*slot);
    *slot = NULL;
    if (c->user)
        *slot = pos;
    else
        free(pos);
}

/* A list of addresses; listen lists need a port (0: any free port), upstream
 * lists default to 53. A null value is an empty list. */
static void cfg_get_addrs(cfg_ctx_t *c, const cfg_node_t *n, const char *key, uint16_t default_port,
                          cfg_addr_list_t *out, cfg_pos_t **pos_slot)
{
    cfg_addr_list_t l = {0};
    cfg_pos_t *pos = NULL;
    bool listen = default_port == 0;
    if (n->kind == CFG_NODE_BAD)
        return;
    if (!cfg_is_null(n)) {
        if (n->kind != CFG_NODE_SEQ) {
            cfg_err(c, CFG_AT(n), "%s: expected a list of addresses, e.g. [\"%s\"]", key,
                    listen ? "127.0.0.1:5353" : "192.0.2.53");
            return;
        }
        if (n->n > 0) {
            l.items = calloc(n->n, sizeof *l.items);
            pos = calloc(n->n, sizeof *pos);
            if (!l.items || !pos) {
                c->rc = -ENOMEM;
                goto fail;
            }
        }
        for (size_t i = 0; i < n->n; i++) {
            const cfg_node_t *k = n->kids[i];
            if (!cfg_value(c, k, key, "an address"))
                continue;
            const char *why;
            if (cfg_hostport_parse(k->str, k->len, default_port, listen, &l.items[l.n], &why) !=
                0) {
                char show[CFG_SHOW_MAX];
                cfg_err(c, CFG_AT(k), "%s: %s: %s", key, cfg_show(k->str, k->len, show), why);
                continue;
            }
            pos[l.n] = (cfg_pos_t){k->line, k->col};
            l.n++;
        }
    }
    free(out->items);
    *out = l;
    if (pos_slot)
        cfg_set_pos(c, pos_slot, pos);
    else
        free(pos);
    return;
fail:
    free(l.items);
    free(pos);
}

/* A list of ports and ranges. Returns true and hands over the items (NULL
 * for an empty list) when every item parsed. */
static bool cfg_get_ports(cfg_ctx_t *c, const cfg_node_t *n, const char *key, bool empty_ok,
                          filter_port_range_t **items, size_t *count, cfg_pos_t **pos_out)
{
    *items = NULL;
    *count = 0;
    if (pos_out)
        *pos_out = NULL;
    if (n->kind == CFG_NODE_BAD)
        return false;
    if (cfg_is_null(n) || (n->kind == CFG_NODE_SEQ && n->n == 0)) {
        if (empty_ok)
            return true;
        cfg_err(c, CFG_AT(n), "%s: empty list would allow no port; leave %s out for the defaults",
                key, key);
        return false;
    }
    if (n->kind != CFG_NODE_SEQ) {
        cfg_err(c, CFG_AT(n), "%s: expected a list of ports, e.g. [443, 8000-8100]", key);
        return false;
    }
    filter_port_range_t *r = calloc(n->n, sizeof *r);
    cfg_pos_t *pos = calloc(n->n, sizeof *pos);
    if (!r || !pos) {
        c->rc = -ENOMEM;
        goto fail;
    }
    bool ok = true;
    for (size_t i = 0; i < n->n; i++) {
        const cfg_node_t *k = n->kids[i];
        if (!cfg_value(c, k, key, "a port")) {
            ok = false;
            continue;
        }
        const char *why;
        if (cfg_port_range_parse(k->str, k->len, &r[i], &why) != 0) {
            char show[CFG_SHOW_MAX];
            cfg_err(c, CFG_AT(k), "%s: %s: %s", key, cfg_show(k->str, k->len, show), why);
            ok = false;
        }
        pos[i] = (cfg_pos_t){k->line, k->col};
    }
    if (!ok)
        goto fail;
    *items = r;
    *count = n->n;
    if (pos_out)
        *pos_out = pos;
    else
        free(pos);
    return true;
fail:
    free(r);
    free(pos);
    return false;
}

static void cfg_set_port_list(cfg_ctx_t *c, const cfg_node_t *n, const char *key,
                              cfg_port_list_t *out, cfg_pos_t **pos_slot)
{
    filter_port_range_t *items;
    size_t count;
    cfg_pos_t *pos;
    if (!cfg_get_ports(c, n, key, true, &items, &count, &pos))
        return;
    free(out->items);
    out->items = items;
    out->n = count;
    cfg_set_pos(c, pos_slot, pos);
}

/* ---- mappings ---- */

/* Edit distance, case-folded, for "did you mean"; keys are short. */
size_t cfg_distance(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b), row[33];
    if (alen > 32 || blen > 32)
        return SIZE_MAX;
    for (size_t j = 0; j <= blen; j++)
        row[j] = j;
    for (size_t i = 1; i <= alen; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= blen; j++) {
            size_t cur = row[j];
            size_t cost = tolower((unsigned char)a[i - 1]) != b[j - 1];
            size_t best = row[j] + 1 < row[j - 1] + 1 ? row[j] + 1 : row[j - 1] + 1;
            row[j] = prev + cost < best ? prev + cost : best;
            prev = cur;
        }
    }
    return row[blen];
}

static void cfg_unknown_key(cfg_ctx_t *c, const cfg_node_t *key, const char *where,
                            const char *const *names, size_t count)
{
    char show[CFG_SHOW_MAX], in[96] = "";
    cfg_show(key->str, key->len, show);
    if (where)
        snprintf(in, sizeof in, " in %s", where);
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < count; i++) {
        size_t d = cfg_distance(key->str, key->len, names[i]);
        if (d < best_d && d <= (strlen(names[i]) <= 4 ? 1u : 2u))
            best = names[i], best_d = d;
    }
    if (best) {
        cfg_err(c, CFG_AT(key), "unknown key \"%s\"%s (did you mean \"%s\"?)", show, in, best);
        return;
    }
    char list[256];
    size_t o = 0;
    list[0] = '\0';
    for (size_t i = 0; i < count && o < sizeof list; i++) {
        int w = snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", names[i]);
        if (w < 0)
            break;
        o += (size_t)w;
    }
    cfg_err(c, CFG_AT(key), "unknown key \"%s\"%s (allowed: %s)", show, in, list);
}

/* Match a mapping's keys against names[count] and hand back each one's value
 * in vals (NULL when absent). Reports keys that are unknown, duplicated or not
 * strings. A null node is an empty mapping. Returns false when n is not a
 * mapping (reported). */
bool cfg_map_shown(cfg_ctx_t *c, const cfg_node_t *n, const char *where, const char *const *names,
                   size_t count, size_t shown, const cfg_node_t **vals)
{
    const cfg_node_t *keys[16] = {0};
    if (count > sizeof keys / sizeof keys[0])
        return false; /* a schema table too big for this function */
    for (size_t i = 0; i < count; i++)
        vals[i] = NULL;
    if (n->kind == CFG_NODE_BAD)
        return false;
    if (cfg_is_null(n))
        return true;
    if (n->kind != CFG_NODE_MAP) {
        if (where)
            cfg_err(c, CFG_AT(n), "%s: expected a mapping (key: value), not %s", where,
                    n->kind == CFG_NODE_SEQ ? "a list" : "a single value");
        else
            cfg_err(c, CFG_AT(n), "expected a mapping of settings (mode:, dns:, allow:, ...)");
        return false;
    }
    for (size_t k = 0; k + 1 < n->n; k += 2) {
        const cfg_node_t *key = n->kids[k];
        if (key->kind == CFG_NODE_BAD)
            continue;
        if (key->kind != CFG_NODE_SCALAR) {
            cfg_err(c, CFG_AT(key), "%s%skeys must be plain names, not %s", where ? where : "",
                    where ? ": " : "", cfg_kind_name(key));
            continue;
        }
        size_t i = 0;
        while (i < count && !cfg_is(key, names[i]))
            i++;
        if (i == count) {
            cfg_unknown_key(c, key, where, names, shown);
        } else if (keys[i]) {
            cfg_err(c, CFG_AT(key), "duplicate key \"%s\"%s%s (first at %u:%u)", names[i],
                    where ? " in " : "", where ? where : "", keys[i]->line, keys[i]->col);
        } else {
            keys[i] = key;
            vals[i] = n->kids[k + 1];
        }
    }
    return true;
}

static bool cfg_map(cfg_ctx_t *c, const cfg_node_t *n, const char *where, const char *const *names,
                    size_t count, const cfg_node_t **vals)
{
    return cfg_map_shown(c, n, where, names, count, count, vals);
}

/* ---- sections ---- */

static void cfg_walk_dns(cfg_ctx_t *c, const cfg_node_t *n)
{
    enum { K_LISTEN, K_UPSTREAM, K_TIMEOUT, K_CACHE, K_N };
    static const char *const names[K_N] = {"listen", "upstream", "timeout", "cache_size"};
    const cfg_node_t *v[K_N];
    cfg_t *cfg = c->cfg;
    if (!cfg_map(c, n, "dns", names, K_N, v))
        return;
    if (v[K_LISTEN])
        cfg_get_addrs(c, v[K_LISTEN], "dns.listen", 0, &cfg->dns.listen, &c->listen_pos[CFG_L_DNS]);
    if (v[K_UPSTREAM])
        cfg_get_addrs(c, v[K_UPSTREAM], "dns.upstream", 53, &cfg->dns.upstream, NULL);
    if (v[K_TIMEOUT])
        cfg_get_duration(c, v[K_TIMEOUT], "dns.timeout", 1, 60000, &cfg->dns.timeout_ms);
    uint64_t u;
    if (v[K_CACHE] && cfg_get_uint(c, v[K_CACHE], "dns.cache_size", 0, 10000000, &u))
        cfg->dns.cache_size = (uint32_t)u;
}

static void cfg_walk_sinkhole(cfg_ctx_t *c, const cfg_node_t *n)
{
    enum { K_MODE, K_IPV4, K_IPV6, K_TTL, K_N };
    static const char *const names[K_N] = {"mode", "ipv4", "ipv6", "ttl"};
    const cfg_node_t *v[K_N];
    cfg_t *cfg = c->cfg;
    char show[CFG_SHOW_MAX];
    if (!cfg_map(c, n, "sinkhole", names, K_N, v))
        return;
    if (v[K_MODE]) {
        /* null (or "") is the address mode: SPEC §3 writes `mode: null`. */
        if (cfg_is_null(v[K_MODE]) || cfg_is(v[K_MODE], ""))
            cfg->sinkhole.mode = CFG_SINKHOLE_ADDRESS;
        else if (cfg_is(v[K_MODE], "nxdomain"))
            cfg->sinkhole.mode = CFG_SINKHOLE_NXDOMAIN;
        else if (cfg_value(c, v[K_MODE], "sinkhole.mode", "nxdomain or null"))
            cfg_err(c, CFG_AT(v[K_MODE]),
                    "sinkhole.mode: %s: expected nxdomain, or null for address answers",
                    cfg_show(v[K_MODE]->str, v[K_MODE]->len, show));
    }
    for (int fam = 0; fam < 2; fam++) {
        const cfg_node_t *a = v[fam ? K_IPV6 : K_IPV4];
        const char *key = fam ? "sinkhole.ipv6" : "sinkhole.ipv4";
        filter_addr_t addr;
        if (!a || !cfg_value(c, a, key, fam ? "an IPv6 address" : "an IPv4 address"))
            continue;
        if (filter_addr_parse(a->str, a->len, &addr) != 0 ||
            addr.family != (fam ? AF_INET6 : AF_INET)) {
            cfg_err(c, CFG_AT(a), "%s: %s: not an %s address", key, cfg_show(a->str, a->len, show),
                    fam ? "IPv6" : "IPv4");
            continue;
        }
        if (fam)
            memcpy(cfg->sinkhole.ipv6, addr.bytes, 16);
        else
            memcpy(cfg->sinkhole.ipv4, addr.bytes, 4);
    }
    uint64_t ms;
    /* RFC 2181 §8: a TTL is at most 2^31 - 1 seconds. */
    if (v[K_TTL] && cfg_get_duration(c, v[K_TTL], "sinkhole.ttl", 0, 2147483647ull * 1000, &ms)) {
        if (ms % 1000 != 0)
            cfg_err(c, CFG_AT(v[K_TTL]), "sinkhole.ttl: %s: a TTL is a whole number of seconds",
                    cfg_show(v[K_TTL]->str, v[K_TTL]->len, show));
        else
            cfg->sinkhole.ttl_s = (uint32_t)(ms / 1000);
    }
}

static void cfg_walk_proxy(cfg_ctx_t *c, const cfg_node_t *n)
{
    enum {
        K_TRANSPARENT,
        K_TLS,
        K_HTTP,
        K_CONNECT_LISTEN,
        K_SOCKS,
        K_TLS_PORTS,
        K_HTTP_PORTS,
        K_MAX_HELLO,
        K_MAX_HEAD,
        K_PEEK,
        K_CONNECT,
        K_IDLE,
        K_MAX_CONN,
        K_N
    };
    static const char *const names[K_N] = {
        "transparent",     "tls",          "http",           "connect",       "socks",
        "tls_ports",       "http_ports",   "max_hello",      "max_http_head", "peek_timeout",
        "connect_timeout", "idle_timeout", "max_connections"};
    const cfg_node_t *v[K_N];
    cfg_t *cfg = c->cfg;
    if (!cfg_map(c, n, "proxy", names, K_N, v))
        return;
    if (v[K_TRANSPARENT])
        cfg_get_addrs(c, v[K_TRANSPARENT], "proxy.transparent", 0, &cfg->proxy.transparent,
                      &c->listen_pos[CFG_L_TRANSPARENT]);
    if (v[K_TLS])
        cfg_get_addrs(c, v[K_TLS], "proxy.tls", 0, &cfg->proxy.tls, &c->listen_pos[CFG_L_TLS]);
    if (v[K_HTTP])
        cfg_get_addrs(c, v[K_HTTP], "proxy.http", 0, &cfg->proxy.http, &c->listen_pos[CFG_L_HTTP]);
    if (v[K_CONNECT_LISTEN])
        cfg_get_addrs(c, v[K_CONNECT_LISTEN], "proxy.connect", 0, &cfg->proxy.connect,
                      &c->listen_pos[CFG_L_CONNECT]);
    if (v[K_SOCKS])
        cfg_get_addrs(c, v[K_SOCKS], "proxy.socks", 0, &cfg->proxy.socks,
                      &c->listen_pos[CFG_L_SOCKS]);
    if (v[K_TLS_PORTS])
        cfg_set_port_list(c, v[K_TLS_PORTS], "proxy.tls_ports", &cfg->proxy.tls_ports,
                          &c->tls_ports_pos);
    if (v[K_HTTP_PORTS])
        cfg_set_port_list(c, v[K_HTTP_PORTS], "proxy.http_ports", &cfg->proxy.http_ports,
                          &c->http_ports_pos);
    uint64_t u;
    /* A ClientHello or request head needs a few hundred bytes at least; past
     * 1 MiB a peek buffer per connection is a memory hazard, not a feature. */
    if (v[K_MAX_HELLO] && cfg_get_uint(c, v[K_MAX_HELLO], "proxy.max_hello", 512, 1048576, &u))
        cfg->proxy.max_hello = (uint32_t)u;
    if (v[K_MAX_HEAD] && cfg_get_uint(c, v[K_MAX_HEAD], "proxy.max_http_head", 256, 1048576, &u))
        cfg->proxy.max_http_head = (uint32_t)u;
    if (v[K_PEEK])
        cfg_get_duration(c, v[K_PEEK], "proxy.peek_timeout", 1, 3600000,
                         &cfg->proxy.peek_timeout_ms);
    if (v[K_CONNECT])
        cfg_get_duration(c, v[K_CONNECT], "proxy.connect_timeout", 1, 3600000,
                         &cfg->proxy.connect_timeout_ms);
    if (v[K_IDLE])
        cfg_get_duration(c, v[K_IDLE], "proxy.idle_timeout", 1, 7ull * 24 * 3600000,
                         &cfg->proxy.idle_timeout_ms);
    if (v[K_MAX_CONN] && cfg_get_uint(c, v[K_MAX_CONN], "proxy.max_connections", 1, 1000000, &u))
        cfg->proxy.max_connections = (uint32_t)u;
}

enum { CFG_WANT_ANY, CFG_WANT_NAME, CFG_WANT_ADDR };

/* The target of a rule: a name pattern or an address prefix (SPEC §2.1). A
 * text that looks like an address is parsed as one, so 300.1.2.3 is an
 * error and not a name. */
static bool cfg_rule_target(cfg_ctx_t *c, const cfg_node_t *v, int want, filter_rule_t *r)
{
    char show[CFG_SHOW_MAX];
    cfg_show(v->str, v->len, show);
    bool addr = filter_text_looks_like_addr(v->str, v->len);
    if (want == CFG_WANT_NAME && addr) {
        cfg_err(c, CFG_AT(v), "%s: an address under host:; use cidr: for addresses", show);
        return false;
    }
    if (want == CFG_WANT_ADDR && !addr) {
        cfg_err(c, CFG_AT(v), "%s: not an address or prefix; use host: for names", show);
        return false;
    }
    if (addr) {
        const char *why = NULL;
        if (filter_prefix_parse(v->str, v->len, &r->prefix, &why) != 0) {
            cfg_err(c, CFG_AT(v), "%s: %s", show, why ? why : "not a valid address");
            return false;
        }
        r->kind = FILTER_RULE_ADDR;
    } else {
        int st = filter_pattern_parse(v->str, v->len, &r->pattern);
        if (st != FILTER_NAME_OK) {
            cfg_err(c, CFG_AT(v), "%s: %s", show, filter_name_strerror(st));
            return false;
        }
        r->kind = FILTER_RULE_NAME;
    }
    r->text = strndup(v->str, v->len);
    if (!r->text) {
        c->rc = -ENOMEM;
        return false;
    }
    return true;
}

bool cfg_rule(cfg_ctx_t *c, const cfg_node_t *e, filter_rule_t *r)
{
    memset(r, 0, sizeof *r);
    r->line = e->line;
    r->col = e->col;
    if (e->kind == CFG_NODE_BAD)
        return false;
    if (e->kind == CFG_NODE_SEQ) {
        cfg_err(c, CFG_AT(e),
                "allow: expected a name, an address, or {host: ...} / {cidr: ...}, "
                "not a list");
        return false;
    }
    if (e->kind == CFG_NODE_SCALAR) {
        if (cfg_is_null(e)) {
            cfg_err(c, CFG_AT(e), "allow: empty entry");
            return false;
        }
        return cfg_rule_target(c, e, CFG_WANT_ANY, r);
    }

    enum { K_HOST, K_CIDR, K_PORTS, K_N };
    static const char *const names[K_N] = {"host", "cidr", "ports"};
    const cfg_node_t *v[K_N];
    if (!cfg_map(c, e, "allow entry", names, K_N, v))
        return false;
    bool ok = true;
    if (v[K_HOST] && v[K_CIDR]) {
        cfg_err(c, CFG_AT(v[K_CIDR]), "an allow entry has host: or cidr:, not both");
        ok = false;
    } else if (!v[K_HOST] && !v[K_CIDR]) {
        cfg_err(c, CFG_AT(e), "allow entry: needs host: NAME or cidr: PREFIX");
        ok = false;
    } else if (v[K_HOST]) {
        ok = cfg_value(c, v[K_HOST], "host", "a host name") &&
             cfg_rule_target(c, v[K_HOST], CFG_WANT_NAME, r);
    } else {
        ok = cfg_value(c, v[K_CIDR], "cidr", "an address or prefix") &&
             cfg_rule_target(c, v[K_CIDR], CFG_WANT_ADDR, r);
    }
    if (v[K_PORTS] && !cfg_get_ports(c, v[K_PORTS], "ports", false, &r->ports, &r->n_ports, NULL))
        ok = false;
    if (!ok) {
        free(r->ports);
        free((char *)r->text);
        memset(r, 0, sizeof *r);
    }
    return ok;
}

void cfg_rules_free(filter_rule_t *rules, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rules[i].ports);
        free((char *)rules[i].text);
    }
    free(rules);
}

static void cfg_walk_allow(cfg_ctx_t *c, const cfg_node_t *n)
{
    cfg_t *cfg = c->cfg;
    /* SPEC §2: present, even empty or null, means filtering on (an air gap). */
    cfg->filtering = true;
    cfg_allow_t a = {0};
    cfg_walk_allow_list(c, n, "allow", false, &a);
    cfg->allow = a.rules;
    cfg->n_allow = a.n_rules;
    cfg->allow_lists = a.lists;
    cfg->n_allow_lists = a.n_lists;
}

static void cfg_walk_log(cfg_ctx_t *c, const cfg_node_t *n)
{
    enum { K_FORMAT, K_LEVEL, K_FILE, K_ALLOWED, K_N };
    static const char *const names[K_N] = {"format", "level", "file", "allowed"};
    static const char *const formats[] = {"text", "json"};
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    const cfg_node_t *v[K_N];
    cfg_t *cfg = c->cfg;
    int e;
    if (!cfg_map(c, n, "log", names, K_N, v))
        return;
    if (v[K_FORMAT] && cfg_get_enum(c, v[K_FORMAT], "log.format", formats, 2, "text or json", &e))
        cfg->log.format = (cfg_log_format_t)e;
    if (v[K_LEVEL] &&
        cfg_get_enum(c, v[K_LEVEL], "log.level", levels, 4, "debug, info, warn or error", &e))
        cfg->log.level = (cfg_log_level_t)e;
    if (v[K_FILE]) {
        const cfg_node_t *f = v[K_FILE];
        free(cfg->log.file);
        cfg->log.file = NULL;
        /* null or "" is stderr, like an absent key. */
        bool off = cfg_is_null(f) || cfg_is(f, "");
        if (!off && cfg_value(c, f, "log.file", "a file path")) {
            if (memchr(f->str, '\0', f->len))
                cfg_err(c, CFG_AT(f), "log.file: the path holds a NUL byte");
            else if (!(cfg->log.file = strdup(f->str)))
                c->rc = -ENOMEM;
        }
    }
    if (v[K_ALLOWED])
        cfg_get_bool(c, v[K_ALLOWED], "log.allowed", &cfg->log.allowed);
}

static void cfg_walk_metrics(cfg_ctx_t *c, const cfg_node_t *n)
{
    enum { K_LISTEN, K_N };
    static const char *const names[K_N] = {"listen"};
    const cfg_node_t *v[K_N];
    cfg_t *cfg = c->cfg;
    if (!cfg_map(c, n, "metrics", names, K_N, v) || !v[K_LISTEN])
        return;
    const cfg_node_t *l = v[K_LISTEN];
    memset(&cfg->metrics, 0, sizeof cfg->metrics);
    free(c->listen_pos[CFG_L_METRICS]);
    c->listen_pos[CFG_L_METRICS] = NULL;
    if (cfg_is_null(l) || cfg_is(l, ""))
        return; /* off */
    if (!cfg_value(c, l, "metrics.listen", "an address like 127.0.0.1:9090"))
        return;
    const char *why;
    if (cfg_hostport_parse(l->str, l->len, 0, true, &cfg->metrics.listen, &why) != 0) {
        char show[CFG_SHOW_MAX];
        cfg_err(c, CFG_AT(l), "metrics.listen: %s: %s", cfg_show(l->str, l->len, show), why);
        return;
    }
    cfg->metrics.enabled = true;
    if (c->user) {
        cfg_pos_t *pos = malloc(sizeof *pos);
        if (!pos) {
            c->rc = -ENOMEM;
            return;
        }
        *pos = (cfg_pos_t){l->line, l->col};
        c->listen_pos[CFG_L_METRICS] = pos;
    }
}

static void cfg_walk_reload(cfg_ctx_t *c, const cfg_node_t *n)
{
    enum { K_WATCH, K_N };
    static const char *const names[K_N] = {"watch"};
    const cfg_node_t *v[K_N];
    if (!cfg_map(c, n, "reload", names, K_N, v))
        return;
    if (v[K_WATCH])
        cfg_get_bool(c, v[K_WATCH], "reload.watch", &c->cfg->reload.watch);
}

/* workers: auto, or 1..CFG_WORKERS_MAX. */
static void cfg_walk_workers(cfg_ctx_t *c, const cfg_node_t *n)
{
    uint64_t u;
    if (n->kind == CFG_NODE_SCALAR && n->plain && cfg_is(n, "auto"))
        c->cfg->workers = 0;
    else if (n->kind == CFG_NODE_SCALAR && n->len > 0 && (n->str[0] < '0' || n->str[0] > '9') &&
             n->str[0] != '-' && n->str[0] != '+') {
        char show[CFG_SHOW_MAX];
        cfg_err(c, CFG_AT(n), "workers: %s: expected auto or a whole number",
                cfg_show(n->str, n->len, show));
    } else if (cfg_get_uint(c, n, "workers", 1, CFG_WORKERS_MAX, &u))
        c->cfg->workers = (unsigned)u;
}

static void cfg_walk(cfg_ctx_t *c, const cfg_node_t *root)
{
    enum {
        K_MODE,
        K_DNS,
        K_SINKHOLE,
        K_PROXY,
        K_ALLOW,
        K_LOG,
        K_METRICS,
        K_GRACE,
        K_LISTS,
        K_TENANTS,
        K_INCLUDE,
        K_RELOAD,
        K_WORKERS,
        K_N
    };
    static const char *const names[K_N] = {
        "mode",           "dns",   "sinkhole", "proxy",   "allow",  "log",    "metrics",
        "shutdown_grace", "lists", "tenants",  "include", "reload", "workers"};
    static const char *const modes[] = {"enforce", "audit"};
    const cfg_node_t *v[K_N];
    cfg_t *cfg = c->cfg;
    int e;
    /* No document, or an empty one: every default. */
    if (!root || !cfg_map(c, root, NULL, names, K_N, v))
        return;
    if (v[K_MODE] && cfg_get_enum(c, v[K_MODE], "mode", modes, 2, "enforce or audit", &e))
        cfg->mode = (cfg_mode_t)e;
    if (v[K_DNS])
        cfg_walk_dns(c, v[K_DNS]);
    if (v[K_SINKHOLE])
        cfg_walk_sinkhole(c, v[K_SINKHOLE]);
    if (v[K_PROXY])
        cfg_walk_proxy(c, v[K_PROXY]);
    /* Lists first: every allow list may name them. */
    if (v[K_LISTS])
        cfg_walk_lists(c, v[K_LISTS]);
    if (v[K_ALLOW])
        cfg_walk_allow(c, v[K_ALLOW]);
    if (v[K_LOG])
        cfg_walk_log(c, v[K_LOG]);
    if (v[K_METRICS])
        cfg_walk_metrics(c, v[K_METRICS]);
    if (v[K_GRACE])
        cfg_get_duration(c, v[K_GRACE], "shutdown_grace", 0, 3600000, &cfg->shutdown_grace_ms);
    if (v[K_RELOAD])
        cfg_walk_reload(c, v[K_RELOAD]);
    if (v[K_WORKERS])
        cfg_walk_workers(c, v[K_WORKERS]);
    /* The config's tenants, then the included files' (SPEC §2.7). */
    if (v[K_TENANTS])
        cfg_walk_tenants(c, v[K_TENANTS]);
    if (v[K_INCLUDE])
        cfg_walk_include(c, v[K_INCLUDE]);
}

/* ---- checks across keys ---- */

typedef struct cfg_listen_ref {
    const cfg_addr_t *addr;
    const cfg_pos_t *pos; /* NULL: a default */
    unsigned list;
    size_t order;
} cfg_listen_ref_t;

static int cfg_listen_cmp(const void *pa, const void *pb)
{
    const cfg_listen_ref_t *a = pa, *b = pb;
    if (a->addr->sa_len != b->addr->sa_len)
        return a->addr->sa_len < b->addr->sa_len ? -1 : 1;
    int d = memcmp(&a->addr->sa, &b->addr->sa, a->addr->sa_len);
    if (d != 0)
        return d;
    return a->order < b->order ? -1 : a->order > b->order;
}

static bool cfg_port0(const cfg_addr_t *a)
{
    const struct sockaddr_storage *ss = &a->sa;
    if (ss->ss_family == AF_INET)
        return ((const struct sockaddr_in *)ss)->sin_port == 0;
    return ((const struct sockaddr_in6 *)ss)->sin6_port == 0;
}

/* Two listeners on one address would fail at bind time with EADDRINUSE;
 * say so now, with the position. Exact duplicates only: 0.0.0.0:80 against
 * 127.0.0.1:80 is left to the kernel. */
static void cfg_check_listen(cfg_ctx_t *c)
{
    const cfg_t *cfg = c->cfg;
    const cfg_addr_list_t metrics = {(cfg_addr_t *)&cfg->metrics.listen,
                                     cfg->metrics.enabled ? 1u : 0u};
    const cfg_addr_list_t *lists[CFG_L_N] = {
        &cfg->dns.listen,    &cfg->proxy.transparent, &cfg->proxy.tls, &cfg->proxy.http,
        &cfg->proxy.connect, &cfg->proxy.socks,       &metrics};
    size_t total = 0;
    for (unsigned l = 0; l < CFG_L_N; l++)
        total += lists[l]->n;
    if (total < 2)
        return;
    cfg_listen_ref_t *refs = calloc(total, sizeof *refs);
    if (!refs) {
        c->rc = -ENOMEM;
        return;
    }
    size_t k = 0;
    for (unsigned l = 0; l < CFG_L_N; l++) {
        for (size_t i = 0; i < lists[l]->n; i++, k++) {
            refs[k] = (cfg_listen_ref_t){&lists[l]->items[i],
                                         c->listen_pos[l] ? &c->listen_pos[l][i] : NULL, l, k};
        }
    }
    qsort(refs, total, sizeof *refs, cfg_listen_cmp);
    /* Equal addresses are now adjacent, earliest first. */
    size_t start = 0;
    for (size_t i = 1; i < total; i++) {
        const cfg_listen_ref_t *first = &refs[start], *dup = &refs[i];
        if (first->addr->sa_len != dup->addr->sa_len ||
            memcmp(&first->addr->sa, &dup->addr->sa, dup->addr->sa_len) != 0) {
            start = i;
            continue;
        }
        if (cfg_port0(dup->addr))
            continue; /* every port 0 listener gets a port of its own */
        const cfg_listen_ref_t *at = dup->pos ? dup : first, *other = dup->pos ? first : dup;
        if (!at->pos)
            continue;
        if (at->list == other->list)
            cfg_err(c, at->pos->line, at->pos->col, "%s: %s: listed twice",
                    cfg_listen_key[at->list], at->addr->text);
        else
            cfg_err(c, at->pos->line, at->pos->col, "%s: %s: also used by %s%s",
                    cfg_listen_key[at->list], at->addr->text, cfg_listen_key[other->list],
                    other->pos ? "" : " (default)");
    }
    free(refs);
}

/* A port is peeked as TLS or as HTTP (SPEC §2.3), never both. */
static void cfg_check_ports(cfg_ctx_t *c)
{
    const cfg_port_list_t *t = &c->cfg->proxy.tls_ports, *h = &c->cfg->proxy.http_ports;
    for (size_t j = 0; j < h->n; j++) {
        for (size_t i = 0; i < t->n; i++) {
            if (h->items[j].hi < t->items[i].lo || t->items[i].hi < h->items[j].lo)
                continue;
            const cfg_pos_t *at = c->http_ports_pos  ? &c->http_ports_pos[j]
                                  : c->tls_ports_pos ? &c->tls_ports_pos[i]
                                                     : NULL;
            unsigned lo = h->items[j].lo > t->items[i].lo ? h->items[j].lo : t->items[i].lo;
            unsigned hi = h->items[j].hi < t->items[i].hi ? h->items[j].hi : t->items[i].hi;
            if (at && lo == hi)
                cfg_err(c, at->line, at->col,
                        "port %u is in both proxy.tls_ports and proxy.http_ports", lo);
            else if (at)
                cfg_err(c, at->line, at->col,
                        "ports %u-%u are in both proxy.tls_ports and proxy.http_ports", lo, hi);
            break;
        }
    }
}

/* ---- API ---- */

/* Where a file comes in the read order: the config 0, included files after. */
static size_t cfg_file_rank(const cfg_t *cfg, const char *file)
{
    if (!file || !cfg)
        return 0;
    for (size_t i = 1; i < cfg->n_files; i++)
        if (strcmp(cfg->files[i], file) == 0)
            return i;
    return SIZE_MAX;
}

static bool cfg_error_after(const cfg_error_t *a, size_t ra, const cfg_error_t *b, size_t rb)
{
    if (ra != rb)
        return ra > rb;
    return a->line > b->line || (a->line == b->line && a->col > b->col);
}

/* Sort by file (in read order), then position. */
static void cfg_diag_sort(cfg_diag_t *d, const cfg_t *cfg)
{
    size_t rank[CFG_MAX_ERRORS + 1];
    if (d->n > CFG_MAX_ERRORS + 1)
        return; /* cfg_diag_vadd keeps no more */
    for (size_t i = 0; i < d->n; i++)
        rank[i] = cfg_file_rank(cfg, d->items[i].file);
    /* Insertion sort: stable, and error lists are short (CFG_MAX_ERRORS). */
    for (size_t i = 1; i < d->n; i++) {
        cfg_error_t e = d->items[i];
        size_t r = rank[i], j = i;
        while (j > 0 && cfg_error_after(&d->items[j - 1], rank[j - 1], &e, r)) {
            d->items[j] = d->items[j - 1];
            rank[j] = rank[j - 1];
            j--;
        }
        d->items[j] = e;
        rank[j] = r;
    }
}

static int cfg_apply(cfg_ctx_t *c, const char *text, size_t len)
{
    cfg_node_t *root = NULL;
    int rc = cfg_yaml_load(text, len, &root, c->diag);
    if (rc == 0) {
        cfg_walk(c, root);
        rc = c->rc;
    }
    cfg_node_free(root);
    return rc;
}

/* The body of both loaders; diag is initialised. */
static int cfg_load_text(const char *name, const char *text, size_t len, bool files_ok, cfg_t **out,
                         cfg_diag_t *diag)
{
    cfg_diag_t ddiag = {0};
    cfg_ctx_t c = {0};
    int rc = -ENOMEM;
    cfg_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg || !(cfg->path = strdup(name)))
        goto fail;
    c.cfg = cfg;

    c.diag = &ddiag;
    rc = cfg_apply(&c, cfg_default_yaml, strlen(cfg_default_yaml));
    if (rc == -EINVAL || (rc == 0 && ddiag.n > 0)) {
        /* Only a broken build gets here; tests/config keeps it from shipping. */
        rc = cfg_diag_add(diag, 0, 0, "internal error: the embedded default config is invalid");
        rc = rc < 0 ? rc : -EINVAL;
    }
    if (rc != 0)
        goto fail;

    c.diag = diag;
    c.user = true;
    c.files_ok = files_ok;
    /* files[0] is the config itself: the file tenants and lists point at. */
    if (!(cfg->files = calloc(1, sizeof *cfg->files)) || !(cfg->files[0] = strdup(name))) {
        rc = -ENOMEM;
        goto fail;
    }
    cfg->n_files = c.cap_files = 1;
    rc = cfg_apply(&c, text, len);
    if (rc == 0) {
        cfg_check_tenants(&c);
        rc = c.rc;
    }
    if (rc == 0 && diag->n == 0) {
        cfg_check_listen(&c);
        cfg_check_ports(&c);
        rc = c.rc;
    }
    if (rc == 0 && diag->n > 0)
        rc = -EINVAL;
    if (rc != 0)
        goto fail;
    *out = cfg;
    cfg = NULL;
fail:
    cfg_diag_sort(diag, cfg ? cfg : *out);
    cfg_diag_free(&ddiag);
    cfg_ctx_tenants_free(&c);
    for (unsigned l = 0; l < CFG_L_N; l++)
        free(c.listen_pos[l]);
    free(c.tls_ports_pos);
    free(c.http_ports_pos);
    cfg_free(cfg);
    return rc;
}

int cfg_load_string(const char *name, const char *text, size_t len, cfg_t **out, cfg_diag_t *diag)
{
    if (out)
        *out = NULL;
    if (!diag)
        return -EINVAL;
    memset(diag, 0, sizeof *diag);
    if (!name)
        name = "<string>";
    if (!(diag->file = strdup(name)))
        return -ENOMEM;
    if (!out || (!text && len > 0))
        return -EINVAL;
    return cfg_load_text(name, text ? text : "", len, false, out, diag);
}

/* Read the whole file; a config is small and libyaml wants it in one piece. */
int cfg_read_file(const char *path, char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    int rc = 0;
    char *b = NULL;
    size_t n = 0, cap = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto fail;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        goto fail;
    }
    for (;;) {
        if (n == cap) {
            if (cap > CFG_MAX_FILE) {
                rc = -EFBIG;
                goto fail;
            }
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(b, cap);
            if (!nb) {
                rc = -ENOMEM;
                goto fail;
            }
            b = nb;
        }
        ssize_t got = read(fd, b + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = -errno;
            goto fail;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    if (n > CFG_MAX_FILE) {
        rc = -EFBIG;
        goto fail;
    }
    close(fd);
    *buf = b;
    *len = n;
    return 0;
fail:
    close(fd);
    free(b);
    return rc;
}

int cfg_load_file(const char *path, cfg_t **out, cfg_diag_t *diag)
{
    if (out)
        *out = NULL;
    if (!diag)
        return -EINVAL;
    memset(diag, 0, sizeof *diag);
    if (!path || !out)
        return -EINVAL;
    if (!(diag->file = strdup(path)))
        return -ENOMEM;
    char *text;
    size_t len;
    int rc = cfg_read_file(path, &text, &len);
    if (rc != 0) {
        int arc;
        if (rc == -EFBIG)
            arc = cfg_diag_add(diag, 0, 0, "cannot read: larger than %u MiB",
                               CFG_MAX_FILE / (1024u * 1024u));
        else
            arc = cfg_diag_add(diag, 0, 0, "cannot read: %s", strerror(-rc));
        return arc < 0 ? arc : rc;
    }
    rc = cfg_load_text(path, text, len, true, out, diag);
    free(text);
    return rc;
}

int cfg_load_default(cfg_t **out)
{
    cfg_diag_t diag;
    int rc = cfg_load_string("<default>", cfg_default_yaml, strlen(cfg_default_yaml), out, &diag);
    cfg_diag_free(&diag);
    return rc;
}

void cfg_free(cfg_t *cfg)
{
    if (!cfg)
        return;
    free(cfg->path);
    free(cfg->dns.listen.items);
    free(cfg->dns.upstream.items);
    free(cfg->proxy.transparent.items);
    free(cfg->proxy.tls.items);
    free(cfg->proxy.http.items);
    free(cfg->proxy.connect.items);
    free(cfg->proxy.socks.items);
    free(cfg->proxy.tls_ports.items);
    free(cfg->proxy.http_ports.items);
    cfg_rules_free(cfg->allow, cfg->n_allow);
    free(cfg->allow_lists);
    cfg_tenants_free(cfg);
    free(cfg->log.file);
    free(cfg);
}

void cfg_diag_free(cfg_diag_t *diag)
{
    if (!diag)
        return;
    for (size_t i = 0; i < diag->n; i++) {
        free(diag->items[i].msg);
        free(diag->items[i].file);
    }
    free(diag->items);
    free(diag->file);
    memset(diag, 0, sizeof *diag);
}

const char *cfg_error_file(const cfg_diag_t *diag, const cfg_error_t *e)
{
    return e->file ? e->file : diag->file;
}

void cfg_diag_print(const cfg_diag_t *diag, FILE *f)
{
    for (size_t i = 0; i < diag->n; i++) {
        const cfg_error_t *e = &diag->items[i];
        const char *file = cfg_error_file(diag, e);
        if (!file)
            file = "<config>";
        if (e->line == 0)
            fprintf(f, "%s: %s\n", file, e->msg);
        else
            fprintf(f, "%s:%u:%u: %s\n", file, e->line, e->col, e->msg);
    }
}
