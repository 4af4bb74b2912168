/* tests/core/test_gen.c: generations with tenants (core/gen.h): which scope
 * a client gets, and the views that decide which cached DNS answers two
 * scopes may share. */
#include <criterion/criterion.h>
#include <string.h>

#include "core/gen.h"

static moat_gen_t *load(const char *yaml)
{
    cfg_t *cfg = NULL;
    cfg_diag_t diag;
    int rc = cfg_load_string("t.yaml", yaml, strlen(yaml), &cfg, &diag);
    if (rc != 0)
        cfg_diag_print(&diag, stderr);
    cfg_diag_free(&diag);
    cr_assert_eq(rc, 0);
    moat_gen_t *gen = NULL;
    cr_assert_eq(moat_gen_from_cfg(cfg, &gen), 0);
    return gen;
}

static filter_addr_t addr(const char *s)
{
    filter_addr_t a;
    cr_assert_eq(filter_addr_parse(s, strlen(s), &a), 0, "%s", s);
    return a;
}

static const char *const TENANTS =
    "lists: {l: [203.0.113.0/24, x.test]}\n"
    "tenants:\n"
    "  - {name: a, clients: [10.0.0.0/8], allow: [1.2.3.4, 5.6.7.0/24]}\n"
    "  - {name: b, clients: [10.1.0.0/16], allow: [5.6.7.0/24, 1.2.3.4]}\n"
    "  - {name: c, clients: [10.2.0.0/16], allow: [a.test]}\n"
    "  - {name: d, clients: [10.3.0.0/16], mode: audit,\n"
    "     allow: [{list: l}]}\n"
    "  - {name: e, clients: [\"fd00::/8\"], allow: [203.0.113.0/24]}\n";

Test(gen, a_client_gets_its_tenant_by_the_longest_prefix)
{
    char yaml[1024];
    snprintf(yaml, sizeof yaml, "allow: [top.test]\n%s", TENANTS);
    moat_gen_t *gen = load(yaml);
    filter_addr_t a = addr("10.9.9.9"), b = addr("10.1.2.3"), none = addr("192.0.2.1"),
                  v6 = addr("fd00::1");
    cr_assert_str_eq(moat_gen_scope(gen, &a).tenant, "a");
    cr_assert_str_eq(moat_gen_scope(gen, &b).tenant, "b");
    cr_assert_str_eq(moat_gen_scope(gen, &v6).tenant, "e");
    moat_scope_t n = moat_gen_scope(gen, &none);
    cr_assert_null(n.tenant);
    cr_assert_eq(n.policy, gen->policy);
    cr_assert(moat_gen_scope_at(gen, 3).audit);
    cr_assert_not(moat_gen_scope_at(gen, 0).audit);
    cr_assert_eq(moat_gen_tenant_find(gen, "c"), 2);
    cr_assert_eq(moat_gen_tenant_find(gen, "zz"), -1);
    /* Each tenant decides by its own allow (and its lists'). */
    cr_assert_eq(filter_match_name(moat_gen_scope(gen, &a).policy, "top.test", 8, 443).verdict,
                 FILTER_BLOCK);
    cr_assert_eq(filter_match_name(n.policy, "top.test", 8, 443).verdict, FILTER_ALLOW);
    cr_assert_eq(filter_match_name(moat_gen_scope_at(gen, 3).policy, "x.test", 6, 443).verdict,
                 FILTER_ALLOW);
    moat_gen_unref(gen);
}

Test(gen, views_follow_the_address_rules_and_nothing_else)
{
    char yaml[1024];
    snprintf(yaml, sizeof yaml, "%s", TENANTS); /* no top-level allow: filtering off */
    moat_gen_t *gen = load(yaml);
    uint64_t off = moat_gen_scope_at(gen, -1).view;
    uint64_t a = moat_gen_scope_at(gen, 0).view, b = moat_gen_scope_at(gen, 1).view;
    uint64_t c = moat_gen_scope_at(gen, 2).view, d = moat_gen_scope_at(gen, 3).view;
    uint64_t e = moat_gen_scope_at(gen, 4).view;
    cr_assert_eq(a, b, "the same address rules in another order");
    cr_assert_neq(a, c);
    cr_assert_neq(c, off, "filtering on without address rules is not filtering off");
    cr_assert_eq(d, e, "a list's address rules count as the tenant's own");
    cr_assert_neq(d, c);
    moat_gen_unref(gen);

    /* Across reloads: the same rules give the same view. */
    moat_gen_t *again = load(yaml);
    cr_assert_eq(moat_gen_scope_at(again, 0).view, a);
    cr_assert_eq(moat_gen_scope_at(again, 2).view, c);
    moat_gen_unref(again);
}
