/* bench/filter/bench_util.h: what bench_filter and bench_tenant share: a
 * fixed-seed PRNG, so runs are comparable, and the clock.
 */
#ifndef MOAT_BENCH_FILTER_UTIL_H
#define MOAT_BENCH_FILTER_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct bf_rng {
    uint64_t s;
} bf_rng_t;

/* xorshift64*: small, fixed seed, good enough to spread keys. */
static inline uint64_t bf_next(bf_rng_t *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545f4914f6cdd1dULL;
}

static inline uint32_t bf_below(bf_rng_t *r, uint32_t n)
{
    return (uint32_t)(bf_next(r) % n);
}

static volatile size_t bf_sink; /* keeps timed loops from being optimised away */

/* Wall-clock time; build with -DBF_CLOCK=CLOCK_THREAD_CPUTIME_ID to count
 * only this thread's CPU time on a busy machine. */
#ifndef BF_CLOCK
#define BF_CLOCK CLOCK_MONOTONIC
#endif

static inline double bf_now(void)
{
    struct timespec ts;
    clock_gettime(BF_CLOCK, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
