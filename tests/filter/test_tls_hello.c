/* tests/filter/test_tls_hello.c: the ClientHello reader against real hellos
 * made in-process by GnuTLS's client, re-split across records and TCP
 * segments, and against hand-made hostile ones.
 *
 * MOAT_TLS_SEED_DIR=dir makes the `seeds` test write the hellos it builds
 * there (that is how tests/filter/corpus/fuzz_tls_hello/ was made).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter/tls_hello.h"

#define BIG 140000

/* ---- byte building ---------------------------------------------------- */

typedef struct bytes {
    uint8_t b[BIG];
    size_t n;
} bytes_t;

static bytes_t *bytes_new(void)
{
    bytes_t *x = calloc(1, sizeof *x);
    cr_assert_not_null(x);
    return x;
}

static void put8(bytes_t *x, unsigned v)
{
    cr_assert_lt(x->n, sizeof x->b);
    x->b[x->n++] = (uint8_t)v;
}

static void put16(bytes_t *x, unsigned v)
{
    put8(x, v >> 8 & 0xff);
    put8(x, v & 0xff);
}

static void put24(bytes_t *x, unsigned v)
{
    put8(x, v >> 16 & 0xff);
    put16(x, v & 0xffff);
}

static void putn(bytes_t *x, const void *p, size_t n)
{
    cr_assert_leq(x->n + n, sizeof x->b);
    if (n > 0)
        memcpy(x->b + x->n, p, n);
    x->n += n;
}

static void putfill(bytes_t *x, int c, size_t n)
{
    cr_assert_leq(x->n + n, sizeof x->b);
    memset(x->b + x->n, c, n);
    x->n += n;
}

/* ---- GnuTLS capture ----------------------------------------------------- */

typedef struct capture {
    gnutls_session_t s;
    bytes_t *out;
} capture_t;

static ssize_t cap_push(gnutls_transport_ptr_t p, const void *data, size_t n)
{
    capture_t *c = p;
    putn(c->out, data, n);
    return (ssize_t)n;
}

static ssize_t cap_pull(gnutls_transport_ptr_t p, void *data, size_t n)
{
    (void)data;
    (void)n;
    capture_t *c = p;
    gnutls_transport_set_errno(c->s, EAGAIN);
    return -1;
}

static size_t big_ext_len;

static int big_ext_send(gnutls_session_t s, gnutls_buffer_t ext)
{
    (void)s;
    static uint8_t pad[65535];
    memset(pad, 'p', sizeof pad);
    return gnutls_buffer_append_data(ext, pad, big_ext_len) < 0 ? -1 : (int)big_ext_len;
}

static int big_ext_recv(gnutls_session_t s, const unsigned char *d, size_t n)
{
    (void)s;
    (void)d;
    (void)n;
    return 0;
}

typedef struct hello_opts {
    const char *priority; /* NULL: "NORMAL" */
    const char *sni;      /* NULL: no server_name */
    unsigned alpn;        /* number of ALPN protocol names */
    size_t big_ext;       /* size of an extra private extension (0: none) */
} hello_opts_t;

/* Run GnuTLS's client until it waits for the ServerHello; return what it
 * wrote: the ClientHello record(s). */
static bytes_t *capture_hello(hello_opts_t o)
{
    bytes_t *out = bytes_new();
    gnutls_certificate_credentials_t cred;
    capture_t cap = {NULL, out};
    cr_assert_eq(gnutls_certificate_allocate_credentials(&cred), 0);
    cr_assert_eq(gnutls_init(&cap.s, GNUTLS_CLIENT | GNUTLS_NONBLOCK), 0);
    const char *err = NULL;
    cr_assert_eq(gnutls_priority_set_direct(cap.s, o.priority ? o.priority : "NORMAL", &err), 0,
                 "priority error at %s", err ? err : "?");
    cr_assert_eq(gnutls_credentials_set(cap.s, GNUTLS_CRD_CERTIFICATE, cred), 0);
    if (o.sni)
        cr_assert_eq(gnutls_server_name_set(cap.s, GNUTLS_NAME_DNS, o.sni, strlen(o.sni)), 0);
    if (o.alpn) {
        /* GnuTLS keeps at most 8 names of under 32 bytes each. */
        static char names[8][31];
        gnutls_datum_t protos[8];
        cr_assert_leq(o.alpn, 8);
        for (unsigned i = 0; i < o.alpn; i++) {
            int n = snprintf(names[i], sizeof names[i], "%s", i == 0 ? "h2" : "http/1.1");
            if (i > 1) {
                n = snprintf(names[i], sizeof names[i], "proto-%u-", i);
                memset(names[i] + n, 'a', sizeof names[i] - 1 - (size_t)n);
                names[i][sizeof names[i] - 1] = '\0';
            }
            protos[i].data = (unsigned char *)names[i];
            protos[i].size = (unsigned)strlen(names[i]);
        }
        cr_assert_eq(gnutls_alpn_set_protocols(cap.s, protos, o.alpn, 0), 0);
    }
    if (o.big_ext) {
        big_ext_len = o.big_ext;
        cr_assert_eq(gnutls_session_ext_register(
                         cap.s, "moat-test-pad", 0xff42, GNUTLS_EXT_TLS, big_ext_recv, big_ext_send,
                         NULL, NULL, NULL, GNUTLS_EXT_FLAG_CLIENT_HELLO | GNUTLS_EXT_FLAG_TLS),
                     0);
    }
    gnutls_transport_set_ptr(cap.s, &cap);
    gnutls_transport_set_push_function(cap.s, cap_push);
    gnutls_transport_set_pull_function(cap.s, cap_pull);
    int rc = gnutls_handshake(cap.s);
    cr_assert_eq(rc, GNUTLS_E_AGAIN, "handshake: %s", gnutls_strerror(rc));
    gnutls_deinit(cap.s);
    gnutls_certificate_free_credentials(cred);
    cr_assert_gt(out->n, 50);
    return out;
}

/* ---- record layer rewriting -------------------------------------------- */

/* The handshake bytes of a run of handshake records. */
static bytes_t *hs_of(const bytes_t *rec)
{
    bytes_t *hs = bytes_new();
    size_t i = 0;
    while (i < rec->n) {
        cr_assert_eq(rec->b[i], 22);
        size_t n = (size_t)rec->b[i + 3] << 8 | rec->b[i + 4];
        putn(hs, rec->b + i + 5, n);
        i += 5 + n;
    }
    return hs;
}

/* Cut handshake bytes into records of the given sizes (used in turn). */
static bytes_t *records(const bytes_t *hs, const size_t *sizes, size_t nsizes)
{
    bytes_t *out = bytes_new();
    size_t i = 0, k = 0;
    while (i < hs->n) {
        size_t n = sizes[k++ % nsizes];
        if (n > hs->n - i)
            n = hs->n - i;
        put8(out, 22);
        put16(out, 0x0301);
        put16(out, (unsigned)n);
        putn(out, hs->b + i, n);
        i += n;
    }
    return out;
}

/* A ClientHello handshake message with the given extensions block (NULL:
 * none at all), wrapped in records of at most 2^14 bytes. */
static bytes_t *hand_hello(const bytes_t *exts)
{
    bytes_t *body = bytes_new();
    put16(body, 0x0303);
    putfill(body, 0xab, 32);
    put8(body, 0);
    put16(body, 4);
    put16(body, 0x1301);
    put16(body, 0xc02f);
    put8(body, 1);
    put8(body, 0);
    if (exts) {
        put16(body, (unsigned)exts->n);
        putn(body, exts->b, exts->n);
    }
    bytes_t *hs = bytes_new();
    put8(hs, 1);
    put24(hs, (unsigned)body->n);
    putn(hs, body->b, body->n);
    size_t size = 16384;
    bytes_t *rec = records(hs, &size, 1);
    free(body);
    free(hs);
    return rec;
}

static void ext_add(bytes_t *exts, unsigned type, const void *data, size_t n)
{
    put16(exts, type);
    put16(exts, (unsigned)n);
    putn(exts, data, n);
}

/* A server_name extension listing the names (type 0 unless given). */
static void ext_sni(bytes_t *exts, const char *const *names, size_t count)
{
    bytes_t *list = bytes_new();
    for (size_t i = 0; i < count; i++) {
        put8(list, 0);
        put16(list, (unsigned)strlen(names[i]));
        putn(list, names[i], strlen(names[i]));
    }
    bytes_t *data = bytes_new();
    put16(data, (unsigned)list->n);
    putn(data, list->b, list->n);
    ext_add(exts, 0, data->b, data->n);
    free(list);
    free(data);
}

/* Append an extension at the end of a single-record hello, fixing up the
 * record, handshake and extensions lengths. */
static bytes_t *with_ext(const bytes_t *rec, unsigned type, const void *data, size_t n)
{
    bytes_t *hs = hs_of(rec);
    size_t off = 4 + 2 + 32;
    off += 1 + hs->b[off];
    off += 2 + ((size_t)hs->b[off] << 8 | hs->b[off + 1]);
    off += 1 + hs->b[off];
    size_t ext_len = (size_t)hs->b[off] << 8 | hs->b[off + 1];
    cr_assert_eq(off + 2 + ext_len, hs->n, "extensions are not last");
    bytes_t *out = bytes_new();
    putn(out, hs->b, hs->n);
    ext_len += 4 + n;
    out->b[off] = (uint8_t)(ext_len >> 8);
    out->b[off + 1] = (uint8_t)ext_len;
    put16(out, type);
    put16(out, (unsigned)n);
    putn(out, data, n);
    size_t body = out->n - 4;
    out->b[1] = (uint8_t)(body >> 16);
    out->b[2] = (uint8_t)(body >> 8);
    out->b[3] = (uint8_t)body;
    size_t size = 16384;
    bytes_t *r = records(out, &size, 1);
    free(hs);
    free(out);
    return r;
}

static bytes_t *concat(const bytes_t *a, const bytes_t *b)
{
    bytes_t *x = bytes_new();
    putn(x, a->b, a->n);
    putn(x, b->b, b->n);
    return x;
}

/* ---- checks -------------------------------------------------------------- */

static filter_tls_result_t parse(const bytes_t *x, size_t max, filter_tls_hello_t *h)
{
    /* An exact-size copy, so the sanitizers see any read past the end. */
    uint8_t *copy = malloc(x->n ? x->n : 1);
    memcpy(copy, x->b, x->n);
    filter_tls_result_t r = filter_tls_hello_parse(copy, x->n, max, h);
    free(copy);
    return r;
}

/* The whole input answers `want`; every proper prefix answers NEED_MORE or,
 * when the bytes so far decide it, `want` already. With strict, only
 * NEED_MORE is allowed for prefixes. */
static void check_prefixes(const bytes_t *x, size_t max, filter_tls_result_t want, bool strict)
{
    filter_tls_hello_t h;
    for (size_t cut = 0; cut < x->n; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, x->b, cut);
        filter_tls_result_t r = filter_tls_hello_parse(copy, cut, max, &h);
        free(copy);
        if (strict)
            cr_assert_eq(r, FILTER_TLS_NEED_MORE, "prefix %zu of %zu: %s (%s)", cut, x->n,
                         filter_tls_reason(r), h.detail);
        else
            cr_assert(r == FILTER_TLS_NEED_MORE || r == want, "prefix %zu of %zu: %s (%s)", cut,
                      x->n, filter_tls_reason(r), h.detail);
    }
    filter_tls_result_t r = parse(x, max, &h);
    cr_assert_eq(r, want, "whole: %s (%s), want %s", filter_tls_reason(r), h.detail,
                 filter_tls_reason(want));
}

static void expect_sni(const bytes_t *x, size_t max, const char *name)
{
    filter_tls_hello_t h;
    filter_tls_result_t r = parse(x, max, &h);
    cr_assert_eq(r, FILTER_TLS_SNI, "%s (%s)", filter_tls_reason(r), h.detail);
    cr_assert_str_eq(h.sni, name);
    cr_assert_eq(h.sni_len, strlen(name));
}

static void expect(const bytes_t *x, size_t max, filter_tls_result_t want)
{
    filter_tls_hello_t h;
    filter_tls_result_t r = parse(x, max, &h);
    cr_assert_eq(r, want, "%s (%s), want %s", filter_tls_reason(r), h.detail,
                 filter_tls_reason(want));
}

#define MAXH FILTER_TLS_MAX_HELLO_DEFAULT

/* ---- real hellos ------------------------------------------------------- */

Test(tls_hello, gnutls_tls12_sni)
{
    bytes_t *x =
        capture_hello((hello_opts_t){"NORMAL:-VERS-ALL:+VERS-TLS1.2", "example.com", 0, 0});
    filter_tls_hello_t h;
    cr_assert_eq(parse(x, MAXH, &h), FILTER_TLS_SNI, "%s", h.detail);
    cr_assert_str_eq(h.sni, "example.com");
    cr_assert_eq(h.legacy_version, 0x0303);
    cr_assert_eq(h.hello_len, x->n);
    cr_assert(!h.has_ech);
    cr_assert(!h.has_alpn);
    check_prefixes(x, MAXH, FILTER_TLS_SNI, true);
    free(x);
}

Test(tls_hello, gnutls_tls13_sni)
{
    bytes_t *x =
        capture_hello((hello_opts_t){"NORMAL:-VERS-ALL:+VERS-TLS1.3", "API.Example.org", 0, 0});
    expect_sni(x, MAXH, "API.Example.org"); /* raw, not normalised */
    check_prefixes(x, MAXH, FILTER_TLS_SNI, true);
    free(x);
}

Test(tls_hello, gnutls_default_sni_and_alpn)
{
    bytes_t *x = capture_hello((hello_opts_t){NULL, "www.example.net", 3, 0});
    filter_tls_hello_t h;
    cr_assert_eq(parse(x, MAXH, &h), FILTER_TLS_SNI, "%s", h.detail);
    cr_assert_str_eq(h.sni, "www.example.net");
    cr_assert(h.has_alpn);
    check_prefixes(x, MAXH, FILTER_TLS_SNI, true);
    free(x);
}

Test(tls_hello, gnutls_no_sni)
{
    const char *prios[] = {NULL, "NORMAL:-VERS-ALL:+VERS-TLS1.2", "NORMAL:-VERS-ALL:+VERS-TLS1.3"};
    for (size_t i = 0; i < 3; i++) {
        bytes_t *x = capture_hello((hello_opts_t){prios[i], NULL, 0, 0});
        check_prefixes(x, MAXH, FILTER_TLS_NO_SNI, true);
        free(x);
    }
}

Test(tls_hello, gnutls_longest_name)
{
    char name[254];
    /* 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 */
    memset(name, 'a', 253);
    name[63] = name[127] = name[191] = '.';
    name[253] = '\0';
    bytes_t *x = capture_hello((hello_opts_t){NULL, name, 0, 0});
    expect_sni(x, MAXH, name);
    free(x);
}

Test(tls_hello, resplit_across_records)
{
    static const size_t splits[][4] = {
        {1, 0, 0, 0}, {7, 0, 0, 0}, {100, 0, 0, 0}, {2, 3, 5, 0}, {4, 1, 0, 0}, {3, 16384, 0, 0},
    };
    static const size_t nsplit[] = {1, 1, 1, 3, 2, 2};
    const char *prios[] = {"NORMAL:-VERS-ALL:+VERS-TLS1.2", "NORMAL:-VERS-ALL:+VERS-TLS1.3"};
    for (size_t p = 0; p < 2; p++) {
        bytes_t *x = capture_hello((hello_opts_t){prios[p], "split.example.com", 2, 0});
        bytes_t *hs = hs_of(x);
        for (size_t s = 0; s < sizeof nsplit / sizeof nsplit[0]; s++) {
            bytes_t *y = records(hs, splits[s], nsplit[s]);
            filter_tls_hello_t h;
            cr_assert_eq(parse(y, 1 << 20, &h), FILTER_TLS_SNI, "split %zu: %s", s, h.detail);
            cr_assert_str_eq(h.sni, "split.example.com");
            cr_assert_eq(h.hello_len, y->n);
            cr_assert(h.has_alpn);
            check_prefixes(y, 1 << 20, FILTER_TLS_SNI, true);
            free(y);
        }
        free(hs);
        free(x);
    }
}

Test(tls_hello, split_records_count_toward_max_hello)
{
    bytes_t *x = capture_hello((hello_opts_t){NULL, "count.example.com", 0, 0});
    size_t one = 1;
    bytes_t *hs = hs_of(x);
    bytes_t *y = records(hs, &one, 1); /* 6 bytes a handshake byte */
    cr_assert_eq(y->n, hs->n * 6);
    expect(y, y->n, FILTER_TLS_SNI);
    expect(y, y->n - 1, FILTER_TLS_TOO_BIG);
    /* The bytes past the limit are not needed to tell. */
    bytes_t cut = *y;
    cut.n = y->n / 2;
    expect(&cut, y->n - 1, FILTER_TLS_NEED_MORE);
    free(y);
    free(hs);
    free(x);
}

Test(tls_hello, big_hello_gnutls_splits_records)
{
    bytes_t *x = capture_hello((hello_opts_t){NULL, "big.example.com", 8, 20000});
    cr_assert_gt(x->n, 20000);
    size_t first = (size_t)x->b[3] << 8 | x->b[4];
    cr_assert_lt(first + 5, x->n, "GnuTLS sent the hello in one record");
    filter_tls_hello_t h;
    cr_assert_eq(parse(x, 65536, &h), FILTER_TLS_SNI, "%s", h.detail);
    cr_assert_str_eq(h.sni, "big.example.com");
    cr_assert_eq(h.hello_len, x->n);
    check_prefixes(x, 65536, FILTER_TLS_SNI, true);
    /* Default limit: refused as soon as the handshake length is known. */
    for (size_t cut = 0; cut <= x->n; cut += 97) {
        bytes_t *y = bytes_new();
        putn(y, x->b, cut);
        expect(y, MAXH, cut < 9 ? FILTER_TLS_NEED_MORE : FILTER_TLS_TOO_BIG);
        free(y);
    }
    free(x);
}

Test(tls_hello, max_hello_exact_boundary)
{
    bytes_t *x = capture_hello((hello_opts_t){NULL, "edge.example.com", 0, 0});
    expect(x, x->n, FILTER_TLS_SNI);
    expect(x, x->n - 1, FILTER_TLS_TOO_BIG);
    expect(x, 5, FILTER_TLS_TOO_BIG);
    expect(x, 0, FILTER_TLS_TOO_BIG);
    /* Plenty of bytes but a small limit: decided without reading past it. */
    bytes_t *y = bytes_new();
    putn(y, x->b, x->n);
    putfill(y, 0, 1000);
    expect(y, x->n, FILTER_TLS_SNI);
    free(y);
    free(x);
}

Test(tls_hello, ech_outer_sni)
{
    bytes_t *x =
        capture_hello((hello_opts_t){"NORMAL:-VERS-ALL:+VERS-TLS1.3", "public.example.com", 0, 0});
    uint8_t ech[200];
    memset(ech, 0x5a, sizeof ech);
    ech[0] = 0; /* ECHClientHello type outer */
    bytes_t *y = with_ext(x, 0xfe0d, ech, sizeof ech);
    filter_tls_hello_t h;
    cr_assert_eq(parse(y, MAXH, &h), FILTER_TLS_SNI, "%s", h.detail);
    cr_assert_str_eq(h.sni, "public.example.com");
    cr_assert(h.has_ech);
    check_prefixes(y, MAXH, FILTER_TLS_SNI, true);
    free(y);
    free(x);
}

Test(tls_hello, trailing_records_ignored)
{
    /* A change_cipher_spec and early data after the hello do not matter. */
    bytes_t *x = capture_hello((hello_opts_t){NULL, "early.example.com", 0, 0});
    bytes_t *tail = bytes_new();
    static const uint8_t ccs[] = {20, 3, 3, 0, 1, 1, 23, 3, 3, 0, 4, 'd', 'a', 't', 'a'};
    putn(tail, ccs, sizeof ccs);
    bytes_t *y = concat(x, tail);
    filter_tls_hello_t h;
    cr_assert_eq(parse(y, MAXH, &h), FILTER_TLS_SNI);
    cr_assert_eq(h.hello_len, x->n);
    free(y);
    free(tail);
    free(x);
}

/* ---- hostile framing ---------------------------------------------------- */

Test(tls_hello, empty_input_needs_more)
{
    filter_tls_hello_t h;
    cr_assert_eq(filter_tls_hello_parse(NULL, 0, MAXH, &h), FILTER_TLS_NEED_MORE);
    uint8_t one = 0x16;
    cr_assert_eq(filter_tls_hello_parse(&one, 1, MAXH, &h), FILTER_TLS_NEED_MORE);
}

Test(tls_hello, not_tls_first_bytes)
{
    static const uint8_t cases[][3] = {
        {'G', 'E', 'T'}, /* HTTP */
        {0x80, 0x2e, 1}, /* SSLv2-style hello */
        {0x15, 3, 1},    /* alert */
        {0x17, 3, 3},    /* application data */
        {0x16, 2, 0},    /* version major 2 */
        {0x16, 0x16, 0}, /* not a version */
        {0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        filter_tls_hello_t h;
        cr_assert_eq(filter_tls_hello_parse(cases[i], 3, MAXH, &h), FILTER_TLS_NOT_TLS, "case %zu",
                     i);
        cr_assert_eq(h.hello_len, 0);
    }
}

Test(tls_hello, bad_record_lengths)
{
    static const uint8_t zero[] = {22, 3, 1, 0, 0, 1, 0, 0, 100};
    static const uint8_t over[] = {22, 3, 1, 0x40, 0x01, 1, 0, 0, 100};
    filter_tls_hello_t h;
    cr_assert_eq(filter_tls_hello_parse(zero, sizeof zero, MAXH, &h), FILTER_TLS_NOT_TLS);
    cr_assert_eq(filter_tls_hello_parse(over, sizeof over, 1 << 20, &h), FILTER_TLS_NOT_TLS);
}

Test(tls_hello, not_a_client_hello)
{
    /* ServerHello, then a hello too short to be one. */
    static const uint8_t sh[] = {22, 3, 3, 0, 4, 2, 0, 0, 0};
    static const uint8_t tiny[] = {22, 3, 3, 0, 4, 1, 0, 0, 40};
    filter_tls_hello_t h;
    cr_assert_eq(filter_tls_hello_parse(sh, 6, MAXH, &h), FILTER_TLS_NOT_TLS);
    cr_assert_eq(filter_tls_hello_parse(tiny, sizeof tiny, MAXH, &h), FILTER_TLS_NOT_TLS);
}

Test(tls_hello, other_record_inside_the_hello)
{
    bytes_t *x = capture_hello((hello_opts_t){NULL, "mid.example.com", 0, 0});
    bytes_t *hs = hs_of(x);
    size_t sizes[] = {50, 16384};
    bytes_t *y = records(hs, sizes, 2);
    static const uint8_t kinds[] = {20, 21, 23, 24};
    for (size_t k = 0; k < sizeof kinds; k++) {
        bytes_t *z = bytes_new();
        putn(z, y->b, 55);
        uint8_t rec[] = {kinds[k], 3, 3, 0, 2, 1, 0};
        putn(z, rec, sizeof rec);
        putn(z, y->b + 55, y->n - 55);
        check_prefixes(z, MAXH, FILTER_TLS_NOT_TLS, false);
        free(z);
    }
    /* An empty handshake record in between (RFC 8446 §5.1). */
    bytes_t *z = bytes_new();
    putn(z, y->b, 55);
    uint8_t empty[] = {22, 3, 3, 0, 0};
    putn(z, empty, sizeof empty);
    putn(z, y->b + 55, y->n - 55);
    check_prefixes(z, MAXH, FILTER_TLS_NOT_TLS, false);
    free(z);
    free(y);
    free(hs);
    free(x);
}

Test(tls_hello, handshake_length_lies)
{
    /* Longer than the record and never completed: too big once the length
     * is known, whatever follows. */
    uint8_t huge[] = {22, 3, 1, 0, 60, 1, 0x01, 0x00, 0x00};
    filter_tls_hello_t h;
    cr_assert_eq(filter_tls_hello_parse(huge, sizeof huge, MAXH, &h), FILTER_TLS_TOO_BIG);
    cr_assert_eq(filter_tls_hello_parse(huge, 8, MAXH, &h), FILTER_TLS_NEED_MORE);

    /* Shorter than the record: the hello ends early and what follows in the
     * record is not looked at. */
    bytes_t *x = capture_hello((hello_opts_t){NULL, "short.example.com", 0, 0});
    bytes_t *y = bytes_new();
    putn(y, x->b, x->n);
    putfill(y, 0xee, 500);
    size_t rlen = x->n - 5 + 500;
    y->b[3] = (uint8_t)(rlen >> 8);
    y->b[4] = (uint8_t)rlen;
    cr_assert_eq(parse(y, MAXH, &h), FILTER_TLS_SNI);
    cr_assert_eq(h.hello_len, x->n);

    /* A handshake length that runs past the end of the real hello into a
     * record of another type. */
    bytes_t *z = bytes_new();
    putn(z, x->b, x->n);
    size_t body = ((size_t)z->b[6] << 16 | (size_t)z->b[7] << 8 | z->b[8]) + 100;
    z->b[6] = (uint8_t)(body >> 16);
    z->b[7] = (uint8_t)(body >> 8);
    z->b[8] = (uint8_t)body;
    static const uint8_t alert[] = {21, 3, 3, 0, 2, 2, 40};
    putn(z, alert, sizeof alert);
    check_prefixes(z, MAXH, FILTER_TLS_NOT_TLS, false);
    /* ...or just never arrives within the limit. */
    z->n = x->n;
    /* The 100 missing bytes need a record header of their own. */
    expect(z, x->n + 104, FILTER_TLS_TOO_BIG);
    expect(z, x->n + 105, FILTER_TLS_NEED_MORE);
    free(z);
    free(y);
    free(x);
}

Test(tls_hello, garbage_64k)
{
    bytes_t *x = bytes_new();
    srand(42);
    for (size_t i = 0; i < 65536; i++)
        put8(x, (unsigned)rand() & 0xff);
    filter_tls_hello_t h;
    filter_tls_result_t r = parse(x, MAXH, &h);
    cr_assert(r == FILTER_TLS_NOT_TLS || r == FILTER_TLS_TOO_BIG, "%s", filter_tls_reason(r));
    /* Random bytes behind a plausible record and handshake header. */
    static const uint8_t head[] = {22, 3, 1, 0x40, 0, 1, 0, 0x3f, 0xfc};
    memcpy(x->b, head, sizeof head);
    r = parse(x, MAXH, &h);
    cr_assert(r == FILTER_TLS_NOT_TLS || r == FILTER_TLS_TOO_BIG, "%s", filter_tls_reason(r));
    memset(x->b, 0x16, x->n);
    expect(x, MAXH, FILTER_TLS_NOT_TLS);
    memset(x->b, 0, x->n);
    expect(x, MAXH, FILTER_TLS_NOT_TLS);
    free(x);
}

/* ---- hostile ClientHello contents -------------------------------------- */

Test(tls_hello, hand_hello_baseline)
{
    bytes_t *e = bytes_new();
    const char *names[] = {"hand.example.com"};
    ext_add(e, 0x0a0a, NULL, 0); /* GREASE */
    ext_add(e, 0x0017, NULL, 0); /* zero-length extended_master_secret */
    ext_sni(e, names, 1);
    ext_add(e, 0xdada, "x", 1); /* GREASE with data */
    bytes_t *x = hand_hello(e);
    expect_sni(x, MAXH, "hand.example.com");
    check_prefixes(x, MAXH, FILTER_TLS_SNI, true);
    free(x);
    free(e);
}

Test(tls_hello, no_extensions)
{
    bytes_t *x = hand_hello(NULL);
    check_prefixes(x, MAXH, FILTER_TLS_NO_SNI, true);
    free(x);
    bytes_t *e = bytes_new();
    x = hand_hello(e); /* an empty extensions block */
    expect(x, MAXH, FILTER_TLS_NO_SNI);
    free(x);
    free(e);
}

Test(tls_hello, sni_variants)
{
    char n255[256], n256[257];
    memset(n255, 'a', 255);
    n255[255] = '\0';
    memset(n256, 'b', 256);
    n256[256] = '\0';
    struct {
        const char *names[3];
        size_t count;
        filter_tls_result_t want;
    } cases[] = {
        {{"one.example"}, 1, FILTER_TLS_SNI},
        {{"one.example", "two.example"}, 2, FILTER_TLS_MULTI_SNI},
        {{"a", "b", "c"}, 3, FILTER_TLS_MULTI_SNI},
        {{""}, 1, FILTER_TLS_BAD_SNI},
        {{n255}, 1, FILTER_TLS_SNI},
        {{n256}, 1, FILTER_TLS_BAD_SNI},
        {{NULL}, 0, FILTER_TLS_NO_SNI},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bytes_t *e = bytes_new();
        ext_sni(e, cases[i].names, cases[i].count);
        bytes_t *x = hand_hello(e);
        filter_tls_hello_t h;
        filter_tls_result_t r = parse(x, MAXH, &h);
        cr_assert_eq(r, cases[i].want, "case %zu: %s (%s)", i, filter_tls_reason(r), h.detail);
        if (r == FILTER_TLS_SNI || r == FILTER_TLS_MULTI_SNI)
            cr_assert_str_eq(h.sni, cases[i].names[0]);
        else
            cr_assert_eq(h.sni_len, 0);
        free(x);
        free(e);
    }
}

Test(tls_hello, sni_raw_bytes_and_nul)
{
    /* Raw bytes pass (the caller normalises); a NUL is BAD_SNI. */
    static const uint8_t odd[] = {0, 9, 0, 0, 6, 'a', ' ', 0xff, '.', 'c', 'o'};
    bytes_t *e = bytes_new();
    ext_add(e, 0, odd, sizeof odd);
    bytes_t *x = hand_hello(e);
    filter_tls_hello_t h;
    cr_assert_eq(parse(x, MAXH, &h), FILTER_TLS_SNI);
    cr_assert_eq(h.sni_len, 6);
    cr_assert_eq(memcmp(h.sni, "a \xff.co", 7), 0);
    free(x);
    free(e);
    static const uint8_t nul[] = {0, 7, 0, 0, 4, 'a', 0, 'b', 'c'};
    e = bytes_new();
    ext_add(e, 0, nul, sizeof nul);
    x = hand_hello(e);
    cr_assert_eq(parse(x, MAXH, &h), FILTER_TLS_BAD_SNI);
    cr_assert_eq(h.sni_len, 0);
    cr_assert_eq(h.sni[0], '\0');
    free(x);
    free(e);
}

Test(tls_hello, multi_sni_first_bad)
{
    /* Found by the fuzzer: the first of several names holds a NUL; out->sni
     * must not keep it (it stays a C string). */
    static const uint8_t list[] = {0, 12, 0, 0, 2, 'a', 0, 0, 0, 4, 'b', '.', 'e', 'x'};
    bytes_t *e = bytes_new();
    ext_add(e, 0, list, sizeof list);
    bytes_t *x = hand_hello(e);
    filter_tls_hello_t h;
    cr_assert_eq(parse(x, MAXH, &h), FILTER_TLS_MULTI_SNI);
    cr_assert_eq(h.sni_len, 0);
    cr_assert_eq(h.sni[0], '\0');
    free(x);
    free(e);
}

Test(tls_hello, sni_other_name_types)
{
    /* An unknown name_type is skipped; a host_name after it is taken. */
    static const uint8_t list[] = {0, 14, 7, 0, 2, 'z', 'z', 0, 0, 6, 'h', '.', 't', 'e', 's', 't'};
    bytes_t *e = bytes_new();
    ext_add(e, 0, list, sizeof list);
    bytes_t *x = hand_hello(e);
    expect_sni(x, MAXH, "h.test");
    free(x);
    free(e);
    static const uint8_t only[] = {0, 5, 7, 0, 2, 'z', 'z'};
    e = bytes_new();
    ext_add(e, 0, only, sizeof only);
    x = hand_hello(e);
    expect(x, MAXH, FILTER_TLS_NO_SNI);
    free(x);
    free(e);
    /* An empty server_name extension carries no name. */
    e = bytes_new();
    ext_add(e, 0, NULL, 0);
    x = hand_hello(e);
    expect(x, MAXH, FILTER_TLS_NO_SNI);
    free(x);
    free(e);
}

Test(tls_hello, sni_lengths_lie)
{
    static const uint8_t cases[][12] = {
        {0, 20, 0, 0, 4, 'a', '.', 'b', 'c'}, /* list longer than the extension */
        {0, 5, 0, 0, 4, 'a', '.', 'b', 'c'},  /* list shorter than the extension */
        {0, 7, 0, 0, 9, 'a', '.', 'b', 'c'},  /* name longer than the list */
        {0, 7, 0, 0, 2, 'a', '.', 'b', 'c'},  /* name shorter: trailing junk */
        {0, 2, 0, 0},                         /* entry cut short */
        {0},                                  /* list length cut short */
    };
    static const size_t lens[] = {9, 9, 9, 9, 4, 1};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        bytes_t *e = bytes_new();
        ext_add(e, 0, cases[i], lens[i]);
        bytes_t *x = hand_hello(e);
        filter_tls_hello_t h;
        filter_tls_result_t r = parse(x, MAXH, &h);
        cr_assert_eq(r, FILTER_TLS_NOT_TLS, "case %zu: %s", i, filter_tls_reason(r));
        cr_assert_eq(h.hello_len, x->n);
        free(x);
        free(e);
    }
}

Test(tls_hello, duplicate_extensions)
{
    const char *names[] = {"dup.example"};
    bytes_t *e = bytes_new();
    ext_sni(e, names, 1);
    ext_sni(e, names, 1);
    bytes_t *x = hand_hello(e);
    expect(x, MAXH, FILTER_TLS_NOT_TLS);
    free(x);
    free(e);
    e = bytes_new();
    ext_add(e, 0x0017, NULL, 0);
    ext_sni(e, names, 1);
    ext_add(e, 0x0017, NULL, 0);
    x = hand_hello(e);
    expect(x, MAXH, FILTER_TLS_NOT_TLS);
    free(x);
    free(e);
    /* The same on a real hello: a second server_name appended. */
    bytes_t *real = capture_hello((hello_opts_t){NULL, "real.example.com", 0, 0});
    static const uint8_t sni[] = {0, 8, 0, 0, 5, 'o', '.', 't', 'h', 'r'};
    x = with_ext(real, 0, sni, sizeof sni);
    expect(x, MAXH, FILTER_TLS_NOT_TLS);
    free(x);
    free(real);
}

Test(tls_hello, extension_lengths_lie)
{
    /* An extension running past the block, and blocks that do not match. */
    bytes_t *e = bytes_new();
    put16(e, 0x0017);
    put16(e, 10);
    put16(e, 0);
    bytes_t *x = hand_hello(e);
    expect(x, MAXH, FILTER_TLS_NOT_TLS);
    free(x);
    free(e);

    e = bytes_new();
    put8(e, 0); /* half an extension header */
    x = hand_hello(e);
    expect(x, MAXH, FILTER_TLS_NOT_TLS);
    free(x);
    free(e);

    const char *names[] = {"x.example"};
    e = bytes_new();
    ext_sni(e, names, 1);
    x = hand_hello(e);
    size_t ext_len_off = 5 + 4 + 2 + 32 + 1 + 2 + 4 + 1 + 1;
    x->b[ext_len_off + 1]++; /* claims one byte more than the message has */
    expect(x, MAXH, FILTER_TLS_NOT_TLS);
    x->b[ext_len_off + 1] -= 2; /* one byte less: trailing junk */
    expect(x, MAXH, FILTER_TLS_NOT_TLS);
    free(x);
    free(e);
}

Test(tls_hello, client_hello_vectors_lie)
{
    const char *names[] = {"v.example"};
    bytes_t *e = bytes_new();
    ext_sni(e, names, 1);
    bytes_t *good = hand_hello(e);
    expect_sni(good, MAXH, "v.example");
    size_t sid_off = 5 + 4 + 2 + 32, cs_off = sid_off + 1, cm_off = cs_off + 2 + 4;
    struct {
        size_t off;
        uint8_t val;
    } edits[] = {
        {sid_off, 33},   /* session_id over 32 */
        {sid_off, 200},  /* session_id past the message */
        {cs_off + 1, 3}, /* odd cipher_suites */
        {cs_off + 1, 0}, /* empty cipher_suites */
        {cs_off, 0xff},  /* cipher_suites past the message */
        {cm_off, 0},     /* no compression method */
        {cm_off, 0xff},  /* compression_methods past the message */
        {5 + 4, 2},      /* legacy_version 2.x */
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        bytes_t *x = bytes_new();
        putn(x, good->b, good->n);
        x->b[edits[i].off] = edits[i].val;
        filter_tls_hello_t h;
        filter_tls_result_t r = parse(x, MAXH, &h);
        cr_assert_eq(r, FILTER_TLS_NOT_TLS, "edit %zu: %s", i, filter_tls_reason(r));
        free(x);
    }
    /* One stray byte where the extensions length would be. */
    bytes_t *x = hand_hello(NULL);
    bytes_t *hs = hs_of(x);
    put8(hs, 0);
    hs->b[3]++;
    size_t size = 16384;
    bytes_t *y = records(hs, &size, 1);
    expect(y, MAXH, FILTER_TLS_NOT_TLS);
    free(y);
    free(hs);
    free(x);
    free(good);
    free(e);
}

Test(tls_hello, many_tiny_records_hostile)
{
    /* Every record one byte, hostile content inside: still bounded. */
    const char *names[] = {"a.example", "b.example"};
    bytes_t *e = bytes_new();
    ext_sni(e, names, 2);
    bytes_t *x = hand_hello(e);
    bytes_t *hs = hs_of(x);
    size_t one = 1;
    bytes_t *y = records(hs, &one, 1);
    check_prefixes(y, 1 << 20, FILTER_TLS_MULTI_SNI, true);
    free(y);
    free(hs);
    free(x);
    free(e);
}

/* ---- the alert and the reasons ----------------------------------------- */

Test(tls_hello, alert_access_denied)
{
    size_t len = 0;
    const uint8_t *a = filter_tls_alert_access_denied(&len);
    static const uint8_t want[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31};
    cr_assert_eq(len, 7);
    cr_assert_eq(memcmp(a, want, 7), 0);
}

Test(tls_hello, reasons)
{
    cr_assert_str_eq(filter_tls_reason(FILTER_TLS_NO_SNI), "no-sni");
    cr_assert_str_eq(filter_tls_reason(FILTER_TLS_NOT_TLS), "not-tls");
    cr_assert_str_eq(filter_tls_reason(FILTER_TLS_TOO_BIG), "hello-too-big");
    cr_assert_str_eq(filter_tls_reason(FILTER_TLS_SNI), "sni");
    cr_assert_str_eq(filter_tls_reason((filter_tls_result_t)99), "unknown");
}

/* ---- seed corpus --------------------------------------------------------- */

static void seed(const char *dir, const char *name, const bytes_t *x)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(x->b, 1, x->n, f), x->n);
    fclose(f);
}

Test(tls_hello, seeds)
{
    const char *dir = getenv("MOAT_TLS_SEED_DIR");
    if (!dir)
        return;
    struct {
        const char *file;
        hello_opts_t o;
    } real[] = {
        {"gnutls-tls12-sni", {"NORMAL:-VERS-ALL:+VERS-TLS1.2", "example.com", 0, 0}},
        {"gnutls-tls13-sni", {"NORMAL:-VERS-ALL:+VERS-TLS1.3", "www.example.org", 0, 0}},
        {"gnutls-default-sni-alpn", {NULL, "api.example.net", 3, 0}},
        {"gnutls-tls12-no-sni", {"NORMAL:-VERS-ALL:+VERS-TLS1.2", NULL, 0, 0}},
        {"gnutls-tls13-no-sni", {"NORMAL:-VERS-ALL:+VERS-TLS1.3", NULL, 1, 0}},
        {"gnutls-compat", {"NORMAL:%COMPAT", "compat.example.com", 0, 0}},
        {"gnutls-tls10", {"NORMAL:-VERS-ALL:+VERS-TLS1.0", "old.example.com", 0, 0}},
        {"gnutls-big-2-records", {NULL, "big.example.com", 4, 17000}},
    };
    for (size_t i = 0; i < sizeof real / sizeof real[0]; i++) {
        bytes_t *x = capture_hello(real[i].o);
        seed(dir, real[i].file, x);
        free(x);
    }
    bytes_t *x = capture_hello((hello_opts_t){NULL, "split.example.com", 2, 0});
    bytes_t *hs = hs_of(x);
    size_t s1 = 1, s7 = 7, s2[] = {2, 3, 5}, s100 = 100;
    bytes_t *y = records(hs, &s1, 1);
    seed(dir, "split-1", y);
    free(y);
    y = records(hs, &s7, 1);
    seed(dir, "split-7", y);
    free(y);
    y = records(hs, s2, 3);
    seed(dir, "split-2-3-5", y);
    free(y);
    y = records(hs, &s100, 1);
    seed(dir, "split-100", y);
    free(y);
    uint8_t ech[64] = {0};
    y = with_ext(x, 0xfe0d, ech, sizeof ech);
    seed(dir, "ech-outer", y);
    free(y);
    static const uint8_t sni[] = {0, 8, 0, 0, 5, 'o', '.', 't', 'h', 'r'};
    y = with_ext(x, 0, sni, sizeof sni);
    seed(dir, "dup-server-name", y);
    free(y);
    free(hs);
    free(x);

    const char *two[] = {"a.example", "b.example"};
    const char *one[] = {"hand.example"};
    bytes_t *e = bytes_new();
    ext_sni(e, two, 2);
    y = hand_hello(e);
    seed(dir, "hand-multi-sni", y);
    free(y);
    e->n = 0;
    ext_add(e, 0x0a0a, NULL, 0);
    ext_sni(e, one, 1);
    ext_add(e, 0x0010, "\x00\x03\x02h2", 5);
    y = hand_hello(e);
    seed(dir, "hand-grease-alpn", y);
    free(y);
    y = hand_hello(NULL);
    seed(dir, "hand-no-extensions", y);
    free(y);
    static const uint8_t nul[] = {0, 7, 0, 0, 4, 'a', 0, 'b', 'c'};
    e->n = 0;
    ext_add(e, 0, nul, sizeof nul);
    y = hand_hello(e);
    seed(dir, "hand-sni-nul", y);
    free(y);
    static const uint8_t other[] = {0, 14, 7,   0,   2,   'z', 'z', 0,
                                    0, 6,  'h', '.', 't', 'e', 's', 't'};
    e->n = 0;
    ext_add(e, 0, other, sizeof other);
    y = hand_hello(e);
    seed(dir, "hand-sni-other-type", y);
    free(y);
    free(e);
}
