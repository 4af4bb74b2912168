/* filter/name.c: host-name normalisation and allowlist patterns (SPEC §2.1).
 *
 * Hand-written rather than ldns_dname_*: we need the presentation form of
 * names that arrive as text (SNI, Host, YAML), a strict byte whitelist, and
 * distinct error codes for `moat check`; ldns works on wire-format rdfs and
 * accepts escapes we must refuse.
 */
#include "filter/name.h"

#include <string.h>

const char *filter_name_strerror(int status)
{
    switch ((filter_name_status_t)status) {
    case FILTER_NAME_OK:
        return "ok";
    case FILTER_NAME_EEMPTY:
        return "empty name";
    case FILTER_NAME_EEMPTY_LABEL:
        return "empty label";
    case FILTER_NAME_ELABEL_LONG:
        return "label longer than 63 octets";
    case FILTER_NAME_ETOO_LONG:
        return "name longer than 253 octets";
    case FILTER_NAME_EBAD_CHAR:
        return "character not allowed in a host name (letters, digits, '-' and '_' only)";
    case FILTER_NAME_ENOT_ASCII:
        return "non-ASCII name: give IDNs in A-label (xn--) form";
    case FILTER_NAME_EWILD_ALONE:
        return "'*' alone would allow every name; list the names instead";
    case FILTER_NAME_EWILD_TLD:
        return "wildcard over a single label (like *.com) is not allowed";
    case FILTER_NAME_EWILD_POS:
        return "'*' is only allowed as the whole first label (*.example.com)";
    case FILTER_NAME_ENUMERIC:
        return "last label is all digits: not a host name (an address?)";
    }
    return "unknown name error";
}

static int name_byte_class(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')
        return 0;
    if (c >= 'A' && c <= 'Z')
        return 1; /* folded */
    if (c >= 0x80)
        return FILTER_NAME_ENOT_ASCII;
    return FILTER_NAME_EBAD_CHAR;
}

/* A byte of a label as normalised (lowercase letters, digits, '-', '_'),
 * or 0 for a byte no label may hold (name_byte_class then says which
 * error). One load per byte instead of name_byte_class's compares: the
 * normaliser runs on every DNS query and every SNI and Host. Filled before
 * main (a constant table spelled out would be 64 lines of initialisers). */
static unsigned char name_fold[256];

__attribute__((constructor)) static void name_fold_init(void)
{
    for (unsigned c = 0; c < 256; c++) {
        int cls = name_byte_class((unsigned char)c);
        name_fold[c] = (unsigned char)(cls == 0 ? c : cls == 1 ? c + ('a' - 'A') : 0);
    }
}

int filter_name_normalize(const char *in, size_t in_len, char *out, size_t *out_len)
{
    out[0] = '\0';
    *out_len = 0;
    if (in_len > 0 && in[in_len - 1] == '.')
        in_len--; /* one trailing dot ignored; a second one makes an empty label */
    if (in_len == 0)
        return FILTER_NAME_EEMPTY;
    if (in_len > FILTER_NAME_MAX)
        return FILTER_NAME_ETOO_LONG;

    size_t label_len = 0;
    bool label_all_digits = true;
    for (size_t i = 0; i < in_len; i++) {
        unsigned char c = (unsigned char)in[i];
        unsigned char f = name_fold[c];
        if (f != 0) {
            out[i] = (char)f;
            label_len++;
            label_all_digits &= (unsigned)(c - '0') < 10;
            continue;
        }
        if (c != '.') {
            out[0] = '\0';
            return name_byte_class(c);
        }
        if (label_len == 0) {
            out[0] = '\0';
            return FILTER_NAME_EEMPTY_LABEL;
        }
        if (label_len > FILTER_LABEL_MAX) {
            out[0] = '\0';
            return FILTER_NAME_ELABEL_LONG;
        }
        out[i] = '.';
        label_len = 0;
        label_all_digits = true;
    }
    if (label_len > FILTER_LABEL_MAX) {
        out[0] = '\0';
        return FILTER_NAME_ELABEL_LONG;
    }
    if (label_len == 0) {
        out[0] = '\0';
        return FILTER_NAME_EEMPTY_LABEL; /* "a.." after dropping one dot */
    }
    if (label_all_digits) {
        out[0] = '\0';
        return FILTER_NAME_ENUMERIC;
    }
    out[in_len] = '\0';
    *out_len = in_len;
    return FILTER_NAME_OK;
}

int filter_pattern_parse(const char *in, size_t in_len, filter_pattern_t *out)
{
    memset(out, 0, sizeof *out);
    if (in_len == 1 && in[0] == '*')
        return FILTER_NAME_EWILD_ALONE;

    const char *base = in;
    size_t base_len = in_len;
    if (in_len >= 2 && in[0] == '*' && in[1] == '.') {
        out->wildcard = true;
        base += 2;
        base_len -= 2;
    }
    if (base_len > 0 && memchr(base, '*', base_len) != NULL) {
        out->wildcard = false; /* a failed parse leaves nothing behind */
        return FILTER_NAME_EWILD_POS;
    }

    int rc = filter_name_normalize(base, base_len, out->name, &out->len);
    if (rc != FILTER_NAME_OK) {
        out->wildcard = false;
        return rc;
    }
    /* The wildcard's own first label counts towards the name's length. */
    if (out->wildcard && out->len + 2 > FILTER_NAME_MAX) {
        memset(out, 0, sizeof *out);
        return FILTER_NAME_ETOO_LONG;
    }
    if (out->wildcard && memchr(out->name, '.', out->len) == NULL) {
        memset(out, 0, sizeof *out);
        return FILTER_NAME_EWILD_TLD;
    }
    return FILTER_NAME_OK;
}

bool filter_text_looks_like_addr(const char *in, size_t in_len)
{
    if (in_len == 0)
        return false; /* and in may be NULL: memchr must not see it */
    if (memchr(in, ':', in_len) != NULL || memchr(in, '/', in_len) != NULL)
        return true;
    if (in_len > 0 && in[in_len - 1] == '.')
        in_len--;
    size_t i = in_len;
    while (i > 0 && in[i - 1] != '.')
        i--;
    if (i == in_len)
        return false; /* empty last label */
    for (size_t j = i; j < in_len; j++)
        if (in[j] < '0' || in[j] > '9')
            return false;
    return true;
}
