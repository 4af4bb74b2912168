/* core/gen.h: generations. A generation is one loaded config with its
 * compiled policy. It is immutable and reference-counted: the daemon holds
 * the current one, and anything that must keep deciding with the policy it
 * started under (an open connection, a query waiting for upstream) takes a
 * reference. A reload builds a new generation and swaps it in whole.
 */
#ifndef MOAT_CORE_GEN_H
#define MOAT_CORE_GEN_H

#include <stdint.h>

#include "config/config.h"
#include "filter/policy.h"

typedef struct moat_gen {
    unsigned refs;
    uint64_t id;             /* set by the daemon: 1 for the first, +1 per successful reload */
    cfg_t *cfg;              /* owned */
    filter_policy_t *policy; /* owned */
} moat_gen_t;

/* Load path (NULL: the embedded default) and compile its policy. Returns 0
 * with *out holding one reference, -EINVAL with the errors in *diag (always
 * initialised; free with cfg_diag_free), or another negative errno. Pure:
 * safe to call off the loop thread. */
int moat_gen_load(const char *path, moat_gen_t **out, cfg_diag_t *diag);

/* Compile a generation from an already loaded config (takes ownership of cfg,
 * also on failure). moat's own listeners become refused destinations. */
int moat_gen_from_cfg(cfg_t *cfg, moat_gen_t **out);

/* Take a reference; returns gen. */
moat_gen_t *moat_gen_ref(moat_gen_t *gen);

/* Drop a reference; the last one frees gen. NULL is a no-op. */
void moat_gen_unref(moat_gen_t *gen);

/* Make *slot hold a reference on gen, dropping the one it held (if any). */
void moat_gen_swap(moat_gen_t **slot, moat_gen_t *gen);

#endif
