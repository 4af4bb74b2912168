/* core/watch.c: reload when the config changes (see watch.h).
 *
 * One inotify descriptor polled by the loop (uv_poll_t), not a uv_fs_event_t
 * per directory: the watched set changes on every reload, and inotify
 * watches are added and removed with a system call each, where fs_event
 * handles would each need a close callback; the raw events also tell a
 * change of the directory itself (deleted, moved: the watch is gone) from a
 * change of an entry, and report a queue overflow.
 */
#include "core/watch.h"

#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"

/* Links followed in one chain, as the kernel's own limit for a path. */
#define WT_MAX_LINKS 40
/* Entry changes that matter: written, closed after a write, created,
 * removed, renamed, attributes (a `touch`); and the directory itself. */
#define WT_MASK                                                                                    \
    (IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM |              \
     IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

/* ---- the plan ------------------------------------------------------------------------- */

/* The plan being made and the directories whose chain was already walked. */
typedef struct wt_ctx {
    moat_watch_plan_t *plan;
    char **seen;
    size_t n_seen, cap_seen;
    int rc;
} wt_plan_ctx_t;

static void wt_path(wt_plan_ctx_t *c, const char *path, unsigned links);
static void wt_dir(wt_plan_ctx_t *c, const char *dir, unsigned links);

static bool wt_grow(void **items, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *p = realloc(*items, ncap * size);
    if (!p)
        return false;
    *items = p;
    *cap = ncap;
    return true;
}

/* The parent of path ("." for a name alone, "/" for the root's entries). */
static char *wt_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static const char *wt_base(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static bool wt_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Watch dir for name: a directory that is not there is watched through its
 * parent, for its own name. */
static void wt_add(wt_plan_ctx_t *c, const char *dir, const char *name, bool glob)
{
    if (c->rc != 0 || !*name)
        return;
    if (!wt_is_dir(dir)) {
        if (strcmp(dir, "/") == 0 || strcmp(dir, ".") == 0)
            return;
        char *parent = wt_parent(dir);
        if (!parent) {
            c->rc = -ENOMEM;
            return;
        }
        wt_add(c, parent, wt_base(dir), false);
        free(parent);
        return;
    }
    moat_watch_plan_t *p = c->plan;
    if (!wt_grow((void **)&p->items, p->n, &p->cap, sizeof *p->items)) {
        c->rc = -ENOMEM;
        return;
    }
    moat_watch_item_t *it = &p->items[p->n];
    it->dir = strdup(dir);
    it->name = strdup(name);
    it->glob = glob;
    if (!it->dir || !it->name) {
        free(it->dir);
        free(it->name);
        c->rc = -ENOMEM;
        return;
    }
    p->n++;
}

/* path is a symbolic link: its target, relative to path's directory. */
static char *wt_link_target(const char *path, const char *dir)
{
    char buf[PATH_MAX];
    ssize_t n = readlink(path, buf, sizeof buf - 1);
    if (n <= 0)
        return NULL;
    buf[n] = '\0';
    if (buf[0] == '/')
        return strdup(buf);
    size_t dlen = strlen(dir);
    char *out = malloc(dlen + 1 + (size_t)n + 1);
    if (out) {
        memcpy(out, dir, dlen);
        out[dlen] = '/';
        memcpy(out + dlen + 1, buf, (size_t)n + 1);
    }
    return out;
}

static bool wt_is_link(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISLNK(st.st_mode);
}

/* A file read through path: its directory for its name, the directories
 * along the way that are links, and the chain of links it is. */
static void wt_path(wt_plan_ctx_t *c, const char *path, unsigned links)
{
    char *dir = wt_parent(path);
    if (!dir) {
        c->rc = -ENOMEM;
        return;
    }
    wt_add(c, dir, wt_base(path), false);
    wt_dir(c, dir, links);
    if (c->rc == 0 && links < WT_MAX_LINKS && wt_is_link(path)) {
        char *target = wt_link_target(path, dir);
        if (target)
            wt_path(c, target, links + 1);
        free(target);
    }
    free(dir);
}

/* The links among dir and its ancestors (each walked once): a swap of one
 * (a ConfigMap's `..data`) changes every file below it. */
static void wt_dir(wt_plan_ctx_t *c, const char *dir, unsigned links)
{
    if (c->rc != 0 || strcmp(dir, "/") == 0 || strcmp(dir, ".") == 0 || strcmp(dir, "..") == 0)
        return;
    for (size_t i = 0; i < c->n_seen; i++)
        if (strcmp(c->seen[i], dir) == 0)
            return;
    char *copy = strdup(dir);
    if (!copy || !wt_grow((void **)&c->seen, c->n_seen, &c->cap_seen, sizeof *c->seen)) {
        free(copy);
        c->rc = -ENOMEM;
        return;
    }
    c->seen[c->n_seen++] = copy;
    if (wt_is_link(dir)) {
        if (links < WT_MAX_LINKS)
            wt_path(c, dir, links + 1);
        return;
    }
    char *parent = wt_parent(dir);
    if (!parent) {
        c->rc = -ENOMEM;
        return;
    }
    wt_dir(c, parent, links);
    free(parent);
}

int moat_watch_plan(const cfg_t *cfg, moat_watch_plan_t *out)
{
    *out = (moat_watch_plan_t){0};
    wt_plan_ctx_t c = {.plan = out};
    for (size_t i = 0; i < cfg->n_files && c.rc == 0; i++)
        wt_path(&c, cfg->files[i], 0);
    for (size_t i = 0; i < cfg->n_glob_dirs && c.rc == 0; i++) {
        wt_add(&c, cfg->glob_dirs[i].dir, cfg->glob_dirs[i].pattern, true);
        wt_dir(&c, cfg->glob_dirs[i].dir, 0);
    }
    for (size_t i = 0; i < c.n_seen; i++)
        free(c.seen[i]);
    free(c.seen);
    if (c.rc != 0)
        moat_watch_plan_free(out);
    return c.rc;
}

void moat_watch_plan_free(moat_watch_plan_t *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++) {
        free(p->items[i].dir);
        free(p->items[i].name);
    }
    free(p->items);
    *p = (moat_watch_plan_t){0};
}

/* ---- the service ---------------------------------------------------------------------------- */

/* One watched name: an item of the plan and the watch of its directory. */
typedef struct wt_entry {
    int wd;
    const moat_watch_item_t *item; /* in wt->plan */
} wt_entry_t;

typedef struct wt wt_t;

/* An open inotify descriptor and its poll handle, freed in the close callback. */
typedef struct wt_inotify {
    uv_poll_t poll;
    int fd;
    wt_t *w;
} wt_inotify_t;

struct wt {
    moat_service_t svc;
    moat_daemon_t *d;
    uv_loop_t *loop;
    uv_timer_t timer;
    bool timer_open;
    wt_inotify_t *ino; /* NULL: not watching */
    moat_watch_plan_t plan;
    wt_entry_t *entries; /* sorted by (wd, glob, name) */
    size_t n_entries;
    size_t n_dirs;          /* distinct watches */
    uint64_t burst_start;   /* uv_now of the burst's first change; 0: none */
    char changed[PATH_MAX]; /* the burst's first changed path, for the log */
    moat_reload_req_t req;
    bool asked; /* req is with the daemon */
    bool again; /* a change came while it was */
};

static wt_t *wt_of(moat_service_t *svc)
{
    return svc->data;
}

static int wt_entry_cmp(const void *pa, const void *pb)
{
    const wt_entry_t *a = pa, *b = pb;
    if (a->wd != b->wd)
        return a->wd < b->wd ? -1 : 1;
    if (a->item->glob != b->item->glob)
        return a->item->glob ? 1 : -1;
    return strcmp(a->item->name, b->item->name);
}

/* The entry a change of name in the directory of watch wd concerns, or NULL. */
static const wt_entry_t *wt_match(const wt_t *w, int wd, const char *name)
{
    size_t lo = 0, hi = w->n_entries;
    while (lo < hi) { /* the first entry of wd */
        size_t mid = lo + (hi - lo) / 2;
        if (w->entries[mid].wd < wd)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo; i < w->n_entries && w->entries[i].wd == wd; i++) {
        const moat_watch_item_t *it = w->entries[i].item;
        if (!name ||
            (it->glob ? fnmatch(it->name, name, FNM_PERIOD) == 0 : strcmp(it->name, name) == 0))
            return &w->entries[i];
    }
    return NULL;
}

/* Whether the sorted entries e hold watch wd. */
static bool wt_has_wd(const wt_entry_t *e, size_t n, int wd)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (e[mid].wd == wd)
            return true;
        if (e[mid].wd < wd)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static void wt_timer_cb(uv_timer_t *t);

/* (Re)start the quiet time, within the burst's limit. */
static void wt_arm(wt_t *w)
{
    uint64_t now = uv_now(w->loop);
    if (w->burst_start == 0)
        w->burst_start = now ? now : 1;
    uint64_t spent = now - w->burst_start;
    uint64_t wait = MOAT_WATCH_QUIET_MS;
    if (spent + wait > MOAT_WATCH_MAX_MS)
        wait = spent >= MOAT_WATCH_MAX_MS ? 0 : MOAT_WATCH_MAX_MS - spent;
    uv_timer_start(&w->timer, wt_timer_cb, wait, 0);
}

/* A change of dir/name (name NULL: dir itself). */
static void wt_changed(wt_t *w, const char *dir, const char *name)
{
    if (w->burst_start == 0 && name && strcmp(dir, ".") == 0)
        snprintf(w->changed, sizeof w->changed, "%s", name);
    else if (w->burst_start == 0)
        snprintf(w->changed, sizeof w->changed, "%s%s%s", dir, name ? "/" : "", name ? name : "");
    wt_arm(w);
}

static void wt_inotify_closed_cb(uv_handle_t *h)
{
    wt_inotify_t *ino = h->data;
    wt_t *w = ino->w;
    close(ino->fd);
    free(ino);
    moat_service_handle_closed(&w->svc);
}

/* Forget the watched set (the descriptor's watches go with it). */
static void wt_forget(wt_t *w)
{
    free(w->entries);
    w->entries = NULL;
    w->n_entries = w->n_dirs = 0;
    moat_watch_plan_free(&w->plan);
}

static void wt_stop_watching(wt_t *w)
{
    if (w->timer_open)
        uv_timer_stop(&w->timer);
    w->burst_start = 0;
    if (!w->ino)
        return;
    wt_forget(w);
    uv_close((uv_handle_t *)&w->ino->poll, wt_inotify_closed_cb);
    w->ino = NULL;
}

static void wt_events(wt_t *w, const char *buf, size_t len)
{
    for (size_t off = 0; off + sizeof(struct inotify_event) <= len;) {
        const struct inotify_event *e = (const struct inotify_event *)(const void *)(buf + off);
        off += sizeof *e + e->len;
        if (e->mask & IN_Q_OVERFLOW) {
            wt_changed(w, "(inotify queue overflow)", NULL);
            continue;
        }
        /* The directory itself deleted or moved: its watch is gone (the
         * next plan watches whatever is there then). */
        const char *name = e->len ? e->name : NULL;
        const wt_entry_t *m = wt_match(w, e->wd, name);
        if (m)
            wt_changed(w, m->item->dir, name);
    }
}

static void wt_poll_cb(uv_poll_t *p, int status, int events)
{
    (void)events;
    wt_inotify_t *ino = p->data;
    wt_t *w = ino->w;
    if (status < 0) {
        log_warn("config watch: %s; changes are no longer seen", uv_strerror(status));
        uv_poll_stop(p);
        return;
    }
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(ino->fd, buf, sizeof buf);
        if (n <= 0)
            return; /* EAGAIN: all read */
        wt_events(w, buf, (size_t)n);
    }
}

static int wt_open_inotify(wt_t *w)
{
    wt_inotify_t *ino = calloc(1, sizeof *ino);
    if (!ino)
        return -ENOMEM;
    ino->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ino->fd < 0) {
        int rc = -errno;
        free(ino);
        return rc;
    }
    int rc = uv_poll_init(w->loop, &ino->poll, ino->fd);
    if (rc != 0) {
        close(ino->fd);
        free(ino);
        return rc;
    }
    ino->w = w;
    ino->poll.data = ino;
    moat_service_handle_open(&w->svc);
    w->ino = ino;
    rc = uv_poll_start(&ino->poll, UV_READABLE, wt_poll_cb);
    if (rc != 0)
        wt_stop_watching(w);
    return rc;
}

/* Watch what plan names, then drop the watches of the old set it does not
 * share. 0, or a negative errno (what could be watched is). */
static int wt_watch_plan(wt_t *w, moat_watch_plan_t *plan)
{
    wt_entry_t *entries = calloc(plan->n ? plan->n : 1, sizeof *entries);
    if (!entries)
        return -ENOMEM;
    int first = 0;
    size_t n = 0;
    for (size_t i = 0; i < plan->n; i++) {
        /* Repeats of one directory cost a lookup in the kernel each, and
         * return the same watch. */
        int wd = -1;
        for (size_t j = n; j-- > 0 && wd < 0 && n - j < 64;)
            if (strcmp(entries[j].item->dir, plan->items[i].dir) == 0)
                wd = entries[j].wd;
        if (wd < 0)
            wd = inotify_add_watch(w->ino->fd, plan->items[i].dir, WT_MASK);
        if (wd < 0) {
            if (first == 0) {
                first = -errno;
                log_warn("config watch: cannot watch %s: %s", plan->items[i].dir, strerror(-first));
            }
            continue;
        }
        entries[n++] = (wt_entry_t){wd, &plan->items[i]};
    }
    if (n > 1)
        qsort(entries, n, sizeof *entries, wt_entry_cmp);
    for (size_t i = 0; i < w->n_entries; i++) {
        int wd = w->entries[i].wd;
        if ((i == 0 || w->entries[i - 1].wd != wd) && !wt_has_wd(entries, n, wd))
            inotify_rm_watch(w->ino->fd, wd);
    }
    wt_forget(w);
    w->plan = *plan;
    *plan = (moat_watch_plan_t){0};
    w->entries = entries;
    w->n_entries = n;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || entries[i - 1].wd != entries[i].wd)
            w->n_dirs++;
    return first;
}

/* Follow cfg: watch its files, or stop watching. */
static int wt_apply(wt_t *w, const cfg_t *cfg)
{
    if (!cfg->reload.watch || !moat_daemon_config_path(w->d) || cfg->n_files == 0) {
        if (w->ino)
            log_info("config watch: off");
        wt_stop_watching(w);
        return 0;
    }
    bool was = w->ino != NULL;
    int rc = 0;
    if (!w->ino && (rc = wt_open_inotify(w)) != 0) {
        log_error("config watch: inotify: %s", strerror(rc < 0 ? -rc : rc));
        return rc;
    }
    moat_watch_plan_t plan;
    rc = moat_watch_plan(cfg, &plan);
    if (rc == 0)
        rc = wt_watch_plan(w, &plan);
    else
        log_error("config watch: %s; watching what was watched before", strerror(-rc));
    moat_watch_plan_free(&plan);
    if (!was)
        log_info("config watch: on, %zu director%s for %zu file%s (reload %u ms after the last "
                 "change)",
                 w->n_dirs, w->n_dirs == 1 ? "y" : "ies", cfg->n_files,
                 cfg->n_files == 1 ? "" : "s", (unsigned)MOAT_WATCH_QUIET_MS);
    else
        log_debug("config watch: %zu directories for %zu files", w->n_dirs, cfg->n_files);
    return rc;
}

static void wt_reload_cb(moat_reload_req_t *req, const moat_reload_result_t *res)
{
    wt_t *w = req->data;
    w->asked = false;
    if (res->rc == -ESHUTDOWN || moat_service_stopping(&w->svc))
        return;
    /* Applied: ops->reload followed the new config already. Rejected: the
     * links may point elsewhere now (a swapped `..data`), so look again. */
    if (res->rc != 0)
        wt_apply(w, moat_daemon_gen(w->d)->cfg);
    if (w->again && w->ino) {
        w->again = false;
        wt_arm(w);
    }
}

static void wt_timer_cb(uv_timer_t *t)
{
    wt_t *w = t->data;
    w->burst_start = 0;
    if (w->asked) {
        w->again = true; /* the running reload may have read the file before */
        return;
    }
    log_info("config watch: %s changed; reloading", w->changed);
    w->req.data = w;
    w->asked = true;
    if (moat_daemon_reload_request(w->d, &w->req, wt_reload_cb) != 0)
        w->asked = false;
}

static void wt_timer_closed_cb(uv_handle_t *h)
{
    wt_t *w = h->data;
    w->timer_open = false;
    moat_service_handle_closed(&w->svc);
}

/* ---- service ops ------------------------------------------------------------------------------
 */

static int wt_start(moat_service_t *svc, uv_loop_t *loop, moat_gen_t *gen)
{
    wt_t *w = wt_of(svc);
    w->loop = loop;
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    w->timer_open = true;
    moat_service_handle_open(svc);
    int rc = wt_apply(w, gen->cfg);
    if (rc != 0 && w->ino == NULL) {
        /* Asked for and impossible: say so at start, not by silence. */
        uv_close((uv_handle_t *)&w->timer, wt_timer_closed_cb);
        return rc;
    }
    return 0;
}

static int wt_reload(moat_service_t *svc, moat_gen_t *gen)
{
    return wt_apply(wt_of(svc), gen->cfg);
}

static void wt_halt(wt_t *w)
{
    if (w->asked) {
        moat_daemon_reload_cancel(w->d, &w->req);
        w->asked = false;
    }
    wt_stop_watching(w);
}

static void wt_drain(moat_service_t *svc)
{
    wt_halt(wt_of(svc));
}

static void wt_close(moat_service_t *svc)
{
    wt_t *w = wt_of(svc);
    wt_halt(w);
    if (w->timer_open && !uv_is_closing((uv_handle_t *)&w->timer))
        uv_close((uv_handle_t *)&w->timer, wt_timer_closed_cb);
}

static void wt_free(moat_service_t *svc)
{
    if (!svc)
        return;
    wt_t *w = wt_of(svc);
    wt_forget(w);
    free(w);
}

static const moat_service_ops_t wt_ops = MOAT_SERVICE_OPS(wt, "watch");

int moat_watch_create(moat_daemon_t *d, moat_service_t **out)
{
    *out = NULL;
    wt_t *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    moat_service_init(&w->svc, &wt_ops, w);
    w->d = d;
    *out = &w->svc;
    return 0;
}
