/* app/learn.c: `moat learn` (see learn.h, SPEC §2.8). */
#include "app/learn.h"

#include <errno.h>
#include <libpsl.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "app/args.h"
#include "app/cli.h"
#include "core/gen.h"
#include "core/log.h"
#include "core/logread.h"
#include "filter/addr.h"
#include "filter/decide.h"
#include "filter/name.h"
#include "filter/policy.h"

/* Longest line read; a longer one is no line of core/log.c's. */
#define LEARN_LINE_MAX (64u * 1024u)
/* DNS tunnelling: a label this long with this much entropy (bits per
 * character), or this many unique names below one registrable domain. */
#define LEARN_TUNNEL_LABEL   40
#define LEARN_TUNNEL_ENTROPY 3.5
#define LEARN_TUNNEL_NAMES   200
#define LEARN_PORTS_MAX      64
#define LEARN_TIME_MAX       40

typedef enum learn_type { LEARN_NAME, LEARN_ADDR, LEARN_BAD } learn_type_t;

/* One candidate: a name, an address or a name that is not one, as one
 * tenant used it. */
typedef struct learn_ent {
    struct learn_ent *next; /* hash chain */
    char *tenant;           /* "-": none */
    learn_type_t type;
    char *key; /* normalised name, address text, or the escaped bad name */
    uint64_t count;
    char first[LEARN_TIME_MAX], last[LEARN_TIME_MAX];
    uint16_t ports[LEARN_PORTS_MAX]; /* TCP ports, sorted */
    size_t n_ports;
    bool ports_over;    /* used on more than LEARN_PORTS_MAX ports: the lowest kept */
    bool named;         /* ADDR: a name was seen for it (no address rule then) */
    bool tunnel;        /* NAME: looks like DNS tunnelling */
    bool dropped;       /* already allowed by --config, or folded into a wildcard */
    const char *domain; /* NAME: its registrable domain (psl-owned or NULL) */
} learn_ent_t;

typedef struct learn {
    learn_ent_t **buckets;
    size_t n_buckets, n_ents;
    psl_ctx_t *psl;
    moat_gen_t *gen; /* --config, or NULL */
    uint64_t lines, decisions, used, malformed, long_lines, unlearnable;
    char first[LEARN_TIME_MAX], last[LEARN_TIME_MAX];
} learn_t;

static uint64_t learn_hash(const char *tenant, learn_type_t type, const char *key)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)type;
    for (const char *s = tenant; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    h = (h ^ 0x1f) * 1099511628211ull;
    for (const char *s = key; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int learn_grow(learn_t *l)
{
    size_t n = l->n_buckets ? l->n_buckets * 2 : 1024;
    learn_ent_t **b = calloc(n, sizeof *b);
    if (!b)
        return -ENOMEM;
    for (size_t i = 0; i < l->n_buckets; i++)
        for (learn_ent_t *e = l->buckets[i], *next; e; e = next) {
            next = e->next;
            size_t j = learn_hash(e->tenant, e->type, e->key) & (n - 1);
            e->next = b[j];
            b[j] = e;
        }
    free(l->buckets);
    l->buckets = b;
    l->n_buckets = n;
    return 0;
}

/* The entry for (tenant, type, key), made when new; NULL without memory. */
static learn_ent_t *learn_get(learn_t *l, const char *tenant, learn_type_t type, const char *key)
{
    if (l->n_ents >= l->n_buckets && learn_grow(l) != 0)
        return NULL;
    size_t j = learn_hash(tenant, type, key) & (l->n_buckets - 1);
    for (learn_ent_t *e = l->buckets[j]; e; e = e->next)
        if (e->type == type && strcmp(e->key, key) == 0 && strcmp(e->tenant, tenant) == 0)
            return e;
    learn_ent_t *e = calloc(1, sizeof *e);
    if (!e || !(e->tenant = strdup(tenant)) || !(e->key = strdup(key))) {
        if (e)
            free(e->tenant);
        free(e);
        return NULL;
    }
    e->type = type;
    e->next = l->buckets[j];
    l->buckets[j] = e;
    l->n_ents++;
    return e;
}

static void learn_free(learn_t *l)
{
    for (size_t i = 0; i < l->n_buckets; i++)
        for (learn_ent_t *e = l->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e->tenant);
            free(e->key);
            free(e);
        }
    free(l->buckets);
    if (l->psl)
        psl_free(l->psl);
    if (l->gen)
        moat_gen_unref(l->gen);
}

/* A time as the writer writes it; anything else (it goes into a comment)
 * becomes "?". */
static void learn_time(const char *t, char *out)
{
    size_t n = strlen(t);
    bool ok = n > 0 && n < LEARN_TIME_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = (t[i] >= '0' && t[i] <= '9') || strchr("-:.TZ+", t[i]) != NULL;
    if (!ok) {
        t = "?";
        n = 1;
    }
    memcpy(out, t, n);
    out[n] = '\0';
}

static void learn_seen(learn_ent_t *e, const char *when)
{
    e->count++;
    if (!e->first[0] || strcmp(when, e->first) < 0)
        snprintf(e->first, sizeof e->first, "%s", when);
    if (strcmp(when, e->last) > 0)
        snprintf(e->last, sizeof e->last, "%s", when);
}

static void learn_add_port(learn_ent_t *e, unsigned port)
{
    if (port == 0 || port > 65535)
        return;
    size_t i = 0;
    while (i < e->n_ports && e->ports[i] < port)
        i++;
    if (i < e->n_ports && e->ports[i] == port)
        return;
    if (e->n_ports == LEARN_PORTS_MAX) {
        e->ports_over = true;
        if (i == e->n_ports)
            return;
        e->n_ports--; /* the highest goes */
    }
    memmove(e->ports + i + 1, e->ports + i, (e->n_ports - i) * sizeof e->ports[0]);
    e->ports[i] = (uint16_t)port;
    e->n_ports++;
}

/* A tenant name as the config allows it (SPEC §2.7), or "-". */
static bool learn_tenant_ok(const char *t)
{
    if (strcmp(t, "-") == 0)
        return true;
    size_t n = strlen(t);
    if (n == 0 || n > 63 || !((t[0] >= 'a' && t[0] <= 'z') || (t[0] >= '0' && t[0] <= '9')))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || strchr("._-", t[i])))
            return false;
    return true;
}

/* One decision line: blocked, or let through by audit, for a reason a rule
 * can lift. Every TCP line with a name and an address marks the address
 * as named. */
static int learn_rec(learn_t *l, const logread_rec_t *r)
{
    const char *tenant = r->tenant[0] ? r->tenant : "-";
    if (!learn_tenant_ok(tenant)) {
        l->malformed++;
        return 0;
    }
    char when[LEARN_TIME_MAX];
    learn_time(r->time, when);
    if (when[0] != '?') {
        if (!l->first[0] || strcmp(when, l->first) < 0)
            snprintf(l->first, sizeof l->first, "%s", when);
        if (strcmp(when, l->last) > 0)
            snprintf(l->last, sizeof l->last, "%s", when);
    }
    bool tcp = strcmp(r->kind, "tcp") == 0;
    if (tcp && r->dest[0] && r->has_name) {
        learn_ent_t *a = learn_get(l, tenant, LEARN_ADDR, r->dest);
        if (!a)
            return -ENOMEM;
        a->named = true;
    }
    if (strcmp(r->verdict, "block") != 0)
        return 0;
    if (strcmp(r->reason, "not-allowed") != 0 && strcmp(r->reason, "port-not-allowed") != 0) {
        l->unlearnable++;
        return 0;
    }
    l->used++;
    learn_ent_t *e;
    if (r->has_name) {
        char norm[FILTER_NAME_MAX + 1];
        size_t nl;
        if (filter_name_normalize(r->name, r->name_len, norm, &nl) == 0) {
            e = learn_get(l, tenant, LEARN_NAME, norm);
        } else {
            char esc[4 * LOGREAD_NAME_MAX + 1];
            log_escape(r->name, r->name_len, false, esc, sizeof esc);
            e = learn_get(l, tenant, LEARN_BAD, esc);
        }
    } else if (tcp && r->dest[0]) {
        filter_addr_t a;
        if (filter_addr_parse(r->dest, strlen(r->dest), &a) != 0) {
            l->malformed++;
            return 0;
        }
        e = learn_get(l, tenant, LEARN_ADDR, r->dest);
    } else {
        l->unlearnable++;
        return 0;
    }
    if (!e)
        return -ENOMEM;
    learn_seen(e, when);
    if (tcp)
        learn_add_port(e, r->port);
    return 0;
}

static int learn_line(learn_t *l, const char *p, size_t n)
{
    logread_rec_t r;
    l->lines++;
    switch (logread_line(p, n, &r)) {
    case LOGREAD_DECISION:
        l->decisions++;
        return learn_rec(l, &r);
    case LOGREAD_OTHER:
        return 0;
    case LOGREAD_MALFORMED:
        l->malformed++;
        return 0;
    }
    return 0;
}

/* Read one log, plain or gzip (zlib reads a plain file as is). 0, or -1
 * after saying why on err. */
static int learn_file(learn_t *l, const char *path, FILE *err)
{
    bool in = strcmp(path, "-") == 0;
    int fd = in ? dup(STDIN_FILENO) : -1;
    gzFile gz = in ? (fd >= 0 ? gzdopen(fd, "rb") : NULL) : gzopen(path, "rb");
    const char *shown = in ? "(stdin)" : path;
    if (!gz) {
        if (fd >= 0)
            close(fd);
        fprintf(err, "moat learn: %s: %s\n", shown, strerror(errno ? errno : ENOMEM));
        return -1;
    }
    char *buf = malloc(LEARN_LINE_MAX);
    char chunk[16384];
    size_t len = 0;
    bool skipping = false; /* inside a line too long to keep */
    int rc = 0;
    if (!buf) {
        gzclose(gz);
        fprintf(err, "moat learn: %s: out of memory\n", shown);
        return -1;
    }
    for (;;) {
        int n = gzread(gz, chunk, sizeof chunk);
        if (n < 0) {
            int zerr;
            const char *msg = gzerror(gz, &zerr);
            fprintf(err, "moat learn: %s: %s\n", shown, zerr == Z_ERRNO ? strerror(errno) : msg);
            rc = -1;
            break;
        }
        if (n == 0) {
            /* zlib ends a stream cut short (a file still being compressed)
             * as it ends a whole one, and says so in its error state. */
            int zerr;
            (void)gzerror(gz, &zerr);
            if (zerr == Z_BUF_ERROR)
                fprintf(err, "moat learn: %s: the compressed stream ends early: read up to there\n",
                        shown);
            break;
        }
        for (const char *p = chunk, *end = chunk + n; p < end;) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t take = (size_t)((nl ? nl : end) - p);
            if (!skipping && len + take > LEARN_LINE_MAX) {
                skipping = true;
                l->long_lines++;
            }
            if (!skipping) {
                memcpy(buf + len, p, take);
                len += take;
            }
            p += take;
            if (nl) {
                if (!skipping && learn_line(l, buf, len) != 0) {
                    fprintf(err, "moat learn: out of memory\n");
                    rc = -1;
                    goto done;
                }
                len = 0;
                skipping = false;
                p++;
            }
        }
    }
    if (rc == 0 && (len > 0 || skipping))
        fprintf(err, "moat learn: %s: the last line has no end (a log being written?): skipped\n",
                shown);
done:
    free(buf);
    gzclose(gz);
    return rc;
}

/* ---- judging the candidates ---------------------------------------------------------- */

static double learn_entropy(const char *s, size_t n)
{
    unsigned counts[256] = {0};
    for (size_t i = 0; i < n; i++)
        counts[(unsigned char)s[i]]++;
    double h = 0;
    for (size_t i = 0; i < 256; i++)
        if (counts[i]) {
            double p = (double)counts[i] / (double)n;
            h -= p * log2(p);
        }
    return h;
}

static bool learn_random_label(const char *name)
{
    for (const char *s = name; *s;) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        if (n > LEARN_TUNNEL_LABEL && learn_entropy(s, n) >= LEARN_TUNNEL_ENTROPY)
            return true;
        s += n + (dot ? 1 : 0);
    }
    return false;
}

static int learn_cmp(const void *pa, const void *pb)
{
    const learn_ent_t *a = *(learn_ent_t *const *)pa, *b = *(learn_ent_t *const *)pb;
    int c = strcmp(a->tenant, b->tenant);
    if (c)
        return c;
    if (a->type != b->type)
        return (int)a->type - (int)b->type;
    return strcmp(a->key, b->key);
}

static int learn_cmp_domain(const void *pa, const void *pb)
{
    const learn_ent_t *a = *(learn_ent_t *const *)pa, *b = *(learn_ent_t *const *)pb;
    int c = strcmp(a->tenant, b->tenant);
    if (c)
        return c;
    c = strcmp(a->domain ? a->domain : "", b->domain ? b->domain : "");
    return c ? c : strcmp(a->key, b->key);
}

static bool learn_port_in(const cfg_port_list_t *l, unsigned port)
{
    for (size_t i = 0; i < l->n; i++)
        if (port >= (unsigned)l->items[i].lo && port <= (unsigned)l->items[i].hi)
            return true;
    return false;
}

/* A name rule without ports covers port (tls_ports, http_ports; without
 * --config the defaults, 443 and 80). */
static bool learn_default_port(const learn_t *l, unsigned port)
{
    if (!l->gen)
        return port == 443 || port == 80;
    const cfg_t *c = l->gen->cfg;
    return learn_port_in(&c->proxy.tls_ports, port) || learn_port_in(&c->proxy.http_ports, port);
}

/* With --config: keep of e only what the tenant's policy does not allow
 * yet (dropped when nothing is left). */
static void learn_against_config(learn_t *l, learn_ent_t *e)
{
    if (!l->gen || e->type == LEARN_BAD)
        return;
    long t = strcmp(e->tenant, "-") == 0 ? -1 : moat_gen_tenant_find(l->gen, e->tenant);
    if (t < 0 && strcmp(e->tenant, "-") != 0)
        return; /* a tenant the config does not have: all of it is new */
    moat_scope_t sc = moat_gen_scope_at(l->gen, t);
    if (!filter_policy_filtering(sc.policy)) {
        e->dropped = true; /* filtering off for it: everything is allowed */
        return;
    }
    filter_addr_t a;
    if (e->type == LEARN_ADDR && filter_addr_parse(e->key, strlen(e->key), &a) != 0)
        return;
    if (e->n_ports == 0) { /* a DNS query: allowed when it resolves */
        filter_dns_input_t q = {.name = e->key, .name_len = strlen(e->key)};
        e->dropped = filter_decide_dns(sc.policy, &q).action == FILTER_DNS_RESOLVE;
        return;
    }
    size_t kept = 0;
    for (size_t i = 0; i < e->n_ports; i++) {
        filter_decision_t d =
            e->type == LEARN_ADDR
                ? filter_match_addr(sc.policy, &a, e->ports[i])
                : filter_match_name(sc.policy, e->key, strlen(e->key), e->ports[i]);
        if (d.verdict != FILTER_ALLOW)
            e->ports[kept++] = e->ports[i];
    }
    e->n_ports = kept;
    e->dropped = kept == 0;
}

/* Registrable domains, DNS tunnelling, --config, in that order. */
static void learn_judge(learn_t *l, learn_ent_t **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        learn_ent_t *e = v[i];
        if (e->type == LEARN_ADDR && e->named)
            e->dropped = true; /* a name covers it */
        if (e->type != LEARN_NAME)
            continue;
        e->domain = psl_registrable_domain(l->psl, e->key);
        e->tunnel = learn_random_label(e->key);
    }
    qsort(v, n, sizeof *v, learn_cmp_domain);
    /* psl_registrable_domain points into the name: compare the text. */
    for (size_t i = 0, j; i < n; i = j) {
        const char *d = v[i]->domain;
        for (j = i + 1; j < n && strcmp(v[j]->tenant, v[i]->tenant) == 0 && d && v[j]->domain &&
                        strcmp(v[j]->domain, d) == 0;
             j++)
            ;
        if (d && v[i]->type == LEARN_NAME && j - i >= LEARN_TUNNEL_NAMES)
            for (size_t k = i; k < j; k++)
                v[k]->tunnel = true;
    }
    for (size_t i = 0; i < n; i++)
        if (!v[i]->dropped)
            learn_against_config(l, v[i]);
}

/* ---- printing -------------------------------------------------------------------------- */

static void learn_comment(FILE *out, const learn_ent_t *e)
{
    fprintf(out, " %llu time%s, first %s, last %s\n", (unsigned long long)e->count,
            e->count == 1 ? "" : "s", e->first[0] ? e->first : "?", e->last[0] ? e->last : "?");
}

/* A port no rule without ports covers: the name needs {host, ports}. */
static bool learn_off_port(const learn_t *l, const learn_ent_t *e)
{
    for (size_t i = 0; i < e->n_ports; i++)
        if (!learn_default_port(l, e->ports[i]))
            return true;
    return false;
}

/* Proposed as a rule of its own (not dropped, folded, or set apart). */
static bool learn_proposed(const learn_ent_t *e)
{
    return !e->dropped && !e->tunnel && e->type != LEARN_BAD;
}

static void learn_entry(const learn_t *l, FILE *out, const char *ind, const learn_ent_t *e)
{
    if (e->type == LEARN_ADDR || learn_off_port(l, e)) {
        fprintf(out, "%s- {%s: \"%s\"", ind, e->type == LEARN_ADDR ? "cidr" : "host", e->key);
        if (e->n_ports) {
            fputs(", ports: [", out);
            for (size_t i = 0; i < e->n_ports; i++)
                fprintf(out, "%s%u", i ? ", " : "", e->ports[i]);
            fputs("]", out);
        }
        fprintf(out, "}    #%s%s", e->type == LEARN_ADDR ? " no name seen for this address," : "",
                e->ports_over ? " used on more ports than these (the lowest kept)," : "");
    } else {
        fprintf(out, "%s- \"%s\"    #", ind, e->key);
    }
    learn_comment(out, e);
}

/* A name a wildcard may fold in: proposed, plain (no ports of its own),
 * strictly below its registrable domain. */
static bool learn_foldable(const learn_t *l, const learn_ent_t *e)
{
    return e->type == LEARN_NAME && learn_proposed(e) && !learn_off_port(l, e) && e->domain &&
           strcmp(e->key, e->domain) != 0;
}

/* --wildcards N over one tenant's entries v[i, j) (sorted by domain): N or
 * more names strictly below one registrable domain become "*.domain";
 * never over a public suffix. Returns how many it printed. */
static size_t learn_wildcards(const learn_t *l, FILE *out, const char *ind, learn_ent_t **v,
                              size_t i, size_t j, unsigned want)
{
    size_t printed = 0;
    for (size_t a = i, b; a < j; a = b) {
        const char *d = v[a]->domain;
        for (b = a + 1; b < j && d && v[b]->domain && strcmp(v[b]->domain, d) == 0; b++)
            ;
        size_t below = 0;
        for (size_t k = a; k < b; k++)
            below += learn_foldable(l, v[k]);
        if (!d || below < want || psl_is_public_suffix(l->psl, d))
            continue;
        learn_ent_t agg = {.count = 0};
        for (size_t k = a; k < b; k++) {
            learn_ent_t *e = v[k];
            if (!learn_foldable(l, e))
                continue;
            e->dropped = true;
            agg.count += e->count;
            if (!agg.first[0] || strcmp(e->first, agg.first) < 0)
                memcpy(agg.first, e->first, sizeof agg.first);
            if (strcmp(e->last, agg.last) > 0)
                memcpy(agg.last, e->last, sizeof agg.last);
        }
        fprintf(out, "%s- \"*.%s\"    # %zu names below %s,", ind, d, below, d);
        learn_comment(out, &agg);
        printed++;
    }
    return printed;
}

/* What is listed apart, as comments: names that are no host names, and
 * names that look like DNS tunnelling. */
static void learn_apart(FILE *out, const char *ind, learn_ent_t **v, size_t i, size_t j)
{
    for (size_t k = i; k < j; k++) {
        const learn_ent_t *e = v[k];
        if (e->type == LEARN_BAD)
            fprintf(out, "%s# not proposed, not a valid host name (escaped): %s    #", ind, e->key);
        else if (e->tunnel && !e->dropped)
            fprintf(out, "%s# WARNING, not proposed, looks like DNS tunnelling: %s    #", ind,
                    e->key);
        else
            continue;
        learn_comment(out, e);
    }
}

/* One tenant's (or the top level's) section: entries v[i, j), sorted by
 * domain. */
static void learn_section(const learn_t *l, const learn_opts_t *o, FILE *out, learn_ent_t **v,
                          size_t i, size_t j)
{
    const char *tenant = v[i]->tenant;
    bool top = strcmp(tenant, "-") == 0;
    const char *ind = top ? "  " : "      ";
    if (!top) {
        fprintf(out, "  - name: %s\n", tenant);
        long t = l->gen ? moat_gen_tenant_find(l->gen, tenant) : -1;
        const cfg_tenant_t *ct = t >= 0 ? &l->gen->cfg->tenants[t] : NULL;
        if (ct && ct->n_clients > 0) {
            fprintf(out, "    clients: [");
            for (size_t k = 0; k < ct->n_clients; k++) {
                char p[FILTER_ADDR_STRLEN + 8];
                fprintf(out, "%s\"%s\"", k ? ", " : "",
                        filter_prefix_format(&ct->clients[k], p, sizeof p));
            }
            fprintf(out, "]    # from %s\n", o->config);
        } else {
            fprintf(out, "%s", l->gen ? "    # a tenant the config does not have yet\n" : "");
            fprintf(out, "    # clients: fill in this tenant's guest addresses (a log cannot "
                         "tell them reliably)\n"
                         "    clients: []\n");
        }
    }
    size_t n = 0;
    for (size_t k = i; k < j; k++)
        n += learn_proposed(v[k]);
    if (n == 0) {
        fprintf(out, "%sallow: []    # nothing new\n", top ? "" : "    ");
        learn_apart(out, ind, v, i, j);
        return;
    }
    fprintf(out, "%sallow:\n", top ? "" : "    ");
    if (o->wildcards)
        learn_wildcards(l, out, ind, v, i, j, o->wildcards);
    /* The rest by name, addresses last. */
    learn_ent_t **w = malloc((j - i) * sizeof *w);
    size_t m = 0;
    for (size_t k = i; k < j && w; k++)
        if (learn_proposed(v[k]))
            w[m++] = v[k];
    if (w)
        qsort(w, m, sizeof *w, learn_cmp);
    for (size_t k = 0; k < m; k++)
        learn_entry(l, out, ind, w[k]);
    free(w);
    learn_apart(out, ind, v, i, j);
}

static void learn_print(learn_t *l, const learn_opts_t *o, FILE *out, learn_ent_t **v, size_t n)
{
    fprintf(out,
            "# moat learn: %llu decision lines of %llu read, %llu blocked or let through "
            "by audit",
            (unsigned long long)l->decisions, (unsigned long long)l->lines,
            (unsigned long long)l->used);
    if (l->first[0])
        fprintf(out, ", from %s to %s", l->first, l->last);
    fprintf(out, "\n# Each entry: how often it was seen (blocked, or let through by audit) and "
                 "when, first and last.\n");
    if (l->unlearnable)
        fprintf(out,
                "# %llu blocked for reasons no allow rule lifts (refused ranges, bad SNI, "
                "...): left out.\n",
                (unsigned long long)l->unlearnable);
    if (o->config)
        fprintf(out,
                "# Against %s: only what it does not allow yet; merge each section into "
                "it (its other settings stay).\n",
                o->config);
    bool any_top = n > 0 && strcmp(v[0]->tenant, "-") == 0;
    size_t i = 0, j;
    if (any_top) {
        for (j = 1; j < n && strcmp(v[j]->tenant, "-") == 0; j++)
            ;
        learn_section(l, o, out, v, 0, j);
        i = j;
    } else {
        fprintf(out, "allow: []    # %s\n",
                n == 0 ? "nothing was blocked" : "clients of no tenant: nothing new");
    }
    if (i < n)
        fprintf(out, "tenants:\n");
    for (; i < n; i = j) {
        for (j = i + 1; j < n && strcmp(v[j]->tenant, v[i]->tenant) == 0; j++)
            ;
        learn_section(l, o, out, v, i, j);
    }
}

int learn_main(const learn_opts_t *o, FILE *out, FILE *err)
{
    learn_t l = {0};
    int status = MOAT_EXIT_OK;
    learn_ent_t **v = NULL;
    if (o->config && cli_load_config(o->config, &l.gen, err) != 0) {
        status = MOAT_EXIT_CONFIG;
        goto fail;
    }
    l.psl = psl_latest(NULL);
    if (!l.psl) {
        fprintf(err, "moat learn: cannot load the Public Suffix List\n");
        status = MOAT_EXIT_RUNTIME;
        goto fail;
    }
    for (size_t i = 0; i < o->n_logs; i++)
        if (learn_file(&l, o->logs[i], err) != 0)
            status = MOAT_EXIT_RUNTIME;
    if (l.malformed || l.long_lines)
        fprintf(err, "moat learn: %llu lines not read (not a log line of moat's%s)\n",
                (unsigned long long)(l.malformed + l.long_lines),
                l.long_lines ? ", or too long" : "");
    v = malloc((l.n_ents ? l.n_ents : 1) * sizeof *v);
    if (!v) {
        fprintf(err, "moat learn: out of memory\n");
        status = MOAT_EXIT_RUNTIME;
        goto fail;
    }
    size_t n = 0;
    for (size_t i = 0; i < l.n_buckets; i++)
        for (learn_ent_t *e = l.buckets[i]; e; e = e->next)
            if (e->type != LEARN_ADDR || e->count > 0) /* an address seen only with a name */
                v[n++] = e;
    learn_judge(&l, v, n);
    learn_print(&l, o, out, v, n);
fail:
    free(v);
    learn_free(&l);
    return status;
}

int learn_cmd(int argc, char **argv, FILE *out, FILE *err)
{
    learn_opts_t o = {0};
    const char **logs = calloc((size_t)(argc > 0 ? argc : 1), sizeof *logs);
    bool ok = logs != NULL;
    for (int i = 2; i < argc && ok; i++) {
        const char *a = argv[i], *val = NULL, *cfg;
        if ((cfg = args_value(argc, argv, &i, "--config")))
            o.config = cfg;
        else if ((val = args_value(argc, argv, &i, "--wildcards")))
            ;
        else if (a[0] != '-' || strcmp(a, "-") == 0)
            logs[o.n_logs++] = a;
        else
            ok = false;
        if (val) {
            char *end;
            errno = 0;
            unsigned long w = strtoul(val, &end, 10);
            ok = *val >= '0' && *val <= '9' && *end == '\0' && errno == 0 && w >= 2 && w <= 1000000;
            o.wildcards = (unsigned)w;
        }
    }
    if (!ok || o.n_logs == 0) {
        fprintf(err, "usage: moat learn [--config FILE] [--wildcards N] LOG... (N >= 2; "
                     "LOG: a decision log, plain or gzip, - for stdin)\n");
        free(logs);
        return MOAT_EXIT_CONFIG;
    }
    o.logs = logs;
    int rc = learn_main(&o, out, err);
    free(logs);
    return rc;
}
