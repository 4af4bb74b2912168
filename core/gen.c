/* core/gen.c: generations (see gen.h). */
#include "core/gen.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* moat's own listeners, refused as destinations (SPEC §2.4): every listen
 * address of the config. Returns 0 with *out (owned, calloc'd) and *n, or
 * -ENOMEM. */
static int gen_own_listeners(const cfg_t *cfg, struct sockaddr_storage **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    const cfg_addr_list_t *lists[] = {&cfg->dns.listen, &cfg->proxy.transparent, &cfg->proxy.tls,
                                      &cfg->proxy.http};
    size_t n_own = cfg->metrics.enabled ? 1 : 0;
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        n_own += lists[i]->n;
    struct sockaddr_storage *own = calloc(n_own ? n_own : 1, sizeof *own);
    if (!own)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        for (size_t j = 0; j < lists[i]->n; j++)
            own[k++] = lists[i]->items[j].sa;
    if (cfg->metrics.enabled)
        own[k++] = cfg->metrics.listen.sa;
    *out = own;
    *n = k;
    return 0;
}

int moat_gen_from_cfg(cfg_t *cfg, moat_gen_t **out)
{
    *out = NULL;
    struct sockaddr_storage *own = NULL;
    size_t n_own = 0;
    int rc = -ENOMEM;
    moat_gen_t *gen = calloc(1, sizeof *gen);
    if (!gen)
        goto fail;
    rc = gen_own_listeners(cfg, &own, &n_own);
    if (rc != 0)
        goto fail;
    filter_policy_input_t in = {
        .filtering = cfg->filtering,
        .rules = cfg->allow,
        .n_rules = cfg->n_allow,
        .tls_ports = cfg->proxy.tls_ports.items,
        .n_tls_ports = cfg->proxy.tls_ports.n,
        .http_ports = cfg->proxy.http_ports.items,
        .n_http_ports = cfg->proxy.http_ports.n,
        .own = own,
        .n_own = n_own,
    };
    rc = filter_policy_compile(&in, &gen->policy);
    if (rc != 0)
        goto fail;
    free(own);
    gen->refs = 1;
    gen->cfg = cfg;
    *out = gen;
    return 0;
fail:
    free(own);
    free(gen);
    cfg_free(cfg);
    return rc;
}

int moat_gen_load(const char *path, moat_gen_t **out, cfg_diag_t *diag)
{
    *out = NULL;
    cfg_t *cfg = NULL;
    int rc;
    if (path) {
        rc = cfg_load_file(path, &cfg, diag);
    } else {
        memset(diag, 0, sizeof *diag);
        rc = cfg_load_default(&cfg);
    }
    if (rc != 0)
        return rc;
    return moat_gen_from_cfg(cfg, out);
}

moat_gen_t *moat_gen_ref(moat_gen_t *gen)
{
    gen->refs++;
    return gen;
}

void moat_gen_unref(moat_gen_t *gen)
{
    if (!gen)
        return;
    assert(gen->refs > 0);
    if (--gen->refs > 0)
        return;
    filter_policy_free(gen->policy);
    cfg_free(gen->cfg);
    free(gen);
}

void moat_gen_swap(moat_gen_t **slot, moat_gen_t *gen)
{
    moat_gen_t *old = *slot;
    *slot = moat_gen_ref(gen);
    moat_gen_unref(old);
}
