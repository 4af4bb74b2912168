/* filter/tenant.c: client address -> tenant by the longest prefix (SPEC §2.7).
 *
 * One allocation: the struct, then an open-addressing table of
 * (family, length, masked address) -> tenant keys stored in the slots
 * themselves (a probe reads one slot, no entry array behind it), then a
 * one-hash Bloom filter of 16 bits per key in front of it, as the policy's
 * address rules do (filter/policy.c): a lookup probes once per prefix
 * length in use, longest first, and the lengths an address is not under
 * are mostly answered by the filter, which stays in cache.
 *
 * The keys come from the config, not from guests, so a guest cannot lengthen
 * a probe sequence; the hash is still seeded per table (filter/siphash.h's
 * key), so the slot order differs from one table to the next.
 */
#include "filter/tenant.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "filter/prefix_key.h"
#include "filter/siphash.h"

typedef struct ten_slot {
    uint64_t w0, w1;  /* masked address */
    uint32_t tenant1; /* tenant index + 1; 0: empty */
    uint8_t family, len;
} ten_slot_t;

struct filter_tenants {
    ten_slot_t *slots;
    size_t mask; /* slots - 1 */
    uint64_t *bloom;
    size_t bloom_mask; /* bits - 1 */
    uint64_t seed;
    uint64_t lens[2][3]; /* prefix lengths in use: [0] IPv4, [1] IPv6 */
    size_t bytes;
};

static inline uint64_t ten_hash(const filter_tenants_t *t, const filter_pkey_t *k)
{
    return filter_pkey_mix(filter_pkey_hash(k) ^ t->seed);
}

static inline bool ten_bloom_has(const filter_tenants_t *t, uint64_t mix)
{
    size_t bit = (size_t)(mix >> 32) & t->bloom_mask;
    return (t->bloom[bit / 64] >> (bit % 64)) & 1;
}

/* The slot holding k, or the empty slot where it would go. */
static ten_slot_t *ten_find(const filter_tenants_t *t, const filter_pkey_t *k, uint64_t mix)
{
    for (size_t i = mix & t->mask;; i = (i + 1) & t->mask) {
        ten_slot_t *s = &t->slots[i];
        if (s->tenant1 == 0 ||
            (s->w0 == k->w0 && s->w1 == k->w1 && s->len == k->len && s->family == k->family))
            return s;
    }
}

/* A prefix the config should have refused (bad family or length, host bits
 * set) is -EINVAL, not a silent drop. */
static int ten_key(const filter_prefix_t *px, filter_pkey_t *k)
{
    unsigned bits = px->addr.family == AF_INET ? 32 : px->addr.family == AF_INET6 ? 128 : 0;
    if (bits == 0 || px->len > bits)
        return -EINVAL;
    uint64_t w0, w1;
    filter_pkey_words(&px->addr, &w0, &w1);
    *k = filter_pkey_make(px->addr.family, w0, w1, px->len);
    return k->w0 == w0 && k->w1 == w1 ? 0 : -EINVAL;
}

static int ten_insert(filter_tenants_t *t, const filter_prefix_t *px, size_t tenant)
{
    filter_pkey_t k;
    int rc = ten_key(px, &k);
    if (rc != 0)
        return rc;
    uint64_t mix = ten_hash(t, &k);
    ten_slot_t *s = ten_find(t, &k, mix);
    if (s->tenant1 != 0)
        /* The same prefix twice in one tenant is harmless. */
        return s->tenant1 == tenant + 1 ? 0 : -EEXIST;
    *s = (ten_slot_t){k.w0, k.w1, (uint32_t)(tenant + 1), k.family, k.len};
    size_t bit = (size_t)(mix >> 32) & t->bloom_mask;
    t->bloom[bit / 64] |= 1ULL << (bit % 64);
    t->lens[k.family == AF_INET6][k.len / 64] |= 1ULL << (k.len % 64);
    return 0;
}

int filter_tenants_compile(const filter_tenant_input_t *tenants, size_t n, filter_tenants_t **out)
{
    size_t keys = 0, cap = 1, bits = 64;
    int rc = 0;

    *out = NULL;
    if (n && !tenants)
        return -EINVAL;
    if (n >= UINT32_MAX)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (tenants[i].n_clients && !tenants[i].clients)
            return -EINVAL;
        keys += tenants[i].n_clients;
    }
    while (4 * keys > 3 * cap) /* load factor at most 3/4: hits probe ~2.5 slots */
        cap *= 2;
    while (bits < 16 * keys)
        bits *= 2;
    size_t slots_off = (sizeof(filter_tenants_t) + 15) & ~(size_t)15;
    size_t bloom_off = slots_off + cap * sizeof(ten_slot_t);
    size_t total = bloom_off + bits / 8;
    filter_tenants_t *t = calloc(1, total);
    if (!t)
        return -ENOMEM;
    t->slots = (ten_slot_t *)((char *)t + slots_off);
    t->mask = cap - 1;
    t->bloom = (uint64_t *)((char *)t + bloom_off);
    t->bloom_mask = bits - 1;
    t->bytes = total;
    uint8_t key[FILTER_SIPHASH_KEY_LEN];
    filter_siphash_key(key, t);
    memcpy(&t->seed, key, sizeof t->seed);

    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < tenants[i].n_clients; j++)
            if ((rc = ten_insert(t, &tenants[i].clients[j], i)) != 0)
                goto fail;
    *out = t;
    return 0;
fail:
    filter_tenants_free(t);
    return rc;
}

void filter_tenants_free(filter_tenants_t *t)
{
    free(t); /* one allocation */
}

long filter_tenants_lookup(const filter_tenants_t *t, const filter_addr_t *client)
{
    if (!t || !client || (client->family != AF_INET && client->family != AF_INET6))
        return -1;
    const uint64_t *set = t->lens[client->family == AF_INET6];
    uint64_t w0, w1;
    filter_pkey_words(client, &w0, &w1);
    int bits = client->family == AF_INET ? 33 : 129;
    for (int len = filter_pkey_next_len(set, bits); len >= 0;
         len = filter_pkey_next_len(set, len)) {
        filter_pkey_t k = filter_pkey_make(client->family, w0, w1, (unsigned)len);
        uint64_t mix = ten_hash(t, &k);
        if (!ten_bloom_has(t, mix))
            continue;
        const ten_slot_t *s = ten_find(t, &k, mix);
        if (s->tenant1 != 0)
            return (long)s->tenant1 - 1;
    }
    return -1;
}

size_t filter_tenants_memory(const filter_tenants_t *t)
{
    return t ? t->bytes : 0;
}
