/* core/daemon.c: service lifecycle, signals, reload (see daemon.h). */
#include "core/daemon.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/log.h"
#include "core/stats.h"
#include "core/worker.h"

/* The nice value of the thread pool's threads while they work for moat. */
#define DAEMON_POOL_NICE 10

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
    moat_list_t reload_waiters, reload_next;
    /* SIGUSR1: reopen log.file. */
    uv_signal_t sig_usr1;
    size_t open_svcs; /* services not yet closed during shutdown */
    int exit_status;
    /* Generations whose last reference a worker dropped, for the loop to
     * hand to the thread pool (daemon_reap). */
    uv_async_t reap_async;
    pthread_mutex_t reap_lock;
    struct reap_node *reaps;
    bool reap_open;      /* under reap_lock: reap_async may be sent to */
    size_t workers;      /* running (core/worker.h) */
    bool workers_pinned; /* by the command line: the config's value is not asked */
};

typedef struct reap_node {
    struct reap_node *next;
    moat_gen_t *gen;
} reap_node_t;

static uint64_t gen_next_id = 1;

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
    pthread_mutex_init(&d->reap_lock, NULL);
    moat_list_init(&d->reload_waiters);
    moat_list_init(&d->reload_next);
    gen->id = gen_next_id++;
    moat_gen_publish(gen);
    d->gen = gen;
    *out = d;
    return 0;
}

static int daemon_add(moat_daemon_t *d, moat_service_t *svc, size_t stage)
{
    moat_service_t **n = realloc(d->svcs, (d->n_svcs + 1) * sizeof *n);
    if (!n)
        return -ENOMEM;
    d->svcs = n;
    svc->daemon = d;
    svc->stage = stage;
    d->svcs[d->n_svcs++] = svc;
    return 0;
}

int moat_daemon_add_service(moat_daemon_t *d, moat_service_t *svc)
{
    return daemon_add(d, svc, d->n_svcs);
}

int moat_daemon_add_peer(moat_daemon_t *d, moat_service_t *svc, const moat_service_t *peer)
{
    if (d->n_svcs == 0 || d->svcs[d->n_svcs - 1]->stage != peer->stage)
        return -EINVAL; /* peers are registered one after the other */
    return daemon_add(d, svc, peer->stage);
}

void moat_daemon_set_workers(moat_daemon_t *d, size_t n, bool pinned)
{
    d->workers = n;
    d->workers_pinned = pinned;
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

static void daemon_reap_closed_cb(uv_handle_t *h);

/* Every service is closed: drop our own handles so the loop can end. */
static void daemon_finish(moat_daemon_t *d)
{
    /* From here a last reference frees its generation where it drops;
     * daemon_reap_closed_cb frees those still queued. */
    moat_gen_set_reaper(NULL, NULL);
    pthread_mutex_lock(&d->reap_lock);
    bool was_open = d->reap_open;
    d->reap_open = false; /* a daemon_reap still under way frees in place */
    pthread_mutex_unlock(&d->reap_lock);
    if (was_open)
        uv_close((uv_handle_t *)&d->reap_async, daemon_reap_closed_cb);
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
    if (--d->open_svcs == 0)
        daemon_finish(d);
    else
        daemon_drain_next(d);
}

static void daemon_svc_close(moat_service_t *svc)
{
    moat_service_state_t st = moat_service_state(svc);
    if (st != MOAT_SERVICE_STARTED && st != MOAT_SERVICE_DRAINING)
        return; /* never started, or already on its way */
    moat_service_close(svc, daemon_svc_closed_cb);
}

static void daemon_svc_drained_cb(moat_service_t *svc)
{
    log_debug("%s: drained", svc->ops->name);
    daemon_svc_close(svc);
}

/* Services stop in reverse registration order, one stage after the other:
 * a service registered later may use an earlier one (the proxy resolves
 * names through the DNS service's upstream client), so the earlier one must
 * outlive it. Peers (the copies of one service on every worker) are one
 * stage: they drain together, so no worker goes on accepting while another
 * drains. */
static void daemon_drain_next(moat_daemon_t *d)
{
    for (size_t i = d->n_svcs; i-- > 0;) {
        moat_service_t *svc = d->svcs[i];
        moat_service_state_t st = moat_service_state(svc);
        if (st == MOAT_SERVICE_DRAINING || st == MOAT_SERVICE_CLOSING)
            return; /* wait for it */
        if (st != MOAT_SERVICE_STARTED)
            continue;
        for (size_t j = i + 1; j-- > 0 && d->svcs[j]->stage == svc->stage;)
            if (moat_service_state(d->svcs[j]) == MOAT_SERVICE_STARTED)
                moat_service_drain(d->svcs[j], daemon_svc_drained_cb);
        return;
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

static size_t daemon_started_count(const moat_daemon_t *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->n_svcs; i++)
        if (moat_service_state(d->svcs[i]) == MOAT_SERVICE_STARTED)
            n++;
    return n;
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
    d->open_svcs = daemon_started_count(d);
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
    uint64_t queued_ns; /* uv_hrtime() when the job was queued */
} reload_job_t;

static void daemon_reload_start(moat_daemon_t *d);

/* Tell every request on *list the outcome, one by one (a callback may cancel
 * others still on the list). */
static void daemon_reload_notify(moat_list_t *list, const moat_reload_result_t *res)
{
    moat_list_t *n;
    while ((n = moat_list_first(list))) {
        moat_list_remove(n);
        moat_reload_req_t *req = container_of(n, moat_reload_req_t, node);
        req->cb(req, res);
    }
}

/* The thread pool does moat's background work only (reading and
 * compiling configs, freeing generations): on a busy machine it gives way
 * to the loop, which answers queries and moves bytes. Linux's nice is per
 * thread; a thread that cannot lower its nice value again just stays
 * nicer, which suits every job it will run. */
static void daemon_background_thread(void)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    errno = 0;
    int nice_now = getpriority(PRIO_PROCESS, (id_t)tid);
    if (errno == 0 && nice_now < DAEMON_POOL_NICE)
        (void)setpriority(PRIO_PROCESS, (id_t)tid, DAEMON_POOL_NICE);
}

/* Thread pool: parse and compile, touching nothing shared. */
static void reload_work_cb(uv_work_t *w)
{
    daemon_background_thread();
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
        const char *file = cfg_error_file(diag, e) ? cfg_error_file(diag, e) : path;
        const char *kv[] = {"file", file, "at", where, NULL};
        /* FILE:LINE:COL in the message too, as `moat check` prints it. */
        log_msg(CFG_LOG_ERROR, kv, "config error: %s:%u:%u: %s", file, e->line, e->col, e->msg);
    }
    log_error("reload of %s rejected (%zu error%s); keeping the running config", path, diag->n,
              diag->n == 1 ? "" : "s");
}

static void reload_after_cb(uv_work_t *w, int status)
{
    uint64_t after_ns = uv_hrtime();
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
        moat_gen_publish(gen);
        int lrc = log_configure(gen->cfg);
        if (lrc != 0)
            log_warn("log.file %s: %s; logging stays where it was", gen->cfg->log.file,
                     strerror(-lrc));
        size_t wanted = moat_workers_wanted(gen->cfg);
        if (!d->workers_pinned && d->workers && wanted != d->workers)
            log_warn("workers: the config asks for %zu, %zu are running; a change of workers "
                     "takes effect at the next start",
                     wanted, d->workers);
        moat_gen_t *old = d->gen;
        d->gen = gen;
        for (size_t i = 0; i < d->n_svcs; i++) {
            moat_service_t *svc = d->svcs[i];
            if (moat_service_state(svc) == MOAT_SERVICE_STARTED &&
                svc->ops->reload(svc, gen) != 0) {
                log_warn("%s: reload applied only in part (see above)", svc->ops->name);
                res.partial++;
            }
        }
        uint64_t now = uv_hrtime();
        log_info("reloaded %s: generation %llu, filtering %s, %zu rule%s, %zu tenant%s; read "
                 "and compiled in %llu ms, applied in %llu us",
                 d->config_path, (unsigned long long)gen->id, gen->cfg->filtering ? "on" : "off",
                 filter_policy_rule_count(gen->policy),
                 filter_policy_rule_count(gen->policy) == 1 ? "" : "s", gen->n_tenants,
                 gen->n_tenants == 1 ? "" : "s",
                 (unsigned long long)((after_ns - job->queued_ns) / 1000000),
                 (unsigned long long)((now - after_ns) / 1000));
        moat_gen_unref(old);
    }
    res.generation = d->gen->id;
    daemon_reload_notify(&d->reload_waiters, &res);
    cfg_diag_free(&job->diag);
    free(job);

    if (d->reload_again && !d->stopping) {
        d->reload_again = false;
        daemon_reload_start(d);
    } else if (!moat_list_empty(&d->reload_next)) {
        moat_reload_result_t bye = {
            .rc = -ESHUTDOWN, .path = d->config_path, .generation = d->gen->id};
        daemon_reload_notify(&d->reload_next, &bye);
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
        daemon_reload_notify(&d->reload_next, &res);
        return;
    }
    job->d = d;
    job->work.data = job;
    job->queued_ns = uv_hrtime();
    int rc = uv_queue_work(&d->loop, &job->work, reload_work_cb, reload_after_cb);
    if (rc != 0) {
        log_error("reload: %s; keeping the running config", uv_strerror(rc));
        free(job);
        res.rc = rc;
        daemon_reload_notify(&d->reload_next, &res);
        return;
    }
    d->reload_running = true;
    /* Those waiting so far are answered by this job: it reads the file after
     * they asked. Later ones wait for the next (reload_again). */
    moat_list_move(&d->reload_next, &d->reload_waiters);
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
    moat_list_push(&d->reload_next, &req->node);
    daemon_reload_start(d);
    return 0;
}

void moat_daemon_reload_cancel(moat_daemon_t *d, moat_reload_req_t *req)
{
    (void)d;
    moat_list_remove(&req->node);
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

/* ---- freeing generations off the loop ------------------------------------------ */

typedef struct reap_job {
    uv_work_t work;
    moat_gen_t *gen;
} reap_job_t;

static void daemon_reap_work_cb(uv_work_t *w)
{
    daemon_background_thread();
    reap_job_t *job = w->data;
    moat_gen_free(job->gen);
    job->gen = NULL;
    /* No malloc_trim here: it gives the memory back to the system, but
     * holds the heap's locks long enough to stall the loop's own
     * allocations (docs/DECISIONS.md, "Tenants"). */
}

static void daemon_reap_after_cb(uv_work_t *w, int status)
{
    reap_job_t *job = w->data;
    (void)status;
    moat_gen_free(job->gen); /* NULL unless the work was cancelled */
    free(job);
}

/* Loop thread: free gen on the thread pool. Freeing a generation of many
 * tenants takes long enough that the loop's queries and connections would
 * notice. */
static void daemon_reap_queue(moat_daemon_t *d, moat_gen_t *gen)
{
    reap_job_t *job = malloc(sizeof *job);
    if (job) {
        job->gen = gen;
        job->work.data = job;
        if (uv_queue_work(&d->loop, &job->work, daemon_reap_work_cb, daemon_reap_after_cb) == 0)
            return;
        free(job);
    }
    moat_gen_free(gen); /* on the loop, then */
}

/* Take the generations the workers queued. */
static reap_node_t *daemon_reap_take(moat_daemon_t *d)
{
    pthread_mutex_lock(&d->reap_lock);
    reap_node_t *list = d->reaps;
    d->reaps = NULL;
    pthread_mutex_unlock(&d->reap_lock);
    return list;
}

static void daemon_reap_async_cb(uv_async_t *a)
{
    moat_daemon_t *d = a->data;
    for (reap_node_t *n = daemon_reap_take(d), *next; n; n = next) {
        next = n->next;
        daemon_reap_queue(d, n->gen);
        free(n);
    }
}

static void daemon_reap_closed_cb(uv_handle_t *h)
{
    moat_daemon_t *d = h->data;
    for (reap_node_t *n = daemon_reap_take(d), *next; n; n = next) {
        next = n->next;
        moat_gen_free(n->gen);
        free(n);
    }
}

/* A generation's last reference went (moat_gen_set_reaper), on any
 * worker's thread: the daemon's loop hands it to the thread pool. A queue
 * and a wake-up, because only the loop's own thread may queue work on it. */
static void daemon_reap(moat_gen_t *gen, void *arg)
{
    moat_daemon_t *d = arg;
    reap_node_t *n = malloc(sizeof *n);
    if (!n) {
        moat_gen_free(gen); /* here, then */
        return;
    }
    n->gen = gen;
    pthread_mutex_lock(&d->reap_lock);
    bool open = d->reap_open;
    if (open) {
        n->next = d->reaps;
        d->reaps = n;
        uv_async_send(&d->reap_async); /* under the lock: the handle is not closed meanwhile */
    }
    pthread_mutex_unlock(&d->reap_lock);
    if (!open) {
        free(n);
        moat_gen_free(gen);
    }
}

int moat_daemon_run(moat_daemon_t *d, moat_daemon_started_cb started, void *arg)
{
    if (uv_async_init(&d->loop, &d->reap_async, daemon_reap_async_cb) == 0) {
        d->reap_async.data = d;
        d->reap_open = true;
        moat_gen_set_reaper(daemon_reap, d);
    }
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
        if (moat_service_start(svc, &d->loop, d->gen) != 0) {
            /* The service logged which address or file; say what to do. */
            log_error(
                "%s failed to start; stopping: free the address or socket named above (another "
                "process may hold it: ss -ltnup shows which) or change it in %s",
                svc->ops->name, d->config_path ? d->config_path : "a config (moat -c FILE)");
            d->exit_status = 2;
            break;
        }
    }
    if (d->exit_status != 0) {
        /* Close what did start, at once: nothing was served yet. */
        d->stopping = true;
        d->open_svcs = daemon_started_count(d);
        if (d->open_svcs == 0)
            daemon_finish(d);
        else
            daemon_close_all(d);
    } else {
        size_t workers = d->workers ? d->workers : 1;
        log_info("moat running: config %s, generation %llu, mode %s, filtering %s, %zu rule%s, "
                 "%zu worker%s",
                 d->gen->cfg->path, (unsigned long long)d->gen->id,
                 d->gen->cfg->mode == CFG_MODE_AUDIT ? "audit" : "enforce",
                 d->gen->cfg->filtering ? "on" : "off", filter_policy_rule_count(d->gen->policy),
                 filter_policy_rule_count(d->gen->policy) == 1 ? "" : "s", workers,
                 workers == 1 ? "" : "s");
        if (started)
            started(d, arg);
    }
    uv_run(&d->loop, UV_RUN_DEFAULT);
    /* The loop is over: whatever is freed from now on is freed at once. */
    moat_gen_set_reaper(NULL, NULL);
    if (d->exit_status == 0)
        log_info("stopped");
    return d->exit_status;
}

const char *moat_daemon_config_path(const moat_daemon_t *d)
{
    return d->config_path;
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
    pthread_mutex_destroy(&d->reap_lock);
    moat_gen_unref(d->gen);
    free(d->config_path);
    free(d);
}
