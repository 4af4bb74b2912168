/* filter/policy.h: the compiled allowlist and the one decision API.
 *
 * filter_policy_compile() turns the config's rules into lookup structures
 * whose cost per decision does not grow with the number of rules:
 *   - names: exact and wildcard rules in one hash keyed by the normalised
 *     name; a lookup hashes every suffix of the guest's name in a single
 *     right-to-left pass, so it costs O(length of the name);
 *   - addresses: one hash keyed by (prefix length, masked address), probed
 *     once per prefix length in use, longest first (at most 33 + 129
 *     lengths), so it costs O(number of distinct lengths);
 *   - ports: sorted, merged ranges per rule; rules sharing a name or prefix
 *     are merged into one segment list, so many rules for one name cost one
 *     binary search.
 *
 * Everyone decides through this header: `moat explain`, the resolver, the
 * proxy. A compiled policy is immutable and may be shared by any number of
 * readers on the loop; it is freed with filter_policy_free() by whoever
 * compiled it (the daemon swaps whole generations on reload).
 */
#ifndef MOAT_FILTER_POLICY_H
#define MOAT_FILTER_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "filter/addr.h"
#include "filter/rule.h"

typedef struct filter_policy filter_policy_t;

/* What the policy is compiled from (all borrowed for the call only). */
typedef struct filter_policy_input {
    bool filtering; /* the config has an `allow` key (even an empty list) */
    const filter_rule_t *rules;
    size_t n_rules;
    /* Ports a name rule without `ports` allows: tls_ports and http_ports. */
    const filter_port_range_t *tls_ports;
    size_t n_tls_ports;
    const filter_port_range_t *http_ports;
    size_t n_http_ports;
    /* moat's own listeners (any kind), refused as destinations (§2.4).
     * Non-IP entries are skipped. A listener on a wildcard address (0.0.0.0,
     * ::, either family) refuses its port on loopback, on the unspecified
     * address and on the address of every other entry here: the policy
     * cannot know the host's interface addresses, so a caller that wants
     * them refused lists them (addr:port) as well. */
    const struct sockaddr_storage *own;
    size_t n_own;
    /* Shared rule sets (SPEC §2.7 `lists`) this policy decides by besides
     * its own rules, each compiled once with filter_policy_compile (their
     * own `own` and `lists` are ignored; their name rules without ports
     * take the ports of their own input). Borrowed, not copied: they must
     * outlive this policy. A decision treats their rules as if they were
     * listed after the policy's own, in this order: at equal specificity
     * the policy's rule is reported before a list's. Ignored with
     * filtering false. */
    const filter_policy_t *const *lists;
    size_t n_lists;
} filter_policy_input_t;

/* Compile. Returns 0 and sets *out, or -ENOMEM / -EINVAL (a rule that the
 * config should have refused) with *out NULL. Copies everything it keeps.
 * With filtering false the rules are ignored (there is no `allow` key). */
int filter_policy_compile(const filter_policy_input_t *in, filter_policy_t **out);

/* Free a compiled policy (NULL is fine). */
void filter_policy_free(filter_policy_t *p);

/* True when the config had an `allow` key. */
bool filter_policy_filtering(const filter_policy_t *p);

/* Number of the policy's own rules compiled, its lists' not counted (for
 * `moat check`'s summary, which counts each list once on its own). */
size_t filter_policy_rule_count(const filter_policy_t *p);

typedef enum filter_verdict {
    FILTER_ALLOW,
    FILTER_BLOCK,
} filter_verdict_t;

/* Why a decision went the way it did: every reason moat logs, in the order
 * the metrics list them (core/stats.h). The policy's own lookups return the
 * first eight; the rest come from the readers of guest bytes, the proxy and
 * the DNS service, all decided in filter/decide.h. */
typedef enum filter_reason {
    FILTER_REASON_ALLOWLIST,     /* "allowlist": a rule matched */
    FILTER_REASON_FILTER_OFF,    /* "filter-off": no `allow` key */
    FILTER_REASON_NOT_ALLOWED,   /* "not-allowed": no rule matches */
    FILTER_REASON_PORT,          /* "port-not-allowed": a rule matches, not on this port */
    FILTER_REASON_BAD_NAME,      /* "bad-name": not a valid host name */
    FILTER_REASON_REFUSED_RANGE, /* "refused-range": §2.4 always-refused */
    FILTER_REASON_PRIVATE_RANGE, /* "private-range": §2.4 private/CGNAT for a name */
    FILTER_REASON_OWN_LISTENER,  /* "own-listener": one of moat's own listeners */
    /* The ClientHello (filter/tls_hello.h). */
    FILTER_REASON_NO_SNI,        /* "no-sni" */
    FILTER_REASON_BAD_SNI,       /* "bad-sni": empty, too long, a NUL, or not a host name */
    FILTER_REASON_MULTI_SNI,     /* "multi-sni" */
    FILTER_REASON_NOT_TLS,       /* "not-tls" */
    FILTER_REASON_HELLO_TOO_BIG, /* "hello-too-big": over max_hello */
    /* The HTTP request head (filter/http_head.h). */
    FILTER_REASON_NO_HOST,      /* "no-host" */
    FILTER_REASON_MULTI_HOST,   /* "multi-host" */
    FILTER_REASON_BAD_HOST,     /* "bad-host" */
    FILTER_REASON_NOT_HTTP,     /* "not-http" */
    FILTER_REASON_HEAD_TOO_BIG, /* "head-too-big": over max_http_head */
    /* The proxy. */
    FILTER_REASON_HOST_CONFLICT,   /* "host-conflict": URI and Host name different hosts */
    FILTER_REASON_CLIENT_CLOSED,   /* "client-closed": gone before its hello or head was read */
    FILTER_REASON_PEEK_TIMEOUT,    /* "peek-timeout" */
    FILTER_REASON_CONNECT_TIMEOUT, /* "connect-timeout" */
    FILTER_REASON_DIAL_FAILED,     /* "dial-failed": no address answered, or no resources */
    FILTER_REASON_NO_ADDRESS,      /* "no-address": nothing to dial */
    FILTER_REASON_POLICY_RELOAD,   /* "policy-reload": a reload no longer allows it */
    FILTER_REASON_MAX_CONNECTIONS, /* "max-connections": refused at accept */
    FILTER_REASON_ACCEPT_ERROR,    /* "accept-error": accept failed for want of resources */
    /* Every request on an HTTP connection (SPEC §2.3) and the explicit
     * proxies (§2.6). */
    FILTER_REASON_HOST_SWITCH,   /* "host-switch": a later request names another host */
    FILTER_REASON_SNI_MISMATCH,  /* "sni-mismatch": a tunnel's SNI names another name */
    FILTER_REASON_HOST_MISMATCH, /* "host-mismatch": a tunnel's request names another name */
    FILTER_REASON_BAD_FRAMING, /* "bad-framing": a body's length cannot be told (RFC 9112 §6.3) */
    FILTER_REASON_BAD_REQUEST, /* "bad-request": a malformed proxy request */
    FILTER_REASON_PROXY_AUTH,  /* "proxy-auth": missing or wrong proxy credentials */
    /* The DNS service. */
    FILTER_REASON_DOH_CANARY, /* "doh-canary": use-application-dns.net, the browsers' DoH canary */
    FILTER_REASON_COUNT,
} filter_reason_t;

/* The reason as it appears in logs and metrics labels ("unknown" past the
 * end). */
const char *filter_reason_str(filter_reason_t r);

/* A compiled rule, as decisions report it. Owned by the policy. */
typedef struct filter_rule_info {
    filter_rule_kind_t kind;
    const char *text;                 /* as written in the config */
    unsigned line, col;               /* where */
    const filter_port_range_t *ports; /* effective ports, sorted and merged; NULL iff n_ports 0 */
    size_t n_ports;                   /* 0: an address rule allows every port; a name rule
                                         none (no ports and empty tls/http_ports) */
} filter_rule_info_t;

/* Own rule i (0-based, config order) for `moat check`'s summary; NULL past
 * the end. Owned by the policy. */
const filter_rule_info_t *filter_policy_rule_at(const filter_policy_t *p, size_t i);

/* A decision, kept as a value until the log and the metrics turn it into
 * text. A tenant will join verdict, reason and rule here. */
typedef struct filter_decision {
    filter_verdict_t verdict;
    filter_reason_t reason;
    const filter_rule_info_t *rule; /* the rule that decided (the policy's or a list's), or NULL */
    bool audit;                     /* mode: audit let it through although the verdict is block */
} filter_decision_t;

/* Port argument meaning "on any port" (explain without PORT, DNS). */
#define FILTER_ANY_PORT (-1)

/* Decide a host name: guest bytes, normalised inside (a name that does not
 * normalise is BLOCK/bad-name). port is 1..65535 or FILTER_ANY_PORT. With
 * filtering off: ALLOW/filter-off. Looks only at name rules; refused ranges
 * are about addresses and are checked where addresses are known. Every rule
 * matching the name counts (exact and every `*.` ancestor): ALLOW when any
 * allows port, reporting the exact rule first, else the most specific
 * wildcard; BLOCK/port-not-allowed (rule: one that matched) when none does;
 * BLOCK/not-allowed (rule NULL) when none matches. With FILTER_ANY_PORT any
 * matching rule allows (§2.1: every name rule makes the name resolvable). */
filter_decision_t filter_match_name(const filter_policy_t *p, const char *name, size_t len,
                                    int port);

/* filter_match_name for a name that filter_name_normalize already returned
 * (FILTER_NAME_OK) and len bytes long: the same answer without normalising
 * again. */
filter_decision_t filter_match_name_normalized(const filter_policy_t *p, const char *name,
                                               size_t len, int port);

/* Every name rule matching a name (exact and wildcards, any port), for
 * `moat explain` without a port. Writes up to max pointers (exact rules
 * first, then wildcards most specific first, config order within each),
 * returns how many matched in all (0 with filtering off or a bad name). */
size_t filter_match_name_all(const filter_policy_t *p, const char *name, size_t len,
                             const filter_rule_info_t **out, size_t max);

/* Decide an address by the address rules only (§2.3 steps 0 and 3): ALLOW
 * when a rule covers addr and port, BLOCK/port-not-allowed when one covers
 * addr on other ports, BLOCK/not-allowed otherwise; ALLOW/filter-off when
 * filtering is off. Does not look at refused ranges. The longest prefix
 * that allows the port is reported (for port-not-allowed, the longest that
 * covers addr). */
filter_decision_t filter_match_addr(const filter_policy_t *p, const filter_addr_t *addr, int port);

/* True when some address rule covers addr, whatever its ports (§2.1: this
 * lifts §2.4's refusals and the DNS answer filter). */
bool filter_addr_covered(const filter_policy_t *p, const filter_addr_t *addr);

/* §2.4, filtering on or off: BLOCK/refused-range for an always-refused
 * address unless an address rule covers addr (on any port: the rule's ports
 * are checked by filter_match_addr); BLOCK/own-listener for one of moat's
 * own listeners (addr:port, see filter_policy_input_t.own) unless an address
 * rule covers addr on that port (a loop back into moat must be named); ALLOW/
 * allowlist otherwise with rule NULL. port may be FILTER_ANY_PORT (the
 * own-listener check is skipped). Not a verdict on its own: an ALLOW here
 * only means "not refused".
 * §2.5: an IPv6 address that carries an IPv4 one (filter_addr_embedded_v4)
 * is refused when either is; only a rule covering addr as written (the IPv6
 * form) lifts that, since that is the address dialled and the one step 0
 * admits (a rule for 127.0.0.0/8 does not lift ::127.0.0.1). */
filter_decision_t filter_check_refused(const filter_policy_t *p, const filter_addr_t *addr,
                                       int port);

/* §2.4 for the addresses a name resolved to: true when addr is private or
 * CGNAT, or carries such an IPv4 address (§2.5: ::ffff:10.0.0.1,
 * 64:ff9b::a00:1), and no address rule covers addr as written (only
 * meaningful with filtering on). */
bool filter_check_private(const filter_policy_t *p, const filter_addr_t *addr);

#endif
