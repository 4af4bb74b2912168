/* app/control_server.c: the control socket service (see control.h). */
#include "app/control.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "filter/list.h"
#include "filter/writer.h"
#include "core/log.h"
#include "core/service.h"

#define CTL_LINE_MAX    64   /* a request line, newline included */
#define CTL_MAX_CLIENTS 8    /* past it a new connection is closed at once */
#define CTL_IDLE_MS     5000 /* to send the request line */
#define CTL_BACKLOG     16

typedef struct ctl ctl_t;

typedef struct ctl_client {
    uv_pipe_t pipe;
    uv_timer_t timer;
    ctl_t *ctl;
    moat_list_t node; /* on ctl->clients until freed */
    moat_reload_req_t req;
    uv_write_t wr;
    char *reply;
    char line[CTL_LINE_MAX];
    size_t len;
    char rbuf[256];
    int open_handles; /* of the two below: freed at 0 */
    bool asked;       /* a reload request is with the daemon */
    bool answered;    /* the reply is on its way */
    bool closing;
} ctl_client_t;

struct ctl {
    moat_service_t svc;
    moat_daemon_t *d;
    char *path;
    uv_pipe_t listener;
    bool listening; /* listener handle open */
    bool bound;     /* we created path: remove it on stop */
    dev_t dev;
    ino_t ino;
    /* The service counts (core/service.h) the listener and each client as
     * busy and as a handle alike, until its handles are closed. */
    moat_list_t clients; /* ctl_client_t */
    size_t n_clients;
};

static ctl_t *ctl_of(moat_service_t *svc)
{
    return svc->data;
}

/* ---- the socket file ------------------------------------------------------------ */

/* 0: something accepted a connection at path; else -errno of connect. */
static int ctl_probe(const char *path)
{
    struct sockaddr_un sun;
    int rc = ctl_sockaddr(path, &sun);
    if (rc != 0)
        return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    rc = connect(fd, (const struct sockaddr *)&sun, sizeof sun) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* May path become our socket? 0 when it is free or a stale socket (removed
 * then); an error, logged, when a daemon answers there or it is no socket. */
static int ctl_check_path(const char *path, bool replace)
{
    struct sockaddr_un sun;
    if (ctl_sockaddr(path, &sun) != 0) {
        log_error("control: socket path %s is too long (at most %zu bytes)", path,
                  sizeof sun.sun_path - 1);
        return -ENAMETOOLONG;
    }
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        int rc = -errno;
        log_error("control: %s: %s", path, strerror(-rc));
        return rc;
    }
    if (!S_ISSOCK(st.st_mode)) {
        log_error("control: %s exists and is not a socket; not replacing it", path);
        return -EEXIST;
    }
    int rc = ctl_probe(path);
    if (rc == 0) {
        log_error("control: a moat already answers on %s; stop it or choose another path", path);
        return -EADDRINUSE;
    }
    if (rc != -ECONNREFUSED) {
        log_error("control: %s: %s", path, strerror(-rc));
        return rc;
    }
    if (!replace)
        return 0;
    if (unlink(path) != 0 && errno != ENOENT) {
        rc = -errno;
        log_error("control: cannot remove the stale socket %s: %s", path, strerror(-rc));
        return rc;
    }
    log_info("control: replaced a stale socket at %s (no moat answered there)", path);
    return 0;
}

/* A listening socket at path, mode 0600 from birth (umask around bind: no
 * moment where others may connect). */
static int ctl_listen_fd(const char *path, int *out)
{
    *out = -1;
    struct sockaddr_un sun;
    int rc = ctl_sockaddr(path, &sun);
    if (rc != 0)
        return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    mode_t old = umask(0177);
    rc = bind(fd, (const struct sockaddr *)&sun, sizeof sun) == 0 ? 0 : -errno;
    umask(old);
    if (rc == 0 && chmod(path, 0600) != 0) {
        rc = -errno;
        unlink(path);
    }
    if (rc != 0) {
        close(fd);
        return rc;
    }
    *out = fd;
    return 0;
}

/* Remove path only while it is still the socket we made. */
static void ctl_unlink(ctl_t *c)
{
    struct stat st;
    if (!c->bound)
        return;
    c->bound = false;
    if (lstat(c->path, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino)
        unlink(c->path);
}

/* ---- lifecycle ---------------------------------------------------------------------- */

static void ctl_listener_closed_cb(uv_handle_t *h)
{
    ctl_t *c = h->data;
    c->listening = false;
    moat_service_release(&c->svc);
}

static void ctl_stop_listening(ctl_t *c)
{
    if (c->listening && !uv_is_closing((uv_handle_t *)&c->listener))
        uv_close((uv_handle_t *)&c->listener, ctl_listener_closed_cb);
    ctl_unlink(c);
}

static void ctl_client_closed_cb(uv_handle_t *h)
{
    ctl_client_t *cl = h->data;
    if (--cl->open_handles > 0)
        return;
    ctl_t *c = cl->ctl;
    moat_list_remove(&cl->node);
    c->n_clients--;
    free(cl->reply);
    free(cl);
    moat_service_release(&c->svc);
}

static void ctl_client_close(ctl_client_t *cl)
{
    if (cl->closing)
        return;
    cl->closing = true;
    if (cl->asked) {
        moat_daemon_reload_cancel(cl->ctl->d, &cl->req);
        cl->asked = false;
    }
    uv_close((uv_handle_t *)&cl->timer, ctl_client_closed_cb);
    uv_close((uv_handle_t *)&cl->pipe, ctl_client_closed_cb);
}

/* ---- answering ------------------------------------------------------------------------ */

/* An answer is built through the writer (filter/writer.h) over one buffer
 * of CTL_REPLY_MAX bytes, shrunk to its length before it is sent: an answer
 * that does not fit (or a buffer that could not be had) fails as a whole. */
typedef struct ctl_buf {
    uint8_t *p; /* CTL_REPLY_MAX bytes, or NULL when out of memory */
    filter_wr_t w;
} ctl_buf_t;

static void ctl_buf_init(ctl_buf_t *b)
{
    b->p = malloc(CTL_REPLY_MAX);
    b->w = filter_wr_make(b->p, b->p ? CTL_REPLY_MAX : 0);
}

static void ctl_buf_putc(ctl_buf_t *b, char ch)
{
    filter_wr_u8(&b->w, (uint8_t)ch);
}

/* Text from config files: control bytes would break the line protocol. */
static void ctl_buf_puts(ctl_buf_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20 || ch == 0x7f) {
            ctl_buf_putc(b, '\\');
            ctl_buf_putc(b, 'x');
            ctl_buf_putc(b, hex[ch >> 4]);
            ctl_buf_putc(b, hex[ch & 15]);
        } else {
            ctl_buf_putc(b, (char)ch);
        }
    }
}

/* Protocol text of our own (numbers, keywords, the newline), as is. */
static void ctl_buf_printf(ctl_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void ctl_buf_printf(ctl_buf_t *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    for (int i = 0; i < n && i < (int)sizeof tmp - 1; i++)
        ctl_buf_putc(b, tmp[i]);
}

static void ctl_written_cb(uv_write_t *wr, int status)
{
    (void)status; /* a client gone before reading its answer: nothing to do */
    ctl_client_close(wr->data);
}

/* Send text (the whole answer) and close once it is written. Takes text. */
static void ctl_send(ctl_client_t *cl, char *text, size_t len)
{
    if (cl->closing || cl->answered) {
        free(text);
        return;
    }
    cl->answered = true;
    uv_read_stop((uv_stream_t *)&cl->pipe);
    uv_timer_stop(&cl->timer);
    cl->reply = text;
    cl->wr.data = cl;
    uv_buf_t buf = uv_buf_init(text, (unsigned)len);
    if (uv_write(&cl->wr, (uv_stream_t *)&cl->pipe, &buf, 1, ctl_written_cb) != 0)
        ctl_client_close(cl);
}

static void ctl_send_buf(ctl_client_t *cl, ctl_buf_t *b)
{
    if (!filter_wr_ok(&b->w)) {
        free(b->p);
        static const char oom[] = "failed out of memory\n";
        char *t = strdup(oom);
        if (!t) {
            ctl_client_close(cl);
            return;
        }
        ctl_send(cl, t, sizeof oom - 1);
        return;
    }
    size_t len = filter_wr_pos(&b->w);
    char *text = realloc(b->p, len ? len : 1); /* give back the rest */
    ctl_send(cl, text ? text : (char *)b->p, len);
}

static void ctl_send_failed(ctl_client_t *cl, const char *msg)
{
    ctl_buf_t b;
    ctl_buf_init(&b);
    ctl_buf_puts(&b, "failed ");
    ctl_buf_puts(&b, msg);
    ctl_buf_putc(&b, '\n');
    ctl_send_buf(cl, &b);
}

static void ctl_reload_cb(moat_reload_req_t *req, const moat_reload_result_t *res)
{
    ctl_client_t *cl = req->data;
    cl->asked = false;
    ctl_buf_t b;
    ctl_buf_init(&b);
    if (res->rc == 0 && res->partial == 0) {
        ctl_buf_printf(&b, "ok %" PRIu64 "\n", res->generation);
    } else if (res->rc == 0) {
        ctl_buf_printf(&b, "partial %" PRIu64 " %zu\n", res->generation, res->partial);
    } else if (res->rc == -ESHUTDOWN) {
        ctl_buf_puts(&b, "failed moat is stopping\n");
    } else if (res->diag && res->diag->n > 0) {
        for (size_t i = 0; i < res->diag->n; i++) {
            const cfg_error_t *e = &res->diag->items[i];
            const char *file =
                cfg_error_file(res->diag, e) ? cfg_error_file(res->diag, e) : res->path;
            /* As cfg_diag_print (`moat check`) writes them. */
            ctl_buf_puts(&b, "error ");
            ctl_buf_puts(&b, file);
            if (e->line == 0)
                ctl_buf_puts(&b, ": ");
            else
                ctl_buf_printf(&b, ":%u:%u: ", e->line, e->col);
            ctl_buf_puts(&b, e->msg);
            ctl_buf_putc(&b, '\n');
        }
        ctl_buf_printf(&b, "rejected %" PRIu64 "\n", res->generation);
    } else if (res->rc == -EINVAL || res->rc == -ENOENT || res->rc == -EACCES ||
               res->rc == -EISDIR || res->rc == -ENOTDIR) {
        /* The file itself could not be read: a config error too. */
        ctl_buf_puts(&b, "error ");
        ctl_buf_puts(&b, res->path ? res->path : "<config>");
        ctl_buf_printf(&b, ": %s\n", strerror(-res->rc));
        ctl_buf_printf(&b, "rejected %" PRIu64 "\n", res->generation);
    } else {
        ctl_buf_puts(&b, "failed reload: ");
        ctl_buf_puts(&b, strerror(res->rc < 0 ? -res->rc : res->rc));
        ctl_buf_putc(&b, '\n');
    }
    ctl_send_buf(cl, &b);
}

static void ctl_request(ctl_client_t *cl, const char *line)
{
    if (strcmp(line, "reload") != 0) {
        ctl_send_failed(cl, "unknown request (the only one is \"reload\")");
        return;
    }
    uv_timer_stop(&cl->timer);
    cl->req.data = cl;
    cl->asked = true; /* before: the callback may run inside the call */
    int rc = moat_daemon_reload_request(cl->ctl->d, &cl->req, ctl_reload_cb);
    if (rc == 0)
        return;
    cl->asked = false;
    if (rc == -ENOENT)
        ctl_send_failed(cl, "moat runs on the embedded default config: there is no file to "
                            "reload (start it with -c FILE)");
    else if (rc == -ESHUTDOWN)
        ctl_send_failed(cl, "moat is stopping");
    else
        ctl_send_failed(cl, strerror(-rc));
}

/* ---- reading ----------------------------------------------------------------------------- */

static void ctl_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    ctl_client_t *cl = h->data;
    *buf = uv_buf_init(cl->rbuf, sizeof cl->rbuf);
}

static void ctl_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    ctl_client_t *cl = s->data;
    if (n == UV_EOF && cl->asked) {
        /* Half-closed after its request (socat, nc): still answer it. */
        uv_read_stop(s);
        return;
    }
    if (n < 0) {
        ctl_client_close(cl); /* gone: a reload it asked for still happens */
        return;
    }
    if (cl->asked || cl->answered)
        return; /* one request per connection: the rest is ignored */
    for (ssize_t i = 0; i < n; i++) {
        char ch = buf->base[i];
        if (ch == '\n') {
            if (cl->len > 0 && cl->line[cl->len - 1] == '\r')
                cl->len--;
            cl->line[cl->len] = '\0';
            ctl_request(cl, cl->line);
            return;
        }
        if (cl->len + 1 >= sizeof cl->line) {
            ctl_send_failed(cl, "request line too long");
            return;
        }
        cl->line[cl->len++] = ch;
    }
}

static void ctl_idle_cb(uv_timer_t *t)
{
    ctl_client_t *cl = t->data;
    if (!cl->asked && !cl->answered)
        ctl_send_failed(cl, "no request within 5 s");
}

static void ctl_reject_closed_cb(uv_handle_t *h)
{
    free(h);
}

static void ctl_connection_cb(uv_stream_t *server, int status)
{
    ctl_t *c = server->data;
    if (status != 0 || moat_service_stopping(&c->svc))
        return;
    if (c->n_clients >= CTL_MAX_CLIENTS) {
        uv_pipe_t *p = malloc(sizeof *p);
        if (!p)
            return;
        uv_pipe_init(server->loop, p, 0);
        if (uv_accept(server, (uv_stream_t *)p) != 0)
            log_debug("control: accept failed");
        uv_close((uv_handle_t *)p, ctl_reject_closed_cb);
        return;
    }
    ctl_client_t *cl = calloc(1, sizeof *cl);
    if (!cl)
        return;
    cl->ctl = c;
    uv_pipe_init(server->loop, &cl->pipe, 0);
    uv_timer_init(server->loop, &cl->timer);
    cl->pipe.data = cl->timer.data = cl;
    cl->open_handles = 2;
    moat_list_push(&c->clients, &cl->node);
    c->n_clients++;
    moat_service_hold(&c->svc);
    if (uv_accept(server, (uv_stream_t *)&cl->pipe) != 0 ||
        uv_read_start((uv_stream_t *)&cl->pipe, ctl_alloc_cb, ctl_read_cb) != 0) {
        ctl_client_close(cl);
        return;
    }
    uv_timer_start(&cl->timer, ctl_idle_cb, CTL_IDLE_MS, 0);
}

/* ---- service ops ----------------------------------------------------------------------------- */

static int ctl_start(moat_service_t *svc, uv_loop_t *loop, moat_gen_t *gen)
{
    (void)gen;
    ctl_t *c = ctl_of(svc);
    int rc = ctl_check_path(c->path, true);
    if (rc != 0)
        return rc;
    int fd;
    rc = ctl_listen_fd(c->path, &fd);
    if (rc != 0) {
        log_error("control: listen %s: %s", c->path, strerror(-rc));
        return rc;
    }
    struct stat st;
    if (lstat(c->path, &st) == 0) {
        c->bound = true;
        c->dev = st.st_dev;
        c->ino = st.st_ino;
    }
    uv_pipe_init(loop, &c->listener, 0);
    c->listener.data = c;
    c->listening = true;
    moat_service_hold(&c->svc);
    rc = uv_pipe_open(&c->listener, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&c->listener, CTL_BACKLOG, ctl_connection_cb);
    if (rc != 0) {
        log_error("control: listen %s: %s", c->path, uv_strerror(rc));
        if (uv_fileno((uv_handle_t *)&c->listener, &(uv_os_fd_t){0}) != 0)
            close(fd); /* not handed over to the handle */
        ctl_stop_listening(c);
        return rc;
    }
    log_info("control: listening on %s (moat reload --control %s)", c->path, c->path);
    return 0;
}

static int ctl_reload(moat_service_t *svc, moat_gen_t *gen)
{
    (void)svc;
    (void)gen;
    return 0; /* the path comes from the command line, not the config */
}

/* Stop accepting and remove the socket file at once; a client waiting for a
 * reload gets its answer (the reload ends, as "moat is stopping" if the
 * daemon stops first), idle ones are told moat is stopping. */
static void ctl_drain(moat_service_t *svc)
{
    ctl_t *c = ctl_of(svc);
    ctl_stop_listening(c);
    moat_list_foreach_safe(it, nx, &c->clients)
    {
        ctl_client_t *cl = container_of(it, ctl_client_t, node);
        if (!cl->asked && !cl->answered)
            ctl_send_failed(cl, "moat is stopping");
    }
}

static void ctl_close(moat_service_t *svc)
{
    ctl_t *c = ctl_of(svc);
    ctl_stop_listening(c);
    moat_list_foreach_safe(it, nx, &c->clients)
        ctl_client_close(container_of(it, ctl_client_t, node));
}

static void ctl_free(moat_service_t *svc)
{
    if (!svc)
        return;
    ctl_t *c = ctl_of(svc);
    ctl_unlink(c); /* a start that failed half-way */
    free(c->path);
    free(c);
}

static const moat_service_ops_t ctl_ops = MOAT_SERVICE_OPS(ctl, "control");

int ctl_server_create(moat_daemon_t *d, const char *path, moat_service_t **out)
{
    *out = NULL;
    int rc = ctl_check_path(path, false);
    if (rc != 0)
        return rc;
    ctl_t *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(path))) {
        free(c);
        return -ENOMEM;
    }
    moat_service_init(&c->svc, &ctl_ops, c);
    c->d = d;
    moat_list_init(&c->clients);
    *out = &c->svc;
    return 0;
}
