/* tests/dns/fuzz_query.c: the resolver's local hot path on hostile bytes.
 *
 * A query: parse, decide with a toy policy (names ending in "allowed.test"
 * are allowed and, upstream being absent, get SERVFAIL; the canary gets its
 * NXDOMAIN; the rest are sinkholed), build the answer, check its invariants,
 * and check that dns_answer_patch() reads it back unchanged; a response
 * patched after one dns_answer_scan() (as a cache hit is) comes out as the
 * full dns_answer_patch() makes it.
 * A response (QR set): patch it as an upstream answer to the query it asks,
 * and check the result is stable under a second patch.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dns/answer.h"
#include "dns/query.h"
#include "filter/name.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x))                                                                                  \
            abort();                                                                               \
    } while (0)

static bool fz_allowed(const dns_query_t *q)
{
    static const char suffix[] = "allowed.test";
    size_t n = sizeof suffix - 1;
    if (q->not_host || q->name_len < n)
        return false;
    const char *tail = q->name + q->name_len - n;
    for (size_t i = 0; i < n; i++) {
        char c = tail[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + ('a' - 'A'));
        if (c != suffix[i])
            return false;
    }
    return true;
}

static void fz_check_query(const dns_query_t *q)
{
    CHECK(strlen(q->name) == q->name_len);
    CHECK(q->name_len <= DNS_NAME_TEXT_MAX);
    CHECK(q->udp_size >= DNS_UDP_MIN);
    size_t lim = dns_udp_limit(q);
    CHECK(lim >= DNS_UDP_MIN && lim <= DNS_EDNS_UDP_SIZE);
    if (!q->has_question)
        return;
    CHECK(q->qname_len >= 1 && q->qname_len <= DNS_NAME_WIRE_MAX);
    CHECK(q->qname[q->qname_len - 1] == 0);
    CHECK(q->tld_off < q->qname_len);
    CHECK(q->labels == 0 ? q->tld_off == 0
                         : q->qname[q->tld_off] + q->tld_off + 2u == q->qname_len);
    CHECK(q->question_end == DNS_HEADER_LEN + q->qname_len + 4u);
}

/* Invariants of anything we send. */
static void fz_check_answer(const dns_query_t *q, const uint8_t *buf, int n, size_t cap)
{
    CHECK(n >= DNS_HEADER_LEN && (size_t)n <= cap);
    CHECK((buf[0] << 8 | buf[1]) == q->id);
    CHECK(buf[2] & 0x80);                    /* QR */
    CHECK((buf[2] >> 3 & 0xf) == q->opcode); /* OPCODE copied */
    CHECK(!!(buf[2] & 0x01) == q->rd);       /* RD copied */
    CHECK((buf[4] << 8 | buf[5]) == (q->has_question ? 1 : 0));
    if (q->has_question)
        CHECK(memcmp(buf + DNS_HEADER_LEN, q->qname, q->qname_len) == 0);
    CHECK((buf[10] << 8 | buf[11]) == (q->edns ? 1 : 0)); /* ARCOUNT: the OPT or nothing */
}

/* dns_answer_patch() reads our own answer back unchanged but for TC. */
static void fz_patch_identity(const dns_query_t *q, const uint8_t *buf, int n)
{
    if (!q->has_question)
        return;
    static uint8_t copy[2048];
    if (q->rcode_hint > 0xf) {
        /* BADVERS: patch refuses an extended RCODE (it would be upstream's). */
        memcpy(copy, buf, (size_t)n);
        CHECK(dns_answer_patch(copy, (size_t)n, sizeof copy, q, DNS_TCP_MAX) == -EBADMSG);
        CHECK(memcmp(copy, buf, (size_t)n) == 0);
        return;
    }
    memcpy(copy, buf, (size_t)n);
    CHECK(dns_answer_patch(copy, (size_t)n, sizeof copy, q, DNS_TCP_MAX) == n);
    CHECK(!(copy[2] & 0x02)); /* TC is cleared: a truncated answer read whole */
    copy[2] = (uint8_t)(copy[2] | (buf[2] & 0x02));
    CHECK(memcmp(copy, buf, (size_t)n) == 0);
}

static void fz_query(const uint8_t *data, size_t size)
{
    dns_query_t q;
    int rc = dns_query_parse(data, size, &q);
    if (rc < 0) {
        CHECK(rc == -EBADMSG || rc == -EPROTO);
        return;
    }
    CHECK(rc == 0);
    fz_check_query(&q);
    /* lname is the normaliser's output exactly when the normaliser takes
     * the name (the decision trusts it instead of normalising). */
    if (q.has_question) {
        char norm[FILTER_NAME_MAX + 1];
        size_t nlen;
        bool ok = filter_name_normalize(q.name, q.name_len, norm, &nlen) == FILTER_NAME_OK;
        CHECK(ok == q.host_name);
        CHECK(!ok || (nlen == q.name_len && memcmp(norm, q.lname, nlen + 1) == 0));
    }

    static uint8_t buf[2048];
    dns_sinkhole_t cfg = {.ipv4 = {198, 18, 0, 1}, .ipv6 = {0xfd, [15] = 1}, .ttl = 10};
    cfg.nxdomain = q.id & 1;
    size_t limit = dns_udp_limit(&q);
    int n;
    if (q.rcode_hint != DNS_RCODE_NOERROR) {
        n = dns_answer_error(&q, q.rcode_hint, buf, sizeof buf);
        CHECK(n > 0);
        CHECK((buf[3] & 0xf) == (q.rcode_hint & 0xf));
    } else if (dns_query_is_canary(&q)) {
        n = dns_answer_canary(&q, &cfg, buf, sizeof buf, limit);
        CHECK(n > 0 && (buf[3] & 0xf) == DNS_RCODE_NXDOMAIN);
    } else if (fz_allowed(&q)) {
        n = dns_answer_error_ede(&q, DNS_RCODE_SERVFAIL, DNS_EDE_NETWORK_ERROR, "no upstream", buf,
                                 sizeof buf);
        CHECK(n > 0);
    } else {
        n = dns_answer_sinkhole(&q, &cfg, buf, sizeof buf, limit);
        CHECK(n > 0 && (size_t)n <= limit);
        CHECK(buf[2] & 0x04);    /* AA */
        CHECK(!(buf[2] & 0x02)); /* never truncated at 512 or more */
        fz_check_answer(&q, buf, n, sizeof buf);
        /* And squeezed into a smaller limit: truncated or whole. */
        size_t small = DNS_HEADER_LEN + (size > 0 ? data[size - 1] : 0) * 2u;
        int m = dns_answer_sinkhole(&q, &cfg, buf, sizeof buf, small);
        CHECK(m > 0);
        CHECK((size_t)m <= small || (buf[2] & 0x02));
        fz_check_answer(&q, buf, m, sizeof buf);
        fz_patch_identity(&q, buf, m);
        n = dns_answer_sinkhole(&q, &cfg, buf, sizeof buf, limit);
    }
    fz_check_answer(&q, buf, n, sizeof buf);
    fz_patch_identity(&q, buf, n);
}

/* A response: patch it as the upstream's answer to its own question. */
static void fz_response(const uint8_t *data, size_t size)
{
    if (size < DNS_HEADER_LEN || !(data[2] & 0x80) || size > 4096)
        return;
    static uint8_t msg[4096], buf[4096 + 64], again[4096 + 64];
    memcpy(msg, data, size);
    msg[2] &= 0x7f; /* read the question as a query would be */
    /* The question only: counts after QDCOUNT zeroed, so the query parses. */
    memset(msg + 6, 0, 6);
    dns_query_t q;
    if (dns_query_parse(msg, size, &q) != 0 || !q.has_question)
        return;
    /* Trailing bytes made it FORMERR, but the question is what we need; an
     * EDNS client or not, by a bit of the ID. */
    q.edns = data[1] & 1;
    q.edns_do = data[1] & 2;
    q.id = 0x5a5a;
    size_t limit = data[0] & 1 ? DNS_TCP_MAX : dns_udp_limit(&q);

    /* A scan made once (as the cache makes it) patches exactly as the full
     * patch does: the same result, the same bytes. */
    static uint8_t scanned[4096 + 64];
    dns_answer_scan_t scan;
    int sn = -1;
    memcpy(scanned, data, size);
    if (dns_answer_scan(scanned, size, &scan) == 0)
        sn = dns_answer_patch_scanned(scanned, size, sizeof scanned, &q, limit, &scan);
    else
        CHECK(scan.end == 0);

    memcpy(buf, data, size);
    int n = dns_answer_patch(buf, size, sizeof buf, &q, limit);
    if (scan.end != 0) {
        CHECK(sn == n);
        CHECK(n < 0 || memcmp(scanned, buf, (size_t)n) == 0);
    }
    if (n < 0) {
        CHECK(n == -EBADMSG || n == -ENOSPC);
        return;
    }
    CHECK((size_t)n <= sizeof buf);
    CHECK((buf[0] << 8 | buf[1]) == 0x5a5a);
    CHECK(memcmp(buf + DNS_HEADER_LEN, q.qname, q.qname_len) == 0);
    CHECK((size_t)n <= limit || (buf[2] & 0x02));
    /* Stable under a second patch; but a cut answer reads as complete the
     * second time (TC cleared: the contract wants complete answers). */
    memcpy(again, buf, (size_t)n);
    CHECK(dns_answer_patch(again, (size_t)n, sizeof again, &q, limit) == n);
    again[2] = (uint8_t)(again[2] | (buf[2] & 0x02));
    CHECK(memcmp(again, buf, (size_t)n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_query(data, size);
    fz_response(data, size);
    return 0;
}
