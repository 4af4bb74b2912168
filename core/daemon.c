/* core/daemon.c: generations, service lifecycle, signals (see daemon.h). */
#include "core/daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/stats.h"

enum { SVC_IDLE, SVC_STARTED, SVC_DRAINING, SVC_CLOSING, SVC_CLOSED };

struct moat_daemon {
    uv_loop_t loop;
    char *config_path; /* NULL: the embedded default */
    moat_gen_t *gen;
    moat_service_t **svcs;
    size_t n_svcs;
    uv_signal_t sig_hup, sig_term, sig_int;
    uv_timer_t grace;
    bool stopping;
    bool reload_running, reload_again;
    /* `moat reload` requests, told when the running / the next reload ends. */
    moat_reload_req_t *reload_waiters, *reload_next;
    /* SIGUSR1: reopen log.file. */
    uv_signal_t sig_usr1;
    size_t open_svcs; /* services not yet closed during shutdown */
    int exit_status;
};

/* ---- generations ------------------------------------------------------ */

static uint64_t gen_next_id = 1;

int moat_gen_from_cfg(cfg_t *cfg, moat_gen_t **out)
{
    *out = NULL;
    int rc = -ENOMEM;
    moat_gen_t *gen = calloc(1, sizeof *gen);
    struct sockaddr_storage *own = NULL;
    if (!gen)
        goto fail;

    /* moat's own listeners are refused destinations (SPEC §2.4). */
    const cfg_addr_list_t *lists[] = {&cfg->dns.listen, &cfg->proxy.transparent, &cfg->proxy.tls,
                                      &cfg->proxy.http};
    size_t n_own = cfg->metrics.enabled ? 1 : 0;
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        n_own += lists[i]->n;
    own = calloc(n_own ? n_own : 1, sizeof *own);
    if (!own)
        goto fail;
    size_t k = 0;
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        for (size_t j = 0; j < lists[i]->n; j++)
            own[k++] = lists[i]->items[j].sa;
    if (cfg->metrics.enabled)
        own[k++] = cfg->metrics.listen.sa;

    filter_policy_input_t in = {
        .filtering = cfg->filtering,
        .rules = cfg->allow,
        .n_rules = cfg->n_allow,
        .tls_ports = cfg->proxy.tls_ports.items,
        .n_tls_ports = cfg->proxy.tls_ports.n,
        .http_ports = cfg->proxy.http_ports.items,
        .n_http_ports = cfg->proxy.http_ports.n,
        .own = own,
        .n_own = k,
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
    if (!gen || --gen->refs > 0)
        return;
    filter_policy_free(gen->policy);
    cfg_free(gen->cfg);
    free(gen);
}

/* ---- daemon ------------------------------------------------------------ */

int moat_daemon_create(const char *config_path, moat_gen_t *gen, moat_daemon_t **out)
{
    *out = NULL;
    moat_daemon_t *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    if (config_path && !(d->config_path = strdup(config_path))) {
        free(d);
        return -ENOMEM;
    }
    int rc = uv_loop_init(&d->loop);
    if (rc != 0) {
        free(d->config_path);
        free(d);
        return rc;
    }
    d->loop.data = d;
    gen->id = gen_next_id++;
    d->gen = gen;
    *out = d;
    return 0;
}

int moat_daemon_add_service(moat_daemon_t *d, moat_service_t *svc)
{
    moat_service_t **n = realloc(d->svcs, (d->n_svcs + 1) * sizeof *n);
    if (!n)
        return -ENOMEM;
    d->svcs = n;
    svc->daemon = d;
    svc->state = SVC_IDLE;
    d->svcs[d->n_svcs++] = svc;
    return 0;
}

moat_gen_t *moat_daemon_gen(const moat_daemon_t *d)
{
    return d->gen;
}

uv_loop_t *moat_daemon_loop(moat_daemon_t *d)
{
    return &d->loop;
}

bool moat_daemon_stopping(const moat_daemon_t *d)
{
    return d->stopping;
}

static void daemon_handle_closed_cb(uv_handle_t *h)
{
    (void)h;
}

/* Every service is closed: drop our own handles so the loop can end. */
static void daemon_finish(moat_daemon_t *d)
{
    uv_close((uv_handle_t *)&d->sig_hup, daemon_handle_closed_cb);
    uv_close((uv_handle_t *)&d->sig_term, daemon_handle_closed_cb);
    uv_close((uv_handle_t *)&d->sig_int, daemon_handle_closed_cb);
    uv_close((uv_handle_t *)&d->sig_usr1, daemon_handle_closed_cb);
    uv_close((uv_handle_t *)&d->grace, daemon_handle_closed_cb);
}

static void daemon_drain_next(moat_daemon_t *d);

static void daemon_svc_closed_cb(moat_service_t *svc)
{
    moat_daemon_t *d = svc->daemon;
    if (svc->state == SVC_CLOSED)
        return;
    svc->state = SVC_CLOSED;
    if (--d->open_svcs == 0)
        daemon_finish(d);
    else
        daemon_drain_next(d);
}

static void daemon_svc_close(moat_service_t *svc)
{
    if (svc->state == SVC_IDLE || svc->state == SVC_CLOSING || svc->state == SVC_CLOSED)
        return; /* never started, or already on its way */
    svc->state = SVC_CLOSING;
    svc->ops->close(svc, daemon_svc_closed_cb);
}

static void daemon_svc_drained_cb(moat_service_t *svc)
{
    if (svc->state == SVC_DRAINING) {
        log_debug("%s: drained", svc->ops->name);
        daemon_svc_close(svc);
    }
}

/* Services stop in reverse registration order, one after the other: a
 * service registered later may use an earlier one (the proxy resolves names
 * through the DNS service's upstream client), so the earlier one must outlive
 * it. */
static void daemon_drain_next(moat_daemon_t *d)
{
    for (size_t i = d->n_svcs; i-- > 0;) {
        moat_service_t *svc = d->svcs[i];
        if (svc->state == SVC_DRAINING || svc->state == SVC_CLOSING)
            return; /* wait for it */
        if (svc->state == SVC_STARTED) {
            svc->state = SVC_DRAINING;
            svc->ops->drain(svc, daemon_svc_drained_cb);
            return;
        }
    }
}

static void daemon_close_all(moat_daemon_t *d)
{
    for (size_t i = d->n_svcs; i-- > 0;)
        daemon_svc_close(d->svcs[i]);
}

static void daemon_grace_cb(uv_timer_t *t)
{
    moat_daemon_t *d = t->data;
    log_info("shutdown grace over: closing what is still open");
    daemon_close_all(d);
}

static void daemon_stop(moat_daemon_t *d, const char *why)
{
    if (d->stopping) {
        log_info("%s again: closing now", why);
        uv_timer_stop(&d->grace);
        daemon_close_all(d);
        return;
    }
    d->stopping = true;
    uint64_t grace = d->gen->cfg->shutdown_grace_ms;
    log_info("%s: stopping, draining open connections for up to %llu ms", why,
             (unsigned long long)grace);
    d->open_svcs = 0;
    for (size_t i = 0; i < d->n_svcs; i++)
        if (d->svcs[i]->state == SVC_STARTED)
            d->open_svcs++;
    if (d->open_svcs == 0) {
        daemon_finish(d);
        return;
    }
    uv_timer_start(&d->grace, daemon_grace_cb, grace, 0);
    daemon_drain_next(d);
}

/* ---- reload (SIGHUP) ----------------------------------------------------- */

typedef struct reload_job {
    uv_work_t work;
    moat_daemon_t *d;
    moat_gen_t *gen;
    cfg_diag_t diag;
    int rc;
} reload_job_t;

static void daemon_reload_start(moat_daemon_t *d);

/* Tell every request on *list the outcome, one by one (a callback may cancel
 * others still on the list). */
static void daemon_reload_notify(moat_daemon_t *d, moat_reload_req_t **list,
                                 const moat_reload_result_t *res)
{
    (void)d;
    while (*list) {
        moat_reload_req_t *req = *list;
        *list = req->next;
        req->next = NULL;
        req->cb(req, res);
    }
}

/* Thread pool: parse and compile, touching nothing shared. */
static void reload_work_cb(uv_work_t *w)
{
    reload_job_t *job = w->data;
    job->rc = moat_gen_load(job->d->config_path, &job->gen, &job->diag);
}

static void reload_log_errors(const cfg_diag_t *diag, int rc, const char *path)
{
    if (diag->n == 0) {
        log_error("reload of %s failed: %s; keeping the running config", path, strerror(-rc));
        return;
    }
    for (size_t i = 0; i < diag->n; i++) {
        const cfg_error_t *e = &diag->items[i];
        char where[64];
        snprintf(where, sizeof where, "%u:%u", e->line, e->col);
        const char *file = diag->file ? diag->file : path;
        const char *kv[] = {"file", file, "at", where, NULL};
        /* FILE:LINE:COL in the message too, as `moat check` prints it. */
        log_msg(CFG_LOG_ERROR, kv, "config error: %s:%u:%u: %s", file, e->line, e->col, e->msg);
    }
    log_error("reload of %s rejected (%zu error%s); keeping the running config", path, diag->n,
              diag->n == 1 ? "" : "s");
}

static void reload_after_cb(uv_work_t *w, int status)
{
    reload_job_t *job = w->data;
    moat_daemon_t *d = job->d;
    d->reload_running = false;
    moat_reload_result_t res = {.rc = job->rc, .path = d->config_path, .diag = &job->diag};

    if (status != 0 || d->stopping) {
        res.rc = status != 0 ? status : -ESHUTDOWN;
        moat_gen_unref(job->gen);
    } else if (job->rc != 0) {
        stats_reload(false);
        reload_log_errors(&job->diag, job->rc, d->config_path);
    } else {
        stats_reload(true);
        moat_gen_t *gen = job->gen;
        gen->id = gen_next_id++;
        int lrc = log_configure(gen->cfg);
        if (lrc != 0)
            log_warn("log.file %s: %s; logging stays where it was", gen->cfg->log.file,
                     strerror(-lrc));
        moat_gen_t *old = d->gen;
        d->gen = gen;
        for (size_t i = 0; i < d->n_svcs; i++) {
            moat_service_t *svc = d->svcs[i];
            if (svc->state == SVC_STARTED && svc->ops->reload(svc, gen) != 0) {
                log_warn("%s: reload applied only in part (see above)", svc->ops->name);
                res.partial++;
            }
        }
        log_info("reloaded %s: generation %llu, filtering %s, %zu rule%s", d->config_path,
                 (unsigned long long)gen->id, gen->cfg->filtering ? "on" : "off",
                 filter_policy_rule_count(gen->policy),
                 filter_policy_rule_count(gen->policy) == 1 ? "" : "s");
        moat_gen_unref(old);
    }
    res.generation = d->gen->id;
    daemon_reload_notify(d, &d->reload_waiters, &res);
    cfg_diag_free(&job->diag);
    free(job);

    if (d->reload_again && !d->stopping) {
        d->reload_again = false;
        daemon_reload_start(d);
    } else if (d->reload_next) {
        moat_reload_result_t bye = {
            .rc = -ESHUTDOWN, .path = d->config_path, .generation = d->gen->id};
        daemon_reload_notify(d, &d->reload_next, &bye);
    }
}

static void daemon_reload_start(moat_daemon_t *d)
{
    if (d->stopping)
        return;
    if (!d->config_path) {
        log_info("reload: running on the embedded default config, nothing to re-read");
        return;
    }
    if (d->reload_running) {
        d->reload_again = true; /* the file may have changed again since */
        return;
    }
    moat_reload_result_t res = {.rc = -ENOMEM, .path = d->config_path, .generation = d->gen->id};
    reload_job_t *job = calloc(1, sizeof *job);
    if (!job) {
        log_error("reload: out of memory; keeping the running config");
        daemon_reload_notify(d, &d->reload_next, &res);
        return;
    }
    job->d = d;
    job->work.data = job;
    int rc = uv_queue_work(&d->loop, &job->work, reload_work_cb, reload_after_cb);
    if (rc != 0) {
        log_error("reload: %s; keeping the running config", uv_strerror(rc));
        free(job);
        res.rc = rc;
        daemon_reload_notify(d, &d->reload_next, &res);
        return;
    }
    d->reload_running = true;
    /* Those waiting so far are answered by this job: it reads the file after
     * they asked. Later ones wait for the next (reload_again). */
    d->reload_waiters = d->reload_next;
    d->reload_next = NULL;
}

void moat_daemon_reload(moat_daemon_t *d)
{
    daemon_reload_start(d);
}

int moat_daemon_reload_request(moat_daemon_t *d, moat_reload_req_t *req, moat_reload_cb cb)
{
    if (d->stopping)
        return -ESHUTDOWN;
    if (!d->config_path)
        return -ENOENT;
    req->cb = cb;
    req->next = d->reload_next;
    d->reload_next = req;
    daemon_reload_start(d);
    return 0;
}

void moat_daemon_reload_cancel(moat_daemon_t *d, moat_reload_req_t *req)
{
    moat_reload_req_t **lists[] = {&d->reload_waiters, &d->reload_next};
    for (size_t i = 0; i < 2; i++)
        for (moat_reload_req_t **pp = lists[i]; *pp; pp = &(*pp)->next)
            if (*pp == req) {
                *pp = req->next;
                req->next = NULL;
                return;
            }
}

/* SIGUSR1: logrotate renamed the file; write to a fresh one at the path. */
static void daemon_reopen_log(void)
{
    if (!log_to_file()) {
        log_info("SIGUSR1: logging to stderr, no log file to reopen");
        return;
    }
    int rc = log_reopen();
    if (rc != 0)
        log_error("SIGUSR1: cannot reopen the log file: %s; still writing to the old one",
                  strerror(-rc));
    else
        log_info("SIGUSR1: log file reopened");
}

static void daemon_signal_cb(uv_signal_t *s, int signum)
{
    moat_daemon_t *d = s->data;
    if (signum == SIGHUP)
        daemon_reload_start(d);
    else if (signum == SIGUSR1)
        daemon_reopen_log();
    else
        daemon_stop(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* ---- run ------------------------------------------------------------------ */

/* "127.0.0.1:5353" -> host "127.0.0.1", port "5353"; "[::1]:5353" -> "::1". */
static void daemon_split_hostport(const cfg_addr_t *a, char *host, size_t hcap, uint16_t *port)
{
    filter_addr_t fa;
    char text[FILTER_ADDR_STRLEN];
    filter_addr_from_sockaddr((const struct sockaddr *)&a->sa, &fa, port);
    snprintf(host, hcap, "%s", filter_addr_format(&fa, text, sizeof text));
}

/* On the embedded default, tell a first-time user how to poke at moat. */
static void daemon_log_try_it(const cfg_t *cfg)
{
    char host[FILTER_ADDR_STRLEN];
    uint16_t port;
    if (cfg->dns.listen.n > 0) {
        daemon_split_hostport(&cfg->dns.listen.items[0], host, sizeof host, &port);
        log_info("try DNS:   dig @%s -p %u example.com", host, port);
    }
    if (cfg->proxy.tls.n > 0) {
        daemon_split_hostport(&cfg->proxy.tls.items[0], host, sizeof host, &port);
        log_info("try TLS:   curl --connect-to ::%s%s%s:%u https://example.com/",
                 strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port);
    }
    if (cfg->proxy.http.n > 0) {
        daemon_split_hostport(&cfg->proxy.http.items[0], host, sizeof host, &port);
        log_info("try HTTP:  curl --connect-to ::%s%s%s:%u http://example.com/",
                 strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port);
    }
    log_info("filtering is off on the default config: give moat a config with an `allow` "
             "list (moat -c FILE) to gate traffic; moat --help shows the config");
}

int moat_daemon_run(moat_daemon_t *d)
{
    uv_signal_t *sigs[] = {&d->sig_hup, &d->sig_term, &d->sig_int, &d->sig_usr1};
    int nums[] = {SIGHUP, SIGTERM, SIGINT, SIGUSR1};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        uv_signal_init(&d->loop, sigs[i]);
        sigs[i]->data = d;
        uv_signal_start(sigs[i], daemon_signal_cb, nums[i]);
    }
    uv_timer_init(&d->loop, &d->grace);
    d->grace.data = d;

    d->exit_status = 0;
    for (size_t i = 0; i < d->n_svcs; i++) {
        moat_service_t *svc = d->svcs[i];
        if (svc->ops->start(svc, &d->loop, d->gen) != 0) {
            log_error("%s failed to start; stopping", svc->ops->name);
            d->exit_status = 2;
            break;
        }
        svc->state = SVC_STARTED;
    }
    if (d->exit_status != 0) {
        /* Close what did start, at once: nothing was served yet. */
        d->stopping = true;
        d->open_svcs = 0;
        for (size_t i = 0; i < d->n_svcs; i++)
            if (d->svcs[i]->state == SVC_STARTED)
                d->open_svcs++;
        if (d->open_svcs == 0)
            daemon_finish(d);
        else
            daemon_close_all(d);
    } else {
        log_info("moat running: config %s, generation %llu, mode %s, filtering %s, %zu rule%s",
                 d->gen->cfg->path, (unsigned long long)d->gen->id,
                 d->gen->cfg->mode == CFG_MODE_AUDIT ? "audit" : "enforce",
                 d->gen->cfg->filtering ? "on" : "off", filter_policy_rule_count(d->gen->policy),
                 filter_policy_rule_count(d->gen->policy) == 1 ? "" : "s");
        if (!d->config_path)
            daemon_log_try_it(d->gen->cfg);
    }
    uv_run(&d->loop, UV_RUN_DEFAULT);
    if (d->exit_status == 0)
        log_info("stopped");
    return d->exit_status;
}

void moat_daemon_free(moat_daemon_t *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_svcs; i++)
        if (d->svcs[i]->ops->free)
            d->svcs[i]->ops->free(d->svcs[i]);
    free(d->svcs);
    /* uv_run only returned once no request was pending, so no reload job
     * still points at d. */
    uv_loop_close(&d->loop);
    moat_gen_unref(d->gen);
    free(d->config_path);
    free(d);
}
