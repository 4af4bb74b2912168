/* filter/socks5.h: the protocol of the SOCKS5 listener (`proxy.socks`,
 * SPEC §2.6): RFC 1928 with the username/password method of RFC 1929,
 * CONNECT only.
 *
 * The client speaks three messages in turn, each answered by the proxy:
 *   greeting  VER=5 NMETHODS METHODS         -> VER=5 METHOD
 *   auth      VER=1 ULEN UNAME PLEN PASSWD   -> VER=1 STATUS   (method 0x02 only)
 *   request   VER=5 CMD RSV=0 ATYP DST.ADDR DST.PORT
 *                                            -> VER=5 REP RSV=0 ATYP BND.ADDR BND.PORT
 * Each parser reads the bytes received so far (the proxy peeks) and answers
 * NEED_MORE until the message is complete, then OK with *used, the length of
 * the message: the proxy consumes exactly that many bytes. Bytes after the
 * message are not looked at; a client that sends its request right after
 * its greeting (without waiting for the method) is served the same way.
 * A message is checked as its bytes arrive, so a bad one answers BAD at its
 * first bad byte; every prefix of a message answers NEED_MORE or the whole
 * message's answer. No state is kept between calls; pure, no allocation.
 *
 * What the proxy does with BAD:
 *   greeting  close (a SOCKS4 client or not SOCKS at all: nothing to say)
 *   auth      send the failure status (filter_socks_format_auth_reply) and
 *             close (RFC 1929 §2)
 *   request   send filter_socks_format_reply() with out->reply, and close
 *
 * Credentials (RFC 1929): the user and password are raw bytes, copied into
 * fixed buffers with a NUL after them. filter_socks_auth_t therefore holds a
 * secret: the caller wipes it when done and never logs the password. No
 * detail string ever holds credential bytes.
 */
#ifndef MOAT_FILTER_SOCKS5_H
#define MOAT_FILTER_SOCKS5_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter/addr.h"

/* The longest message of each kind: a buffer (or a peek) of this size
 * always holds a whole one. */
#define FILTER_SOCKS_GREETING_MAX 257 /* 2 + 255 methods */
#define FILTER_SOCKS_AUTH_MAX     513 /* 3 + 255 + 255 */
#define FILTER_SOCKS_REQUEST_MAX  262 /* 4 + 1 + 255 + 2 */
/* The longest reply: IPv6 bound address. */
#define FILTER_SOCKS_REPLY_MAX 22

/* Longest user, password and domain name (RFC 1928 §5, RFC 1929 §2: one
 * length byte), without the NUL. */
#define FILTER_SOCKS_STR_MAX 255

/* RFC 1928 §3 methods. */
#define FILTER_SOCKS_METHOD_NONE      0x00 /* no authentication required */
#define FILTER_SOCKS_METHOD_USERPASS  0x02 /* RFC 1929 */
#define FILTER_SOCKS_METHOD_NO_ACCEPT 0xff /* no acceptable method: reply, close */

/* RFC 1928 §4 commands and address types. */
#define FILTER_SOCKS_CMD_CONNECT 0x01
#define FILTER_SOCKS_ATYP_IPV4   0x01
#define FILTER_SOCKS_ATYP_DOMAIN 0x03
#define FILTER_SOCKS_ATYP_IPV6   0x04

/* RFC 1928 §6 reply codes. */
typedef enum filter_socks_rep {
    FILTER_SOCKS_REP_SUCCEEDED = 0x00,
    FILTER_SOCKS_REP_GENERAL_FAILURE = 0x01,
    FILTER_SOCKS_REP_NOT_ALLOWED = 0x02, /* connection not allowed by ruleset */
    FILTER_SOCKS_REP_NET_UNREACHABLE = 0x03,
    FILTER_SOCKS_REP_HOST_UNREACHABLE = 0x04,
    FILTER_SOCKS_REP_REFUSED = 0x05,
    FILTER_SOCKS_REP_TTL_EXPIRED = 0x06,
    FILTER_SOCKS_REP_CMD_UNSUPPORTED = 0x07,
    FILTER_SOCKS_REP_ATYP_UNSUPPORTED = 0x08,
} filter_socks_rep_t;

typedef enum filter_socks_result {
    FILTER_SOCKS_OK = 0,        /* a whole message; *used says how long */
    FILTER_SOCKS_NEED_MORE = 1, /* not complete yet: call again with more bytes */
    FILTER_SOCKS_BAD = 2,       /* not a valid message: see the top of this file */
} filter_socks_result_t;

typedef struct filter_socks_greeting {
    /* OK: the method to answer with. USERPASS when auth is required and the
     * client offers it, NONE when auth is not required and the client
     * offers it, NO_ACCEPT otherwise (answer it, then close). */
    uint8_t method;
    size_t used;        /* OK: the greeting's length */
    const char *detail; /* static one-line reason, for logs and tests */
} filter_socks_greeting_t;

/* Read a greeting: VER=5 (anything else, SOCKS4 included, is BAD),
 * NMETHODS >= 1 (0 is BAD), METHODS. out is always filled in. */
filter_socks_result_t filter_socks_greeting_parse(const uint8_t *buf, size_t len,
                                                  bool auth_required, filter_socks_greeting_t *out);

/* Write the method answer (VER=5 METHOD) into buf; returns 2, or -ENOSPC. */
int filter_socks_format_method(uint8_t method, uint8_t *buf, size_t cap);

typedef struct filter_socks_auth {
    char user[FILTER_SOCKS_STR_MAX + 1]; /* raw bytes, then a NUL */
    size_t user_len;
    char password[FILTER_SOCKS_STR_MAX + 1]; /* raw bytes, then a NUL */
    size_t password_len;
    size_t used;        /* OK: the message's length */
    const char *detail; /* static one-line reason; never credential bytes */
} filter_socks_auth_t;

/* Read the RFC 1929 sub-negotiation: VER=1, ULEN >= 1, UNAME, PLEN, PASSWD.
 * PLEN 0 is accepted: RFC 1929 gives the field no lower bound in its text,
 * and curl sends it for a user given without a password; the empty
 * password then names nobody. A NUL or other control byte (< 0x20, 0x7f) in
 * UNAME or PASSWD is BAD, as RFC 7617 §2 says for HTTP's Basic: the two
 * listeners accept the same credentials, and the buffers read as C
 * strings. out is always filled in (zeroed first; nothing is kept on BAD). */
filter_socks_result_t filter_socks_auth_parse(const uint8_t *buf, size_t len,
                                              filter_socks_auth_t *out);

/* Write the RFC 1929 status answer (VER=1, STATUS 0x00 success or 0x01
 * failure) into buf; returns 2, or -ENOSPC. */
int filter_socks_format_auth_reply(bool success, uint8_t *buf, size_t cap);

typedef struct filter_socks_request {
    uint8_t cmd;  /* CMD as sent (OK: always CONNECT) */
    uint8_t atyp; /* ATYP as sent (OK: IPV4, DOMAIN or IPV6) */
    /* ATYP DOMAIN: the name, raw (the caller normalises it), NUL-terminated. */
    char name[FILTER_SOCKS_STR_MAX + 1];
    size_t name_len;
    /* The destination is an address: ATYP IPV4 or IPV6, or a DOMAIN that
     * reads as an IPv4 or IPv6 literal (filter_addr_parse(); the caller
     * decides it as the address, as http_head.h does for a Host). An
     * IPv4-mapped IPv6 address is unmapped (filter/addr.h). */
    bool is_addr;
    filter_addr_t addr;
    uint16_t port; /* DST.PORT, host order */
    /* BAD: the REP to answer with before closing:
     *   GENERAL_FAILURE    VER != 5, RSV != 0, a domain of length 0;
     *   CMD_UNSUPPORTED    CMD other than CONNECT (BIND, UDP ASSOCIATE, ...);
     *   ATYP_UNSUPPORTED   ATYP other than 1, 3, 4;
     *   HOST_UNREACHABLE   a domain with a byte outside 0x21..0x7e (NUL,
     *                      space, control, non-ASCII): no DNS name the
     *                      policy could allow is spelt that way.
     * The first bad field decides (in wire order). OK: SUCCEEDED. */
    filter_socks_rep_t reply;
    size_t used;        /* OK: the request's length */
    const char *detail; /* static one-line reason, for logs and tests */
} filter_socks_request_t;

/* Read a request (see above). out is always filled in (zeroed first). */
filter_socks_result_t filter_socks_request_parse(const uint8_t *buf, size_t len,
                                                 filter_socks_request_t *out);

/* Write a reply: VER=5 REP RSV=0, then the bound address and port (ATYP 1
 * or 4; 0.0.0.0:0 when bnd is NULL), into buf. Returns 10 or 22, or -ENOSPC
 * (FILTER_SOCKS_REPLY_MAX always suffices), or -EINVAL when bnd is neither
 * AF_INET nor AF_INET6. */
int filter_socks_format_reply(filter_socks_rep_t rep, const filter_addr_t *bnd, uint16_t bnd_port,
                              uint8_t *buf, size_t cap);

#endif
