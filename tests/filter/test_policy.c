/* tests/filter/test_policy.c: the compiled allowlist and its decisions
 * (SPEC §2, §2.1, §2.4). */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter/name.h"
#include "filter/policy.h"
#include "filter/policy_internal.h"

/* ---- building policies from text ---------------------------------------- */

#define MAX_RULES 32
#define MAX_PORTS 8

typedef struct spec {
    const char *text;  /* "example.com", "*.example.com", "10.0.0.0/8" */
    const char *ports; /* NULL or "22,443,8000-8100" */
} spec_t;

static filter_rule_t rules[MAX_RULES];
static filter_port_range_t rule_ports[MAX_RULES][MAX_PORTS];
static char rule_texts[MAX_RULES][300];

static const filter_port_range_t default_tls[] = {{443, 443}};
static const filter_port_range_t default_http[] = {{80, 80}, {8080, 8080}};

static size_t parse_ports(const char *s, filter_port_range_t *out)
{
    size_t n = 0;
    while (*s) {
        char *end;
        long lo = strtol(s, &end, 10), hi = lo;
        if (*end == '-')
            hi = strtol(end + 1, &end, 10);
        cr_assert(n < MAX_PORTS);
        out[n++] = (filter_port_range_t){(uint16_t)lo, (uint16_t)hi};
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

/* Fill rules[] from specs (texts are copied into static buffers that the test
 * then scribbles over, to prove the policy copied them). */
static size_t make_rules(const spec_t *specs, size_t n)
{
    cr_assert(n <= MAX_RULES);
    memset(rules, 0, sizeof rules);
    for (size_t i = 0; i < n; i++) {
        filter_rule_t *r = &rules[i];
        const char *t = specs[i].text;
        strcpy(rule_texts[i], t);
        r->text = rule_texts[i];
        r->line = (unsigned)(10 + i);
        r->col = 5;
        if (filter_text_looks_like_addr(t, strlen(t))) {
            r->kind = FILTER_RULE_ADDR;
            cr_assert_eq(filter_prefix_parse(t, strlen(t), &r->prefix, NULL), 0, "%s", t);
        } else {
            r->kind = FILTER_RULE_NAME;
            cr_assert_eq(filter_pattern_parse(t, strlen(t), &r->pattern), 0, "%s", t);
        }
        if (specs[i].ports) {
            r->n_ports = parse_ports(specs[i].ports, rule_ports[i]);
            r->ports = rule_ports[i];
        }
    }
    return n;
}

static filter_policy_t *compile_with(const spec_t *specs, size_t n, bool filtering,
                                     const struct sockaddr_storage *own, size_t n_own,
                                     const filter_policy_t *const *lists, size_t n_lists)
{
    filter_policy_input_t in = {
        .lists = lists,
        .n_lists = n_lists,
        .filtering = filtering,
        .rules = rules,
        .n_rules = make_rules(specs, n),
        .tls_ports = default_tls,
        .n_tls_ports = 1,
        .http_ports = default_http,
        .n_http_ports = 2,
        .own = own,
        .n_own = n_own,
    };
    filter_policy_t *p = (filter_policy_t *)0x1;
    cr_assert_eq(filter_policy_compile(&in, &p), 0);
    cr_assert_not_null(p);
    /* The policy must not point into the caller's rules. */
    for (size_t i = 0; i < n; i++) {
        memset(rule_texts[i], 'X', sizeof rule_texts[i] - 1);
        memset(rule_ports[i], 0xee, sizeof rule_ports[i]);
    }
    memset(rules, 0xab, sizeof rules);
    return p;
}

static filter_policy_t *compile_own(const spec_t *specs, size_t n, bool filtering,
                                    const struct sockaddr_storage *own, size_t n_own)
{
    return compile_with(specs, n, filtering, own, n_own, NULL, 0);
}

static filter_policy_t *compile(const spec_t *specs, size_t n)
{
    return compile_own(specs, n, true, NULL, 0);
}

#define COMPILE(...)                                                                               \
    compile((const spec_t[]){__VA_ARGS__}, sizeof((const spec_t[]){__VA_ARGS__}) / sizeof(spec_t))

/* Every name decision is also asked of filter_match_name_normalized with
 * the normalised name (when there is one): the same answer. */
static filter_decision_t name(const filter_policy_t *p, const char *s, int port)
{
    filter_decision_t d = filter_match_name(p, s, strlen(s), port);
    char norm[FILTER_NAME_MAX + 1];
    size_t n;
    if (filter_name_normalize(s, strlen(s), norm, &n) == FILTER_NAME_OK) {
        filter_decision_t e = filter_match_name_normalized(p, norm, n, port);
        cr_assert_eq(e.verdict, d.verdict, "%s: normalized verdict", s);
        cr_assert_eq(e.reason, d.reason, "%s: normalized reason", s);
        cr_assert_eq(e.rule, d.rule, "%s: normalized rule", s);
    }
    return d;
}

static filter_addr_t A(const char *s)
{
    filter_addr_t a;
    cr_assert_eq(filter_addr_parse(s, strlen(s), &a), 0, "%s", s);
    return a;
}

static filter_decision_t addr(const filter_policy_t *p, const char *s, int port)
{
    filter_addr_t a = A(s);
    return filter_match_addr(p, &a, port);
}

static void expect(filter_decision_t d, filter_verdict_t v, filter_reason_t r, const char *rule,
                   const char *what)
{
    cr_assert_eq(d.verdict, v, "%s: verdict %d, want %d", what, d.verdict, v);
    cr_assert_eq(d.reason, r, "%s: reason %s, want %s", what, filter_reason_str(d.reason),
                 filter_reason_str(r));
    if (rule) {
        cr_assert_not_null(d.rule, "%s: no rule, want %s", what, rule);
        cr_assert_str_eq(d.rule->text, rule, "%s", what);
    } else {
        cr_assert_null(d.rule, "%s: rule %s, want none", what, d.rule ? d.rule->text : "");
    }
}

#define ALLOWED(d, rule)   expect((d), FILTER_ALLOW, FILTER_REASON_ALLOWLIST, (rule), #d)
#define NOT_ALLOWED(d)     expect((d), FILTER_BLOCK, FILTER_REASON_NOT_ALLOWED, NULL, #d)
#define PORT_BLOCKED(d, r) expect((d), FILTER_BLOCK, FILTER_REASON_PORT, (r), #d)

/* ---- names -------------------------------------------------------------- */

Test(policy_name, exact)
{
    filter_policy_t *p = COMPILE({"example.com", NULL}, {"api.openai.com", NULL});
    ALLOWED(name(p, "example.com", 443), "example.com");
    ALLOWED(name(p, "api.openai.com", 443), "api.openai.com");
    ALLOWED(name(p, "example.com", FILTER_ANY_PORT), "example.com");
    NOT_ALLOWED(name(p, "openai.com", 443));
    NOT_ALLOWED(name(p, "www.example.com", 443));
    NOT_ALLOWED(name(p, "example.org", 443));
    filter_policy_free(p);
}

Test(policy_name, case_and_trailing_dot)
{
    filter_policy_t *p = COMPILE({"Example.COM.", NULL});
    ALLOWED(name(p, "EXAMPLE.com", 443), "Example.COM.");
    ALLOWED(name(p, "example.com.", 443), "Example.COM.");
    ALLOWED(name(p, "ExAmPlE.CoM.", 80), "Example.COM.");
    expect(name(p, "example.com..", 443), FILTER_BLOCK, FILTER_REASON_BAD_NAME, NULL, "two dots");
    filter_policy_free(p);
}

Test(policy_name, parent_and_lookalikes)
{
    filter_policy_t *p = COMPILE({"a.example.com", NULL}, {"example.com", NULL});
    filter_policy_t *q = COMPILE({"a.example.com", NULL});
    NOT_ALLOWED(name(q, "example.com", 443)); /* a child rule never allows its parent */
    NOT_ALLOWED(name(q, "b.a.example.com", 443));
    ALLOWED(name(p, "example.com", 443), "example.com");
    NOT_ALLOWED(name(p, "evil.com", 443));
    NOT_ALLOWED(name(p, "example.com.evil.com", 443));
    NOT_ALLOWED(name(p, "notexample.com", 443));
    NOT_ALLOWED(name(p, "xexample.com", 443));
    NOT_ALLOWED(name(p, "example.co", 443));
    NOT_ALLOWED(name(p, "com", 443));
    filter_policy_free(p);
    filter_policy_free(q);
}

Test(policy_name, wildcard)
{
    filter_policy_t *p = COMPILE({"*.example.com", NULL});
    ALLOWED(name(p, "a.example.com", 443), "*.example.com");
    ALLOWED(name(p, "a.b.example.com", 443), "*.example.com");
    ALLOWED(name(p, "x.y.z.w.example.com", 80), "*.example.com");
    ALLOWED(name(p, "A.Example.Com.", 443), "*.example.com");
    NOT_ALLOWED(name(p, "example.com", 443)); /* never the apex */
    NOT_ALLOWED(name(p, "notexample.com", 443));
    NOT_ALLOWED(name(p, "a.notexample.com", 443));
    NOT_ALLOWED(name(p, "example.com.evil.com", 443));
    NOT_ALLOWED(name(p, "a.example.com.evil.com", 443));
    NOT_ALLOWED(name(p, "com", 443));
    filter_policy_free(p);
}

Test(policy_name, wildcard_and_exact_together)
{
    filter_policy_t *p =
        COMPILE({"*.example.com", NULL}, {"example.com", "22"}, {"*.b.example.com", "9000"});
    ALLOWED(name(p, "example.com", 22), "example.com");
    PORT_BLOCKED(name(p, "example.com", 443), "example.com");
    ALLOWED(name(p, "a.example.com", 443), "*.example.com");
    /* both wildcards match a.b.example.com: each allows its own ports */
    ALLOWED(name(p, "a.b.example.com", 9000), "*.b.example.com");
    ALLOWED(name(p, "a.b.example.com", 443), "*.example.com");
    PORT_BLOCKED(name(p, "a.b.example.com", 22), "*.b.example.com");
    /* b.example.com itself is only under *.example.com */
    ALLOWED(name(p, "b.example.com", 443), "*.example.com");
    PORT_BLOCKED(name(p, "b.example.com", 9000), "*.example.com");
    filter_policy_free(p);
}

Test(policy_name, ports_and_ranges)
{
    filter_policy_t *p = COMPILE({"api.example.com", "443"}, {"dev.example.com", "8000-8100,22"});
    ALLOWED(name(p, "api.example.com", 443), "api.example.com");
    PORT_BLOCKED(name(p, "api.example.com", 444), "api.example.com");
    PORT_BLOCKED(name(p, "api.example.com", 80), "api.example.com");
    cr_assert_str_eq(filter_reason_str(name(p, "api.example.com", 444).reason), "port-not-allowed");
    ALLOWED(name(p, "dev.example.com", 8000), "dev.example.com");
    ALLOWED(name(p, "dev.example.com", 8050), "dev.example.com");
    ALLOWED(name(p, "dev.example.com", 8100), "dev.example.com");
    ALLOWED(name(p, "dev.example.com", 22), "dev.example.com");
    PORT_BLOCKED(name(p, "dev.example.com", 7999), "dev.example.com");
    PORT_BLOCKED(name(p, "dev.example.com", 8101), "dev.example.com");
    PORT_BLOCKED(name(p, "dev.example.com", 443), "dev.example.com");
    PORT_BLOCKED(name(p, "dev.example.com", 0), "dev.example.com");
    PORT_BLOCKED(name(p, "dev.example.com", 70000), "dev.example.com");
    /* resolvable whatever its ports */
    ALLOWED(name(p, "dev.example.com", FILTER_ANY_PORT), "dev.example.com");
    filter_policy_free(p);
}

Test(policy_name, no_ports_means_tls_and_http_ports)
{
    filter_policy_t *p = COMPILE({"example.com", NULL});
    ALLOWED(name(p, "example.com", 443), "example.com");
    ALLOWED(name(p, "example.com", 80), "example.com");
    ALLOWED(name(p, "example.com", 8080), "example.com");
    PORT_BLOCKED(name(p, "example.com", 22), "example.com");
    PORT_BLOCKED(name(p, "example.com", 8443), "example.com");
    PORT_BLOCKED(name(p, "example.com", 81), "example.com");
    const filter_rule_info_t *r = filter_policy_rule_at(p, 0);
    cr_assert_eq(r->n_ports, 3);
    cr_assert_eq(r->ports[0].lo, 80);
    cr_assert_eq(r->ports[1].lo, 443);
    cr_assert_eq(r->ports[2].lo, 8080);
    filter_policy_free(p);
}

Test(policy_name, multiple_rules_same_name)
{
    filter_policy_t *p = COMPILE({"github.com", "22"}, {"github.com", NULL});
    ALLOWED(name(p, "github.com", 22), "github.com");
    cr_assert_eq(name(p, "github.com", 22).rule, filter_policy_rule_at(p, 0));
    ALLOWED(name(p, "github.com", 443), "github.com");
    cr_assert_eq(name(p, "github.com", 443).rule, filter_policy_rule_at(p, 1));
    ALLOWED(name(p, "github.com", 80), "github.com");
    PORT_BLOCKED(name(p, "github.com", 23), "github.com");
    filter_policy_free(p);

    /* and the other order, with overlapping and adjacent ranges */
    p = COMPILE({"x.example.com", "100-200"}, {"x.example.com", "150-300,22"},
                {"x.example.com", "301"}, {"*.example.com", "5000"});
    for (int port = 100; port <= 301; port++)
        ALLOWED(name(p, "x.example.com", port), "x.example.com");
    ALLOWED(name(p, "x.example.com", 22), "x.example.com");
    ALLOWED(name(p, "x.example.com", 5000), "*.example.com");
    PORT_BLOCKED(name(p, "x.example.com", 99), "x.example.com");
    PORT_BLOCKED(name(p, "x.example.com", 302), "x.example.com");
    cr_assert_eq(name(p, "x.example.com", 250).rule, filter_policy_rule_at(p, 1));
    filter_policy_free(p);
}

Test(policy_name, empty_allow_is_air_gap)
{
    filter_policy_input_t in = {.filtering = true};
    filter_policy_t *p = NULL;
    cr_assert_eq(filter_policy_compile(&in, &p), 0);
    cr_assert(filter_policy_filtering(p));
    cr_assert_eq(filter_policy_rule_count(p), 0);
    NOT_ALLOWED(name(p, "example.com", 443));
    NOT_ALLOWED(name(p, "example.com", FILTER_ANY_PORT));
    NOT_ALLOWED(addr(p, "8.8.8.8", 443));
    NOT_ALLOWED(addr(p, "2001:db8::1", FILTER_ANY_PORT));
    filter_addr_t a = A("10.0.0.1");
    cr_assert(filter_check_private(p, &a));
    cr_assert_not(filter_addr_covered(p, &a));
    cr_assert_eq(filter_match_name_all(p, "example.com", 11, NULL, 0), 0);
    filter_policy_free(p);
}

Test(policy_name, filtering_off)
{
    /* rules given with filtering off are ignored: there is no `allow` key */
    filter_policy_t *p = compile_own((const spec_t[]){{"127.0.0.1", NULL}}, 1, false, NULL, 0);
    cr_assert_not(filter_policy_filtering(p));
    cr_assert_eq(filter_policy_rule_count(p), 0);
    expect(name(p, "anything.example", 443), FILTER_ALLOW, FILTER_REASON_FILTER_OFF, NULL, "name");
    expect(name(p, "anything.example", FILTER_ANY_PORT), FILTER_ALLOW, FILTER_REASON_FILTER_OFF,
           NULL, "name any");
    expect(addr(p, "8.8.8.8", 22), FILTER_ALLOW, FILTER_REASON_FILTER_OFF, NULL, "addr");
    cr_assert_str_eq(filter_reason_str(FILTER_REASON_FILTER_OFF), "filter-off");
    /* §2.4 still holds, and nothing lifts it */
    filter_addr_t lo = A("127.0.0.1"), priv = A("10.0.0.1");
    expect(filter_check_refused(p, &lo, 80), FILTER_BLOCK, FILTER_REASON_REFUSED_RANGE, NULL,
           "loopback");
    cr_assert_not(filter_check_private(p, &priv)); /* only with filtering on */
    filter_policy_free(p);
}

Test(policy_name, bad_guest_names)
{
    filter_policy_t *p = COMPILE({"example.com", NULL});
    char big[400];
    memset(big, 'a', sizeof big);
    expect(filter_match_name(p, "example.com\0.evil", 17, 443), FILTER_BLOCK,
           FILTER_REASON_BAD_NAME, NULL, "embedded NUL");
    expect(filter_match_name(p, "example.com\0", 12, 443), FILTER_BLOCK, FILTER_REASON_BAD_NAME,
           NULL, "trailing NUL");
    expect(filter_match_name(p, big, sizeof big, 443), FILTER_BLOCK, FILTER_REASON_BAD_NAME, NULL,
           "overlong");
    expect(filter_match_name(p, "", 0, 443), FILTER_BLOCK, FILTER_REASON_BAD_NAME, NULL, "empty");
    expect(filter_match_name(p, NULL, 0, 443), FILTER_BLOCK, FILTER_REASON_BAD_NAME, NULL, "NULL");
    expect(name(p, "exa mple.com", 443), FILTER_BLOCK, FILTER_REASON_BAD_NAME, NULL, "space");
    expect(name(p, "*.example.com", 443), FILTER_BLOCK, FILTER_REASON_BAD_NAME, NULL, "star");
    expect(name(p, "203.0.113.7", 443), FILTER_BLOCK, FILTER_REASON_BAD_NAME, NULL, "literal");
    cr_assert_str_eq(filter_reason_str(FILTER_REASON_BAD_NAME), "bad-name");
    cr_assert_eq(filter_match_name_all(p, "example.com\0", 12, NULL, 0), 0);
    filter_policy_free(p);
}

Test(policy_name, match_all)
{
    filter_policy_t *p =
        COMPILE({"*.example.com", NULL}, {"a.b.example.com", "22"}, {"*.b.example.com", "9000"},
                {"a.b.example.com", NULL}, {"other.com", NULL}, {"*.a.b.example.com", NULL});
    const filter_rule_info_t *out[8];
    size_t n = filter_match_name_all(p, "A.B.Example.com", 15, out, 8);
    cr_assert_eq(n, 4);
    /* exact first (config order), then wildcards most specific first */
    cr_assert_eq(out[0], filter_policy_rule_at(p, 1));
    cr_assert_eq(out[1], filter_policy_rule_at(p, 3));
    cr_assert_eq(out[2], filter_policy_rule_at(p, 2));
    cr_assert_eq(out[3], filter_policy_rule_at(p, 0));
    /* max caps what is written, not what is counted */
    const filter_rule_info_t *two[3] = {NULL, NULL, NULL};
    cr_assert_eq(filter_match_name_all(p, "a.b.example.com", 15, two, 2), 4);
    cr_assert_eq(two[0], filter_policy_rule_at(p, 1));
    cr_assert_null(two[2]);
    cr_assert_eq(filter_match_name_all(p, "a.b.example.com", 15, NULL, 0), 4);
    cr_assert_eq(filter_match_name_all(p, "example.com", 11, out, 8), 0);
    cr_assert_eq(filter_match_name_all(p, "z.example.com", 13, out, 8), 1);
    cr_assert_eq(out[0], filter_policy_rule_at(p, 0));
    filter_policy_free(p);
}

Test(policy_name, decision_reports_rule)
{
    filter_policy_t *p = COMPILE({"10.0.0.0/8", NULL}, {"*.Example.com", "443,8000-8100"});
    filter_decision_t d = name(p, "www.example.com", 8001);
    ALLOWED(d, "*.Example.com");
    cr_assert_eq(d.rule->kind, FILTER_RULE_NAME);
    cr_assert_eq(d.rule->line, 11);
    cr_assert_eq(d.rule->col, 5);
    cr_assert_eq(d.rule->n_ports, 2);
    cr_assert_eq(d.rule->ports[0].lo, 443);
    cr_assert_eq(d.rule->ports[0].hi, 443);
    cr_assert_eq(d.rule->ports[1].lo, 8000);
    cr_assert_eq(d.rule->ports[1].hi, 8100);
    filter_decision_t e = addr(p, "10.1.2.3", 5);
    ALLOWED(e, "10.0.0.0/8");
    cr_assert_eq(e.rule->kind, FILTER_RULE_ADDR);
    cr_assert_eq(e.rule->line, 10);
    cr_assert_eq(e.rule->n_ports, 0);
    cr_assert_null(e.rule->ports);
    cr_assert_eq(filter_policy_rule_count(p), 2);
    cr_assert_null(filter_policy_rule_at(p, 2));
    filter_policy_free(p);
}

Test(policy_name, deep_and_long_names)
{
    /* a rule on a long base; a guest name of 253 octets with 120+ labels */
    char base[300], guest[300];
    memset(base, 'b', 60);
    strcpy(base + 60, ".example.com");
    char rule[310];
    snprintf(rule, sizeof rule, "*.%s", base);
    filter_policy_t *p = compile((const spec_t[]){{rule, NULL}}, 1);
    size_t bl = strlen(base);
    size_t prefix = 253 - bl - 1;
    for (size_t i = 0; i < prefix; i++)
        guest[i] = i % 2 ? '.' : 'x';
    if (guest[prefix - 1] == '.')
        guest[prefix - 1] = 'x';
    guest[prefix] = '.';
    memcpy(guest + prefix + 1, base, bl + 1);
    cr_assert_eq(strlen(guest), 253);
    cr_assert_eq(name(p, guest, 443).verdict, FILTER_ALLOW);
    guest[0] = '\0';
    filter_policy_free(p);
}

/* ---- addresses ---------------------------------------------------------- */

Test(policy_addr, exact_and_cidr)
{
    filter_policy_t *p =
        COMPILE({"203.0.113.7", NULL}, {"198.51.100.0/24", NULL}, {"2001:db8::7", NULL},
                {"2001:db8:1::/48", NULL}, {"192.0.2.1/32", NULL}, {"2001:db8:2::1/128", NULL});
    ALLOWED(addr(p, "203.0.113.7", 443), "203.0.113.7");
    NOT_ALLOWED(addr(p, "203.0.113.8", 443));
    ALLOWED(addr(p, "198.51.100.0", 1), "198.51.100.0/24");
    ALLOWED(addr(p, "198.51.100.255", 65535), "198.51.100.0/24");
    NOT_ALLOWED(addr(p, "198.51.101.0", 443));
    ALLOWED(addr(p, "2001:db8::7", 22), "2001:db8::7");
    NOT_ALLOWED(addr(p, "2001:db8::8", 22));
    ALLOWED(addr(p, "2001:db8:1:ffff::1", 22), "2001:db8:1::/48");
    NOT_ALLOWED(addr(p, "2001:db8:2::2", 22));
    ALLOWED(addr(p, "2001:db8:2::1", 22), "2001:db8:2::1/128");
    ALLOWED(addr(p, "192.0.2.1", 22), "192.0.2.1/32");
    NOT_ALLOWED(addr(p, "192.0.2.2", 22));
    /* mapped form is the IPv4 address */
    ALLOWED(addr(p, "::ffff:203.0.113.7", 443), "203.0.113.7");
    filter_policy_free(p);
}

Test(policy_addr, slash_zero)
{
    filter_policy_t *p = COMPILE({"0.0.0.0/0", "443"});
    ALLOWED(addr(p, "8.8.8.8", 443), "0.0.0.0/0");
    ALLOWED(addr(p, "255.255.255.255", 443), "0.0.0.0/0");
    PORT_BLOCKED(addr(p, "1.1.1.1", 80), "0.0.0.0/0");
    NOT_ALLOWED(addr(p, "2001:db8::1", 443)); /* families never mix */
    filter_policy_free(p);
    p = COMPILE({"::/0", NULL});
    ALLOWED(addr(p, "2001:db8::1", 80), "::/0");
    NOT_ALLOWED(addr(p, "8.8.8.8", 80));
    filter_policy_free(p);
}

Test(policy_addr, no_ports_means_every_port)
{
    filter_policy_t *p = COMPILE({"203.0.113.0/24", NULL});
    for (int port = 1; port <= 65535; port += 997)
        ALLOWED(addr(p, "203.0.113.9", port), "203.0.113.0/24");
    ALLOWED(addr(p, "203.0.113.9", 65535), "203.0.113.0/24");
    ALLOWED(addr(p, "203.0.113.9", FILTER_ANY_PORT), "203.0.113.0/24");
    filter_policy_free(p);
}

Test(policy_addr, ports_and_longest_prefix)
{
    filter_policy_t *p = COMPILE({"203.0.113.0/24", "443"}, {"203.0.113.128/25", "8000-8100"},
                                 {"203.0.113.200", "22"});
    ALLOWED(addr(p, "203.0.113.1", 443), "203.0.113.0/24");
    PORT_BLOCKED(addr(p, "203.0.113.1", 444), "203.0.113.0/24");
    PORT_BLOCKED(addr(p, "203.0.113.1", 8000), "203.0.113.0/24");
    ALLOWED(addr(p, "203.0.113.129", 8000), "203.0.113.128/25");
    ALLOWED(addr(p, "203.0.113.129", 8100), "203.0.113.128/25");
    PORT_BLOCKED(addr(p, "203.0.113.129", 8101), "203.0.113.128/25");
    PORT_BLOCKED(addr(p, "203.0.113.129", 7999), "203.0.113.128/25");
    /* any covering rule that allows the port admits */
    ALLOWED(addr(p, "203.0.113.129", 443), "203.0.113.0/24");
    ALLOWED(addr(p, "203.0.113.200", 22), "203.0.113.200");
    ALLOWED(addr(p, "203.0.113.200", 8050), "203.0.113.128/25");
    ALLOWED(addr(p, "203.0.113.200", 443), "203.0.113.0/24");
    PORT_BLOCKED(addr(p, "203.0.113.200", 23), "203.0.113.200");
    ALLOWED(addr(p, "203.0.113.200", FILTER_ANY_PORT), "203.0.113.200");
    NOT_ALLOWED(addr(p, "203.0.114.1", 443));
    filter_addr_t a = A("203.0.113.5");
    cr_assert(filter_addr_covered(p, &a));
    filter_policy_free(p);
}

Test(policy_addr, same_prefix_twice)
{
    filter_policy_t *p = COMPILE({"2001:db8::/32", "22"}, {"2001:db8::/32", "443"});
    ALLOWED(addr(p, "2001:db8::1", 22), "2001:db8::/32");
    cr_assert_eq(addr(p, "2001:db8::1", 22).rule, filter_policy_rule_at(p, 0));
    cr_assert_eq(addr(p, "2001:db8::1", 443).rule, filter_policy_rule_at(p, 1));
    PORT_BLOCKED(addr(p, "2001:db8::1", 80), "2001:db8::/32");
    filter_policy_free(p);
}

Test(policy_addr, names_do_not_cover_addresses)
{
    filter_policy_t *p = COMPILE({"example.com", NULL});
    NOT_ALLOWED(addr(p, "93.184.216.34", 443));
    filter_addr_t a = A("93.184.216.34");
    cr_assert_not(filter_addr_covered(p, &a));
    filter_policy_free(p);
}

/* ---- §2.4 ---------------------------------------------------------------- */

static struct sockaddr_storage sa(const char *ip, uint16_t port)
{
    filter_addr_t a = A(ip);
    struct sockaddr_storage ss;
    filter_addr_to_sockaddr(&a, port, &ss);
    return ss;
}

static filter_decision_t refused(const filter_policy_t *p, const char *ip, int port)
{
    filter_addr_t a = A(ip);
    return filter_check_refused(p, &a, port);
}

#define REFUSED(d) expect((d), FILTER_BLOCK, FILTER_REASON_REFUSED_RANGE, NULL, #d)
#define OWN(d)     expect((d), FILTER_BLOCK, FILTER_REASON_OWN_LISTENER, NULL, #d)
#define NOT_REF(d) expect((d), FILTER_ALLOW, FILTER_REASON_ALLOWLIST, NULL, #d)

Test(policy_refused, ranges_and_lifting)
{
    filter_policy_t *p = COMPILE({"127.0.0.1", NULL}, {"10.0.0.0/8", "443"}, {"fe80::/10", "22"});
    REFUSED(refused(p, "127.0.0.2", 80));
    NOT_REF(refused(p, "127.0.0.1", 80));
    ALLOWED(addr(p, "127.0.0.1", 80), "127.0.0.1");
    REFUSED(refused(p, "169.254.169.254", 80));
    REFUSED(refused(p, "::1", 80));
    REFUSED(refused(p, "0.0.0.0", 80));
    REFUSED(refused(p, "::", 80));
    REFUSED(refused(p, "224.0.0.1", FILTER_ANY_PORT));
    REFUSED(refused(p, "ff02::1", 80));
    REFUSED(refused(p, "255.255.255.255", 80));
    REFUSED(refused(p, "::ffff:127.0.0.2", 80));
    /* an address rule lifts the refusal whatever its ports */
    NOT_REF(refused(p, "fe80::1", 80));
    PORT_BLOCKED(addr(p, "fe80::1", 80), "fe80::/10");
    NOT_REF(refused(p, "198.18.0.1", 80));
    NOT_REF(refused(p, "2001:db8::1", 80));
    NOT_REF(refused(p, "8.8.8.8", 80));
    cr_assert_str_eq(filter_reason_str(FILTER_REASON_REFUSED_RANGE), "refused-range");

    filter_addr_t ten = A("10.1.2.3"), other = A("192.168.1.1"), cg = A("100.64.0.1"),
                  ula = A("fd00::1"), pub = A("8.8.8.8");
    cr_assert_not(filter_check_private(p, &ten)); /* lifted by 10.0.0.0/8 */
    cr_assert(filter_check_private(p, &other));
    cr_assert(filter_check_private(p, &cg));
    cr_assert(filter_check_private(p, &ula));
    cr_assert_not(filter_check_private(p, &pub));
    cr_assert(filter_addr_covered(p, &ten));
    cr_assert_not(filter_addr_covered(p, &other));
    cr_assert_str_eq(filter_reason_str(FILTER_REASON_PRIVATE_RANGE), "private-range");
    filter_policy_free(p);
}

Test(policy_refused, own_listeners)
{
    struct sockaddr_storage own[] = {sa("127.0.0.1", 5353), sa("198.18.0.1", 8443),
                                     sa("0.0.0.0", 8080), sa("::", 9090)};
    filter_policy_t *p = compile_own((const spec_t[]){{"example.com", NULL}}, 1, true, own, 4);
    OWN(refused(p, "198.18.0.1", 8443));
    NOT_REF(refused(p, "198.18.0.1", 8444));
    NOT_REF(refused(p, "198.18.0.2", 8443));
    NOT_REF(refused(p, "198.18.0.1", FILTER_ANY_PORT));
    NOT_REF(refused(p, "::ffff:198.18.0.2", 8443));
    OWN(refused(p, "::ffff:198.18.0.1", 8443));
    /* loopback is refused as a range before it is an own listener */
    REFUSED(refused(p, "127.0.0.1", 5353));
    /* wildcard listeners: their port on the addresses of other own listeners */
    OWN(refused(p, "198.18.0.1", 8080));
    OWN(refused(p, "198.18.0.1", 9090));
    NOT_REF(refused(p, "203.0.113.1", 8080));
    cr_assert_str_eq(filter_reason_str(FILTER_REASON_OWN_LISTENER), "own-listener");
    filter_policy_free(p);

    /* an address rule naming the listener lifts it; filtering off, nothing does */
    struct sockaddr_storage lo[] = {sa("127.0.0.1", 8443), sa("0.0.0.0", 8080)};
    p = compile_own((const spec_t[]){{"127.0.0.1", NULL}}, 1, true, lo, 2);
    NOT_REF(refused(p, "127.0.0.1", 8443));
    NOT_REF(refused(p, "127.0.0.1", 8080));
    REFUSED(refused(p, "127.0.0.2", 8080));
    filter_policy_free(p);
    p = compile_own(NULL, 0, false, lo, 2);
    REFUSED(refused(p, "127.0.0.1", 8443));
    filter_policy_free(p);
    /* an own listener is lifted only by a rule covering its address on its
     * port: a rule for the address on other ports must not open a loop
     * back into moat */
    struct sockaddr_storage pub[] = {sa("198.18.0.1", 8443)};
    p = compile_own((const spec_t[]){{"198.18.0.0/15", "443"}}, 1, true, pub, 1);
    OWN(refused(p, "198.18.0.1", 8443));
    NOT_REF(refused(p, "198.18.0.1", 443));
    filter_policy_free(p);
    p = compile_own((const spec_t[]){{"198.18.0.0/15", "8443"}}, 1, true, pub, 1);
    NOT_REF(refused(p, "198.18.0.1", 8443));
    filter_policy_free(p);
    /* filtering off: own listeners off loopback are refused too */
    p = compile_own(NULL, 0, false, pub, 1);
    OWN(refused(p, "198.18.0.1", 8443));
    NOT_REF(refused(p, "198.18.0.1", 443));
    filter_policy_free(p);
}

/* ---- compile ------------------------------------------------------------ */

Test(policy_compile, rejects_bad_rules)
{
    filter_policy_t *p = (filter_policy_t *)0x1;
    filter_rule_t r;
    filter_policy_input_t in = {.filtering = true, .rules = &r, .n_rules = 1};

    memset(&r, 0, sizeof r);
    r.kind = FILTER_RULE_NAME; /* empty pattern */
    cr_assert_eq(filter_policy_compile(&in, &p), -EINVAL);
    cr_assert_null(p);

    cr_assert_eq(filter_pattern_parse("Example.com", 11, &r.pattern), 0);
    r.pattern.name[0] = 'E'; /* not normalised */
    cr_assert_eq(filter_policy_compile(&in, &p), -EINVAL);

    cr_assert_eq(filter_pattern_parse("example.com", 11, &r.pattern), 0);
    filter_port_range_t bad[] = {{0, 10}};
    r.ports = bad;
    r.n_ports = 1;
    cr_assert_eq(filter_policy_compile(&in, &p), -EINVAL);
    bad[0] = (filter_port_range_t){20, 10};
    cr_assert_eq(filter_policy_compile(&in, &p), -EINVAL);
    r.n_ports = 0; /* ports without a count */
    cr_assert_eq(filter_policy_compile(&in, &p), -EINVAL);

    memset(&r, 0, sizeof r);
    r.kind = FILTER_RULE_ADDR;
    r.prefix.addr.family = AF_INET;
    r.prefix.len = 33;
    cr_assert_eq(filter_policy_compile(&in, &p), -EINVAL);
    r.prefix.len = 8;
    r.prefix.addr.bytes[1] = 1; /* host bits */
    cr_assert_eq(filter_policy_compile(&in, &p), -EINVAL);
    r.prefix.addr.family = 0;
    cr_assert_eq(filter_policy_compile(&in, &p), -EINVAL);
    cr_assert_null(p);

    /* text NULL: the policy writes its own */
    memset(&r, 0, sizeof r);
    r.kind = FILTER_RULE_ADDR;
    cr_assert_eq(filter_prefix_parse("10.0.0.0/8", 10, &r.prefix, NULL), 0);
    cr_assert_eq(filter_policy_compile(&in, &p), 0);
    cr_assert_str_eq(filter_policy_rule_at(p, 0)->text, "10.0.0.0/8");
    filter_policy_free(p);
    memset(&r, 0, sizeof r);
    cr_assert_eq(filter_pattern_parse("*.example.com", 13, &r.pattern), 0);
    cr_assert_eq(filter_policy_compile(&in, &p), 0);
    cr_assert_str_eq(filter_policy_rule_at(p, 0)->text, "*.example.com");
    filter_policy_free(p);
    filter_policy_free(NULL);
}

Test(policy_compile, reason_strings)
{
    const char *want[] = {"allowlist", "filter-off",    "not-allowed",   "port-not-allowed",
                          "bad-name",  "refused-range", "private-range", "own-listener"};
    for (int r = FILTER_REASON_ALLOWLIST; r <= FILTER_REASON_OWN_LISTENER; r++)
        cr_assert_str_eq(filter_reason_str((filter_reason_t)r), want[r]);
}

/* Many rules, all found: exercises collisions and table growth. */
Test(policy_compile, many_rules)
{
    enum { N = 5000 };
    filter_rule_t *rs = calloc(N, sizeof *rs);
    char(*texts)[64] = calloc(N, sizeof *texts);
    for (size_t i = 0; i < N; i++) {
        if (i % 3 == 2) {
            snprintf(texts[i], sizeof texts[i], "10.%zu.%zu.0/24", i / 256 % 256, i % 256);
            rs[i].kind = FILTER_RULE_ADDR;
            cr_assert_eq(filter_prefix_parse(texts[i], strlen(texts[i]), &rs[i].prefix, NULL), 0);
        } else {
            snprintf(texts[i], sizeof texts[i], "%sh%zu.example.com", i % 3 ? "*." : "", i);
            rs[i].kind = FILTER_RULE_NAME;
            cr_assert_eq(filter_pattern_parse(texts[i], strlen(texts[i]), &rs[i].pattern), 0);
        }
        rs[i].text = texts[i];
    }
    filter_policy_input_t in = {
        .filtering = true, .rules = rs, .n_rules = N, .tls_ports = default_tls, .n_tls_ports = 1};
    filter_policy_t *p;
    cr_assert_eq(filter_policy_compile(&in, &p), 0);
    for (size_t i = 0; i < N; i++) {
        char q[80];
        filter_decision_t d;
        if (i % 3 == 2) {
            snprintf(q, sizeof q, "10.%zu.%zu.77", i / 256 % 256, i % 256);
            d = addr(p, q, 1234);
        } else {
            snprintf(q, sizeof q, "%sh%zu.example.com", i % 3 ? "x.y." : "", i);
            d = name(p, q, 443);
        }
        cr_assert_eq(d.verdict, FILTER_ALLOW, "%s", q);
        cr_assert_eq(d.rule, filter_policy_rule_at(p, i), "%s", q);
    }
    NOT_ALLOWED(name(p, "h1.example.com", 443)); /* only *.h1 */
    NOT_ALLOWED(name(p, "h5000.example.com", 443));
    filter_policy_stats_t st;
    filter_policy_stats(p, &st);
    cr_assert_geq(st.name_slots, 2 * st.name_entries);
    cr_assert_eq(st.v4_lengths, 1);
    cr_assert_gt(st.bytes, 0);
    filter_policy_free(p);
    free(rs);
    free(texts);
}

/* Names at the length limits (the matcher keeps a set of rule name lengths). */
Test(policy_name, longest_rules)
{
    char exact[260], wild[270], base[256], q[300];
    for (size_t i = 0; i < 253; i++)
        exact[i] = i % 64 == 63 ? '.' : 'e';
    exact[253] = '\0';
    for (size_t i = 0; i < 251; i++)
        base[i] = i % 50 == 49 ? '.' : 'w';
    base[251] = '\0';
    snprintf(wild, sizeof wild, "*.%s", base);
    filter_policy_t *p = compile((const spec_t[]){{exact, NULL}, {wild, NULL}}, 2);
    cr_assert_eq(name(p, exact, 443).verdict, FILTER_ALLOW);
    snprintf(q, sizeof q, "x.%s", base);
    cr_assert_eq(strlen(q), 253);
    cr_assert_eq(name(p, q, 443).verdict, FILTER_ALLOW);
    NOT_ALLOWED(name(p, base, 443));
    snprintf(q, sizeof q, "xy.%s", base); /* 254 octets */
    expect(name(p, q, 443), FILTER_BLOCK, FILTER_REASON_BAD_NAME, NULL, "254");
    filter_policy_free(p);
}

/* ---- shared lists (SPEC §2.7) -------------------------------------------- */

#define SPECS(...)                                                                                 \
    (const spec_t[]){__VA_ARGS__}, sizeof((const spec_t[]){__VA_ARGS__}) / sizeof(spec_t)

/* One compiled list, borrowed by two policies that each add their own rules:
 * each decides by its own rules plus the list's, not by the other's. */
Test(policy_lists, one_list_two_users)
{
    filter_policy_t *list =
        compile(SPECS({"pypi.org", NULL}, {"*.github.com", "443"}, {"203.0.113.0/24", NULL}));
    const filter_policy_t *lists[] = {list};
    filter_policy_t *a = compile_with(SPECS({"a.example", NULL}), true, NULL, 0, lists, 1);
    filter_policy_t *b =
        compile_with(SPECS({"b.example", NULL}, {"198.51.100.7", NULL}), true, NULL, 0, lists, 1);
    ALLOWED(name(a, "a.example", 443), "a.example");
    NOT_ALLOWED(name(a, "b.example", 443));
    ALLOWED(name(b, "b.example", 80), "b.example");
    NOT_ALLOWED(name(b, "a.example", 443));
    ALLOWED(name(a, "PyPI.org", 443), "pypi.org");
    ALLOWED(name(b, "pypi.org.", 8080), "pypi.org");
    ALLOWED(name(a, "api.github.com", 443), "*.github.com");
    PORT_BLOCKED(name(b, "api.github.com", 80), "*.github.com");
    ALLOWED(addr(a, "203.0.113.9", 22), "203.0.113.0/24");
    ALLOWED(addr(b, "203.0.113.9", 22), "203.0.113.0/24");
    ALLOWED(addr(b, "198.51.100.7", 22), "198.51.100.7");
    NOT_ALLOWED(addr(a, "198.51.100.7", 22));
    /* The list's rule is the list's own: one compiled copy. */
    cr_assert_eq(name(a, "pypi.org", 443).rule, name(b, "pypi.org", 443).rule);
    cr_assert_eq(name(a, "pypi.org", 443).rule, filter_policy_rule_at(list, 0));
    /* rule_count and rule_at are the policy's own rules only. */
    cr_assert_eq(filter_policy_rule_count(a), 1);
    cr_assert_eq(filter_policy_rule_count(b), 2);
    cr_assert_null(filter_policy_rule_at(a, 1));
    cr_assert(filter_policy_filtering(a));
    filter_policy_free(a);
    filter_policy_free(b);
    /* The list outlives its users and is still whole. */
    ALLOWED(name(list, "pypi.org", 443), "pypi.org");
    filter_policy_free(list);
}

/* Exact before wildcard whoever holds it, the policy before its lists at the
 * same specificity, and any rule that allows the port admits. */
Test(policy_lists, precedence)
{
    filter_policy_t *l1 = compile(
        SPECS({"x.example.com", "22"}, {"*.example.com", "443"}, {"*.y.example.com", "8443"}));
    filter_policy_t *l2 = compile(SPECS({"x.example.com", "25"}, {"*.example.com", "80"}));
    const filter_policy_t *lists[] = {l1, l2};
    filter_policy_t *p = compile_with(SPECS({"*.example.com", "443"}, {"z.y.example.com", "9000"}),
                                      true, NULL, 0, lists, 2);
    /* Exact in a list beats the policy's own wildcard. */
    ALLOWED(name(p, "x.example.com", 22), "x.example.com");
    ALLOWED(name(p, "x.example.com", 25), "x.example.com");
    cr_assert_eq(name(p, "x.example.com", 25).rule, filter_policy_rule_at(l2, 0));
    /* Port 443: no exact rule allows it; the own wildcard is reported before
     * l1's at the same level. */
    ALLOWED(name(p, "x.example.com", 443), "*.example.com");
    cr_assert_eq(name(p, "x.example.com", 443).rule, filter_policy_rule_at(p, 0));
    /* Port 80 only in l2's wildcard. */
    cr_assert_eq(name(p, "x.example.com", 80).rule, filter_policy_rule_at(l2, 1));
    /* Port-not-allowed reports the first exact rule (the list's: the policy
     * has none for this name). */
    PORT_BLOCKED(name(p, "x.example.com", 1), "x.example.com");
    cr_assert_eq(name(p, "x.example.com", 1).rule, filter_policy_rule_at(l1, 0));
    /* A more specific wildcard in a list beats a less specific own one. */
    cr_assert_eq(name(p, "w.y.example.com", 8443).rule, filter_policy_rule_at(l1, 2));
    PORT_BLOCKED(name(p, "w.y.example.com", 1), "*.y.example.com");
    /* Own exact is first. */
    cr_assert_eq(name(p, "z.y.example.com", 9000).rule, filter_policy_rule_at(p, 1));
    PORT_BLOCKED(name(p, "z.y.example.com", 1), "z.y.example.com");
    cr_assert_eq(name(p, "z.y.example.com", 1).rule, filter_policy_rule_at(p, 1));
    ALLOWED(name(p, "z.y.example.com", FILTER_ANY_PORT), "z.y.example.com");
    NOT_ALLOWED(name(p, "example.com", 443));
    NOT_ALLOWED(name(p, "other.org", 443));
    expect(name(p, "bad..name", 443), FILTER_BLOCK, FILTER_REASON_BAD_NAME, NULL, "bad");

    /* match_name_all: exact (own, then lists in order), then wildcards most
     * specific first, the policy's before the lists' at each level. */
    const filter_rule_info_t *out[8];
    cr_assert_eq(filter_match_name_all(p, "x.example.com", 13, out, 8), 5);
    cr_assert_eq(out[0], filter_policy_rule_at(l1, 0));
    cr_assert_eq(out[1], filter_policy_rule_at(l2, 0));
    cr_assert_eq(out[2], filter_policy_rule_at(p, 0));
    cr_assert_eq(out[3], filter_policy_rule_at(l1, 1));
    cr_assert_eq(out[4], filter_policy_rule_at(l2, 1));
    cr_assert_eq(filter_match_name_all(p, "z.y.example.com", 15, out, 2), 5);
    cr_assert_eq(out[0], filter_policy_rule_at(p, 1));
    cr_assert_eq(out[1], filter_policy_rule_at(l1, 2));
    filter_policy_free(p);
    filter_policy_free(l1);
    filter_policy_free(l2);
}

/* Address rules: the longest prefix over the policy and its lists, ports
 * from every rule at that prefix. */
Test(policy_lists, addresses)
{
    filter_policy_t *l = compile(SPECS({"10.1.0.0/16", "22"}, {"10.1.2.0/24", "443"},
                                       {"2001:db8::/32", NULL}, {"192.0.2.0/24", "80"}));
    const filter_policy_t *lists[] = {l};
    filter_policy_t *p = compile_with(
        SPECS({"10.0.0.0/8", "8080"}, {"10.1.2.0/24", "25"}, {"2001:db8:1::/48", "53"}), true, NULL,
        0, lists, 1);
    ALLOWED(addr(p, "10.9.9.9", 8080), "10.0.0.0/8");
    ALLOWED(addr(p, "10.1.9.9", 22), "10.1.0.0/16");
    ALLOWED(addr(p, "10.1.9.9", 8080), "10.0.0.0/8");
    /* Both policies have 10.1.2.0/24: either's ports allow; own first. */
    cr_assert_eq(addr(p, "10.1.2.3", 25).rule, filter_policy_rule_at(p, 1));
    cr_assert_eq(addr(p, "10.1.2.3", 443).rule, filter_policy_rule_at(l, 1));
    PORT_BLOCKED(addr(p, "10.1.2.3", 1), "10.1.2.0/24");
    cr_assert_eq(addr(p, "10.1.2.3", 1).rule, filter_policy_rule_at(p, 1));
    PORT_BLOCKED(addr(p, "192.0.2.1", 443), "192.0.2.0/24");
    ALLOWED(addr(p, "2001:db8:1::1", 53), "2001:db8:1::/48");
    ALLOWED(addr(p, "2001:db8:1::1", 443), "2001:db8::/32");
    NOT_ALLOWED(addr(p, "11.0.0.1", 443));
    cr_assert(filter_addr_covered(p, &(filter_addr_t){0}) == false);
    filter_addr_t a = A("192.0.2.1");
    cr_assert(filter_addr_covered(p, &a));
    a = A("198.51.100.1");
    cr_assert_not(filter_addr_covered(p, &a));
    filter_policy_free(p);
    filter_policy_free(l);
}

/* An address rule in a list lifts §2.4's refusals as an own one does; the
 * policy's own listeners stay its own (a list's `own` is ignored). */
Test(policy_lists, refusals)
{
    struct sockaddr_storage own[] = {sa("198.18.0.1", 8443)};
    filter_policy_t *l = compile_own(SPECS({"127.0.0.0/8", "5353"}, {"10.0.0.0/8", NULL},
                                           {"169.254.169.254", "80"}, {"198.18.0.0/15", "8443"}),
                                     true, NULL, 0);
    struct sockaddr_storage list_own[] = {sa("203.0.113.1", 443)};
    filter_policy_t *l_own = compile_own(SPECS({"example.org", NULL}), true, list_own, 1);
    const filter_policy_t *lists[] = {l, l_own};
    filter_policy_t *p = compile_with(SPECS({"example.com", NULL}), true, own, 1, lists, 2);
    filter_policy_t *bare = compile_with(SPECS({"example.com", NULL}), true, own, 1, NULL, 0);
    filter_addr_t meta = A("169.254.169.254"), priv = A("10.2.3.4"), lo = A("127.0.0.1"),
                  mine = A("198.18.0.1"), other = A("203.0.113.1");
    REFUSED(filter_check_refused(bare, &meta, 80));
    NOT_REF(filter_check_refused(p, &meta, 80));
    REFUSED(filter_check_refused(bare, &lo, 5353));
    NOT_REF(filter_check_refused(p, &lo, 5353));
    cr_assert(filter_check_private(bare, &priv));
    cr_assert_not(filter_check_private(p, &priv));
    OWN(filter_check_refused(bare, &mine, 8443));
    NOT_REF(filter_check_refused(p, &mine, 8443)); /* the list names it on that port */
    NOT_REF(filter_check_refused(p, &other, 443)); /* a list's own listeners are not p's */
    filter_policy_free(p);
    filter_policy_free(bare);
    filter_policy_free(l);
    filter_policy_free(l_own);
}

/* Without `allow` the lists are ignored like the rules; a NULL list is
 * refused. */
Test(policy_lists, filtering_off_and_bad_input)
{
    filter_policy_t *l = compile(SPECS({"10.0.0.0/8", NULL}));
    const filter_policy_t *lists[] = {l};
    filter_policy_t *p = compile_with(NULL, 0, false, NULL, 0, lists, 1);
    expect(name(p, "x.org", 443), FILTER_ALLOW, FILTER_REASON_FILTER_OFF, NULL, "off");
    filter_addr_t priv = A("10.2.3.4"), lo = A("127.0.0.1");
    cr_assert_not(filter_addr_covered(p, &priv));
    REFUSED(filter_check_refused(p, &lo, 1));
    filter_policy_free(p);

    const filter_policy_t *none[] = {NULL};
    filter_policy_input_t in = {.filtering = true, .lists = none, .n_lists = 1};
    filter_policy_t *q = (filter_policy_t *)0x1;
    cr_assert_eq(filter_policy_compile(&in, &q), -EINVAL);
    cr_assert_null(q);
    in.lists = NULL;
    cr_assert_eq(filter_policy_compile(&in, &q), -EINVAL);
    filter_policy_free(l);
}
