/* tests/config/test_tenants.c: SPEC §2.7 in the config: tenants, named
 * lists, {list: NAME} entries, include of tenant files, and every error with
 * its file, line and column. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "filter/addr.h"

static cfg_t *cfg;
static cfg_diag_t diag;
static char dir[64];

static void cleanup(void)
{
    cfg_free(cfg);
    cfg = NULL;
    cfg_diag_free(&diag);
    if (dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        cr_assert_eq(system(cmd), 0);
        dir[0] = '\0';
    }
}

TestSuite(tenants, .fini = cleanup);

static void dump(void)
{
    cfg_diag_print(&diag, stderr);
}

static int load(const char *yaml)
{
    cfg_free(cfg);
    cfg = NULL;
    cfg_diag_free(&diag);
    return cfg_load_string("t.yaml", yaml, strlen(yaml), &cfg, &diag);
}

static void ok(const char *yaml)
{
    int rc = load(yaml);
    if (rc != 0)
        dump();
    cr_assert_eq(rc, 0, "load failed: %d", rc);
    cr_assert_eq(diag.n, 0);
}

/* An error in file (NULL: the config) at line:col whose message holds want. */
static void has_err_in(const char *file, unsigned line, unsigned col, const char *want)
{
    for (size_t i = 0; i < diag.n; i++) {
        const cfg_error_t *e = &diag.items[i];
        bool same = file ? e->file && strcmp(e->file, file) == 0 : e->file == NULL;
        if (same && e->line == line && e->col == col && strstr(e->msg, want))
            return;
    }
    dump();
    cr_assert_fail("no error in %s at %u:%u containing \"%s\"", file ? file : "t.yaml", line, col,
                   want);
}

static void one_err(const char *yaml, unsigned line, unsigned col, const char *want)
{
    int rc = load(yaml);
    cr_assert_eq(rc, -EINVAL, "rc %d", rc);
    cr_assert_null(cfg);
    if (diag.n != 1)
        dump();
    cr_assert_eq(diag.n, 1, "expected one error, got %zu", diag.n);
    has_err_in(NULL, line, col, want);
}

static const char *prefix(const filter_prefix_t *p)
{
    static char buf[FILTER_ADDR_STRLEN];
    return filter_prefix_format(p, buf, sizeof buf);
}

/* ---- files in a temporary directory ---- */

static void mkdir_tmp(void)
{
    strcpy(dir, "/tmp/moat-tenants-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

/* Write dir/name (name may hold one subdirectory) and return its path. */
static const char *put(const char *name, const char *text)
{
    static char path[8][256];
    static int slot;
    char *p = path[slot++ % 8];
    snprintf(p, 256, "%s/%s", dir, name);
    char *slash = strrchr(p, '/');
    *slash = '\0';
    mkdir(p, 0700);
    *slash = '/';
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f, "%s", p);
    fputs(text, f);
    fclose(f);
    return p;
}

static int load_file(const char *path)
{
    cfg_free(cfg);
    cfg = NULL;
    cfg_diag_free(&diag);
    return cfg_load_file(path, &cfg, &diag);
}

/* ---- parsing ---- */

Test(tenants, every_field)
{
    ok("mode: audit\n"
       "allow: []\n"
       "tenants:\n"
       "  - name: box-1\n"
       "    clients: [10.77.0.2, \"10.78.0.0/16\", \"fd00:77::/64\"]\n"
       "    users:\n"
       "      - {name: alice, password: s3cret}\n"
       "      - name: bob\n"
       "        password: "
       "\"sha256:2BB80D537B1DA3E38BD30361AA855686BDE0EACD7162FEF6A25FE97BF527A25B\"\n"
       "    mode: enforce\n"
       "    allow: [example.com, {host: \"*.github.com\", ports: [443]}, 192.0.2.0/24]\n"
       "  - name: box.2_x\n"
       "    allow: []\n");
    cr_assert_eq(cfg->mode, CFG_MODE_AUDIT);
    cr_assert(cfg->filtering);
    cr_assert_eq(cfg->n_tenants, 2);
    const cfg_tenant_t *t = &cfg->tenants[0];
    cr_assert_str_eq(t->name, "box-1");
    cr_assert_str_eq(t->file, "t.yaml");
    cr_assert_eq(t->line, 4);
    cr_assert_eq(t->col, 5);
    cr_assert_eq(t->n_clients, 3);
    cr_assert_str_eq(prefix(&t->clients[0]), "10.77.0.2/32");
    cr_assert_str_eq(prefix(&t->clients[1]), "10.78.0.0/16");
    cr_assert_str_eq(prefix(&t->clients[2]), "fd00:77::/64");
    cr_assert_eq(t->n_users, 2);
    cr_assert_str_eq(t->users[0].name, "alice");
    cr_assert_str_eq(t->users[0].password, "s3cret");
    cr_assert_not(t->users[0].hashed);
    cr_assert_eq(t->users[0].line, 7);
    cr_assert_eq(t->users[0].col, 16);
    cr_assert_str_eq(t->users[1].name, "bob");
    cr_assert_null(t->users[1].password);
    cr_assert(t->users[1].hashed);
    cr_assert_eq(t->users[1].sha256[0], 0x2b);
    cr_assert_eq(t->users[1].sha256[31], 0x5b);
    cr_assert(t->has_mode);
    cr_assert_eq(t->mode, CFG_MODE_ENFORCE);
    cr_assert_eq(t->allow.n_rules, 3);
    cr_assert_str_eq(t->allow.rules[0].text, "example.com");
    cr_assert_eq(t->allow.rules[1].kind, FILTER_RULE_NAME);
    cr_assert_eq(t->allow.rules[1].n_ports, 1);
    cr_assert_eq(t->allow.rules[1].ports[0].lo, 443);
    cr_assert_eq(t->allow.rules[2].kind, FILTER_RULE_ADDR);
    cr_assert_eq(t->allow.rules[2].line, 11);
    cr_assert_eq(t->allow.n_lists, 0);
    t = &cfg->tenants[1];
    cr_assert_str_eq(t->name, "box.2_x");
    cr_assert_eq(t->n_clients, 0);
    cr_assert_eq(t->n_users, 0);
    cr_assert_not(t->has_mode);
    cr_assert_eq(t->allow.n_rules, 0);
    cr_assert_null(t->allow.rules);
    cr_assert_eq(cfg->n_files, 1);
    cr_assert_str_eq(cfg->files[0], "t.yaml");
}

Test(tenants, no_tenants_is_empty)
{
    ok("allow: [a.com]\n");
    cr_assert_eq(cfg->n_tenants, 0);
    cr_assert_eq(cfg->n_lists, 0);
    cr_assert_eq(cfg->n_allow_lists, 0);
    cr_assert_eq(cfg->n_files, 1);
    ok("tenants:\nlists:\ninclude:\n");
    cr_assert_eq(cfg->n_tenants, 0);
    cr_assert_not(cfg->filtering);
}

Test(tenants, lists_shared_by_two_tenants)
{
    ok("lists:\n"
       "  common: [pypi.org, files.pythonhosted.org, {cidr: 192.0.2.0/24, ports: [443]}]\n"
       "  git: [github.com]\n"
       "tenants:\n"
       "  - {name: a, clients: [10.0.0.1], allow: [{list: common}, a.example]}\n"
       "  - {name: b, clients: [10.0.0.2], allow: [{list: git}, {list: common}, {list: git}]}\n");
    cr_assert_eq(cfg->n_lists, 2);
    cr_assert_str_eq(cfg->lists[0].name, "common");
    cr_assert_eq(cfg->lists[0].n_rules, 3);
    cr_assert_eq(cfg->lists[0].line, 2);
    cr_assert_eq(cfg->lists[0].col, 3);
    cr_assert_str_eq(cfg->lists[0].file, "t.yaml");
    cr_assert_eq(cfg->lists[0].rules[2].kind, FILTER_RULE_ADDR);
    cr_assert_str_eq(cfg->lists[1].name, "git");
    const cfg_allow_t *a = &cfg->tenants[0].allow, *b = &cfg->tenants[1].allow;
    cr_assert_eq(a->n_rules, 1);
    cr_assert_eq(a->n_lists, 1);
    cr_assert_eq(a->lists[0], 0);
    cr_assert_eq(b->n_rules, 0);
    cr_assert_eq(b->n_lists, 2, "a list named twice is kept once");
    cr_assert_eq(b->lists[0], 1);
    cr_assert_eq(b->lists[1], 0);
}

Test(tenants, list_in_top_level_allow)
{
    ok("lists: {base: [a.com, b.com]}\n"
       "allow: [c.com, {list: base}, {list: base}]\n");
    cr_assert(cfg->filtering);
    cr_assert_eq(cfg->n_allow, 1);
    cr_assert_str_eq(cfg->allow[0].text, "c.com");
    cr_assert_eq(cfg->n_allow_lists, 1);
    cr_assert_eq(cfg->allow_lists[0], 0);
    ok("lists: {base: [a.com]}\nallow: [{list: base}]\n");
    cr_assert_eq(cfg->n_allow, 0);
    cr_assert_eq(cfg->n_allow_lists, 1);
    ok("lists: {empty: []}\nallow: [{list: empty}]\n");
    cr_assert_eq(cfg->lists[0].n_rules, 0);
}

/* ---- include ---- */

Test(tenants, include_relative_and_absolute_globs)
{
    mkdir_tmp();
    put("tenants/b.yaml", "name: b\nclients: [10.0.0.2]\nallow: [{list: common}]\n");
    put("tenants/a.yaml", "- name: a1\n  clients: [10.0.0.1]\n  allow: []\n"
                          "- name: a2\n  clients: [10.0.1.0/24]\n  allow: [x.com]\n");
    put("tenants/notes.txt", "not yaml: [\n");
    put("tenants/sub.yaml/c.yaml", "name: hidden\nallow: []\n"); /* a directory matched: skipped */
    put("other/z.yaml", "name: z\nusers: [{name: zed, password: pw}]\nallow: []\n");
    put("empty.yaml", "");
    char yaml[512];
    snprintf(yaml, sizeof yaml,
             "lists: {common: [pypi.org]}\n"
             "tenants: [{name: main, clients: [10.9.0.1], allow: []}]\n"
             "include: [\"tenants/*.yaml\", \"%s/other/*.yaml\", \"nothing/*.yaml\", "
             "\"empty.yaml\", \"tenants/b.yaml\"]\n",
             dir);
    const char *path = put("moat.yaml", yaml);
    int rc = load_file(path);
    if (rc != 0)
        dump();
    cr_assert_eq(rc, 0);
    cr_assert_eq(cfg->n_tenants, 5);
    cr_assert_str_eq(cfg->tenants[0].name, "main");
    cr_assert_str_eq(cfg->tenants[0].file, path);
    cr_assert_str_eq(cfg->tenants[1].name, "a1");
    cr_assert_str_eq(cfg->tenants[2].name, "a2");
    cr_assert_str_eq(cfg->tenants[3].name, "b");
    cr_assert_str_eq(cfg->tenants[4].name, "z");
    cr_assert_eq(cfg->tenants[3].allow.n_lists, 1);
    char want[256];
    snprintf(want, sizeof want, "%s/tenants/a.yaml", dir);
    cr_assert_str_eq(cfg->tenants[1].file, want);
    cr_assert_eq(cfg->tenants[2].line, 4);
    cr_assert_eq(cfg->tenants[2].col, 3);
    cr_assert_str_eq(cfg->tenants[4].users[0].file, cfg->tenants[4].file);
    /* The config, then every file read once, in match order. */
    cr_assert_eq(cfg->n_files, 5);
    cr_assert_str_eq(cfg->files[0], path);
    cr_assert_str_eq(cfg->files[1], want);
    snprintf(want, sizeof want, "%s/tenants/b.yaml", dir);
    cr_assert_str_eq(cfg->files[2], want);
    snprintf(want, sizeof want, "%s/other/z.yaml", dir);
    cr_assert_str_eq(cfg->files[3], want);
    snprintf(want, sizeof want, "%s/empty.yaml", dir);
    cr_assert_str_eq(cfg->files[4], want);
}

Test(tenants, include_of_an_empty_directory_and_no_lists)
{
    mkdir_tmp();
    char sub[300];
    snprintf(sub, sizeof sub, "%s/tenants.d", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    const char *path = put("moat.yaml", "lists: {}\nallow: []\ninclude: [\"tenants.d/*.yaml\"]\n");
    int rc = load_file(path);
    if (rc != 0)
        dump();
    cr_assert_eq(rc, 0);
    cr_assert_eq(cfg->n_tenants, 0);
    cr_assert_eq(cfg->n_lists, 0);
    cr_assert_eq(cfg->n_files, 1);
}

Test(tenants, include_from_a_string_reads_nothing)
{
    ok("include: [\"/etc/*\", \"*.yaml\"]\n");
    cr_assert_eq(cfg->n_tenants, 0);
    cr_assert_eq(cfg->n_files, 1);
}

Test(tenants, errors_inside_included_files)
{
    mkdir_tmp();
    const char *a = put("t/a.yaml", "name: a\n"
                                    "clients: [10.0.0.1]\n"
                                    "allow:\n"
                                    "  - ok.example\n"
                                    "  - 300.1.2.3\n"
                                    "  - {list: comon}\n");
    const char *b = put("t/b.yaml", "- name: b\n"
                                    "  clients: [\"10.0.0.1/32\"]\n"
                                    "  allow: []\n"
                                    "- name: a\n"
                                    "  allow: []\n");
    const char *path = put("moat.yaml", "lists: {common: [x.com]}\n"
                                        "allow: [300.0.0.1]\n"
                                        "include: [t/*.yaml]\n");
    cr_assert_eq(load_file(path), -EINVAL);
    has_err_in(NULL, 2, 9, "300.0.0.1: not a valid IPv4 address");
    has_err_in(a, 5, 5, "300.1.2.3: not a valid IPv4 address");
    has_err_in(a, 6, 12, "unknown list \"comon\" (did you mean \"common\"?)");
    char want[512];
    snprintf(want, sizeof want, "tenant b: client 10.0.0.1/32 is already a's (%s:2:11)", a);
    has_err_in(b, 2, 13, want);
    snprintf(want, sizeof want, "tenant a: defined twice (first at %s:1:7)", a);
    has_err_in(b, 4, 9, want);
    cr_assert_eq(diag.n, 5);
    /* Printed with each error's own file, the config's first. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cfg_diag_print(&diag, f);
    fclose(f);
    char expect[2048];
    snprintf(expect, sizeof expect,
             "%s:2:9: 300.0.0.1: not a valid IPv4 address\n"
             "%s:5:5: 300.1.2.3: not a valid IPv4 address\n"
             "%s:6:12: unknown list \"comon\" (did you mean \"common\"?)\n"
             "%s:2:13: tenant b: client 10.0.0.1/32 is already a's (%s:2:11)\n"
             "%s:4:9: tenant a: defined twice (first at %s:1:7)\n",
             path, a, a, b, a, b, a);
    cr_assert_str_eq(buf, expect);
    free(buf);
    cr_assert_str_eq(cfg_error_file(&diag, &diag.items[0]), path);
    cr_assert_str_eq(cfg_error_file(&diag, &diag.items[1]), a);
}

Test(tenants, included_file_errors)
{
    mkdir_tmp();
    const char *syn = put("t/1.yaml", "name: s\nallow: [a.com\n");
    const char *inc = put("t/2.yaml", "name: i\nallow: []\ninclude: [x.yaml]\n");
    const char *scal = put("t/3.yaml", "just a string\n");
    const char *loop = put("t/4.yaml", "");
    unlink(loop);
    cr_assert_eq(symlink(loop, loop), 0); /* unreadable: a symlink to itself */
    const char *path = put("moat.yaml", "include: [\"t/*.yaml\"]\n");
    cr_assert_eq(load_file(path), -EINVAL);
    has_err_in(syn, 3, 1, "YAML syntax error");
    has_err_in(inc, 3, 10, "include is a top-level key of the main config");
    has_err_in(scal, 1, 1, "an included file holds a tenant");
    has_err_in(loop, 0, 0, "cannot read: Too many levels of symbolic links");
    cr_assert_eq(diag.n, 4);
    cr_assert_eq(load_file(path), -EINVAL, "the same again");
    cr_assert_eq(diag.n, 4);
}

Test(tenants, include_shapes)
{
    one_err("include: \"t/*.yaml\"\n", 1, 10, "include: expected a list of file patterns");
    one_err("include: [\"\"]\n", 1, 11, "include: empty pattern");
    one_err("include: [{a: b}]\n", 1, 11, "include: expected a file pattern");
}

/* ---- errors ---- */

Test(tenants, err_duplicate_names_prefixes_users)
{
    cr_assert_eq(load("tenants:\n"
                      "  - {name: box-1, clients: [10.77.0.2], users: [{name: al, password: p}], "
                      "allow: []}\n"
                      "  - {name: box-2, clients: [\"10.77.0.2/32\", \"fd00::/64\"], allow: []}\n"
                      "  - {name: box-1, clients: [\"fd00:0::/64\"], allow: []}\n"
                      "  - {name: box-3, users: [{name: al, password: q}, {name: b, password: "
                      "r}, {name: b, password: s}], allow: []}\n"),
                 -EINVAL);
    has_err_in(NULL, 3, 29, "tenant box-2: client 10.77.0.2/32 is already box-1's (t.yaml:2:29)");
    has_err_in(NULL, 4, 12, "tenant box-1: defined twice (first at t.yaml:2:12)");
    has_err_in(NULL, 4, 29, "tenant box-1: client fd00::/64 is already box-2's (t.yaml:3:45)");
    has_err_in(NULL, 5, 34, "tenant box-3: user al is already box-1's (t.yaml:2:56)");
    has_err_in(NULL, 5, 83, "tenant box-3: user b listed twice (first at t.yaml:5:59)");
    cr_assert_eq(diag.n, 5);
    one_err("tenants:\n  - {name: a, clients: [10.0.0.0/8, 10.0.0.0/8], allow: []}\n", 2, 37,
            "tenant a: client 10.0.0.0/8 listed twice (first at t.yaml:2:25)");
}

Test(tenants, err_unknown_list_and_list_of_lists)
{
    one_err("lists: {github: [github.com]}\nallow: [{list: gihtub}]\n", 2, 16,
            "unknown list \"gihtub\" (did you mean \"github\"?)");
    one_err("lists: {github: [github.com]}\nallow: [{list: pypi}]\n", 2, 16,
            "unknown list \"pypi\"");
    one_err("allow: [{list: pypi}]\n", 1, 16,
            "unknown list \"pypi\" (there is no top-level lists:)");
    one_err("lists:\n  a: [x.com]\n  b: [{list: a}]\n", 3, 8,
            "lists.b: a list cannot refer to a list ({list: a})");
    one_err("lists: {a: [x.com]}\nallow: [{list: a, ports: [443]}]\n", 2, 19,
            "a {list: NAME} entry has no other keys");
    one_err("lists: {a: [x.com]}\nallow: [{list: [a]}]\n", 2, 16, "list: expected a list name");
    one_err("lists: {a: [x.com], a: [y.com]}\n", 1, 21, "lists: a defined twice (first at 1:9)");
    one_err("lists: {Big: [x.com]}\n", 1, 9, "lists: Big: a name is lower-case");
    one_err("lists: [a]\n", 1, 8, "lists: expected a mapping");
    one_err("lists: {a: x.com}\n", 1, 12, "lists.a: expected a list of names");
}

Test(tenants, err_tenant_shape)
{
    one_err("tenants:\n  - {name: a}\n", 2, 5, "tenant a: needs allow: (its rules; [] for none)");
    one_err("tenants:\n  - {allow: []}\n", 2, 5, "tenant: needs a name");
    one_err("tenants:\n  - {name: Box, allow: []}\n", 2, 12, "tenant name: Box: a name is");
    one_err("tenants:\n  - {name: -box, allow: []}\n", 2, 12, "a name is lower-case letters");
    cr_assert_eq(load("tenants:\n  - {name: a, alow: []}\n"), -EINVAL);
    has_err_in(NULL, 2, 15, "unknown key \"alow\" in tenant a (did you mean \"allow\"?)");
    has_err_in(NULL, 2, 5, "tenant a: needs allow:");
    cr_assert_eq(load("tenants:\n  - {name: a, xyz: 1, allow: []}\n"), -EINVAL);
    has_err_in(NULL, 2, 15,
               "unknown key \"xyz\" in tenant a (allowed: name, clients, users, mode, allow)");
    one_err("tenants:\n  - {name: a, mode: audti, allow: []}\n", 2, 21,
            "tenant a: mode: audti: expected enforce or audit");
    one_err("tenants: {name: a}\n", 1, 10, "tenants: expected a list of tenants");
    one_err("tenants: [a]\n", 1, 11, "tenants: a tenant is a mapping");
    one_err("tenants:\n  - {name: a, include: [x], allow: []}\n", 2, 24,
            "tenant a: include is a top-level key of the main config");
    one_err("tenants:\n  - {name: a, allow: {host: a.com}}\n", 2, 22,
            "allow: expected a list of names");
}

Test(tenants, err_clients)
{
    one_err("tenants:\n  - {name: a, clients: [\"10.1.0.0/8\"], allow: []}\n", 2, 25,
            "tenant a: clients: 10.1.0.0/8: host bits set past the prefix length");
    one_err("tenants:\n  - {name: a, clients: [300.1.2.3], allow: []}\n", 2, 25,
            "clients: 300.1.2.3: not a valid IPv4 address");
    one_err("tenants:\n  - {name: a, clients: [\"10.0.0.0/33\"], allow: []}\n", 2, 25,
            "prefix length over 32");
    one_err("tenants:\n  - {name: a, clients: [box.example], allow: []}\n", 2, 25,
            "box.example: not an address or prefix");
    one_err("tenants:\n  - {name: a, clients: 10.0.0.1, allow: []}\n", 2, 24,
            "tenant a: clients: expected a list of addresses");
}

Test(tenants, err_users)
{
    one_err("tenants:\n  - {name: a, users: [{name: al}], allow: []}\n", 2, 23,
            "tenant a: user al: needs a password");
    one_err("tenants:\n  - {name: a, users: [{password: x}], allow: []}\n", 2, 23,
            "tenant a: user: needs a name");
    one_err("tenants:\n  - {name: a, users: [{name: al, password: \"sha256:abc\"}], allow: []}\n",
            2, 44, "sha256: must be followed by 64 hex digits");
    one_err("tenants:\n  - {name: a, users: [{name: al, password: "
            "\"sha256:2BB80D537B1DA3E38BD30361AA855686BDE0EACD7162FEF6A25FE97BF527A25X\"}], "
            "allow: []}\n",
            2, 44, "sha256: must be followed by 64 hex digits");
    one_err("tenants:\n  - {name: a, users: [{name: al, password: \"\"}], allow: []}\n", 2, 44,
            "password: empty");
    one_err("tenants:\n  - {name: a, users: [{name: al, password: }], allow: []}\n", 2, 44,
            "password: no value");
    one_err("tenants:\n  - {name: a, users: [{name: \"a:b\", password: x}], allow: []}\n", 2, 30,
            "a user name is 1 to 255 characters, no ':'");
    one_err("tenants:\n  - {name: a, users: [{name: al, pasword: x, password: y}], allow: []}\n", 2,
            34, "did you mean \"password\"");
    one_err("tenants:\n  - {name: a, users: {name: al}, allow: []}\n", 2, 22,
            "tenant a: users: expected a list");
}

Test(tenants, name_limits)
{
    char yaml[256], name[80];
    memset(name, 'a', 63);
    name[63] = '\0';
    snprintf(yaml, sizeof yaml, "tenants: [{name: %s, allow: []}]\n", name);
    ok(yaml);
    cr_assert_eq(strlen(cfg->tenants[0].name), 63);
    name[63] = 'a';
    name[64] = '\0';
    snprintf(yaml, sizeof yaml, "tenants: [{name: %s, allow: []}]\n", name);
    one_err(yaml, 1, 18, "longer than 63 characters");
    ok("tenants: [{name: 0, allow: []}, {name: a.b-c_d, allow: []}]\n");
}

Test(tenants, errors_keep_coming)
{
    cr_assert_eq(load("tenants:\n"
                      "  - {name: a, mode: x, clients: [1.2.3.4/8], allow: [{list: q}]}\n"
                      "  - {name: B, users: [{name: u}]}\n"),
                 -EINVAL);
    cr_assert_eq(diag.n, 6);
    has_err_in(NULL, 2, 21, "mode: x");
    has_err_in(NULL, 2, 34, "host bits set");
    has_err_in(NULL, 2, 61, "unknown list \"q\"");
    has_err_in(NULL, 3, 12, "tenant name: B");
    has_err_in(NULL, 3, 23, "tenant: user u: needs a password");
    has_err_in(NULL, 3, 5, "tenant: needs allow:");
}

Test(tenants, include_remembers_where_it_looked)
{
    mkdir_tmp();
    put("tenants.d/a.yaml", "name: a\nclients: [10.0.0.1]\nallow: []\n");
    const char *path = put("moat.yaml", "allow: []\n"
                                        "include: [\"tenants.d/*.yaml\", \"later.d/*.yaml\", "
                                        "\"extra.yaml\"]\n");
    int rc = load_file(path);
    if (rc != 0)
        dump();
    cr_assert_eq(rc, 0);
    /* For the config watch: each directory listed with its pattern, even
     * one not there, and a name not there in its directory. */
    cr_assert_eq(cfg->n_glob_dirs, 3);
    char want[300];
    snprintf(want, sizeof want, "%s/tenants.d", dir);
    cr_assert_str_eq(cfg->glob_dirs[0].dir, want);
    cr_assert_str_eq(cfg->glob_dirs[0].pattern, "*.yaml");
    snprintf(want, sizeof want, "%s/later.d", dir);
    cr_assert_str_eq(cfg->glob_dirs[1].dir, want);
    cr_assert_str_eq(cfg->glob_dirs[1].pattern, "*.yaml");
    cr_assert_str_eq(cfg->glob_dirs[2].dir, dir);
    cr_assert_str_eq(cfg->glob_dirs[2].pattern, "extra.yaml");
    cr_assert_eq(cfg->n_files, 2);
}
