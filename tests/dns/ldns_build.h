/* tests/dns/ldns_build.h: build DNS responses with ldns for the
 * resolver's unit tests (shared by test_cache.c and test_rewrite.c). */
#ifndef MOAT_TESTS_RESOLVER_LDNS_BUILD_H
#define MOAT_TESTS_RESOLVER_LDNS_BUILD_H

#include <criterion/criterion.h>
#include <ldns/ldns.h>
#include <stdbool.h>
#include <stdint.h>

/* Every response these helpers build carries this ID. */
#define TEST_RESPONSE_ID 0x1234

/* Build a response with ldns (which compresses owner names and well-known
 * rdata names, so most answers below carry compression pointers). Section
 * arrays end with NULL; NULL for an empty section. Caller frees. */
static inline uint8_t *build(size_t *len, const char *question, uint8_t rcode, const char **an,
                             const char **ns, const char **ar, bool edns)
{
    ldns_pkt *p = ldns_pkt_new();
    cr_assert_not_null(p);
    ldns_pkt_set_id(p, TEST_RESPONSE_ID);
    ldns_pkt_set_qr(p, true);
    ldns_pkt_set_rd(p, true);
    ldns_pkt_set_ra(p, true);
    ldns_pkt_set_rcode(p, rcode);
    ldns_rr *q = NULL;
    cr_assert_eq(ldns_rr_new_question_frm_str(&q, question, NULL, NULL), LDNS_STATUS_OK, "%s",
                 question);
    ldns_pkt_push_rr(p, LDNS_SECTION_QUESTION, q);
    const char **secs[3] = {an, ns, ar};
    ldns_pkt_section ids[3] = {LDNS_SECTION_ANSWER, LDNS_SECTION_AUTHORITY,
                               LDNS_SECTION_ADDITIONAL};
    for (int s = 0; s < 3; s++) {
        for (const char **r = secs[s]; r && *r; r++) {
            ldns_rr *rr = NULL;
            cr_assert_eq(ldns_rr_new_frm_str(&rr, *r, 0, NULL, NULL), LDNS_STATUS_OK, "%s", *r);
            ldns_pkt_push_rr(p, ids[s], rr);
        }
    }
    if (edns) {
        ldns_pkt_set_edns_udp_size(p, 1232);
        ldns_pkt_set_edns_do(p, true);
    }
    uint8_t *w = NULL;
    cr_assert_eq(ldns_pkt2wire(&w, p, len), LDNS_STATUS_OK);
    ldns_pkt_free(p);
    return w;
}

#endif
