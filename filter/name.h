/* filter/name.h: host-name normalisation and allowlist name patterns (SPEC §2.1).
 *
 * Names compare case-insensitively with one trailing dot ignored. Everything
 * that reaches the matcher (SNI, Host, DNS question, config rule) goes through
 * filter_name_normalize() first, so the matcher only ever sees lowercase,
 * dot-free-at-the-end, length-checked names.
 *
 * Errors are the negative filter_name_status_t codes below; none of these
 * functions allocates.
 */
#ifndef MOAT_FILTER_NAME_H
#define MOAT_FILTER_NAME_H

#include <stdbool.h>
#include <stddef.h>

/* Longest name in presentation form, without the trailing dot (RFC 1035 §2.3.4
 * gives 255 octets on the wire, i.e. 253 characters written out). */
#define FILTER_NAME_MAX  253
#define FILTER_LABEL_MAX 63

typedef enum filter_name_status {
    FILTER_NAME_OK = 0,
    FILTER_NAME_EEMPTY = -1,       /* empty name (or just ".") */
    FILTER_NAME_EEMPTY_LABEL = -2, /* "a..b", ".a" */
    FILTER_NAME_ELABEL_LONG = -3,  /* a label over 63 octets */
    FILTER_NAME_ETOO_LONG = -4,    /* a name over 253 octets */
    FILTER_NAME_EBAD_CHAR = -5,    /* a byte outside [A-Za-z0-9-_] (NUL, space, ...) */
    FILTER_NAME_ENOT_ASCII = -6,   /* a byte >= 0x80: IDNs must be in A-label (xn--) form */
    FILTER_NAME_EWILD_ALONE = -7,  /* "*" */
    FILTER_NAME_EWILD_TLD = -8,    /* "*.com": a wildcard over a single label */
    FILTER_NAME_EWILD_POS = -9,    /* '*' anywhere but as the whole first label */
    FILTER_NAME_ENUMERIC = -10,    /* last label all digits: an address, not a name */
} filter_name_status_t;

/* One line of text for a status code, e.g. "label longer than 63 octets". */
const char *filter_name_strerror(int status);

/* Normalise a host name: ASCII lowercase, one trailing dot dropped, every
 * label 1..63 octets of [a-z0-9-_], the whole at most 253 octets, last label
 * not all digits. `in` need not be NUL-terminated and may hold any bytes
 * (embedded NULs are an error). On success writes the NUL-terminated result
 * to out (FILTER_NAME_MAX + 1 bytes) and its length to *out_len, returns 0;
 * otherwise returns a negative filter_name_status_t and leaves out empty. */
int filter_name_normalize(const char *in, size_t in_len, char *out, size_t *out_len);

/* An allowlist name pattern: `name` (exactly that name) or `*.name` (every
 * name below it, at any depth, not the name itself). */
typedef struct filter_pattern {
    bool wildcard;                  /* written as "*.name" */
    size_t len;                     /* strlen(name) */
    char name[FILTER_NAME_MAX + 1]; /* normalised, without the "*." */
} filter_pattern_t;

/* Parse a pattern as written in the config. The wildcard's base must have at
 * least two labels ("*.com" is refused). Returns 0 or a negative
 * filter_name_status_t. */
int filter_pattern_parse(const char *in, size_t in_len, filter_pattern_t *out);

/* True when the text is meant as an address or prefix rather than a name:
 * it contains ':' or '/', or its last label is all digits ("300.1.2.3").
 * The config uses this so that a bad address is an error, not a name. */
bool filter_text_looks_like_addr(const char *in, size_t in_len);

/* The value of a hex digit (0-9, a-f, A-F), or -1 for any other byte. */
static inline int filter_hex_value(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

#endif
