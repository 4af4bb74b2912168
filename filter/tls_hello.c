/* filter/tls_hello.c: ClientHello reader (SPEC §2.3 step 1).
 *
 * Two passes over the bytes received so far:
 *
 * 1. Framing (tls_frame): walk the record headers, byte by byte so that a
 *    partial header is judged as soon as it can be, until the handshake
 *    message header (itself possibly split across records) gives the
 *    ClientHello's length and the records hold all of it. This pass decides
 *    NEED_MORE, TOO_BIG and the early NOT_TLS answers.
 *
 * 2. Parsing (tls_body): once the hello is complete, read it through a
 *    "record-spanning" cursor (tls_span_t) that presents the handshake bytes
 *    of consecutive records as one stream, without copying them.
 *
 * Wire layout (RFC 8446 §5.1, §4, §4.1.2; RFC 5246 §7.4.1.2; RFC 6066 §3):
 *
 *   record:      type(1)=22 | version(2)=3.x | length(2) | fragment
 *   handshake:   msg_type(1)=1 | length(3) | ClientHello
 *   ClientHello: legacy_version(2) | random(32) | session_id<0..32>
 *                | cipher_suites<2..2^16-2> | compression_methods<1..2^8-1>
 *                | [extensions<0..2^16-1>]
 *   extension:   type(2) | extension_data<0..2^16-1>
 *   server_name: ServerNameList<1..2^16-1> of name_type(1) | HostName<1..2^16-1>
 */
#include "filter/tls_hello.h"

#include <string.h>

#include "filter/cursor.h"

#define TLS_CT_HANDSHAKE        22
#define TLS_HS_CLIENT_HELLO     1
#define TLS_RECORD_MAX          16384u /* RFC 8446 §5.1: 2^14 */
#define TLS_RECORD_HDR          5
#define TLS_HS_HDR              4
#define TLS_HELLO_MIN_BODY      41 /* version, random, empty session_id, one suite, one method */
#define TLS_EXT_SERVER_NAME     0x0000
#define TLS_EXT_ALPN            0x0010
#define TLS_EXT_ECH             0xfe0d
#define TLS_SNI_HOST_NAME       0
#define TLS_ALERT_FATAL         2
#define TLS_ALERT_ACCESS_DENIED 49

static const uint8_t tls_alert_access_denied[7] = {
    21, 0x03, 0x03, 0x00, 0x02, TLS_ALERT_FATAL, TLS_ALERT_ACCESS_DENIED,
};

const uint8_t *filter_tls_alert_access_denied(size_t *len)
{
    *len = sizeof tls_alert_access_denied;
    return tls_alert_access_denied;
}

const char *filter_tls_reason(filter_tls_result_t r)
{
    switch (r) {
    case FILTER_TLS_SNI:
        return "sni";
    case FILTER_TLS_NEED_MORE:
        return "need-more";
    case FILTER_TLS_NO_SNI:
        return "no-sni";
    case FILTER_TLS_BAD_SNI:
        return "bad-sni";
    case FILTER_TLS_MULTI_SNI:
        return "multi-sni";
    case FILTER_TLS_NOT_TLS:
        return "not-tls";
    case FILTER_TLS_TOO_BIG:
        return "hello-too-big";
    }
    return "unknown";
}

static filter_tls_result_t tls_answer(filter_tls_hello_t *out, filter_tls_result_t r,
                                      const char *detail)
{
    out->detail = detail;
    return r;
}

/* Out of bytes while the hello still needs some: if the window was cut at
 * max_hello, the hello cannot fit. */
static filter_tls_result_t tls_more(filter_tls_hello_t *out, size_t len, size_t max_hello)
{
    if (len >= max_hello)
        return tls_answer(out, FILTER_TLS_TOO_BIG, "hello not complete within max_hello");
    return tls_answer(out, FILTER_TLS_NEED_MORE, "hello not complete yet");
}

/* Pass 1. On a complete hello returns FILTER_TLS_SNI (meaning "go on") and
 * sets *end (offset past the hello) and *body (ClientHello length). */
static filter_tls_result_t tls_frame(const uint8_t *buf, size_t len, size_t max_hello,
                                     filter_tls_hello_t *out, size_t *end, size_t *body)
{
    filter_cur_t c = filter_cur_make(buf, len < max_hello ? len : max_hello);
    size_t hs_got = 0;   /* handshake bytes seen so far */
    size_t hs_total = 0; /* 4 + ClientHello length, once the header is in */
    uint32_t hs_hdr = 0;

    for (;;) {
        size_t pos = filter_cur_pos(&c);
        /* The hello still needs at least one byte, behind a record header. */
        if (pos + TLS_RECORD_HDR + 1 > max_hello)
            return tls_answer(out, FILTER_TLS_TOO_BIG, "hello not complete within max_hello");

        int type = filter_cur_peek(&c, 0);
        if (type < 0)
            return tls_more(out, len, max_hello);
        if (type != TLS_CT_HANDSHAKE)
            /* RFC 8446 §5.1: handshake messages are not interleaved with
             * other record types. */
            return tls_answer(out, FILTER_TLS_NOT_TLS,
                              pos == 0 ? "first record is not a handshake record"
                                       : "record of another type inside the hello");
        int major = filter_cur_peek(&c, 1);
        if (major < 0)
            return tls_more(out, len, max_hello);
        if (major != 3)
            return tls_answer(out, FILTER_TLS_NOT_TLS, "record version is not 3.x");
        if (filter_cur_peek(&c, TLS_RECORD_HDR - 1) < 0)
            return tls_more(out, len, max_hello);
        filter_cur_skip(&c, 3);
        size_t rlen = filter_cur_u16(&c);
        /* RFC 8446 §5.1: no zero-length handshake fragments, none over 2^14. */
        if (rlen == 0)
            return tls_answer(out, FILTER_TLS_NOT_TLS, "zero-length handshake record");
        if (rlen > TLS_RECORD_MAX)
            return tls_answer(out, FILTER_TLS_NOT_TLS, "record longer than 2^14 bytes");
        size_t frag_end = pos + TLS_RECORD_HDR + rlen;

        /* The handshake header, which may itself straddle records. */
        while (hs_got < TLS_HS_HDR && filter_cur_pos(&c) < frag_end) {
            int b = filter_cur_peek(&c, 0);
            if (b < 0)
                return tls_more(out, len, max_hello);
            filter_cur_skip(&c, 1);
            if (hs_got == 0 && b != TLS_HS_CLIENT_HELLO)
                return tls_answer(out, FILTER_TLS_NOT_TLS,
                                  "handshake message is not a ClientHello");
            hs_hdr = hs_hdr << 8 | (uint32_t)b;
            if (++hs_got == TLS_HS_HDR) {
                *body = hs_hdr & 0xffffffu;
                if (*body < TLS_HELLO_MIN_BODY)
                    return tls_answer(out, FILTER_TLS_NOT_TLS, "ClientHello shorter than possible");
                hs_total = TLS_HS_HDR + *body;
            }
        }
        if (hs_total == 0)
            continue; /* fragment used up inside the handshake header */

        size_t here = filter_cur_pos(&c);
        size_t in_frag = frag_end - here;
        size_t need = hs_total - hs_got;
        if (need <= in_frag) {
            *end = here + need;
            if (*end > max_hello)
                return tls_answer(out, FILTER_TLS_TOO_BIG, "hello longer than max_hello");
            if (*end > len)
                return tls_answer(out, FILTER_TLS_NEED_MORE, "hello not complete yet");
            return FILTER_TLS_SNI;
        }
        /* The rest comes in later records, each behind its own header. */
        if (frag_end + TLS_RECORD_HDR + (need - in_frag) > max_hello)
            return tls_answer(out, FILTER_TLS_TOO_BIG, "hello longer than max_hello");
        hs_got += in_frag;
        filter_cur_skip(&c, in_frag);
        if (!filter_cur_ok(&c))
            return tls_more(out, len, max_hello);
    }
}

/* A read cursor over the handshake bytes of consecutive records, as if the
 * fragments were one buffer. Records were validated by tls_frame(), which
 * also guarantees that the bytes up to the end of the hello are there.
 * Reads past `left` set the sticky error, like filter_cur_t. */
typedef struct tls_span {
    filter_cur_t recs; /* the input from the next record header on */
    filter_cur_t frag; /* the unread rest of the current fragment */
    size_t left;       /* bytes left in this vector */
    bool err;
} tls_span_t;

/* Move to the next record's fragment (the last one may be cut short at the
 * end of the hello). */
static bool tls_span_next(tls_span_t *s)
{
    filter_cur_skip(&s->recs, 3);
    size_t n = filter_cur_u16(&s->recs);
    size_t avail = filter_cur_left(&s->recs);
    s->frag = filter_cur_sub(&s->recs, n < avail ? n : avail);
    return filter_cur_ok(&s->frag) && filter_cur_left(&s->frag) > 0;
}

static bool tls_span_need(tls_span_t *s, size_t n)
{
    if (s->err || s->left < n) {
        s->err = true;
        return false;
    }
    return true;
}

/* The rare case of tls_span_u8: an error, or the byte is in a later record. */
static uint8_t tls_span_u8_slow(tls_span_t *s)
{
    if (!tls_span_need(s, 1))
        return 0;
    while (filter_cur_left(&s->frag) == 0) {
        if (!tls_span_next(s)) {
            s->err = true;
            return 0;
        }
    }
    s->left--;
    return filter_cur_u8(&s->frag);
}

static inline uint8_t tls_span_u8(tls_span_t *s)
{
    if (!s->err && s->left > 0 && filter_cur_left(&s->frag) > 0) {
        s->left--;
        return filter_cur_u8(&s->frag);
    }
    return tls_span_u8_slow(s);
}

static inline uint16_t tls_span_u16(tls_span_t *s)
{
    if (!s->err && s->left >= 2 && filter_cur_left(&s->frag) >= 2) {
        s->left -= 2;
        return filter_cur_u16(&s->frag);
    }
    uint16_t hi = tls_span_u8(s);
    uint16_t lo = tls_span_u8(s);
    return (uint16_t)(hi << 8 | lo);
}

/* The rare case of tls_span_skip: an error, or the bytes span records. */
static void tls_span_skip_slow(tls_span_t *s, size_t n)
{
    if (!tls_span_need(s, n))
        return;
    while (n > 0) {
        size_t have = filter_cur_left(&s->frag);
        if (have == 0) {
            if (!tls_span_next(s)) {
                s->err = true;
                return;
            }
            continue;
        }
        size_t step = have < n ? have : n;
        filter_cur_skip(&s->frag, step);
        s->left -= step;
        n -= step;
    }
}

static inline void tls_span_skip(tls_span_t *s, size_t n)
{
    if (!s->err && s->left >= n && filter_cur_left(&s->frag) >= n) {
        filter_cur_skip(&s->frag, n);
        s->left -= n;
        return;
    }
    tls_span_skip_slow(s, n);
}

/* The next n bytes as a span of their own; the parent moves past them. On
 * short input both are in error. */
static tls_span_t tls_span_sub(tls_span_t *s, size_t n)
{
    tls_span_t sub = *s;
    sub.left = n;
    tls_span_skip(s, n);
    sub.err = s->err;
    return sub;
}

/* Extension types seen so far (RFC 8446 §4.2: at most one of each): one bit
 * per type, in words that are only valid once their bit in `valid` is set,
 * so a hello clears the valid bits only, not the whole map. */
typedef struct tls_seen_set {
    uint64_t valid[65536 / 64 / 64];
    uint64_t words[65536 / 64];
} tls_seen_set_t;

static bool tls_seen(tls_seen_set_t *set, uint16_t type)
{
    size_t w = type >> 6;
    uint64_t bit = (uint64_t)1 << (type & 63), vbit = (uint64_t)1 << (w & 63);
    if (!(set->valid[w >> 6] & vbit)) {
        set->valid[w >> 6] |= vbit;
        set->words[w] = bit;
        return false;
    }
    bool was = (set->words[w] & bit) != 0;
    set->words[w] |= bit;
    return was;
}

/* RFC 6066 §3. Returns SNI, NO_SNI, BAD_SNI, MULTI_SNI or NOT_TLS. */
static filter_tls_result_t tls_server_name(tls_span_t *data, filter_tls_hello_t *out)
{
    if (data->left == 0)
        /* An empty server_name is what a server echoes; from a client it
         * carries no name at all. */
        return tls_answer(out, FILTER_TLS_NO_SNI, "empty server_name extension");
    size_t list_len = tls_span_u16(data);
    if (data->err || list_len != data->left)
        return tls_answer(out, FILTER_TLS_NOT_TLS, "server_name list length does not match");
    unsigned hosts = 0;
    bool bad = false;
    while (data->left > 0) {
        uint8_t name_type = tls_span_u8(data);
        size_t name_len = tls_span_u16(data);
        tls_span_t name = tls_span_sub(data, name_len);
        if (data->err)
            return tls_answer(out, FILTER_TLS_NOT_TLS, "server name overruns its list");
        /* Other name types start with a 16-bit length too (RFC 6066 §3), so
         * they are skipped the same way. */
        if (name_type != TLS_SNI_HOST_NAME)
            continue;
        if (++hosts > 1)
            continue;
        if (name_len == 0 || name_len > FILTER_TLS_SNI_MAX) {
            bad = true;
            continue;
        }
        for (size_t i = 0; i < name_len; i++) {
            uint8_t ch = tls_span_u8(&name);
            if (ch == 0)
                bad = true;
            out->sni[i] = (char)ch;
        }
        out->sni[name_len] = '\0';
        out->sni_len = name_len;
    }
    if (bad) {
        out->sni[0] = '\0';
        out->sni_len = 0;
    }
    if (hosts == 0)
        return tls_answer(out, FILTER_TLS_NO_SNI, "server_name without a host_name");
    if (hosts > 1)
        return tls_answer(out, FILTER_TLS_MULTI_SNI, "more than one host_name (RFC 6066 §3)");
    if (bad)
        return tls_answer(out, FILTER_TLS_BAD_SNI, "host_name empty, too long or with a NUL");
    return tls_answer(out, FILTER_TLS_SNI, "server_name found");
}

/* Pass 2: the ClientHello body, body_len bytes after the handshake header. */
static filter_tls_result_t tls_body(const uint8_t *buf, size_t end, size_t body_len,
                                    filter_tls_hello_t *out)
{
    tls_span_t s = {filter_cur_make(buf, end), filter_cur_make(buf, 0), TLS_HS_HDR + body_len,
                    false};
    tls_span_skip(&s, TLS_HS_HDR);

    /* RFC 8446 §4.1.2, RFC 5246 §7.4.1.2 */
    out->legacy_version = tls_span_u16(&s);
    if (out->legacy_version >> 8 != 3)
        return tls_answer(out, FILTER_TLS_NOT_TLS, "legacy_version is not 3.x");
    tls_span_skip(&s, 32); /* random */
    size_t sid = tls_span_u8(&s);
    if (sid > 32)
        return tls_answer(out, FILTER_TLS_NOT_TLS, "session_id longer than 32 bytes");
    tls_span_skip(&s, sid);
    size_t suites = tls_span_u16(&s);
    if (suites < 2 || suites % 2 != 0)
        return tls_answer(out, FILTER_TLS_NOT_TLS, "bad cipher_suites length");
    tls_span_skip(&s, suites);
    size_t methods = tls_span_u8(&s);
    if (methods < 1)
        return tls_answer(out, FILTER_TLS_NOT_TLS, "empty compression_methods");
    tls_span_skip(&s, methods);
    if (s.err)
        return tls_answer(out, FILTER_TLS_NOT_TLS, "ClientHello vector overruns the message");
    if (s.left == 0)
        /* RFC 5246 §7.4.1.2: extensions are optional before TLS 1.3. */
        return tls_answer(out, FILTER_TLS_NO_SNI, "ClientHello without extensions");

    size_t ext_len = tls_span_u16(&s);
    if (s.err || ext_len != s.left)
        return tls_answer(out, FILTER_TLS_NOT_TLS, "extensions length does not match the message");

    tls_seen_set_t seen;
    memset(seen.valid, 0, sizeof seen.valid);
    filter_tls_result_t sni = FILTER_TLS_NO_SNI;
    const char *sni_detail = "no server_name extension";
    while (s.left > 0) {
        uint16_t type = tls_span_u16(&s);
        size_t data_len = tls_span_u16(&s);
        /* Only server_name is read inside; the others are skipped. */
        tls_span_t data;
        if (type == TLS_EXT_SERVER_NAME)
            data = tls_span_sub(&s, data_len);
        else
            tls_span_skip(&s, data_len);
        if (s.err)
            return tls_answer(out, FILTER_TLS_NOT_TLS, "extension overruns the extensions block");
        /* RFC 8446 §4.2: no extension type more than once. GREASE values
         * (RFC 8701) and unknown types are otherwise just skipped. */
        if (tls_seen(&seen, type))
            return tls_answer(out, FILTER_TLS_NOT_TLS, "duplicate extension type (RFC 8446 §4.2)");
        switch (type) {
        case TLS_EXT_SERVER_NAME:
            sni = tls_server_name(&data, out);
            sni_detail = out->detail;
            if (sni == FILTER_TLS_NOT_TLS)
                return sni;
            break;
        case TLS_EXT_ALPN:
            out->has_alpn = true;
            break;
        case TLS_EXT_ECH:
            out->has_ech = true;
            break;
        default:
            break;
        }
    }
    return tls_answer(out, sni, sni_detail);
}

filter_tls_result_t filter_tls_hello_parse(const uint8_t *buf, size_t len, size_t max_hello,
                                           filter_tls_hello_t *out)
{
    memset(out, 0, sizeof *out);
    out->detail = "";
    if (buf == NULL)
        len = 0;

    size_t end = 0, body = 0;
    filter_tls_result_t r = tls_frame(buf, len, max_hello, out, &end, &body);
    if (r != FILTER_TLS_SNI)
        return r;
    out->hello_len = end;
    r = tls_body(buf, end, body, out);
    if (r != FILTER_TLS_SNI && r != FILTER_TLS_MULTI_SNI) {
        out->sni[0] = '\0';
        out->sni_len = 0;
    }
    return r;
}
