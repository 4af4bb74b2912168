/* bench/filter/bench_filter.c: decisions per second against rule count
 * (SPEC §6: a decision costs O(length of the name), not O(number of rules)).
 *
 * For 10, 1,000 and 100,000 rules (a mix of exact names, `*.` wildcards, IPv4
 * and IPv6 prefixes of several lengths, a fifth of them with ports) it
 * compiles a policy, then times a fixed number of name decisions (exact hits,
 * wildcard hits at depth, misses, 200+ octet names, bad names) and address
 * decisions (hits and misses, both families), and prints a markdown table.
 * Everything comes from a fixed-seed PRNG, so runs are comparable.
 *
 * Usage: bench_filter [decisions per measurement, default 1000000; best of 5]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "filter/policy.h"
#include "filter/policy_internal.h"

#include "bench_util.h"

#define BF_QUERIES  8192 /* distinct queries per kind, cycled through */
#define BF_NAME_LEN 256

static const char *const bf_tlds[] = {"com", "net", "org", "io", "dev", "cloud", "co.uk"};

/* A plausible registrable name: "<word><n>.<tld>" or "<sub>.<word><n>.<tld>". */
static void bf_name(bf_rng_t *r, char *out, size_t n)
{
    static const char *const words[] = {"api",     "cdn",  "static", "github",  "registry",
                                        "pypi",    "npm",  "update", "objects", "auth",
                                        "storage", "edge", "mirror", "assets",  "files"};
    const char *w = words[bf_below(r, sizeof words / sizeof words[0])];
    const char *t = bf_tlds[bf_below(r, sizeof bf_tlds / sizeof bf_tlds[0])];
    if (bf_below(r, 3) == 0)
        snprintf(out, n, "%s%x.%s-%u.%s", words[bf_below(r, 15)], bf_below(r, 4096), w,
                 bf_below(r, 1000000), t);
    else
        snprintf(out, n, "%s-%u.%s", w, bf_below(r, 1000000), t);
}

static void bf_addr(bf_rng_t *r, bool v6, filter_addr_t *a)
{
    memset(a, 0, sizeof *a);
    a->family = v6 ? AF_INET6 : AF_INET;
    size_t n = v6 ? 16 : 4;
    for (size_t i = 0; i < n; i++)
        a->bytes[i] = (uint8_t)bf_next(r);
    if (v6) {
        a->bytes[0] = 0x20; /* global unicast, never v4-mapped */
        a->bytes[1] = 0x01;
    } else if (a->bytes[0] == 0 || a->bytes[0] == 127 || a->bytes[0] >= 224) {
        a->bytes[0] = 100;
    }
}

static void bf_prefix(const filter_addr_t *a, unsigned len, filter_prefix_t *p)
{
    memset(p, 0, sizeof *p);
    p->addr.family = a->family;
    p->len = (uint8_t)len;
    for (unsigned b = 0; b < len; b++)
        if (a->bytes[b / 8] & (0x80u >> (b % 8)))
            p->addr.bytes[b / 8] |= (uint8_t)(0x80u >> (b % 8));
}

typedef struct bf_set {
    filter_rule_t *rules;
    char (*texts)[BF_NAME_LEN];
    filter_port_range_t (*ports)[2];
    size_t n;
} bf_set_t;

static const unsigned bf_len4[] = {8, 12, 16, 20, 22, 24, 24, 24, 28, 32, 32, 32};
static const unsigned bf_len6[] = {32, 40, 48, 48, 56, 64, 64, 128, 128};

static int bf_make_rules(bf_set_t *s, size_t n, bf_rng_t *r)
{
    s->n = n;
    s->rules = calloc(n, sizeof *s->rules);
    s->texts = calloc(n, sizeof *s->texts);
    s->ports = calloc(n, sizeof *s->ports);
    if (!s->rules || !s->texts || !s->ports)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        filter_rule_t *rule = &s->rules[i];
        uint32_t kind = bf_below(r, 100);
        char *t = s->texts[i];
        if (kind < 70) { /* 45% exact, 25% wildcard */
            char base[128];
            bf_name(r, base, sizeof base);
            snprintf(t, BF_NAME_LEN, "%s%s", kind < 45 ? "" : "*.", base);
            rule->kind = FILTER_RULE_NAME;
            if (filter_pattern_parse(t, strlen(t), &rule->pattern) != 0)
                return -EINVAL;
        } else { /* 20% IPv4, 10% IPv6 */
            bool v6 = kind >= 90;
            filter_addr_t a;
            bf_addr(r, v6, &a);
            unsigned len = v6 ? bf_len6[bf_below(r, sizeof bf_len6 / sizeof bf_len6[0])]
                              : bf_len4[bf_below(r, sizeof bf_len4 / sizeof bf_len4[0])];
            rule->kind = FILTER_RULE_ADDR;
            bf_prefix(&a, len, &rule->prefix);
            filter_prefix_format(&rule->prefix, t, BF_NAME_LEN);
        }
        rule->text = t;
        rule->line = (unsigned)i + 1;
        rule->col = 5;
        if (bf_below(r, 5) == 0) {
            s->ports[i][0] = (filter_port_range_t){443, 443};
            s->ports[i][1] =
                bf_below(r, 2) ? (filter_port_range_t){8000, 8100} : (filter_port_range_t){22, 22};
            rule->ports = s->ports[i];
            rule->n_ports = 2;
        }
    }
    return 0;
}

static void bf_free_rules(bf_set_t *s)
{
    free(s->rules);
    free(s->texts);
    free(s->ports);
}

enum { BF_SHORT, BF_DEEP, BF_BAD, BF_KINDS };
static const char *const bf_kind_names[] = {"short (hits and misses)", "deep (200+ octets)", "bad"};

typedef struct bf_name_q {
    char s[BF_NAME_LEN];
    size_t len;
    int port;
    int kind;
} bf_name_q_t;

typedef struct bf_addr_q {
    filter_addr_t a;
    int port;
} bf_addr_q_t;

static const int bf_ports[] = {443, 443, 443, 80, 22, 8080, 8050, FILTER_ANY_PORT};

/* Queries: a third exact or wildcard hits (wildcards 1-6 labels deep), a
 * third misses, the rest long names (200+ octets, many labels) and a few
 * invalid ones; addresses half hits half misses, both families. */
static void bf_make_queries(const bf_set_t *s, bf_rng_t *r, bf_name_q_t *nq, bf_addr_q_t *aq)
{
    for (size_t i = 0; i < BF_QUERIES; i++) {
        bf_name_q_t *q = &nq[i];
        const filter_rule_t *rule = &s->rules[bf_below(r, (uint32_t)s->n)];
        uint32_t k = bf_below(r, 100);
        q->port = bf_ports[bf_below(r, sizeof bf_ports / sizeof bf_ports[0])];
        q->kind = BF_SHORT;
        if (k < 35 && rule->kind == FILTER_RULE_NAME) {
            if (rule->pattern.wildcard) {
                size_t off = 0, depth = 1 + bf_below(r, 6);
                for (size_t d = 0; d < depth; d++)
                    off += (size_t)snprintf(q->s + off, BF_NAME_LEN - off, "l%u.",
                                            bf_below(r, 100000));
                snprintf(q->s + off, BF_NAME_LEN - off, "%s", rule->pattern.name);
            } else {
                snprintf(q->s, BF_NAME_LEN, "%s", rule->text);
            }
        } else if (k < 70) {
            bf_name(r, q->s, BF_NAME_LEN); /* almost surely a miss */
        } else if (k < 97) {
            /* a deep name: 1-3 char labels up to ~240 octets, then a real base */
            size_t off = 0;
            q->kind = BF_DEEP;
            while (off < 200)
                off += (size_t)snprintf(q->s + off, BF_NAME_LEN - off, "%.*s.",
                                        (int)(1 + bf_below(r, 3)), "abc");
            if (rule->kind == FILTER_RULE_NAME)
                snprintf(q->s + off, BF_NAME_LEN - off, "%s", rule->pattern.name);
            else
                snprintf(q->s + off, BF_NAME_LEN - off, "example.com");
        } else {
            q->kind = BF_BAD;
            snprintf(q->s, BF_NAME_LEN, "bad..name-%u.com", bf_below(r, 1000));
        }
        q->len = strlen(q->s);

        bf_addr_q_t *a = &aq[i];
        const filter_rule_t *ar = &s->rules[bf_below(r, (uint32_t)s->n)];
        a->port = bf_ports[bf_below(r, sizeof bf_ports / sizeof bf_ports[0])];
        if (bf_below(r, 2) && ar->kind == FILTER_RULE_ADDR) {
            filter_addr_t rnd;
            bf_addr(r, ar->prefix.addr.family == AF_INET6, &rnd);
            a->a = ar->prefix.addr; /* keep the prefix, random host bits */
            for (unsigned b = ar->prefix.len; b < (ar->prefix.addr.family == AF_INET ? 32u : 128u);
                 b++)
                a->a.bytes[b / 8] |= (uint8_t)(rnd.bytes[b / 8] & (0x80u >> (b % 8)));
        } else {
            bf_addr(r, bf_below(r, 3) == 0, &a->a);
        }
    }
}

typedef struct bf_row {
    size_t rules;
    double name_ns, addr_ns, compile_ms;
    double kind_ns[BF_KINDS], norm_ns[BF_KINDS];
    double hot_name_ns, hot_addr_ns; /* BF_HOT queries only: all in cache */
    size_t bytes, allowed_names, allowed_addrs;
    filter_policy_stats_t st;
} bf_row_t;

#define BF_REPS 5
#define BF_HOT  256

/* Best ns per call over BF_REPS runs of iters calls cycling through qs;
 * normalise_only times filter_name_normalize alone. *allowed counts the
 * allowed decisions of the first run. */
static double bf_time_names(const filter_policy_t *p, const bf_name_q_t *const *qs, size_t n,
                            size_t iters, bool normalise_only, size_t *allowed)
{
    double best = 0;
    *allowed = 0;
    if (n == 0 || iters == 0)
        return 0;
    for (int rep = 0; rep < BF_REPS; rep++) {
        size_t ok = 0;
        char out[FILTER_NAME_MAX + 1];
        size_t out_len;
        double t0 = bf_now();
        for (size_t i = 0; i < iters; i++) {
            const bf_name_q_t *q = qs[i % n];
            if (normalise_only)
                ok += (size_t)filter_name_normalize(q->s, q->len, out, &out_len) + out_len;
            else
                ok += filter_match_name(p, q->s, q->len, q->port).verdict == FILTER_ALLOW;
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

static double bf_time_addrs(const filter_policy_t *p, const bf_addr_q_t *qs, size_t n, size_t iters,
                            size_t *allowed)
{
    double best = 0;
    *allowed = 0;
    for (int rep = 0; rep < BF_REPS; rep++) {
        size_t ok = 0;
        double t0 = bf_now();
        for (size_t i = 0; i < iters; i++) {
            const bf_addr_q_t *q = &qs[i % n];
            ok += filter_match_addr(p, &q->a, q->port).verdict == FILTER_ALLOW;
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

static int bf_run(size_t n_rules, size_t iters, bf_row_t *row)
{
    static const filter_port_range_t tls[] = {{443, 443}}, http[] = {{80, 80}, {8080, 8080}};
    bf_rng_t rng = {0x9e3779b97f4a7c15ULL ^ n_rules};
    bf_set_t s;
    bf_name_q_t *nq = calloc(BF_QUERIES, sizeof *nq);
    const bf_name_q_t **nq_kind = calloc(2 * BF_QUERIES, sizeof *nq_kind);
    bf_addr_q_t *aq = calloc(BF_QUERIES, sizeof *aq);
    filter_policy_t *p = NULL;
    int rc = -ENOMEM;
    memset(&s, 0, sizeof s);
    memset(row, 0, sizeof *row);
    if (!nq || !aq || !nq_kind)
        goto fail;
    if ((rc = bf_make_rules(&s, n_rules, &rng)) != 0)
        goto fail;
    bf_make_queries(&s, &rng, nq, aq);

    filter_policy_input_t in = {
        .filtering = true,
        .rules = s.rules,
        .n_rules = s.n,
        .tls_ports = tls,
        .n_tls_ports = 1,
        .http_ports = http,
        .n_http_ports = 2,
    };
    double t0 = bf_now();
    if ((rc = filter_policy_compile(&in, &p)) != 0)
        goto fail;
    row->compile_ms = (bf_now() - t0) * 1e3;
    filter_policy_stats(p, &row->st);
    row->rules = n_rules;

    /* Every measurement is the best of BF_REPS runs: the machine is shared,
     * and the minimum is the cost of the code, not of the neighbours. */
    const bf_name_q_t **all = nq_kind + BF_QUERIES;
    for (size_t i = 0; i < BF_QUERIES; i++)
        all[i] = &nq[i];
    row->name_ns = bf_time_names(p, all, BF_QUERIES, iters, false, &row->allowed_names);
    for (int kind = 0; kind < BF_KINDS; kind++) {
        size_t n = 0, ignored;
        for (size_t i = 0; i < BF_QUERIES; i++)
            if (nq[i].kind == kind)
                nq_kind[n++] = &nq[i];
        row->kind_ns[kind] = bf_time_names(p, nq_kind, n, iters / 4, false, &ignored);
        row->norm_ns[kind] = bf_time_names(p, nq_kind, n, iters / 4, true, &ignored);
    }
    row->addr_ns = bf_time_addrs(p, aq, BF_QUERIES, iters, &row->allowed_addrs);
    /* Short names and addresses cycling through only BF_HOT queries: what
     * they touch then stays in cache whatever the policy's size, which
     * separates the work a decision does from the cache misses a big policy
     * costs. */
    size_t ignored, n_short = 0;
    for (size_t i = 0; i < BF_QUERIES && n_short < BF_HOT; i++)
        if (nq[i].kind == BF_SHORT)
            nq_kind[n_short++] = &nq[i];
    row->hot_name_ns = bf_time_names(p, nq_kind, n_short, iters, false, &ignored);
    row->hot_addr_ns = bf_time_addrs(p, aq, BF_HOT, iters, &ignored);
    rc = 0;
fail:
    filter_policy_free(p);
    bf_free_rules(&s);
    free(nq);
    free(nq_kind);
    free(aq);
    return rc;
}

int main(int argc, char **argv)
{
    size_t iters = 1000000;
    if (argc > 1) {
        char *end;
        unsigned long v = strtoul(argv[1], &end, 10);
        if (*end || v == 0 || v > 1000000000UL) {
            fprintf(stderr, "usage: %s [decisions per measurement]\n", argv[0]);
            return 1;
        }
        iters = v;
    }
    static const size_t sizes[] = {10, 1000, 100000};
    bf_row_t rows[3];
    for (size_t i = 0; i < 3; i++) {
        int rc = bf_run(sizes[i], iters, &rows[i]);
        if (rc != 0) {
            fprintf(stderr, "bench_filter: %zu rules: %s\n", sizes[i], strerror(-rc));
            return 2;
        }
    }
    printf("| rules | name decisions/s | ns/name decision | addr decisions/s | ns/addr decision "
           "| compile ms | policy memory |\n");
    printf("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (size_t i = 0; i < 3; i++) {
        const bf_row_t *r = &rows[i];
        printf("| %zu | %.2fM | %.1f | %.2fM | %.1f | %.2f | %zu B (%.1f B/rule) |\n", r->rules,
               1e3 / r->name_ns, r->name_ns, 1e3 / r->addr_ns, r->addr_ns, r->compile_ms,
               r->st.bytes, (double)r->st.bytes / (double)r->rules);
    }
    printf("\n%zu decisions per measurement (best of %d) over %d distinct queries of each kind.\n",
           iters, BF_REPS, BF_QUERIES);
    for (size_t i = 0; i < 3; i++) {
        const bf_row_t *r = &rows[i];
        printf("%zu rules: %zu names in %zu slots, %zu prefixes in %zu slots, %zu+%zu lengths, "
               "longest probe %zu; allowed %zu/%zu names, %zu/%zu addrs\n",
               r->rules, r->st.name_entries, r->st.name_slots, r->st.addr_entries, r->st.addr_slots,
               r->st.v4_lengths, r->st.v6_lengths, r->st.max_probe, r->allowed_names, iters,
               r->allowed_addrs, iters);
    }
    printf("\nns per name decision by kind of name (filter_name_normalize alone in brackets):\n\n");
    printf("| rules |");
    for (int k = 0; k < BF_KINDS; k++)
        printf(" %s |", bf_kind_names[k]);
    printf("\n| ---: | ---: | ---: | ---: |\n");
    for (size_t i = 0; i < 3; i++) {
        printf("| %zu |", rows[i].rules);
        for (int k = 0; k < BF_KINDS; k++)
            printf(" %.1f (%.1f) |", rows[i].kind_ns[k], rows[i].norm_ns[k]);
        printf("\n");
    }
    printf("\nns per decision with the policy's used part in cache (%d distinct short names, %d "
           "addresses):\n\n"
           "| rules | ns/name decision | ns/addr decision |\n| ---: | ---: | ---: |\n",
           BF_HOT, BF_HOT);
    for (size_t i = 0; i < 3; i++)
        printf("| %zu | %.1f | %.1f |\n", rows[i].rules, rows[i].hot_name_ns, rows[i].hot_addr_ns);
    return 0;
}
