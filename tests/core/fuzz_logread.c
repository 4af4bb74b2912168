/* tests/core/fuzz_logread.c: libFuzzer target for the decision line reader
 * (core/logread.h).
 *
 * Besides "does not crash", it traps when a promise is broken:
 *   - a refused line leaves the record empty;
 *   - a decision has a kind and a verdict, every short field
 *     NUL-terminated within its room, and a name within LOGREAD_NAME_MAX;
 *   - a port is 0 or 1-65535;
 *   - the reader reads no byte past the line (the input is copied to a
 *     buffer of its exact size, so ASan sees an overread).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/logread.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fz_check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

static void fz_short(const char *s)
{
    fz_check(memchr(s, '\0', LOGREAD_SHORT_MAX) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = malloc(size ? size : 1);
    if (!line)
        return 0;
    if (size)
        memcpy(line, data, size);
    logread_rec_t r;
    logread_status_t st = logread_line(line, size, &r);
    fz_check(st == LOGREAD_DECISION || st == LOGREAD_OTHER || st == LOGREAD_MALFORMED);
    if (st != LOGREAD_DECISION) {
        fz_check(r.kind[0] == '\0' && r.verdict[0] == '\0' && !r.has_name && r.port == 0);
    } else {
        fz_check(r.kind[0] != '\0' && r.verdict[0] != '\0');
        const char *shorts[] = {r.time, r.kind,  r.listener, r.client, r.tenant,
                                r.dest, r.qtype, r.verdict,  r.reason};
        for (size_t i = 0; i < sizeof shorts / sizeof shorts[0]; i++)
            fz_short(shorts[i]);
        fz_check(r.name_len <= LOGREAD_NAME_MAX && r.name[r.name_len] == '\0');
        fz_check(r.has_name || r.name_len == 0);
        fz_check(r.port <= 65535);
    }
    free(line);
    return 0;
}
