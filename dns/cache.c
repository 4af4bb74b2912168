/* dns/cache.c: the DNS response cache; see cache.h for the rules. */
#include "dns/cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "filter/cursor.h"
#include "filter/list.h"
#include "filter/siphash.h"
#include "filter/writer.h"
#include "dns/query.h"

#define CACHE_FLAG_QR 0x8000u
#define CACHE_FLAG_TC 0x0200u

/* One stored answer. ttl_off[] (n_ttl offsets of the TTL fields to count
 * down) is followed by the wire bytes, then the addresses, in one block.
 * The hash chains stay hand-linked (hnext, hprev): a bucket head is one
 * pointer where a moat_list_t head would double the bucket array, and
 * hprev still unlinks in O(1). */
typedef struct cache_entry {
    struct cache_entry *hnext;  /* hash chain */
    struct cache_entry **hprev; /* the pointer that points at us */
    moat_list_t lru;            /* on dns_cache.lru */
    uint64_t hash;
    uint64_t stored_ms; /* now_ms at put */
    uint32_t ttl;       /* seconds the entry lives */
    uint16_t len;       /* wire bytes */
    uint16_t n_ttl;
    uint16_t n_addrs;
    dns_cache_key_t key;
    dns_answer_scan_t scan; /* of the stored bytes, for dns_answer_patch_scanned */
    uint16_t ttl_off[];
} cache_entry_t;

struct dns_cache {
    cache_entry_t **buckets;
    size_t mask; /* bucket count - 1 (a power of two) */
    size_t max_entries;
    moat_list_t lru; /* most recently used first; the last is evicted first */
    uint8_t seed[FILTER_SIPHASH_KEY_LEN];
    dns_cache_stats_t st;
};

/* What a walk over an answer found. */
typedef struct cache_scan {
    size_t end;     /* offset just past the last record */
    uint32_t ttl;   /* entry TTL */
    uint16_t n_ttl; /* TTL fields found */
    /* Each RR has at least 11 octets (root owner, type, class, TTL, rdlength). */
    uint16_t ttl_off[(DNS_CACHE_ENTRY_MAX - DNS_HEADER_LEN) / 11 + 1];
    uint32_t ttl_val[(DNS_CACHE_ENTRY_MAX - DNS_HEADER_LEN) / 11 + 1];
} cache_scan_t;

static uint64_t cache_key_hash(const dns_cache_t *c, const dns_cache_key_t *k)
{
    uint8_t buf[12 + sizeof k->name];
    buf[0] = (uint8_t)(k->qtype >> 8);
    buf[1] = (uint8_t)k->qtype;
    buf[2] = (uint8_t)(k->qclass >> 8);
    buf[3] = (uint8_t)k->qclass;
    memcpy(buf + 4, &k->view, 8);
    memcpy(buf + 12, k->name, k->name_len);
    return filter_siphash(c->seed, buf, 12 + (size_t)k->name_len);
}

static bool cache_key_eq(const dns_cache_key_t *a, const dns_cache_key_t *b)
{
    return a->view == b->view && a->qtype == b->qtype && a->qclass == b->qclass &&
           a->name_len == b->name_len && memcmp(a->name, b->name, a->name_len) == 0;
}

static uint8_t cache_lower(uint8_t ch)
{
    /* Branch-free: 0x20 added to 'A'..'Z' only. */
    return (uint8_t)(ch + ((unsigned)((uint8_t)(ch - 'A') < 26u) << 5));
}

/* Read an uncompressed wire name into k (lowercased). The labels are walked
 * by their length octets first, then the whole name is lowercased in one
 * flat pass: a length octet (0..63) is below 'A', so folding leaves it. */
static int cache_read_name(filter_cur_t *cur, dns_cache_key_t *k)
{
    size_t start = filter_cur_pos(cur), n = 0;
    for (;;) {
        uint8_t l = filter_cur_u8(cur);
        if (!filter_cur_ok(cur) || l > DNS_LABEL_MAX) /* RFC 1035 §4.1.4: no pointers here */
            return -EINVAL;
        if (n + 1 + l > DNS_NAME_WIRE_MAX)
            return -EINVAL;
        n += 1 + (size_t)l;
        if (l == 0)
            break;
        if (filter_cur_take(cur, l) == NULL)
            return -EINVAL;
    }
    const uint8_t *p = cur->base + start;
    for (size_t i = 0; i < n; i++)
        k->name[i] = cache_lower(p[i]);
    k->name_len = (uint16_t)n;
    return 0;
}

int dns_cache_key_from_wire(dns_cache_key_t *k, const uint8_t *name, size_t avail, uint16_t qtype,
                            uint16_t qclass)
{
    if (k == NULL)
        return -EINVAL;
    /* Every field but the name buffer, which only its first name_len
     * octets are read from (the key is hashed and compared by name_len). */
    k->view = 0;
    k->name_len = 0;
    if (name == NULL) {
        memset(k, 0, sizeof *k);
        return -EINVAL;
    }
    filter_cur_t cur = filter_cur_make(name, avail);
    int rc = cache_read_name(&cur, k);
    if (rc != 0) {
        memset(k, 0, sizeof *k);
        return rc;
    }
    k->qtype = qtype;
    k->qclass = qclass;
    return 0;
}

int dns_cache_key_from_name(dns_cache_key_t *k, const char *name, size_t len, uint16_t qtype,
                            uint16_t qclass)
{
    if (k == NULL)
        return -EINVAL;
    memset(k, 0, sizeof *k);
    if (name == NULL && len != 0)
        return -EINVAL;
    if (len > 0 && name[len - 1] == '.')
        len--;
    size_t n = 0, i = 0;
    while (i < len) {
        size_t start = i;
        while (i < len && name[i] != '.')
            i++;
        size_t l = i - start;
        if (l == 0 || l > DNS_LABEL_MAX || n + 1 + l + 1 > DNS_NAME_WIRE_MAX)
            goto fail;
        k->name[n++] = (uint8_t)l;
        for (size_t j = start; j < i; j++)
            k->name[n++] = cache_lower((uint8_t)name[j]);
        if (i < len) {
            i++; /* the dot */
            if (i == len)
                goto fail; /* "a.." once the trailing dot was dropped */
        }
    }
    k->name[n++] = 0;
    k->name_len = (uint16_t)n;
    k->qtype = qtype;
    k->qclass = qclass;
    return 0;
fail:
    memset(k, 0, sizeof *k);
    return -EINVAL;
}

int dns_cache_key_from_msg(dns_cache_key_t *k, const uint8_t *msg, size_t len)
{
    if (k == NULL)
        return -EINVAL;
    memset(k, 0, sizeof *k);
    if (msg == NULL)
        return -EINVAL;
    filter_cur_t cur = filter_cur_make(msg, len);
    filter_cur_skip(&cur, 4);
    uint16_t qd = filter_cur_u16(&cur);
    filter_cur_skip(&cur, 6);
    if (!filter_cur_ok(&cur) || qd != 1)
        return -EINVAL;
    if (cache_read_name(&cur, k) != 0)
        goto fail;
    k->qtype = filter_cur_u16(&cur);
    k->qclass = filter_cur_u16(&cur);
    if (!filter_cur_ok(&cur))
        goto fail;
    return 0;
fail:
    memset(k, 0, sizeof *k);
    return -EINVAL;
}

/* RFC 2181 §8: a TTL with the top bit set is read as 0; then our cap. */
static uint32_t cache_ttl_norm(uint32_t ttl)
{
    if (ttl & 0x80000000u)
        return 0;
    return ttl > DNS_CACHE_MAX_TTL ? DNS_CACHE_MAX_TTL : ttl;
}

static uint32_t cache_min(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

/* The header and the question: a response to a standard query, whose
 * question is k. */
static int cache_scan_question(filter_cur_t *cur, const dns_cache_key_t *k, uint16_t *flags,
                               uint16_t count[3])
{
    filter_cur_skip(cur, 2); /* ID */
    *flags = filter_cur_u16(cur);
    uint16_t qd = filter_cur_u16(cur);
    for (int i = 0; i < 3; i++)
        count[i] = filter_cur_u16(cur);
    if (!filter_cur_ok(cur) || !(*flags & CACHE_FLAG_QR) || ((*flags >> 11) & 0xF) != 0 || qd != 1)
        return -EINVAL;
    dns_cache_key_t q;
    q.view = k->view; /* not on the wire */
    if (cache_read_name(cur, &q) != 0)
        return -EINVAL;
    q.qtype = filter_cur_u16(cur);
    q.qclass = filter_cur_u16(cur);
    if (!filter_cur_ok(cur) || !cache_key_eq(&q, k))
        return -EINVAL;
    return 0;
}

/* RFC 2308 §5: the negative TTL of an SOA record, min(its TTL, MINIMUM). */
static int cache_soa_neg(filter_cur_t rd, uint32_t ttl, uint32_t *neg)
{
    if (dns_wire_skip_name(&rd, NULL) != 0 || dns_wire_skip_name(&rd, NULL) != 0)
        return -EINVAL;
    filter_cur_skip(&rd, 16); /* SERIAL REFRESH RETRY EXPIRE */
    uint32_t minimum = cache_ttl_norm(filter_cur_u32(&rd));
    if (!filter_cur_ok(&rd))
        return -EINVAL;
    *neg = cache_min(ttl, minimum);
    return 0;
}

/* Walk the answer: check its question is k, find every TTL field and the
 * entry's TTL (cache.h). */
static int cache_scan(const dns_cache_key_t *k, const uint8_t *wire, size_t len, cache_scan_t *s)
{
    filter_cur_t cur = filter_cur_make(wire, len);
    uint16_t flags, count[3];
    if (cache_scan_question(&cur, k, &flags, count) != 0)
        return -EINVAL;

    bool positive = false, have_soa = false;
    uint32_t ans_min = UINT32_MAX, neg = UINT32_MAX;
    s->n_ttl = 0;
    for (int sec = 0; sec < 3; sec++) {
        for (unsigned i = 0; i < count[sec]; i++) {
            if (dns_wire_skip_name(&cur, NULL) != 0)
                return -EINVAL;
            uint16_t type = filter_cur_u16(&cur);
            filter_cur_skip(&cur, 2); /* class */
            size_t ttl_pos = filter_cur_pos(&cur);
            uint32_t ttl = cache_ttl_norm(filter_cur_u32(&cur));
            uint16_t rdlen = filter_cur_u16(&cur);
            filter_cur_t rd = filter_cur_sub(&cur, rdlen);
            if (!filter_cur_ok(&cur))
                return -EINVAL;
            if (ttl_pos > DNS_CACHE_ENTRY_MAX)
                return -EMSGSIZE;
            if (type == DNS_TYPE_OPT) /* RFC 6891 §6.1.3: flags, not a TTL */
                continue;
            if (s->n_ttl >= sizeof s->ttl_off / sizeof s->ttl_off[0])
                return -EMSGSIZE;
            s->ttl_off[s->n_ttl] = (uint16_t)ttl_pos;
            s->ttl_val[s->n_ttl] = ttl;
            s->n_ttl++;
            if (sec == 0) {
                ans_min = cache_min(ans_min, ttl);
                if (type == k->qtype || k->qtype == DNS_TYPE_ANY)
                    positive = true;
            } else if (sec == 1 && type == DNS_TYPE_SOA && !have_soa) {
                if (cache_soa_neg(rd, ttl, &neg) != 0)
                    return -EINVAL;
                have_soa = true;
            }
        }
    }
    s->end = filter_cur_pos(&cur);
    if (s->end > DNS_CACHE_ENTRY_MAX)
        return -EMSGSIZE;

    /* Only complete NOERROR / NXDOMAIN answers (cache.h). */
    unsigned rcode = flags & 0xF;
    if ((flags & CACHE_FLAG_TC) || (rcode != DNS_RCODE_NOERROR && rcode != DNS_RCODE_NXDOMAIN))
        return -ENODATA;
    if (rcode == DNS_RCODE_NXDOMAIN)
        positive = false;
    if (positive) {
        s->ttl = ans_min;
    } else {
        if (!have_soa)
            return -ENODATA; /* RFC 2308 §5 */
        s->ttl = cache_min(cache_min(neg, ans_min), DNS_CACHE_MAX_NEG_TTL);
    }
    if (s->ttl == 0)
        return -ENODATA;
    return 0;
}

static uint8_t *cache_wire(cache_entry_t *e)
{
    return (uint8_t *)(e->ttl_off + e->n_ttl);
}

static dns_cache_addr_t *cache_addrs(cache_entry_t *e)
{
    /* Align the address array after the wire bytes. */
    size_t off = offsetof(cache_entry_t, ttl_off) + (size_t)e->n_ttl * sizeof(uint16_t) + e->len;
    off = (off + _Alignof(dns_cache_addr_t) - 1) & ~(size_t)(_Alignof(dns_cache_addr_t) - 1);
    return (dns_cache_addr_t *)((uint8_t *)e + off);
}

static size_t cache_entry_size(size_t n_ttl, size_t len, size_t n_addrs)
{
    size_t off = offsetof(cache_entry_t, ttl_off) + n_ttl * sizeof(uint16_t) + len;
    off = (off + _Alignof(dns_cache_addr_t) - 1) & ~(size_t)(_Alignof(dns_cache_addr_t) - 1);
    return off + n_addrs * sizeof(dns_cache_addr_t);
}

static void cache_remove(dns_cache_t *c, cache_entry_t *e)
{
    *e->hprev = e->hnext;
    if (e->hnext)
        e->hnext->hprev = e->hprev;
    moat_list_remove(&e->lru);
    c->st.entries--;
    free(e);
}

static cache_entry_t *cache_find(dns_cache_t *c, const dns_cache_key_t *k, uint64_t h)
{
    for (cache_entry_t *e = c->buckets[h & c->mask]; e; e = e->hnext)
        if (e->hash == h && cache_key_eq(&e->key, k))
            return e;
    return NULL;
}

int dns_cache_create(size_t max_entries, dns_cache_t **out)
{
    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (max_entries > DNS_CACHE_MAX_ENTRIES)
        return -EINVAL;
    dns_cache_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return -ENOMEM;
    size_t n = 16;
    while (n < max_entries)
        n <<= 1;
    c->buckets = calloc(max_entries ? n : 1, sizeof *c->buckets);
    if (c->buckets == NULL) {
        free(c);
        return -ENOMEM;
    }
    c->mask = max_entries ? n - 1 : 0;
    c->max_entries = max_entries;
    c->st.max_entries = max_entries;
    moat_list_init(&c->lru);
    filter_siphash_key(c->seed, c);
    *out = c;
    return 0;
}

void dns_cache_clear(dns_cache_t *c)
{
    if (c == NULL)
        return;
    moat_list_foreach_safe(it, nx, &c->lru) cache_remove(c, container_of(it, cache_entry_t, lru));
}

void dns_cache_free(dns_cache_t *c)
{
    if (c == NULL)
        return;
    dns_cache_clear(c);
    free(c->buckets);
    free(c);
}

int dns_cache_put(dns_cache_t *c, const dns_cache_key_t *k, const uint8_t *wire, size_t len,
                  const dns_cache_addr_t *addrs, size_t n_addrs, uint64_t now_ms)
{
    if (c == NULL || k == NULL || wire == NULL || (addrs == NULL && n_addrs != 0))
        return -EINVAL;
    if (c->max_entries == 0)
        return -ENODATA;
    if (len > DNS_TCP_MAX)
        return -EMSGSIZE;
    /* The scan tables are too big for the stack of a loop callback. */
    cache_scan_t *s = malloc(sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    int rc = cache_scan(k, wire, len, s);
    if (rc != 0)
        goto done;
    if (n_addrs > DNS_CACHE_MAX_ADDRS)
        n_addrs = DNS_CACHE_MAX_ADDRS;
    cache_entry_t *e = malloc(cache_entry_size(s->n_ttl, s->end, n_addrs));
    if (e == NULL) {
        rc = -ENOMEM;
        goto done;
    }
    memset(e, 0, sizeof *e);
    e->key = *k;
    e->hash = cache_key_hash(c, k);
    e->stored_ms = now_ms;
    e->ttl = s->ttl;
    e->len = (uint16_t)s->end;
    e->n_ttl = s->n_ttl;
    e->n_addrs = (uint16_t)n_addrs;
    memcpy(e->ttl_off, s->ttl_off, (size_t)s->n_ttl * sizeof(uint16_t));
    filter_wr_t w = filter_wr_make(cache_wire(e), s->end);
    filter_wr_bytes(&w, wire, s->end);
    for (size_t i = 0; i < s->n_ttl; i++) /* store the normalised TTLs */
        filter_wr_patch_u32(&w, s->ttl_off[i], s->ttl_val[i]);
    /* The patch of every hit reads the same bytes: scanned once here (a TTL
     * is no part of what the scan keeps). */
    (void)dns_answer_scan(cache_wire(e), e->len, &e->scan);
    dns_cache_addr_t *a = cache_addrs(e);
    for (size_t i = 0; i < n_addrs; i++) {
        a[i] = addrs[i];
        a[i].ttl = cache_ttl_norm(addrs[i].ttl);
    }

    cache_entry_t *old = cache_find(c, k, e->hash);
    if (old != NULL) {
        cache_remove(c, old);
    } else if (c->st.entries >= c->max_entries && !moat_list_empty(&c->lru)) {
        cache_remove(c, container_of(c->lru.prev, cache_entry_t, lru));
        c->st.evictions++;
    }
    cache_entry_t **b = &c->buckets[e->hash & c->mask];
    e->hnext = *b;
    if (*b)
        (*b)->hprev = &e->hnext;
    e->hprev = b;
    *b = e;
    moat_list_push(&c->lru, &e->lru);
    c->st.entries++;
    c->st.inserts++;
done:
    free(s);
    return rc;
}

int dns_cache_get(dns_cache_t *c, const dns_cache_key_t *k, uint64_t now_ms, uint8_t *buf,
                  size_t cap, size_t *len, dns_cache_addr_cb cb, void *arg)
{
    return dns_cache_get_scanned(c, k, now_ms, buf, cap, len, cb, arg, NULL);
}

int dns_cache_get_scanned(dns_cache_t *c, const dns_cache_key_t *k, uint64_t now_ms, uint8_t *buf,
                          size_t cap, size_t *len, dns_cache_addr_cb cb, void *arg,
                          dns_answer_scan_t *scan)
{
    if (len != NULL)
        *len = 0;
    if (scan != NULL)
        *scan = (dns_answer_scan_t){0};
    if (c == NULL || k == NULL || len == NULL || (buf == NULL && cap != 0))
        return -EINVAL;
    uint64_t h = cache_key_hash(c, k);
    cache_entry_t *e = c->max_entries ? cache_find(c, k, h) : NULL;
    if (e == NULL) {
        c->st.misses++;
        return -ENOENT;
    }
    /* A clock that went backwards counts as no time elapsed. */
    uint64_t elapsed_ms = now_ms > e->stored_ms ? now_ms - e->stored_ms : 0;
    if (elapsed_ms / 1000 >= e->ttl) {
        cache_remove(c, e);
        c->st.expired++;
        c->st.misses++;
        return -ENOENT;
    }
    uint32_t elapsed = (uint32_t)(elapsed_ms / 1000);
    if (cap < e->len)
        return -ENOSPC;
    /* The stored TTLs, read in order (the offsets ascend), less the time
     * elapsed. */
    filter_wr_t w = filter_wr_make(buf, cap);
    filter_wr_bytes(&w, cache_wire(e), e->len);
    filter_cur_t r = filter_cur_make(cache_wire(e), e->len);
    for (size_t i = 0; i < e->n_ttl; i++) {
        filter_cur_skip(&r, e->ttl_off[i] - filter_cur_pos(&r));
        uint32_t v = filter_cur_u32(&r);
        filter_wr_patch_u32(&w, e->ttl_off[i], v > elapsed ? v - elapsed : 0);
    }
    *len = e->len;
    if (scan != NULL)
        *scan = e->scan;
    moat_list_remove(&e->lru);
    moat_list_push(&c->lru, &e->lru);
    c->st.hits++;
    if (cb != NULL) {
        const dns_cache_addr_t *a = cache_addrs(e);
        for (size_t i = 0; i < e->n_addrs; i++) {
            dns_cache_addr_t x = a[i];
            x.ttl = x.ttl > elapsed ? x.ttl - elapsed : 0;
            cb(&x, arg);
        }
    }
    return 0;
}

void dns_cache_stats(const dns_cache_t *c, dns_cache_stats_t *out)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof *out);
    if (c != NULL)
        *out = c->st;
}
