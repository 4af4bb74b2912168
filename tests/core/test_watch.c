/* tests/core/test_watch.c: what the config watch (core/watch.h) watches for
 * a config, on files and links the test makes in a temporary directory:
 * the directory of each file, the links along a chain (a Kubernetes
 * ConfigMap volume's `moat.yaml -> ..data/moat.yaml`, `..data -> ..TS`),
 * include directories, and the nearest existing ancestor of one that is
 * missing. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/watch.h"

static char root[64];

static void setup(void)
{
    snprintf(root, sizeof root, "/tmp/moat-test-watch-XXXXXX");
    cr_assert_not_null(mkdtemp(root));
}

static void teardown(void)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    cr_assert_eq(system(cmd), 0);
}

static char *at(const char *rel)
{
    static char buf[4][PATH_MAX];
    static int next;
    char *b = buf[next++ % 4];
    snprintf(b, PATH_MAX, "%s/%s", root, rel);
    return b;
}

static void touch(const char *rel)
{
    FILE *f = fopen(at(rel), "w");
    cr_assert_not_null(f);
    fclose(f);
}

/* The item (dir relative to root, name, glob) is in the plan. */
static bool has(const moat_watch_plan_t *p, const char *dir, const char *name, bool glob)
{
    const char *d = *dir ? at(dir) : root;
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->items[i].dir, d) == 0 && strcmp(p->items[i].name, name) == 0 &&
            p->items[i].glob == glob)
            return true;
    return false;
}

TestSuite(watch, .init = setup, .fini = teardown);

Test(watch, plain_file_watches_its_directory)
{
    touch("moat.yaml");
    char *files[] = {at("moat.yaml")};
    cfg_t cfg = {.files = files, .n_files = 1};
    moat_watch_plan_t p;
    cr_assert_eq(moat_watch_plan(&cfg, &p), 0);
    cr_assert_eq(p.n, 1);
    cr_assert(has(&p, "", "moat.yaml", false));
    moat_watch_plan_free(&p);
}

Test(watch, configmap_chain_is_followed)
{
    cr_assert_eq(mkdir(at("cm"), 0755), 0);
    cr_assert_eq(mkdir(at("cm/..2026_12_06_10_00_00.1"), 0755), 0);
    touch("cm/..2026_12_06_10_00_00.1/moat.yaml");
    cr_assert_eq(symlink("..2026_12_06_10_00_00.1", at("cm/..data")), 0);
    cr_assert_eq(symlink("..data/moat.yaml", at("cm/moat.yaml")), 0);
    char *files[] = {at("cm/moat.yaml")};
    cfg_t cfg = {.files = files, .n_files = 1};
    moat_watch_plan_t p;
    cr_assert_eq(moat_watch_plan(&cfg, &p), 0);
    cr_assert(has(&p, "cm", "moat.yaml", false));        /* the link the config names */
    cr_assert(has(&p, "cm/..data", "moat.yaml", false)); /* its target */
    cr_assert(has(&p, "cm", "..data", false));           /* the swapped link */
    moat_watch_plan_free(&p);
}

Test(watch, include_directory_and_a_missing_one)
{
    cr_assert_eq(mkdir(at("tenants.d"), 0755), 0);
    char *files[] = {at("moat.yaml")};
    cfg_glob_dir_t globs[] = {{at("tenants.d"), "*.yaml"}, {at("later.d/deep"), "*.yaml"}};
    cfg_t cfg = {.files = files, .n_files = 1, .glob_dirs = globs, .n_glob_dirs = 2};
    moat_watch_plan_t p;
    cr_assert_eq(moat_watch_plan(&cfg, &p), 0);
    cr_assert(has(&p, "", "moat.yaml", false)); /* a file not there (yet) */
    cr_assert(has(&p, "tenants.d", "*.yaml", true));
    cr_assert(has(&p, "", "later.d", false)); /* created later: seen in its parent */
    for (size_t i = 0; i < p.n; i++)
        cr_assert_null(strstr(p.items[i].dir, "later.d"));
    moat_watch_plan_free(&p);
}

Test(watch, link_loop_ends)
{
    cr_assert_eq(symlink("b", at("a")), 0);
    cr_assert_eq(symlink("a", at("b")), 0);
    char *files[] = {at("a")};
    cfg_t cfg = {.files = files, .n_files = 1};
    moat_watch_plan_t p;
    cr_assert_eq(moat_watch_plan(&cfg, &p), 0);
    cr_assert(has(&p, "", "a", false));
    cr_assert(has(&p, "", "b", false));
    moat_watch_plan_free(&p);
}

Test(watch, free_of_an_empty_plan)
{
    moat_watch_plan_t p = {0};
    moat_watch_plan_free(&p);
    moat_watch_plan_free(NULL);
}
