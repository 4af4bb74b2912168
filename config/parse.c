/* config/parse.c: YAML text to a node tree, the error collector, and the
 * value parsers (durations, addresses, ports).
 *
 * libyaml's event API rather than yaml_parser_load(): the document loader
 * expands aliases into shared nodes (`&a [*a]` is even a cycle), so a walk
 * over its graph could loop or blow up exponentially. Building our own tree
 * from events lets us refuse aliases where they appear and bound the depth.
 */
#include "config/config_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "filter/addr.h"

/* ---- errors ---- */

int cfg_diag_vadd_in(cfg_diag_t *d, const char *file, unsigned line, unsigned col, const char *fmt,
                     va_list ap)
{
    if (d->n > CFG_MAX_ERRORS)
        return 0;
    char buf[512] = "";
    if (d->n == CFG_MAX_ERRORS)
        snprintf(buf, sizeof buf, "too many errors; stopping after %d", CFG_MAX_ERRORS);
    else if (vsnprintf(buf, sizeof buf, fmt, ap) < 0)
        return -ENOMEM; /* glibc's printf only fails when it cannot allocate */
    char *msg = strdup(buf), *fcopy = NULL;
    if (!msg || (file && !(fcopy = strdup(file))))
        goto fail;
    /* Grow one at a time: error lists are short and this path is cold. */
    cfg_error_t *items = realloc(d->items, (d->n + 1) * sizeof *items);
    if (!items)
        goto fail;
    d->items = items;
    d->items[d->n++] = (cfg_error_t){.file = fcopy, .line = line, .col = col, .msg = msg};
    return 0;
fail:
    free(msg);
    free(fcopy);
    return -ENOMEM;
}

int cfg_diag_vadd(cfg_diag_t *d, unsigned line, unsigned col, const char *fmt, va_list ap)
{
    return cfg_diag_vadd_in(d, NULL, line, col, fmt, ap);
}

static int cfg_diag_add_in(cfg_diag_t *d, const char *file, unsigned line, unsigned col,
                           const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int cfg_diag_add_in(cfg_diag_t *d, const char *file, unsigned line, unsigned col,
                           const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cfg_diag_vadd_in(d, file, line, col, fmt, ap);
    va_end(ap);
    return rc;
}

int cfg_diag_move(cfg_diag_t *d, cfg_diag_t *src, const char *file)
{
    int rc = 0;
    for (size_t i = 0; i < src->n && rc == 0; i++)
        rc = cfg_diag_add_in(d, file, src->items[i].line, src->items[i].col, "%s",
                             src->items[i].msg);
    cfg_diag_free(src);
    return rc;
}

int cfg_diag_add(cfg_diag_t *d, unsigned line, unsigned col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = cfg_diag_vadd(d, line, col, fmt, ap);
    va_end(ap);
    return rc;
}

const char *cfg_show(const char *s, size_t len, char *buf)
{
    size_t max = CFG_SHOW_MAX - 4, o = 0;
    if (len == 0)
        return strcpy(buf, "\"\""); /* so "mode: : ..." reads as mode: "": ... */
    for (size_t i = 0; i < len && o < max; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (len > max) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

/* ---- YAML to nodes ---- */

static unsigned cfg_u(size_t v)
{
    return v > 0xfffffffeu ? 0xffffffffu : (unsigned)v;
}

static cfg_node_t *cfg_node_new(cfg_node_kind_t kind, const yaml_mark_t *m)
{
    cfg_node_t *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->kind = kind;
    n->line = cfg_u(m->line + 1);
    n->col = cfg_u(m->column + 1);
    return n;
}

void cfg_node_free(cfg_node_t *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n; i++)
        cfg_node_free(n->kids[i]);
    free(n->kids);
    free(n->str);
    free(n);
}

static int cfg_node_append(cfg_node_t *parent, cfg_node_t *kid)
{
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        cfg_node_t **kids = realloc(parent->kids, cap * sizeof *kids);
        if (!kids)
            return -ENOMEM;
        parent->kids = kids;
        parent->cap = cap;
    }
    parent->kids[parent->n++] = kid;
    return 0;
}

/* libyaml counts marks in characters; our text is UTF-8 (anything else
 * fails earlier), so count lead bytes to find the byte offset. */
static size_t cfg_char_to_byte(const char *text, size_t len, size_t index)
{
    size_t i = 0;
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        i = 3; /* the BOM is not counted */
    for (; i < len; i++) {
        if (((unsigned char)text[i] & 0xc0) == 0x80)
            continue;
        if (index == 0)
            return i;
        index--;
    }
    return len;
}

/* Unquoted `- *.example.com` makes libyaml scan an alias and fail; say what
 * the operator meant instead of "did not find expected alphabetic or numeric
 * character". Returns true when the error was reported that way. */
static bool cfg_yaml_alias_hint(const yaml_parser_t *p, const char *text, size_t len, cfg_diag_t *d,
                                int *rc)
{
    if (p->error != YAML_SCANNER_ERROR || !p->context ||
        strcmp(p->context, "while scanning an alias") != 0)
        return false;
    size_t off = cfg_char_to_byte(text, len, p->context_mark.index);
    if (off >= len || text[off] != '*')
        return false;
    size_t end = off;
    while (end < len && !strchr(" \t\r\n,[]{}#", text[end]))
        end++;
    char show[CFG_SHOW_MAX];
    cfg_show(text + off, end - off, show);
    unsigned line = cfg_u(p->context_mark.line + 1), col = cfg_u(p->context_mark.column + 1);
    if (end - off >= 2 && text[off + 1] == '.')
        *rc = cfg_diag_add(d, line, col, "a wildcard must be quoted: \"%s\"", show);
    else
        *rc = cfg_diag_add(d, line, col,
                           "YAML reads a leading '*' as an alias; quote the value: \"%s\"", show);
    return true;
}

static int cfg_yaml_error(const yaml_parser_t *p, const char *text, size_t len, cfg_diag_t *d)
{
    if (p->error == YAML_MEMORY_ERROR)
        return -ENOMEM;
    int rc = 0;
    const char *problem = p->problem ? p->problem : "unknown error";
    if (p->error == YAML_READER_ERROR) {
        /* Reader errors carry a byte offset, not a mark. */
        unsigned line = 1, col = 1;
        for (size_t i = 0; i < p->problem_offset && i < len; i++) {
            if (text[i] == '\n')
                line++, col = 1;
            else
                col++;
        }
        if (p->problem_value >= 0)
            rc = cfg_diag_add(d, line, col, "YAML: %s (#%X)", problem, (unsigned)p->problem_value);
        else
            rc = cfg_diag_add(d, line, col, "YAML: %s", problem);
    } else if (!cfg_yaml_alias_hint(p, text, len, d, &rc)) {
        unsigned line = cfg_u(p->problem_mark.line + 1), col = cfg_u(p->problem_mark.column + 1);
        if (p->context)
            rc = cfg_diag_add(d, line, col, "YAML syntax error: %s (%s at %u:%u)", problem,
                              p->context, cfg_u(p->context_mark.line + 1),
                              cfg_u(p->context_mark.column + 1));
        else
            rc = cfg_diag_add(d, line, col, "YAML syntax error: %s", problem);
    }
    return rc < 0 ? rc : -EINVAL;
}

/* The tree being built from libyaml's events: its root, the containers
 * still open (innermost last), and whether the stream is over. */
typedef struct cfg_builder {
    cfg_node_t *top;
    cfg_node_t *stack[CFG_MAX_DEPTH];
    size_t depth;
    unsigned docs;
    bool done;
    cfg_diag_t *d;
} cfg_builder_t;

/* A scalar node for ev. 0 or -ENOMEM (*out NULL). */
static int cfg_scalar_node(const yaml_event_t *ev, cfg_node_t **out)
{
    *out = NULL;
    cfg_node_t *node = cfg_node_new(CFG_NODE_SCALAR, &ev->start_mark);
    if (!node || !(node->str = malloc(ev->data.scalar.length + 1))) {
        cfg_node_free(node);
        return -ENOMEM;
    }
    memcpy(node->str, ev->data.scalar.value, ev->data.scalar.length);
    node->str[ev->data.scalar.length] = '\0';
    node->len = ev->data.scalar.length;
    /* Only plain scalars resolve to null, bool or int: "443" stays a
     * string, and so does one tagged !!str or ! (non-specific). */
    node->plain =
        ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        (!ev->data.scalar.tag || (strcmp((const char *)ev->data.scalar.tag, "!") != 0 &&
                                  strcmp((const char *)ev->data.scalar.tag, YAML_STR_TAG) != 0));
    *out = node;
    return 0;
}

/* Hang node (owned from here on) under the innermost open container, or
 * make it the root; a container becomes the innermost. 0, -EINVAL (too
 * deep, reported) or -ENOMEM. */
static int cfg_builder_place(cfg_builder_t *b, cfg_node_t *node)
{
    int rc = 0;
    bool container = node->kind == CFG_NODE_SEQ || node->kind == CFG_NODE_MAP;
    if (container && b->depth == CFG_MAX_DEPTH) {
        rc = cfg_diag_add(b->d, node->line, node->col, "nested deeper than %d levels",
                          CFG_MAX_DEPTH);
        rc = rc < 0 ? rc : -EINVAL;
        goto fail;
    }
    if (b->depth > 0) {
        if ((rc = cfg_node_append(b->stack[b->depth - 1], node)) != 0)
            goto fail;
    } else if (!b->top) {
        b->top = node;
    } else {
        cfg_node_free(node); /* cannot happen: one root per document */
        return 0;
    }
    if (container)
        b->stack[b->depth++] = node;
    return 0;
fail:
    cfg_node_free(node);
    return rc;
}

/* Apply one event to the tree. 0 or a negative errno; what is wrong with
 * the YAML goes to b->d (only nesting too deep also stops the build). */
static int cfg_builder_event(cfg_builder_t *b, const yaml_event_t *ev)
{
    cfg_node_t *node = NULL;
    int rc;
    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        b->done = true;
        return 0;
    case YAML_DOCUMENT_START_EVENT:
        /* One file, one config: a second document would be silently
         * ignored by most loaders, so it is an error here. */
        if (++b->docs > 1) {
            b->done = true;
            return cfg_diag_add(b->d, cfg_u(ev->start_mark.line + 1),
                                cfg_u(ev->start_mark.column + 1),
                                "only one YAML document per config file");
        }
        return 0;
    case YAML_ALIAS_EVENT:
        node = cfg_node_new(CFG_NODE_BAD, &ev->start_mark);
        if (!node)
            return -ENOMEM;
        rc = cfg_diag_add(b->d, node->line, node->col,
                          "YAML aliases (*%s) are not supported; a wildcard must be quoted",
                          (const char *)ev->data.alias.anchor);
        if (rc != 0) {
            cfg_node_free(node);
            return rc;
        }
        break;
    case YAML_SCALAR_EVENT:
        if ((rc = cfg_scalar_node(ev, &node)) != 0)
            return rc;
        break;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        node = cfg_node_new(ev->type == YAML_SEQUENCE_START_EVENT ? CFG_NODE_SEQ : CFG_NODE_MAP,
                            &ev->start_mark);
        if (!node)
            return -ENOMEM;
        break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (b->depth > 0)
            b->depth--;
        return 0;
    default:
        return 0;
    }
    return cfg_builder_place(b, node);
}

int cfg_yaml_load(const char *text, size_t len, cfg_node_t **root, cfg_diag_t *d)
{
    *root = NULL;
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p))
        return -ENOMEM;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);

    cfg_builder_t b = {.d = d};
    int rc = 0;
    while (!b.done && rc == 0) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            rc = cfg_yaml_error(&p, text, len, d);
            break;
        }
        rc = cfg_builder_event(&b, &ev);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    if (rc != 0) {
        cfg_node_free(b.top);
        return rc;
    }
    *root = b.top;
    return 0;
}

/* ---- values ---- */

int cfg_duration_parse(const char *s, size_t len, uint64_t *ms, const char **why)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    *ms = 0;
    *why = NULL;
    size_t i = 0;
    uint64_t v = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned dgt = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - dgt) / 10) {
            *why = "duration too large";
            return -EINVAL;
        }
        v = v * 10 + dgt;
    }
    if (i == 0) {
        *why = "expected a duration like 250ms, 2s, 5m or 1h";
        return -EINVAL;
    }
    if (i == len) {
        *why = "duration needs a unit (ms, s, m, h)";
        return -EINVAL;
    }
    if (s[i] == '.') {
        *why = "a duration is a whole number and a unit (1500ms, not 1.5s)";
        return -EINVAL;
    }
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        if (strlen(units[u].unit) != len - i || memcmp(units[u].unit, s + i, len - i) != 0)
            continue;
        if (v > UINT64_MAX / units[u].ms) {
            *why = "duration too large";
            return -EINVAL;
        }
        *ms = v * units[u].ms;
        return 0;
    }
    *why = "unknown duration unit (use ms, s, m, h)";
    return -EINVAL;
}

int cfg_parse_duration(const char *s, size_t len, uint64_t *ms)
{
    const char *why;
    return cfg_duration_parse(s, len, ms, &why);
}

/* Decimal digits from s[*i]; saturates instead of overflowing so "99999999"
 * is reported as too large rather than wrapping. Returns false on no digit. */
static bool cfg_digits(const char *s, size_t len, size_t *i, uint32_t *out)
{
    size_t start = *i;
    uint32_t v = 0;
    for (; *i < len && s[*i] >= '0' && s[*i] <= '9'; (*i)++)
        v = v > 1000000u ? v : v * 10 + (uint32_t)(s[*i] - '0');
    *out = v;
    return *i > start;
}

int cfg_port_range_parse(const char *s, size_t len, filter_port_range_t *out, const char **why)
{
    memset(out, 0, sizeof *out);
    *why = "expected a port (443) or a range (8000-8100)";
    size_t i = 0;
    uint32_t lo, hi;
    if (!cfg_digits(s, len, &i, &lo))
        return -EINVAL;
    hi = lo;
    if (i < len && s[i] == '-') {
        i++;
        if (!cfg_digits(s, len, &i, &hi))
            return -EINVAL;
    }
    if (i != len)
        return -EINVAL;
    if (lo == 0 || hi == 0) {
        *why = "port 0 is not allowed (ports are 1-65535)";
        return -EINVAL;
    }
    if (lo > 65535 || hi > 65535) {
        *why = "port over 65535";
        return -EINVAL;
    }
    if (lo > hi) {
        *why = "range runs backwards (first port above last)";
        return -EINVAL;
    }
    out->lo = (uint16_t)lo;
    out->hi = (uint16_t)hi;
    *why = NULL;
    return 0;
}

int cfg_parse_port_range(const char *s, size_t len, filter_port_range_t *out)
{
    const char *why;
    return cfg_port_range_parse(s, len, out, &why);
}

static bool cfg_has_alpha(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z'))
            return true;
    return false;
}

/* An address's text split into its host and port. */
typedef struct cfg_hostport {
    const char *host, *port; /* port NULL: none given */
    size_t host_len, port_len;
    bool v6; /* bracketed, or a bare IPv6 address */
} cfg_hostport_t;

/* Split s: `[v6]:port`, `[v6]`, `v4:port`, `v4` or a bare v6 address. 0, or
 * -EINVAL with *why. */
static int cfg_hostport_split(const char *s, size_t len, cfg_hostport_t *hp, const char **why)
{
    *hp = (cfg_hostport_t){.host = s, .host_len = len};
    if (s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close) {
            *why = "missing ']' after an IPv6 address";
            return -EINVAL;
        }
        hp->host = s + 1;
        hp->host_len = (size_t)(close - hp->host);
        size_t rest = len - (size_t)(close - s) - 1;
        if (rest > 0) {
            if (close[1] != ':') {
                *why = "expected ':' and a port after ']'";
                return -EINVAL;
            }
            hp->port = close + 2;
            hp->port_len = rest - 1;
        }
        hp->v6 = true;
        return 0;
    }
    const char *colon = memchr(s, ':', len);
    if (colon && memchr(colon + 1, ':', len - (size_t)(colon - s) - 1)) {
        /* Two colons or more: a bare IPv6 address, which cannot carry a
         * port without brackets. */
        hp->v6 = true;
    } else if (colon) {
        hp->host_len = (size_t)(colon - s);
        hp->port = colon + 1;
        hp->port_len = len - hp->host_len - 1;
    }
    return 0;
}

/* The port hp gives, or default_port when it gives none (0: a port is
 * required). 0, or -EINVAL with *why. */
static int cfg_hostport_port(const cfg_hostport_t *hp, uint16_t default_port, bool port0_ok,
                             uint16_t *port, const char **why)
{
    *port = default_port;
    if (!hp->port) {
        if (default_port != 0)
            return 0;
        *why = hp->v6 ? "needs a port, with the IPv6 address in brackets: [::1]:5353"
                      : "needs a port, e.g. 127.0.0.1:5353";
        return -EINVAL;
    }
    size_t i = 0;
    uint32_t p;
    if (!cfg_digits(hp->port, hp->port_len, &i, &p) || i != hp->port_len) {
        *why = "bad port";
        return -EINVAL;
    }
    if (p > 65535) {
        *why = "port over 65535";
        return -EINVAL;
    }
    if (p == 0 && !port0_ok) {
        *why = "port 0 is not allowed (ports are 1-65535)";
        return -EINVAL;
    }
    *port = (uint16_t)p;
    return 0;
}

int cfg_hostport_parse(const char *s, size_t len, uint16_t default_port, bool port0_ok,
                       cfg_addr_t *out, const char **why)
{
    memset(out, 0, sizeof *out);
    *why = NULL;
    if (len == 0) {
        *why = "empty address";
        return -EINVAL;
    }
    if (len >= sizeof out->text || memchr(s, '\0', len) != NULL) {
        *why = "not an IP address";
        return -EINVAL;
    }

    cfg_hostport_t hp;
    if (cfg_hostport_split(s, len, &hp, why) != 0)
        return -EINVAL;
    filter_addr_t addr;
    if (filter_addr_parse(hp.host, hp.host_len, &addr) != 0) {
        if (!hp.v6 && cfg_has_alpha(hp.host, hp.host_len))
            *why = "host names are not allowed here, only IP addresses";
        else
            *why = hp.v6 ? "not a valid IPv6 address" : "not a valid IPv4 address";
        return -EINVAL;
    }
    if (s[0] == '[' && memchr(hp.host, ':', hp.host_len) == NULL) {
        *why = "brackets are only for IPv6 addresses";
        return -EINVAL;
    }
    uint16_t port;
    if (cfg_hostport_port(&hp, default_port, port0_ok, &port, why) != 0)
        return -EINVAL;

    out->sa_len = filter_addr_to_sockaddr(&addr, port, &out->sa);
    memcpy(out->text, s, len);
    out->text[len] = '\0';
    return 0;
}

int cfg_parse_hostport(const char *s, size_t len, uint16_t default_port, cfg_addr_t *out)
{
    const char *why;
    return cfg_hostport_parse(s, len, default_port, false, out, &why);
}
