/* tests/filter/test_name.c: host-name normalisation and patterns (SPEC §2.1). */
#include <criterion/criterion.h>
#include <string.h>

#include "filter/name.h"

/* A name of exactly total octets: labels of label_max 'a's separated by dots
 * (the last one shorter), written into buf and NUL-terminated. */
static void make_name(char *buf, size_t total, size_t label_max)
{
    for (size_t i = 0; i < total; i++)
        buf[i] = i % (label_max + 1) == label_max ? '.' : 'a';
    if (total >= 2 && buf[total - 1] == '.') {
        /* never end on a dot: shorten the label before by one */
        buf[total - 2] = '.';
        buf[total - 1] = 'a';
    }
    buf[total] = '\0';
}

static int norm(const char *s, char *out, size_t *n)
{
    return filter_name_normalize(s, strlen(s), out, n);
}

Test(name, lowercase_and_trailing_dot)
{
    char out[FILTER_NAME_MAX + 1];
    size_t n;
    cr_assert_eq(norm("Api.OpenAI.COM", out, &n), FILTER_NAME_OK);
    cr_assert_str_eq(out, "api.openai.com");
    cr_assert_eq(n, strlen("api.openai.com"));
    cr_assert_eq(norm("example.com.", out, &n), FILTER_NAME_OK);
    cr_assert_str_eq(out, "example.com");
    cr_assert_eq(n, 11);
    cr_assert_eq(norm("localhost", out, &n), FILTER_NAME_OK);
    cr_assert_str_eq(out, "localhost");
}

Test(name, two_trailing_dots_empty_labels)
{
    char out[FILTER_NAME_MAX + 1];
    size_t n = 99;
    cr_assert_eq(norm("example.com..", out, &n), FILTER_NAME_EEMPTY_LABEL);
    cr_assert_str_eq(out, "");
    cr_assert_eq(n, 0);
    cr_assert_eq(norm("a..b", out, &n), FILTER_NAME_EEMPTY_LABEL);
    cr_assert_eq(norm(".a", out, &n), FILTER_NAME_EEMPTY_LABEL);
    cr_assert_eq(norm("..", out, &n), FILTER_NAME_EEMPTY_LABEL);
}

Test(name, empty)
{
    char out[FILTER_NAME_MAX + 1];
    size_t n;
    cr_assert_eq(filter_name_normalize("", 0, out, &n), FILTER_NAME_EEMPTY);
    cr_assert_eq(norm(".", out, &n), FILTER_NAME_EEMPTY);
    cr_assert_str_eq(out, "");
}

Test(name, label_length)
{
    char buf[300], out[FILTER_NAME_MAX + 1];
    size_t n;
    memset(buf, 'x', 63);
    strcpy(buf + 63, ".com");
    cr_assert_eq(norm(buf, out, &n), FILTER_NAME_OK);
    cr_assert_eq(n, 67);
    memset(buf, 'x', 64);
    strcpy(buf + 64, ".com");
    cr_assert_eq(norm(buf, out, &n), FILTER_NAME_ELABEL_LONG);
    cr_assert_str_eq(out, "");
    /* the last label too */
    strcpy(buf, "a.");
    memset(buf + 2, 'y', 64);
    buf[66] = '\0';
    cr_assert_eq(norm(buf, out, &n), FILTER_NAME_ELABEL_LONG);
}

Test(name, name_length)
{
    char buf[300], out[FILTER_NAME_MAX + 1];
    size_t n;
    make_name(buf, 253, 63);
    cr_assert_eq(strlen(buf), 253);
    cr_assert_eq(norm(buf, out, &n), FILTER_NAME_OK);
    cr_assert_eq(n, 253);
    cr_assert_str_eq(out, buf);
    /* 253 plus the one ignored trailing dot is still fine */
    strcat(buf, ".");
    cr_assert_eq(norm(buf, out, &n), FILTER_NAME_OK);
    cr_assert_eq(n, 253);
    make_name(buf, 254, 63);
    cr_assert_eq(norm(buf, out, &n), FILTER_NAME_ETOO_LONG);
    cr_assert_str_eq(out, "");
    make_name(buf, 299, 10);
    cr_assert_eq(norm(buf, out, &n), FILTER_NAME_ETOO_LONG);
    /* many one-octet labels */
    make_name(buf, 253, 1);
    cr_assert_eq(norm(buf, out, &n), FILTER_NAME_OK);
}

Test(name, bad_bytes)
{
    char out[FILTER_NAME_MAX + 1];
    size_t n;
    cr_assert_eq(filter_name_normalize("exa\0mple.com", 12, out, &n), FILTER_NAME_EBAD_CHAR);
    cr_assert_str_eq(out, "");
    cr_assert_eq(filter_name_normalize("example.com\0", 12, out, &n), FILTER_NAME_EBAD_CHAR);
    cr_assert_eq(norm("exa mple.com", out, &n), FILTER_NAME_EBAD_CHAR);
    cr_assert_eq(norm("example.com/", out, &n), FILTER_NAME_EBAD_CHAR);
    cr_assert_eq(norm("ex*ample.com", out, &n), FILTER_NAME_EBAD_CHAR);
    cr_assert_eq(norm("*.example.com", out, &n), FILTER_NAME_EBAD_CHAR);
    cr_assert_eq(norm("b\xc3\xbc"
                      "cher.de",
                      out, &n),
                 FILTER_NAME_ENOT_ASCII);
    cr_assert_eq(norm("\x80.com", out, &n), FILTER_NAME_ENOT_ASCII);
    cr_assert_eq(norm("xn--bcher-kva.de", out, &n), FILTER_NAME_OK);
}

Test(name, underscore_and_hyphen)
{
    char out[FILTER_NAME_MAX + 1];
    size_t n;
    cr_assert_eq(norm("_dmarc.Example.com", out, &n), FILTER_NAME_OK);
    cr_assert_str_eq(out, "_dmarc.example.com");
    cr_assert_eq(norm("a-b.c-d.com", out, &n), FILTER_NAME_OK);
}

Test(name, numeric_last_label)
{
    char out[FILTER_NAME_MAX + 1];
    size_t n;
    cr_assert_eq(norm("1.2.3.4", out, &n), FILTER_NAME_ENUMERIC);
    cr_assert_eq(norm("300.1.2.3", out, &n), FILTER_NAME_ENUMERIC);
    cr_assert_eq(norm("example.123", out, &n), FILTER_NAME_ENUMERIC);
    cr_assert_eq(norm("123", out, &n), FILTER_NAME_ENUMERIC);
    cr_assert_eq(norm("123.example.com", out, &n), FILTER_NAME_OK);
    cr_assert_eq(norm("example.123a", out, &n), FILTER_NAME_OK);
}

Test(name, strerror)
{
    for (int s = FILTER_NAME_OK; s >= FILTER_NAME_ENUMERIC; s--) {
        const char *m = filter_name_strerror(s);
        cr_assert(m && *m);
        cr_assert_str_neq(m, "unknown name error");
    }
    cr_assert_str_eq(filter_name_strerror(-100), "unknown name error");
}

static int pat(const char *s, filter_pattern_t *p)
{
    return filter_pattern_parse(s, strlen(s), p);
}

Test(pattern, plain_and_wildcard)
{
    filter_pattern_t p;
    cr_assert_eq(pat("Example.COM.", &p), FILTER_NAME_OK);
    cr_assert_not(p.wildcard);
    cr_assert_str_eq(p.name, "example.com");
    cr_assert_eq(p.len, 11);
    cr_assert_eq(pat("*.Example.com", &p), FILTER_NAME_OK);
    cr_assert(p.wildcard);
    cr_assert_str_eq(p.name, "example.com");
    cr_assert_eq(pat("*.a.b.example.com", &p), FILTER_NAME_OK);
    cr_assert_str_eq(p.name, "a.b.example.com");
}

Test(pattern, refused)
{
    filter_pattern_t p;
    cr_assert_eq(pat("*", &p), FILTER_NAME_EWILD_ALONE);
    cr_assert_eq(pat("*.com", &p), FILTER_NAME_EWILD_TLD);
    cr_assert_eq(pat("*.com.", &p), FILTER_NAME_EWILD_TLD);
    cr_assert_eq(pat("a.*.com", &p), FILTER_NAME_EWILD_POS);
    cr_assert_eq(pat("**.a.com", &p), FILTER_NAME_EWILD_POS);
    cr_assert_eq(pat("*a.com", &p), FILTER_NAME_EWILD_POS);
    cr_assert_eq(pat("a*.com", &p), FILTER_NAME_EWILD_POS);
    cr_assert_eq(pat("*.*.com", &p), FILTER_NAME_EWILD_POS);
    cr_assert_eq(pat("example.com.*", &p), FILTER_NAME_EWILD_POS);
    cr_assert_eq(pat("*.", &p), FILTER_NAME_EEMPTY);
    cr_assert_eq(pat("", &p), FILTER_NAME_EEMPTY);
    cr_assert_eq(pat("*..com", &p), FILTER_NAME_EEMPTY_LABEL);
    cr_assert_eq(pat("*.example.123", &p), FILTER_NAME_ENUMERIC);
    cr_assert_eq(pat("*.exa mple.com", &p), FILTER_NAME_EBAD_CHAR);
    /* a failed parse leaves nothing behind */
    cr_assert_not(p.wildcard);
    cr_assert_eq(p.len, 0);
    cr_assert_str_eq(p.name, "");
    cr_assert_eq(pat("*.a.*.com", &p), FILTER_NAME_EWILD_POS);
    cr_assert_not(p.wildcard); /* found by fuzz_name */
    cr_assert_eq(pat("*.com", &p), FILTER_NAME_EWILD_TLD);
    cr_assert_not(p.wildcard);
}

Test(pattern, wildcard_length)
{
    char buf[300];
    filter_pattern_t p;
    /* "*." + 251 = 253 octets: fine */
    strcpy(buf, "*.");
    make_name(buf + 2, 251, 63);
    cr_assert_eq(pat(buf, &p), FILTER_NAME_OK);
    cr_assert(p.wildcard);
    cr_assert_eq(p.len, 251);
    /* "*." + 252 = 254: too long, though the base alone would be fine */
    make_name(buf + 2, 252, 63);
    cr_assert_eq(pat(buf, &p), FILTER_NAME_ETOO_LONG);
    cr_assert_not(p.wildcard);
    cr_assert_eq(p.len, 0);
    /* and the plain 253 name is still a valid pattern */
    make_name(buf, 253, 63);
    cr_assert_eq(pat(buf, &p), FILTER_NAME_OK);
}

static bool looks(const char *s)
{
    return filter_text_looks_like_addr(s, strlen(s));
}

Test(pattern, looks_like_addr)
{
    cr_assert(looks("203.0.113.7"));
    cr_assert(looks("300.1.2.3"));
    cr_assert(looks("1.2.3.4."));
    cr_assert(looks("10.0.0.0/8"));
    cr_assert(looks("2001:db8::1"));
    cr_assert(looks("::1"));
    cr_assert(looks("example.com/x"));
    cr_assert(looks("42"));
    cr_assert_not(looks("example.com"));
    cr_assert_not(looks("123.example.com"));
    cr_assert_not(looks("1.2.3.4a"));
    cr_assert_not(looks("*.example.com"));
    cr_assert_not(looks(""));
    cr_assert_not(looks("."));
    cr_assert_not(looks("example."));
    cr_assert_not(filter_text_looks_like_addr(NULL, 0));
}
