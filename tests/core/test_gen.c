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

Test(gen, tenants_found_by_name_in_any_order)
{
    moat_gen_t *gen = load("allow: []\n"
                           "tenants:\n"
                           "  - {name: zeta, clients: [10.0.0.1/32], allow: []}\n"
                           "  - {name: alpha, clients: [10.0.0.2/32], allow: []}\n"
                           "  - {name: mid.box-1, clients: [10.0.0.3/32], allow: []}\n"
                           "  - {name: beta, clients: [10.0.0.4/32], allow: []}\n");
    const char *names[] = {"zeta", "alpha", "mid.box-1", "beta"};
    for (long i = 0; i < 4; i++)
        cr_assert_eq(moat_gen_tenant_find(gen, names[i]), i, "%s", names[i]);
    cr_assert_eq(moat_gen_tenant_find(gen, "gamma"), -1);
    cr_assert_eq(moat_gen_tenant_find(gen, ""), -1);
    cr_assert_eq(moat_gen_tenant_find(gen, "zeta2"), -1);
    moat_gen_unref(gen);
}

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

/* ---- moat's own listeners ------------------------------------------------------ */

Test(gen, every_listener_is_an_own_listener)
{
    moat_gen_t *gen = load("dns: {listen: [\"198.18.0.5:53\"]}\n"
                           "proxy:\n"
                           "  transparent: [\"198.18.0.5:8000\"]\n"
                           "  tls: [\"198.18.0.5:8443\"]\n"
                           "  http: [\"198.18.0.5:8080\"]\n"
                           "  connect: [\"198.18.0.5:3128\", \"[fd00::5]:3128\"]\n"
                           "  socks: [\"198.18.0.5:1080\"]\n"
                           "metrics: {listen: \"198.18.0.5:9090\"}\n"
                           "allow: [x.test]\n"
                           "tenants:\n"
                           "  - {name: t, clients: [10.0.0.0/8], allow: [x.test]}\n");
    filter_addr_t a = addr("198.18.0.5"), v6 = addr("fd00::5"), nat64 = addr("64:ff9b::c612:5");
    static const int ports[] = {53, 8000, 8443, 8080, 3128, 1080, 9090};
    const filter_policy_t *pols[] = {gen->policy, gen->tenants[0].policy};
    for (size_t p = 0; p < 2; p++) {
        for (size_t i = 0; i < sizeof ports / sizeof ports[0]; i++) {
            filter_decision_t d = filter_check_refused(pols[p], &a, ports[i]);
            cr_assert_eq(d.reason, FILTER_REASON_OWN_LISTENER, "port %d", ports[i]);
            d = filter_check_refused(pols[p], &nat64, ports[i]);
            cr_assert_eq(d.reason, FILTER_REASON_OWN_LISTENER, "NAT64, port %d", ports[i]);
        }
        cr_assert_eq(filter_check_refused(pols[p], &v6, 3128).reason, FILTER_REASON_OWN_LISTENER);
        cr_assert_eq(filter_check_refused(pols[p], &a, 3129).verdict, FILTER_ALLOW);
        cr_assert_eq(filter_check_refused(pols[p], &v6, 1080).verdict, FILTER_ALLOW);
    }
    moat_gen_unref(gen);
}

/* ---- proxy users (SPEC §2.6, §2.7) ------------------------------------------------ */

/* sha256("s3cret") */
#define S3CRET_SHA256 "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"

static const char *const USERS =
    "allow: []\n"
    "tenants:\n"
    "  - name: a\n"
    "    clients: [10.1.0.0/16, \"fd00:1::/64\", 10.9.9.9]\n"
    "    users: [{name: alice, password: wonderland}, {name: al, password: x}]\n"
    "    allow: [a.test]\n"
    "  - name: b\n"
    "    clients: [10.2.0.0/16]\n"
    "    users: [{name: bob, password: \"sha256:" S3CRET_SHA256 "\"}]\n"
    "    allow: [b.test]\n"
    "  - name: c\n"
    "    users: [{name: \"carol c\", password: \"pass:word with spaces\"}]\n"
    "    allow: [c.test]\n"
    "  - {name: d, clients: [10.4.0.0/16], allow: [d.test]}\n";

static long auth(const moat_gen_t *gen, const char *client, const char *user, const char *pass)
{
    filter_addr_t a;
    if (client)
        a = addr(client);
    return moat_gen_user_auth(gen, client ? &a : NULL, user, strlen(user), pass, strlen(pass));
}

Test(gen, has_users)
{
    moat_gen_t *gen = load(USERS);
    cr_assert(moat_gen_has_users(gen));
    cr_assert_eq(gen->n_users, 4);
    moat_gen_unref(gen);
    gen = load("allow: []\ntenants:\n  - {name: d, clients: [10.4.0.0/16], allow: [d.test]}\n");
    cr_assert_not(moat_gen_has_users(gen));
    moat_gen_unref(gen);
    gen = load("");
    cr_assert_not(moat_gen_has_users(gen));
    moat_gen_unref(gen);
}

Test(gen, right_user_and_password)
{
    moat_gen_t *gen = load(USERS);
    cr_assert_eq(auth(gen, "10.1.2.3", "alice", "wonderland"), 0);
    cr_assert_eq(auth(gen, "10.1.2.3", "al", "x"), 0);
    cr_assert_eq(auth(gen, "10.2.0.1", "bob", "s3cret"), 1);
    /* any of the tenant's prefixes will do, not only the longest */
    cr_assert_eq(auth(gen, "10.9.9.9", "alice", "wonderland"), 0);
    cr_assert_eq(auth(gen, "fd00:1::77", "alice", "wonderland"), 0);
    cr_assert_eq(auth(gen, "::ffff:10.1.0.1", "alice", "wonderland"), 0);
    moat_gen_unref(gen);
}

Test(gen, wrong_password)
{
    moat_gen_t *gen = load(USERS);
    const char *bad[] = {"",  "wonderlan", "wonderland ", "Wonderland", "wonderlandwonderland",
                         "x", "s3cret"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(auth(gen, "10.1.2.3", "alice", bad[i]), -1, "'%s'", bad[i]);
    /* the password, not a prefix of it, with its length given */
    cr_assert_eq(moat_gen_user_auth(gen, NULL, "carol c", 7, "pass:word with spaces", 9), -1);
    /* a NUL inside the given password is a byte like any other */
    filter_addr_t a = addr("10.1.2.3");
    cr_assert_eq(moat_gen_user_auth(gen, &a, "alice", 5, "wonderland\0", 11), -1);
    cr_assert_eq(moat_gen_user_auth(gen, &a, "alice", 5, NULL, 0), -1);
    moat_gen_unref(gen);
}

Test(gen, unknown_user)
{
    moat_gen_t *gen = load(USERS);
    const char *bad[] = {"",  "alic",   "alicee", "Alice", "ALICE",
                         "a", "alice ", " alice", "zed",   "d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(auth(gen, "10.1.2.3", bad[i], "wonderland"), -1, "'%s'", bad[i]);
    filter_addr_t a = addr("10.1.2.3");
    cr_assert_eq(moat_gen_user_auth(gen, &a, "alice\0", 6, "wonderland", 10), -1);
    cr_assert_eq(moat_gen_user_auth(gen, &a, NULL, 0, "wonderland", 10), -1);
    cr_assert_eq(moat_gen_user_tenant(gen, "bob", 3), 1);
    cr_assert_eq(moat_gen_user_tenant(gen, "al", 2), 0);
    cr_assert_eq(moat_gen_user_tenant(gen, "carol c", 7), 2);
    cr_assert_eq(moat_gen_user_tenant(gen, "carol", 5), -1);
    cr_assert_eq(moat_gen_user_tenant(gen, "", 0), -1);
    moat_gen_unref(gen);
}

Test(gen, hashed_user)
{
    moat_gen_t *gen = load(USERS);
    cr_assert_eq(auth(gen, "10.2.9.9", "bob", "s3cret"), 1);
    cr_assert_eq(auth(gen, "10.2.9.9", "bob", "s3cret\n"), -1);
    cr_assert_eq(auth(gen, "10.2.9.9", "bob", S3CRET_SHA256), -1, "the hash is not the password");
    cr_assert_eq(auth(gen, "10.2.9.9", "bob", "sha256:" S3CRET_SHA256), -1);
    moat_gen_unref(gen);
}

Test(gen, client_outside_the_tenants_clients)
{
    moat_gen_t *gen = load(USERS);
    /* no tenant's client, another tenant's client, a neighbour of a /32 */
    cr_assert_eq(auth(gen, "192.0.2.1", "alice", "wonderland"), -1);
    cr_assert_eq(auth(gen, "10.2.0.1", "alice", "wonderland"), -1, "b's client naming a's user");
    cr_assert_eq(auth(gen, "10.1.2.3", "bob", "s3cret"), -1, "a's client naming b's user");
    cr_assert_eq(auth(gen, "10.9.9.8", "alice", "wonderland"), -1);
    cr_assert_eq(auth(gen, "fd00:2::1", "alice", "wonderland"), -1);
    cr_assert_eq(auth(gen, NULL, "alice", "wonderland"), -1, "no client address");
    moat_gen_unref(gen);
}

Test(gen, tenant_without_clients)
{
    moat_gen_t *gen = load(USERS);
    cr_assert_eq(auth(gen, "192.0.2.1", "carol c", "pass:word with spaces"), 2);
    cr_assert_eq(auth(gen, "10.1.2.3", "carol c", "pass:word with spaces"), 2);
    cr_assert_eq(auth(gen, "2001:db8::1", "carol c", "pass:word with spaces"), 2);
    cr_assert_eq(auth(gen, NULL, "carol c", "pass:word with spaces"), 2);
    cr_assert_eq(auth(gen, "192.0.2.1", "carol c", "pass:word"), -1);
    moat_gen_unref(gen);
}

/* 10,000 tenants with a user each (some hashed): every one is found, in
 * its own tenant, and the users are sorted for the binary search. */
Test(gen, many_tenants_users)
{
    enum { N = 10000 };
    size_t cap = (size_t)N * 160 + 64, len = 0;
    char *yaml = malloc(cap);
    cr_assert_not_null(yaml);
    len += (size_t)snprintf(yaml + len, cap - len, "allow: []\ntenants:\n");
    for (int i = 0; i < N; i++)
        len +=
            (size_t)snprintf(yaml + len, cap - len,
                             "  - {name: t%d, clients: [10.%d.%d.0/24], allow: [],"
                             " users: [{name: u%d, password: %s}]}\n",
                             i, i / 256, i % 256, i, i % 7 ? "pw" : "\"sha256:" S3CRET_SHA256 "\"");
    moat_gen_t *gen = load(yaml);
    free(yaml);
    cr_assert_eq(gen->n_users, N);
    for (int i = 0; i < N; i++) {
        char user[16], client[32];
        snprintf(user, sizeof user, "u%d", i);
        snprintf(client, sizeof client, "10.%d.%d.9", i / 256, i % 256);
        const char *pw = i % 7 ? "pw" : "s3cret";
        cr_assert_eq(auth(gen, client, user, pw), i, "%s", user);
        cr_assert_eq(moat_gen_user_tenant(gen, user, strlen(user)), i);
    }
    cr_assert_eq(auth(gen, "10.0.0.9", "u1", "pw"), -1, "t0's client naming t1's user");
    cr_assert_eq(auth(gen, "10.0.0.9", "u10000", "pw"), -1);
    moat_gen_unref(gen);
}
