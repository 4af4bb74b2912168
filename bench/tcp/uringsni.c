/* bench/tcp/uringsni.c: how far io_uring takes an SNI proxy's connection cost
 * on this machine (issue 4: CPU per connection ≤ 0.75x the best peer's).
 *
 *   uringsni LISTEN_IP PORT NAME DEST_IP DEST_PORT
 *
 * Accepts on LISTEN_IP:PORT, reads the ClientHello (consumed, not peeked),
 * parses it with moat's own filter_tls_hello_parse(), closes unless the SNI
 * is NAME, dials DEST, sends the hello, then copies both ways with half-close
 * kept (EOF one way: shutdown(SHUT_WR) the other; both: close). moat's tls
 * listener does the same work per allowed connection with a warm dial cache,
 * less the policy and the log. No timeouts, no limits, no splice.
 *
 * Every socket operation but shutdown (multishot accept, recv, socket,
 * connect, send, close) is an io_uring request; the loop enters the kernel
 * once per batch (io_uring_submit_and_wait), not once per operation. With
 * DEFER_TASKRUN completions are only run there. Two choices measured with
 * perf: shutdown is a plain call (IORING_OP_SHUTDOWN always runs on an
 * io-wq thread: 5 % of the core), and connections are malloc'd, not
 * calloc'd (zeroing their buffers was 10 %). This is a measuring tool,
 * not a design for moat: liburing is not in moat's stack (docs/DECISIONS.md).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "benchsock.h"
#include "filter/tls_hello.h"

#define US_BUF     16384
#define US_ENTRIES 4096

enum us_op {
    US_ACCEPT = 1,
    US_HELLO,
    US_SOCKET,
    US_CONNECT,
    US_SEND_HELLO,
    US_RECV_UP, /* client → server */
    US_SEND_UP,
    US_RECV_DOWN, /* server → client */
    US_SEND_DOWN,
    US_CLOSE,
};

typedef struct us_dir {
    uint8_t buf[US_BUF];
    size_t len, off; /* bytes in buf, bytes of them sent */
    int eof;
} us_dir_t;

typedef struct us_conn {
    int cfd, sfd;
    int pending; /* requests in flight naming this connection */
    int dead;    /* an error: no new requests, close when pending is 0 */
    int closing; /* close requests issued */
    us_dir_t up, down;
} us_conn_t;

static struct io_uring us_ring;
static int us_lfd;
static const char *us_name;
static struct sockaddr_in us_dest;

static void us_die(const char *what, int err)
{
    fprintf(stderr, "uringsni: %s: %s\n", what, strerror(err));
    exit(2);
}

static struct io_uring_sqe *us_sqe(us_conn_t *c, enum us_op op)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&us_ring);
    if (!sqe) { /* the queue is full: hand it to the kernel and retry */
        io_uring_submit(&us_ring);
        sqe = io_uring_get_sqe(&us_ring);
        if (!sqe)
            us_die("io_uring_get_sqe", EBUSY);
    }
    /* user-space pointers fit in 56 bits: the low byte names the operation */
    io_uring_sqe_set_data64(sqe, ((uint64_t)(uintptr_t)c << 8) | (uint64_t)op);
    if (c)
        c->pending++;
    return sqe;
}

static void us_arm_accept(void)
{
    io_uring_prep_multishot_accept(us_sqe(NULL, US_ACCEPT), us_lfd, NULL, NULL, 0);
}

static void us_close_conn(us_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    io_uring_prep_close(us_sqe(c, US_CLOSE), c->cfd);
    if (c->sfd >= 0)
        io_uring_prep_close(us_sqe(c, US_CLOSE), c->sfd);
}

/* An error on either side: wake whatever is pending (rare path, plain calls),
 * close when the last request has come back. */
static void us_fail(us_conn_t *c)
{
    if (!c->dead) {
        c->dead = 1;
        shutdown(c->cfd, SHUT_RDWR);
        if (c->sfd >= 0)
            shutdown(c->sfd, SHUT_RDWR);
    }
}

static void us_recv(us_conn_t *c, int up)
{
    us_dir_t *d = up ? &c->up : &c->down;
    d->len = d->off = 0;
    io_uring_prep_recv(us_sqe(c, up ? US_RECV_UP : US_RECV_DOWN), up ? c->cfd : c->sfd, d->buf,
                       US_BUF, 0);
}

static void us_send(us_conn_t *c, int up)
{
    us_dir_t *d = up ? &c->up : &c->down;
    io_uring_prep_send(us_sqe(c, up ? US_SEND_UP : US_SEND_DOWN), up ? c->sfd : c->cfd,
                       d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
}

static void us_eof(us_conn_t *c, int up)
{
    us_dir_t *d = up ? &c->up : &c->down;
    d->eof = 1;
    /* The other way still open: pass the FIN on with a plain call
     * (IORING_OP_SHUTDOWN always goes to an io-wq thread). Both ways done:
     * close() sends the last FIN. */
    if (c->up.eof && c->down.eof)
        us_close_conn(c);
    else
        shutdown(up ? c->sfd : c->cfd, SHUT_WR);
}

static void us_on_hello(us_conn_t *c, int res)
{
    if (res <= 0) {
        us_close_conn(c);
        return;
    }
    c->up.len += (size_t)res;
    filter_tls_hello_t h;
    filter_tls_result_t r = filter_tls_hello_parse(c->up.buf, c->up.len, US_BUF, &h);
    if (r == FILTER_TLS_NEED_MORE) {
        io_uring_prep_recv(us_sqe(c, US_HELLO), c->cfd, c->up.buf + c->up.len, US_BUF - c->up.len,
                           0);
        return;
    }
    if (r != FILTER_TLS_SNI || strcmp(h.sni, us_name) != 0) {
        us_close_conn(c);
        return;
    }
    io_uring_prep_socket(us_sqe(c, US_SOCKET), AF_INET, SOCK_STREAM, 0, 0);
}

static void us_on_socket(us_conn_t *c, int res)
{
    if (res < 0) {
        us_close_conn(c);
        return;
    }
    c->sfd = res;
    /* connect → send the hello → read the answer, one chain; the client's
     * next bytes are read meanwhile. */
    struct io_uring_sqe *sqe = us_sqe(c, US_CONNECT);
    io_uring_prep_connect(sqe, c->sfd, (struct sockaddr *)&us_dest, sizeof us_dest);
    sqe->flags |= IOSQE_IO_LINK;
    sqe = us_sqe(c, US_SEND_HELLO);
    io_uring_prep_send(sqe, c->sfd, c->up.buf, c->up.len, MSG_NOSIGNAL);
    sqe->flags |= IOSQE_IO_LINK;
    us_recv(c, 0);
}

static void us_on_event(us_conn_t *c, enum us_op op, int res, unsigned flags)
{
    switch (op) {
    case US_ACCEPT:
        if (!(flags & IORING_CQE_F_MORE))
            us_arm_accept();
        if (res < 0)
            return;
        c = malloc(sizeof *c); /* not calloc: zeroing 32 KiB cost 10 % of the core */
        if (!c) {
            close(res);
            return;
        }
        c->cfd = res;
        c->sfd = -1;
        c->pending = c->dead = c->closing = 0;
        c->up.len = c->up.off = c->down.len = c->down.off = 0;
        c->up.eof = c->down.eof = 0;
        io_uring_prep_recv(us_sqe(c, US_HELLO), c->cfd, c->up.buf, US_BUF, 0);
        return;
    case US_HELLO:
        us_on_hello(c, res);
        break;
    case US_SOCKET:
        us_on_socket(c, res);
        break;
    case US_CONNECT:
        if (res < 0)
            us_fail(c);
        break;
    case US_SEND_HELLO:
        if (res < 0 || (size_t)res != c->up.len)
            us_fail(c); /* a short first send on a fresh socket: not expected */
        else if (!c->dead)
            us_recv(c, 1);
        break;
    case US_RECV_UP:
    case US_RECV_DOWN: {
        int up = op == US_RECV_UP;
        if (c->dead || res < 0)
            us_fail(c);
        else if (res == 0)
            us_eof(c, up);
        else {
            (up ? &c->up : &c->down)->len = (size_t)res;
            us_send(c, up);
        }
        break;
    }
    case US_SEND_UP:
    case US_SEND_DOWN: {
        int up = op == US_SEND_UP;
        us_dir_t *d = up ? &c->up : &c->down;
        if (c->dead || res <= 0) {
            us_fail(c);
            break;
        }
        d->off += (size_t)res;
        if (d->off < d->len)
            us_send(c, up);
        else
            us_recv(c, up);
        break;
    }
    case US_CLOSE:
        break;
    }
    c->pending--;
    if (c->dead && !c->closing && c->pending == 0)
        us_close_conn(c);
    else if (c->closing && c->pending == 0)
        free(c);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: uringsni LISTEN_IP PORT NAME DEST_IP DEST_PORT\n");
        return 2;
    }
    us_name = argv[3];
    struct rlimit rl = {65536, 65536};
    setrlimit(RLIMIT_NOFILE, &rl);

    struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    us_dest.sin_family = AF_INET;
    us_dest.sin_port = htons((uint16_t)atoi(argv[5]));
    if (inet_pton(AF_INET, argv[1], &la.sin_addr) != 1 ||
        inet_pton(AF_INET, argv[4], &us_dest.sin_addr) != 1)
        us_die("address", EINVAL);
    us_lfd = bench_listen(&la, 0);
    int one = 1;
    if (us_lfd < 0 ||
        setsockopt(us_lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) /* inherited */
        us_die("listen", errno);

    struct io_uring_params p = {
        .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE,
        .cq_entries = 4 * US_ENTRIES,
    };
    int err = io_uring_queue_init_params(US_ENTRIES, &us_ring, &p);
    if (err < 0)
        us_die("io_uring_queue_init", -err);
    us_arm_accept();
    for (;;) {
        err = io_uring_submit_and_wait(&us_ring, 1);
        if (err < 0 && err != -EINTR)
            us_die("io_uring_submit_and_wait", -err);
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&us_ring, head, cqe)
        {
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            us_on_event((us_conn_t *)(uintptr_t)(ud >> 8), (enum us_op)(ud & 0xff), cqe->res,
                        cqe->flags);
            n++;
        }
        io_uring_cq_advance(&us_ring, n);
    }
}
