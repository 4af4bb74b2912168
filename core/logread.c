/* core/logread.c: read one decision log line back (see logread.h). */
#include "core/logread.h"

#include <string.h>

#include "filter/cursor.h"
#include "filter/name.h"

/* A value as read, unescaped. */
typedef struct lr_val {
    char buf[LOGREAD_NAME_MAX + 1];
    size_t len;
    bool number; /* JSON: written without quotes */
} lr_val_t;

/* n hex digits as one number, or -1. */
static long lr_hex_n(filter_cur_t *c, int n)
{
    long v = 0;
    for (int i = 0; i < n; i++) {
        int h = filter_hex_value(filter_cur_peek(c, 0));
        if (h < 0) {
            filter_cur_fail(c, FILTER_CUR_MALFORMED);
            return -1;
        }
        filter_cur_skip(c, 1);
        v = v * 16 + h;
    }
    return v;
}

static void lr_put(filter_cur_t *c, lr_val_t *v, int ch)
{
    if (v->len >= LOGREAD_NAME_MAX) {
        filter_cur_fail(c, FILTER_CUR_OVERLIMIT);
        return;
    }
    v->buf[v->len++] = (char)ch;
}

/* After a backslash: the escape, as core/log.c's log_escape writes it (text:
 * \xHH; JSON: \u00HH, and JSON's other short escapes for any writer). */
static void lr_escape(filter_cur_t *c, lr_val_t *v, bool json)
{
    int e = filter_cur_u8(c);
    long ch = -1;
    if (e == '"' || e == '\\')
        ch = e;
    else if (!json && e == 'x')
        ch = lr_hex_n(c, 2);
    else if (json && e == 'u')
        ch = lr_hex_n(c, 4);
    else if (json && e == '/')
        ch = '/';
    else if (json && e == 'n')
        ch = '\n';
    else if (json && e == 't')
        ch = '\t';
    else if (json && e == 'r')
        ch = '\r';
    else if (json && e == 'b')
        ch = '\b';
    else if (json && e == 'f')
        ch = '\f';
    if (ch < 0 || ch > 0xff) { /* a code point past Latin-1 is none of ours */
        filter_cur_fail(c, FILTER_CUR_MALFORMED);
        return;
    }
    lr_put(c, v, (int)ch);
}

/* A quoted value; the cursor is past the opening quote. Raw control and
 * non-ASCII bytes are refused: the writer escapes them. */
static void lr_quoted(filter_cur_t *c, lr_val_t *v, bool json)
{
    v->len = 0;
    while (filter_cur_ok(c)) {
        int ch = filter_cur_u8(c);
        if (!filter_cur_ok(c))
            break; /* unterminated */
        if (ch == '"')
            break;
        if (ch == '\\')
            lr_escape(c, v, json);
        else if (ch < 0x20 || ch >= 0x7f)
            filter_cur_fail(c, FILTER_CUR_MALFORMED);
        else
            lr_put(c, v, ch);
    }
    v->buf[v->len < LOGREAD_NAME_MAX ? v->len : LOGREAD_NAME_MAX] = '\0';
}

/* A text value without quotes: up to the next space or the end. */
static void lr_bare(filter_cur_t *c, lr_val_t *v)
{
    v->len = 0;
    for (int ch; filter_cur_ok(c) && (ch = filter_cur_peek(c, 0)) >= 0 && ch != ' ';) {
        filter_cur_skip(c, 1);
        if (ch == '\\')
            lr_escape(c, v, false);
        else if (ch == '"' || ch < 0x20 || ch >= 0x7f)
            filter_cur_fail(c, FILTER_CUR_MALFORMED);
        else
            lr_put(c, v, ch);
    }
    v->buf[v->len < LOGREAD_NAME_MAX ? v->len : LOGREAD_NAME_MAX] = '\0';
}

/* A key: [a-z_]+, at most LOGREAD_SHORT_MAX - 1 bytes. */
static void lr_key(filter_cur_t *c, char *key)
{
    size_t n = 0;
    for (int ch; (ch = filter_cur_peek(c, 0)) == '_' || (ch >= 'a' && ch <= 'z');) {
        if (n + 1 >= LOGREAD_SHORT_MAX) {
            filter_cur_fail(c, FILTER_CUR_OVERLIMIT);
            break;
        }
        key[n++] = (char)ch;
        filter_cur_skip(c, 1);
    }
    key[n] = '\0';
    if (n == 0)
        filter_cur_fail(c, FILTER_CUR_MALFORMED);
}

static void lr_short(filter_cur_t *c, char *dst, const lr_val_t *v)
{
    /* Short fields are ours (kind, verdict, an address...) and never hold
     * a NUL; one that does is no line of ours. */
    if (v->len >= LOGREAD_SHORT_MAX || memchr(v->buf, '\0', v->len)) {
        filter_cur_fail(c, FILTER_CUR_MALFORMED);
        return;
    }
    memcpy(dst, v->buf, v->len);
    dst[v->len] = '\0';
}

static unsigned lr_port(filter_cur_t *c, const lr_val_t *v)
{
    unsigned p = 0;
    for (size_t i = 0; i < v->len; i++) {
        if (v->buf[i] < '0' || v->buf[i] > '9' || p > 6553) {
            filter_cur_fail(c, FILTER_CUR_MALFORMED);
            return 0;
        }
        p = p * 10 + (unsigned)(v->buf[i] - '0');
    }
    if (v->len == 0 || p == 0 || p > 65535)
        filter_cur_fail(c, FILTER_CUR_MALFORMED);
    return p;
}

/* Put one field into the record; unknown keys are passed over (a newer
 * writer's fields). msg is checked by the caller. */
static void lr_field(filter_cur_t *c, logread_rec_t *r, const char *key, const lr_val_t *v)
{
    static const struct {
        const char *key;
        size_t off;
    } shorts[] = {
        {"time", offsetof(logread_rec_t, time)},
        {"kind", offsetof(logread_rec_t, kind)},
        {"listener", offsetof(logread_rec_t, listener)},
        {"client", offsetof(logread_rec_t, client)},
        {"tenant", offsetof(logread_rec_t, tenant)},
        {"dest", offsetof(logread_rec_t, dest)},
        {"qtype", offsetof(logread_rec_t, qtype)},
        {"verdict", offsetof(logread_rec_t, verdict)},
        {"reason", offsetof(logread_rec_t, reason)},
    };
    for (size_t i = 0; i < sizeof shorts / sizeof shorts[0]; i++)
        if (strcmp(key, shorts[i].key) == 0) {
            lr_short(c, (char *)r + shorts[i].off, v);
            return;
        }
    if (strcmp(key, "port") == 0) {
        r->port = lr_port(c, v);
    } else if (strcmp(key, "name") == 0) {
        memcpy(r->name, v->buf, v->len);
        r->name[v->len] = '\0';
        r->name_len = v->len;
        r->has_name = true;
    } else if (strcmp(key, "audit") == 0) {
        r->audit = v->len == 6 && memcmp(v->buf, "passed", 6) == 0;
    } else if (strcmp(key, "truncated") == 0) {
        r->truncated =
            (v->len == 1 && v->buf[0] == '1') || (v->len == 4 && !memcmp(v->buf, "true", 4));
    }
}

/* A text token up to the next space, kept as is (time, level). */
static void lr_token(filter_cur_t *c, lr_val_t *v)
{
    lr_bare(c, v);
    if (v->len == 0 || filter_cur_u8(c) != ' ')
        filter_cur_fail(c, FILTER_CUR_MALFORMED);
}

/* The next bytes are word, then a space or the end. */
static bool lr_at_word(const filter_cur_t *c, const char *word)
{
    size_t n = strlen(word);
    for (size_t i = 0; i < n; i++)
        if (filter_cur_peek(c, i) != (unsigned char)word[i])
            return false;
    int next = filter_cur_peek(c, n);
    return next < 0 || next == ' ';
}

static logread_status_t lr_text(filter_cur_t *c, logread_rec_t *r, lr_val_t *v)
{
    lr_token(c, v); /* time */
    lr_short(c, r->time, v);
    lr_token(c, v); /* level */
    static const char msg[] = "decision";
    if (!filter_cur_ok(c))
        return LOGREAD_MALFORMED;
    if (!lr_at_word(c, msg))
        return LOGREAD_OTHER;
    filter_cur_skip(c, sizeof msg - 1);
    char key[LOGREAD_SHORT_MAX];
    while (filter_cur_ok(c) && filter_cur_left(c) > 0) {
        if (filter_cur_u8(c) != ' ')
            filter_cur_fail(c, FILTER_CUR_MALFORMED);
        lr_key(c, key);
        if (filter_cur_u8(c) != '=')
            filter_cur_fail(c, FILTER_CUR_MALFORMED);
        if (!filter_cur_ok(c))
            break;
        if (filter_cur_peek(c, 0) == '"') {
            filter_cur_skip(c, 1);
            lr_quoted(c, v, false);
        } else {
            lr_bare(c, v);
        }
        if (filter_cur_ok(c))
            lr_field(c, r, key, v);
    }
    return filter_cur_ok(c) ? LOGREAD_DECISION : LOGREAD_MALFORMED;
}

static void lr_ws(filter_cur_t *c)
{
    for (int ch; (ch = filter_cur_peek(c, 0)) == ' ' || ch == '\t' || ch == '\r';)
        filter_cur_skip(c, 1);
}

/* A JSON value as the writer writes them: a string, an unsigned number,
 * true, false or null. */
static void lr_json_value(filter_cur_t *c, lr_val_t *v)
{
    int ch = filter_cur_peek(c, 0);
    v->len = 0;
    v->number = false;
    if (ch == '"') {
        filter_cur_skip(c, 1);
        lr_quoted(c, v, true);
        return;
    }
    while ((ch = filter_cur_peek(c, 0)) >= 0 &&
           ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z'))) {
        filter_cur_skip(c, 1);
        lr_put(c, v, ch);
    }
    v->buf[v->len < LOGREAD_NAME_MAX ? v->len : LOGREAD_NAME_MAX] = '\0';
    bool digits = v->len > 0 && v->buf[0] >= '0' && v->buf[0] <= '9';
    for (size_t i = 0; digits && i < v->len; i++)
        digits = v->buf[i] >= '0' && v->buf[i] <= '9';
    bool word = (v->len == 4 && (!memcmp(v->buf, "true", 4) || !memcmp(v->buf, "null", 4))) ||
                (v->len == 5 && !memcmp(v->buf, "false", 5));
    if (!digits && !word)
        filter_cur_fail(c, FILTER_CUR_MALFORMED);
    v->number = digits;
}

static logread_status_t lr_json(filter_cur_t *c, logread_rec_t *r, lr_val_t *v)
{
    char key[LOGREAD_SHORT_MAX];
    bool decision = false, any_msg = false;
    filter_cur_skip(c, 1); /* '{' */
    lr_ws(c);
    bool first = true;
    while (filter_cur_ok(c) && filter_cur_peek(c, 0) != '}') {
        if (!first && filter_cur_u8(c) != ',')
            filter_cur_fail(c, FILTER_CUR_MALFORMED);
        first = false;
        lr_ws(c);
        if (filter_cur_u8(c) != '"')
            filter_cur_fail(c, FILTER_CUR_MALFORMED);
        lr_key(c, key);
        if (filter_cur_u8(c) != '"')
            filter_cur_fail(c, FILTER_CUR_MALFORMED);
        lr_ws(c);
        if (filter_cur_u8(c) != ':')
            filter_cur_fail(c, FILTER_CUR_MALFORMED);
        lr_ws(c);
        if (!filter_cur_ok(c))
            break;
        lr_json_value(c, v);
        lr_ws(c);
        if (!filter_cur_ok(c))
            break;
        if (strcmp(key, "msg") == 0) {
            any_msg = true;
            decision = !v->number && v->len == 8 && memcmp(v->buf, "decision", 8) == 0;
        } else {
            lr_field(c, r, key, v);
        }
    }
    if (filter_cur_u8(c) != '}')
        filter_cur_fail(c, FILTER_CUR_MALFORMED);
    lr_ws(c);
    if (filter_cur_left(c) > 0)
        filter_cur_fail(c, FILTER_CUR_MALFORMED);
    if (!filter_cur_ok(c) || !any_msg)
        return LOGREAD_MALFORMED;
    return decision ? LOGREAD_DECISION : LOGREAD_OTHER;
}

logread_status_t logread_line(const char *line, size_t len, logread_rec_t *rec)
{
    memset(rec, 0, sizeof *rec);
    lr_val_t v;
    if (len > 0 && line[len - 1] == '\r') /* a log copied through a CRLF tool */
        len--;
    filter_cur_t c = filter_cur_make((const uint8_t *)line, len);
    logread_status_t st =
        filter_cur_peek(&c, 0) == '{' ? lr_json(&c, rec, &v) : lr_text(&c, rec, &v);
    if (st == LOGREAD_DECISION && (rec->kind[0] == '\0' || rec->verdict[0] == '\0'))
        st = LOGREAD_MALFORMED;
    if (st != LOGREAD_DECISION)
        memset(rec, 0, sizeof *rec);
    return st;
}
