/* filter/siphash.c: SipHash-1-3 (see siphash.h). */
#include "filter/siphash.h"

#include <endian.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static uint64_t sip_rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

/* A little-endian word from any address: one load (GCC compiled the
 * byte-by-byte form to 24 instructions a word, most of a short key's hash). */
static inline uint64_t sip_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return le64toh(v);
}

#define SIP_ROUND                                                                                  \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = sip_rotl(v1, 13);                                                                     \
        v1 ^= v0;                                                                                  \
        v0 = sip_rotl(v0, 32);                                                                     \
        v2 += v3;                                                                                  \
        v3 = sip_rotl(v3, 16);                                                                     \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = sip_rotl(v3, 21);                                                                     \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = sip_rotl(v1, 17);                                                                     \
        v1 ^= v2;                                                                                  \
        v2 = sip_rotl(v2, 32);                                                                     \
    } while (0)

uint64_t filter_siphash(const uint8_t key[FILTER_SIPHASH_KEY_LEN], const uint8_t *in, size_t len)
{
    uint64_t k0 = sip_le64(key), k1 = sip_le64(key + 8);
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t m = sip_le64(in + i);
        v3 ^= m;
        SIP_ROUND;
        v0 ^= m;
    }
    uint8_t last[8] = {0};
    if (len > i)
        memcpy(last, in + i, len - i);
    last[7] = (uint8_t)len;
    uint64_t m = sip_le64(last);
    v3 ^= m;
    SIP_ROUND;
    v0 ^= m;
    v2 ^= 0xff;
    SIP_ROUND;
    SIP_ROUND;
    SIP_ROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

void filter_siphash_key(uint8_t key[FILTER_SIPHASH_KEY_LEN], const void *salt)
{
    if (getrandom(key, FILTER_SIPHASH_KEY_LEN, GRND_NONBLOCK) == FILTER_SIPHASH_KEY_LEN)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t a = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 32;
    uint64_t b = (uint64_t)(uintptr_t)salt;
    memcpy(key, &a, 8);
    memcpy(key + 8, &b, 8);
}
