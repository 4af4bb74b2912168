/* app/main.c: moat's entry point. Parses the command line and wires the
 * modules together; everything else lives in the modules. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "app/cli.h"
#include "app/control.h"
#include "core/daemon.h"
#include "core/log.h"
#include "app/metrics.h"
#include "app/nft.h"
#include "proxy/proxy.h"
#include "resolver/server.h"


static void main_usage(FILE *f)
{
    fprintf(f,
            "usage: moat [-c FILE]                      run (default: embedded config)\n"
            "       moat check FILE                     validate FILE, print the compiled policy\n"
            "       moat explain FILE TARGET [PORT]     the decision for a name or address\n"
            "       moat nft FILE --iface NAME          nftables ruleset for a guest behind NAME\n"
            "       moat reload --control PATH          reload the daemon listening on PATH and\n"
            "                                           print the outcome (or every config error)\n"
            "       moat --version | --help\n"
            "\n"
            "  -c, --config FILE   run with FILE (SIGHUP reloads it, SIGUSR1 reopens log.file)\n"
            "  --control PATH      listen for `moat reload` on the unix socket PATH (mode 0600)\n"
            "\n"
            "exit status: 0 ok / allowed, 1 bad config or usage, 2 runtime failure,\n"
            "             3 blocked (explain)\n"
            "The embedded default config (filtering off, loopback only):\n\n%s",
            cfg_default_yaml);
}

/* --control PATH: the control socket, or NULL for none. */
static const char *main_control_path;

static int main_run(const char *config_path)
{
    moat_gen_t *gen;
    if (cli_load_config(config_path, &gen, stderr) != 0)
        return MOAT_EXIT_CONFIG;

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

    moat_daemon_t *d;
    rc = moat_daemon_create(config_path, gen, &d);
    if (rc != 0) {
        log_error("cannot start: %s", strerror(rc < 0 ? -rc : rc));
        moat_gen_unref(gen);
        log_shutdown();
        return MOAT_EXIT_RUNTIME;
    }
    /* The DNS service is registered even with an empty dns.listen: it owns
     * the upstream client and the address memory the proxy shares, and a
     * reload may add listen addresses (resolver/server.h). */
    moat_service_t *dns;
    rc = dns_server_create(&dns);
    if (rc == 0) {
        /* The metrics service first: services drain in reverse registration
         * order, so /healthz reports the drain while the DNS service and the
         * proxy finish (app/metrics.h). It reads the DNS service's gauges. */
        moat_service_t *mx;
        int mrc = metrics_create(dns, &mx);
        if (mrc == 0 && (mrc = moat_daemon_add_service(d, mx)) != 0)
            mx->ops->free(mx);
        if (mrc != 0) {
            log_error("cannot start: metrics: %s", strerror(-mrc));
            dns->ops->free(dns);
            moat_daemon_free(d);
            log_shutdown();
            return MOAT_EXIT_RUNTIME;
        }
        rc = moat_daemon_add_service(d, dns);
        if (rc != 0)
            dns->ops->free(dns);
    }
    if (rc != 0) {
        log_error("cannot start: dns: %s", strerror(-rc));
        moat_daemon_free(d);
        log_shutdown();
        return MOAT_EXIT_RUNTIME;
    }
    /* The proxy after the DNS service: it resolves with the DNS service's
     * upstream client and reads its address memory (proxy/proxy.h). */
    moat_service_t *px;
    rc = px_proxy_create(dns, &px);
    if (rc == 0) {
        rc = moat_daemon_add_service(d, px);
        if (rc != 0)
            px->ops->free(px);
    }
    if (rc != 0) {
        log_error("cannot start: proxy: %s", strerror(-rc));
        moat_daemon_free(d);
        log_shutdown();
        return MOAT_EXIT_RUNTIME;
    }
    /* The control socket last: it stops taking requests first. */
    if (main_control_path) {
        moat_service_t *ctl;
        rc = px_control_create(d, main_control_path, &ctl);
        if (rc == 0 && (rc = moat_daemon_add_service(d, ctl)) != 0)
            ctl->ops->free(ctl);
        if (rc != 0) {
            log_error("cannot start: control socket %s: %s", main_control_path, strerror(-rc));
            moat_daemon_free(d);
            log_shutdown();
            return MOAT_EXIT_RUNTIME;
        }
    }
    int status = moat_daemon_run(d);
    moat_daemon_free(d);
    log_shutdown();
    return status;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "check") == 0) {
        if (argc != 3) {
            fprintf(stderr, "usage: moat check FILE\n");
            return MOAT_EXIT_CONFIG;
        }
        return cli_check(argv[2], stdout, stderr);
    }
    if (argc >= 2 && strcmp(argv[1], "explain") == 0) {
        if (argc != 4 && argc != 5) {
            fprintf(stderr, "usage: moat explain FILE TARGET [PORT]\n");
            return MOAT_EXIT_CONFIG;
        }
        return cli_explain(argv[2], argv[3], argc == 5 ? argv[4] : NULL, stdout, stderr);
    }
    if (argc >= 2 && strcmp(argv[1], "nft") == 0) {
        /* moat nft FILE --iface NAME (either order of FILE and the option) */
        const char *file = NULL, *iface = NULL;
        bool ok = true;
        for (int i = 2; i < argc && ok; i++) {
            if (strcmp(argv[i], "--iface") == 0 && i + 1 < argc && !iface)
                iface = argv[++i];
            else if (strncmp(argv[i], "--iface=", 8) == 0 && !iface)
                iface = argv[i] + 8;
            else if (argv[i][0] != '-' && !file)
                file = argv[i];
            else
                ok = false;
        }
        if (!ok || !file || !iface) {
            fprintf(stderr, "usage: moat nft FILE --iface NAME\n");
            return MOAT_EXIT_CONFIG;
        }
        return nft_main(file, iface, stdout, stderr);
    }

    if (argc >= 2 && strcmp(argv[1], "reload") == 0) {
        const char *path = NULL;
        if (argc == 4 && strcmp(argv[2], "--control") == 0)
            path = argv[3];
        else if (argc == 3 && strncmp(argv[2], "--control=", 10) == 0)
            path = argv[2] + 10;
        if (!path || !*path) {
            fprintf(stderr, "usage: moat reload --control PATH (the daemon's --control PATH)\n");
            return MOAT_EXIT_CONFIG;
        }
        return px_control_reload(path, stdout, stderr);
    }

    const char *config_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            printf("moat %s\n", MOAT_VERSION);
            return MOAT_EXIT_OK;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            main_usage(stdout);
            return MOAT_EXIT_OK;
        }
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc || config_path) {
                fprintf(stderr, "moat: %s needs one FILE\n", a);
                return MOAT_EXIT_CONFIG;
            }
            config_path = argv[++i];
            continue;
        }
        if (strcmp(a, "--control") == 0 || strncmp(a, "--control=", 10) == 0) {
            const char *v = a[9] == '=' ? a + 10 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || !*v || main_control_path) {
                fprintf(stderr, "moat: --control needs one PATH\n");
                return MOAT_EXIT_CONFIG;
            }
            main_control_path = v;
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0 && !config_path) {
            config_path = a + 9;
            continue;
        }
        fprintf(stderr, "moat: unknown argument '%s' (see moat --help)\n", a);
        return MOAT_EXIT_CONFIG;
    }
    return main_run(config_path);
}
