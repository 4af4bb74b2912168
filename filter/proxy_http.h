/* filter/proxy_http.h: the protocol of the HTTP proxy listener
 * (`proxy.connect`, SPEC §2.6): read a proxy request head, rewrite a
 * forwarded one for the origin server, and format the proxy's own answers.
 *
 * A proxy request is one of (RFC 9112 §3.2):
 *   CONNECT  `CONNECT host:port HTTP/1.1` (authority-form): a tunnel. The port
 *            is required; host is a name, an IPv4 literal or `[IPv6]`.
 *   FORWARD  `GET http://host[:port]/path?q HTTP/1.1` (absolute-form, scheme
 *            http only): one request forwarded to host, port 80 by default.
 * Anything else is BAD: origin-form (`GET / HTTP/1.1`, a request for the
 * proxy itself), another scheme (`https://`, `ftp://`), userinfo in the URI
 * (RFC 9110 §4.2.4), a port of 0, and every head http_head.h finds without a
 * usable host (no host, more than one Host, a malformed host or port, a
 * backslash in the URI's authority).
 *
 * Like the other readers, the proxy peeks and calls filter_pxhttp_parse()
 * with every byte received so far until the answer is not NEED_MORE; no
 * state is kept between calls. The grammar, the limits (max_head) and the
 * host are http_head.h's; this module adds what only a proxy needs.
 *
 * What the proxy does with each answer:
 *   OK                 authenticate, decide (SPEC §2.3), then answer or forward
 *   BAD                FILTER_PXHTTP_ANSWER_400
 *   NOT_HTTP, TOO_BIG  reset
 *   NEED_MORE          peek again (until peek_timeout)
 *
 * Credentials. A `Proxy-Authorization: Basic BASE64(user:password)` field is
 * decoded (RFC 7617 §2) into the request's fixed buffers; the user is
 * everything before the first ':', the password everything after (it may
 * hold ':'). The request struct therefore holds a secret: the caller wipes it
 * when done and never logs it. No detail string ever holds credential bytes.
 * auth_bad is set when the field is there but unusable: another scheme than
 * Basic, bad base64 (RFC 4648 §4, padding required, no bits left over), no
 * ':', a control byte in the user or password (RFC 7617 §2), a user or
 * password over FILTER_PXHTTP_CRED_MAX bytes, or more than one
 * Proxy-Authorization field. An empty user or password is not auth_bad: it
 * simply names nobody.
 */
#ifndef MOAT_FILTER_PROXY_HTTP_H
#define MOAT_FILTER_PROXY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter/addr.h"
#include "filter/http_head.h"

/* Longest user and longest password kept (each, without the NUL). */
#define FILTER_PXHTTP_CRED_MAX 255

/* A buffer of this size always holds filter_pxhttp_format()'s output. */
#define FILTER_PXHTTP_ANSWER_MAX 640

/* Bytes the rewrite can add to a head: a Host field naming the URI's
 * authority (at most the head's own target), `Connection: close` and the CR
 * of every line that ended in a bare LF. A buffer of 2 * head_len + this
 * always holds filter_pxhttp_rewrite()'s output. */
#define FILTER_PXHTTP_REWRITE_EXTRA 64

typedef enum filter_pxhttp_result {
    FILTER_PXHTTP_OK = 0,        /* a complete CONNECT or FORWARD request head */
    FILTER_PXHTTP_NEED_MORE = 1, /* not complete yet: call again with more bytes */
    FILTER_PXHTTP_TOO_BIG = 2,   /* no end of head within max_head bytes: reset */
    FILTER_PXHTTP_NOT_HTTP = 3,  /* not an HTTP/1.x request head: reset */
    FILTER_PXHTTP_BAD = 4,       /* a complete head that is no proxy request: 400 */
} filter_pxhttp_result_t;

typedef enum filter_pxhttp_kind {
    FILTER_PXHTTP_NONE = 0,    /* any answer but OK */
    FILTER_PXHTTP_CONNECT = 1, /* a tunnel to host:port */
    FILTER_PXHTTP_FORWARD = 2, /* one request forwarded to host:port */
} filter_pxhttp_kind_t;

typedef struct filter_pxhttp_req {
    filter_pxhttp_kind_t kind;
    /* The host, as http_head.h gives it: port and brackets stripped, raw
     * (the caller normalises it), NUL-terminated. */
    char host[FILTER_HTTP_NAME_MAX + 1];
    size_t host_len;
    bool is_addr;       /* host is an IP literal, parsed into addr */
    filter_addr_t addr; /* valid when is_addr */
    uint16_t port;      /* never 0 on OK: CONNECT's own, FORWARD's or 80 */
    /* A Host field names another host than the target (ports and case
     * aside): domain fronting, refused as `host-conflict` by SPEC §2.3 step
     * 2. The rewrite never forwards that Host field. */
    bool host_conflict;
    /* Complete head (OK and BAD): offset just past the empty line that ends
     * it. Bytes after it (a body, a ClientHello sent early) are not the
     * head's. */
    size_t head_len;
    /* FORWARD: where in buf the URI's authority (`host[:port]`) and its
     * path, query and fragment are; the rewrite reads them. */
    size_t auth_off, auth_len;
    size_t path_off, path_len;
    /* Proxy-Authorization (see the top of this file). */
    bool has_auth; /* the field is there */
    bool auth_bad; /* ... and unusable; user and password are then empty */
    char user[FILTER_PXHTTP_CRED_MAX + 1];
    size_t user_len;
    char password[FILTER_PXHTTP_CRED_MAX + 1];
    size_t password_len;
    /* http_head.h's answer for the head: FILTER_HTTP_NAME on OK; on BAD the
     * reason to log (filter_http_reason()), FILTER_HTTP_BAD_NAME for the
     * refusals this module adds. */
    filter_http_result_t head;
    /* Static one-line reason, for logs and tests; never credential bytes.
     * Never NULL. */
    const char *detail;
} filter_pxhttp_req_t;

/* Parse the bytes received so far on a proxy connection (see above). out is
 * always filled in (zeroed first). Pure: no I/O, no allocation. */
filter_pxhttp_result_t filter_pxhttp_parse(const uint8_t *buf, size_t len, size_t max_head,
                                           filter_pxhttp_req_t *out);

/* Write the head of a FORWARD request (req from filter_pxhttp_parse() on the
 * same buf) as the origin server must see it, into out:
 *   - the request line in origin form: `GET /path?q HTTP/1.1` (an empty path
 *     becomes `/`, a fragment is dropped; RFC 9112 §3.2.1);
 *   - every field named `Proxy` or `Proxy-*` dropped (Proxy-Authorization,
 *     Proxy-Connection, ...; `Proxy` too, the httpoxy CGI variable);
 *   - `Connection` and `Keep-Alive` dropped and `Connection: close` added
 *     last: one request per proxy connection. The options Connection names
 *     are not dropped (RFC 9110 §7.6.1 would): the guest could otherwise
 *     strip Content-Length or Transfer-Encoding and so change where the
 *     origin sees the body end;
 *   - the Host field replaced by, or when missing added (first) as, the
 *     URI's authority (RFC 9112 §3.2.2);
 *   - every other field byte for byte, in order; every line ends in CRLF
 *     (a bare LF becomes CRLF, so the origin splits lines where moat did).
 * Only the head is written, not the body after it. Returns the length, or
 * -ENOSPC when cap is too small (2 * head_len + FILTER_PXHTTP_REWRITE_EXTRA
 * always suffices), or -EINVAL when req is not a FORWARD request of buf. */
int filter_pxhttp_rewrite(const uint8_t *buf, size_t len, const filter_pxhttp_req_t *req,
                          uint8_t *out, size_t cap);

/* The proxy's own answers (SPEC §2.6). */
typedef enum filter_pxhttp_answer {
    FILTER_PXHTTP_ANSWER_200 = 0,         /* 200 Connection established (CONNECT) */
    FILTER_PXHTTP_ANSWER_400 = 1,         /* 400 Bad Request */
    FILTER_PXHTTP_ANSWER_403 = 2,         /* 403, X-Proxy-Error: blocked-by-allowlist */
    FILTER_PXHTTP_ANSWER_407 = 3,         /* 407, Proxy-Authenticate: Basic realm="moat" */
    FILTER_PXHTTP_ANSWER_502_DNS = 4,     /* 502, X-Proxy-Error: dns-failure */
    FILTER_PXHTTP_ANSWER_502_DIAL = 5,    /* 502, X-Proxy-Error: dial-failed */
    FILTER_PXHTTP_ANSWER_504_TIMEOUT = 6, /* 504, X-Proxy-Error: connect-timeout */
} filter_pxhttp_answer_t;

/* Write an answer into buf. The 200 is the status line and the empty line
 * only (RFC 9110 §9.3.6: no Content-Length on a 2xx to CONNECT); every other
 * answer has Content-Type text/plain, Content-Length, `Connection: close`,
 * its own field (see the enum) and a one-line body, naming the host for
 * 403, 502 and 504. The 403 is byte for byte filter_http_format_403()'s. The
 * host is sanitised as there (bytes outside [A-Za-z0-9._:[]-] become '?',
 * cut at FILTER_HTTP_NAME_MAX bytes; NULL or empty reads "(none)"). Returns
 * the length written (a NUL follows it), or -ENOSPC when cap is too small
 * (FILTER_PXHTTP_ANSWER_MAX always suffices), or -EINVAL for an unknown
 * answer. */
int filter_pxhttp_format(filter_pxhttp_answer_t answer, const char *host, size_t host_len,
                         char *buf, size_t cap);

#endif
