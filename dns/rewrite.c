/* dns/rewrite.c: ECH removal, rebinding defence and address collection
 * for upstream answers; see rewrite.h. */
#include "dns/rewrite.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "filter/cursor.h"
#include "filter/writer.h"
#include "dns/query.h"

/* SvcParamKeys moat looks at (RFC 9460 §14.3.2). */
enum {
    RW_KEY_MANDATORY = 0,
    RW_KEY_IPV4HINT = 4,
    RW_KEY_ECH = 5,
    RW_KEY_IPV6HINT = 6,
};

#define RW_EDNS_EDE  15  /* RFC 8914 */
#define RW_TYPE_TSIG 250 /* RFC 8945 */

/* The three sections and the setters for their header counts. */
typedef struct rw_section {
    ldns_rr_list *(*get)(const ldns_pkt *);
    void (*set_count)(ldns_pkt *, uint16_t);
} rw_section_t;

static const rw_section_t rw_sections[] = {
    {ldns_pkt_answer, ldns_pkt_set_ancount},
    {ldns_pkt_authority, ldns_pkt_set_nscount},
    {ldns_pkt_additional, ldns_pkt_set_arcount},
};

/* RFC 2181 §8: a TTL with the top bit set is read as 0. */
static uint32_t rw_ttl(const ldns_rr *rr)
{
    uint32_t ttl = ldns_rr_ttl(rr);
    return (ttl & 0x80000000u) ? 0 : ttl;
}

/* An address from an A/AAAA rdata or a hint, unmapped as the policy sees it. */
static void rw_addr_make(bool v6, const uint8_t *b, filter_addr_t *out)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, b, 16);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, b, 4);
    }
    if (filter_addr_from_sockaddr((const struct sockaddr *)&ss, out, NULL) != 0)
        memset(out, 0, sizeof *out);
}

/* SPEC §2.2 / §2.4 / §2.5: the addresses a name may not point to (the
 * ranges judge embedded IPv4 addresses too, filter/addr.h). */
static bool rw_addr_refused(const filter_policy_t *p, const filter_addr_t *a)
{
    if (!filter_addr_is_always_refused(a) && !filter_addr_is_private(a))
        return false;
    return !filter_addr_covered(p, a);
}

static bool rw_is_hint(uint16_t key)
{
    return key == RW_KEY_IPV4HINT || key == RW_KEY_IPV6HINT;
}

static size_t rw_hint_size(uint16_t key)
{
    return key == RW_KEY_IPV4HINT ? 4 : 16;
}

/* How many addresses of a hint value survive. */
static size_t rw_hint_kept(const filter_policy_t *p, uint16_t key, filter_cur_t v)
{
    size_t sz = rw_hint_size(key), kept = 0;
    for (const uint8_t *b; (b = filter_cur_take(&v, sz)) != NULL;) {
        filter_addr_t a;
        rw_addr_make(key == RW_KEY_IPV6HINT, b, &a);
        if (!rw_addr_refused(p, &a))
            kept++;
    }
    return kept;
}

/* One SvcParam (RFC 9460 §2.2): key, length, value as a cursor of its own;
 * false at the end of the params or on bad framing (*bad set). */
static bool rw_param_next(filter_cur_t *c, uint16_t *key, filter_cur_t *v, bool *bad)
{
    if (filter_cur_left(c) == 0)
        return false;
    *key = filter_cur_u16(c);
    uint16_t vlen = filter_cur_u16(c);
    *v = filter_cur_sub(c, vlen);
    *bad = !filter_cur_ok(c);
    return !*bad;
}

/* Skip SvcPriority and the uncompressed TargetName; returns 0 or -EBADMSG. */
static int rw_svcb_target(filter_cur_t *c)
{
    filter_cur_skip(c, 2); /* SvcPriority */
    size_t name = 0;
    for (;;) {
        uint8_t l = filter_cur_u8(c);
        name += 1 + (size_t)l;
        if (!filter_cur_ok(c) || l > DNS_LABEL_MAX || name > DNS_NAME_WIRE_MAX)
            return -EBADMSG;
        if (l == 0)
            return 0;
        filter_cur_skip(c, l);
    }
}

/* Check the SvcParams' framing and find the keys that go away whole: bit k
 * of *drop for key k (4, 5 or 6). Returns 0 or -EBADMSG. */
static int rw_svcb_drops(const filter_policy_t *p, filter_cur_t c, unsigned *drop)
{
    uint16_t key;
    filter_cur_t v;
    bool bad = false;
    *drop = 0;
    while (rw_param_next(&c, &key, &v, &bad)) {
        size_t vlen = filter_cur_left(&v);
        if (key == RW_KEY_ECH) {
            *drop |= 1u << key;
        } else if (rw_is_hint(key)) {
            if (vlen == 0 || vlen % rw_hint_size(key) != 0)
                return -EBADMSG; /* RFC 9460 §7.3 */
            if (rw_hint_kept(p, key, v) == 0)
                *drop |= 1u << key;
        } else if (key == RW_KEY_MANDATORY && vlen % 2 != 0) {
            return -EBADMSG; /* RFC 9460 §8 */
        }
    }
    return bad ? -EBADMSG : 0;
}

static bool rw_dropped(unsigned drop, uint16_t key)
{
    return key < 16 && (drop & (1u << key));
}

/* The addresses of a hint the policy lets through. */
static void rw_put_hints(filter_wr_t *w, const filter_policy_t *p, uint16_t key, filter_cur_t v,
                         dns_rewrite_result_t *r)
{
    size_t sz = rw_hint_size(key);
    for (const uint8_t *b; (b = filter_cur_take(&v, sz)) != NULL;) {
        filter_addr_t a;
        rw_addr_make(key == RW_KEY_IPV6HINT, b, &a);
        if (rw_addr_refused(p, &a))
            r->removed_hints++;
        else
            filter_wr_bytes(w, b, sz);
    }
}

/* The keys of a mandatory list that stay (RFC 9460 §8). */
static void rw_put_mandatory(filter_wr_t *w, unsigned drop, filter_cur_t v)
{
    while (filter_cur_left(&v) >= 2) {
        uint16_t mk = filter_cur_u16(&v);
        if (!rw_dropped(drop, mk))
            filter_wr_u16(w, mk);
    }
}

/* Rewrite SVCB/HTTPS rdata (RFC 9460 §2.2: SvcPriority, uncompressed
 * TargetName, SvcParams as key, length, value) into out, which has room for
 * len bytes (the result is never longer). Returns 0 with *out_len set, or
 * -EBADMSG. */
static int rw_svcb(const filter_policy_t *p, const uint8_t *rd, size_t len, uint8_t *out,
                   size_t *out_len, dns_rewrite_result_t *r)
{
    filter_cur_t cur = filter_cur_make(rd, len);
    unsigned drop = 0;
    if (rw_svcb_target(&cur) != 0 || rw_svcb_drops(p, cur, &drop) != 0)
        return -EBADMSG;
    filter_wr_t w = filter_wr_make(out, len);
    filter_wr_bytes(&w, rd, filter_cur_pos(&cur)); /* SvcPriority, TargetName */
    uint16_t key;
    filter_cur_t v;
    bool bad = false;
    while (rw_param_next(&cur, &key, &v, &bad)) {
        if (rw_dropped(drop, key)) {
            if (key == RW_KEY_ECH)
                r->removed_ech++;
            else
                r->removed_hints += (unsigned)(filter_cur_left(&v) / rw_hint_size(key));
            continue;
        }
        size_t at = filter_wr_pos(&w);
        filter_wr_u16(&w, key);
        size_t len_at = filter_wr_reserve(&w, 2);
        if (rw_is_hint(key)) {
            rw_put_hints(&w, p, key, v, r);
        } else if (key == RW_KEY_MANDATORY) {
            rw_put_mandatory(&w, drop, v);
            if (filter_wr_pos(&w) == at + 4) { /* every mandatory key went: drop the list */
                filter_wr_rewind(&w, at);
                continue;
            }
        } else {
            size_t n = filter_cur_left(&v);
            filter_wr_bytes(&w, filter_cur_take(&v, n), n);
        }
        filter_wr_patch_u16(&w, len_at, (uint16_t)(filter_wr_pos(&w) - at - 4));
    }
    if (bad || !filter_wr_ok(&w))
        return -EBADMSG;
    *out_len = filter_wr_pos(&w);
    return 0;
}

/* Replace rr's rdata with wire bytes, as one opaque field. */
static int rw_set_rdata(ldns_rr *rr, const uint8_t *data, size_t len)
{
    ldns_rdf *f = ldns_rdf_new_frm_data(LDNS_RDF_TYPE_UNKNOWN, len, data);
    if (f == NULL)
        return -ENOMEM;
    while (ldns_rr_rd_count(rr) > 0)
        ldns_rdf_deep_free(ldns_rr_pop_rdf(rr));
    if (!ldns_rr_push_rdf(rr, f)) {
        ldns_rdf_deep_free(f);
        return -ENOMEM;
    }
    return 0;
}

/* The address of a class IN A/AAAA record: true with *a set, false for
 * other records; -EBADMSG through *rc for an A/AAAA of the wrong shape. */
static bool rw_rr_addr(const ldns_rr *rr, filter_addr_t *a, int *rc)
{
    ldns_rr_type t = ldns_rr_get_type(rr);
    if ((t != LDNS_RR_TYPE_A && t != LDNS_RR_TYPE_AAAA) ||
        ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN)
        return false;
    size_t want = t == LDNS_RR_TYPE_A ? 4 : 16;
    const ldns_rdf *f = ldns_rr_rd_count(rr) == 1 ? ldns_rr_rdf(rr, 0) : NULL;
    if (f == NULL || ldns_rdf_size(f) != want) {
        *rc = -EBADMSG;
        return false;
    }
    rw_addr_make(t == LDNS_RR_TYPE_AAAA, ldns_rdf_data(f), a);
    return true;
}

/* On an error halfway through a section: move the unvisited records i..n
 * down behind the kept ones, so the list owns each remaining RR once and
 * ldns_pkt_free frees them. */
static void rw_close_gap(ldns_rr_list *list, size_t kept, size_t i, size_t n)
{
    for (size_t j = i; j < n; j++)
        ldns_rr_list_set_rr(list, ldns_rr_list_rr(list, j), kept + (j - i));
    ldns_rr_list_set_rr_count(list, kept + (n - i));
}

/* Filter one section in place; *changed is set when something was removed
 * or rewritten. */
static int rw_filter_section(const filter_policy_t *p, ldns_pkt *pkt, const rw_section_t *sec,
                             ldns_buffer *buf, bool *changed, dns_rewrite_result_t *r,
                             unsigned *removed)
{
    ldns_rr_list *list = sec->get(pkt);
    size_t n = ldns_rr_list_rr_count(list), kept = 0;
    *removed = 0;
    for (size_t i = 0; i < n; i++) {
        ldns_rr *rr = ldns_rr_list_rr(list, i);
        ldns_rr_type t = ldns_rr_get_type(rr);
        int rc = 0;
        filter_addr_t a;
        if (rw_rr_addr(rr, &a, &rc)) {
            if (rw_addr_refused(p, &a)) {
                ldns_rr_free(rr);
                (*removed)++;
                r->removed_addrs++;
                *changed = true;
                continue;
            }
        } else if (rc != 0) {
            rw_close_gap(list, kept, i, n);
            return rc;
        } else if (t == LDNS_RR_TYPE_SVCB || t == LDNS_RR_TYPE_HTTPS) {
            ldns_buffer_clear(buf);
            if (ldns_rr_rdata2buffer_wire(buf, rr) != LDNS_STATUS_OK) {
                rc = -ENOMEM;
            } else {
                size_t rdlen = ldns_buffer_position(buf), olen = 0;
                uint8_t *o = malloc(rdlen ? rdlen : 1);
                if (o == NULL)
                    rc = -ENOMEM;
                else
                    rc = rw_svcb(p, ldns_buffer_begin(buf), rdlen, o, &olen, r);
                if (rc == 0 && olen < rdlen) {
                    rc = rw_set_rdata(rr, o, olen);
                    *changed = true;
                }
                free(o);
            }
            if (rc != 0) {
                rw_close_gap(list, kept, i, n);
                return rc;
            }
        }
        ldns_rr_list_set_rr(list, rr, kept++);
    }
    ldns_rr_list_set_rr_count(list, kept);
    sec->set_count(pkt, (uint16_t)kept);
    return 0;
}

/* Check A/AAAA shapes without filtering (filtering off). */
static int rw_check_section(const ldns_rr_list *list)
{
    for (size_t i = 0; i < ldns_rr_list_rr_count(list); i++) {
        int rc = 0;
        filter_addr_t a;
        rw_rr_addr(ldns_rr_list_rr(list, i), &a, &rc);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* EDNS options are hop-by-hop (RFC 6891 §6.2.1): the upstream's COOKIE
 * (RFC 7873, its client cookie is c-ares's, and a guest that sent one would
 * discard the answer), keepalive, padding, NSID or ECS mean nothing to the
 * guest. Keep only Extended DNS Errors (RFC 8914 §3 lets forwarders pass
 * them on); badly framed options all go. */
static int rw_edns_options(ldns_pkt *pkt, bool *changed)
{
    ldns_rdf *old = ldns_pkt_edns_data(pkt);
    if (old == NULL)
        return 0;
    size_t len = ldns_rdf_size(old);
    uint8_t *keep = malloc(len ? len : 1);
    if (keep == NULL)
        return -ENOMEM;
    filter_wr_t w = filter_wr_make(keep, len);
    filter_cur_t cur = filter_cur_make(ldns_rdf_data(old), len);
    while (filter_cur_left(&cur) > 0) {
        uint16_t code = filter_cur_u16(&cur);
        uint16_t olen = filter_cur_u16(&cur);
        const uint8_t *body = filter_cur_take(&cur, olen);
        if (!filter_cur_ok(&cur)) {
            filter_wr_rewind(&w, 0);
            break;
        }
        if (code == RW_EDNS_EDE) {
            filter_wr_u16(&w, code);
            filter_wr_u16(&w, olen);
            filter_wr_bytes(&w, body, olen);
        }
    }
    size_t o = filter_wr_pos(&w);
    int rc = 0;
    if (o < len) {
        ldns_rdf *nd = NULL;
        if (o > 0 && (nd = ldns_rdf_new_frm_data(LDNS_RDF_TYPE_UNKNOWN, o, keep)) == NULL) {
            rc = -ENOMEM;
        } else {
            ldns_pkt_set_edns_data(pkt, nd);
            ldns_rdf_deep_free(old);
            *changed = true;
        }
    }
    free(keep);
    return rc;
}

/* (c) of rewrite.h: the addresses of the question name's CNAME chain. */
static int rw_collect(const ldns_pkt *pkt, const ldns_rdf *qname, dns_rewrite_result_t *r)
{
    const ldns_rr_list *ans = ldns_pkt_answer(pkt);
    size_t n = ldns_rr_list_rr_count(ans);
    const ldns_rdf *chain[DNS_REWRITE_MAX_CHAIN + 1];
    uint32_t chain_ttl[DNS_REWRITE_MAX_CHAIN + 1];
    size_t nc = 1;
    chain[0] = qname;
    chain_ttl[0] = UINT32_MAX;
    while (nc <= DNS_REWRITE_MAX_CHAIN) {
        const ldns_rdf *next = NULL;
        uint32_t ttl = 0;
        for (size_t i = 0; i < n && next == NULL; i++) {
            const ldns_rr *rr = ldns_rr_list_rr(ans, i);
            if (ldns_rr_get_type(rr) != LDNS_RR_TYPE_CNAME ||
                ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN || ldns_rr_rd_count(rr) != 1 ||
                ldns_rdf_get_type(ldns_rr_rdf(rr, 0)) != LDNS_RDF_TYPE_DNAME ||
                ldns_dname_compare(ldns_rr_owner(rr), chain[nc - 1]) != 0)
                continue;
            next = ldns_rr_rdf(rr, 0);
            ttl = rw_ttl(rr);
        }
        if (next == NULL)
            break;
        bool loop = false;
        for (size_t j = 0; j < nc; j++)
            loop = loop || ldns_dname_compare(chain[j], next) == 0;
        if (loop)
            break;
        chain[nc] = next;
        chain_ttl[nc] = ttl < chain_ttl[nc - 1] ? ttl : chain_ttl[nc - 1];
        nc++;
    }

    r->addrs = n ? calloc(n, sizeof *r->addrs) : NULL;
    if (n && r->addrs == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const ldns_rr *rr = ldns_rr_list_rr(ans, i);
        int rc = 0;
        filter_addr_t a;
        if (!rw_rr_addr(rr, &a, &rc))
            continue;
        for (size_t j = 0; j < nc; j++) {
            if (ldns_dname_compare(ldns_rr_owner(rr), chain[j]) != 0)
                continue;
            uint32_t ttl = rw_ttl(rr);
            r->addrs[r->n_addrs].addr = a;
            r->addrs[r->n_addrs].ttl = ttl < chain_ttl[j] ? ttl : chain_ttl[j];
            r->n_addrs++;
            break;
        }
    }
    if (r->n_addrs == 0) {
        free(r->addrs);
        r->addrs = NULL;
    }
    return 0;
}

/* The question name as filter_name_normalize sees it. */
static void rw_qname(const ldns_rdf *qname, dns_rewrite_result_t *r)
{
    char txt[DNS_NAME_WIRE_MAX + 1];
    size_t tl = 0;
    filter_cur_t cur = filter_cur_make(ldns_rdf_data(qname), ldns_rdf_size(qname));
    for (;;) {
        uint8_t l = filter_cur_u8(&cur);
        const uint8_t *p = filter_cur_take(&cur, l);
        if (!filter_cur_ok(&cur) || l == 0 || tl + 1 + l > DNS_NAME_WIRE_MAX)
            break;
        if (tl > 0)
            txt[tl++] = '.';
        memcpy(txt + tl, p, l);
        tl += l;
    }
    if (filter_name_normalize(txt, tl, r->qname, &r->qname_len) != 0) {
        r->qname[0] = '\0';
        r->qname_len = 0;
    }
}

static int rw_status(ldns_status s)
{
    return s == LDNS_STATUS_MEM_ERR ? -ENOMEM : -EBADMSG;
}

/* Walk the framing once with the cursor before ldns_wire2pkt parses the
 * message, so that ldns sees the records every other parser sees:
 *   - every record must be whole;
 *   - ldns must read each record to exactly its RDLENGTH: ldns_wire2rdf
 *     stops after the fields of the type's descriptor and does not skip what
 *     is left, so an over-long rdata would be read as further records (the
 *     answer ldns saw would not be the one the client parses);
 *   - no TSIG: moat never signs its queries, so a TSIG in an answer is bogus
 *     (RFC 8945 §5.3), and ldns_wire2pkt mishandles them (it shortens the
 *     additional section it reads by one per TSIG and leaks all but the
 *     last). */
static int rw_prescan(const uint8_t *wire, size_t len)
{
    filter_cur_t cur = filter_cur_make(wire, len);
    filter_cur_skip(&cur, 4);
    uint16_t qd = filter_cur_u16(&cur);
    size_t n = 0;
    for (int i = 0; i < 3; i++)
        n += filter_cur_u16(&cur);
    if (!filter_cur_ok(&cur))
        return -EBADMSG;
    for (unsigned i = 0; i < qd; i++) {
        if (dns_wire_skip_name(&cur, NULL) != 0)
            return -EBADMSG;
        filter_cur_skip(&cur, 4);
    }
    for (size_t i = 0; i < n; i++) {
        size_t start = filter_cur_pos(&cur);
        if (dns_wire_skip_name(&cur, NULL) != 0)
            return -EBADMSG;
        uint16_t type = filter_cur_u16(&cur);
        filter_cur_skip(&cur, 6); /* class, TTL */
        filter_cur_skip(&cur, filter_cur_u16(&cur));
        if (!filter_cur_ok(&cur) || type == RW_TYPE_TSIG)
            return -EBADMSG;
        ldns_rr *rr = NULL;
        size_t pos = start;
        ldns_status s = ldns_wire2rr(&rr, wire, len, &pos, LDNS_SECTION_ANSWER);
        ldns_rr_free(rr);
        if (s != LDNS_STATUS_OK)
            return rw_status(s);
        if (pos != filter_cur_pos(&cur))
            return -EBADMSG;
    }
    return 0;
}

/* Parse the answer into *pkt: the framing prescan, ldns_wire2pkt, and a
 * response with exactly one question. */
static int rw_parse(const uint8_t *wire, size_t len, ldns_pkt **pkt)
{
    int rc = rw_prescan(wire, len);
    if (rc != 0)
        return rc;
    ldns_status s = ldns_wire2pkt(pkt, wire, len);
    if (s != LDNS_STATUS_OK)
        return rw_status(s);
    if (!ldns_pkt_qr(*pkt) || ldns_pkt_qdcount(*pkt) != 1 ||
        ldns_rr_list_rr_count(ldns_pkt_question(*pkt)) != 1)
        return -EBADMSG;
    return 0;
}

/* (b) of rewrite.h: true when the answer section holds no record of the
 * question's type. */
static bool rw_nodata(const ldns_pkt *pkt, uint16_t qtype)
{
    const ldns_rr_list *ans = ldns_pkt_answer(pkt);
    for (size_t j = 0; j < ldns_rr_list_rr_count(ans); j++)
        if (ldns_rr_get_type(ldns_rr_list_rr(ans, j)) == qtype)
            return false;
    return true;
}

/* (a) and (b) of rewrite.h over every section with filtering on; with it
 * off, only the A/AAAA shapes are checked. */
static int rw_filter(const filter_policy_t *policy, ldns_pkt *pkt, bool *changed,
                     dns_rewrite_result_t *out)
{
    const size_t n = sizeof rw_sections / sizeof rw_sections[0];
    if (policy == NULL || !filter_policy_filtering(policy)) {
        for (size_t i = 0; i < n; i++) {
            int rc = rw_check_section(rw_sections[i].get(pkt));
            if (rc != 0)
                return rc;
        }
        return 0;
    }
    ldns_buffer *buf = ldns_buffer_new(512);
    if (buf == NULL)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned removed = 0;
        rc = rw_filter_section(policy, pkt, &rw_sections[i], buf, changed, out, &removed);
        if (rc == 0 && i == 0 && removed > 0 &&
            (out->qtype == DNS_TYPE_A || out->qtype == DNS_TYPE_AAAA))
            out->nodata = rw_nodata(pkt, out->qtype);
    }
    ldns_buffer_free(buf);
    return rc;
}

/* The answer to hand out: pkt serialised when something changed, else a
 * copy of the upstream's bytes. */
static int rw_output(const ldns_pkt *pkt, bool changed, const uint8_t *wire, size_t len,
                     dns_rewrite_result_t *out)
{
    if (changed) {
        ldns_status s = ldns_pkt2wire(&out->wire, pkt, &out->len);
        return s == LDNS_STATUS_OK ? 0 : rw_status(s); /* ldns allocates with malloc */
    }
    out->wire = malloc(len ? len : 1);
    if (out->wire == NULL)
        return -ENOMEM;
    memcpy(out->wire, wire, len);
    out->len = len;
    return 0;
}

int dns_rewrite(const filter_policy_t *policy, const uint8_t *wire, size_t len,
                dns_rewrite_result_t *out)
{
    if (out == NULL)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    if (wire == NULL)
        return -EINVAL;
    ldns_pkt *pkt = NULL;
    bool changed = false;
    int rc = rw_parse(wire, len, &pkt);
    if (rc != 0)
        goto fail;
    const ldns_rr *q = ldns_rr_list_rr(ldns_pkt_question(pkt), 0);
    out->qtype = (uint16_t)ldns_rr_get_type(q);
    rw_qname(ldns_rr_owner(q), out);
    rc = rw_filter(policy, pkt, &changed, out);
    if (rc == 0)
        rc = rw_edns_options(pkt, &changed);
    if (rc == 0)
        rc = rw_collect(pkt, ldns_rr_owner(q), out);
    if (rc == 0)
        rc = rw_output(pkt, changed, wire, len, out);
    if (rc != 0)
        goto fail;
    ldns_pkt_free(pkt);
    return 0;

fail:
    ldns_pkt_free(pkt);
    dns_rewrite_result_free(out);
    return rc;
}

void dns_rewrite_result_free(dns_rewrite_result_t *r)
{
    if (r == NULL)
        return;
    free(r->wire);
    free(r->addrs);
    memset(r, 0, sizeof *r);
}
