/* bench/filter/bench_tenant.c: decision cost against the number of tenants
 * (SPEC §2.7: a decision does not grow with the number of tenants).
 *
 * Builds one shared list of 1,000 rules (exact names, `*.` wildcards, IPv4
 * and IPv6 prefixes, some with ports), compiled once, and N tenants of 20
 * rules each (their own names and prefixes) that all use it, each with one
 * IPv4 and one IPv6 client prefix. A decision is what the daemon does per
 * query or connection: the tenant lookup of the client address, then the
 * tenant policy's name or address decision. The same queries (same seed,
 * same mix of own hits, list hits and misses) are timed with 1 tenant and
 * with 10,000, each from a client of a tenant drawn at random, and the
 * table shows the ratio, the compile time of the whole set and its memory.
 * The 10,000-tenant set is asked from clients of 100 up to all of its
 * tenants, to show where the cost goes: to cache misses as the policies
 * the queries use outgrow the caches, not to more work.
 *
 * Usage: bench_tenant [decisions per measurement, default 1000000; best of 5]
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "filter/policy.h"
#include "filter/policy_internal.h"
#include "filter/tenant.h"

#include "bench_util.h"

#define BT_LIST_RULES   1000
#define BT_TENANT_RULES 20
#define BT_QUERIES      8192
#define BT_NAME_LEN     272
#define BT_REPS         5
#define BT_ACTIVE       100 /* tenants the "active" row's queries come from */

/* A rule set: rules with their texts and ports in parallel arrays. */
typedef struct bt_set {
    filter_rule_t *rules;
    char (*texts)[BT_NAME_LEN];
    filter_port_range_t (*ports)[2];
    size_t n;
} bt_set_t;

static int bt_set_alloc(bt_set_t *s, size_t n)
{
    s->n = n;
    s->rules = calloc(n, sizeof *s->rules);
    s->texts = calloc(n, sizeof *s->texts);
    s->ports = calloc(n, sizeof *s->ports);
    return s->rules && s->texts && s->ports ? 0 : -ENOMEM;
}

static void bt_set_free(bt_set_t *s)
{
    free(s->rules);
    free(s->texts);
    free(s->ports);
}

/* Rule i of s from its text: a name pattern or a prefix. */
static int bt_rule(bt_set_t *s, size_t i, bool with_ports)
{
    filter_rule_t *r = &s->rules[i];
    const char *t = s->texts[i];
    r->text = t;
    r->line = (unsigned)i + 1;
    r->col = 5;
    if (filter_text_looks_like_addr(t, strlen(t))) {
        r->kind = FILTER_RULE_ADDR;
        if (filter_prefix_parse(t, strlen(t), &r->prefix, NULL) != 0)
            return -EINVAL;
    } else {
        r->kind = FILTER_RULE_NAME;
        if (filter_pattern_parse(t, strlen(t), &r->pattern) != 0)
            return -EINVAL;
    }
    if (with_ports) {
        s->ports[i][0] = (filter_port_range_t){443, 443};
        s->ports[i][1] = (filter_port_range_t){22, 22};
        r->ports = s->ports[i];
        r->n_ports = 2;
    }
    return 0;
}

static const unsigned bt_len4[] = {8, 12, 16, 20, 24, 24, 28, 32, 32};
static const unsigned bt_len6[] = {32, 48, 56, 64, 64, 128};

/* The shared list: half exact names, a fifth wildcards, the rest IPv4 and
 * IPv6 prefixes of several lengths; a fifth with ports. Prefixes come from
 * random addresses with their host bits cleared. */
static int bt_make_list(bt_set_t *s, bf_rng_t *r)
{
    if (bt_set_alloc(s, BT_LIST_RULES) != 0)
        return -ENOMEM;
    for (size_t i = 0; i < s->n; i++) {
        char *t = s->texts[i];
        uint32_t k = bf_below(r, 10);
        if (k < 5) {
            snprintf(t, BT_NAME_LEN, "pkg-%zu.mirror-%u.org", i, bf_below(r, 37));
        } else if (k < 7) {
            snprintf(t, BT_NAME_LEN, "*.cdn-%zu.net", i);
        } else if (k < 9) {
            unsigned len = bt_len4[bf_below(r, sizeof bt_len4 / sizeof bt_len4[0])];
            uint32_t a = (uint32_t)bf_next(r) & (len ? ~0u << (32 - len) : 0);
            snprintf(t, BT_NAME_LEN, "%u.%u.%u.%u/%u", a >> 24, a >> 16 & 255, a >> 8 & 255,
                     a & 255, len);
        } else {
            unsigned len = bt_len6[bf_below(r, sizeof bt_len6 / sizeof bt_len6[0])];
            filter_prefix_t p = {.addr.family = AF_INET6, .len = (uint8_t)len};
            for (unsigned b = 0; b < len; b++)
                if (bf_next(r) & 1)
                    p.addr.bytes[b / 8] |= (uint8_t)(0x80u >> (b % 8));
            p.addr.bytes[0] = 0x20;
            p.addr.bytes[1] = 0x01;
            filter_prefix_format(&p, t, BT_NAME_LEN);
        }
        if (bt_rule(s, i, bf_below(r, 5) == 0) != 0)
            return -EINVAL;
    }
    return 0;
}

/* Tenant t's 20 rules: 10 exact names, 4 wildcards, 4 IPv4 prefixes (/24
 * and /32), 2 IPv6 /64s, every name under the tenant's own domain. */
static int bt_make_tenant(bt_set_t *s, size_t t)
{
    for (size_t j = 0; j < BT_TENANT_RULES; j++) {
        char *x = s->texts[j];
        if (j < 10)
            snprintf(x, BT_NAME_LEN, "api-%zu.t%zu.example.com", j, t);
        else if (j < 14)
            snprintf(x, BT_NAME_LEN, "*.svc-%zu.t%zu.example.net", j, t);
        else if (j < 16)
            snprintf(x, BT_NAME_LEN, "198.%zu.%zu.0/24", 18 + j - 14, t % 256);
        else if (j < 18)
            snprintf(x, BT_NAME_LEN, "203.%zu.%zu.%zu", t / 256 % 256, t % 256, j);
        else
            snprintf(x, BT_NAME_LEN, "2001:db8:%zx:%zx::/64", t, j);
        if (bt_rule(s, j, j % 7 == 3) != 0)
            return -EINVAL;
    }
    return 0;
}

/* Tenant t's clients: 100.64.0.0/10 + t (a /32) and fd00:0:<t>::/64. */
static void bt_client(size_t t, bool v6, filter_addr_t *a)
{
    memset(a, 0, sizeof *a);
    if (v6) {
        a->family = AF_INET6;
        a->bytes[0] = 0xfd;
        a->bytes[4] = (uint8_t)(t >> 8);
        a->bytes[5] = (uint8_t)t;
        a->bytes[15] = 7;
    } else {
        a->family = AF_INET;
        a->bytes[0] = 100;
        a->bytes[1] = (uint8_t)(64 + (t >> 16));
        a->bytes[2] = (uint8_t)(t >> 8);
        a->bytes[3] = (uint8_t)t;
    }
}

typedef struct bt_query {
    filter_addr_t client;
    char s[BT_NAME_LEN]; /* name queries */
    size_t len;
    filter_addr_t dst; /* address queries */
    int port;
} bt_query_t;

static const int bt_ports[] = {443, 443, 443, 80, 22, 8080, FILTER_ANY_PORT};

/* The queries, from one seed whatever the number of tenants: a client of
 * a random tenant among the first n_tenants; a name that is one of its own rules (30 %: exact, or
 * 1-2 labels under a wildcard), one of the list's (30 %) or neither (40 %); an address under one of
 * its prefixes (30 %), the list's (30 %) or neither. */
static void bt_make_queries(const bt_set_t *list, size_t n_tenants, bt_query_t *qs)
{
    bf_rng_t r = {0x5eed5eed1234ULL};
    bt_set_t own;
    static filter_rule_t rules[BT_TENANT_RULES];
    static char texts[BT_TENANT_RULES][BT_NAME_LEN];
    static filter_port_range_t ports[BT_TENANT_RULES][2];
    own = (bt_set_t){rules, texts, ports, BT_TENANT_RULES};
    for (size_t i = 0; i < BT_QUERIES; i++) {
        bt_query_t *q = &qs[i];
        size_t t = bf_below(&r, 1000000) % n_tenants;
        bt_make_tenant(&own, t);
        bt_client(t, bf_below(&r, 2), &q->client);
        q->port = bt_ports[bf_below(&r, sizeof bt_ports / sizeof bt_ports[0])];
        uint32_t k = bf_below(&r, 10);
        const filter_rule_t *rule =
            k < 3 ? &own.rules[bf_below(&r, 14)] : &list->rules[bf_below(&r, (uint32_t)list->n)];
        if (k < 6 && rule->kind == FILTER_RULE_NAME && rule->pattern.wildcard)
            snprintf(q->s, BT_NAME_LEN, "%s%s", bf_below(&r, 2) ? "a1.b2." : "www.",
                     rule->pattern.name);
        else if (k < 6 && rule->kind == FILTER_RULE_NAME)
            snprintf(q->s, BT_NAME_LEN, "%s", rule->pattern.name);
        else
            snprintf(q->s, BT_NAME_LEN, "miss-%u.example-%u.com", bf_below(&r, 1000000),
                     bf_below(&r, 100));
        q->len = strlen(q->s);

        k = bf_below(&r, 10);
        rule = k < 3 ? &own.rules[14 + bf_below(&r, 6)]
                     : &list->rules[bf_below(&r, (uint32_t)list->n)];
        if (k < 6 && rule->kind == FILTER_RULE_ADDR) {
            q->dst = rule->prefix.addr; /* the prefix with random host bits */
            unsigned bits = q->dst.family == AF_INET ? 32 : 128;
            for (unsigned b = rule->prefix.len; b < bits; b++)
                if (bf_next(&r) & 1)
                    q->dst.bytes[b / 8] |= (uint8_t)(0x80u >> (b % 8));
        } else {
            memset(&q->dst, 0, sizeof q->dst);
            q->dst.family = AF_INET;
            q->dst.bytes[0] = 11;
            q->dst.bytes[1] = (uint8_t)bf_next(&r);
            q->dst.bytes[2] = (uint8_t)bf_next(&r);
            q->dst.bytes[3] = (uint8_t)bf_next(&r);
        }
    }
}

/* A compiled tenant set: the shared list, one policy per tenant, the table. */
typedef struct bt_world {
    filter_policy_t *list;
    filter_policy_t **pols;
    size_t n;
    filter_tenants_t *table;
    double compile_ms;
    size_t list_bytes, pol_bytes, table_bytes, heap_bytes;
} bt_world_t;

static void bt_world_free(bt_world_t *w)
{
    for (size_t i = 0; w->pols && i < w->n; i++)
        filter_policy_free(w->pols[i]);
    free(w->pols);
    filter_policy_free(w->list);
    filter_tenants_free(w->table);
}

static const filter_port_range_t bt_tls[] = {{443, 443}}, bt_http[] = {{80, 80}, {8080, 8080}};

static int bt_world_build(bt_world_t *w, const bt_set_t *list, size_t n)
{
    bt_set_t own = {0};
    filter_prefix_t *clients = calloc(2 * n, sizeof *clients);
    filter_tenant_input_t *tin = calloc(n, sizeof *tin);
    struct sockaddr_storage sa[2];
    int rc = -ENOMEM;
    memset(w, 0, sizeof *w);
    w->pols = calloc(n, sizeof *w->pols);
    if (!clients || !tin || !w->pols || bt_set_alloc(&own, BT_TENANT_RULES) != 0)
        goto fail;
    /* moat's own listeners, as the daemon gives every policy. */
    filter_addr_t lo = {.family = AF_INET, .bytes = {127, 0, 0, 1}}, any6 = {.family = AF_INET6};
    filter_addr_to_sockaddr(&lo, 53, &sa[0]);
    filter_addr_to_sockaddr(&any6, 8443, &sa[1]);
    filter_policy_input_t in = {
        .filtering = true,
        .rules = list->rules,
        .n_rules = list->n,
        .tls_ports = bt_tls,
        .n_tls_ports = 1,
        .http_ports = bt_http,
        .n_http_ports = 2,
    };

    struct mallinfo2 m0 = mallinfo2();
    double t0 = bf_now();
    if ((rc = filter_policy_compile(&in, &w->list)) != 0)
        goto fail;
    const filter_policy_t *lists[] = {w->list};
    in.lists = lists;
    in.n_lists = 1;
    in.own = sa;
    in.n_own = 2;
    in.rules = own.rules;
    in.n_rules = own.n;
    for (size_t t = 0; t < n; t++) {
        if ((rc = bt_make_tenant(&own, t)) != 0 ||
            (rc = filter_policy_compile(&in, &w->pols[t])) != 0)
            goto fail;
        w->n++;
        bt_client(t, false, &clients[2 * t].addr);
        clients[2 * t].len = 32;
        bt_client(t, true, &clients[2 * t + 1].addr);
        clients[2 * t + 1].addr.bytes[15] = 0;
        clients[2 * t + 1].len = 64;
        tin[t] = (filter_tenant_input_t){&clients[2 * t], 2};
    }
    if ((rc = filter_tenants_compile(tin, n, &w->table)) != 0)
        goto fail;
    w->compile_ms = (bf_now() - t0) * 1e3;
    struct mallinfo2 m1 = mallinfo2();
    w->heap_bytes = m1.uordblks + m1.hblkhd - m0.uordblks - m0.hblkhd;

    filter_policy_stats_t st;
    filter_policy_stats(w->list, &st);
    w->list_bytes = st.bytes;
    for (size_t t = 0; t < n; t++) {
        filter_policy_stats(w->pols[t], &st);
        w->pol_bytes += st.bytes;
    }
    w->table_bytes = filter_tenants_memory(w->table);
    rc = 0;
fail:
    bt_set_free(&own);
    free(clients);
    free(tin);
    return rc;
}

/* The policy deciding for q's client; NULL when it is no tenant's. */
static inline const filter_policy_t *bt_policy(const bt_world_t *w, const bt_query_t *q)
{
    long t = filter_tenants_lookup(w->table, &q->client);
    return t >= 0 ? w->pols[t] : NULL;
}

/* Best ns per decision (tenant lookup + decision) over BT_REPS runs. */
static double bt_time(const bt_world_t *w, const bt_query_t *qs, size_t iters, bool names,
                      size_t *allowed)
{
    double best = 0;
    for (int rep = 0; rep < BT_REPS; rep++) {
        size_t ok = 0;
        double t0 = bf_now();
        for (size_t i = 0; i < iters; i++) {
            const bt_query_t *q = &qs[i % BT_QUERIES];
            const filter_policy_t *p = bt_policy(w, q);
            filter_decision_t d = names ? filter_match_name(p, q->s, q->len, q->port)
                                        : filter_match_addr(p, &q->dst, q->port);
            ok += d.verdict == FILTER_ALLOW;
        }
        double ns = (bf_now() - t0) * 1e9 / (double)iters;
        if (rep == 0 || ns < best)
            best = ns;
        if (rep == 0)
            *allowed = ok;
        bf_sink += ok;
    }
    return best;
}

typedef struct bt_row {
    size_t tenants, active; /* tenants in the set, tenants the queries come from */
    double name_ns, addr_ns;
    size_t allowed_names, allowed_addrs;
} bt_row_t;

int main(int argc, char **argv)
{
    size_t iters = 1000000;
    if (argc > 1) {
        char *end;
        iters = strtoul(argv[1], &end, 10);
        if (*end || iters == 0) {
            fprintf(stderr, "usage: %s [decisions per measurement]\n", argv[0]);
            return 2;
        }
    }
    bf_rng_t rng = {0x9e3779b97f4a7c15ULL};
    bt_set_t list = {0};
    bt_query_t *qs = calloc(BT_QUERIES, sizeof *qs);
    /* Two sets: 1 tenant, and 10,000. The same queries go to the first, then
     * to the second from clients of its first 100, 300, ..., 10,000 tenants:
     * the work of a decision is the same in every row, only how many
     * policies the queries spread over (and so how much of them stays in
     * cache) differs. */
    static const size_t active[] = {1, BT_ACTIVE, 300, 1000, 3000, 10000};
    enum { BT_ROWS = sizeof active / sizeof active[0] };
    bt_world_t worlds[2] = {0};
    bt_row_t rows[BT_ROWS] = {0};
    int rc = 1;
    if (!qs || bt_make_list(&list, &rng) != 0) {
        fprintf(stderr, "bench_tenant: cannot build the list\n");
        goto out;
    }
    static const size_t sizes[2] = {1, 10000};
    for (size_t i = 0; i < 2; i++) {
        int e = bt_world_build(&worlds[i], &list, sizes[i]);
        if (e != 0) {
            fprintf(stderr, "bench_tenant: %zu tenants: %s\n", sizes[i], strerror(-e));
            goto out;
        }
    }
    for (size_t i = 0; i < BT_ROWS; i++) {
        bt_row_t *row = &rows[i];
        const bt_world_t *w = &worlds[i == 0 ? 0 : 1];
        row->tenants = sizes[i == 0 ? 0 : 1];
        row->active = active[i];
        bt_make_queries(&list, active[i], qs);
        row->name_ns = bt_time(w, qs, iters, true, &row->allowed_names);
        row->addr_ns = bt_time(w, qs, iters, false, &row->allowed_addrs);
    }

    printf("| tenants | queries from | their policies MB | ns/name decision | ns/addr decision "
           "| ratio (name, addr) | compile ms | memory MB |\n");
    printf("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (size_t i = 0; i < BT_ROWS; i++) {
        const bt_row_t *r = &rows[i];
        const bt_world_t *w = &worlds[i == 0 ? 0 : 1];
        size_t bytes = w->list_bytes + w->pol_bytes + w->table_bytes;
        double touched = (double)w->pol_bytes / (double)r->tenants * (double)r->active;
        printf("| %zu | %zu | %.3f | %.1f | %.1f | %.2fx, %.2fx | %.1f | %.2f |\n", r->tenants,
               r->active, touched / 1e6, r->name_ns, r->addr_ns, r->name_ns / rows[0].name_ns,
               r->addr_ns / rows[0].addr_ns, w->compile_ms, (double)bytes / 1e6);
    }
    printf("\n%zu decisions per measurement (best of %d) over %d queries; a decision is the "
           "tenant lookup and the policy's decision.\n",
           iters, BT_REPS, BT_QUERIES);
    for (size_t i = 0; i < 2; i++) {
        const bt_world_t *w = &worlds[i];
        printf("%zu tenants: shared list %zu B (compiled once), tenant policies %zu B (%.0f B "
               "each), tenant table %zu B; heap grew %.2f MB\n",
               sizes[i], w->list_bytes, w->pol_bytes, (double)w->pol_bytes / (double)sizes[i],
               w->table_bytes, (double)w->heap_bytes / 1e6);
    }
    for (size_t i = 0; i < BT_ROWS; i++)
        printf("queries from %zu: allowed %zu/%zu names, %zu/%zu addrs\n", rows[i].active,
               rows[i].allowed_names, iters, rows[i].allowed_addrs, iters);
    rc = 0;
out:
    for (size_t i = 0; i < 2; i++)
        bt_world_free(&worlds[i]);
    bt_set_free(&list);
    free(qs);
    return rc;
}
