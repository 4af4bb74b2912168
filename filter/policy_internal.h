/* filter/policy_internal.h: introspection of a compiled policy for tests and
 * bench/filter only; the daemon decides through filter/policy.h alone. */
#ifndef MOAT_FILTER_POLICY_INTERNAL_H
#define MOAT_FILTER_POLICY_INTERNAL_H

#include <stddef.h>

#include "filter/policy.h"

typedef struct filter_policy_stats {
    size_t bytes;        /* heap bytes the policy owns (what it asked malloc for) */
    size_t name_entries; /* distinct names (exact and wildcard bases share one) */
    size_t name_slots;   /* open-addressing slots of the name hash */
    size_t addr_entries; /* distinct (family, length, masked address) keys */
    size_t addr_slots;
    size_t v4_lengths, v6_lengths; /* prefix lengths in use per family */
    size_t max_probe;              /* longest probe sequence over every stored key */
} filter_policy_stats_t;

/* Fill *st for p (p not NULL). */
void filter_policy_stats(const filter_policy_t *p, filter_policy_stats_t *st);

#endif
