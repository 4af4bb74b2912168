/* filter/prefix_key.h: a masked address as a hash key, shared by the
 * policy's address rules (filter/policy.c) and the tenant table
 * (filter/tenant.c). Both store (family, length, masked address) keys and
 * look an address up by probing once per prefix length in use, longest
 * first. Internal to filter/: static inline helpers, no state.
 */
#ifndef MOAT_FILTER_PREFIX_KEY_H
#define MOAT_FILTER_PREFIX_KEY_H

#include <stdbool.h>
#include <stdint.h>

#include "filter/addr.h"

/* A masked address as two big-endian words (IPv4 in the top of w0). */
typedef struct filter_pkey {
    uint64_t w0, w1;
    uint8_t family, len;
} filter_pkey_t;

/* The slot hash must spread every bit: MurmurHash3's fmix64. */
static inline uint64_t filter_pkey_mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* The address as two big-endian words, so masking is two shifts. */
static inline void filter_pkey_words(const filter_addr_t *a, uint64_t *w0, uint64_t *w1)
{
    uint64_t x = 0, y = 0;
    for (unsigned i = 0; i < 8; i++) {
        x = x << 8 | a->bytes[i];
        y = y << 8 | a->bytes[8 + i];
    }
    *w0 = x;
    *w1 = y;
}

/* The key of the first len bits of (w0, w1). */
static inline filter_pkey_t filter_pkey_make(uint8_t family, uint64_t w0, uint64_t w1, unsigned len)
{
    uint64_t m0 = len >= 64 ? ~0ULL : len == 0 ? 0 : ~0ULL << (64 - len);
    uint64_t m1 = len <= 64 ? 0 : len >= 128 ? ~0ULL : ~0ULL << (128 - len);
    filter_pkey_t k = {w0 & m0, w1 & m1, family, (uint8_t)len};
    return k;
}

/* Unmixed hash of a key (callers finish it with filter_pkey_mix). */
static inline uint64_t filter_pkey_hash(const filter_pkey_t *k)
{
    uint64_t h = k->w0 * 0xff51afd7ed558ccdULL;
    h ^= (k->w1 * 0xc4ceb9fe1a85ec53ULL) >> 7 | (k->w1 * 0xc4ceb9fe1a85ec53ULL) << 57;
    h ^= ((uint64_t)k->family << 8 | k->len) * 0x9e3779b97f4a7c15ULL;
    return h;
}

static inline bool filter_pkey_eq(const filter_pkey_t *a, const filter_pkey_t *b)
{
    return a->w0 == b->w0 && a->w1 == b->w1 && a->len == b->len && a->family == b->family;
}

/* The longest prefix length in a bit set (bit n: length n, up to 3 words)
 * shorter than from; -1 when none is left. Walks lengths longest first. */
static inline int filter_pkey_next_len(const uint64_t *set, int from)
{
    for (int len = from - 1; len >= 0;) {
        uint64_t word = set[len / 64] & (~0ULL >> (63 - len % 64));
        if (word)
            return (len / 64) * 64 + 63 - __builtin_clzll(word);
        len = (len / 64) * 64 - 1;
    }
    return -1;
}

#endif
