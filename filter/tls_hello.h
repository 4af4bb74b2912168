/* filter/tls_hello.h: read the server_name out of a TLS ClientHello (SPEC §2.3 step 1).
 *
 * The proxy peeks at a new connection (MSG_PEEK, nothing consumed) and calls
 * filter_tls_hello_parse() with every byte received so far, again with the
 * bigger buffer each time more arrives, until the answer is not
 * FILTER_TLS_NEED_MORE. The parser keeps no state between calls, so any TCP
 * segmentation gives the same answer; every proper prefix of a hello answers
 * NEED_MORE (or the final answer early, when the bytes so far already decide
 * it, e.g. NOT_TLS on a first byte other than 0x16).
 *
 * The handshake message may be split across any number of TLS records
 * (RFC 8446 §5.1 allows it; sniproxy and haproxy refuse it). It is read in
 * place by a cursor that walks the record headers as it goes, on top of
 * filter/cursor.h: no copy, no scratch buffer, no allocation. The only stack
 * use of note is an 8 KiB bitmap of seen extension types, once per complete
 * hello.
 *
 * What counts toward max_hello: every byte from the first record header up to
 * and including the last byte of the ClientHello handshake message, record
 * headers (5 bytes each) included. Bytes after the hello (the rest of its
 * last record, later records such as 0-RTT data) are never looked at, and
 * neither is anything past max_hello.
 *
 * What the proxy does with each answer (SPEC §2.3 step 5):
 *   SNI                          decide on the (normalised) name
 *   NO_SNI, BAD_SNI, MULTI_SNI   blocked; the hello is complete and well
 *                                framed, so answer the access_denied alert
 *   NOT_TLS, TOO_BIG             blocked; reset
 *   NEED_MORE                    peek again (until peek_timeout)
 */
#ifndef MOAT_FILTER_TLS_HELLO_H
#define MOAT_FILTER_TLS_HELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 6066 §3 puts no limit on a HostName but a DNS name is at most 253
 * characters (254 with a trailing dot); we keep anything up to 255 so that
 * filter_name_normalize() is the one place names are judged. */
#define FILTER_TLS_SNI_MAX 255

/* Default max_hello (SPEC §3 proxy.max_hello). */
#define FILTER_TLS_MAX_HELLO_DEFAULT 16384

typedef enum filter_tls_result {
    FILTER_TLS_SNI = 0,       /* complete hello; out->sni holds the host_name */
    FILTER_TLS_NEED_MORE = 1, /* not complete yet: call again with more bytes */
    FILTER_TLS_NO_SNI = 2,    /* complete hello without a host_name */
    FILTER_TLS_BAD_SNI = 3,   /* host_name empty, over 255 bytes or holding a NUL */
    FILTER_TLS_MULTI_SNI = 4, /* more than one host_name (RFC 6066 §3 forbids it) */
    FILTER_TLS_NOT_TLS = 5,   /* not a TLS ClientHello, or a malformed/illegal one */
    FILTER_TLS_TOO_BIG = 6,   /* cannot be complete within max_hello bytes */
} filter_tls_result_t;

typedef struct filter_tls_hello {
    /* SNI: the first host_name, raw bytes as sent, NUL-terminated; the
     * caller normalises it with filter_name_normalize(). MULTI_SNI: the
     * first of them when it is valid (for the log). Empty otherwise. */
    char sni[FILTER_TLS_SNI_MAX + 1];
    size_t sni_len;
    /* Complete hello (SNI, NO_SNI, BAD_SNI, MULTI_SNI, and NOT_TLS found
     * inside a complete one): bytes from the start of the buffer to the end
     * of the ClientHello message. 0 otherwise. */
    size_t hello_len;
    uint16_t legacy_version; /* ClientHello.legacy_version (0x0303 for TLS 1.2 and 1.3) */
    bool has_ech;            /* encrypted_client_hello (0xfe0d) present: sni is the outer name */
    bool has_alpn;           /* application_layer_protocol_negotiation present */
    /* Static one-line reason for the answer, for logs and tests ("record of
     * type 23 inside the hello", "duplicate extension", ...). Never NULL. */
    const char *detail;
} filter_tls_hello_t;

/* Parse the bytes received so far on a connection (see above). out is
 * always filled in (zeroed first). Pure: no I/O, no allocation. */
filter_tls_result_t filter_tls_hello_parse(const uint8_t *buf, size_t len, size_t max_hello,
                                           filter_tls_hello_t *out);

/* The SPEC §4 log reason for a result: "sni", "need-more", "no-sni",
 * "bad-sni", "multi-sni", "not-tls", "hello-too-big". */
const char *filter_tls_reason(filter_tls_result_t r);

/* A fatal access_denied alert record (RFC 8446 §6.2: level 2, description
 * 49; record version 0x0303), 7 static bytes; *len is set to 7. */
const uint8_t *filter_tls_alert_access_denied(size_t *len);

#endif
