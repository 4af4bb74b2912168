/* app/args.h: the command line's one option shape, `--name VALUE` or
 * `--name=VALUE`, read the same way by every command.
 */
#ifndef MOAT_APP_ARGS_H
#define MOAT_APP_ARGS_H

#include <stddef.h>
#include <string.h>

/* When argv[*i] is `--NAME=VALUE`, VALUE; when it is `--NAME` and a value
 * follows, that value, with *i moved onto it; otherwise NULL (*i kept).
 * name is given with its dashes: "--iface". */
static inline const char *args_value(int argc, char **argv, int *i, const char *name)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] == '\0' && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

#endif
