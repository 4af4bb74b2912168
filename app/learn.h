/* app/learn.h: `moat learn [--config FILE] [--wildcards N] LOG...` (SPEC §2.8):
 * read decision logs (text or JSON, plain or gzip, `-` for stdin) and print
 * a YAML allowlist, one section per tenant, that lets through what the logs
 * show was blocked (or let through by audit).
 */
#ifndef MOAT_APP_LEARN_H
#define MOAT_APP_LEARN_H

#include <stddef.h>
#include <stdio.h>

/* What `moat learn` was asked for. */
typedef struct learn_opts {
    const char *config; /* --config FILE, or NULL */
    unsigned wildcards; /* --wildcards N, 0: none */
    const char *const *logs;
    size_t n_logs;
} learn_opts_t;

/* Run it: the policy on out, notes and errors on err. Returns an exit
 * status (0, 1: bad config, 2: a log could not be read). */
int learn_main(const learn_opts_t *o, FILE *out, FILE *err);

/* Parse argv[2..] of `moat learn`; returns an exit status. */
int learn_cmd(int argc, char **argv, FILE *out, FILE *err);

#endif
