/* tests/app/test_learn.c: `moat learn` (app/learn.h) on logs the test
 * writes: grouping by tenant, ports off the tls/http ports, address rules
 * only where no name was seen, --wildcards judged with the Public Suffix
 * List (never over a public suffix), DNS tunnelling set apart, names with
 * control bytes reported and never proposed, gzip input, a truncated last
 * line, and --config printing only what the config does not allow. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "app/learn.h"

static char dir[64];

static const char *tmp(const char *name)
{
    static char buf[4][128];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 128, "%s/%s", dir, name);
    return p;
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/moat-test-learn-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    const char *names[] = {"a.log", "a.log.gz", "moat.yaml"};
    for (size_t i = 0; i < 3; i++)
        unlink(tmp(names[i]));
    rmdir(dir);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

/* Run learn over the logs; the output and the notes, both malloc'd. */
static int run(const char *config, unsigned wildcards, const char *const *logs, size_t n,
               char **out, char **err)
{
    size_t on, en;
    FILE *o = open_memstream(out, &on), *e = open_memstream(err, &en);
    cr_assert(o && e);
    learn_opts_t opts = {.config = config, .wildcards = wildcards, .logs = logs, .n_logs = n};
    int rc = learn_main(&opts, o, e);
    fclose(o);
    fclose(e);
    return rc;
}

#define T0 "2026-12-06T17:00:0"
#define DNS(t, tenant, name)                                                                       \
    T0 t ".000Z info decision kind=dns listener=dns client=10.0.0.2:5353 tenant=" tenant           \
         " name=" name " qtype=A rcode=NOERROR verdict=block reason=not-allowed audit=passed "     \
         "bytes_up=1 bytes_down=2 duration_ms=0\n"
#define TCP(t, tenant, listener, dest, port, name)                                                 \
    T0 t ".000Z info decision kind=tcp listener=" listener " client=10.0.0.2:4000 tenant=" tenant  \
         " dest=" dest " port=" port name                                                          \
         " verdict=block reason=not-allowed audit=passed bytes_up=1 bytes_down=2 duration_ms=0\n"

static const char log_two_tenants[] = DNS("1", "box-1", "api.example.com") TCP(
    "2", "box-1", "tls", "192.0.2.7", "443", " name=api.example.com")
    TCP("3", "box-1", "transparent", "192.0.2.8", "22", " name=git.example.com") TCP(
        "4", "box-1", "transparent", "192.0.2.8", "22",
        " name=git.example.com") TCP("5", "box-2", "transparent", "198.51.100.9", "5432",
                                     "") TCP("6", "box-2", "transparent", "192.0.2.8", "2222", "")
        TCP("7", "box-2", "tls", "192.0.2.8", "443",
            " name=named.example.net") "2026-12-06T17:00:08.000Z info decision kind=tcp "
                                       "listener=tls "
                                       "client=10.0.0.2:1 tenant=box-2 name=ok.example.org "
                                       "verdict=allow "
                                       "reason=allowlist bytes_up=1 bytes_down=1 duration_ms=1\n";

Test(learn, tenants_ports_addresses, .init = setup, .fini = teardown)
{
    write_file(tmp("a.log"), log_two_tenants);
    const char *logs[] = {tmp("a.log")};
    char *out, *err;
    cr_assert_eq(run(NULL, 0, logs, 1, &out, &err), 0, "%s", err);
    cr_assert(strstr(out, "allow: []"), "%s", out); /* no client of no tenant in the log */
    cr_assert(strstr(out, "tenants:\n  - name: box-1\n"), "%s", out);
    cr_assert(strstr(out, "clients: fill in"), "%s", out);
    cr_assert(strstr(out, "      - \"api.example.com\"    # 2 times, first " T0 "1.000Z, last " T0
                          "2.000Z\n"),
              "%s", out);
    cr_assert(strstr(out, "      - {host: \"git.example.com\", ports: [22]}    # 2 times"), "%s",
              out);
    /* An address rule where no name was seen, not where one was. */
    cr_assert(strstr(out, "{cidr: \"198.51.100.9\", ports: [5432]}"), "%s", out);
    cr_assert_null(strstr(out, "cidr: \"192.0.2.8\""), "%s", out);
    cr_assert(strstr(out, "\"named.example.net\""), "%s", out);
    /* Allowed ones need nothing. */
    cr_assert_null(strstr(out, "ok.example.org"), "%s", out);
    free(out);
    free(err);
}

Test(learn, wildcards_by_registrable_domain, .init = setup, .fini = teardown)
{
    write_file(tmp("a.log"), DNS("1", "-", "a.b.example.co.uk") DNS("2", "-", "c.example.co.uk")
                                 DNS("3", "-", "x.co.uk") DNS("4", "-", "y.co.uk")
                                     DNS("5", "-", "one.example.com"));
    const char *logs[] = {tmp("a.log")};
    char *out, *err;
    cr_assert_eq(run(NULL, 2, logs, 1, &out, &err), 0);
    cr_assert(strstr(out, "  - \"*.example.co.uk\"    # 2 names below example.co.uk,"), "%s", out);
    /* x.co.uk and y.co.uk are two registrable domains, not two names below
     * co.uk: never "*.co.uk". */
    cr_assert_null(strstr(out, "*.co.uk"), "%s", out);
    cr_assert(strstr(out, "  - \"x.co.uk\""), "%s", out);
    cr_assert(strstr(out, "  - \"y.co.uk\""), "%s", out);
    cr_assert(strstr(out, "  - \"one.example.com\""), "%s", out);
    cr_assert_null(strstr(out, "a.b.example.co.uk\""), "%s", out);
    free(out);
    free(err);
    /* Without --wildcards, every name as it is. */
    cr_assert_eq(run(NULL, 0, logs, 1, &out, &err), 0);
    cr_assert(strstr(out, "  - \"a.b.example.co.uk\""), "%s", out);
    cr_assert_null(strstr(out, "*."), "%s", out);
    free(out);
    free(err);
}

Test(learn, control_bytes_and_tunnelling, .init = setup, .fini = teardown)
{
    char text[64 * 1024] = DNS("1", "-", "\"a\\x01b\\x0aevil.com\"")
        DNS("2", "-", "a8f3k2q9z7x1m4n6b0v5c8x2z9l3k7j1h4g6f8d2s.t.example.org");
    /* Hundreds of names below one domain. */
    for (int i = 0; i < 250; i++) {
        char l[512];
        snprintf(l, sizeof l,
                 T0 "3.000Z info decision kind=dns listener=dns client=10.0.0.2:1 tenant=- "
                    "name=n%d.tunnel.example.net verdict=block reason=not-allowed\n",
                 i);
        strcat(text, l);
    }
    write_file(tmp("a.log"), text);
    const char *logs[] = {tmp("a.log")};
    char *out, *err;
    cr_assert_eq(run(NULL, 2, logs, 1, &out, &err), 0);
    cr_assert(strstr(out, "# not proposed, not a valid host name (escaped): a\\x01b\\x0aevil.com"),
              "%s", out);
    cr_assert_null(strstr(out, "- \"a"), "%s", out);
    cr_assert(strstr(out, "# WARNING, not proposed, looks like DNS tunnelling: "
                          "a8f3k2q9z7x1m4n6b0v5c8x2z9l3k7j1h4g6f8d2s.t.example.org"),
              "%s", out);
    cr_assert(strstr(out, "tunnelling: n17.tunnel.example.net"), "%s", out);
    cr_assert_null(strstr(out, "*.tunnel.example.net"), "%s", out);
    cr_assert_null(strstr(out, "*.example.net"), "%s", out);
    cr_assert(strstr(out, "allow: []"), "%s", out);
    /* Every line of it is YAML: comments never span lines. */
    for (const char *p = out; (p = strchr(p, '\n')) && p[1]; p++)
        cr_assert(p[1] == '#' || p[1] == ' ' || p[1] == 'a' || p[1] == 't', "%s", p + 1);
    free(out);
    free(err);
}

Test(learn, gzip_and_truncated_last_line, .init = setup, .fini = teardown)
{
    gzFile gz = gzopen(tmp("a.log.gz"), "wb");
    cr_assert_not_null(gz);
    const char body[] = DNS("1", "box-1", "gz.example.com") "2026-12-06T17:00:09.000Z info deci";
    cr_assert_eq(gzwrite(gz, body, sizeof body - 1), (int)(sizeof body - 1));
    gzclose(gz);
    write_file(tmp("a.log"), DNS("2", "box-1", "plain.example.com"));
    const char *logs[] = {tmp("a.log.gz"), tmp("a.log")};
    char *out, *err;
    cr_assert_eq(run(NULL, 0, logs, 2, &out, &err), 0);
    cr_assert(strstr(out, "\"gz.example.com\""), "%s", out);
    cr_assert(strstr(out, "\"plain.example.com\""), "%s", out);
    cr_assert(strstr(err, "a.log.gz: the last line has no end"), "%s", err);
    free(out);
    free(err);
    /* A gzip stream cut short (a file still being compressed): what is
     * there is read, the cut line skipped. */
    char big[16384] = DNS("3", "box-1", "cut.example.com");
    for (int i = 0; i < 30; i++) {
        char l[512];
        snprintf(l, sizeof l, DNS("4", "box-1", "n%d.example.org"), i);
        strcat(big, l);
    }
    gz = gzopen(tmp("a.log.gz"), "wb");
    cr_assert_not_null(gz);
    gzsetparams(gz, 0, Z_DEFAULT_STRATEGY); /* stored: the cut keeps the first lines */
    cr_assert_gt(gzwrite(gz, big, (unsigned)strlen(big)), 0);
    gzclose(gz);
    FILE *f = fopen(tmp("a.log.gz"), "r+");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    cr_assert_eq(ftruncate(fileno(f), ftell(f) - 1000), 0);
    fclose(f);
    const char *logs1[] = {tmp("a.log.gz")};
    cr_assert_eq(run(NULL, 0, logs1, 1, &out, &err), 0, "%s", err);
    cr_assert(strstr(out, "\"cut.example.com\""), "%s", out);
    cr_assert(strstr(err, "ends early"), "%s", err);
    free(out);
    free(err);
    /* A file that is not there: exit 2, the others still read. */
    const char *logs2[] = {tmp("nope.log"), tmp("a.log")};
    cr_assert_eq(run(NULL, 0, logs2, 2, &out, &err), 2);
    cr_assert(strstr(err, "nope.log"), "%s", err);
    cr_assert(strstr(out, "\"plain.example.com\""), "%s", out);
    free(out);
    free(err);
}

Test(learn, config_diff, .init = setup, .fini = teardown)
{
    write_file(tmp("moat.yaml"),
               "allow: []\n"
               "tenants:\n"
               "  - name: box-1\n"
               "    clients: [10.0.0.2]\n"
               "    allow: [api.example.com, {host: git.example.com, ports: [443]}]\n"
               "  - name: box-2\n"
               "    clients: [10.0.0.3]\n"
               "    allow: [named.example.net, {cidr: 198.51.100.9/32}]\n");
    write_file(tmp("a.log"), log_two_tenants);
    const char *logs[] = {tmp("a.log")};
    char *out, *err;
    cr_assert_eq(run(tmp("moat.yaml"), 0, logs, 1, &out, &err), 0, "%s", err);
    cr_assert(strstr(out, "# Against "), "%s", out);
    cr_assert_null(strstr(out, "\"api.example.com\""), "%s", out);
    cr_assert(strstr(out, "{host: \"git.example.com\", ports: [22]}"), "%s", out);
    cr_assert(strstr(out, "clients: [\"10.0.0.2/32\"]") || strstr(out, "clients: [\"10.0.0.2\"]"),
              "%s", out);
    /* box-2: all allowed already. */
    cr_assert(strstr(out, "  - name: box-2\n"), "%s", out);
    cr_assert(strstr(out, "allow: []    # nothing new"), "%s", out);
    free(out);
    free(err);
    /* A bad config: exit 1. */
    write_file(tmp("moat.yaml"), "allow: [300.1.2.3]\n");
    cr_assert_eq(run(tmp("moat.yaml"), 0, logs, 1, &out, &err), 1);
    free(out);
    free(err);
}

Test(learn, usage)
{
    char *args[][6] = {
        {"moat", "learn"},
        {"moat", "learn", "--wildcards", "1", "x.log"},
        {"moat", "learn", "--wildcards", "2x", "x.log"},
        {"moat", "learn", "--bogus", "x.log"},
        {"moat", "learn", "--config"},
    };
    int argc[] = {2, 5, 5, 4, 3};
    for (size_t i = 0; i < sizeof argc / sizeof argc[0]; i++) {
        char *buf;
        size_t n;
        FILE *e = open_memstream(&buf, &n);
        cr_assert_eq(learn_cmd(argc[i], args[i], stdout, e), 1, "case %zu", i);
        fclose(e);
        cr_assert(strstr(buf, "usage: moat learn"), "%s", buf);
        free(buf);
    }
}

Test(learn, many_ports_keep_the_lowest, .init = setup, .fini = teardown)
{
    char text[32768] = "";
    for (int p = 1069; p >= 1000; p--) {
        char l[512];
        snprintf(l, sizeof l,
                 T0 "1.000Z info decision kind=tcp listener=transparent client=10.0.0.2:1 "
                    "tenant=- dest=192.0.2.9 port=%d name=many.example.com verdict=block "
                    "reason=not-allowed\n",
                 p);
        strcat(text, l);
    }
    write_file(tmp("a.log"), text);
    const char *logs[] = {tmp("a.log")};
    char *out, *err;
    cr_assert_eq(run(NULL, 0, logs, 1, &out, &err), 0);
    cr_assert(strstr(out, "{host: \"many.example.com\", ports: [1000, 1001, "), "%s", out);
    cr_assert(
        strstr(out, ", 1063]}    # used on more ports than these (the lowest kept), 70 times"),
        "%s", out);
    free(out);
    free(err);
}
