/* tests/dns/bench_answer.c: why dns/answer.c builds wire by hand.
 *
 * Not built by meson (no timing in tests, CONVENTIONS.md); run by hand:
 *   cc -O2 -std=c17 -D_GNU_SOURCE -I. dns/query.c dns/answer.c \
 *      tests/dns/bench_answer.c $(pkg-config --cflags --libs ldns) -o /tmp/bench_answer
 *   /tmp/bench_answer
 * Builds the sinkhole A answer (EDNS query, EDE 15 in the OPT) for
 * "www.Example.com" with ldns (ldns_pkt_new, one ldns_rr per record,
 * ldns_pkt2wire, frees) and with dns_answer_sinkhole(), and parses the query
 * with ldns_wire2pkt and with dns_query_parse(). Prints ns per operation,
 * the median of 3 runs.
 */
#include <ldns/ldns.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dns/answer.h"
#include "dns/query.h"

#define ITERS 2000000

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static volatile size_t bench_sink;

static size_t bench_ldns_answer(const dns_query_t *q, const dns_sinkhole_t *cfg)
{
    ldns_pkt *p = ldns_pkt_new();
    ldns_pkt_set_id(p, q->id);
    ldns_pkt_set_qr(p, true);
    ldns_pkt_set_aa(p, true);
    ldns_pkt_set_rd(p, q->rd);
    ldns_pkt_set_ra(p, true);
    ldns_rr *question = ldns_rr_new();
    ldns_rr_set_owner(question, ldns_dname_new_frm_data(q->qname_len, q->qname));
    ldns_rr_set_type(question, LDNS_RR_TYPE_A);
    ldns_rr_set_class(question, LDNS_RR_CLASS_IN);
    ldns_rr_set_question(question, true);
    ldns_pkt_push_rr(p, LDNS_SECTION_QUESTION, question);
    ldns_rr *a = ldns_rr_new();
    ldns_rr_set_owner(a, ldns_dname_new_frm_data(q->qname_len, q->qname));
    ldns_rr_set_type(a, LDNS_RR_TYPE_A);
    ldns_rr_set_class(a, LDNS_RR_CLASS_IN);
    ldns_rr_set_ttl(a, cfg->ttl);
    ldns_rr_push_rdf(a, ldns_rdf_new_frm_data(LDNS_RDF_TYPE_A, 4, cfg->ipv4));
    ldns_pkt_push_rr(p, LDNS_SECTION_ANSWER, a);
    ldns_pkt_set_edns_udp_size(p, 1232);
    ldns_pkt_set_edns_do(p, q->edns_do);
    static const uint8_t ede[] = "\x00\x0f"
                                 "blocked by moat allowlist";
    ldns_edns_option_list *l = ldns_edns_option_list_new();
    ldns_edns_option_list_push(l, ldns_edns_new_from_data(LDNS_EDNS_EDE, sizeof ede - 1, ede));
    ldns_pkt_set_edns_option_list(p, l);
    uint8_t *wire = NULL;
    size_t len = 0;
    if (ldns_pkt2wire(&wire, p, &len) != LDNS_STATUS_OK)
        abort();
    free(wire);
    ldns_pkt_free(p);
    return len;
}

static int bench_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void)
{
    ldns_pkt *qp = NULL;
    if (ldns_pkt_query_new_frm_str(&qp, "www.Example.com", LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN,
                                   LDNS_RD) != LDNS_STATUS_OK)
        return 1;
    ldns_pkt_set_id(qp, 0x1234);
    ldns_pkt_set_edns_udp_size(qp, 1232);
    uint8_t *qwire = NULL;
    size_t qlen = 0;
    ldns_pkt2wire(&qwire, qp, &qlen);
    ldns_pkt_free(qp);
    dns_query_t q;
    if (dns_query_parse(qwire, qlen, &q) != 0)
        return 1;
    dns_sinkhole_t cfg = {.ttl = 10};
    uint8_t buf[512];

    printf("answer sizes: ldns %zu bytes, moat %d bytes\n", bench_ldns_answer(&q, &cfg),
           dns_answer_sinkhole(&q, &cfg, buf, sizeof buf, 512));
    const char *names[] = {"ldns_pkt_new..ldns_pkt2wire (A answer)",
                           "dns_answer_sinkhole (A answer)", "ldns_wire2pkt (query)",
                           "dns_query_parse (query)"};
    for (int k = 0; k < 4; k++) {
        double runs[3];
        for (int r = 0; r < 3; r++) {
            double t0 = bench_now();
            for (int i = 0; i < ITERS; i++) {
                switch (k) {
                case 0:
                    bench_sink = bench_ldns_answer(&q, &cfg);
                    break;
                case 1:
                    bench_sink = (size_t)dns_answer_sinkhole(&q, &cfg, buf, sizeof buf, 512);
                    break;
                case 2: {
                    ldns_pkt *p = NULL;
                    ldns_wire2pkt(&p, qwire, qlen);
                    ldns_pkt_free(p);
                    bench_sink = (size_t)i;
                    break;
                }
                default: {
                    dns_query_t qq;
                    bench_sink = (size_t)dns_query_parse(qwire, qlen, &qq) + qq.qname_len;
                    break;
                }
                }
            }
            runs[r] = (bench_now() - t0) / ITERS;
        }
        qsort(runs, 3, sizeof runs[0], bench_cmp);
        printf("%-42s %8.1f ns\n", names[k], runs[1]);
    }
    free(qwire);
    return 0;
}
