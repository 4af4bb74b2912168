/* app/main.c: moat's entry point. Parses the command line and wires the
 * modules together; everything else lives in the modules. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <ares.h>
#include <ldns/ldns.h>
#include <uv.h>
#include <yaml.h>

#include "app/args.h"
#include "app/cli.h"
#include "app/control.h"
#include "app/learn.h"
#include "app/metrics.h"
#include "app/nft.h"
#include "config/config.h"
#include "core/daemon.h"
#include "core/log.h"
#include "core/stats.h"
#include "core/watch.h"
#include "core/worker.h"
#include "filter/addr.h"
#include "proxy/proxy.h"
#include "resolver/server.h"

static void main_usage(FILE *f)
{
    fprintf(f,
            "usage: moat [-c FILE]                      run (default: embedded config)\n"
            "       moat check FILE                     validate FILE, print the compiled policy\n"
            "       moat explain FILE TARGET [PORT] [--client ADDR | --user NAME]\n"
            "                                           the decision for a name or address\n"
            "                                           (as the tenant of that client or user)\n"
            "       moat nft FILE --iface NAME... [--host-port PORT[/udp]...]\n"
            "                                           nftables ruleset for the guests behind\n"
            "                                           each NAME; --host-port opens this host's\n"
            "                                           TCP (or /udp) PORT to them\n"
            "       moat learn [--config FILE] [--wildcards N] LOG...\n"
            "                                           an allowlist from decision logs (text or\n"
            "                                           JSON, plain or gzip, - for stdin)\n"
            "       moat reload --control PATH          reload the daemon listening on PATH and\n"
            "                                           print the outcome (or every config error)\n"
            "       moat --version | --help\n"
            "\n"
            "  -c, --config FILE   run with FILE (SIGHUP reloads it, SIGUSR1 reopens log.file)\n"
            "  --control PATH      listen for `moat reload` on the unix socket PATH (mode 0600)\n"
            "  --workers N|auto    event loops serving DNS and the proxy (overrides `workers`)\n"
            "\n"
            "exit status: 0 ok / allowed, 1 bad config or usage, 2 runtime failure,\n"
            "             3 blocked (explain)\n"
            "The embedded default config (filtering off, loopback only):\n\n%s",
            cfg_default_yaml);
}

/* The git revision of the build (revision.c, made by meson's vcs_tag). */
extern const char moat_revision[];

/* moat --version: the version, the revision, and the libraries it runs with. */
static void main_version(void)
{
    printf("moat %s (git %s)\n", MOAT_VERSION, moat_revision);
    printf("libuv %s, c-ares %s, ldns %s, libyaml %s\n", uv_version_string(), ares_version(NULL),
           ldns_version(), yaml_get_version_string());
}

/* --control PATH: the control socket, or NULL for none. */
static const char *main_control_path;

/* --workers N|auto: -1 when not given (the config's `workers` decides), 0
 * for auto. */
static long main_workers_option = -1;

/* "127.0.0.1:5353" -> host "127.0.0.1", port 5353; "[::1]:5353" -> "::1". */
static void main_split_hostport(const cfg_addr_t *a, char *host, size_t hcap, uint16_t *port)
{
    filter_addr_t fa;
    char text[FILTER_ADDR_STRLEN];
    filter_addr_from_sockaddr((const struct sockaddr *)&a->sa, &fa, port);
    snprintf(host, hcap, "%s", filter_addr_format(&fa, text, sizeof text));
}

/* On the embedded default, tell a first-time user how to poke at moat. */
static void main_log_try_it(moat_daemon_t *d, void *arg)
{
    (void)arg;
    if (moat_daemon_config_path(d))
        return;
    const cfg_t *cfg = moat_daemon_gen(d)->cfg;
    char host[FILTER_ADDR_STRLEN];
    uint16_t port;
    if (cfg->dns.listen.n > 0) {
        main_split_hostport(&cfg->dns.listen.items[0], host, sizeof host, &port);
        log_info("try DNS:   dig @%s -p %u example.com", host, port);
    }
    if (cfg->proxy.tls.n > 0) {
        main_split_hostport(&cfg->proxy.tls.items[0], host, sizeof host, &port);
        log_info("try TLS:   curl --connect-to ::%s%s%s:%u https://example.com/",
                 strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port);
    }
    if (cfg->proxy.http.n > 0) {
        main_split_hostport(&cfg->proxy.http.items[0], host, sizeof host, &port);
        log_info("try HTTP:  curl --connect-to ::%s%s%s:%u http://example.com/",
                 strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port);
    }
    log_info("filtering is off on the default config: give moat a config with an `allow` "
             "list (moat -c FILE) to gate traffic; moat --help shows the config");
}

/* Register svc with d, or free it. 0, or a negative errno after logging
 * "cannot start: what: ...". */
static int main_add(moat_daemon_t *d, moat_service_t *svc, int rc, const char *what)
{
    if (rc == 0 && (rc = moat_daemon_add_service(d, svc)) != 0)
        svc->ops->free(svc);
    if (rc != 0)
        log_error("cannot start: %s: %s", what, strerror(-rc));
    return rc;
}

/* The workers beyond the daemon's own loop (core/worker.h), and what their
 * copies of the services share; they outlive the daemon's services. */
static struct {
    size_t n;                /* workers, the daemon's loop counted */
    moat_worker_t **threads; /* [n]: [0] NULL (the daemon's loop) */
    moat_service_t **dns;    /* [n]: each worker's DNS service (owned by the daemon) */
    atomic_uint conns;       /* proxy connections open, all workers */
} main_workers;

/* Start workers 1..n-1. 0, or a negative errno after logging. */
static int main_workers_start(size_t n)
{
    main_workers.n = n;
    main_workers.threads = calloc(n, sizeof *main_workers.threads);
    main_workers.dns = calloc(n, sizeof *main_workers.dns);
    int rc = main_workers.threads && main_workers.dns ? stats_workers(n) : -ENOMEM;
    for (size_t i = 1; i < n && rc == 0; i++)
        rc = moat_worker_create(i, &main_workers.threads[i]);
    if (rc != 0)
        log_error("cannot start: %zu workers: %s", n, strerror(-rc));
    return rc;
}

/* After moat_daemon_free (every wrapped service freed): stop the threads. */
static void main_workers_stop(void)
{
    for (size_t i = 1; main_workers.threads && i < main_workers.n; i++)
        moat_worker_free(main_workers.threads[i]);
    free(main_workers.threads);
    free(main_workers.dns);
    memset(&main_workers, 0, sizeof main_workers);
}

/* Register svc (rc: whether creating it worked), worker i's copy of a
 * service: as is for worker 0, else wrapped and as a peer of *peer, the
 * copy registered for worker i - 1; *peer is then this one. Frees svc on
 * failure. 0, or a negative errno after logging "cannot start: what: ...". */
static int main_add_copy(moat_daemon_t *d, size_t i, moat_service_t *svc, int rc, const char *what,
                         moat_service_t **peer)
{
    if (rc == 0 && i > 0 && (rc = moat_worker_wrap(main_workers.threads[i], svc, &svc)) != 0)
        svc = NULL; /* freed by the wrap */
    if (rc == 0)
        rc = i == 0 ? moat_daemon_add_service(d, svc) : moat_daemon_add_peer(d, svc, *peer);
    if (rc != 0 && svc)
        svc->ops->free(svc);
    if (rc != 0)
        log_error("cannot start: %s (worker %zu): %s", what, i, strerror(-rc));
    else
        *peer = svc;
    return rc;
}

/* Create and register the services, in the order they stop in reverse:
 * metrics, dns (every worker's), proxy (every worker's), config watch,
 * control. 0, or a negative errno after logging. */
static int main_services(moat_daemon_t *d)
{
    /* The DNS service is registered even with an empty dns.listen: it owns
     * the upstream client and the address memory the proxy shares, and a
     * reload may add listen addresses (resolver/server.h). */
    size_t n = main_workers.n;
    moat_service_t *mx, *ctl, *watch, *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        int rc = dns_server_create(i, n, &main_workers.dns[i]);
        if (rc != 0) {
            log_error("cannot start: dns: %s", strerror(-rc));
            for (size_t j = 0; j < i; j++)
                main_workers.dns[j]->ops->free(main_workers.dns[j]);
            return rc;
        }
    }
    /* The metrics service first: services drain in reverse registration
     * order, so /healthz reports the drain while the DNS service and the
     * proxy finish (app/metrics.h). It reads the DNS services' gauges. */
    int rc = metrics_create(main_workers.dns, n, &mx);
    if ((rc = main_add(d, mx, rc, "metrics")) != 0) {
        for (size_t j = 0; j < n; j++)
            main_workers.dns[j]->ops->free(main_workers.dns[j]);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if ((rc = main_add_copy(d, i, main_workers.dns[i], 0, "dns", &prev)) != 0) {
            for (size_t j = i + 1; j < n; j++)
                main_workers.dns[j]->ops->free(main_workers.dns[j]);
            return rc;
        }
    }
    /* The proxy after the DNS service: it resolves with its worker's DNS
     * service's upstream client and reads every worker's address memory
     * (proxy/proxy.h). */
    for (size_t i = 0; i < n; i++) {
        px_proxy_workers_t pw = {
            .index = i, .count = n, .dns = main_workers.dns, .conns = &main_workers.conns};
        moat_service_t *px = NULL;
        rc = px_proxy_create(main_workers.dns[i], n > 1 ? &pw : NULL, &px);
        if ((rc = main_add_copy(d, i, px, rc, "proxy", &prev)) != 0)
            return rc;
    }
    /* reload: {watch: true}: it stops before the services it reloads. */
    rc = moat_watch_create(d, &watch);
    if ((rc = main_add(d, watch, rc, "config watch")) != 0)
        return rc;
    /* The control socket last: it stops taking requests first. */
    if (!main_control_path)
        return 0;
    rc = ctl_server_create(d, main_control_path, &ctl);
    if (rc == 0 && (rc = moat_daemon_add_service(d, ctl)) != 0)
        ctl->ops->free(ctl);
    if (rc != 0)
        log_error("cannot start: control socket %s: %s", main_control_path, strerror(-rc));
    return rc;
}

/* After a config that did not load (its errors printed): what to do. */
static void main_config_hint(const char *path)
{
    if (!path)
        fprintf(stderr, "moat: not started: the embedded default config did not load\n");
    else if (access(path, R_OK) != 0)
        fprintf(stderr,
                "moat: not started: cannot read the config %s; give a readable file with -c FILE "
                "(moat --help prints a config to start from)\n",
                path);
    else
        fprintf(stderr,
                "moat: not started: fix the errors in %s above (moat check %s lists them) and "
                "start moat again\n",
                path, path);
}

static int main_run(const char *config_path)
{
    moat_gen_t *gen;
    if (cli_load_config(config_path, &gen, stderr) != 0) {
        main_config_hint(config_path);
        return MOAT_EXIT_CONFIG;
    }

    int rc = log_configure(gen->cfg);
    if (rc != 0) {
        if (gen->cfg->log.file)
            fprintf(stderr, "moat: log.file %s: %s\n", gen->cfg->log.file, strerror(-rc));
        else
            fprintf(stderr, "moat: cannot start the log writer: %s\n", strerror(-rc));
        moat_gen_unref(gen);
        return MOAT_EXIT_CONFIG;
    }

    /* A peer that closes mid-write is an ordinary event for a proxy. */
    signal(SIGPIPE, SIG_IGN);

    if (main_workers_option >= 0)
        gen->cfg->workers = (unsigned)main_workers_option; /* before any other thread reads it */
    size_t workers = moat_workers_wanted(gen->cfg);
    moat_daemon_t *d;
    rc = moat_daemon_create(config_path, gen, &d);
    if (rc != 0) {
        log_error("cannot start: %s", strerror(rc < 0 ? -rc : rc));
        moat_gen_unref(gen);
        log_shutdown();
        return MOAT_EXIT_RUNTIME;
    }
    moat_daemon_set_workers(d, workers, main_workers_option >= 0);
    int status = MOAT_EXIT_RUNTIME;
    if (main_workers_start(workers) == 0 && main_services(d) == 0)
        status = moat_daemon_run(d, main_log_try_it, NULL);
    moat_daemon_free(d);
    main_workers_stop();
    log_shutdown();
    return status;
}

/* moat nft FILE --iface NAME... [--host-port PORT[/udp]...], the options
 * in any order around FILE. */
static int main_nft(int argc, char **argv)
{
    const char *file = NULL;
    nft_target_t t = {0};
    bool ok = true;
    for (int i = 2; i < argc && ok; i++) {
        const char *a = argv[i], *v;
        if ((v = args_value(argc, argv, &i, "--iface")))
            ok = nft_target_add_iface(&t, v, stderr) == 0;
        else if ((v = args_value(argc, argv, &i, "--host-port")))
            ok = nft_target_add_host_port(&t, v, stderr) == 0;
        else if (a[0] != '-' && !file)
            file = a;
        else
            ok = false;
    }
    if (!ok || !file || t.n_ifaces == 0) {
        fprintf(stderr, "usage: moat nft FILE --iface NAME... [--host-port PORT[/udp]...]\n");
        return MOAT_EXIT_CONFIG;
    }
    return nft_main(file, &t, stdout, stderr);
}

/* moat reload --control PATH */
static int main_reload(int argc, char **argv)
{
    const char *path = NULL;
    if (argc == 4 && strcmp(argv[2], "--control") == 0)
        path = argv[3];
    else if (argc == 3 && strncmp(argv[2], "--control=", 10) == 0)
        path = argv[2] + 10;
    if (!path || !*path) {
        fprintf(stderr, "usage: moat reload --control PATH (the daemon's --control PATH)\n");
        return MOAT_EXIT_CONFIG;
    }
    return ctl_client_reload(path, stdout, stderr);
}

/* `moat explain FILE TARGET [PORT] [--client ADDR | --user NAME]`. */
static int main_explain(int argc, char **argv)
{
    const char *pos[3] = {NULL, NULL, NULL}, *client = NULL, *user = NULL;
    size_t n = 0;
    bool ok = true;
    for (int i = 2; i < argc && ok; i++) {
        const char *v;
        if (!client && (v = args_value(argc, argv, &i, "--client")))
            client = v;
        else if (!user && (v = args_value(argc, argv, &i, "--user")))
            user = v;
        else if (argv[i][0] != '-' && n < 3)
            pos[n++] = argv[i];
        else
            ok = false;
    }
    if (!ok || n < 2 || (client && user)) {
        fprintf(stderr, "usage: moat explain FILE TARGET [PORT] [--client ADDR | --user NAME]\n");
        return MOAT_EXIT_CONFIG;
    }
    return cli_explain(pos[0], pos[1], pos[2], client, user, stdout, stderr);
}

/* A subcommand (check, explain, nft, reload): its exit status in *status and
 * true, or false when argv names none. */
static bool main_subcommand(int argc, char **argv, int *status)
{
    const char *cmd = argc >= 2 ? argv[1] : "";
    if (strcmp(cmd, "check") == 0) {
        if (argc != 3) {
            fprintf(stderr, "usage: moat check FILE\n");
            *status = MOAT_EXIT_CONFIG;
        } else {
            *status = cli_check(argv[2], stdout, stderr);
        }
    } else if (strcmp(cmd, "explain") == 0) {
        *status = main_explain(argc, argv);
    } else if (strcmp(cmd, "nft") == 0) {
        *status = main_nft(argc, argv);
    } else if (strcmp(cmd, "learn") == 0) {
        *status = learn_cmd(argc, argv, stdout, stderr);
    } else if (strcmp(cmd, "reload") == 0) {
        *status = main_reload(argc, argv);
    } else {
        return false;
    }
    return true;
}

/* --workers' value: 0 for auto, 1..CFG_WORKERS_MAX, or -1 for anything
 * else (NULL included). */
static long main_parse_workers(const char *v)
{
    if (!v)
        return -1;
    if (strcmp(v, "auto") == 0)
        return 0;
    char *end;
    long n = strtol(v, &end, 10);
    return end != v && *end == '\0' && n >= 1 && n <= CFG_WORKERS_MAX ? n : -1;
}

/* The daemon's options. Returns -1 to run with *config_path, or the exit
 * status (--version, --help, a bad argument). */
static int main_options(int argc, char **argv, const char **config_path)
{
    *config_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            main_version();
            return MOAT_EXIT_OK;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            main_usage(stdout);
            return MOAT_EXIT_OK;
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc || *config_path) {
                fprintf(stderr, "moat: %s needs one FILE\n", a);
                return MOAT_EXIT_CONFIG;
            }
            *config_path = argv[++i];
            continue;
        }
        if (strncmp(a, "--control", 9) == 0 && (a[9] == '\0' || a[9] == '=')) {
            const char *v = args_value(argc, argv, &i, "--control");
            if (!v || !*v || main_control_path) {
                fprintf(stderr, "moat: --control needs one PATH\n");
                return MOAT_EXIT_CONFIG;
            }
            main_control_path = v;
            continue;
        }
        if (strncmp(a, "--workers", 9) == 0 && (a[9] == '\0' || a[9] == '=')) {
            const char *v = args_value(argc, argv, &i, "--workers");
            long n = main_workers_option < 0 ? main_parse_workers(v) : -1;
            if (n < 0) {
                fprintf(stderr, "moat: --workers needs one value: auto or a number from 1 to %d\n",
                        CFG_WORKERS_MAX);
                return MOAT_EXIT_CONFIG;
            }
            main_workers_option = n;
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0 && !*config_path) {
            *config_path = a + 9;
            continue;
        }
        fprintf(stderr, "moat: unknown argument '%s' (see moat --help)\n", a);
        return MOAT_EXIT_CONFIG;
    }
    return -1;
}

int main(int argc, char **argv)
{
    int status;
    if (main_subcommand(argc, argv, &status))
        return status;
    const char *config_path;
    status = main_options(argc, argv, &config_path);
    if (status >= 0)
        return status;
    return main_run(config_path);
}
