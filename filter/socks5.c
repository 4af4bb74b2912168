/* filter/socks5.c: SOCKS5 messages (RFC 1928) and the username/password
 * sub-negotiation (RFC 1929), read through a cursor over the bytes so far.
 *
 * Each field is checked as soon as its bytes are in, so a parser answers BAD
 * at the first bad byte and NEED_MORE only while everything so far could
 * still be the start of a valid message.
 */
#include "filter/socks5.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "filter/cursor.h"
#include "filter/writer.h"

enum {
    SOCKS_VERSION = 5,     /* RFC 1928 §3 */
    SOCKS_AUTH_VERSION = 1 /* RFC 1929 §2 */
};

/* A length-prefixed string of n bytes at c: checked with ok() over the bytes
 * that are in, copied into dst (NUL after) once they all are. */
typedef enum socks_str {
    SOCKS_STR_OK,
    SOCKS_STR_MORE,
    SOCKS_STR_BAD,
} socks_str_t;

static socks_str_t socks_string(filter_cur_t *c, size_t n, bool (*ok)(int), char *dst,
                                size_t *dst_len)
{
    for (size_t i = 0; i < n; i++) {
        int b = filter_cur_peek(c, i);
        if (b < 0)
            return SOCKS_STR_MORE;
        if (!ok(b))
            return SOCKS_STR_BAD;
    }
    const uint8_t *p = filter_cur_take(c, n);
    if (p == NULL)
        return SOCKS_STR_MORE;
    memcpy(dst, p, n);
    dst[n] = '\0';
    *dst_len = n;
    return SOCKS_STR_OK;
}

/* RFC 7617 §2's rule for HTTP Basic, kept for SOCKS: no CTL. */
static bool socks_cred_byte(int b)
{
    return b >= 0x20 && b != 0x7f;
}

/* Printable ASCII without the space: what a host name can be spelt with. */
static bool socks_name_byte(int b)
{
    return b > 0x20 && b < 0x7f;
}

filter_socks_result_t filter_socks_greeting_parse(const uint8_t *buf, size_t len,
                                                  bool auth_required, filter_socks_greeting_t *out)
{
    memset(out, 0, sizeof *out);
    out->method = FILTER_SOCKS_METHOD_NO_ACCEPT;
    out->detail = "greeting not complete yet";
    filter_cur_t c = filter_cur_make(buf, buf ? len : 0);

    if (filter_cur_left(&c) < 1)
        return FILTER_SOCKS_NEED_MORE;
    if (filter_cur_u8(&c) != SOCKS_VERSION) {
        out->detail = "not SOCKS version 5";
        return FILTER_SOCKS_BAD;
    }
    if (filter_cur_left(&c) < 1)
        return FILTER_SOCKS_NEED_MORE;
    size_t n = filter_cur_u8(&c);
    if (n == 0) {
        out->detail = "greeting offers no method";
        return FILTER_SOCKS_BAD;
    }
    filter_cur_t methods = filter_cur_sub(&c, n);
    if (!filter_cur_ok(&methods))
        return FILTER_SOCKS_NEED_MORE;

    uint8_t want = auth_required ? FILTER_SOCKS_METHOD_USERPASS : FILTER_SOCKS_METHOD_NONE;
    while (filter_cur_left(&methods) > 0)
        if (filter_cur_u8(&methods) == want)
            out->method = want;
    out->used = filter_cur_pos(&c);
    out->detail = out->method == want ? "greeting" : "greeting offers no acceptable method";
    return FILTER_SOCKS_OK;
}

int filter_socks_format_method(uint8_t method, uint8_t *buf, size_t cap)
{
    filter_wr_t w = filter_wr_make(buf, buf ? cap : 0);
    filter_wr_u8(&w, SOCKS_VERSION);
    filter_wr_u8(&w, method);
    return filter_wr_ok(&w) ? (int)filter_wr_pos(&w) : -ENOSPC;
}

static filter_socks_result_t socks_auth_bad(filter_socks_auth_t *out, const char *detail)
{
    memset(out, 0, sizeof *out);
    out->detail = detail;
    return FILTER_SOCKS_BAD;
}

static filter_socks_result_t socks_auth_more(filter_socks_auth_t *out)
{
    memset(out, 0, sizeof *out);
    out->detail = "authentication not complete yet";
    return FILTER_SOCKS_NEED_MORE;
}

/* RFC 1929 §2: VER ULEN UNAME PLEN PASSWD. */
filter_socks_result_t filter_socks_auth_parse(const uint8_t *buf, size_t len,
                                              filter_socks_auth_t *out)
{
    memset(out, 0, sizeof *out);
    out->detail = "authentication not complete yet";
    filter_cur_t c = filter_cur_make(buf, buf ? len : 0);

    if (filter_cur_left(&c) < 1)
        return FILTER_SOCKS_NEED_MORE;
    if (filter_cur_u8(&c) != SOCKS_AUTH_VERSION)
        return socks_auth_bad(out, "not username/password version 1 (RFC 1929)");
    if (filter_cur_left(&c) < 1)
        return FILTER_SOCKS_NEED_MORE;
    size_t ulen = filter_cur_u8(&c);
    if (ulen == 0)
        return socks_auth_bad(out, "empty user name");
    switch (socks_string(&c, ulen, socks_cred_byte, out->user, &out->user_len)) {
    case SOCKS_STR_MORE:
        return socks_auth_more(out);
    case SOCKS_STR_BAD:
        return socks_auth_bad(out, "control byte in the user name");
    case SOCKS_STR_OK:
        break;
    }
    if (filter_cur_left(&c) < 1)
        return socks_auth_more(out);
    size_t plen = filter_cur_u8(&c);
    switch (socks_string(&c, plen, socks_cred_byte, out->password, &out->password_len)) {
    case SOCKS_STR_MORE:
        return socks_auth_more(out);
    case SOCKS_STR_BAD:
        return socks_auth_bad(out, "control byte in the password");
    case SOCKS_STR_OK:
        break;
    }
    out->used = filter_cur_pos(&c);
    out->detail = "username/password";
    return FILTER_SOCKS_OK;
}

int filter_socks_format_auth_reply(bool success, uint8_t *buf, size_t cap)
{
    filter_wr_t w = filter_wr_make(buf, buf ? cap : 0);
    filter_wr_u8(&w, SOCKS_AUTH_VERSION);
    filter_wr_u8(&w, success ? 0x00 : 0x01);
    return filter_wr_ok(&w) ? (int)filter_wr_pos(&w) : -ENOSPC;
}

static filter_socks_result_t socks_req_bad(filter_socks_request_t *out, filter_socks_rep_t rep,
                                           const char *detail)
{
    out->reply = rep;
    out->detail = detail;
    out->name[0] = '\0';
    out->name_len = 0;
    out->is_addr = false;
    memset(&out->addr, 0, sizeof out->addr);
    out->port = 0;
    return FILTER_SOCKS_BAD;
}

/* DST.ADDR as an address (ATYP 1 or 4), unmapped like every address moat
 * takes in (filter/addr.h). */
static void socks_addr(const uint8_t *p, uint8_t atyp, filter_addr_t *addr)
{
    if (atyp == FILTER_SOCKS_ATYP_IPV4) {
        struct sockaddr_in sin = {.sin_family = AF_INET};
        memcpy(&sin.sin_addr, p, 4);
        filter_addr_from_sockaddr((const struct sockaddr *)&sin, addr, NULL);
    } else {
        struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
        memcpy(&sin6.sin6_addr, p, 16);
        filter_addr_from_sockaddr((const struct sockaddr *)&sin6, addr, NULL);
    }
}

/* DST.ADDR (RFC 1928 §5) after ATYP. */
static filter_socks_result_t socks_dst(filter_cur_t *c, filter_socks_request_t *out)
{
    if (out->atyp == FILTER_SOCKS_ATYP_DOMAIN) {
        if (filter_cur_left(c) < 1)
            return FILTER_SOCKS_NEED_MORE;
        size_t n = filter_cur_u8(c);
        if (n == 0)
            return socks_req_bad(out, FILTER_SOCKS_REP_GENERAL_FAILURE, "empty domain name");
        switch (socks_string(c, n, socks_name_byte, out->name, &out->name_len)) {
        case SOCKS_STR_MORE:
            return FILTER_SOCKS_NEED_MORE;
        case SOCKS_STR_BAD:
            return socks_req_bad(out, FILTER_SOCKS_REP_HOST_UNREACHABLE,
                                 "domain name with a byte outside printable ASCII");
        case SOCKS_STR_OK:
            break;
        }
        out->is_addr = filter_addr_parse(out->name, out->name_len, &out->addr) == 0;
        if (!out->is_addr)
            memset(&out->addr, 0, sizeof out->addr);
        return FILTER_SOCKS_OK;
    }
    size_t n = out->atyp == FILTER_SOCKS_ATYP_IPV4 ? 4 : 16;
    const uint8_t *p = filter_cur_take(c, n);
    if (p == NULL)
        return FILTER_SOCKS_NEED_MORE;
    socks_addr(p, out->atyp, &out->addr);
    out->is_addr = true;
    return FILTER_SOCKS_OK;
}

/* RFC 1928 §4: VER CMD RSV ATYP DST.ADDR DST.PORT. */
filter_socks_result_t filter_socks_request_parse(const uint8_t *buf, size_t len,
                                                 filter_socks_request_t *out)
{
    memset(out, 0, sizeof *out);
    out->reply = FILTER_SOCKS_REP_GENERAL_FAILURE;
    out->detail = "request not complete yet";
    filter_cur_t c = filter_cur_make(buf, buf ? len : 0);

    if (filter_cur_left(&c) < 1)
        return FILTER_SOCKS_NEED_MORE;
    if (filter_cur_u8(&c) != SOCKS_VERSION)
        return socks_req_bad(out, FILTER_SOCKS_REP_GENERAL_FAILURE, "not SOCKS version 5");
    if (filter_cur_left(&c) < 1)
        return FILTER_SOCKS_NEED_MORE;
    out->cmd = filter_cur_u8(&c);
    if (out->cmd != FILTER_SOCKS_CMD_CONNECT)
        return socks_req_bad(out, FILTER_SOCKS_REP_CMD_UNSUPPORTED, "command other than CONNECT");
    if (filter_cur_left(&c) < 1)
        return FILTER_SOCKS_NEED_MORE;
    if (filter_cur_u8(&c) != 0)
        return socks_req_bad(out, FILTER_SOCKS_REP_GENERAL_FAILURE, "reserved byte not 0");
    if (filter_cur_left(&c) < 1)
        return FILTER_SOCKS_NEED_MORE;
    out->atyp = filter_cur_u8(&c);
    if (out->atyp != FILTER_SOCKS_ATYP_IPV4 && out->atyp != FILTER_SOCKS_ATYP_DOMAIN &&
        out->atyp != FILTER_SOCKS_ATYP_IPV6)
        return socks_req_bad(out, FILTER_SOCKS_REP_ATYP_UNSUPPORTED, "unknown address type");

    filter_socks_result_t r = socks_dst(&c, out);
    if (r == FILTER_SOCKS_OK && filter_cur_left(&c) < 2)
        r = FILTER_SOCKS_NEED_MORE;
    if (r == FILTER_SOCKS_NEED_MORE) {
        /* Nothing half-read is reported. */
        uint8_t cmd = out->cmd, atyp = out->atyp;
        memset(out, 0, sizeof *out);
        out->cmd = cmd;
        out->atyp = atyp;
        out->reply = FILTER_SOCKS_REP_GENERAL_FAILURE;
        out->detail = "request not complete yet";
        return r;
    }
    if (r != FILTER_SOCKS_OK)
        return r;
    out->port = filter_cur_u16(&c);
    out->used = filter_cur_pos(&c);
    out->reply = FILTER_SOCKS_REP_SUCCEEDED;
    out->detail = "CONNECT request";
    return FILTER_SOCKS_OK;
}

int filter_socks_format_reply(filter_socks_rep_t rep, const filter_addr_t *bnd, uint16_t bnd_port,
                              uint8_t *buf, size_t cap)
{
    static const filter_addr_t none = {.family = AF_INET};
    if (bnd == NULL) {
        bnd = &none;
        bnd_port = 0;
    }
    if (bnd->family != AF_INET && bnd->family != AF_INET6)
        return -EINVAL;
    bool v4 = bnd->family == AF_INET;
    filter_wr_t w = filter_wr_make(buf, buf ? cap : 0);
    filter_wr_u8(&w, SOCKS_VERSION);
    filter_wr_u8(&w, (uint8_t)rep);
    filter_wr_u8(&w, 0);
    filter_wr_u8(&w, v4 ? FILTER_SOCKS_ATYP_IPV4 : FILTER_SOCKS_ATYP_IPV6);
    filter_wr_bytes(&w, bnd->bytes, v4 ? 4 : 16);
    filter_wr_u16(&w, bnd_port);
    return filter_wr_ok(&w) ? (int)filter_wr_pos(&w) : -ENOSPC;
}
