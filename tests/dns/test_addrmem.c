/* tests/dns/test_addrmem.c: name -> address memory per client (SPEC
 * §2.2 last bullet, §2.3 step 3). */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "dns/addrmem.h"

static filter_addr_t A(const char *s)
{
    filter_addr_t a;
    cr_assert_eq(filter_addr_parse(s, strlen(s), &a), 0, "%s", s);
    return a;
}

static dns_addrmem_t *mk(size_t n)
{
    dns_addrmem_t *m = NULL;
    cr_assert_eq(dns_addrmem_create(n, &m), 0);
    cr_assert_not_null(m);
    return m;
}

static int put(dns_addrmem_t *m, const char *client, const char *name, const char *addr,
               uint32_t ttl, uint64_t now)
{
    filter_addr_t c = A(client), a = A(addr);
    return dns_addrmem_put(m, &c, name, strlen(name), &a, ttl, now);
}

static bool check(dns_addrmem_t *m, const char *client, const char *name, const char *addr,
                  uint64_t now)
{
    filter_addr_t c = A(client), a = A(addr);
    return dns_addrmem_check(m, &c, name, strlen(name), &a, now);
}

Test(addrmem, insert_and_check)
{
    dns_addrmem_t *m = mk(100);
    cr_assert_eq(put(m, "198.18.1.2", "GitHub.com.", "198.18.0.10", 60, 0), 0);
    cr_assert(check(m, "198.18.1.2", "github.com", "198.18.0.10", 0));
    cr_assert(check(m, "198.18.1.2", "GITHUB.COM.", "198.18.0.10", 59999));
    cr_assert(!check(m, "198.18.1.2", "github.com", "198.18.0.11", 0));
    cr_assert(!check(m, "198.18.1.2", "gitlab.com", "198.18.0.10", 0));
    cr_assert(!check(m, "198.18.1.2", "bad..name", "198.18.0.10", 0));
    /* IPv6 and IPv4-mapped forms are the same address */
    cr_assert_eq(put(m, "fd00::2", "example.com", "2001:db8::1", 60, 0), 0);
    cr_assert(check(m, "fd00::2", "example.com", "2001:db8::1", 0));
    cr_assert_eq(put(m, "::ffff:198.18.1.3", "example.com", "::ffff:198.18.0.7", 60, 0), 0);
    cr_assert(check(m, "198.18.1.3", "example.com", "198.18.0.7", 0));
    dns_addrmem_stats_t st;
    dns_addrmem_stats(m, &st);
    cr_assert_eq(st.entries, 3);
    cr_assert_eq(st.inserts, 3);
    cr_assert_eq(st.hits, 4);
    cr_assert_eq(st.misses, 3);
    cr_assert_eq(st.max_entries, 100);
    dns_addrmem_free(m);
}

Test(addrmem, other_client_does_not_see_it)
{
    dns_addrmem_t *m = mk(100);
    cr_assert_eq(put(m, "198.18.1.2", "github.com", "198.18.0.10", 60, 0), 0);
    cr_assert(!check(m, "198.18.1.3", "github.com", "198.18.0.10", 0));
    cr_assert(!check(m, "fd00::2", "github.com", "198.18.0.10", 0));
    dns_addrmem_free(m);
}

Test(addrmem, expiry)
{
    dns_addrmem_t *m = mk(100);
    cr_assert_eq(put(m, "198.18.1.2", "github.com", "198.18.0.10", 60, 1000), 0);
    cr_assert(check(m, "198.18.1.2", "github.com", "198.18.0.10", 60999));
    cr_assert(!check(m, "198.18.1.2", "github.com", "198.18.0.10", 61000));
    dns_addrmem_stats_t st;
    dns_addrmem_stats(m, &st);
    cr_assert_eq(st.entries, 0);
    cr_assert_eq(st.expired, 1);
    /* a TTL of 0 still gives the minimum, and the maximum caps */
    cr_assert_eq(put(m, "198.18.1.2", "a.example", "198.18.0.10", 0, 0), 0);
    cr_assert(check(m, "198.18.1.2", "a.example", "198.18.0.10", DNS_ADDRMEM_MIN_TTL * 1000 - 1));
    cr_assert(!check(m, "198.18.1.2", "a.example", "198.18.0.10", DNS_ADDRMEM_MIN_TTL * 1000));
    cr_assert_eq(put(m, "198.18.1.2", "b.example", "198.18.0.10", 0x7fffffff, 0), 0);
    cr_assert(
        !check(m, "198.18.1.2", "b.example", "198.18.0.10", (uint64_t)DNS_ADDRMEM_MAX_TTL * 1000));
    dns_addrmem_free(m);
}

Test(addrmem, refresh)
{
    dns_addrmem_t *m = mk(100);
    cr_assert_eq(put(m, "198.18.1.2", "github.com", "198.18.0.10", 60, 0), 0);
    cr_assert_eq(put(m, "198.18.1.2", "github.com", "198.18.0.10", 60, 50000), 0);
    cr_assert(check(m, "198.18.1.2", "github.com", "198.18.0.10", 109999));
    cr_assert(!check(m, "198.18.1.2", "github.com", "198.18.0.10", 110000));
    /* a shorter TTL later never shortens what the client may still hold */
    cr_assert_eq(put(m, "198.18.1.2", "x.example", "198.18.0.10", 300, 0), 0);
    cr_assert_eq(put(m, "198.18.1.2", "x.example", "198.18.0.10", 10, 1000), 0);
    cr_assert(check(m, "198.18.1.2", "x.example", "198.18.0.10", 299999));
    dns_addrmem_stats_t st;
    dns_addrmem_stats(m, &st);
    cr_assert_eq(st.inserts, 2);
    cr_assert_eq(st.refreshes, 2);
    dns_addrmem_free(m);
}

Test(addrmem, bound_and_eviction)
{
    dns_addrmem_t *m = mk(3);
    cr_assert_eq(put(m, "198.18.1.2", "a.example", "198.18.0.1", 60, 0), 0);
    cr_assert_eq(put(m, "198.18.1.2", "b.example", "198.18.0.2", 60, 0), 0);
    cr_assert_eq(put(m, "198.18.1.2", "c.example", "198.18.0.3", 60, 0), 0);
    /* refreshing a makes b the oldest */
    cr_assert_eq(put(m, "198.18.1.2", "a.example", "198.18.0.1", 60, 0), 0);
    cr_assert_eq(put(m, "198.18.1.2", "d.example", "198.18.0.4", 60, 0), 0);
    cr_assert(!check(m, "198.18.1.2", "b.example", "198.18.0.2", 0));
    cr_assert(check(m, "198.18.1.2", "a.example", "198.18.0.1", 0));
    cr_assert(check(m, "198.18.1.2", "c.example", "198.18.0.3", 0));
    cr_assert(check(m, "198.18.1.2", "d.example", "198.18.0.4", 0));
    dns_addrmem_stats_t st;
    dns_addrmem_stats(m, &st);
    cr_assert_eq(st.entries, 3);
    cr_assert_eq(st.evictions, 1);
    dns_addrmem_clear(m);
    dns_addrmem_stats(m, &st);
    cr_assert_eq(st.entries, 0);
    dns_addrmem_free(m);

    /* many */
    m = mk(1000);
    char name[64], addr[64];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "n%d.example", i);
        snprintf(addr, sizeof addr, "198.18.%d.%d", i / 256, i % 256);
        cr_assert_eq(put(m, "198.18.1.2", name, addr, 60, 0), 0);
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "n%d.example", i);
        snprintf(addr, sizeof addr, "198.18.%d.%d", i / 256, i % 256);
        cr_assert_eq(check(m, "198.18.1.2", name, addr, 0), i >= 4000, "%d", i);
    }
    dns_addrmem_stats(m, &st);
    cr_assert_eq(st.entries, 1000);
    dns_addrmem_free(m);
}

typedef struct seen {
    char names[64][256];
    size_t n;
    size_t stop_after;
} seen_t;

static bool seen_cb(const char *name, size_t len, uint64_t expiry_ms, void *arg)
{
    seen_t *s = arg;
    cr_assert_eq(strlen(name), len);
    cr_assert_gt(expiry_ms, 0);
    snprintf(s->names[s->n++], sizeof s->names[0], "%s", name);
    return s->stop_after == 0 || s->n < s->stop_after;
}

static bool seen_has(const seen_t *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->names[i], name) == 0)
            return true;
    return false;
}

Test(addrmem, names_for)
{
    dns_addrmem_t *m = mk(100);
    cr_assert_eq(put(m, "198.18.1.2", "github.com", "198.18.0.10", 60, 0), 0);
    cr_assert_eq(put(m, "198.18.1.2", "Api.GitHub.com.", "198.18.0.10", 10, 0), 0);
    cr_assert_eq(put(m, "198.18.1.2", "other.example", "198.18.0.11", 60, 0), 0);
    cr_assert_eq(put(m, "198.18.1.3", "third.example", "198.18.0.10", 60, 0), 0);
    filter_addr_t c = A("198.18.1.2"), a = A("198.18.0.10");
    seen_t s = {0};
    cr_assert_eq(dns_addrmem_names_for(m, &c, &a, 0, seen_cb, &s), 2);
    cr_assert_eq(s.n, 2);
    cr_assert(seen_has(&s, "github.com"));
    cr_assert(seen_has(&s, "api.github.com"));
    /* expired ones are not returned */
    memset(&s, 0, sizeof s);
    cr_assert_eq(dns_addrmem_names_for(m, &c, &a, 10000, seen_cb, &s), 1);
    cr_assert(seen_has(&s, "github.com"));
    /* stop early */
    cr_assert_eq(put(m, "198.18.1.2", "more.example", "198.18.0.10", 60, 10000), 0);
    memset(&s, 0, sizeof s);
    s.stop_after = 1;
    cr_assert_eq(dns_addrmem_names_for(m, &c, &a, 10000, seen_cb, &s), 1);
    /* unknown address */
    filter_addr_t none = A("198.18.0.99");
    memset(&s, 0, sizeof s);
    cr_assert_eq(dns_addrmem_names_for(m, &c, &none, 0, seen_cb, &s), 0);
    dns_addrmem_free(m);
}

Test(addrmem, names_per_address_bounded)
{
    dns_addrmem_t *m = mk(1000);
    char name[64];
    /* the first name expires last: it survives, the soonest-expiring go */
    cr_assert_eq(put(m, "198.18.1.2", "keep.example", "198.18.0.10", 3600, 0), 0);
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "n%d.example", i);
        cr_assert_eq(put(m, "198.18.1.2", name, "198.18.0.10", (uint32_t)(60 + i), 0), 0);
    }
    filter_addr_t c = A("198.18.1.2"), a = A("198.18.0.10");
    seen_t s = {0};
    cr_assert_eq(dns_addrmem_names_for(m, &c, &a, 0, seen_cb, &s), DNS_ADDRMEM_MAX_NAMES);
    cr_assert(seen_has(&s, "keep.example"));
    cr_assert(seen_has(&s, "n99.example"));
    dns_addrmem_stats_t st;
    dns_addrmem_stats(m, &st);
    cr_assert_eq(st.entries, DNS_ADDRMEM_MAX_NAMES);
    dns_addrmem_free(m);
}

Test(addrmem, bad_arguments)
{
    dns_addrmem_t *m = mk(10);
    filter_addr_t c = A("198.18.1.2"), a = A("198.18.0.10"), bad;
    memset(&bad, 0, sizeof bad);
    cr_assert_eq(dns_addrmem_put(m, &c, "a..b", 4, &a, 60, 0), -EINVAL);
    cr_assert_eq(dns_addrmem_put(m, &bad, "a.b", 3, &a, 60, 0), -EINVAL);
    cr_assert_eq(dns_addrmem_put(m, &c, "a.b", 3, &bad, 60, 0), -EINVAL);
    cr_assert_eq(dns_addrmem_put(m, &c, "a\0b", 3, &a, 60, 0), -EINVAL);
    cr_assert(!dns_addrmem_check(m, &c, "a.b", 3, &bad, 0));
    cr_assert(!dns_addrmem_check(NULL, &c, "a.b", 3, &a, 0));
    dns_addrmem_free(m);
    dns_addrmem_free(NULL);

    m = mk(0);
    cr_assert_eq(dns_addrmem_put(m, &c, "a.b", 3, &a, 60, 0), -ENODATA);
    cr_assert(!dns_addrmem_check(m, &c, "a.b", 3, &a, 0));
    dns_addrmem_free(m);
    cr_assert_eq(dns_addrmem_create(DNS_ADDRMEM_MAX_ENTRIES + 1, &m), -EINVAL);
    cr_assert_null(m);
}

/* A shared memory (workers): one thread writes as a worker's resolver
 * does, another reads as another worker's proxy does, at once. Every read
 * sees whole entries; afterwards every write is there. (ASan and UBSan run
 * this too; the lock is what keeps the two threads apart.) */
#define SHARED_N 2000

typedef struct shared_ctx {
    dns_addrmem_t *m;
    int seen;
} shared_ctx_t;

static bool shared_count_cb(const char *name, size_t len, uint64_t expiry_ms, void *arg)
{
    shared_ctx_t *x = arg;
    (void)expiry_ms;
    cr_assert(len > 4 && memcmp(name, "name", 4) == 0, "torn entry: %.*s", (int)len, name);
    x->seen++;
    return true;
}

static void *shared_writer(void *arg)
{
    shared_ctx_t *x = arg;
    filter_addr_t c = A("198.18.0.2");
    for (int i = 0; i < SHARED_N; i++) {
        char name[32], ip[32];
        snprintf(name, sizeof name, "name%d.test", i);
        snprintf(ip, sizeof ip, "198.18.%d.%d", 1 + i / 250, 1 + i % 250);
        filter_addr_t a = A(ip);
        cr_assert_eq(dns_addrmem_put(x->m, &c, name, strlen(name), &a, 60, 1000), 0);
    }
    return NULL;
}

Test(addrmem, shared_between_threads)
{
    dns_addrmem_t *m;
    cr_assert_eq(dns_addrmem_create(4 * SHARED_N, &m), 0);
    dns_addrmem_share(m);
    shared_ctx_t w = {.m = m}, r = {.m = m};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, shared_writer, &w), 0);
    filter_addr_t c = A("198.18.0.2");
    for (int round = 0; round < 50; round++)
        for (int i = 0; i < SHARED_N; i += 97) {
            char ip[32];
            snprintf(ip, sizeof ip, "198.18.%d.%d", 1 + i / 250, 1 + i % 250);
            filter_addr_t a = A(ip);
            dns_addrmem_names_for(m, &c, &a, 1000, shared_count_cb, &r);
        }
    pthread_join(t, NULL);
    dns_addrmem_stats_t st;
    dns_addrmem_stats(m, &st);
    cr_assert_eq(st.entries, SHARED_N);
    for (int i = 0; i < SHARED_N; i++) {
        char name[32], ip[32];
        snprintf(name, sizeof name, "name%d.test", i);
        snprintf(ip, sizeof ip, "198.18.%d.%d", 1 + i / 250, 1 + i % 250);
        filter_addr_t a = A(ip);
        cr_assert(dns_addrmem_check(m, &c, name, strlen(name), &a, 1000), "%s", name);
    }
    dns_addrmem_free(m);
}

Test(addrmem, put_normalized_is_put)
{
    dns_addrmem_t *m = mk(16);
    filter_addr_t c = A("198.18.0.2"), a = A("198.18.0.80");
    cr_assert_eq(dns_addrmem_put_normalized(m, &c, "api.example.com", 15, &a, 60, 1000), 0);
    cr_assert(check(m, "198.18.0.2", "API.Example.COM.", "198.18.0.80", 1000));
    cr_assert_eq(dns_addrmem_put_normalized(m, &c, "", 0, &a, 60, 1000), -EINVAL);
    cr_assert_eq(dns_addrmem_put_normalized(m, &c, NULL, 3, &a, 60, 1000), -EINVAL);
    dns_addrmem_free(m);
}
