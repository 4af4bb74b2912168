/* tests/filter/fuzz_name.c: guest names and config texts through the name
 * normaliser, the pattern and prefix parsers and the policy matcher.
 *
 * Beyond "does not crash", checks the invariants the matcher relies on: a
 * normalised name is a fixed point of normalisation, at most 253 octets,
 * lowercase; a prefix survives format + parse; a name that does not normalise
 * is bad-name; filter_match_name(ANY) allows exactly when
 * filter_match_name_all finds a rule.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filter/policy.h"

static filter_policy_t *fz_policy;

static void fz_check(bool ok)
{
    if (!ok)
        abort();
}

static void fz_add(filter_rule_t *r, const char *text, const filter_port_range_t *ports,
                   size_t n_ports)
{
    memset(r, 0, sizeof *r);
    r->text = text;
    if (filter_text_looks_like_addr(text, strlen(text))) {
        r->kind = FILTER_RULE_ADDR;
        fz_check(filter_prefix_parse(text, strlen(text), &r->prefix, NULL) == 0);
    } else {
        r->kind = FILTER_RULE_NAME;
        fz_check(filter_pattern_parse(text, strlen(text), &r->pattern) == 0);
    }
    r->ports = n_ports ? (filter_port_range_t *)ports : NULL;
    r->n_ports = n_ports;
}

/* Compiled once, kept for the process's life. */
static const filter_policy_t *fz_get_policy(void)
{
    if (fz_policy)
        return fz_policy;
    static const filter_port_range_t p22[] = {{22, 22}}, p8k[] = {{8000, 8100}, {443, 443}};
    static const filter_port_range_t tls[] = {{443, 443}}, http[] = {{80, 80}};
    filter_rule_t r[10];
    size_t n = 0;
    fz_add(&r[n++], "example.com", NULL, 0);
    fz_add(&r[n++], "*.example.com", NULL, 0);
    fz_add(&r[n++], "github.com", p22, 1);
    fz_add(&r[n++], "github.com", NULL, 0);
    fz_add(&r[n++], "*.a.b.c.d", p8k, 2);
    fz_add(&r[n++], "_srv.x-y.org", NULL, 0);
    fz_add(&r[n++], "203.0.113.0/24", NULL, 0);
    fz_add(&r[n++], "127.0.0.1", p22, 1);
    fz_add(&r[n++], "2001:db8::/32", p8k, 2);
    fz_add(&r[n++], "10.0.0.0/8", NULL, 0);
    filter_policy_input_t in = {
        .filtering = true,
        .rules = r,
        .n_rules = n,
        .tls_ports = tls,
        .n_tls_ports = 1,
        .http_ports = http,
        .n_http_ports = 1,
    };
    fz_check(filter_policy_compile(&in, &fz_policy) == 0);
    return fz_policy;
}

static void fz_names(const filter_policy_t *p, const char *s, size_t n, int port)
{
    char out[FILTER_NAME_MAX + 1], again[FILTER_NAME_MAX + 1];
    size_t len, len2;
    int rc = filter_name_normalize(s, n, out, &len);
    if (rc == FILTER_NAME_OK) {
        fz_check(len >= 1 && len <= FILTER_NAME_MAX && strlen(out) == len);
        for (size_t i = 0; i < len; i++)
            fz_check(out[i] < 'A' || out[i] > 'Z');
        fz_check(filter_name_normalize(out, len, again, &len2) == FILTER_NAME_OK);
        fz_check(len2 == len && memcmp(out, again, len) == 0);
    } else {
        fz_check(rc < 0 && rc >= FILTER_NAME_ENUMERIC && out[0] == '\0' && len == 0);
    }
    (void)filter_name_strerror(rc);

    filter_decision_t d = filter_match_name(p, s, n, port);
    if (rc != FILTER_NAME_OK)
        fz_check(d.verdict == FILTER_BLOCK && d.reason == FILTER_REASON_BAD_NAME && !d.rule);
    else
        fz_check(d.reason != FILTER_REASON_BAD_NAME);
    fz_check((d.verdict == FILTER_ALLOW) == (d.reason == FILTER_REASON_ALLOWLIST));

    const filter_rule_info_t *all[8];
    size_t n_all = filter_match_name_all(p, s, n, all, 8);
    filter_decision_t any = filter_match_name(p, s, n, FILTER_ANY_PORT);
    fz_check((any.verdict == FILTER_ALLOW) == (n_all > 0));
    if (d.rule) {
        bool found = false;
        for (size_t i = 0; i < n_all && i < 8; i++)
            found |= all[i] == d.rule;
        fz_check(found);
    }

    filter_pattern_t pat;
    rc = filter_pattern_parse(s, n, &pat);
    if (rc == FILTER_NAME_OK)
        fz_check(pat.len >= 1 && pat.len + (pat.wildcard ? 2 : 0) <= FILTER_NAME_MAX &&
                 strlen(pat.name) == pat.len);
    else
        fz_check(!pat.wildcard && pat.len == 0);
    (void)filter_text_looks_like_addr(s, n);
}

static void fz_addrs(const filter_policy_t *p, const char *s, size_t n, int port)
{
    filter_prefix_t px, px2;
    const char *why = NULL;
    if (filter_prefix_parse(s, n, &px, &why) == 0) {
        char buf[FILTER_ADDR_STRLEN];
        filter_prefix_format(&px, buf, sizeof buf);
        fz_check(filter_prefix_parse(buf, strlen(buf), &px2, NULL) == 0);
        fz_check(memcmp(&px, &px2, sizeof px) == 0);
        fz_check(filter_prefix_contains(&px, &px.addr));
    } else {
        fz_check(why != NULL);
    }
    filter_addr_t a;
    if (filter_addr_parse(s, n, &a) == 0) {
        filter_decision_t d = filter_match_addr(p, &a, port);
        /* a rule is reported exactly when one covers the address */
        fz_check((d.reason == FILTER_REASON_NOT_ALLOWED) == (d.rule == NULL));
        fz_check((d.rule != NULL) == filter_addr_covered(p, &a));
        fz_check((d.verdict == FILTER_ALLOW) == (d.reason == FILTER_REASON_ALLOWLIST));
        if (d.reason == FILTER_REASON_PORT)
            fz_check(filter_match_addr(p, &a, FILTER_ANY_PORT).verdict == FILTER_ALLOW);
        filter_decision_t r = filter_check_refused(p, &a, port);
        if (r.verdict == FILTER_BLOCK)
            fz_check(filter_addr_is_always_refused(&a) && !filter_addr_covered(p, &a));
        fz_check(filter_check_private(p, &a) ==
                 (filter_addr_is_private(&a) && !filter_addr_covered(p, &a)));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const filter_policy_t *p = fz_get_policy();
    /* The first two bytes pick the port (0 = any) when there are enough. */
    int port = FILTER_ANY_PORT;
    if (size > 2) {
        port = data[0] << 8 | data[1];
        if (port == 0)
            port = FILTER_ANY_PORT;
    }
    /* Exact-size copy so the sanitizers see any read past the end. */
    char *s = malloc(size ? size : 1);
    if (!s)
        return 0;
    if (size)
        memcpy(s, data, size);
    fz_names(p, s, size, port);
    fz_addrs(p, s, size, port);
    if (size > 2) {
        fz_names(p, s + 2, size - 2, port);
        fz_addrs(p, s + 2, size - 2, port);
    }
    free(s);
    return 0;
}
