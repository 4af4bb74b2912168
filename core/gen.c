/* core/gen.c: generations (see gen.h). */
#include "core/gen.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "core/stats.h"
#include "filter/siphash.h"

#define GEN_SHA256_LEN 32

/* A proxy user: its name (the cfg's), its tenant, and the SHA-256 of its
 * password, so that a check hashes the given password and compares digests
 * (SPEC §2.6). */
struct moat_gen_user {
    const char *name;
    size_t len;
    size_t tenant;
    uint8_t sha256[GEN_SHA256_LEN];
};

/* moat's own listeners, refused as destinations (SPEC §2.4): every listen
 * address of the config. Returns 0 with *out (owned, calloc'd) and *n, or
 * -ENOMEM. */
static int gen_own_listeners(const cfg_t *cfg, struct sockaddr_storage **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    const cfg_addr_list_t *lists[] = {&cfg->dns.listen, &cfg->proxy.transparent, &cfg->proxy.tls,
                                      &cfg->proxy.http, &cfg->proxy.connect,     &cfg->proxy.socks};
    size_t n_own = cfg->metrics.enabled ? 1 : 0;
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        n_own += lists[i]->n;
    struct sockaddr_storage *own = calloc(n_own ? n_own : 1, sizeof *own);
    if (!own)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        for (size_t j = 0; j < lists[i]->n; j++)
            own[k++] = lists[i]->items[j].sa;
    if (cfg->metrics.enabled)
        own[k++] = cfg->metrics.listen.sa;
    *out = own;
    *n = k;
    return 0;
}

/* The view of filtering on with no address rules (any value but 0). */
#define GEN_VIEW_FILTERING 0x9e3779b97f4a7c15ull

/* A fingerprint of the address rules in rules[0..n) (their prefixes, any
 * ports): a sum of hashes, so their order does not matter. The key is fixed:
 * the rules come from the operator, not from a guest. */
static uint64_t gen_view_add(uint64_t view, const filter_rule_t *rules, size_t n)
{
    static const uint8_t key[FILTER_SIPHASH_KEY_LEN] = {0};
    for (size_t i = 0; i < n; i++) {
        if (rules[i].kind != FILTER_RULE_ADDR)
            continue;
        const filter_prefix_t *p = &rules[i].prefix;
        uint8_t buf[18] = {p->addr.family, p->len};
        memcpy(buf + 2, p->addr.bytes, sizeof p->addr.bytes);
        view += filter_siphash(key, buf, sizeof buf);
    }
    return view;
}

/* What every policy of cfg is compiled with besides its rules. */
static filter_policy_input_t gen_input(const cfg_t *cfg, const struct sockaddr_storage *own,
                                       size_t n_own)
{
    return (filter_policy_input_t){
        .filtering = true,
        .tls_ports = cfg->proxy.tls_ports.items,
        .n_tls_ports = cfg->proxy.tls_ports.n,
        .http_ports = cfg->proxy.http_ports.items,
        .n_http_ports = cfg->proxy.http_ports.n,
        .own = own,
        .n_own = n_own,
    };
}

/* Compile an allow list (its rules, and the lists it names, borrowed from
 * gen->lists); *view gets the fingerprint of its address rules. */
static int gen_compile_allow(moat_gen_t *gen, filter_policy_input_t in, const filter_rule_t *rules,
                             size_t n_rules, const size_t *lists, size_t n_lists,
                             filter_policy_t **out, uint64_t *view)
{
    const filter_policy_t **used = calloc(n_lists ? n_lists : 1, sizeof *used);
    if (!used)
        return -ENOMEM;
    uint64_t v = gen_view_add(0, rules, n_rules);
    for (size_t i = 0; i < n_lists; i++) {
        const cfg_list_t *l = &gen->cfg->lists[lists[i]];
        used[i] = gen->lists[lists[i]];
        v = gen_view_add(v, l->rules, l->n_rules);
    }
    in.rules = rules;
    in.n_rules = n_rules;
    in.lists = used;
    in.n_lists = n_lists;
    /* Filtering off rewrites nothing (view 0); filtering on starts from a
     * constant so that no address rules is a view of its own. */
    *view = in.filtering ? v ^ GEN_VIEW_FILTERING : 0;
    int rc = filter_policy_compile(&in, out); /* copies what it keeps of used */
    free(used);
    return rc;
}

/* cfg->lists, each compiled once. */
static int gen_compile_lists(moat_gen_t *gen)
{
    const cfg_t *cfg = gen->cfg;
    if (cfg->n_lists == 0)
        return 0;
    gen->lists = calloc(cfg->n_lists, sizeof *gen->lists);
    if (!gen->lists)
        return -ENOMEM;
    filter_policy_input_t in = gen_input(cfg, NULL, 0);
    for (size_t i = 0; i < cfg->n_lists; i++) {
        in.rules = cfg->lists[i].rules;
        in.n_rules = cfg->lists[i].n_rules;
        int rc = filter_policy_compile(&in, &gen->lists[i]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* cfg->tenants: each one's policy, and the client table. */
static int gen_compile_tenants(moat_gen_t *gen, const struct sockaddr_storage *own, size_t n_own)
{
    const cfg_t *cfg = gen->cfg;
    if (cfg->n_tenants == 0)
        return 0;
    gen->tenants = calloc(cfg->n_tenants, sizeof *gen->tenants);
    filter_tenant_input_t *ti = calloc(cfg->n_tenants, sizeof *ti);
    int rc = -ENOMEM;
    if (!gen->tenants || !ti)
        goto done;
    filter_policy_input_t in = gen_input(cfg, own, n_own);
    for (size_t i = 0; i < cfg->n_tenants; i++) {
        const cfg_tenant_t *t = &cfg->tenants[i];
        moat_tenant_t *mt = &gen->tenants[i];
        gen->n_tenants++;
        mt->name = t->name;
        mt->audit = (t->has_mode ? t->mode : cfg->mode) == CFG_MODE_AUDIT;
        rc = gen_compile_allow(gen, in, t->allow.rules, t->allow.n_rules, t->allow.lists,
                               t->allow.n_lists, &mt->policy, &mt->view);
        if (rc != 0)
            goto done;
        ti[i] = (filter_tenant_input_t){.clients = t->clients, .n_clients = t->n_clients};
    }
    rc = filter_tenants_compile(ti, cfg->n_tenants, &gen->clients);
done:
    free(ti);
    return rc;
}

/* Byte order, then length: a total order on names with any bytes in them. */
static int gen_name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int d = memcmp(a, b, alen < blen ? alen : blen);
    if (d != 0)
        return d;
    return alen < blen ? -1 : alen > blen;
}

static int gen_user_cmp(const void *pa, const void *pb)
{
    const moat_gen_user_t *a = pa, *b = pb;
    return gen_name_cmp(a->name, a->len, b->name, b->len);
}

static int gen_sha256(const void *data, size_t len, uint8_t out[GEN_SHA256_LEN])
{
    static const char empty[1];
    return gnutls_hash_fast(GNUTLS_DIG_SHA256, len ? data : empty, len, out) == 0 ? 0 : -EIO;
}

/* Every tenant's users, sorted by name for gen_user_find. The config
 * refused two tenants with one user, so names are unique. */
static int gen_compile_users(moat_gen_t *gen)
{
    const cfg_t *cfg = gen->cfg;
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_tenants; i++)
        n += cfg->tenants[i].n_users;
    if (n == 0)
        return 0;
    gen->users = calloc(n, sizeof *gen->users);
    if (!gen->users)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->n_tenants; i++) {
        const cfg_tenant_t *t = &cfg->tenants[i];
        for (size_t j = 0; j < t->n_users; j++) {
            const cfg_user_t *cu = &t->users[j];
            moat_gen_user_t *u = &gen->users[gen->n_users++];
            u->name = cu->name;
            u->len = strlen(cu->name);
            u->tenant = i;
            if (cu->hashed)
                memcpy(u->sha256, cu->sha256, sizeof u->sha256);
            else if (gen_sha256(cu->password, strlen(cu->password), u->sha256) != 0)
                return -EIO;
        }
    }
    qsort(gen->users, gen->n_users, sizeof *gen->users, gen_user_cmp);
    return 0;
}

static int gen_tenant_ptr_cmp(const void *pa, const void *pb)
{
    return strcmp((*(const moat_tenant_t *const *)pa)->name,
                  (*(const moat_tenant_t *const *)pb)->name);
}

/* The tenants by name, for moat_gen_tenant_find (names are unique: the
 * config refused duplicates). */
static int gen_index_tenants(moat_gen_t *gen)
{
    if (gen->n_tenants == 0)
        return 0;
    gen->by_name = malloc(gen->n_tenants * sizeof *gen->by_name);
    if (!gen->by_name)
        return -ENOMEM;
    for (size_t i = 0; i < gen->n_tenants; i++)
        gen->by_name[i] = &gen->tenants[i];
    qsort(gen->by_name, gen->n_tenants, sizeof *gen->by_name, gen_tenant_ptr_cmp);
    return 0;
}

static const moat_gen_user_t *gen_user_find(const moat_gen_t *gen, const char *name, size_t len)
{
    if (!name && len > 0)
        return NULL;
    size_t lo = 0, hi = gen->n_users;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const moat_gen_user_t *u = &gen->users[mid];
        int d = gen_name_cmp(name ? name : "", len, u->name, u->len);
        if (d == 0)
            return u;
        if (d < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int moat_gen_from_cfg(cfg_t *cfg, moat_gen_t **out)
{
    *out = NULL;
    struct sockaddr_storage *own = NULL;
    size_t n_own = 0;
    moat_gen_t *gen = calloc(1, sizeof *gen);
    if (!gen) {
        cfg_free(cfg);
        return -ENOMEM;
    }
    atomic_init(&gen->refs, 1);
    gen->cfg = cfg;
    int rc = gen_own_listeners(cfg, &own, &n_own);
    if (rc == 0)
        rc = gen_compile_lists(gen);
    if (rc == 0) {
        filter_policy_input_t in = gen_input(cfg, own, n_own);
        in.filtering = cfg->filtering;
        rc = gen_compile_allow(gen, in, cfg->allow, cfg->n_allow, cfg->allow_lists,
                               cfg->n_allow_lists, &gen->policy, &gen->view);
    }
    if (rc == 0)
        rc = gen_compile_tenants(gen, own, n_own);
    if (rc == 0)
        rc = gen_index_tenants(gen);
    if (rc == 0)
        rc = gen_compile_users(gen);
    free(own);
    if (rc != 0) {
        moat_gen_unref(gen);
        return rc;
    }
    *out = gen;
    return 0;
}

int moat_gen_load(const char *path, moat_gen_t **out, cfg_diag_t *diag)
{
    *out = NULL;
    cfg_t *cfg = NULL;
    int rc;
    if (path) {
        rc = cfg_load_file(path, &cfg, diag);
    } else {
        memset(diag, 0, sizeof *diag);
        rc = cfg_load_default(&cfg);
    }
    if (rc != 0)
        return rc;
    return moat_gen_from_cfg(cfg, out);
}

/* The reaper is read by whichever thread drops a generation's last
 * reference (any worker's loop), so it is set and read under a lock; that
 * happens once per generation, never per query or connection. */
static pthread_mutex_t gen_reaper_lock = PTHREAD_MUTEX_INITIALIZER;
static moat_gen_reap_fn gen_reaper;
static void *gen_reaper_arg;

moat_gen_t *moat_gen_ref(moat_gen_t *gen)
{
    atomic_fetch_add_explicit(&gen->refs, 1, memory_order_relaxed);
    return gen;
}

void moat_gen_unref(moat_gen_t *gen)
{
    if (!gen)
        return;
    unsigned was = atomic_fetch_sub_explicit(&gen->refs, 1, memory_order_acq_rel);
    assert(was > 0);
    if (was > 1)
        return;
    pthread_mutex_lock(&gen_reaper_lock);
    moat_gen_reap_fn reap = gen_reaper;
    void *arg = gen_reaper_arg;
    pthread_mutex_unlock(&gen_reaper_lock);
    if (reap)
        reap(gen, arg);
    else
        moat_gen_free(gen);
}

void moat_gen_set_reaper(moat_gen_reap_fn reap, void *arg)
{
    pthread_mutex_lock(&gen_reaper_lock);
    gen_reaper = reap;
    gen_reaper_arg = arg;
    pthread_mutex_unlock(&gen_reaper_lock);
}

void moat_gen_free(moat_gen_t *gen)
{
    if (!gen)
        return;
    assert(atomic_load_explicit(&gen->refs, memory_order_relaxed) == 0);
    filter_tenants_free(gen->clients);
    for (size_t i = 0; i < gen->n_tenants; i++)
        filter_policy_free(gen->tenants[i].policy);
    free(gen->tenants);
    free(gen->by_name);
    if (gen->users)
        explicit_bzero(gen->users, gen->n_users * sizeof *gen->users);
    free(gen->users);
    filter_policy_free(gen->policy);
    /* The lists last: the policies above borrowed them. */
    for (size_t i = 0; gen->lists && i < gen->cfg->n_lists; i++)
        filter_policy_free(gen->lists[i]);
    free(gen->lists);
    cfg_free(gen->cfg);
    free(gen);
}

moat_scope_t moat_gen_scope_at(const moat_gen_t *gen, long i)
{
    if (i < 0 || (size_t)i >= gen->n_tenants)
        return (moat_scope_t){
            .policy = gen->policy, .audit = gen->cfg->mode == CFG_MODE_AUDIT, .view = gen->view};
    const moat_tenant_t *t = &gen->tenants[i];
    return (moat_scope_t){
        .tenant = t->name, .policy = t->policy, .audit = t->audit, .view = t->view};
}

moat_scope_t moat_gen_scope(const moat_gen_t *gen, const filter_addr_t *client)
{
    return moat_gen_scope_at(gen, gen->clients ? filter_tenants_lookup(gen->clients, client) : -1);
}

bool moat_gen_same_upstream(const moat_gen_t *a, const moat_gen_t *b)
{
    const cfg_addr_list_t *x = &a->cfg->dns.upstream, *y = &b->cfg->dns.upstream;
    if (x->n != y->n)
        return false;
    for (size_t i = 0; i < x->n; i++)
        if (!filter_sockaddr_equal(&x->items[i].sa, &y->items[i].sa))
            return false;
    return true;
}

void moat_gen_publish(moat_gen_t *gen)
{
    for (size_t i = 0; i < gen->n_tenants; i++)
        gen->tenants[i].stats_id = stats_tenant(gen->tenants[i].name);
}

long moat_gen_tenant_find(const moat_gen_t *gen, const char *name)
{
    size_t lo = 0, hi = gen->by_name ? gen->n_tenants : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int d = strcmp(name, gen->by_name[mid]->name);
        if (d == 0)
            return (long)(gen->by_name[mid] - gen->tenants);
        if (d < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -1;
}

bool moat_gen_has_users(const moat_gen_t *gen)
{
    return gen->n_users > 0;
}

long moat_gen_user_tenant(const moat_gen_t *gen, const char *user, size_t user_len)
{
    const moat_gen_user_t *u = gen_user_find(gen, user, user_len);
    return u ? (long)u->tenant : -1;
}

/* Whether client is one of tenant t's guests: inside one of its prefixes,
 * or any client when it names none. */
static bool gen_client_ok(const moat_gen_t *gen, size_t t, const filter_addr_t *client)
{
    const cfg_tenant_t *ct = &gen->cfg->tenants[t];
    if (ct->n_clients == 0)
        return true;
    if (!client)
        return false;
    for (size_t i = 0; i < ct->n_clients; i++)
        if (filter_prefix_contains(&ct->clients[i], client))
            return true;
    return false;
}

long moat_gen_user_auth(const moat_gen_t *gen, const filter_addr_t *client, const char *user,
                        size_t user_len, const char *pass, size_t pass_len)
{
    /* Compared against when the user is unknown, so that case costs what a
     * wrong password does. */
    static const uint8_t none[GEN_SHA256_LEN];
    uint8_t got[GEN_SHA256_LEN];
    if ((!pass && pass_len > 0) || gen_sha256(pass, pass_len, got) != 0)
        return -1;
    const moat_gen_user_t *u = gen_user_find(gen, user, user_len);
    const volatile uint8_t *want = u ? u->sha256 : none;
    unsigned diff = 0;
    for (size_t i = 0; i < GEN_SHA256_LEN; i++)
        diff |= (unsigned)(got[i] ^ want[i]);
    explicit_bzero(got, sizeof got);
    if (!u || diff != 0)
        return -1;
    return gen_client_ok(gen, u->tenant, client) ? (long)u->tenant : -1;
}

void moat_gen_swap(moat_gen_t **slot, moat_gen_t *gen)
{
    moat_gen_t *old = *slot;
    *slot = moat_gen_ref(gen);
    moat_gen_unref(old);
}
