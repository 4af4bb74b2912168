/* tests/config/fuzz_config.c: any bytes through the YAML loader; it must
 * return a config or diagnostics, never crash or leak. cfg_load_string reads
 * no file, so `include` patterns in the input are checked but match nothing:
 * the fuzzer never reads the machine's files. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cfg_t *cfg;
    cfg_diag_t diag;
    static FILE *devnull;
    if (!devnull)
        devnull = fopen("/dev/null", "w");
    cfg_load_string("fuzz", (const char *)data, size, &cfg, &diag);
    if (devnull)
        cfg_diag_print(&diag, devnull);
    cfg_free(cfg);
    cfg_diag_free(&diag);
    return 0;
}
