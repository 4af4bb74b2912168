/* filter/http_head.c: HTTP/1.x request-head reader (SPEC §2.3 steps 2 and 5).
 *
 * One pass over the bytes so far checks the head's grammar byte by byte (so a
 * non-HTTP stream is refused at its first bad byte) and notes where the
 * request-target and the Host field value are. Once the empty line that ends
 * the head is seen, the name is taken from the target or from Host.
 *
 *   request-line = method SP request-target SP HTTP-version CRLF  (RFC 9112 §3)
 *   field-line   = field-name ":" OWS field-value OWS CRLF          (RFC 9112 §5)
 *   Host         = uri-host [ ":" port ]                           (RFC 9110 §7.2)
 */
#include "filter/http_head.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "filter/cursor.h"

static const char http_version_prefix[] = "HTTP/1.";
static const char http_connect[] = "CONNECT";
static const char http_host[] = "host";

const char *filter_http_reason(filter_http_result_t r)
{
    switch (r) {
    case FILTER_HTTP_NAME:
        return "host";
    case FILTER_HTTP_NEED_MORE:
        return "need-more";
    case FILTER_HTTP_NO_NAME:
        return "no-host";
    case FILTER_HTTP_MULTI_HOST:
        return "multi-host";
    case FILTER_HTTP_BAD_NAME:
        return "bad-host";
    case FILTER_HTTP_NOT_HTTP:
        return "not-http";
    case FILTER_HTTP_TOO_BIG:
        return "head-too-big";
    }
    return "unknown";
}

static filter_http_result_t http_answer(filter_http_head_t *out, filter_http_result_t r,
                                        const char *detail)
{
    out->detail = detail;
    return r;
}

/* RFC 9110 §5.6.2 tchar */
static bool http_tchar(int c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* RFC 3986 §3.2.2 reg-name: unreserved / pct-encoded / sub-delims. The
 * bytes are passed on raw; filter_name_normalize() is stricter still. */
static bool http_regname_char(int c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("-._~%!$&'()*+,;=", c) != NULL;
}

typedef struct http_host {
    char name[FILTER_HTTP_NAME_MAX + 1];
    size_t len;
    uint16_t port;
    bool bracketed;
} http_host_t;

/* Parse `[userinfo@]host[:port]` from the whole of a (RFC 3986 §3.2).
 * Returns NAME, NO_NAME (nothing at all) or BAD_NAME, with out->detail. */
static filter_http_result_t http_authority(filter_cur_t a, bool userinfo, http_host_t *h,
                                           filter_http_head_t *out)
{
    memset(h, 0, sizeof *h);
    if (filter_cur_left(&a) == 0)
        return http_answer(out, FILTER_HTTP_NO_NAME, "empty host");
    if (userinfo) {
        /* The host follows the last '@' (RFC 3986 §3.2.1 userinfo has none). */
        size_t at = 0;
        for (size_t i = 0; filter_cur_peek(&a, i) >= 0; i++)
            if (filter_cur_peek(&a, i) == '@')
                at = i + 1;
        filter_cur_skip(&a, at);
    }

    if (filter_cur_peek(&a, 0) == '[') {
        /* RFC 3986 §3.2.2 IP-literal; IPvFuture and zone IDs are refused. */
        filter_cur_skip(&a, 1);
        bool colon = false;
        for (;;) {
            int c = filter_cur_peek(&a, 0);
            if (c < 0)
                return http_answer(out, FILTER_HTTP_BAD_NAME, "unclosed '[' in host");
            filter_cur_skip(&a, 1);
            if (c == ']')
                break;
            bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                      c == ':' || c == '.';
            if (!ok || h->len >= FILTER_ADDR_STRLEN)
                return http_answer(out, FILTER_HTTP_BAD_NAME, "bad IPv6 literal in host");
            colon = colon || c == ':';
            h->name[h->len++] = (char)c;
        }
        filter_addr_t addr;
        if (!colon || filter_addr_parse(h->name, h->len, &addr) != 0)
            return http_answer(out, FILTER_HTTP_BAD_NAME, "bad IPv6 literal in host");
        h->bracketed = true;
    } else {
        for (int c; (c = filter_cur_peek(&a, 0)) >= 0 && c != ':'; filter_cur_skip(&a, 1)) {
            if (!http_regname_char(c))
                return http_answer(out, FILTER_HTTP_BAD_NAME, "byte not allowed in a host");
            if (h->len >= FILTER_HTTP_NAME_MAX)
                return http_answer(out, FILTER_HTTP_BAD_NAME, "host longer than 255 bytes");
            h->name[h->len++] = (char)c;
        }
        if (h->len == 0)
            return http_answer(out, FILTER_HTTP_BAD_NAME, "empty host before the port");
    }
    h->name[h->len] = '\0';

    if (filter_cur_left(&a) > 0) {
        if (filter_cur_u8(&a) != ':')
            return http_answer(out, FILTER_HTTP_BAD_NAME, "junk after the host");
        /* port = *DIGIT (RFC 3986 §3.2.3): empty is allowed and means none. */
        uint32_t port = 0;
        while (filter_cur_left(&a) > 0) {
            int c = filter_cur_u8(&a);
            if (c < '0' || c > '9')
                return http_answer(out, FILTER_HTTP_BAD_NAME, "bad port");
            port = port * 10 + (uint32_t)(c - '0');
            if (port > 65535)
                return http_answer(out, FILTER_HTTP_BAD_NAME, "port over 65535");
        }
        h->port = (uint16_t)port;
    }
    return http_answer(out, FILTER_HTTP_NAME, "host found");
}

/* Case-insensitive, one trailing dot ignored on either side. */
static bool http_same_host(const http_host_t *a, const http_host_t *b)
{
    size_t la = a->len, lb = b->len;
    if (la > 0 && a->name[la - 1] == '.')
        la--;
    if (lb > 0 && b->name[lb - 1] == '.')
        lb--;
    if (la != lb)
        return false;
    for (size_t i = 0; i < la; i++)
        if (filter_ascii_lower((unsigned char)a->name[i]) !=
            filter_ascii_lower((unsigned char)b->name[i]))
            return false;
    return true;
}

/* Where the authority of an absolute-form target is: `scheme "://"
 * authority`, the authority ending at '/', '?', '#' or the end. Returns false
 * when the target is not of that shape. */
static bool http_absolute_authority(filter_cur_t t, filter_cur_t *auth)
{
    /* RFC 3986 §3.1 scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
    int c = filter_cur_u8(&t);
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
        return false;
    for (;;) {
        c = filter_cur_peek(&t, 0);
        bool sch = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '+' || c == '-' || c == '.';
        if (!sch)
            break;
        filter_cur_skip(&t, 1);
    }
    if (filter_cur_u8(&t) != ':' || filter_cur_u8(&t) != '/' || filter_cur_u8(&t) != '/')
        return false;
    size_t n = 0;
    for (; (c = filter_cur_peek(&t, n)) >= 0; n++)
        if (c == '/' || c == '?' || c == '#')
            break;
    *auth = filter_cur_sub(&t, n);
    return filter_cur_ok(auth);
}

/* True when the authority holds a backslash: WHATWG URL parsers (browsers,
 * and the libraries that copy them) read it as '/', so `http://a.test\@b.test/`
 * names a.test to them while RFC 3986 reads userinfo "a.test\" and host
 * b.test. Such a URI names two hosts at once: refused. */
static bool http_has_backslash(filter_cur_t auth)
{
    for (size_t i = 0; filter_cur_peek(&auth, i) >= 0; i++)
        if (filter_cur_peek(&auth, i) == '\\')
            return true;
    return false;
}

static void http_set_name(filter_http_head_t *out, const http_host_t *h)
{
    memcpy(out->name, h->name, h->len + 1);
    out->name_len = h->len;
    out->port = h->port;
    /* An IPv4 literal can only come unbracketed, an IPv6 one only bracketed. */
    if (filter_addr_parse(h->name, h->len, &out->addr) == 0 &&
        (h->bracketed || out->addr.family == AF_INET))
        out->is_addr = true;
    else
        memset(&out->addr, 0, sizeof out->addr);
}

/* The scan's states: the request line (RFC 9112 §3), then the field lines
 * and the empty line that ends the head (RFC 9112 §2.1, §5). */
typedef enum http_state {
    HS_METHOD,
    HS_TARGET_FIRST,
    HS_TARGET,
    HS_VERSION,
    HS_CR, /* CR seen at the end of a line: LF must follow */
    HS_LINE_START,
    HS_FIELD_NAME,
    HS_FIELD_VALUE,
    HS_END_CR, /* CR seen on the empty line */
    HS_DONE,
} http_state_t;

/* Where the scan found things. */
typedef struct http_scan {
    size_t target_start, target_len;
    size_t host_start, host_end; /* the first Host field's value, OWS included */
    unsigned hosts;
    bool connect;
} http_scan_t;

/* The scan between two bytes. */
typedef struct http_scanner {
    http_state_t st;
    size_t i;              /* index into the word being matched */
    bool connect, is_host; /* still matching "CONNECT" / "host" */
    http_scan_t *sc;
} http_scanner_t;

/* One function per state: each takes byte b, found at pos, and returns NULL
 * or why the bytes are not HTTP. */

static const char *http_method_byte(http_scanner_t *s, int b)
{
    if (b == ' ' && s->i > 0) {
        s->sc->connect = s->connect && s->i == sizeof http_connect - 1;
        s->st = HS_TARGET_FIRST;
        return NULL;
    }
    if (!http_tchar(b))
        return "request method is not a token";
    s->connect = s->connect && s->i < sizeof http_connect - 1 && b == http_connect[s->i];
    s->i++;
    return NULL;
}

static const char *http_target_byte(http_scanner_t *s, int b, size_t pos)
{
    if (b == ' ' && s->st == HS_TARGET) {
        s->sc->target_len = pos - s->sc->target_start;
        s->st = HS_VERSION;
        s->i = 0;
        return NULL;
    }
    /* RFC 3986: a URI is printable ASCII without spaces. */
    if (b <= 0x20 || b >= 0x7f)
        return "bad request-target";
    if (s->st == HS_TARGET_FIRST)
        s->sc->target_start = pos;
    s->st = HS_TARGET;
    return NULL;
}

/* RFC 9112 §2.3: "HTTP/" DIGIT "." DIGIT, case-sensitive; 1.x only. */
static const char *http_version_byte(http_scanner_t *s, int b)
{
    if (s->i < sizeof http_version_prefix - 1) {
        if (b != http_version_prefix[s->i])
            return "not an HTTP/1.x request line";
        s->i++;
    } else if (s->i == sizeof http_version_prefix - 1) {
        if (b < '0' || b > '9')
            return "not an HTTP/1.x request line";
        s->i++;
    } else if (b == '\r') {
        s->st = HS_CR;
    } else if (b == '\n') {
        s->st = HS_LINE_START; /* RFC 9112 §2.2: a bare LF may end a line */
    } else {
        return "junk after the HTTP version";
    }
    return NULL;
}

/* The first byte of a field line, or of the empty line that ends the head. */
static const char *http_line_start_byte(http_scanner_t *s, int b)
{
    if (b == '\r') {
        s->st = HS_END_CR;
    } else if (b == '\n') {
        s->st = HS_DONE;
    } else if (b == ' ' || b == '\t') {
        return "obs-fold (RFC 9112 §5.2)";
    } else if (http_tchar(b)) {
        s->is_host = filter_ascii_lower(b) == http_host[0];
        s->i = 1;
        s->st = HS_FIELD_NAME;
    } else {
        return "field name is not a token";
    }
    return NULL;
}

static const char *http_field_name_byte(http_scanner_t *s, int b, size_t pos)
{
    http_scan_t *sc = s->sc;
    if (b == ':') {
        /* Count every Host field; note where the first one's value is. */
        bool host = s->is_host && s->i == sizeof http_host - 1;
        s->is_host = host && sc->hosts == 0;
        if (host && sc->hosts++ == 0)
            sc->host_start = pos + 1;
        s->st = HS_FIELD_VALUE;
    } else if (b == ' ' || b == '\t') {
        return "whitespace before the colon (RFC 9112 §5.1)";
    } else if (http_tchar(b)) {
        s->is_host =
            s->is_host && s->i < sizeof http_host - 1 && filter_ascii_lower(b) == http_host[s->i];
        s->i++;
    } else {
        return "field name is not a token";
    }
    return NULL;
}

static const char *http_field_value_byte(http_scanner_t *s, int b, size_t pos)
{
    if (b == '\r' || b == '\n') {
        if (s->is_host)
            s->sc->host_end = pos;
        s->is_host = false;
        s->st = b == '\r' ? HS_CR : HS_LINE_START;
    } else if ((b < 0x20 && b != '\t') || b == 0x7f) {
        /* RFC 9110 §5.5: field-vchar, SP, HTAB, obs-text only. */
        return "control byte in a field value";
    }
    return NULL;
}

static const char *http_byte(http_scanner_t *s, int b, size_t pos)
{
    switch (s->st) {
    case HS_METHOD:
        return http_method_byte(s, b);
    case HS_TARGET_FIRST:
    case HS_TARGET:
        return http_target_byte(s, b, pos);
    case HS_VERSION:
        return http_version_byte(s, b);
    case HS_CR:
    case HS_END_CR:
        if (b != '\n')
            return "bare CR (RFC 9112 §2.2)";
        s->st = s->st == HS_CR ? HS_LINE_START : HS_DONE;
        return NULL;
    case HS_LINE_START:
        return http_line_start_byte(s, b);
    case HS_FIELD_NAME:
        return http_field_name_byte(s, b, pos);
    case HS_FIELD_VALUE:
        return http_field_value_byte(s, b, pos);
    case HS_DONE:
        break;
    }
    return NULL;
}

/* The byte-by-byte grammar check. Returns NEED_MORE, TOO_BIG, NOT_HTTP or
 * NAME (meaning "head complete", out->head_len set). */
static filter_http_result_t http_scan(const uint8_t *buf, size_t len, size_t max_head,
                                      http_scan_t *sc, filter_http_head_t *out)
{
    filter_cur_t c = filter_cur_make(buf, len < max_head ? len : max_head);
    http_scanner_t s = {.st = HS_METHOD, .connect = true, .sc = sc};
    memset(sc, 0, sizeof *sc);

    while (s.st != HS_DONE) {
        size_t pos = filter_cur_pos(&c);
        int b = filter_cur_peek(&c, 0);
        if (b < 0) {
            if (len >= max_head)
                return http_answer(out, FILTER_HTTP_TOO_BIG, "no end of head within max_head");
            return http_answer(out, FILTER_HTTP_NEED_MORE, "head not complete yet");
        }
        filter_cur_skip(&c, 1);
        const char *bad = http_byte(&s, b, pos);
        if (bad)
            return http_answer(out, FILTER_HTTP_NOT_HTTP, bad);
    }
    out->head_len = filter_cur_pos(&c);
    return FILTER_HTTP_NAME;
}

/* The Host field value without its surrounding OWS (RFC 9112 §5). */
static filter_cur_t http_host_value(const uint8_t *buf, size_t len, const http_scan_t *sc)
{
    size_t s = sc->host_start, e = sc->host_end;
    filter_cur_t v = filter_cur_window(buf, len, s, e - s);
    size_t lead = 0, n = e - s;
    while (lead < n && (filter_cur_peek(&v, lead) == ' ' || filter_cur_peek(&v, lead) == '\t'))
        lead++;
    while (n > lead && (filter_cur_peek(&v, n - 1) == ' ' || filter_cur_peek(&v, n - 1) == '\t'))
        n--;
    filter_cur_skip(&v, lead);
    return filter_cur_sub(&v, n - lead);
}

filter_http_result_t filter_http_head_parse(const uint8_t *buf, size_t len, size_t max_head,
                                            filter_http_head_t *out)
{
    memset(out, 0, sizeof *out);
    out->detail = "";
    if (buf == NULL)
        len = 0;

    http_scan_t sc;
    filter_http_result_t r = http_scan(buf, len, max_head, &sc, out);
    if (r != FILTER_HTTP_NAME)
        return r;
    out->is_connect = sc.connect;
    if (sc.hosts > 1)
        return http_answer(out, FILTER_HTTP_MULTI_HOST, "more than one Host field (RFC 9112 §3.2)");

    filter_cur_t target = filter_cur_window(buf, len, sc.target_start, sc.target_len);
    filter_cur_t auth;
    http_host_t h, hh;
    if (sc.connect) {
        /* RFC 9112 §3.2.3 authority-form: host ":" port, no userinfo. */
        r = http_authority(target, false, &h, out);
        out->from_uri = true;
    } else if (filter_cur_peek(&target, 0) == '/' ||
               (sc.target_len == 1 && filter_cur_peek(&target, 0) == '*')) {
        /* origin-form and asterisk-form: the name is Host's. */
        if (sc.hosts == 0)
            return http_answer(out, FILTER_HTTP_NO_NAME, "no Host field");
        r = http_authority(http_host_value(buf, len, &sc), false, &h, out);
    } else if (http_absolute_authority(target, &auth)) {
        /* RFC 9112 §3.2.2: the target's host wins over Host; RFC 9110
         * §4.2.1: an empty host in an http URI is invalid. */
        if (http_has_backslash(auth))
            return http_answer(out, FILTER_HTTP_BAD_NAME,
                               "'\\' in the URI's authority (WHATWG URL parsers read it as '/')");
        r = http_authority(auth, true, &h, out);
        if (r == FILTER_HTTP_NO_NAME)
            r = http_answer(out, FILTER_HTTP_BAD_NAME, "absolute URI with an empty host");
        out->from_uri = true;
    } else {
        return http_answer(out, FILTER_HTTP_BAD_NAME,
                           "request-target is not origin, absolute or authority form");
    }
    if (r != FILTER_HTTP_NAME)
        return r;
    if (out->from_uri && sc.hosts == 1) {
        filter_http_head_t scratch;
        filter_http_result_t hr =
            http_authority(http_host_value(buf, len, &sc), false, &hh, &scratch);
        out->host_conflict = hr != FILTER_HTTP_NAME || !http_same_host(&h, &hh);
    }
    http_set_name(out, &h);
    return http_answer(out, FILTER_HTTP_NAME,
                       out->from_uri ? "host from the request-target" : "host from the Host field");
}

int filter_http_format_403(const char *host, size_t host_len, char *buf, size_t cap)
{
    char clean[FILTER_HTTP_NAME_MAX + 1];
    size_t n = 0;
    if (host != NULL) {
        for (; n < host_len && n < FILTER_HTTP_NAME_MAX; n++) {
            unsigned char c = (unsigned char)host[n];
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']';
            clean[n] = ok ? (char)c : '?';
        }
    }
    clean[n] = '\0';
    const char *shown = n > 0 ? clean : "(none)";

    char body[FILTER_HTTP_NAME_MAX + 64];
    int blen = snprintf(body, sizeof body, "moat: %s is not on the egress allowlist\n", shown);
    if (blen < 0 || (size_t)blen >= sizeof body)
        return -ENOSPC;
    int w = snprintf(buf, cap,
                     "HTTP/1.1 403 Forbidden\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %d\r\n"
                     "Connection: close\r\n"
                     "X-Proxy-Error: blocked-by-allowlist\r\n"
                     "\r\n"
                     "%s",
                     blen, body);
    if (w < 0 || (size_t)w >= cap) {
        if (cap > 0)
            buf[0] = '\0';
        return -ENOSPC;
    }
    return w;
}
