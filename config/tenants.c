/* config/tenants.c: SPEC §2.7 in the config: the top-level `lists` of named
 * rule sets, allow lists with {list: NAME} entries, `tenants`, `include` of
 * tenant files, and the checks across tenants (a name, a client prefix or a
 * proxy user belongs to one tenant only).
 *
 * The checks across tenants sort references (name, prefix or user, with its
 * place) instead of comparing every pair, so a host with ten thousand
 * tenants loads in O(n log n).
 */
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config/config_internal.h"
#include "filter/addr.h"
#include "filter/name.h"

/* SPEC §2.7: a tenant name is [a-z0-9][a-z0-9._-]{0,62}; list names too. */
#define TN_NAME_MAX 63
/* A proxy user name (RFC 7617: no ':' and no control characters). */
#define TN_USER_MAX 255

/* Room for one more item in an array of *cap items of size bytes, n used:
 * doubled (from 8) when full. Returns the array, moved or not, or NULL
 * (the old one still valid) when out of memory. */
static void *tn_grow(void *items, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return items;
    size_t ncap = *cap ? *cap * 2 : 8;
    void *p = realloc(items, ncap * size);
    if (p)
        *cap = ncap;
    return p;
}

/* ---- names ---- */

static bool tn_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > TN_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '.' && ch != '_' && ch != '-')))
            return false;
    }
    return true;
}

/* A tenant or list name: a scalar of the SPEC §2.7 form. */
static bool tn_get_name(cfg_ctx_t *c, const cfg_node_t *n, const char *key)
{
    if (!cfg_value(c, n, key, "a name like box-1"))
        return false;
    if (tn_name_ok(n->str, n->len))
        return true;
    char show[CFG_SHOW_MAX];
    cfg_err(c, CFG_AT(n), "%s: %s: %s", key, cfg_show(n->str, n->len, show),
            n->len > TN_NAME_MAX ? "longer than 63 characters"
                                 : "a name is lower-case letters, digits, '.', '_' and '-', "
                                   "starting with a letter or digit");
    return false;
}

/* The file being walked, as cfg->files holds it. */
static const char *tn_file(const cfg_ctx_t *c)
{
    return c->file ? c->file : c->cfg->files[0];
}

/* The value of key in mapping n, or NULL. */
static const cfg_node_t *tn_find_key(const cfg_node_t *n, const char *key, const cfg_node_t **k)
{
    if (k)
        *k = NULL;
    if (n->kind != CFG_NODE_MAP)
        return NULL;
    for (size_t i = 0; i + 1 < n->n; i += 2) {
        if (cfg_is(n->kids[i], key)) {
            if (k)
                *k = n->kids[i];
            return n->kids[i + 1];
        }
    }
    return NULL;
}

/* ---- lists ---- */

static int tn_list_cmp(const void *pa, const void *pb)
{
    const cfg_list_t *a = *(const cfg_list_t *const *)pa, *b = *(const cfg_list_t *const *)pb;
    int d = strcmp(a->name, b->name);
    if (d != 0)
        return d;
    return a < b ? -1 : a > b; /* file order among duplicates */
}

typedef struct tn_key {
    const char *s;
    size_t len;
} tn_key_t;

static int tn_list_find_cmp(const void *pk, const void *pl)
{
    const tn_key_t *k = pk;
    const cfg_list_t *l = *(const cfg_list_t *const *)pl;
    size_t llen = strlen(l->name);
    int d = memcmp(k->s, l->name, k->len < llen ? k->len : llen);
    if (d != 0)
        return d;
    return k->len < llen ? -1 : k->len > llen;
}

static const cfg_list_t *tn_list_find(const cfg_ctx_t *c, const char *s, size_t len)
{
    if (c->cfg->n_lists == 0)
        return NULL;
    tn_key_t k = {s, len};
    const cfg_list_t **l =
        bsearch(&k, c->list_by_name, c->cfg->n_lists, sizeof *c->list_by_name, tn_list_find_cmp);
    return l ? *l : NULL;
}

void cfg_walk_lists(cfg_ctx_t *c, const cfg_node_t *n)
{
    cfg_t *cfg = c->cfg;
    if (n->kind == CFG_NODE_BAD || cfg_is_null(n))
        return;
    if (n->kind != CFG_NODE_MAP) {
        cfg_err(c, CFG_AT(n), "lists: expected a mapping of NAME: [rules], not %s",
                cfg_kind_name(n));
        return;
    }
    size_t count = n->n / 2;
    if (count == 0)
        return;
    cfg->lists = calloc(count, sizeof *cfg->lists);
    c->list_by_name = calloc(count, sizeof *c->list_by_name);
    c->list_seen = calloc(count, sizeof *c->list_seen);
    if (!cfg->lists || !c->list_by_name || !c->list_seen) {
        c->rc = -ENOMEM;
        return;
    }
    for (size_t k = 0; k + 1 < n->n && c->rc == 0; k += 2) {
        const cfg_node_t *key = n->kids[k];
        if (key->kind == CFG_NODE_BAD)
            continue;
        if (!tn_get_name(c, key, "lists"))
            continue;
        cfg_list_t *l = &cfg->lists[cfg->n_lists];
        if (!(l->name = strndup(key->str, key->len))) {
            c->rc = -ENOMEM;
            return;
        }
        cfg->n_lists++;
        l->file = tn_file(c);
        l->line = key->line;
        l->col = key->col;
        char where[80];
        snprintf(where, sizeof where, "lists.%s", l->name);
        cfg_allow_t a;
        cfg_walk_allow_list(c, n->kids[k + 1], where, true, &a);
        l->rules = a.rules;
        l->n_rules = a.n_rules;
        free(a.lists); /* none: refused in a list */
    }
    for (size_t i = 0; i < cfg->n_lists; i++)
        c->list_by_name[i] = &cfg->lists[i];
    if (cfg->n_lists > 1)
        qsort(c->list_by_name, cfg->n_lists, sizeof *c->list_by_name, tn_list_cmp);
    for (size_t i = 1; i < cfg->n_lists; i++) {
        const cfg_list_t *a = c->list_by_name[i - 1], *b = c->list_by_name[i];
        if (strcmp(a->name, b->name) == 0)
            cfg_err(c, b->line, b->col, "lists: %s defined twice (first at %u:%u)", b->name,
                    a->line, a->col);
    }
}

static void tn_unknown_list(cfg_ctx_t *c, const cfg_node_t *v)
{
    const cfg_t *cfg = c->cfg;
    char show[CFG_SHOW_MAX];
    cfg_show(v->str, v->len, show);
    if (cfg->n_lists == 0) {
        cfg_err(c, CFG_AT(v), "unknown list \"%s\" (there is no top-level lists:)", show);
        return;
    }
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    /* Past the error cap a suggestion would not be shown. */
    for (size_t i = 0; i < cfg->n_lists && c->diag->n < CFG_MAX_ERRORS; i++) {
        const char *name = cfg->lists[i].name;
        size_t d = cfg_distance(v->str, v->len, name);
        if (d < best_d && d <= (strlen(name) <= 4 ? 1u : 2u))
            best = name, best_d = d;
    }
    if (best)
        cfg_err(c, CFG_AT(v), "unknown list \"%s\" (did you mean \"%s\"?)", show, best);
    else
        cfg_err(c, CFG_AT(v), "unknown list \"%s\"", show);
}

/* A {list: NAME} entry (lk is its `list` key). Returns the list's index, or
 * -1 when reported or already named in this allow list. */
static long tn_list_entry(cfg_ctx_t *c, const cfg_node_t *e, const cfg_node_t *lk, const char *key,
                          bool in_list)
{
    const cfg_node_t *val = NULL;
    bool ok = true;
    for (size_t k = 0; k + 1 < e->n; k += 2) {
        if (e->kids[k] == lk) {
            val = e->kids[k + 1];
        } else if (e->kids[k]->kind != CFG_NODE_BAD) {
            cfg_err(c, CFG_AT(e->kids[k]), "%s: a {list: NAME} entry has no other keys", key);
            ok = false;
        }
    }
    if (!ok || !val || !cfg_value(c, val, "list", "a list name"))
        return -1;
    if (in_list) {
        char show[CFG_SHOW_MAX];
        cfg_err(c, CFG_AT(lk), "%s: a list cannot refer to a list ({list: %s})", key,
                cfg_show(val->str, val->len, show));
        return -1;
    }
    const cfg_list_t *l = tn_list_find(c, val->str, val->len);
    if (!l) {
        tn_unknown_list(c, val);
        return -1;
    }
    size_t i = (size_t)(l - c->cfg->lists);
    if (c->list_seen[i] == c->stamp)
        return -1; /* named twice: kept once */
    c->list_seen[i] = c->stamp;
    return (long)i;
}

void cfg_walk_allow_list(cfg_ctx_t *c, const cfg_node_t *n, const char *key, bool in_list,
                         cfg_allow_t *out)
{
    memset(out, 0, sizeof *out);
    if (n->kind == CFG_NODE_BAD || cfg_is_null(n))
        return;
    if (n->kind != CFG_NODE_SEQ) {
        cfg_err(c, CFG_AT(n),
                "%s: expected a list of names, addresses and {host: ...} / "
                "{cidr: ...} entries (or [] for none)",
                key);
        return;
    }
    if (n->n == 0)
        return;
    if (!(out->rules = calloc(n->n, sizeof *out->rules))) {
        c->rc = -ENOMEM;
        return;
    }
    c->stamp++;
    for (size_t i = 0; i < n->n && c->rc == 0; i++) {
        const cfg_node_t *e = n->kids[i], *lk;
        tn_find_key(e, "list", &lk);
        if (lk) {
            long l = tn_list_entry(c, e, lk, key, in_list);
            if (l < 0)
                continue;
            if (!out->lists && !(out->lists = calloc(n->n, sizeof *out->lists))) {
                c->rc = -ENOMEM;
                return;
            }
            out->lists[out->n_lists++] = (size_t)l;
            continue;
        }
        filter_rule_t r;
        if (cfg_rule(c, e, &r))
            out->rules[out->n_rules++] = r;
    }
    if (out->n_rules == 0) {
        free(out->rules);
        out->rules = NULL;
    }
}

/* ---- tenants ---- */

static void tn_ref_add(cfg_ctx_t *c, cfg_refs_t *r, const void *key, size_t key_len,
                       const cfg_node_t *at)
{
    cfg_ref_t *items = tn_grow(r->items, r->n, &r->cap, sizeof *items);
    if (!items) {
        c->rc = -ENOMEM;
        return;
    }
    r->items = items;
    r->items[r->n] =
        (cfg_ref_t){key, key_len, c->cfg->n_tenants - 1, tn_file(c), at->line, at->col, r->n};
    r->n++;
}

static cfg_tenant_t *tn_tenant_new(cfg_ctx_t *c)
{
    cfg_t *cfg = c->cfg;
    cfg_tenant_t *all = tn_grow(cfg->tenants, cfg->n_tenants, &c->cap_tenants, sizeof *all);
    if (!all) {
        c->rc = -ENOMEM;
        return NULL;
    }
    cfg->tenants = all;
    cfg_tenant_t *t = &cfg->tenants[cfg->n_tenants++];
    memset(t, 0, sizeof *t);
    return t;
}

static void tn_clients(cfg_ctx_t *c, cfg_tenant_t *t, const cfg_node_t *n, const char *where)
{
    if (n->kind == CFG_NODE_BAD || cfg_is_null(n))
        return;
    if (n->kind != CFG_NODE_SEQ) {
        cfg_err(c, CFG_AT(n),
                "%s: clients: expected a list of addresses and prefixes, e.g. [10.77.0.2, "
                "\"fd00:77::/64\"]",
                where);
        return;
    }
    if (n->n == 0)
        return;
    if (!(t->clients = calloc(n->n, sizeof *t->clients))) {
        c->rc = -ENOMEM;
        return;
    }
    for (size_t i = 0; i < n->n && c->rc == 0; i++) {
        const cfg_node_t *k = n->kids[i];
        if (!cfg_value(c, k, "clients", "an address or prefix"))
            continue;
        char show[CFG_SHOW_MAX];
        const char *why = NULL;
        filter_prefix_t *p = &t->clients[t->n_clients];
        if (!filter_text_looks_like_addr(k->str, k->len))
            why = "not an address or prefix (names are not allowed here)";
        else if (filter_prefix_parse(k->str, k->len, p, &why) != 0 && !why)
            why = "not an address or prefix";
        if (why) {
            cfg_err(c, CFG_AT(k), "%s: clients: %s: %s", where, cfg_show(k->str, k->len, show),
                    why);
            continue;
        }
        t->n_clients++;
        tn_ref_add(c, &c->clients, p, sizeof *p, k);
    }
}

/* SPEC §2.7: the password itself, or sha256: and 64 hex digits. */
static bool tn_password(cfg_ctx_t *c, cfg_user_t *u, const cfg_node_t *p, const char *where)
{
    static const char pre[] = "sha256:";
    const size_t plen = sizeof pre - 1;
    if (!cfg_value(c, p, "password", "a password or sha256:HEX"))
        return false;
    if (p->len >= plen && memcmp(p->str, pre, plen) == 0) {
        bool ok = p->len == plen + 64;
        for (size_t i = 0; ok && i < 32; i++) {
            int hi = filter_hex_value(p->str[plen + 2 * i]),
                lo = filter_hex_value(p->str[plen + 2 * i + 1]);
            ok = hi >= 0 && lo >= 0;
            if (ok)
                u->sha256[i] = (uint8_t)(hi << 4 | lo);
        }
        if (!ok) {
            cfg_err(c, CFG_AT(p), "%s: password: sha256: must be followed by 64 hex digits", where);
            return false;
        }
        u->hashed = true;
        return true;
    }
    if (p->len == 0 || memchr(p->str, '\0', p->len)) {
        cfg_err(c, CFG_AT(p), "%s: password: %s", where,
                p->len == 0 ? "empty" : "holds a NUL byte");
        return false;
    }
    if (!(u->password = strndup(p->str, p->len))) {
        c->rc = -ENOMEM;
        return false;
    }
    return true;
}

static bool tn_user_name_ok(const cfg_node_t *n)
{
    if (n->len == 0 || n->len > TN_USER_MAX)
        return false;
    for (size_t i = 0; i < n->len; i++) {
        unsigned char ch = (unsigned char)n->str[i];
        if (ch < 0x20 || ch == 0x7f || ch == ':')
            return false;
    }
    return true;
}

/* One {name: USER, password: SECRET}; true when u is complete. */
static bool tn_user(cfg_ctx_t *c, cfg_user_t *u, const cfg_node_t *n, const char *where)
{
    enum { K_NAME, K_PASSWORD, K_N };
    static const char *const names[K_N] = {"name", "password"};
    const cfg_node_t *v[K_N];
    char uwhere[112], show[CFG_SHOW_MAX];
    snprintf(uwhere, sizeof uwhere, "%s: user", where);
    if (!cfg_map_shown(c, n, uwhere, names, K_N, K_N, v))
        return false;
    bool ok = true;
    if (!v[K_NAME]) {
        cfg_err(c, CFG_AT(n), "%s: needs a name", uwhere);
        ok = false;
    } else if (cfg_value(c, v[K_NAME], "name", "a user name")) {
        if (!tn_user_name_ok(v[K_NAME])) {
            cfg_err(c, CFG_AT(v[K_NAME]), "%s: %s: a user name is 1 to %d characters, no ':'",
                    uwhere, cfg_show(v[K_NAME]->str, v[K_NAME]->len, show), TN_USER_MAX);
            ok = false;
        } else if (!(u->name = strndup(v[K_NAME]->str, v[K_NAME]->len))) {
            c->rc = -ENOMEM;
            ok = false;
        }
    } else {
        ok = false;
    }
    if (!v[K_PASSWORD]) {
        cfg_err(c, CFG_AT(n), "%s%s%s: needs a password", uwhere, u->name ? " " : "",
                u->name ? cfg_show(u->name, strlen(u->name), show) : "");
        ok = false;
    } else if (!tn_password(c, u, v[K_PASSWORD], uwhere)) {
        ok = false;
    }
    if (ok) {
        u->file = tn_file(c);
        u->line = v[K_NAME]->line;
        u->col = v[K_NAME]->col;
        return true;
    }
    free(u->name);
    free(u->password);
    memset(u, 0, sizeof *u);
    return false;
}

static void tn_users(cfg_ctx_t *c, cfg_tenant_t *t, const cfg_node_t *n, const char *where)
{
    if (n->kind == CFG_NODE_BAD || cfg_is_null(n))
        return;
    if (n->kind != CFG_NODE_SEQ) {
        cfg_err(c, CFG_AT(n), "%s: users: expected a list of {name: USER, password: SECRET}",
                where);
        return;
    }
    if (n->n == 0)
        return;
    if (!(t->users = calloc(n->n, sizeof *t->users))) {
        c->rc = -ENOMEM;
        return;
    }
    for (size_t i = 0; i < n->n && c->rc == 0; i++) {
        cfg_user_t *u = &t->users[t->n_users];
        if (!tn_user(c, u, n->kids[i], where))
            continue;
        t->n_users++;
        cfg_node_t at = {.line = u->line, .col = u->col};
        tn_ref_add(c, &c->users, u->name, strlen(u->name), &at);
    }
}

/* One tenant mapping (SPEC §2.7). */
static void tn_tenant(cfg_ctx_t *c, const cfg_node_t *n)
{
    enum { K_NAME, K_CLIENTS, K_USERS, K_MODE, K_ALLOW, K_INCLUDE, K_N };
    static const char *const names[K_N] = {"name", "clients", "users", "mode", "allow", "include"};
    static const char *const modes[] = {"enforce", "audit"};
    const cfg_node_t *v[K_N];
    if (n->kind == CFG_NODE_BAD)
        return;
    if (n->kind != CFG_NODE_MAP && !cfg_is_null(n)) {
        cfg_err(c, CFG_AT(n),
                "tenants: a tenant is a mapping (name:, clients:, allow:, ...), not %s",
                cfg_kind_name(n));
        return;
    }
    /* Messages name the tenant when its name is good. */
    char where[96] = "tenant";
    const cfg_node_t *nm = tn_find_key(n, "name", NULL);
    if (nm && nm->kind == CFG_NODE_SCALAR && tn_name_ok(nm->str, nm->len))
        snprintf(where, sizeof where, "tenant %s", nm->str);
    /* `include` is known here only to say where it belongs. */
    if (!cfg_map_shown(c, n, where, names, K_N, K_N - 1, v))
        return;
    cfg_tenant_t *t = tn_tenant_new(c);
    if (!t)
        return;
    t->file = tn_file(c);
    t->line = n->line;
    t->col = n->col;
    if (v[K_INCLUDE])
        cfg_err(c, CFG_AT(v[K_INCLUDE]),
                "%s: include is a top-level key of the main config, not of a tenant", where);
    if (!v[K_NAME]) {
        cfg_err(c, CFG_AT(n), "%s: needs a name", where);
    } else if (tn_get_name(c, v[K_NAME], "tenant name")) {
        if (!(t->name = strndup(v[K_NAME]->str, v[K_NAME]->len))) {
            c->rc = -ENOMEM;
            return;
        }
        tn_ref_add(c, &c->names, t->name, v[K_NAME]->len, v[K_NAME]);
    }
    if (v[K_CLIENTS])
        tn_clients(c, t, v[K_CLIENTS], where);
    if (v[K_USERS])
        tn_users(c, t, v[K_USERS], where);
    if (v[K_MODE]) {
        char key[112];
        int e;
        snprintf(key, sizeof key, "%s: mode", where);
        if (cfg_get_enum(c, v[K_MODE], key, modes, 2, "enforce or audit", &e)) {
            t->has_mode = true;
            t->mode = (cfg_mode_t)e;
        }
    }
    if (!v[K_ALLOW])
        cfg_err(c, CFG_AT(n), "%s: needs allow: (its rules; [] for none)", where);
    else
        cfg_walk_allow_list(c, v[K_ALLOW], "allow", false, &t->allow);
}

void cfg_walk_tenants(cfg_ctx_t *c, const cfg_node_t *n)
{
    if (n->kind == CFG_NODE_BAD || cfg_is_null(n))
        return;
    if (n->kind != CFG_NODE_SEQ) {
        cfg_err(c, CFG_AT(n), "tenants: expected a list of tenants (- name: ...), not %s",
                cfg_kind_name(n));
        return;
    }
    for (size_t i = 0; i < n->n && c->rc == 0; i++)
        tn_tenant(c, n->kids[i]);
}

/* ---- include ---- */

/* The root of an included file: one tenant mapping or a list of them. */
static void tn_walk_file(cfg_ctx_t *c, const cfg_node_t *root)
{
    if (!root || root->kind == CFG_NODE_BAD || cfg_is_null(root))
        return; /* an empty file holds no tenant */
    if (root->kind == CFG_NODE_SEQ) {
        for (size_t i = 0; i < root->n && c->rc == 0; i++)
            tn_tenant(c, root->kids[i]);
    } else if (root->kind == CFG_NODE_MAP) {
        tn_tenant(c, root);
    } else {
        cfg_err(c, CFG_AT(root),
                "an included file holds a tenant (name:, clients:, allow:) or a list of them");
    }
}

/* Read one matched file (path is handed over to cfg->files). */
static void tn_include_file(cfg_ctx_t *c, char *path)
{
    cfg_t *cfg = c->cfg;
    char **files = tn_grow(cfg->files, cfg->n_files, &c->cap_files, sizeof *files);
    if (!files) {
        free(path);
        c->rc = -ENOMEM;
        return;
    }
    cfg->files = files;
    cfg->files[cfg->n_files++] = path;
    char *text = NULL;
    size_t len = 0;
    struct stat st;
    /* Only regular files: a FIFO matched by a pattern would block the read. */
    int rc = stat(path, &st) != 0 ? -errno : !S_ISREG(st.st_mode) ? -EINVAL : 0;
    if (rc == 0)
        rc = cfg_read_file(path, &text, &len);
    if (rc == -ENOENT) {
        /* Removed since the glob matched it: as if it never had. */
        free(cfg->files[--cfg->n_files]);
        return;
    }
    const char *saved = c->file;
    c->file = path;
    if (rc == -ENOMEM)
        c->rc = rc;
    else if (rc == -EFBIG)
        cfg_err(c, 0, 0, "cannot read: larger than %u MiB", CFG_MAX_FILE / (1024u * 1024u));
    else if (rc == -EINVAL)
        cfg_err(c, 0, 0, "cannot read: not a regular file");
    else if (rc != 0)
        cfg_err(c, 0, 0, "cannot read: %s", strerror(-rc));
    if (rc == 0) {
        cfg_diag_t tmp = {0};
        cfg_node_t *root = NULL;
        rc = cfg_yaml_load(text, len, &root, &tmp);
        free(text);
        int mrc = cfg_diag_move(c->diag, &tmp, path);
        if (rc == -ENOMEM || mrc < 0)
            c->rc = -ENOMEM;
        else if (rc == 0)
            tn_walk_file(c, root);
        cfg_node_free(root);
    }
    c->file = saved;
}

/* The files an include pattern matched, in match order. */
typedef struct tn_paths {
    char **items;
    size_t n, cap;
} tn_paths_t;

static int tn_paths_add(tn_paths_t *p, const char *path)
{
    char **items = tn_grow(p->items, p->n, &p->cap, sizeof *items);
    if (!items)
        return -ENOMEM;
    p->items = items;
    if (!(p->items[p->n] = strdup(path)))
        return -ENOMEM;
    p->n++;
    return 0;
}

static void tn_paths_free(tn_paths_t *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->items[i]);
    free(p->items);
}

static bool tn_magic(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] == '*' || s[i] == '?' || s[i] == '[' || s[i] == '\\')
            return true;
    return false;
}

static int tn_strcmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A pattern being expanded: what is reported and where matches go. */
typedef struct tn_glob {
    cfg_ctx_t *c;
    const cfg_node_t *k;
    bool abs;
    tn_paths_t *out;
} tn_glob_t;

static int tn_expand(tn_glob_t *g, char *path, size_t plen, const char *rest);

/* path + "/" + name (or name alone at the start) into path; false when too long. */
static bool tn_join(const tn_glob_t *g, char *path, size_t plen, const char *name, size_t nlen,
                    size_t *out)
{
    bool sep = plen > 0 || g->abs;
    if (plen + sep + nlen + 1 > PATH_MAX)
        return false;
    if (sep)
        path[plen++] = '/';
    memcpy(path + plen, name, nlen);
    path[plen + nlen] = '\0';
    *out = plen + nlen;
    return true;
}

/* Remember that the pattern looked in dir (dlen bytes; empty: "/" or ".")
 * for names matching comp (clen bytes), for reload watching. 0 or -ENOMEM. */
static int tn_glob_dir_add(tn_glob_t *g, const char *dir, size_t dlen, const char *comp,
                           size_t clen)
{
    cfg_t *cfg = g->c->cfg;
    cfg_glob_dir_t *items =
        tn_grow(cfg->glob_dirs, cfg->n_glob_dirs, &g->c->cap_glob_dirs, sizeof *items);
    if (!items)
        return -ENOMEM;
    cfg->glob_dirs = items;
    cfg_glob_dir_t *gd = &items[cfg->n_glob_dirs];
    gd->dir = dlen ? strndup(dir, dlen) : strdup(g->abs ? "/" : ".");
    gd->pattern = strndup(comp, clen);
    if (!gd->dir || !gd->pattern) {
        free(gd->dir);
        free(gd->pattern);
        return -ENOMEM;
    }
    cfg->n_glob_dirs++;
    return 0;
}

/* The end of the pattern: a match, unless it is a directory or is not
 * there (a file that cannot be read is kept, for the reader to report). A
 * name that is not there is remembered: creating it changes the config. */
static int tn_matched(tn_glob_t *g, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : tn_paths_add(g->out, path);
    if (errno != ENOENT && errno != ENOTDIR)
        return tn_paths_add(g->out, path);
    const char *slash = strrchr(path, '/');
    if (!slash)
        return tn_glob_dir_add(g, "", 0, path, strlen(path));
    return tn_glob_dir_add(g, path, (size_t)(slash - path), slash + 1, strlen(slash + 1));
}

/* Entries of path matching the component comp, sorted by strcmp. */
static int tn_list_dir(tn_glob_t *g, const char *path, size_t plen, const char *comp,
                       tn_paths_t *names)
{
    const char *dirname = plen ? path : g->abs ? "/" : ".";
    if (tn_glob_dir_add(g, path, plen, comp, strlen(comp)) != 0)
        return -ENOMEM;
    DIR *d = opendir(dirname);
    if (!d) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0; /* a pattern may name directories that are not there */
        if (errno == ENOMEM)
            return -ENOMEM;
        char show[CFG_SHOW_MAX];
        cfg_err(g->c, CFG_AT(g->k), "include: %s: cannot read %s: %s",
                cfg_show(g->k->str, g->k->len, show), dirname, strerror(errno));
        return 0;
    }
    int rc = 0;
    const struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        /* FNM_PERIOD: '*' does not match a leading dot (editor swap files). */
        int m = fnmatch(comp, de->d_name, FNM_PERIOD);
        if (m == 0)
            rc = tn_paths_add(names, de->d_name);
        else if (m != FNM_NOMATCH)
            rc = -ENOMEM;
    }
    closedir(d);
    if (rc == 0 && names->n > 1) /* qsort takes no NULL array, even empty */
        qsort(names->items, names->n, sizeof *names->items, tn_strcmp);
    return rc;
}

/* Expand the components in rest below path (plen bytes). 0 or -ENOMEM. */
static int tn_expand(tn_glob_t *g, char *path, size_t plen, const char *rest)
{
    rest += strspn(rest, "/");
    if (*rest == '\0')
        return plen ? tn_matched(g, path) : 0;
    size_t clen = strcspn(rest, "/");
    const char *next = rest + clen;
    bool last = next[strspn(next, "/")] == '\0';
    size_t nlen;
    if (!tn_magic(rest, clen)) {
        if (!tn_join(g, path, plen, rest, clen, &nlen))
            return 0; /* longer than any path: matches nothing */
        return last ? tn_matched(g, path) : tn_expand(g, path, nlen, next);
    }
    char comp[NAME_MAX + 1];
    if (clen > NAME_MAX)
        return 0;
    memcpy(comp, rest, clen);
    comp[clen] = '\0';
    tn_paths_t names = {0};
    int rc = tn_list_dir(g, path, plen, comp, &names);
    for (size_t i = 0; i < names.n && rc == 0; i++) {
        if (!tn_join(g, path, plen, names.items[i], strlen(names.items[i]), &nlen))
            continue;
        rc = last ? tn_matched(g, path) : tn_expand(g, path, nlen, next);
    }
    path[plen] = '\0';
    tn_paths_free(&names);
    return rc;
}

/* The files pattern k matches, appended to out in sorted order. A relative
 * pattern is relative to the config's directory (taken literally). */
static int tn_glob(cfg_ctx_t *c, const cfg_node_t *k, tn_paths_t *out)
{
    char *path = malloc(PATH_MAX), *pattern = strndup(k->str, k->len);
    int rc = -ENOMEM;
    if (!path || !pattern)
        goto fail;
    tn_glob_t g = {c, k, pattern[0] == '/', out};
    size_t plen = 0;
    const char *cfgpath = c->cfg->files[0], *slash = strrchr(cfgpath, '/');
    if (!g.abs && slash) {
        plen = (size_t)(slash - cfgpath);
        g.abs = cfgpath[0] == '/';
        if (plen >= PATH_MAX) {
            rc = 0;
            goto fail;
        }
        memcpy(path, cfgpath, plen);
        /* "/moat.yaml": the root itself. */
        path[plen] = '\0';
    }
    rc = tn_expand(&g, path, plen, pattern);
fail:
    free(path);
    free(pattern);
    return rc;
}

typedef struct tn_path {
    const char *path;
    size_t order;
} tn_path_t;

static int tn_path_cmp(const void *pa, const void *pb)
{
    const tn_path_t *a = pa, *b = pb;
    int d = strcmp(a->path, b->path);
    if (d != 0)
        return d;
    return a->order < b->order ? -1 : a->order > b->order;
}

/* A file two patterns match is read once, where it is first matched. */
static int tn_drop_repeats(char **paths, size_t n)
{
    if (n < 2)
        return 0;
    tn_path_t *s = calloc(n, sizeof *s);
    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        s[i] = (tn_path_t){paths[i], i};
    qsort(s, n, sizeof *s, tn_path_cmp);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(s[i - 1].path, s[i].path) == 0) {
            free(paths[s[i].order]);
            paths[s[i].order] = NULL;
            s[i].path = s[i - 1].path; /* still compares equal to the next */
        }
    }
    free(s);
    return 0;
}

void cfg_walk_include(cfg_ctx_t *c, const cfg_node_t *n)
{
    if (n->kind == CFG_NODE_BAD || cfg_is_null(n))
        return;
    if (n->kind != CFG_NODE_SEQ) {
        cfg_err(c, CFG_AT(n),
                "include: expected a list of file patterns, e.g. [\"tenants/*.yaml\"]");
        return;
    }
    tn_paths_t paths = {0};
    for (size_t i = 0; i < n->n && c->rc == 0; i++) {
        const cfg_node_t *k = n->kids[i];
        if (!cfg_value(c, k, "include", "a file pattern like \"tenants/*.yaml\""))
            continue;
        if (k->len == 0 || memchr(k->str, '\0', k->len)) {
            cfg_err(c, CFG_AT(k), "include: %s",
                    k->len ? "the pattern holds a NUL byte" : "empty pattern");
            continue;
        }
        /* cfg_load_string reads no file: its patterns match nothing. */
        if (c->files_ok) {
            int rc = tn_glob(c, k, &paths);
            if (rc < 0)
                c->rc = rc;
        }
    }
    if (c->rc == 0 && (c->rc = tn_drop_repeats(paths.items, paths.n)) == 0) {
        for (size_t i = 0; i < paths.n; i++) {
            char *p = paths.items[i];
            paths.items[i] = NULL;
            if (p && c->rc == 0)
                tn_include_file(c, p);
            else
                free(p);
        }
    }
    tn_paths_free(&paths);
}

/* ---- checks across tenants ---- */

static int tn_ref_cmp(const void *pa, const void *pb)
{
    const cfg_ref_t *a = pa, *b = pb;
    if (a->key_len != b->key_len)
        return a->key_len < b->key_len ? -1 : 1;
    int d = memcmp(a->key, b->key, a->key_len);
    if (d != 0)
        return d;
    return a->order < b->order ? -1 : a->order > b->order;
}

enum { TN_NAME, TN_CLIENT, TN_USER };

/* b repeats a (earlier in file order): an error at b naming both places. */
static void tn_report(cfg_ctx_t *c, int what, const cfg_ref_t *a, const cfg_ref_t *b)
{
    const cfg_tenant_t *ta = &c->cfg->tenants[a->tenant], *tb = &c->cfg->tenants[b->tenant];
    const char *na = ta->name ? ta->name : "?", *nb = tb->name ? tb->name : "?";
    char show[CFG_SHOW_MAX + FILTER_ADDR_STRLEN];
    if (what == TN_NAME) {
        cfg_err_in(c, b->file, b->line, b->col, "tenant %s: defined twice (first at %s:%u:%u)", nb,
                   a->file, a->line, a->col);
        return;
    }
    if (what == TN_CLIENT)
        filter_prefix_format(a->key, show, sizeof show);
    else
        cfg_show(a->key, a->key_len, show);
    const char *kind = what == TN_CLIENT ? "client" : "user";
    if (a->tenant == b->tenant)
        cfg_err_in(c, b->file, b->line, b->col, "tenant %s: %s %s listed twice (first at %s:%u:%u)",
                   nb, kind, show, a->file, a->line, a->col);
    else
        cfg_err_in(c, b->file, b->line, b->col, "tenant %s: %s %s is already %s's (%s:%u:%u)", nb,
                   kind, show, na, a->file, a->line, a->col);
}

static void tn_check_refs(cfg_ctx_t *c, cfg_refs_t *r, int what)
{
    if (r->n < 2)
        return;
    qsort(r->items, r->n, sizeof *r->items, tn_ref_cmp);
    size_t first = 0;
    for (size_t i = 1; i < r->n && c->rc == 0; i++) {
        const cfg_ref_t *a = &r->items[first], *b = &r->items[i];
        if (a->key_len != b->key_len || memcmp(a->key, b->key, a->key_len) != 0) {
            first = i;
            continue;
        }
        tn_report(c, what, a, b);
    }
}

void cfg_check_tenants(cfg_ctx_t *c)
{
    tn_check_refs(c, &c->names, TN_NAME);
    tn_check_refs(c, &c->clients, TN_CLIENT);
    tn_check_refs(c, &c->users, TN_USER);
}

void cfg_ctx_tenants_free(cfg_ctx_t *c)
{
    free(c->list_by_name);
    free(c->list_seen);
    free(c->names.items);
    free(c->clients.items);
    free(c->users.items);
}

void cfg_tenants_free(cfg_t *cfg)
{
    for (size_t i = 0; i < cfg->n_lists; i++) {
        free(cfg->lists[i].name);
        cfg_rules_free(cfg->lists[i].rules, cfg->lists[i].n_rules);
    }
    free(cfg->lists);
    for (size_t i = 0; i < cfg->n_tenants; i++) {
        cfg_tenant_t *t = &cfg->tenants[i];
        free(t->name);
        free(t->clients);
        for (size_t u = 0; u < t->n_users; u++) {
            free(t->users[u].name);
            free(t->users[u].password);
        }
        free(t->users);
        cfg_rules_free(t->allow.rules, t->allow.n_rules);
        free(t->allow.lists);
    }
    free(cfg->tenants);
    for (size_t i = 0; i < cfg->n_files; i++)
        free(cfg->files[i]);
    free(cfg->files);
    for (size_t i = 0; i < cfg->n_glob_dirs; i++) {
        free(cfg->glob_dirs[i].dir);
        free(cfg->glob_dirs[i].pattern);
    }
    free(cfg->glob_dirs);
}
