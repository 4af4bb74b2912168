/* dns/rewrite.h: what moat changes in an upstream answer for an allowed
 * name before caching and returning it (SPEC §2.2), and the addresses it
 * hands to the address memory.
 *
 * Runs only on upstream answers (cache misses), so it uses ldns to parse and
 * re-serialise: ldns_wire2pkt, edit the record lists, ldns_pkt2wire. SvcParams
 * are rewritten by hand over the record's rdata wire bytes (filter/cursor.h)
 * and put back as one opaque rdata field: ldns 1.8.3 parses SVCB/HTTPS rdata
 * as SvcPriority, TargetName and one LDNS_RDF_TYPE_SVCPARAMS blob, but
 * working from the wire does not depend on that layout (an ldns built without
 * SVCB support would hand us one unknown-type field), and ldns never
 * compresses the TargetName (RFC 9460 §2.2).
 *
 * With filtering on (the policy has an `allow` key):
 *   (a) ECH: the `ech` SvcParam (key 5, RFC 9460 §14.3.2) is removed from
 *       every HTTPS (65) and SVCB (64) record in every section, so the
 *       client's SNI stays the real name; a `mandatory` list naming a removed
 *       key loses it (and `mandatory` goes when it empties), or the record
 *       would be malformed (RFC 9460 §8);
 *   (b) rebinding defence: A and AAAA records (every section) whose address is
 *       always refused or private/CGNAT (SPEC §2.4, filter/addr.h;
 *       ::ffff:a.b.c.d is judged as a.b.c.d, and ::a.b.c.d, 64:ff9b::a.b.c.d
 *       and 6to4 2002:aabb:ccdd:: as themselves and as the IPv4 address they
 *       carry, SPEC §2.5) are removed unless an address rule covers the
 *       address as written; the same addresses are removed from
 *       ipv4hint/ipv6hint SvcParams (the key goes when it empties), since
 *       clients connect to hints too. When this leaves an A/AAAA question
 *       with no record of its type, the answer is NODATA (CNAMEs kept, RCODE
 *       unchanged, no SOA added: the cache does not keep it, see cache.h).
 * With filtering off no record is changed (moat forwards transparently and
 * does not look at SNI, so ECH does not matter); the answer is still parsed
 * and its addresses collected.
 * Filtering on or off, the upstream's EDNS options are dropped but for
 * Extended DNS Errors: options are hop-by-hop (RFC 6891 §6.2.1), and the
 * upstream's COOKIE carries c-ares's client cookie, which would make a guest
 * that sent its own discard the answer (RFC 7873 §5.3). The OPT record itself
 * (extended RCODE, version, flags) stays for dns_answer_patch() to fit.
 * RRSIGs over a changed RRset are left in place: a validating client sees
 * the change either way, and a non-validating one does not care.
 *
 * (c) Addresses: every A/AAAA left in the answer section whose owner is the
 * question name or reached from it through the answer's CNAME chain (at most
 * DNS_REWRITE_MAX_CHAIN links), with TTL = min(its TTL, the chain's TTLs);
 * records for other owners are left in the answer but not collected, so an
 * upstream cannot attach unrelated addresses to the name. The caller
 * remembers them under the question name (out->qname) with dns_addrmem_put
 * and hands them to dns_cache_put.
 *
 * (d) Cache TTLs are not computed here: dns_cache_put walks the result once
 * with the cursor (it has to find the TTL fields anyway).
 */
#ifndef MOAT_DNS_REWRITE_H
#define MOAT_DNS_REWRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter/name.h"
#include "filter/policy.h"
#include "dns/cache.h"

#define DNS_REWRITE_MAX_CHAIN 16

typedef struct dns_rewrite_result {
    /* The answer to cache and return: malloc'd, owned by the result. A copy
     * of the input, byte for byte, when nothing was changed. */
    uint8_t *wire;
    size_t len;
    /* The addresses of (c), malloc'd, owned by the result (NULL when none). */
    dns_cache_addr_t *addrs;
    size_t n_addrs;
    /* The question name normalised (filter_name_normalize), "" when it does
     * not normalise (then nothing should be remembered). */
    char qname[FILTER_NAME_MAX + 1];
    size_t qname_len;
    uint16_t qtype;
    unsigned removed_addrs; /* A/AAAA records removed by (b) */
    unsigned removed_hints; /* addresses removed from ipv4hint/ipv6hint */
    unsigned removed_ech;   /* ech SvcParams removed by (a) */
    bool nodata;            /* (b) emptied an A/AAAA answer */
} dns_rewrite_result_t;

/* Rewrite the upstream answer wire[0..len) under policy (NULL counts as
 * filtering off). On success returns 0 and fills *out, to be released with
 * dns_rewrite_result_free. Returns -EBADMSG (the caller answers SERVFAIL) for
 * an answer that does not parse, is not a response, has QDCOUNT other than
 * 1, holds a record whose RDLENGTH is not exactly what its type's fields take
 * (ldns would frame the rest differently from the client), holds a TSIG, or
 * carries an A/AAAA or SVCB/HTTPS rdata of the wrong shape; -ENOMEM. On error
 * *out is zeroed and owns nothing. */
int dns_rewrite(const filter_policy_t *policy, const uint8_t *wire, size_t len,
                dns_rewrite_result_t *out);

/* Free what a result owns and zero it (NULL is fine). */
void dns_rewrite_result_free(dns_rewrite_result_t *r);

#endif
