/* core/watch.h: reload when the config changes (`reload: {watch: true}`).
 *
 * A service (core/service.h) that watches, with inotify, the directories
 * holding the config file, every included file and every directory an
 * `include` pattern looked in, and asks the daemon for a reload
 * (moat_daemon_reload_request) once the changes have settled: no change
 * for MOAT_WATCH_QUIET_MS, or MOAT_WATCH_MAX_MS after the first one of a
 * burst of changes that does not stop. A burst of writes gives one reload.
 *
 * Directories, not files, are watched, so a file replaced by a rename
 * (editors, `..data` swaps of Kubernetes ConfigMap volumes) is seen as a
 * change of its name. Symbolic links are followed: for `moat.yaml ->
 * ..data/moat.yaml` and `..data -> ..2026_12_06_...` the directory of each
 * link and of its target is watched, for the names along the chain. After
 * every reload, applied or rejected, the watched set is worked out again
 * from the config that serves (and the links as they are then), so a
 * rejected file's fix is seen too.
 */
#ifndef MOAT_CORE_WATCH_H
#define MOAT_CORE_WATCH_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "core/daemon.h"

/* Quiet time after the last change before the reload. */
#define MOAT_WATCH_QUIET_MS 250
/* Longest wait from the first change of a burst to its reload. */
#define MOAT_WATCH_MAX_MS 2000

/* The watch service of daemon d: watches while the serving config says
 * `reload: {watch: true}` and was read from a file. Freed by the daemon
 * (ops->free). 0 or -ENOMEM. */
int moat_watch_create(moat_daemon_t *d, moat_service_t **out);

/* One thing watched: entries of dir named name (glob: names matching the
 * fnmatch pattern name, FNM_PERIOD). */
typedef struct moat_watch_item {
    char *dir;
    char *name;
    bool glob;
} moat_watch_item_t;

/* What to watch for a config. */
typedef struct moat_watch_plan {
    moat_watch_item_t *items; /* owned; may repeat */
    size_t n, cap;
} moat_watch_plan_t;

/* The items for cfg's files and glob dirs as the file system is now:
 * symlink chains followed, a missing directory replaced by its nearest
 * existing ancestor. *out is set first; 0 or -ENOMEM. */
int moat_watch_plan(const cfg_t *cfg, moat_watch_plan_t *out);

/* Free what a plan holds (not p itself). */
void moat_watch_plan_free(moat_watch_plan_t *p);

#endif
