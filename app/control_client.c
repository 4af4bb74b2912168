/* app/control_client.c: `moat reload --control PATH`, the blocking client of
 * the control socket (see control.h). */
#include "app/control.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "app/cli.h"

#define CTL_WAIT_MS 120000 /* how long `moat reload` waits for the answer */

int ctl_sockaddr(const char *path, struct sockaddr_un *sun)
{
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sun->sun_path)
        return -ENAMETOOLONG;
    memcpy(sun->sun_path, path, strlen(path));
    return 0;
}

static long ctl_ms_left(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (deadline->tv_sec - now.tv_sec) * 1000L + (deadline->tv_nsec - now.tv_nsec) / 1000000L;
}

/* Connect to path and send the request. Returns MOAT_EXIT_OK with *fd set,
 * or the exit status after saying what failed on err. */
static int ctl_client_ask(const char *path, FILE *err, int *fd)
{
    *fd = -1;
    struct sockaddr_un sun;
    if (ctl_sockaddr(path, &sun) != 0) {
        fprintf(err, "moat reload: control socket path %s is too long\n", path);
        return MOAT_EXIT_CONFIG;
    }
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        fprintf(err, "moat reload: socket: %s\n", strerror(errno));
        return MOAT_EXIT_RUNTIME;
    }
    if (connect(s, (const struct sockaddr *)&sun, sizeof sun) != 0) {
        fprintf(err, "moat reload: no moat answers on %s: %s\n", path, strerror(errno));
        close(s);
        return MOAT_EXIT_RUNTIME;
    }
    static const char req[] = "reload\n";
    if (send(s, req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof req - 1)) {
        if (errno == EPIPE || errno == ECONNRESET) /* e.g. over its client cap */
            fprintf(err, "moat reload: moat on %s closed the connection without an answer\n", path);
        else
            fprintf(err, "moat reload: sending to %s: %s\n", path, strerror(errno));
        close(s);
        return MOAT_EXIT_RUNTIME;
    }
    *fd = s;
    return MOAT_EXIT_OK;
}

/* Make room for 4 KiB more (and a NUL) in *buf. 0, or -1 after saying why. */
static int ctl_client_grow(char **buf, size_t len, size_t *cap, const char *path, FILE *err)
{
    if (len + 4096 + 1 <= *cap)
        return 0;
    if (*cap >= CTL_REPLY_MAX) {
        fprintf(err, "moat reload: answer from %s too long\n", path);
        return -1;
    }
    size_t ncap = *cap ? *cap * 2 : 8192;
    char *n = realloc(*buf, ncap);
    if (!n) {
        fprintf(err, "moat reload: out of memory\n");
        return -1;
    }
    *buf = n;
    *cap = ncap;
    return 0;
}

/* Read the whole answer from fd (it ends when the daemon closes), NUL
 * terminated, into *out (owned by the caller). 0, or -1 after saying why on
 * err (*out may still need freeing). */
static int ctl_client_read(int fd, const char *path, FILE *err, char **out)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += CTL_WAIT_MS / 1000;
    *out = NULL;
    for (;;) {
        long left = ctl_ms_left(&deadline);
        if (left <= 0) {
            fprintf(err, "moat reload: no answer from %s within %d s\n", path, CTL_WAIT_MS / 1000);
            goto fail;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fprintf(err, "moat reload: poll: %s\n", strerror(errno));
            goto fail;
        }
        if (r == 0)
            continue;
        if (ctl_client_grow(&buf, len, &cap, path, err) != 0)
            goto fail;
        ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno == ECONNRESET && len == 0)
            break; /* closed without an answer: said below */
        if (k < 0) {
            fprintf(err, "moat reload: reading from %s: %s\n", path, strerror(errno));
            goto fail;
        }
        if (k == 0)
            break;
        len += (size_t)k;
    }
    if (!buf || len == 0) {
        fprintf(err, "moat reload: moat on %s closed the connection without an answer\n", path);
        goto fail;
    }
    buf[len] = '\0';
    *out = buf;
    return 0;
fail:
    free(buf);
    return -1;
}

/* One line of the answer: print what it says. Returns true when it was the
 * final line, with *status set. */
static bool ctl_client_line(const char *line, const char *path, FILE *out, FILE *err, int *status)
{
    unsigned long long gen;
    size_t parts;
    if (strncmp(line, "error ", 6) == 0) {
        fprintf(err, "%s\n", line + 6);
        return false;
    }
    if (sscanf(line, "ok %llu", &gen) == 1) {
        fprintf(out, "reloaded: generation %llu\n", gen);
        *status = MOAT_EXIT_OK;
    } else if (sscanf(line, "partial %llu %zu", &gen, &parts) == 2) {
        fprintf(out, "reloaded: generation %llu\n", gen);
        fprintf(err,
                "moat reload: %zu service%s applied the new config only in part "
                "(e.g. a new listen address in use); see moat's log\n",
                parts, parts == 1 ? "" : "s");
        *status = MOAT_EXIT_RUNTIME;
    } else if (sscanf(line, "rejected %llu", &gen) == 1) {
        fprintf(err, "moat reload: config rejected; generation %llu keeps serving\n", gen);
        *status = MOAT_EXIT_CONFIG;
    } else if (strncmp(line, "failed ", 7) == 0) {
        fprintf(err, "moat reload: %s\n", line + 7);
        *status = MOAT_EXIT_RUNTIME;
    } else {
        fprintf(err, "moat reload: unexpected answer from %s: %s\n", path, line);
        *status = MOAT_EXIT_RUNTIME;
    }
    return true;
}

/* The answer's lines: "error ..." then one final line. Returns the status. */
static int ctl_client_print(char *buf, const char *path, FILE *out, FILE *err)
{
    int status = MOAT_EXIT_RUNTIME;
    bool final = false;
    for (char *line = buf, *nl; *line && !final; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl)
            break; /* a cut last line: no final verdict */
        *nl = '\0';
        final = ctl_client_line(line, path, out, err, &status);
    }
    if (!final)
        fprintf(err, "moat reload: the answer from %s ended early\n", path);
    return status;
}

int ctl_client_reload(const char *path, FILE *out, FILE *err)
{
    int fd;
    int status = ctl_client_ask(path, err, &fd);
    if (status != MOAT_EXIT_OK)
        return status;
    char *buf;
    status = ctl_client_read(fd, path, err, &buf) == 0 ? ctl_client_print(buf, path, out, err)
                                                       : MOAT_EXIT_RUNTIME;
    free(buf);
    close(fd);
    return status;
}
