/* filter/rule.h: one allowlist entry as the config hands it to the policy.
 *
 * The config loader (config/) parses and validates entries into these; the
 * policy compiler (filter/policy.h) copies what it needs, so a compiled policy
 * does not point into the config.
 */
#ifndef MOAT_FILTER_RULE_H
#define MOAT_FILTER_RULE_H

#include <stddef.h>
#include <stdint.h>

#include "filter/addr.h"
#include "filter/name.h"

/* An inclusive port range; a single port has lo == hi. */
typedef struct filter_port_range {
    uint16_t lo, hi; /* 1..65535, lo <= hi */
} filter_port_range_t;

typedef enum filter_rule_kind {
    FILTER_RULE_NAME, /* example.com or *.example.com */
    FILTER_RULE_ADDR, /* 203.0.113.7, 2001:db8::/32, ... */
} filter_rule_kind_t;

typedef struct filter_rule {
    filter_rule_kind_t kind;
    filter_pattern_t pattern;   /* FILTER_RULE_NAME */
    filter_prefix_t prefix;     /* FILTER_RULE_ADDR */
    filter_port_range_t *ports; /* NULL when the entry has no `ports` key */
    size_t n_ports;             /* 0 iff ports == NULL (an empty list is a config error) */
    const char *text;           /* the entry as written, e.g. "*.example.com" */
    unsigned line, col;         /* 1-based position of the entry in its file */
} filter_rule_t;

#endif
