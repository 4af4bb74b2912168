/* tests/config/test_oom.c: every allocation the loader makes is made to fail
 * in turn; the loader must return -ENOMEM (never a half-built config) and
 * free everything it took.
 *
 * malloc and friends are replaced in this executable (glibc allows it and
 * routes its own internal calls here too) and count live blocks, so a leak
 * fails the test without a sanitizer. Under ASan the replacement would clash
 * with ASan's own, so the test is skipped there; the other tests cover those
 * builds.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OOM_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define OOM_ASAN 1
#endif

#ifndef OOM_ASAN
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);
void __libc_free(void *p);

void *malloc(size_t n);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t n);
void free(void *p);

/* Per thread, so Criterion's own threads are not counted. */
static __thread bool oom_armed, oom_sticky;
static __thread long oom_countdown, oom_live, oom_failed;

static bool oom_fail_now(void)
{
    if (!oom_armed)
        return false;
    if (oom_countdown == 0) {
        oom_failed++;
        errno = ENOMEM; /* as malloc does: opendir and others pass it on */
        if (!oom_sticky)
            oom_countdown = -1;
        return true;
    }
    if (oom_countdown > 0)
        oom_countdown--;
    return false;
}

void *malloc(size_t n)
{
    if (oom_fail_now())
        return NULL;
    void *p = __libc_malloc(n);
    if (p && oom_armed)
        oom_live++;
    return p;
}

void *calloc(size_t n, size_t size)
{
    if (oom_fail_now())
        return NULL;
    void *p = __libc_calloc(n, size);
    if (p && oom_armed)
        oom_live++;
    return p;
}

void *realloc(void *p, size_t n)
{
    if (oom_fail_now())
        return NULL;
    void *q = __libc_realloc(p, n);
    if (oom_armed && !p && q)
        oom_live++;
    if (oom_armed && p && n == 0 && !q)
        oom_live--;
    return q;
}

void free(void *p)
{
    if (p && oom_armed)
        oom_live--;
    __libc_free(p);
}

static void oom_arm(long fail_at, bool sticky)
{
    oom_countdown = fail_at;
    oom_sticky = sticky;
    oom_live = 0;
    oom_failed = 0;
    oom_armed = true;
}

/* One load with the fail_at'th allocation (and, if sticky, every later one)
 * failing. Returns true while some allocation still failed. */
static bool oom_round(const char *path, const char *yaml, int want_rc, long fail_at, bool sticky)
{
    cfg_t *cfg = NULL;
    cfg_diag_t diag;
    oom_arm(fail_at, sticky);
    int rc = path ? cfg_load_file(path, &cfg, &diag)
                  : cfg_load_string("t.yaml", yaml, strlen(yaml), &cfg, &diag);
    bool had_cfg = cfg != NULL;
    char first[256] = "";
    if (diag.n > 0)
        snprintf(first, sizeof first, "%s", diag.items[0].msg);
    cfg_free(cfg);
    cfg_diag_free(&diag);
    oom_armed = false;
    long live = oom_live, failed = oom_failed;
    cr_assert_eq(live, 0, "%ld blocks leaked with allocation %ld failing%s", live, fail_at,
                 sticky ? " (and all later)" : "");
    if (failed == 0) {
        cr_assert_eq(rc, want_rc, "rc %d without a failure", rc);
        return false;
    }
    cr_assert_eq(rc, -ENOMEM, "allocation %ld failed but rc is %d (%s)", fail_at, rc, first);
    cr_assert_not(had_cfg);
    return true;
}

static void oom_all(const char *path, const char *yaml, int want_rc)
{
    for (int sticky = 0; sticky < 2; sticky++) {
        long k = 0;
        while (oom_round(path, yaml, want_rc, k, sticky))
            k++;
        cr_assert_gt(k, 10, "only %ld allocations?", k);
    }
}

static const char *const oom_valid =
    "mode: audit\n"
    "dns: {listen: [\"127.0.0.1:53\", \"[::1]:53\"], upstream: [192.0.2.1, \"[::1]:5353\"]}\n"
    "sinkhole: {mode: nxdomain, ttl: 5s}\n"
    "proxy: {transparent: [\"127.0.0.1:9\"], tls_ports: [443, 8443], http_ports: [80]}\n"
    "allow:\n"
    "  - example.com\n"
    "  - \"*.example.org\"\n"
    "  - 10.0.0.0/8\n"
    "  - {host: github.com, ports: [22, 443]}\n"
    "  - {cidr: \"2001:db8::/32\", ports: [8000-8100]}\n"
    "log: {format: json, file: /tmp/x.log, allowed: true}\n"
    "metrics: {listen: \"127.0.0.1:9090\"}\n";

static const char *const oom_errors = "mode: audti\n"
                                      "dns: {timeout: 5, listen: [\"localhost:53\"], timout: 1s}\n"
                                      "proxy: {tls_ports: [0], bogus: 1}\n"
                                      "allow:\n"
                                      "  - 300.1.2.3\n"
                                      "  - ok.example\n"
                                      "  - {host: a.com, port: [1], ports: []}\n"
                                      "  - *anchor\n"
                                      "  - \"*.com\"\n"
                                      "---\n"
                                      "mode: x\n";

Test(oom, valid_config)
{
    oom_all(NULL, oom_valid, 0);
}

Test(oom, config_with_errors)
{
    oom_all(NULL, oom_errors, -EINVAL);
}

Test(oom, syntax_errors)
{
    oom_all(NULL, "allow:\n  - a.com\n  - *.example.com\n", -EINVAL);
    oom_all(NULL, "dns: {listen: [\"127.0.0.1:53\"\n", -EINVAL);
}

Test(oom, listen_conflicts)
{
    oom_all(NULL, "metrics: {listen: \"127.0.0.1:8443\"}\nproxy: {http_ports: [80, 443]}\n",
            -EINVAL);
}

Test(oom, from_a_file)
{
    char path[] = "/tmp/moat-oom-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, oom_valid, strlen(oom_valid)), (ssize_t)strlen(oom_valid));
    close(fd);
    oom_all(path, NULL, 0);
    unlink(path);
}

static const char *const oom_tenants =
    "lists: {common: [pypi.org, {cidr: 192.0.2.0/24, ports: [443]}], git: [github.com]}\n"
    "allow: [{list: common}, a.com]\n"
    "tenants:\n"
    "  - name: box-1\n"
    "    clients: [10.0.0.1, \"fd00::/64\"]\n"
    "    users: [{name: al, password: pw}, {name: bo, password: "
    "\"sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"}]\n"
    "    mode: audit\n"
    "    allow: [{list: git}, {list: common}, b.com, {list: git}]\n"
    "  - {name: box-2, clients: [10.0.0.2], allow: []}\n"
    "include: [\"/nonexistent/*.yaml\"]\n";

static const char *const oom_tenant_errors =
    "lists: {common: [x.com], l2: [{list: common}], common: []}\n"
    "allow: [{list: comon}]\n"
    "tenants:\n"
    "  - {name: a, clients: [10.0.0.1, 10.0.0.1], users: [{name: u, password: p}], allow: []}\n"
    "  - {name: a, clients: [\"10.0.0.1/32\"], users: [{name: u}, {name: u, password: "
    "\"sha256:x\"}], mode: x}\n"
    "  - {name: Bad, alow: []}\n";

Test(oom, tenants)
{
    oom_all(NULL, oom_tenants, 0);
}

Test(oom, tenant_errors)
{
    oom_all(NULL, oom_tenant_errors, -EINVAL);
}

static void oom_put(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert(fd >= 0, "%s", path);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

Test(oom, include)
{
    char dir[] = "/tmp/moat-oom-XXXXXX", path[64], a[64], b[64], sub[64];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(sub, sizeof sub, "%s/t", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    snprintf(a, sizeof a, "%s/t/a.yaml", dir);
    snprintf(b, sizeof b, "%s/t/b.yaml", dir);
    snprintf(path, sizeof path, "%s/moat.yaml", dir);
    oom_put(a, "name: a\nclients: [10.0.0.1]\nallow: [{list: l}]\n");
    oom_put(b, "- {name: b, clients: [10.0.0.2], allow: [x.com]}\n- {name: c, allow: []}\n");
    oom_put(path, "lists: {l: [y.com]}\ninclude: [t/*.yaml, t/a.yaml]\n");
    oom_all(path, NULL, 0);
    /* Errors inside an included file, and a YAML syntax error in another. */
    oom_put(b, "- {name: a, clients: [10.0.0.1], allow: [{list: m}]}\n- {name: c, allow: [\n");
    oom_all(path, NULL, -EINVAL);
    unlink(a);
    unlink(b);
    unlink(path);
    rmdir(sub);
    rmdir(dir);
}

#else

Test(oom, skipped_under_asan)
{
    cr_skip_test("malloc replacement clashes with ASan");
}

#endif
