/* filter/policy.c: the compiled allowlist (SPEC §2, §2.1, §2.4, §6).
 *
 * Layout of a compiled policy: one allocation, the struct first, then these
 * arrays, each sized to the rule counts, so a small policy is small:
 *   infos[]  one filter_rule_info_t per rule, in config order;
 *   ports[]  every rule's effective ports, sorted and merged;
 *   chars[]  rule texts and normalised names, NUL-terminated;
 *   names    open-addressing hash: normalised name -> entry holding two
 *            groups, the exact rules for that name and the `*.name` rules;
 *   addrs    open-addressing hash: (family, length, masked address) -> a group;
 *   segs[]   per group, disjoint sorted port segments, each tagged with one
 *            rule of the group that allows it, so "does any rule of the group
 *            allow port P" is one binary search however many rules share a
 *            name or prefix;
 *   rules[]  per group, its rule indices in config order (explain, ANY_PORT).
 *
 * Name lookup hashes the guest name's bytes from right to left (a polynomial
 * hash, see pol_name_hash), so at each label boundary the running hash is the
 * hash of that suffix: one pass, at most a probe per label, O(length of the
 * name). Suffixes whose length no rule has are not even probed.
 *
 * Shared lists (SPEC §2.7): a policy may borrow other compiled policies and
 * decide by their rules after its own. Every policy hashes names with the
 * same powers, so a name is normalised and hashed once per decision and its
 * suffix hashes probe the policy and each list in turn; addresses walk the
 * union of their prefix lengths, longest first. A policy without lists
 * keeps to its own single-policy walk.
 */
#include "filter/policy.h"
#include "filter/policy_internal.h"
#include "filter/prefix_key.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define POL_HASH_K      0x9e3779b97f4a7c15ULL /* odd: its powers never vanish mod 2^64 */
#define POL_PORT_ALL_LO 0                     /* an address rule without ports: every port value */
#define POL_PORT_ALL_HI 65535
#define POL_NO_ENTRY    UINT32_MAX

/* A port segment of a group: ports lo..hi are allowed by rule `rule`. */
typedef struct pol_seg {
    uint16_t lo, hi;
    uint32_t rule;
} pol_seg_t;

/* Rules sharing one key: segs[seg .. seg+n_seg), rules[rule .. rule+n_rule). */
typedef struct pol_group {
    uint32_t seg, n_seg;
    uint32_t rule, n_rule; /* n_rule == 0: no such rules */
} pol_group_t;

typedef struct pol_name_ent {
    uint64_t hash;
    const char *name; /* normalised, in chars[] */
    uint32_t len;
    pol_group_t exact; /* rules `name` */
    pol_group_t wild;  /* rules `*.name` */
} pol_name_ent_t;

typedef struct pol_addr_ent {
    uint64_t hash;
    filter_pkey_t key; /* host bits zero */
    pol_group_t group;
} pol_addr_ent_t;

/* A slot of an open-addressing table: the low hash bits for a cheap reject
 * and the entry index + 1 (0 = empty). */
typedef struct pol_slot {
    uint32_t hash32;
    uint32_t idx1;
} pol_slot_t;

/* Linear probing at load <= 1/2, fronted by a one-hash Bloom filter of 16
 * bits per key: most lookups are misses (a name's suffixes, the prefix
 * lengths an address is not under), and the filter answers them from a
 * bitmap 8x smaller than the slots, which stays in the CPU cache where a
 * large policy's slots do not: a miss costs no cache miss per probe. */
typedef struct pol_table {
    pol_slot_t *slots;
    size_t mask; /* slots - 1 */
    uint64_t *bloom;
    size_t bloom_mask; /* bits - 1 */
} pol_table_t;

typedef struct pol_own {
    filter_addr_t addr;
    uint16_t port;
    bool any_addr; /* listener on 0.0.0.0 or :: */
} pol_own_t;

struct filter_policy {
    /* What a decision reads first, in the first two cache lines (the
     * allocation is cache-line aligned, the Bloom filters come right after
     * the struct): a tenant's policy is usually cold when its decision
     * starts, and each line it reads costs a cache miss. */
    _Alignas(64) bool filtering;
    uint32_t n_lists;
    const filter_policy_t *list0; /* lists[0], or NULL */
    /* Prefix lengths in use as bit sets (bit n: length n): all4/all6 over
     * this policy and its lists, set4/set6 its own. The walk over shared
     * rules goes through the union, longest first, and probes each policy
     * holding a length. */
    uint64_t all4, set4;
    pol_table_t addr_tab;
    pol_table_t name_tab;
    size_t n_names;
    uint64_t all6[3];
    /* Lengths of the names that have exact / wildcard rules (bit n: length
     * n): a suffix of any other length is not probed at all. */
    uint64_t exact_lens[4], wild_lens[4];
    uint64_t set6[3];
    const filter_policy_t **lists; /* borrowed (filter_policy_input_t.lists) */
    size_t n_addrs;
    pol_name_ent_t *names;
    pol_addr_ent_t *addrs;
    pol_seg_t *segs;
    uint32_t *rules;
    filter_rule_info_t *infos;

    size_t n_rules;
    filter_port_range_t *ports;
    char *chars;
    uint8_t lens4[33], lens6[129]; /* prefix lengths in use, longest first */
    size_t n_lens4, n_lens6;
    pol_own_t *own;
    size_t n_own;
    size_t bytes; /* for filter_policy_stats: the one allocation's size */
};

/* POL_HASH_K^i: the same for every policy, so a name's suffix hashes are
 * comparable across a policy and its lists. Filled once (pthread_once: the
 * daemon compiles on its thread pool). */
static uint64_t pol_kpow[FILTER_NAME_MAX];
static pthread_once_t pol_kpow_once = PTHREAD_ONCE_INIT;

static void pol_kpow_init(void)
{
    pol_kpow[0] = 1;
    for (size_t i = 1; i < FILTER_NAME_MAX; i++)
        pol_kpow[i] = pol_kpow[i - 1] * POL_HASH_K;
}

/* ---- small helpers ------------------------------------------------------ */

/* A name's hash is the polynomial sum of byte * K^(distance from the end),
 * so walking a name right to left gives every suffix's hash on the way, and
 * each byte costs one independent multiply (FNV chains every multiply on
 * the one before, which long guest names pay for). */
static uint64_t pol_name_hash(const char *s, size_t len)
{
    uint64_t h = 0;
    for (size_t j = 0; j < len; j++)
        h += (unsigned char)s[len - 1 - j] * pol_kpow[j];
    return h;
}

static inline bool pol_len_in(const uint64_t set[4], size_t len)
{
    return (set[len / 64] >> (len % 64)) & 1;
}

static inline void pol_len_add(uint64_t set[4], size_t len)
{
    set[len / 64] |= 1ULL << (len % 64);
}

static bool pol_addr_eq(const filter_addr_t *a, const filter_addr_t *b)
{
    return a->family == b->family && memcmp(a->bytes, b->bytes, sizeof a->bytes) == 0;
}

static bool pol_is_loopback(const filter_addr_t *a)
{
    static const uint8_t v6_loop[16] = {[15] = 1};
    if (a->family == AF_INET)
        return a->bytes[0] == 127;
    return a->family == AF_INET6 && memcmp(a->bytes, v6_loop, 16) == 0;
}

static bool pol_is_unspecified(const filter_addr_t *a)
{
    static const uint8_t zero[16];
    return memcmp(a->bytes, zero, a->family == AF_INET ? 4 : 16) == 0;
}

/* Open-addressing slots for n keys at load at most 1/2 (1 for none). */
static size_t pol_table_size(size_t n)
{
    size_t cap = 1;
    while (cap < 2 * n)
        cap *= 2;
    return cap;
}

/* Bloom filter bits for n keys: 16 per key, at least one word. */
static size_t pol_bloom_bits(size_t n)
{
    size_t bits = 64;
    while (bits < 16 * n)
        bits *= 2;
    return bits;
}

/* A policy is one allocation: the struct, then every array, each 16-byte
 * aligned at *off. With base NULL this only counts; SIZE_MAX on overflow. */
static void *pol_carve(char *base, size_t *off, size_t n, size_t size)
{
    if (*off == SIZE_MAX)
        return NULL;
    size_t at = (*off + 15) & ~(size_t)15;
    if (at < *off || n > (SIZE_MAX - at) / size) {
        *off = SIZE_MAX;
        return NULL;
    }
    *off = at + n * size;
    return base ? base + at : NULL;
}

/* ---- ports -------------------------------------------------------------- */

static int pol_port_cmp(const void *a, const void *b)
{
    const filter_port_range_t *x = a, *y = b;
    if (x->lo != y->lo)
        return x->lo < y->lo ? -1 : 1;
    return (x->hi > y->hi) - (x->hi < y->hi);
}

/* Sort and merge overlapping or adjacent ranges in place; returns the count. */
static size_t pol_ports_merge(filter_port_range_t *r, size_t n)
{
    if (n == 0)
        return 0;
    qsort(r, n, sizeof *r, pol_port_cmp);
    size_t k = 0;
    for (size_t i = 1; i < n; i++) {
        if ((uint32_t)r[i].lo <= (uint32_t)r[k].hi + 1) {
            if (r[i].hi > r[k].hi)
                r[k].hi = r[i].hi;
        } else {
            r[++k] = r[i];
        }
    }
    return k + 1;
}

static bool pol_ports_valid(const filter_port_range_t *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (r[i].lo == 0 || r[i].lo > r[i].hi)
            return false;
    return true;
}

/* ---- groups and segments ------------------------------------------------- */

static int pol_seg_cmp(const void *a, const void *b)
{
    const pol_seg_t *x = a, *y = b;
    if (x->lo != y->lo)
        return x->lo < y->lo ? -1 : 1;
    return (x->rule > y->rule) - (x->rule < y->rule);
}

/* Build the port segments of a group whose rule indices are
 * p->rules[g->rule .. +n_rule): every port some rule allows ends up in exactly
 * one segment, tagged with a rule that allows it (the one whose range starts
 * first, config order breaking ties). tmp holds at least as many entries as
 * the group's rules have ranges. */
static void pol_group_segs(filter_policy_t *p, pol_group_t *g, pol_seg_t *tmp, size_t *n_segs)
{
    size_t n = 0;
    for (uint32_t i = 0; i < g->n_rule; i++) {
        uint32_t r = p->rules[g->rule + i];
        const filter_rule_info_t *info = &p->infos[r];
        if (info->kind == FILTER_RULE_ADDR && info->n_ports == 0) {
            tmp[n++] = (pol_seg_t){POL_PORT_ALL_LO, POL_PORT_ALL_HI, r};
            continue;
        }
        for (size_t j = 0; j < info->n_ports; j++)
            tmp[n++] = (pol_seg_t){info->ports[j].lo, info->ports[j].hi, r};
    }
    qsort(tmp, n, sizeof *tmp, pol_seg_cmp);

    pol_seg_t *out = p->segs + *n_segs;
    size_t k = 0;
    int32_t end = -1; /* every port <= end is already in a segment */
    for (size_t i = 0; i < n; i++) {
        if ((int32_t)tmp[i].hi <= end)
            continue;
        uint16_t lo = (int32_t)tmp[i].lo > end ? tmp[i].lo : (uint16_t)(end + 1);
        if (k > 0 && out[k - 1].rule == tmp[i].rule && (uint32_t)out[k - 1].hi + 1 == lo)
            out[k - 1].hi = tmp[i].hi;
        else
            out[k++] = (pol_seg_t){lo, tmp[i].hi, tmp[i].rule};
        end = tmp[i].hi;
    }
    g->seg = (uint32_t)*n_segs;
    g->n_seg = (uint32_t)k;
    *n_segs += k;
}

/* The rule of g that allows port, or POL_NO_ENTRY. FILTER_ANY_PORT: the
 * group's first rule in config order, whatever its ports (§2.1: every name
 * rule makes the name resolvable). */
static uint32_t pol_group_allows(const filter_policy_t *p, const pol_group_t *g, int port)
{
    if (g->n_rule == 0)
        return POL_NO_ENTRY;
    if (port == FILTER_ANY_PORT)
        return p->rules[g->rule];
    if (port < 0 || port > 65535)
        return POL_NO_ENTRY;
    const pol_seg_t *s = p->segs + g->seg;
    size_t lo = 0, hi = g->n_seg; /* find the last segment with s.lo <= port */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s[mid].lo <= port)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0 || s[lo - 1].hi < port)
        return POL_NO_ENTRY;
    return s[lo - 1].rule;
}

/* ---- hash tables -------------------------------------------------------- */

/* Lay out t's filter for n keys (see pol_carve). */
static void pol_bloom_carve(pol_table_t *t, char *base, size_t *off, size_t n)
{
    size_t bits = pol_bloom_bits(n);
    t->bloom = pol_carve(base, off, bits / 64, sizeof *t->bloom);
    t->bloom_mask = bits - 1;
}

/* Lay out t's slots for n keys (see pol_carve). */
static void pol_slots_carve(pol_table_t *t, char *base, size_t *off, size_t n)
{
    size_t cap = pol_table_size(n);
    t->slots = pol_carve(base, off, cap, sizeof *t->slots);
    t->mask = cap - 1;
}

/* The slot index takes the mixed hash's low bits, the filter its high ones. */
static inline bool pol_bloom_has(const pol_table_t *t, uint64_t mix)
{
    size_t bit = (size_t)(mix >> 32) & t->bloom_mask;
    return (t->bloom[bit / 64] >> (bit % 64)) & 1;
}

static void pol_table_insert(pol_table_t *t, uint64_t hash, uint32_t idx)
{
    uint64_t mix = filter_pkey_mix(hash);
    size_t bit = (size_t)(mix >> 32) & t->bloom_mask;
    t->bloom[bit / 64] |= 1ULL << (bit % 64);
    size_t i = mix & t->mask;
    while (t->slots[i].idx1 != 0)
        i = (i + 1) & t->mask;
    t->slots[i].hash32 = (uint32_t)hash;
    t->slots[i].idx1 = idx + 1;
}

static const pol_name_ent_t *pol_name_find(const filter_policy_t *p, uint64_t hash, const char *s,
                                           size_t len)
{
    const pol_table_t *t = &p->name_tab;
    uint64_t mix = filter_pkey_mix(hash);
    if (!pol_bloom_has(t, mix))
        return NULL;
    for (size_t i = mix & t->mask;; i = (i + 1) & t->mask) {
        const pol_slot_t *sl = &t->slots[i];
        if (sl->idx1 == 0)
            return NULL;
        if (sl->hash32 != (uint32_t)hash)
            continue;
        const pol_name_ent_t *e = &p->names[sl->idx1 - 1];
        if (e->hash == hash && e->len == len && memcmp(e->name, s, len) == 0)
            return e;
    }
}

static const pol_addr_ent_t *pol_addr_find(const filter_policy_t *p, const filter_pkey_t *k)
{
    const pol_table_t *t = &p->addr_tab;
    uint64_t hash = filter_pkey_hash(k), mix = filter_pkey_mix(hash);
    if (!pol_bloom_has(t, mix))
        return NULL;
    for (size_t i = mix & t->mask;; i = (i + 1) & t->mask) {
        const pol_slot_t *sl = &t->slots[i];
        if (sl->idx1 == 0)
            return NULL;
        if (sl->hash32 != (uint32_t)hash)
            continue;
        const pol_addr_ent_t *e = &p->addrs[sl->idx1 - 1];
        if (e->key.w0 == k->w0 && e->key.w1 == k->w1 && e->key.len == k->len &&
            e->key.family == k->family)
            return e;
    }
}

/* ---- compile ------------------------------------------------------------ */

/* Sort keys for grouping rules that share a name or a prefix. */
typedef struct pol_name_key {
    const char *name;
    uint32_t len;
    uint32_t rule;
    bool wild;
} pol_name_key_t;

typedef struct pol_addr_key {
    filter_prefix_t prefix;
    uint32_t rule;
} pol_addr_key_t;

static int pol_name_key_cmp(const void *a, const void *b)
{
    const pol_name_key_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->name, y->name, n);
    if (c != 0)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    if (x->wild != y->wild)
        return x->wild ? 1 : -1;
    return (x->rule > y->rule) - (x->rule < y->rule);
}

static int pol_addr_key_cmp(const void *a, const void *b)
{
    const pol_addr_key_t *x = a, *y = b;
    if (x->prefix.addr.family != y->prefix.addr.family)
        return x->prefix.addr.family < y->prefix.addr.family ? -1 : 1;
    if (x->prefix.len != y->prefix.len)
        return x->prefix.len < y->prefix.len ? -1 : 1;
    int c = memcmp(x->prefix.addr.bytes, y->prefix.addr.bytes, 16);
    if (c != 0)
        return c;
    return (x->rule > y->rule) - (x->rule < y->rule);
}

/* A rule the config should have refused is -EINVAL here, not a silent drop. */
static bool pol_rule_valid(const filter_rule_t *r)
{
    if ((r->ports == NULL) != (r->n_ports == 0) || !pol_ports_valid(r->ports, r->n_ports))
        return false;
    if (r->kind == FILTER_RULE_NAME) {
        const filter_pattern_t *pt = &r->pattern;
        char norm[FILTER_NAME_MAX + 1];
        size_t n;
        if (pt->len == 0 || pt->len > FILTER_NAME_MAX || pt->name[pt->len] != '\0')
            return false;
        if (filter_name_normalize(pt->name, pt->len, norm, &n) != FILTER_NAME_OK || n != pt->len ||
            memcmp(norm, pt->name, n) != 0)
            return false;
        if (pt->wildcard && (pt->len + 2 > FILTER_NAME_MAX || !memchr(pt->name, '.', pt->len)))
            return false;
        return true;
    }
    if (r->kind == FILTER_RULE_ADDR) {
        const filter_prefix_t *px = &r->prefix;
        unsigned bits = px->addr.family == AF_INET ? 32 : px->addr.family == AF_INET6 ? 128 : 0;
        if (bits == 0 || px->len > bits)
            return false;
        uint64_t w0, w1;
        filter_pkey_words(&px->addr, &w0, &w1);
        filter_pkey_t k = filter_pkey_make(px->addr.family, w0, w1, px->len);
        return k.w0 == w0 && k.w1 == w1; /* no host bits (nor bytes past an IPv4 address) */
    }
    return false;
}

/* The text a rule is reported with: as written, or rebuilt when the caller
 * gave none. Returns its length; buf has FILTER_NAME_MAX + 3 bytes. */
static size_t pol_rule_text(const filter_rule_t *r, char *buf, const char **text)
{
    if (r->text) {
        *text = r->text;
        return strlen(r->text);
    }
    if (r->kind == FILTER_RULE_NAME) {
        size_t off = r->pattern.wildcard ? 2 : 0;
        memcpy(buf, "*.", off);
        memcpy(buf + off, r->pattern.name, r->pattern.len + 1);
    } else {
        filter_prefix_format(&r->prefix, buf, FILTER_NAME_MAX + 3);
    }
    *text = buf;
    return strlen(buf);
}

static void pol_compile_own(filter_policy_t *p, const filter_policy_input_t *in)
{
    for (size_t i = 0; i < in->n_own; i++) {
        pol_own_t o;
        /* Only IP listeners can be a TCP destination; skip anything else. */
        if (filter_addr_from_sockaddr((const struct sockaddr *)&in->own[i], &o.addr, &o.port) != 0)
            continue;
        o.any_addr = pol_is_unspecified(&o.addr);
        p->own[p->n_own++] = o;
    }
}

static int pol_compile_names(filter_policy_t *p, const filter_policy_input_t *in,
                             const char *const *name_copy, size_t n_name, size_t *n_rules_used,
                             size_t *n_segs, pol_seg_t *tmp)
{
    pol_name_key_t *keys = malloc((n_name ? n_name : 1) * sizeof *keys);
    if (!keys)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < p->n_rules; i++) {
        const filter_rule_t *r = &in->rules[i];
        if (r->kind != FILTER_RULE_NAME)
            continue;
        keys[k++] = (pol_name_key_t){name_copy[i], (uint32_t)r->pattern.len, (uint32_t)i,
                                     r->pattern.wildcard};
    }
    qsort(keys, n_name, sizeof *keys, pol_name_key_cmp);

    pol_name_ent_t *e = NULL;
    for (size_t i = 0; i < n_name; i++) {
        if (i == 0 || keys[i].len != keys[i - 1].len ||
            memcmp(keys[i].name, keys[i - 1].name, keys[i].len) != 0) {
            e = &p->names[p->n_names++];
            e->name = keys[i].name;
            e->len = keys[i].len;
            e->hash = pol_name_hash(e->name, e->len);
        }
        pol_group_t *g = keys[i].wild ? &e->wild : &e->exact;
        pol_len_add(keys[i].wild ? p->wild_lens : p->exact_lens, e->len);
        if (g->n_rule == 0)
            g->rule = (uint32_t)*n_rules_used;
        p->rules[(*n_rules_used)++] = keys[i].rule;
        g->n_rule++;
    }
    free(keys);
    for (size_t i = 0; i < p->n_names; i++) {
        pol_group_segs(p, &p->names[i].exact, tmp, n_segs);
        pol_group_segs(p, &p->names[i].wild, tmp, n_segs);
        pol_table_insert(&p->name_tab, p->names[i].hash, (uint32_t)i);
    }
    return 0;
}

static int pol_lens_desc_cmp(const void *a, const void *b)
{
    return (int)*(const uint8_t *)b - (int)*(const uint8_t *)a;
}

static int pol_compile_addrs(filter_policy_t *p, const filter_policy_input_t *in, size_t n_addr,
                             size_t *n_rules_used, size_t *n_segs, pol_seg_t *tmp)
{
    pol_addr_key_t *keys = malloc((n_addr ? n_addr : 1) * sizeof *keys);
    if (!keys)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < p->n_rules; i++) {
        const filter_rule_t *r = &in->rules[i];
        if (r->kind != FILTER_RULE_ADDR)
            continue;
        keys[k].prefix = r->prefix;
        keys[k++].rule = (uint32_t)i;
    }
    qsort(keys, n_addr, sizeof *keys, pol_addr_key_cmp);

    bool seen4[33] = {false}, seen6[129] = {false};
    pol_addr_ent_t *e = NULL;
    for (size_t i = 0; i < n_addr; i++) {
        if (i == 0 || pol_addr_key_cmp(&(pol_addr_key_t){keys[i].prefix, 0},
                                       &(pol_addr_key_t){keys[i - 1].prefix, 0}) != 0) {
            e = &p->addrs[p->n_addrs++];
            uint64_t w0, w1;
            filter_pkey_words(&keys[i].prefix.addr, &w0, &w1);
            e->key = filter_pkey_make(keys[i].prefix.addr.family, w0, w1, keys[i].prefix.len);
            e->hash = filter_pkey_hash(&e->key);
            e->group.rule = (uint32_t)*n_rules_used;
            if (e->key.family == AF_INET && !seen4[e->key.len]) {
                seen4[e->key.len] = true;
                p->lens4[p->n_lens4++] = e->key.len;
                p->set4 |= 1ULL << e->key.len;
            } else if (e->key.family == AF_INET6 && !seen6[e->key.len]) {
                seen6[e->key.len] = true;
                p->lens6[p->n_lens6++] = e->key.len;
                p->set6[e->key.len / 64] |= 1ULL << (e->key.len % 64);
            }
        }
        p->rules[(*n_rules_used)++] = keys[i].rule;
        e->group.n_rule++;
    }
    free(keys);
    /* Longest first: the most specific prefix decides and is reported. */
    qsort(p->lens4, p->n_lens4, 1, pol_lens_desc_cmp);
    qsort(p->lens6, p->n_lens6, 1, pol_lens_desc_cmp);
    for (size_t i = 0; i < p->n_addrs; i++) {
        pol_group_segs(p, &p->addrs[i].group, tmp, n_segs);
        pol_table_insert(&p->addr_tab, p->addrs[i].hash, (uint32_t)i);
    }
    return 0;
}

static bool pol_lists_valid(const filter_policy_input_t *in)
{
    if (in->n_lists && !in->lists)
        return false;
    for (size_t i = 0; i < in->n_lists; i++)
        if (!in->lists[i])
            return false;
    return true;
}

static bool pol_input_valid(const filter_policy_input_t *in)
{
    return in && (!in->n_rules || in->rules) && (!in->n_own || in->own) &&
           (!in->n_tls_ports || in->tls_ports) && (!in->n_http_ports || in->http_ports) &&
           pol_ports_valid(in->tls_ports, in->n_tls_ports) &&
           pol_ports_valid(in->http_ports, in->n_http_ports) && pol_lists_valid(in);
}

/* A name rule's normalised name is kept once: as the tail of its text when
 * the text ends with it (the usual case), else after the text. */
static bool pol_name_in_text(const filter_rule_t *r, const char *text, size_t tl)
{
    size_t n = r->pattern.len;
    return tl >= n && memcmp(text + tl - n, r->pattern.name, n) == 0;
}

/* How big the arrays must be, counted by pol_size_rules. */
typedef struct pol_sizes {
    size_t n_rules, n_name, n_addr, n_chars, n_ports, n_own, n_lists;
} pol_sizes_t;

/* Pass 1: validate every rule and size the arrays. 0 or -EINVAL. */
static int pol_size_rules(const filter_policy_input_t *in, pol_sizes_t *sz)
{
    memset(sz, 0, sizeof *sz);
    /* Without `allow` there are no rules, so nothing lifts §2.4's refusals. */
    sz->n_rules = in->filtering ? in->n_rules : 0;
    sz->n_lists = in->filtering ? in->n_lists : 0;
    sz->n_own = in->n_own;
    if (sz->n_rules >= UINT32_MAX)
        return -EINVAL;
    size_t default_ports = in->n_tls_ports + in->n_http_ports;
    for (size_t i = 0; i < sz->n_rules; i++) {
        const filter_rule_t *r = &in->rules[i];
        if (!pol_rule_valid(r))
            return -EINVAL;
        char buf[FILTER_NAME_MAX + 3];
        const char *text;
        size_t tl = pol_rule_text(r, buf, &text);
        sz->n_chars += tl + 1;
        if (r->kind == FILTER_RULE_NAME) {
            sz->n_name++;
            if (!pol_name_in_text(r, text, tl))
                sz->n_chars += r->pattern.len + 1;
            sz->n_ports += r->n_ports ? r->n_ports : default_ports;
        } else {
            sz->n_addr++;
            sz->n_ports += r->n_ports;
        }
    }
    return 0;
}

/* Point p's arrays into the allocation at base (p itself comes first) and
 * return its size; with base NULL only the size. Hash tables are sized to
 * the rule counts (distinct keys can only be fewer), so a small policy is
 * small. */
static size_t pol_layout(filter_policy_t *p, char *base, const pol_sizes_t *sz)
{
    size_t off = sizeof *p;
    /* What decisions read first right after the struct: the Bloom filters
     * (a small policy's share one cache line). */
    pol_bloom_carve(&p->name_tab, base, &off, sz->n_name);
    pol_bloom_carve(&p->addr_tab, base, &off, sz->n_addr);
    pol_slots_carve(&p->name_tab, base, &off, sz->n_name);
    pol_slots_carve(&p->addr_tab, base, &off, sz->n_addr);
    p->lists = pol_carve(base, &off, sz->n_lists, sizeof *p->lists);
    p->names = pol_carve(base, &off, sz->n_name, sizeof *p->names);
    p->addrs = pol_carve(base, &off, sz->n_addr, sizeof *p->addrs);
    /* Segments never outnumber the ranges they come from (+1 per address
     * rule without ports). */
    p->segs = pol_carve(base, &off, sz->n_ports + sz->n_addr, sizeof *p->segs);
    p->rules = pol_carve(base, &off, sz->n_rules, sizeof *p->rules);
    p->infos = pol_carve(base, &off, sz->n_rules, sizeof *p->infos);
    p->chars = pol_carve(base, &off, sz->n_chars, 1);
    p->ports = pol_carve(base, &off, sz->n_ports, sizeof *p->ports);
    p->own = pol_carve(base, &off, sz->n_own, sizeof *p->own);
    return off;
}

/* One zeroed allocation holding the policy and its arrays; NULL when out of
 * memory. */
static filter_policy_t *pol_new(const filter_policy_input_t *in, const pol_sizes_t *sz)
{
    filter_policy_t probe;
    size_t total = pol_layout(&probe, NULL, sz);
    if (total > SIZE_MAX - 64)
        return NULL;
    total = (total + 63) & ~(size_t)63; /* aligned_alloc wants a multiple */
    filter_policy_t *p = aligned_alloc(_Alignof(filter_policy_t), total);
    if (!p)
        return NULL;
    memset(p, 0, total);
    pol_layout(p, (char *)p, sz);
    p->bytes = total;
    p->filtering = in->filtering;
    p->n_rules = sz->n_rules;
    return p;
}

/* Copy r's effective ports to pr: its own, or for a name rule without ports
 * (§2.1) tls_ports and http_ports. Returns how many were copied. */
static size_t pol_rule_ports(const filter_policy_input_t *in, const filter_rule_t *r,
                             filter_port_range_t *pr)
{
    if (r->n_ports) {
        memcpy(pr, r->ports, r->n_ports * sizeof *pr);
        return r->n_ports;
    }
    if (r->kind != FILTER_RULE_NAME)
        return 0;
    if (in->n_tls_ports)
        memcpy(pr, in->tls_ports, in->n_tls_ports * sizeof *pr);
    if (in->n_http_ports)
        memcpy(pr + in->n_tls_ports, in->http_ports, in->n_http_ports * sizeof *pr);
    return in->n_tls_ports + in->n_http_ports;
}

/* Pass 2: each rule's info, text and merged ports; a name rule's name goes
 * to chars[] too and name_copy[i] points at it. */
static void pol_fill_rules(filter_policy_t *p, const filter_policy_input_t *in,
                           const char **name_copy)
{
    char *c = p->chars;
    filter_port_range_t *pr = p->ports;
    for (size_t i = 0; i < p->n_rules; i++) {
        const filter_rule_t *r = &in->rules[i];
        filter_rule_info_t *info = &p->infos[i];
        char buf[FILTER_NAME_MAX + 3];
        const char *text;
        size_t tl = pol_rule_text(r, buf, &text);
        memcpy(c, text, tl + 1);
        info->text = c;
        c += tl + 1;
        info->kind = r->kind;
        info->line = r->line;
        info->col = r->col;

        size_t np = pol_rule_ports(in, r, pr);
        info->n_ports = pol_ports_merge(pr, np);
        info->ports = info->n_ports ? pr : NULL;
        pr += np;

        if (r->kind == FILTER_RULE_NAME && pol_name_in_text(r, text, tl)) {
            name_copy[i] = info->text + tl - r->pattern.len;
        } else if (r->kind == FILTER_RULE_NAME) {
            memcpy(c, r->pattern.name, r->pattern.len + 1);
            name_copy[i] = c;
            c += r->pattern.len + 1;
        }
    }
}

/* Borrow the shared lists and merge their prefix lengths into all4/all6. */
static void pol_compile_lists(filter_policy_t *p, const filter_policy_input_t *in, size_t n_lists)
{
    p->all4 = p->set4;
    memcpy(p->all6, p->set6, sizeof p->all6);
    for (size_t i = 0; i < n_lists; i++) {
        const filter_policy_t *l = in->lists[i];
        p->lists[p->n_lists++] = l;
        p->list0 = p->lists[0];
        p->all4 |= l->set4;
        for (size_t w = 0; w < 3; w++)
            p->all6[w] |= l->set6[w];
    }
}

int filter_policy_compile(const filter_policy_input_t *in, filter_policy_t **out)
{
    const char **name_copy = NULL;
    pol_seg_t *tmp = NULL;
    pol_sizes_t sz;
    int rc;

    *out = NULL;
    if (!pol_input_valid(in))
        return -EINVAL;
    pthread_once(&pol_kpow_once, pol_kpow_init);
    if ((rc = pol_size_rules(in, &sz)) != 0)
        return rc;
    filter_policy_t *p = pol_new(in, &sz);
    if (!p)
        return -ENOMEM;
    pol_compile_own(p, in);
    name_copy = calloc(sz.n_rules ? sz.n_rules : 1, sizeof *name_copy);
    tmp = malloc((sz.n_ports + sz.n_addr ? sz.n_ports + sz.n_addr : 1) * sizeof *tmp);
    if (!name_copy || !tmp) {
        rc = -ENOMEM;
        goto fail;
    }
    pol_fill_rules(p, in, name_copy);

    size_t n_rules_used = 0, n_segs = 0;
    if ((rc = pol_compile_names(p, in, name_copy, sz.n_name, &n_rules_used, &n_segs, tmp)) != 0 ||
        (rc = pol_compile_addrs(p, in, sz.n_addr, &n_rules_used, &n_segs, tmp)) != 0)
        goto fail;
    pol_compile_lists(p, in, sz.n_lists);

    free(name_copy);
    free(tmp);
    *out = p;
    return 0;
fail:
    free(name_copy);
    free(tmp);
    filter_policy_free(p);
    return rc;
}

void filter_policy_free(filter_policy_t *p)
{
    if (!p)
        return;
    free(p); /* one allocation (pol_new) */
}

bool filter_policy_filtering(const filter_policy_t *p)
{
    return p && p->filtering;
}

size_t filter_policy_rule_count(const filter_policy_t *p)
{
    return p ? p->n_rules : 0;
}

const filter_rule_info_t *filter_policy_rule_at(const filter_policy_t *p, size_t i)
{
    return p && i < p->n_rules ? &p->infos[i] : NULL;
}

static const char *const pol_reason_names[FILTER_REASON_COUNT] = {
    [FILTER_REASON_ALLOWLIST] = "allowlist",
    [FILTER_REASON_FILTER_OFF] = "filter-off",
    [FILTER_REASON_NOT_ALLOWED] = "not-allowed",
    [FILTER_REASON_PORT] = "port-not-allowed",
    [FILTER_REASON_BAD_NAME] = "bad-name",
    [FILTER_REASON_REFUSED_RANGE] = "refused-range",
    [FILTER_REASON_PRIVATE_RANGE] = "private-range",
    [FILTER_REASON_OWN_LISTENER] = "own-listener",
    [FILTER_REASON_NO_SNI] = "no-sni",
    [FILTER_REASON_BAD_SNI] = "bad-sni",
    [FILTER_REASON_MULTI_SNI] = "multi-sni",
    [FILTER_REASON_NOT_TLS] = "not-tls",
    [FILTER_REASON_HELLO_TOO_BIG] = "hello-too-big",
    [FILTER_REASON_NO_HOST] = "no-host",
    [FILTER_REASON_MULTI_HOST] = "multi-host",
    [FILTER_REASON_BAD_HOST] = "bad-host",
    [FILTER_REASON_NOT_HTTP] = "not-http",
    [FILTER_REASON_HEAD_TOO_BIG] = "head-too-big",
    [FILTER_REASON_HOST_CONFLICT] = "host-conflict",
    [FILTER_REASON_CLIENT_CLOSED] = "client-closed",
    [FILTER_REASON_PEEK_TIMEOUT] = "peek-timeout",
    [FILTER_REASON_CONNECT_TIMEOUT] = "connect-timeout",
    [FILTER_REASON_DIAL_FAILED] = "dial-failed",
    [FILTER_REASON_NO_ADDRESS] = "no-address",
    [FILTER_REASON_POLICY_RELOAD] = "policy-reload",
    [FILTER_REASON_MAX_CONNECTIONS] = "max-connections",
    [FILTER_REASON_ACCEPT_ERROR] = "accept-error",
    [FILTER_REASON_HOST_SWITCH] = "host-switch",
    [FILTER_REASON_SNI_MISMATCH] = "sni-mismatch",
    [FILTER_REASON_HOST_MISMATCH] = "host-mismatch",
    [FILTER_REASON_BAD_FRAMING] = "bad-framing",
    [FILTER_REASON_BAD_REQUEST] = "bad-request",
    [FILTER_REASON_PROXY_AUTH] = "proxy-auth",
    [FILTER_REASON_DOH_CANARY] = "doh-canary",
};

const char *filter_reason_str(filter_reason_t r)
{
    if ((unsigned)r >= FILTER_REASON_COUNT || !pol_reason_names[r])
        return "unknown";
    return pol_reason_names[r];
}

/* ---- names -------------------------------------------------------------- */

static filter_decision_t pol_decision(filter_verdict_t v, filter_reason_t r,
                                      const filter_rule_info_t *rule)
{
    filter_decision_t d = {.verdict = v, .reason = r, .rule = rule};
    return d;
}

/* Every label boundary of a name of at most 253 octets: at most 127 labels. */
#define POL_MAX_LABELS ((FILTER_NAME_MAX + 1) / 2)

/* One right-to-left pass over the normalised name: the exact entry for the
 * whole name and the wildcard entries of every proper suffix, least specific
 * first. Returns the number of wildcard entries written to wild. */
static size_t pol_name_walk(const filter_policy_t *p, const char *name, size_t len,
                            const pol_name_ent_t **exact, const pol_name_ent_t **wild)
{
    size_t n_wild = 0;
    uint64_t h = 0;
    *exact = NULL;
    if (p->n_names == 0)
        return 0;
    for (size_t i = len; i > 0; i--) {
        /* h: hash of name[i-1 ..], the suffix of length m */
        size_t m = len - (i - 1);
        h += (unsigned char)name[i - 1] * pol_kpow[m - 1];
        if (i - 1 == 0) {
            if (!pol_len_in(p->exact_lens, m))
                continue;
            const pol_name_ent_t *e = pol_name_find(p, h, name, len);
            if (e && e->exact.n_rule)
                *exact = e;
        } else if ((name[i - 2] == '.') & pol_len_in(p->wild_lens, m)) {
            /* name[i-1..] is a proper suffix on a label boundary: `*.suffix`
             * rules match (strictly below it, never the suffix itself). */
            const pol_name_ent_t *e = pol_name_find(p, h, name + i - 1, m);
            if (e && e->wild.n_rule && n_wild < POL_MAX_LABELS)
                wild[n_wild++] = e;
        }
    }
    return n_wild;
}

/* ---- names over a policy and its lists ---------------------------------- */

/* The policies a decision looks at: the policy itself, then its lists. */
static inline const filter_policy_t *pol_nth(const filter_policy_t *p, size_t k)
{
    return k == 0 ? p : k == 1 ? p->list0 : p->lists[k - 1];
}

/* A normalised name's suffix hashes, computed once for the policy and all
 * its lists (pol_kpow is the same for every policy): the whole name's, and
 * at every label boundary the proper suffix's, least specific first. */
typedef struct pol_suffixes {
    uint64_t full;
    size_t n;
    struct {
        uint64_t hash;
        uint16_t off, len;
    } s[POL_MAX_LABELS];
} pol_suffixes_t;

static void pol_suffixes(const char *name, size_t len, pol_suffixes_t *sx)
{
    uint64_t h = 0;
    sx->n = 0;
    for (size_t i = len; i > 0; i--) {
        size_t m = len - (i - 1);
        h += (unsigned char)name[i - 1] * pol_kpow[m - 1];
        if (i - 1 > 0 && name[i - 2] == '.' && sx->n < POL_MAX_LABELS) {
            sx->s[sx->n].hash = h;
            sx->s[sx->n].off = (uint16_t)(i - 1);
            sx->s[sx->n++].len = (uint16_t)m;
        }
    }
    sx->full = h;
}

/* q's entry holding exact rules for the whole name, or NULL. With lens
 * false the length sets are not looked at: for the policy itself they are
 * one more cold cache line, and its Bloom filter answers as well. */
static const pol_name_ent_t *pol_exact_in(const filter_policy_t *q, const pol_suffixes_t *sx,
                                          const char *name, size_t len, bool lens)
{
    if (q->n_names == 0 || (lens && !pol_len_in(q->exact_lens, len)))
        return NULL;
    const pol_name_ent_t *e = pol_name_find(q, sx->full, name, len);
    return e && e->exact.n_rule ? e : NULL;
}

/* q's entry holding `*.suffix` rules for suffix j of the name, or NULL. */
static const pol_name_ent_t *pol_wild_in(const filter_policy_t *q, const pol_suffixes_t *sx,
                                         size_t j, const char *name, bool lens)
{
    size_t m = sx->s[j].len;
    if (q->n_names == 0 || (lens && !pol_len_in(q->wild_lens, m)))
        return NULL;
    const pol_name_ent_t *e = pol_name_find(q, sx->s[j].hash, name + sx->s[j].off, m);
    return e && e->wild.n_rule ? e : NULL;
}

/* filter_match_name for a policy with lists: the exact rules of the policy
 * then of each list, then the wildcards most specific first, the policy's
 * before the lists' at each level. Kept out of line (as are the other
 * list walks), so that the single-policy path keeps its small stack frame. */
__attribute__((noinline)) static filter_decision_t
pol_match_name_lists(const filter_policy_t *p, const char *name, size_t len, int port)
{
    pol_suffixes_t sx;
    const filter_rule_info_t *matched = NULL; /* the first rule that matched */
    uint32_t r;
    pol_suffixes(name, len, &sx);
    for (size_t k = 0; k <= p->n_lists; k++) {
        const filter_policy_t *q = pol_nth(p, k);
        const pol_name_ent_t *e = pol_exact_in(q, &sx, name, len, k != 0);
        if (!e)
            continue;
        if ((r = pol_group_allows(q, &e->exact, port)) != POL_NO_ENTRY)
            return pol_decision(FILTER_ALLOW, FILTER_REASON_ALLOWLIST, &q->infos[r]);
        if (!matched)
            matched = &q->infos[q->rules[e->exact.rule]];
    }
    for (size_t j = sx.n; j > 0; j--) {
        for (size_t k = 0; k <= p->n_lists; k++) {
            const filter_policy_t *q = pol_nth(p, k);
            const pol_name_ent_t *e = pol_wild_in(q, &sx, j - 1, name, k != 0);
            if (!e)
                continue;
            if ((r = pol_group_allows(q, &e->wild, port)) != POL_NO_ENTRY)
                return pol_decision(FILTER_ALLOW, FILTER_REASON_ALLOWLIST, &q->infos[r]);
            if (!matched)
                matched = &q->infos[q->rules[e->wild.rule]];
        }
    }
    if (matched)
        return pol_decision(FILTER_BLOCK, FILTER_REASON_PORT, matched);
    return pol_decision(FILTER_BLOCK, FILTER_REASON_NOT_ALLOWED, NULL);
}

/* Append group g of q's rules to out (up to max), counting them in *total. */
static void pol_group_out(const filter_policy_t *q, const pol_group_t *g,
                          const filter_rule_info_t **out, size_t max, size_t *total)
{
    for (uint32_t j = 0; j < g->n_rule; j++, (*total)++)
        if (out && *total < max)
            out[*total] = &q->infos[q->rules[g->rule + j]];
}

/* filter_match_name_all for a policy with lists, in pol_match_name_lists's
 * order. */
__attribute__((noinline)) static size_t pol_match_all_lists(const filter_policy_t *p,
                                                            const char *name, size_t len,
                                                            const filter_rule_info_t **out,
                                                            size_t max)
{
    pol_suffixes_t sx;
    size_t total = 0;
    pol_suffixes(name, len, &sx);
    for (size_t k = 0; k <= p->n_lists; k++) {
        const filter_policy_t *q = pol_nth(p, k);
        const pol_name_ent_t *e = pol_exact_in(q, &sx, name, len, k != 0);
        if (e)
            pol_group_out(q, &e->exact, out, max, &total);
    }
    for (size_t j = sx.n; j > 0; j--)
        for (size_t k = 0; k <= p->n_lists; k++) {
            const filter_policy_t *q = pol_nth(p, k);
            const pol_name_ent_t *e = pol_wild_in(q, &sx, j - 1, name, k != 0);
            if (e)
                pol_group_out(q, &e->wild, out, max, &total);
        }
    return total;
}

filter_decision_t filter_match_name(const filter_policy_t *p, const char *name, size_t len,
                                    int port)
{
    if (!p)
        return pol_decision(FILTER_BLOCK, FILTER_REASON_NOT_ALLOWED, NULL);
    if (!p->filtering)
        return pol_decision(FILTER_ALLOW, FILTER_REASON_FILTER_OFF, NULL);
    char norm[FILTER_NAME_MAX + 1];
    size_t n;
    if (!name || filter_name_normalize(name, len, norm, &n) != FILTER_NAME_OK)
        return pol_decision(FILTER_BLOCK, FILTER_REASON_BAD_NAME, NULL);
    return filter_match_name_normalized(p, norm, n, port);
}

filter_decision_t filter_match_name_normalized(const filter_policy_t *p, const char *norm, size_t n,
                                               int port)
{
    if (!p)
        return pol_decision(FILTER_BLOCK, FILTER_REASON_NOT_ALLOWED, NULL);
    if (!p->filtering)
        return pol_decision(FILTER_ALLOW, FILTER_REASON_FILTER_OFF, NULL);
    if (p->n_lists)
        return pol_match_name_lists(p, norm, n, port);

    const pol_name_ent_t *exact, *wild[POL_MAX_LABELS];
    size_t n_wild = pol_name_walk(p, norm, n, &exact, wild);

    /* Any matching rule that allows the port admits; the exact rule first,
     * then the most specific wildcard, for reporting. */
    uint32_t r;
    if (exact && (r = pol_group_allows(p, &exact->exact, port)) != POL_NO_ENTRY)
        return pol_decision(FILTER_ALLOW, FILTER_REASON_ALLOWLIST, &p->infos[r]);
    for (size_t i = n_wild; i > 0; i--)
        if ((r = pol_group_allows(p, &wild[i - 1]->wild, port)) != POL_NO_ENTRY)
            return pol_decision(FILTER_ALLOW, FILTER_REASON_ALLOWLIST, &p->infos[r]);
    if (exact)
        return pol_decision(FILTER_BLOCK, FILTER_REASON_PORT,
                            &p->infos[p->rules[exact->exact.rule]]);
    if (n_wild)
        return pol_decision(FILTER_BLOCK, FILTER_REASON_PORT,
                            &p->infos[p->rules[wild[n_wild - 1]->wild.rule]]);
    return pol_decision(FILTER_BLOCK, FILTER_REASON_NOT_ALLOWED, NULL);
}

size_t filter_match_name_all(const filter_policy_t *p, const char *name, size_t len,
                             const filter_rule_info_t **out, size_t max)
{
    if (!p || !p->filtering || !name)
        return 0;
    char norm[FILTER_NAME_MAX + 1];
    size_t n;
    if (filter_name_normalize(name, len, norm, &n) != FILTER_NAME_OK)
        return 0;
    if (p->n_lists)
        return pol_match_all_lists(p, norm, n, out, max);

    const pol_name_ent_t *exact, *wild[POL_MAX_LABELS];
    size_t n_wild = pol_name_walk(p, norm, n, &exact, wild);
    size_t total = 0;
    if (exact)
        pol_group_out(p, &exact->exact, out, max, &total);
    for (size_t i = n_wild; i > 0; i--)
        pol_group_out(p, &wild[i - 1]->wild, out, max, &total);
    return total;
}

/* ---- addresses ---------------------------------------------------------- */

/* Walk the prefix lengths in use, longest first. Returns the entry whose rule
 * allows port (and sets *rule), else NULL with *first the most specific entry
 * covering addr at all (NULL when none). With stop_at_first the walk ends at
 * the first covering entry (port ignored). */
static const pol_addr_ent_t *pol_addr_walk(const filter_policy_t *p, const filter_addr_t *a,
                                           int port, bool stop_at_first, uint32_t *rule,
                                           const pol_addr_ent_t **first)
{
    const uint8_t *lens;
    size_t n_lens;
    *first = NULL;
    *rule = POL_NO_ENTRY;
    if (a->family == AF_INET) {
        lens = p->lens4;
        n_lens = p->n_lens4;
    } else if (a->family == AF_INET6) {
        lens = p->lens6;
        n_lens = p->n_lens6;
    } else {
        return NULL;
    }
    uint64_t w0, w1;
    filter_pkey_words(a, &w0, &w1);
    for (size_t i = 0; i < n_lens; i++) {
        filter_pkey_t k = filter_pkey_make(a->family, w0, w1, lens[i]);
        const pol_addr_ent_t *e = pol_addr_find(p, &k);
        if (!e)
            continue;
        if (!*first)
            *first = e;
        if (stop_at_first)
            return NULL;
        uint32_t r = pol_group_allows(p, &e->group, port);
        if (r != POL_NO_ENTRY) {
            *rule = r;
            return e;
        }
    }
    return NULL;
}

/* pol_addr_walk over a policy and its lists: lengths in use by any of them,
 * longest first, and at each the policy before its lists. Returns the rule
 * that allows port, else NULL with *first the first rule of the most
 * specific covering entry (NULL when none). */
__attribute__((noinline)) static const filter_rule_info_t *
pol_addr_walk_lists(const filter_policy_t *p, const filter_addr_t *a, int port, bool stop_at_first,
                    const filter_rule_info_t **first)
{
    uint64_t set4 = p->all4;
    const uint64_t *set = a->family == AF_INET ? &set4 : p->all6;
    int bits = a->family == AF_INET ? 33 : 129;
    *first = NULL;
    if (a->family != AF_INET && a->family != AF_INET6)
        return NULL;
    uint64_t w0, w1;
    filter_pkey_words(a, &w0, &w1);
    for (int len = filter_pkey_next_len(set, bits); len >= 0;
         len = filter_pkey_next_len(set, len)) {
        filter_pkey_t key = filter_pkey_make(a->family, w0, w1, (unsigned)len);
        for (size_t k = 0; k <= p->n_lists; k++) {
            const filter_policy_t *q = pol_nth(p, k);
            const uint64_t *qs = a->family == AF_INET ? &q->set4 : q->set6;
            if (!((qs[len / 64] >> (len % 64)) & 1))
                continue;
            const pol_addr_ent_t *e = pol_addr_find(q, &key);
            if (!e)
                continue;
            if (!*first)
                *first = &q->infos[q->rules[e->group.rule]];
            if (stop_at_first)
                return NULL;
            uint32_t r = pol_group_allows(q, &e->group, port);
            if (r != POL_NO_ENTRY)
                return &q->infos[r];
        }
    }
    return NULL;
}

filter_decision_t filter_match_addr(const filter_policy_t *p, const filter_addr_t *addr, int port)
{
    if (!p || !addr)
        return pol_decision(FILTER_BLOCK, FILTER_REASON_NOT_ALLOWED, NULL);
    if (!p->filtering)
        return pol_decision(FILTER_ALLOW, FILTER_REASON_FILTER_OFF, NULL);
    if (p->n_lists) {
        const filter_rule_info_t *first, *allow;
        if ((allow = pol_addr_walk_lists(p, addr, port, false, &first)))
            return pol_decision(FILTER_ALLOW, FILTER_REASON_ALLOWLIST, allow);
        return pol_decision(FILTER_BLOCK, first ? FILTER_REASON_PORT : FILTER_REASON_NOT_ALLOWED,
                            first);
    }
    uint32_t r;
    const pol_addr_ent_t *first;
    if (pol_addr_walk(p, addr, port, false, &r, &first))
        return pol_decision(FILTER_ALLOW, FILTER_REASON_ALLOWLIST, &p->infos[r]);
    if (first)
        return pol_decision(FILTER_BLOCK, FILTER_REASON_PORT,
                            &p->infos[p->rules[first->group.rule]]);
    return pol_decision(FILTER_BLOCK, FILTER_REASON_NOT_ALLOWED, NULL);
}

bool filter_addr_covered(const filter_policy_t *p, const filter_addr_t *addr)
{
    if (p && addr && p->n_lists) {
        const filter_rule_info_t *first;
        pol_addr_walk_lists(p, addr, FILTER_ANY_PORT, true, &first);
        return first != NULL;
    }
    if (!p || !addr || p->n_addrs == 0)
        return false;
    uint32_t r;
    const pol_addr_ent_t *first;
    pol_addr_walk(p, addr, FILTER_ANY_PORT, true, &r, &first);
    return first != NULL;
}

/* §2.4: moat's own listeners. A listener on a wildcard address accepts on
 * every local address, and the policy cannot know the host's interface
 * addresses (filter/ does no I/O), so such a listener refuses its port on
 * loopback, on the unspecified address and on every address another own
 * listener is bound to; the daemon adds interface addresses to `own` if it
 * wants them refused too. */
static bool pol_is_own(const filter_policy_t *p, const filter_addr_t *a, uint16_t port)
{
    for (size_t i = 0; i < p->n_own; i++) {
        const pol_own_t *o = &p->own[i];
        if (o->port != port)
            continue;
        if (!o->any_addr) {
            if (pol_addr_eq(&o->addr, a))
                return true;
            continue;
        }
        /* [::]:X usually accepts IPv4 too (dual stack): match either family. */
        if (pol_is_loopback(a) || pol_is_unspecified(a))
            return true;
        for (size_t j = 0; j < p->n_own; j++)
            if (!p->own[j].any_addr && pol_addr_eq(&p->own[j].addr, a))
                return true;
    }
    return false;
}

filter_decision_t filter_check_refused(const filter_policy_t *p, const filter_addr_t *addr,
                                       int port)
{
    if (!p || !addr)
        return pol_decision(FILTER_BLOCK, FILTER_REASON_REFUSED_RANGE, NULL);
    if (filter_addr_is_always_refused(addr) && !filter_addr_covered(p, addr))
        return pol_decision(FILTER_BLOCK, FILTER_REASON_REFUSED_RANGE, NULL);
    /* A connection back into moat could loop through the transparent
     * listener, so an own listener is lifted only by an address rule that
     * covers it on that very port, not merely its address; with filtering
     * off there are no rules (filter_match_addr's filter-off allow lifts
     * nothing). An IPv6 form that carries a listener's IPv4 address
     * (64:ff9b::, 2002:...) reaches it through a translator (SPEC §2.5). */
    filter_addr_t v4;
    bool own = port >= 0 && port <= 65535 &&
               (pol_is_own(p, addr, (uint16_t)port) ||
                (filter_addr_embedded_v4(addr, &v4) && pol_is_own(p, &v4, (uint16_t)port)));
    if (own && (!p->filtering || filter_match_addr(p, addr, port).verdict != FILTER_ALLOW))
        return pol_decision(FILTER_BLOCK, FILTER_REASON_OWN_LISTENER, NULL);
    return pol_decision(FILTER_ALLOW, FILTER_REASON_ALLOWLIST, NULL);
}

bool filter_check_private(const filter_policy_t *p, const filter_addr_t *addr)
{
    if (!p || !addr || !p->filtering)
        return false;
    return filter_addr_is_private(addr) && !filter_addr_covered(p, addr);
}

/* ---- introspection (policy_internal.h) ----------------------------------- */

static size_t pol_probe_len(const pol_table_t *t, uint64_t hash, uint32_t idx)
{
    size_t n = 1;
    for (size_t i = filter_pkey_mix(hash) & t->mask; t->slots[i].idx1 != idx + 1;
         i = (i + 1) & t->mask)
        n++;
    return n;
}

void filter_policy_stats(const filter_policy_t *p, filter_policy_stats_t *st)
{
    memset(st, 0, sizeof *st);
    st->bytes = p->bytes;
    st->name_entries = p->n_names;
    st->name_slots = p->name_tab.mask + 1;
    st->addr_entries = p->n_addrs;
    st->addr_slots = p->addr_tab.mask + 1;
    st->v4_lengths = p->n_lens4;
    st->v6_lengths = p->n_lens6;
    for (size_t i = 0; i < p->n_names; i++) {
        size_t n = pol_probe_len(&p->name_tab, p->names[i].hash, (uint32_t)i);
        if (n > st->max_probe)
            st->max_probe = n;
    }
    for (size_t i = 0; i < p->n_addrs; i++) {
        size_t n = pol_probe_len(&p->addr_tab, p->addrs[i].hash, (uint32_t)i);
        if (n > st->max_probe)
            st->max_probe = n;
    }
}
