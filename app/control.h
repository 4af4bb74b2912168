/* app/control.h: the control socket (`moat --control PATH`, control_server.c)
 * and its blocking client (`moat reload --control PATH`, control_client.c).
 *
 * The daemon listens on a unix stream socket at PATH, mode 0600, created at
 * start and removed on a clean stop. At start an existing PATH is replaced
 * only when it is a socket nobody answers on (left by a moat that was
 * killed); a live daemon there, or a file that is not a socket, is an error.
 *
 * Protocol: one request per connection, one line of at most 64 bytes
 * (`reload\n`) within 5 s of connecting; at most 8 clients at once (more are
 * closed at once). The answer is lines, the last of which says how it ended:
 *
 *   error FILE:LINE:COL: message    one per config error (with `rejected`)
 *   ok GEN                          reloaded; generation GEN serves
 *   partial GEN N                   reloaded, but N services applied it only in
 *                                   part (e.g. a new listen address in use)
 *   rejected GEN                    the file has errors; GEN keeps serving
 *   failed MESSAGE                  no reload happened (stopping, embedded
 *                                   default config, unknown request, ...)
 *
 * then the daemon closes the connection. The answer comes when the reload
 * that read the file after the request has ended (SIGHUP's coalescing).
 */
#ifndef MOAT_APP_CONTROL_H
#define MOAT_APP_CONTROL_H

#include <stdio.h>
#include <sys/un.h>

#include "core/daemon.h"

/* Longest answer the client reads, and the server builds. */
#define CTL_REPLY_MAX (1 << 20)

/* The control service for daemon d on path (copied). Checks path at once:
 * -EADDRINUSE when a daemon answers there, -EEXIST when it is not a socket,
 * -ENAMETOOLONG; each logged. Register it after the services it reloads, so
 * it stops accepting first. Freed by the daemon (ops->free). */
int ctl_server_create(moat_daemon_t *d, const char *path, moat_service_t **out);

/* `moat reload --control PATH`: ask the daemon at path to reload and wait for
 * the outcome. Prints "reloaded: generation N" on out and returns 0; or
 * prints every config error as FILE:LINE:COL: message on err and returns 1;
 * returns 2 when no daemon answers, the reload could not happen, or it was
 * applied only in part (said on err). */
int ctl_client_reload(const char *path, FILE *out, FILE *err);

/* Fill *sun for path: 0, or -ENAMETOOLONG. */
int ctl_sockaddr(const char *path, struct sockaddr_un *sun);

#endif
