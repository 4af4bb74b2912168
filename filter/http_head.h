/* filter/http_head.h: read the target host out of an HTTP/1.x request head
 * (SPEC §2.3 step 2) and format the 403 of step 5.
 *
 * Like the ClientHello reader, the proxy peeks and calls
 * filter_http_head_parse() with every byte received so far until the answer
 * is not FILTER_HTTP_NEED_MORE; no state is kept between calls. The bytes are
 * checked as they arrive, so something that cannot be an HTTP/1.x request
 * (a TLS record, binary, HTTP/2's preface) answers NOT_HTTP after its first
 * bad byte, without waiting for a whole head.
 *
 * Where the name comes from (RFC 9112 §3.2):
 *   - absolute-form  `GET http://user@host:8080/x HTTP/1.1`: the URI's host
 *     (after any userinfo), whatever Host says (RFC 9112 §3.2.2);
 *   - authority-form `CONNECT host:443 HTTP/1.1`: that host (CONNECT is
 *     always read this way);
 *   - origin-form `/x` and asterisk-form `*`: the Host header.
 * The port is stripped (and reported); an IPv6 literal comes back without its
 * brackets, with is_addr set; so does an IPv4 literal. Host names are returned
 * raw: the caller normalises them with filter_name_normalize().
 *
 * Strictness: the request line must be `token SP target SP HTTP/1.d`; field
 * names are tokens followed directly by ':' (no whitespace before it, RFC 9112
 * §5.1), no obs-fold (§5.2), no NUL or other control bytes but HTAB in a
 * value. Lines end in CRLF or, as RFC 9112 §2.2 allows, a bare LF; a bare CR
 * is NOT_HTTP.
 *
 * max_head counts every byte from the start of the request up to and
 * including the empty line that ends the head (its CRLF or LF). A head that
 * ends exactly at max_head is accepted; bytes past max_head are never looked
 * at.
 *
 * What the proxy does with each answer (SPEC §2.3 step 5):
 *   NAME                              decide on the name (or address)
 *   NO_NAME, MULTI_HOST, BAD_NAME     blocked after a complete head: the 403
 *   NOT_HTTP, TOO_BIG                 blocked: reset
 *   NEED_MORE                         peek again (until peek_timeout)
 */
#ifndef MOAT_FILTER_HTTP_HEAD_H
#define MOAT_FILTER_HTTP_HEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter/addr.h"

/* Longest host kept; anything longer is BAD_NAME (a DNS name is at most 253). */
#define FILTER_HTTP_NAME_MAX 255

/* Default max_head (SPEC §3 proxy.max_http_head). */
#define FILTER_HTTP_MAX_HEAD_DEFAULT 8192

/* A buffer of this size always holds filter_http_format_403()'s output. */
#define FILTER_HTTP_403_MAX 512

typedef enum filter_http_result {
    FILTER_HTTP_NAME = 0,       /* complete head; out->name holds the host */
    FILTER_HTTP_NEED_MORE = 1,  /* not complete yet: call again with more bytes */
    FILTER_HTTP_NO_NAME = 2,    /* complete head, no Host (or an empty one), no URI host */
    FILTER_HTTP_MULTI_HOST = 3, /* more than one Host field (RFC 9112 §3.2: a 400) */
    FILTER_HTTP_BAD_NAME = 4,   /* the host or port that decides is malformed */
    FILTER_HTTP_NOT_HTTP = 5,   /* not an HTTP/1.x request head */
    FILTER_HTTP_TOO_BIG = 6,    /* no end of head within max_head bytes */
} filter_http_result_t;

typedef struct filter_http_head {
    /* NAME: the host, port and brackets stripped, NUL-terminated, raw. */
    char name[FILTER_HTTP_NAME_MAX + 1];
    size_t name_len;
    bool is_addr;       /* name is an IP literal; parsed into addr */
    filter_addr_t addr; /* valid when is_addr */
    uint16_t port;      /* port given with the host, 0 when none */
    bool from_uri;      /* the name came from the request-target, not Host */
    /* from_uri and a Host field names another host (ports and case aside):
     * the upstream sees both; the proxy may refuse such a request. */
    bool host_conflict;
    bool is_connect; /* method CONNECT */
    /* Complete head (every answer but NEED_MORE, TOO_BIG and NOT_HTTP):
     * offset just past the empty line that ends it. */
    size_t head_len;
    /* Static one-line reason for the answer, for logs and tests. Never NULL. */
    const char *detail;
} filter_http_head_t;

/* Parse the bytes received so far on a connection (see above). out is
 * always filled in (zeroed first). Pure: no I/O, no allocation. */
filter_http_result_t filter_http_head_parse(const uint8_t *buf, size_t len, size_t max_head,
                                            filter_http_head_t *out);

/* The SPEC §4 log reason for a result: "host", "need-more", "no-host",
 * "multi-host", "bad-host", "not-http", "head-too-big". */
const char *filter_http_reason(filter_http_result_t r);

/* Write the SPEC §2.3 step 5 response into buf: `HTTP/1.1 403 Forbidden`,
 * X-Proxy-Error: blocked-by-allowlist, Content-Type text/plain,
 * Content-Length, Connection: close, and a one-line body naming the host.
 * The host is sanitised (bytes outside [A-Za-z0-9._:[]-] become '?') and cut
 * at FILTER_HTTP_NAME_MAX bytes; NULL or empty reads "(none)". Returns the
 * length written (a NUL follows it), or -ENOSPC when cap is too small
 * (FILTER_HTTP_403_MAX always suffices). */
int filter_http_format_403(const char *host, size_t host_len, char *buf, size_t cap);

#endif
