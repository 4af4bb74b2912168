/* filter/http_flow.h: follow HTTP/1.1 message boundaries on one proxied
 * connection, both ways, so that every request head on it can be decided
 * (SPEC §2.3, last paragraphs).
 *
 * The model. Requests go client to server and responses come back in the
 * same order (RFC 9112 §9.3.2). Each direction is either at a head boundary
 * (its next bytes start a head), inside a body, or past HTTP. The tracker
 * keeps no buffer and never copies bytes: the caller shows it the bytes it
 * is about to forward and the tracker says where messages end.
 *   - A request head is handed in whole: the proxy finds its end with
 *     filter_http_head_parse() and decides its host first.
 *     filter_http_flow_request() reads its framing and queues what its
 *     response will need (was it HEAD, CONNECT, an Upgrade) in a ring of
 *     FILTER_HTTP_FLOW_PENDING entries.
 *   - A response head is found in the bytes received so far by
 *     filter_http_flow_response(), which answers NEED_MORE until the head is
 *     whole (keeping no state between calls, like filter_http_head_parse())
 *     and then matches it with the oldest pending request.
 *   - Bodies are followed over any split of the bytes by
 *     filter_http_flow_body(), with the state in the struct: it says how
 *     many of the bytes it is shown belong to the current body (for a
 *     chunked body the size lines, extensions, CRLFs, last chunk and trailer
 *     fields included).
 *   - filter_http_flow_opaque() says how many of the next bytes are body
 *     the tracker does not need to see (the rest of a Content-Length, of a
 *     chunk's data, or everything). The proxy may splice that many in the
 *     kernel and report them with filter_http_flow_passed().
 *
 * States of a direction (filter_http_flow_state()):
 *   HEAD      the next bytes start a head.
 *   BODY      inside a body framed by Content-Length or chunked.
 *   WAIT      request direction only, at a head boundary: forward no more
 *             client bytes yet. The newest request asked to switch protocols
 *             (an Upgrade field, or CONNECT) and its final response has not
 *             come, or FILTER_HTTP_FLOW_PENDING requests are unanswered.
 *   RAW       no more HTTP either way: a 101 answered an Upgrade request, or
 *             a 2xx answered CONNECT (RFC 9110 §7.8, §9.3.6). Both directions
 *             turn RAW at once, whatever they were in.
 *   EOF_BODY  response direction only: the body ends when the server closes
 *             (RFC 9112 §6.3 rule 8); every byte from now on is body.
 *   ERROR     the bytes cannot be framed safely; filter_http_flow_error()
 *             says why. Sticky. Each direction fails on its own.
 *
 * Framing (RFC 9112 §6.3). A request has a chunked body when
 * Transfer-Encoding is present and ends in chunked, a body of Content-Length
 * bytes, or none. Refused (request smuggling, RFC 9112 §11.2): both
 * Transfer-Encoding and Content-Length; a Transfer-Encoding that does not
 * end in chunked, names chunked twice, is not a list of plain tokens, comes
 * in more than one field, or comes in an HTTP/1.0 request; Content-Length
 * values that are not 1*DIGIT, overflow 64 bits, or differ (a list of equal
 * values, in one field or several, is one value). A response has no body
 * when it is 1xx, 204, 304 or answers HEAD; a 1xx other than 101 is interim
 * and leaves its request pending. Otherwise chunked when Transfer-Encoding
 * ends in chunked; read till close when Transfer-Encoding is present
 * otherwise (or in HTTP/1.0); Content-Length; else read till close. Both
 * framing fields in a response with a body are refused too; a bad
 * Content-Length is refused when it would frame the body.
 *
 * Strictness. Heads: `HTTP/1.d DDD[ reason]` as the status line (100..599),
 * field names are tokens followed directly by ':', no obs-fold, no control
 * bytes but HTAB in a value; lines end in CRLF or a bare LF (RFC 9112
 * §2.2), a bare CR is an error. Chunked bodies (RFC 9112 §7.1) are stricter:
 * every line ends in CRLF, since parsers disagree on a bare LF there; a
 * chunk-size is 1 to 16 hex digits; whitespace after it must lead to a
 * ';'; an extension runs to the CR and may hold any byte but a control
 * byte other than HTAB; trailer fields follow the head field grammar.
 *
 * The struct is the caller's (embed it; no allocation). All calls are pure:
 * no I/O. Hostile bytes are read through filter/cursor.h and never past len.
 */
#ifndef MOAT_FILTER_HTTP_FLOW_H
#define MOAT_FILTER_HTTP_FLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Requests that may wait for their response; one more is WAIT. */
#define FILTER_HTTP_FLOW_PENDING 32

typedef enum filter_http_flow_dir {
    FILTER_HTTP_FLOW_REQ = 0,  /* client to server */
    FILTER_HTTP_FLOW_RESP = 1, /* server to client */
} filter_http_flow_dir_t;

typedef enum filter_http_flow_state {
    FILTER_HTTP_FLOW_HEAD = 0,
    FILTER_HTTP_FLOW_BODY = 1,
    FILTER_HTTP_FLOW_WAIT = 2,
    FILTER_HTTP_FLOW_RAW = 3,
    FILTER_HTTP_FLOW_EOF_BODY = 4,
    FILTER_HTTP_FLOW_ERROR = 5,
} filter_http_flow_state_t;

typedef enum filter_http_flow_result {
    FILTER_HTTP_FLOW_OK = 0,        /* a head was read; head_len says how long */
    FILTER_HTTP_FLOW_NEED_MORE = 1, /* no whole response head yet */
    FILTER_HTTP_FLOW_TOO_BIG = 2,   /* no end of response head within max_head (now ERROR) */
    FILTER_HTTP_FLOW_BAD = 3,       /* refused: the direction is ERROR now */
} filter_http_flow_result_t;

/* Why a direction is in ERROR. */
typedef enum filter_http_flow_err {
    FILTER_HTTP_FLOW_E_NONE = 0,
    FILTER_HTTP_FLOW_E_HEAD = 1,            /* a head breaks the grammar above */
    FILTER_HTTP_FLOW_E_HEAD_TOO_BIG = 2,    /* a response head longer than max_head */
    FILTER_HTTP_FLOW_E_STATUS = 3,          /* not `HTTP/1.d DDD`, or a code outside 100..599 */
    FILTER_HTTP_FLOW_E_CONTENT_LENGTH = 4,  /* Content-Length not 1*DIGIT, or over 64 bits */
    FILTER_HTTP_FLOW_E_LENGTHS_DIFFER = 5,  /* Content-Length values that differ */
    FILTER_HTTP_FLOW_E_TE_AND_LENGTH = 6,   /* both Transfer-Encoding and Content-Length */
    FILTER_HTTP_FLOW_E_TRANSFER_CODING = 7, /* a request's Transfer-Encoding (see above) */
    FILTER_HTTP_FLOW_E_CHUNK_SIZE = 8,      /* a bad chunk-size line */
    FILTER_HTTP_FLOW_E_CHUNK_TOO_BIG = 9,   /* a chunk-size of more than 16 hex digits */
    FILTER_HTTP_FLOW_E_CHUNK_END = 10,      /* chunk-data not followed by CRLF */
    FILTER_HTTP_FLOW_E_TRAILER = 11,        /* a bad trailer field or final CRLF */
    FILTER_HTTP_FLOW_E_UNREQUESTED = 12,    /* response bytes with no request pending */
    FILTER_HTTP_FLOW_E_SWITCH = 13,         /* a 101 to a request without Upgrade */
    FILTER_HTTP_FLOW_E_STATE = 14,          /* a call the state did not allow (a caller bug) */
} filter_http_flow_err_t;

/* One direction's position. Private: read it through the functions below. */
typedef struct filter_http_flow_side {
    uint64_t left;  /* body bytes left, or the chunk-size / chunk-data left */
    uint8_t phase;  /* where the direction is */
    uint8_t chunk;  /* where in a chunked body */
    uint8_t digits; /* hex digits of the chunk-size so far */
    uint8_t err;    /* filter_http_flow_err_t, when phase is the error one */
} filter_http_flow_side_t;

/* One connection. Private: zeroed (or filter_http_flow_init()) is a fresh
 * connection with both directions at HEAD. */
typedef struct filter_http_flow {
    filter_http_flow_side_t side[2];           /* indexed by filter_http_flow_dir_t */
    uint8_t pending[FILTER_HTTP_FLOW_PENDING]; /* what each unanswered request needs */
    uint8_t first;                             /* index of the oldest in pending */
    uint8_t count;                             /* requests unanswered */
} filter_http_flow_t;

/* Start tracking a new connection: both directions at HEAD, nothing pending. */
void filter_http_flow_init(filter_http_flow_t *f);

/* Where direction dir is (see the states above). */
filter_http_flow_state_t filter_http_flow_state(const filter_http_flow_t *f,
                                                filter_http_flow_dir_t dir);

/* Why dir is in ERROR; FILTER_HTTP_FLOW_E_NONE when it is not. */
filter_http_flow_err_t filter_http_flow_error(const filter_http_flow_t *f,
                                              filter_http_flow_dir_t dir);

/* The log reason for an error: "bad-head", "bad-content-length", ... Never NULL. */
const char *filter_http_flow_reason(filter_http_flow_err_t e);

/* Requests sent and not yet answered by a final (non-1xx) response head. */
unsigned filter_http_flow_pending(const filter_http_flow_t *f);

/* Read the framing of one whole request head, head[0..head_len) up to and
 * including its empty line, and queue it. Only in state HEAD (not WAIT).
 * Returns OK (the request direction is now BODY, HEAD or WAIT) or BAD (it is
 * ERROR; the head must not be forwarded). */
filter_http_flow_result_t filter_http_flow_request(filter_http_flow_t *f, const uint8_t *head,
                                                   size_t head_len);

/* Look for a response head at the start of the len bytes received so far,
 * within max_head bytes (bytes past max_head are never looked at). Only in
 * state HEAD. *head_len is set to 0 first, and to the head's length on OK;
 * the response direction is then HEAD (after a 1xx or a body-less
 * response), BODY, EOF_BODY or RAW. NEED_MORE changes nothing; TOO_BIG and
 * BAD leave the direction in ERROR. Bytes when no request is pending are BAD. */
filter_http_flow_result_t filter_http_flow_response(filter_http_flow_t *f, const uint8_t *buf,
                                                    size_t len, size_t max_head, size_t *head_len);

/* Of buf[0..len), how many bytes belong to dir's current body. A return
 * below len means the body ended there (the direction is at HEAD or WAIT)
 * or the byte at that offset broke the framing (ERROR). EOF_BODY and RAW
 * take everything; HEAD, WAIT and ERROR take nothing. */
size_t filter_http_flow_body(filter_http_flow_t *f, filter_http_flow_dir_t dir, const uint8_t *buf,
                             size_t len);

/* How many of dir's next bytes are body that need not be looked at: the rest
 * of a Content-Length body or of a chunk's data; UINT64_MAX in EOF_BODY and
 * RAW; 0 otherwise (then the bytes go through filter_http_flow_body()). */
uint64_t filter_http_flow_opaque(const filter_http_flow_t *f, filter_http_flow_dir_t dir);

/* Record that n opaque bytes of dir went by unseen. Takes at most
 * filter_http_flow_opaque() bytes and returns how many it took. */
uint64_t filter_http_flow_passed(filter_http_flow_t *f, filter_http_flow_dir_t dir, uint64_t n);

#endif
