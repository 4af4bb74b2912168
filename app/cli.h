/* app/cli.h: the offline commands `moat check` and `moat explain` (SPEC §1).
 *
 * Both load a config through the same loader and policy compiler the daemon
 * uses, print to the given streams, and return the process exit status.
 */
#ifndef MOAT_APP_CLI_H
#define MOAT_APP_CLI_H

#include <stdio.h>

#include "core/daemon.h"

/* Exit statuses of SPEC §1 (and explain's "blocked"). */
enum {
    MOAT_EXIT_OK = 0,
    MOAT_EXIT_CONFIG = 1,  /* bad config or usage */
    MOAT_EXIT_RUNTIME = 2, /* e.g. a listen address in use */
    MOAT_EXIT_BLOCKED = 3, /* `moat explain`: the target is blocked */
};

/* Load path (NULL: the embedded default) and compile its policy; on failure
 * print every error as FILE:LINE:COL: message on err and return it. Shared by
 * every command that reads a config. */
int cli_load_config(const char *path, moat_gen_t **gen, FILE *err);

/* `moat check FILE`: 0 and a one-screen summary on out, or 1 and
 * FILE:LINE:COL: message for every error on err. */
int cli_check(const char *path, FILE *out, FILE *err);

/* `moat explain FILE TARGET [PORT] [--client ADDR | --user NAME]` (port_text,
 * client, user NULL when absent; client or user: decide as that tenant,
 * SPEC §2.7): the decision and the rule that made it on out; 0 allowed, 3
 * blocked, 1 bad usage or config. */
int cli_explain(const char *path, const char *target, const char *port_text, const char *client,
                const char *user, FILE *out, FILE *err);

#endif
