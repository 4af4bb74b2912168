/* filter/proxy_http.c: the HTTP proxy listener's protocol (SPEC §2.6).
 *
 * filter_http_head_parse() checks the head's grammar and finds the host; this
 * file then walks the (valid, complete) head line by line through a cursor
 * for what only a proxy needs: the request-target's scheme, authority and
 * path, the Proxy-Authorization field, and the fields the rewrite drops.
 *
 *   request-line = method SP request-target SP HTTP-version CRLF  (RFC 9112 §3)
 *   field-line   = field-name ":" OWS field-value OWS CRLF          (RFC 9112 §5)
 *   credentials  = auth-scheme [ 1*SP token68 ]                    (RFC 9110 §11.4)
 */
#include "filter/proxy_http.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "filter/cursor.h"
#include "filter/writer.h"

static filter_pxhttp_result_t pxhttp_answer(filter_pxhttp_req_t *out, filter_pxhttp_result_t r,
                                            const char *detail)
{
    out->detail = detail;
    return r;
}

/* One line of the head: [off, off+len) without its CRLF or LF. */
typedef struct pxhttp_line {
    size_t off, len;
} pxhttp_line_t;

/* The next line of the head under c; false past the last one. */
static bool pxhttp_next_line(filter_cur_t *c, pxhttp_line_t *l)
{
    if (filter_cur_left(c) == 0)
        return false;
    l->off = filter_cur_pos(c);
    size_t n = 0;
    int b;
    while ((b = filter_cur_peek(c, n)) >= 0 && b != '\n')
        n++;
    filter_cur_t line = filter_cur_sub(c, n);
    if (b == '\n')
        filter_cur_skip(c, 1);
    l->len = n > 0 && filter_cur_peek(&line, n - 1) == '\r' ? n - 1 : n;
    return true;
}

/* A field line's name (before the ':') and its value without the OWS
 * around it (RFC 9112 §5). */
static void pxhttp_field(const uint8_t *buf, size_t len, const pxhttp_line_t *l, filter_cur_t *name,
                         filter_cur_t *value)
{
    filter_cur_t line = filter_cur_window(buf, len, l->off, l->len);
    size_t colon = 0;
    int b;
    while ((b = filter_cur_peek(&line, colon)) >= 0 && b != ':')
        colon++;
    *name = filter_cur_sub(&line, colon);
    filter_cur_skip(&line, 1);
    size_t lead = 0, end = filter_cur_left(&line);
    while (lead < end &&
           (filter_cur_peek(&line, lead) == ' ' || filter_cur_peek(&line, lead) == '\t'))
        lead++;
    while (end > lead &&
           (filter_cur_peek(&line, end - 1) == ' ' || filter_cur_peek(&line, end - 1) == '\t'))
        end--;
    filter_cur_skip(&line, lead);
    *value = filter_cur_sub(&line, end - lead);
}

/* The request line's three parts: method, target, version (single SPs
 * between them, as http_head.h checked). */
typedef struct pxhttp_reqline {
    filter_cur_t method, target, version;
} pxhttp_reqline_t;

static pxhttp_reqline_t pxhttp_split_reqline(const uint8_t *buf, size_t len, const pxhttp_line_t *l)
{
    pxhttp_reqline_t r;
    filter_cur_t line = filter_cur_window(buf, len, l->off, l->len);
    size_t n = 0;
    while (filter_cur_peek(&line, n) >= 0 && filter_cur_peek(&line, n) != ' ')
        n++;
    r.method = filter_cur_sub(&line, n);
    filter_cur_skip(&line, 1);
    n = 0;
    while (filter_cur_peek(&line, n) >= 0 && filter_cur_peek(&line, n) != ' ')
        n++;
    r.target = filter_cur_sub(&line, n);
    filter_cur_skip(&line, 1);
    r.version = filter_cur_sub(&line, filter_cur_left(&line));
    return r;
}

/* RFC 4648 §4 alphabet. */
static int pxhttp_b64(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Where decoded credential bytes go: the user until the first ':', then
 * the password (RFC 7617 §2). */
typedef struct pxhttp_sink {
    filter_pxhttp_req_t *out;
    bool in_password;
    const char *bad; /* why the credentials are unusable; NULL while fine */
} pxhttp_sink_t;

static void pxhttp_put(pxhttp_sink_t *s, int b)
{
    if (s->bad)
        return;
    if (b == ':' && !s->in_password) {
        s->in_password = true;
        return;
    }
    /* RFC 7617 §2: no CTL in the user-id or the password. */
    if (b < 0x20 || b == 0x7f) {
        s->bad = "control byte in the proxy credentials";
        return;
    }
    char *dst = s->in_password ? s->out->password : s->out->user;
    size_t *n = s->in_password ? &s->out->password_len : &s->out->user_len;
    if (*n >= FILTER_PXHTTP_CRED_MAX) {
        s->bad = "proxy user or password over 255 bytes";
        return;
    }
    dst[(*n)++] = (char)b;
}

/* Decode token68 as base64 (RFC 4648 §4: whole quanta, '=' only as padding
 * at the end, pad bits zero) into the sink. */
static void pxhttp_decode(filter_cur_t t, pxhttp_sink_t *s)
{
    size_t n = filter_cur_left(&t);
    if (n == 0 || n % 4 != 0) {
        s->bad = "proxy credentials are not base64";
        return;
    }
    for (size_t q = 0; q < n && !s->bad; q += 4) {
        int v[4];
        int pad = 0;
        for (int i = 0; i < 4; i++) {
            int c = filter_cur_u8(&t);
            /* '=' only closes the last quantum, after two or three digits. */
            if (c == '=' && q + 4 == n && i >= 2) {
                pad++;
                v[i] = 0;
                continue;
            }
            v[i] = pxhttp_b64(c);
            if (v[i] < 0 || pad > 0) {
                s->bad = "proxy credentials are not base64";
                return;
            }
        }
        uint32_t bits =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        if ((pad == 1 && (bits & 0xff) != 0) || (pad == 2 && (bits & 0xffff) != 0)) {
            s->bad = "proxy credentials are not canonical base64";
            return;
        }
        pxhttp_put(s, (int)(bits >> 16));
        if (pad < 2)
            pxhttp_put(s, (int)(bits >> 8 & 0xff));
        if (pad < 1)
            pxhttp_put(s, (int)(bits & 0xff));
    }
}

/* Read one Proxy-Authorization value into out (see proxy_http.h). Returns
 * NULL or why the credentials are unusable. */
static const char *pxhttp_credentials(filter_cur_t v, filter_pxhttp_req_t *out)
{
    size_t n = 0;
    while (filter_cur_peek(&v, n) >= 0 && filter_cur_peek(&v, n) != ' ')
        n++;
    if (!filter_cur_equals_lower(filter_cur_sub(&v, n), "basic"))
        return "proxy credentials are not Basic";
    while (filter_cur_peek(&v, 0) == ' ')
        filter_cur_skip(&v, 1);
    pxhttp_sink_t s = {.out = out};
    pxhttp_decode(v, &s);
    if (!s.bad && !s.in_password)
        s.bad = "no ':' in the proxy credentials";
    return s.bad;
}

static void pxhttp_wipe_credentials(filter_pxhttp_req_t *out)
{
    memset(out->user, 0, sizeof out->user);
    memset(out->password, 0, sizeof out->password);
    out->user_len = out->password_len = 0;
}

/* Find and read the Proxy-Authorization field(s) of the head. Returns NULL
 * or why the credentials are unusable (auth_bad). */
static const char *pxhttp_auth(const uint8_t *buf, filter_pxhttp_req_t *out)
{
    filter_cur_t c = filter_cur_make(buf, out->head_len);
    pxhttp_line_t l;
    const char *bad = NULL;
    pxhttp_next_line(&c, &l); /* the request line */
    while (pxhttp_next_line(&c, &l) && l.len > 0) {
        filter_cur_t name, value;
        pxhttp_field(buf, out->head_len, &l, &name, &value);
        if (!filter_cur_equals_lower(name, "proxy-authorization"))
            continue;
        if (out->has_auth) {
            bad = "more than one Proxy-Authorization field";
            break;
        }
        out->has_auth = true;
        bad = pxhttp_credentials(value, out);
    }
    if (bad) {
        out->auth_bad = true;
        pxhttp_wipe_credentials(out);
    }
    return bad;
}

/* The port's digits in an authority `host[:port]` (after a `[...]` or the
 * first ':'); 0 when there is no port or an empty one. */
static size_t pxhttp_port_digits(filter_cur_t a)
{
    size_t n = filter_cur_left(&a), p = 0;
    if (filter_cur_peek(&a, 0) == '[')
        while (p < n && filter_cur_peek(&a, p) != ']')
            p++;
    while (p < n && filter_cur_peek(&a, p) != ':')
        p++;
    return p < n ? n - p - 1 : 0;
}

/* Split an absolute-form target `scheme "://" authority rest`; the
 * authority ends at '/', '?', '#' or the end (RFC 3986 §3.2). */
static void pxhttp_split_uri(filter_cur_t t, filter_cur_t *scheme, filter_cur_t *auth,
                             filter_cur_t *rest)
{
    size_t n = 0;
    while (filter_cur_peek(&t, n) >= 0 && filter_cur_peek(&t, n) != ':')
        n++;
    *scheme = filter_cur_sub(&t, n);
    filter_cur_skip(&t, 3); /* "://", checked by http_head.h */
    n = 0;
    for (int b; (b = filter_cur_peek(&t, n)) >= 0 && b != '/' && b != '?' && b != '#';)
        n++;
    *auth = filter_cur_sub(&t, n);
    *rest = filter_cur_sub(&t, filter_cur_left(&t));
}

/* The target of a complete head that http_head.h read a host from: where
 * the authority and the rest are, the port, and the refusals of a proxy. */
static filter_pxhttp_result_t pxhttp_target(const uint8_t *buf, const filter_http_head_t *h,
                                            filter_pxhttp_req_t *out)
{
    filter_cur_t c = filter_cur_make(buf, out->head_len);
    pxhttp_line_t l;
    pxhttp_next_line(&c, &l);
    pxhttp_reqline_t rl = pxhttp_split_reqline(buf, out->head_len, &l);
    filter_cur_t scheme, auth = rl.target, rest = {0};
    if (!h->is_connect) {
        pxhttp_split_uri(rl.target, &scheme, &auth, &rest);
        /* RFC 3986 §3.1: schemes are case-insensitive. */
        if (!filter_cur_equals_lower(scheme, "http"))
            return pxhttp_answer(out, FILTER_PXHTTP_BAD,
                                 "proxy request for a scheme other than http");
        for (size_t i = 0; filter_cur_peek(&auth, i) >= 0; i++)
            if (filter_cur_peek(&auth, i) == '@')
                return pxhttp_answer(out, FILTER_PXHTTP_BAD,
                                     "userinfo in the request URI (RFC 9110 §4.2.4)");
        out->path_off = (size_t)(rest.base - buf);
        out->path_len = filter_cur_left(&rest);
    }
    out->auth_off = (size_t)(auth.base - buf);
    out->auth_len = filter_cur_left(&auth);

    size_t digits = pxhttp_port_digits(auth);
    if (h->is_connect && digits == 0)
        return pxhttp_answer(out, FILTER_PXHTTP_BAD, "CONNECT without a port (RFC 9112 §3.2.3)");
    if (digits > 0 && h->port == 0)
        return pxhttp_answer(out, FILTER_PXHTTP_BAD, "port 0 in the request-target");
    out->port = digits > 0 ? h->port : (uint16_t)80;
    return FILTER_PXHTTP_OK;
}

filter_pxhttp_result_t filter_pxhttp_parse(const uint8_t *buf, size_t len, size_t max_head,
                                           filter_pxhttp_req_t *out)
{
    memset(out, 0, sizeof *out);
    out->detail = "";
    if (buf == NULL)
        len = 0;

    filter_http_head_t h;
    out->head = filter_http_head_parse(buf, len, max_head, &h);
    out->detail = h.detail;
    switch (out->head) {
    case FILTER_HTTP_NEED_MORE:
        return FILTER_PXHTTP_NEED_MORE;
    case FILTER_HTTP_TOO_BIG:
        return FILTER_PXHTTP_TOO_BIG;
    case FILTER_HTTP_NOT_HTTP:
        return FILTER_PXHTTP_NOT_HTTP;
    case FILTER_HTTP_NAME:
        break;
    case FILTER_HTTP_NO_NAME:
    case FILTER_HTTP_MULTI_HOST:
    case FILTER_HTTP_BAD_NAME:
        out->head_len = h.head_len;
        return FILTER_PXHTTP_BAD;
    }
    out->head_len = h.head_len;
    if (!h.from_uri) {
        out->head = FILTER_HTTP_BAD_NAME;
        return pxhttp_answer(out, FILTER_PXHTTP_BAD,
                             "origin-form request to a proxy (no absolute URI)");
    }
    filter_pxhttp_result_t r = pxhttp_target(buf, &h, out);
    if (r != FILTER_PXHTTP_OK) {
        out->head = FILTER_HTTP_BAD_NAME;
        out->auth_off = out->auth_len = out->path_off = out->path_len = out->port = 0;
        return r;
    }

    out->kind = h.is_connect ? FILTER_PXHTTP_CONNECT : FILTER_PXHTTP_FORWARD;
    memcpy(out->host, h.name, h.name_len + 1);
    out->host_len = h.name_len;
    out->is_addr = h.is_addr;
    out->addr = h.addr;
    out->host_conflict = h.host_conflict;
    const char *bad = pxhttp_auth(buf, out);
    if (bad)
        return pxhttp_answer(out, FILTER_PXHTTP_OK, bad);
    return pxhttp_answer(out, FILTER_PXHTTP_OK,
                         out->kind == FILTER_PXHTTP_CONNECT ? "CONNECT request"
                                                            : "absolute-form request to forward");
}

/* Append the bytes under c. */
static void pxhttp_wr_cur(filter_wr_t *w, filter_cur_t c)
{
    size_t n = filter_cur_left(&c);
    filter_wr_bytes(w, filter_cur_take(&c, n), n);
}

static void pxhttp_wr_str(filter_wr_t *w, const char *s)
{
    filter_wr_bytes(w, s, strlen(s));
}

/* Fields the rewrite drops: Proxy and Proxy-*, Connection, Keep-Alive. */
static bool pxhttp_dropped(filter_cur_t name)
{
    static const char proxy[] = "proxy";
    if (filter_cur_equals_lower(name, "connection") ||
        filter_cur_equals_lower(name, "keep-alive") || filter_cur_equals_lower(name, proxy))
        return true;
    if (filter_cur_left(&name) <= sizeof proxy - 1)
        return false;
    for (size_t i = 0; i < sizeof proxy - 1; i++)
        if (filter_ascii_lower(filter_cur_peek(&name, i)) != proxy[i])
            return false;
    return filter_cur_peek(&name, sizeof proxy - 1) == '-';
}

/* The origin-form request line: method, the path (`/` when empty, without a
 * fragment), version (RFC 9112 §3.2.1). */
static void pxhttp_wr_reqline(filter_wr_t *w, const uint8_t *buf, size_t len,
                              const filter_pxhttp_req_t *req, const pxhttp_line_t *l)
{
    pxhttp_reqline_t rl = pxhttp_split_reqline(buf, len, l);
    filter_cur_t path = filter_cur_window(buf, len, req->path_off, req->path_len);
    size_t n = 0;
    while (filter_cur_peek(&path, n) >= 0 && filter_cur_peek(&path, n) != '#')
        n++;
    path = filter_cur_sub(&path, n);
    pxhttp_wr_cur(w, rl.method);
    pxhttp_wr_str(w, " ");
    if (filter_cur_peek(&path, 0) != '/')
        pxhttp_wr_str(w, "/");
    pxhttp_wr_cur(w, path);
    pxhttp_wr_str(w, " ");
    pxhttp_wr_cur(w, rl.version);
    pxhttp_wr_str(w, "\r\n");
}

static void pxhttp_wr_host(filter_wr_t *w, const uint8_t *buf, size_t len,
                           const filter_pxhttp_req_t *req)
{
    pxhttp_wr_str(w, "Host: ");
    pxhttp_wr_cur(w, filter_cur_window(buf, len, req->auth_off, req->auth_len));
    pxhttp_wr_str(w, "\r\n");
}

int filter_pxhttp_rewrite(const uint8_t *buf, size_t len, const filter_pxhttp_req_t *req,
                          uint8_t *out, size_t cap)
{
    if (buf == NULL || req == NULL || req->kind != FILTER_PXHTTP_FORWARD || req->head_len > len ||
        req->auth_off > req->head_len || req->auth_len > req->head_len - req->auth_off ||
        req->path_off > req->head_len || req->path_len > req->head_len - req->path_off)
        return -EINVAL;
    size_t hl = req->head_len;
    filter_wr_t w = filter_wr_make(out, out ? cap : 0);
    filter_cur_t c = filter_cur_make(buf, hl);
    pxhttp_line_t l;
    if (!pxhttp_next_line(&c, &l))
        return -EINVAL;
    pxhttp_wr_reqline(&w, buf, hl, req, &l);

    /* RFC 9112 §3.2.2: the Host the origin sees is the URI's authority. */
    bool has_host = false;
    filter_cur_t scan = c;
    while (pxhttp_next_line(&scan, &l) && l.len > 0) {
        filter_cur_t name, value;
        pxhttp_field(buf, hl, &l, &name, &value);
        has_host = has_host || filter_cur_equals_lower(name, "host");
    }
    if (!has_host)
        pxhttp_wr_host(&w, buf, hl, req);

    while (pxhttp_next_line(&c, &l) && l.len > 0) {
        filter_cur_t name, value;
        pxhttp_field(buf, hl, &l, &name, &value);
        if (pxhttp_dropped(name))
            continue;
        if (filter_cur_equals_lower(name, "host")) {
            pxhttp_wr_host(&w, buf, hl, req);
            continue;
        }
        pxhttp_wr_cur(&w, filter_cur_window(buf, hl, l.off, l.len));
        pxhttp_wr_str(&w, "\r\n");
    }
    pxhttp_wr_str(&w, "Connection: close\r\n\r\n");
    if (!filter_wr_ok(&w))
        return -ENOSPC;
    return (int)filter_wr_pos(&w);
}

/* One answer: status line, its own field line (or ""), and the body, which
 * reads `moat: ` pre [host] post. */
typedef struct pxhttp_form {
    const char *status;
    const char *field;
    const char *pre;
    bool names_host;
    const char *post;
} pxhttp_form_t;

static const pxhttp_form_t pxhttp_forms[] = {
    [FILTER_PXHTTP_ANSWER_200] = {"200 Connection established", NULL, NULL, false, NULL},
    [FILTER_PXHTTP_ANSWER_400] = {"400 Bad Request", "", "bad proxy request", false, ""},
    [FILTER_PXHTTP_ANSWER_403] = {"403 Forbidden", "X-Proxy-Error: blocked-by-allowlist\r\n", "",
                                  true, " is not on the egress allowlist"},
    [FILTER_PXHTTP_ANSWER_407] = {"407 Proxy Authentication Required",
                                  "Proxy-Authenticate: Basic realm=\"moat\"\r\n",
                                  "proxy authentication required", false, ""},
    [FILTER_PXHTTP_ANSWER_502_DNS] = {"502 Bad Gateway", "X-Proxy-Error: dns-failure\r\n", "", true,
                                      " does not resolve"},
    [FILTER_PXHTTP_ANSWER_502_DIAL] = {"502 Bad Gateway", "X-Proxy-Error: dial-failed\r\n",
                                       "cannot connect to ", true, ""},
    [FILTER_PXHTTP_ANSWER_504_TIMEOUT] = {"504 Gateway Timeout",
                                          "X-Proxy-Error: connect-timeout\r\n",
                                          "timed out connecting to ", true, ""},
};

int filter_pxhttp_format(filter_pxhttp_answer_t answer, const char *host, size_t host_len,
                         char *buf, size_t cap)
{
    if (buf == NULL)
        cap = 0;
    if (cap > 0)
        buf[0] = '\0';
    if ((unsigned)answer >= sizeof pxhttp_forms / sizeof pxhttp_forms[0])
        return -EINVAL;
    const pxhttp_form_t *f = &pxhttp_forms[answer];
    int w;
    if (f->field == NULL) {
        w = snprintf(buf, cap, "HTTP/1.1 %s\r\n\r\n", f->status);
    } else {
        /* The same sanitising as filter_http_format_403(). */
        char clean[FILTER_HTTP_NAME_MAX + 1];
        size_t n = 0;
        for (; f->names_host && host != NULL && n < host_len && n < FILTER_HTTP_NAME_MAX; n++) {
            unsigned char c = (unsigned char)host[n];
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']';
            clean[n] = ok ? (char)c : '?';
        }
        clean[n] = '\0';
        const char *shown = !f->names_host ? "" : n > 0 ? clean : "(none)";
        char body[FILTER_HTTP_NAME_MAX + 64];
        int blen = snprintf(body, sizeof body, "moat: %s%s%s\n", f->pre, shown, f->post);
        if (blen < 0 || (size_t)blen >= sizeof body)
            return -ENOSPC;
        w = snprintf(buf, cap,
                     "HTTP/1.1 %s\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %d\r\n"
                     "Connection: close\r\n"
                     "%s"
                     "\r\n"
                     "%s",
                     f->status, blen, f->field, body);
    }
    if (w < 0 || (size_t)w >= cap) {
        if (cap > 0)
            buf[0] = '\0';
        return -ENOSPC;
    }
    return w;
}
