/* core/gen.h: generations. A generation is one loaded config with its
 * compiled policy. It is immutable and reference-counted: the daemon holds
 * the current one, and anything that must keep deciding with the policy it
 * started under (an open connection, a query waiting for upstream) takes a
 * reference. A reload builds a new generation and swaps it in whole.
 * References are atomic: with `workers` above 1 every worker's loop holds
 * and drops its own on the one generation; nothing else in it is written
 * after moat_gen_publish, so every loop reads it without a lock.
 */
#ifndef MOAT_CORE_GEN_H
#define MOAT_CORE_GEN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "filter/addr.h"
#include "filter/policy.h"
#include "filter/tenant.h"

/* One tenant compiled (SPEC §2.7). */
typedef struct moat_tenant {
    const char *name;        /* the cfg's */
    filter_policy_t *policy; /* owned: its own rules, deciding by the shared lists too */
    bool audit;              /* its mode, or the top-level one */
    uint64_t view;           /* fingerprint of its address rules (see moat_scope_t) */
    unsigned stats_id;       /* its counters (stats_tenant), set by moat_gen_publish */
} moat_tenant_t;

/* A proxy user compiled (SPEC §2.6, §2.7); defined in gen.c. */
typedef struct moat_gen_user moat_gen_user_t;

typedef struct moat_gen {
    atomic_uint refs;        /* taken and dropped by every worker's loop (core/worker.h) */
    uint64_t id;             /* set by the daemon: 1 for the first, +1 per successful reload */
    cfg_t *cfg;              /* owned */
    filter_policy_t *policy; /* owned: the top-level allow, for clients of no tenant */
    uint64_t view;           /* the top-level policy's view (see moat_scope_t) */
    filter_policy_t **lists; /* owned: cfg->lists compiled, each once */
    moat_tenant_t *tenants;  /* owned: cfg->tenants compiled, same order */
    size_t n_tenants;
    filter_tenants_t *clients;     /* owned: client address -> tenant index */
    const moat_tenant_t **by_name; /* owned: the tenants, sorted by name (moat_gen_tenant_find) */
    moat_gen_user_t *users;        /* owned: every tenant's proxy users, sorted by name */
    size_t n_users;
} moat_gen_t;

/* Who is asking (SPEC §2.7): the policy and mode a query or a connection is
 * decided by. view fingerprints the address rules the policy holds (its
 * own and its lists'): two scopes with the same view filter DNS answers
 * alike (§2.2's rebinding filter lets through what address rules cover),
 * so cached answers are shared by view, across tenants and reloads. */
typedef struct moat_scope {
    const char *tenant; /* the tenant's name; NULL: no tenant (the top-level policy) */
    const filter_policy_t *policy;
    bool audit;
    uint64_t view;
    unsigned stats_id; /* the tenant's counters (core/stats.h), 0: no tenant */
} moat_scope_t;

/* On the loop thread, before services see gen: give its tenants their
 * counter ids (core/stats.h keeps them across reloads by name). */
void moat_gen_publish(moat_gen_t *gen);

/* The scope of a client address: its tenant's by the longest `clients`
 * prefix, or the top-level one. Borrowed from gen. */
moat_scope_t moat_gen_scope(const moat_gen_t *gen, const filter_addr_t *client);

/* The scope of tenant i (0 <= i < n_tenants), or the top-level one for -1. */
moat_scope_t moat_gen_scope_at(const moat_gen_t *gen, long i);

/* Whether a and b resolve through the same upstream servers (dns.upstream,
 * in order): answers and resolutions from one hold for the other. */
bool moat_gen_same_upstream(const moat_gen_t *a, const moat_gen_t *b);

/* The index of the tenant named name, or -1 (a binary search). */
long moat_gen_tenant_find(const moat_gen_t *gen, const char *name);

/* Proxy users (SPEC §2.6 Authentication, §2.7 users). User names are looked
 * up by binary search over the generation's sorted users, never by a scan
 * over the tenants. Neither function logs anything. */

/* True when some tenant names users: the proxy listeners then ask every
 * client for credentials. */
bool moat_gen_has_users(const moat_gen_t *gen);

/* The index of the tenant whose user is user[0..user_len) (bytes, no NUL
 * needed), or -1. For `moat explain --user`: no password is checked. */
long moat_gen_user_tenant(const moat_gen_t *gen, const char *user, size_t user_len);

/* Authenticate a proxy client: the index of the tenant whose user this is
 * when pass[0..pass_len) is its password and, when that tenant has
 * `clients`, client is inside one of its prefixes; -1 otherwise (unknown
 * user, wrong password, client outside: not told apart; client NULL counts
 * as outside). The password is compared in constant time: the SHA-256 of
 * the given one against the SHA-256 of the configured one (computed when
 * the generation was compiled, or given as `sha256:HEX`), with no early
 * exit, and an unknown user costs the same hash and comparison, so neither
 * the length nor the bytes of the secret show in the time taken. pass may
 * be NULL when pass_len is 0. */
long moat_gen_user_auth(const moat_gen_t *gen, const filter_addr_t *client, const char *user,
                        size_t user_len, const char *pass, size_t pass_len);

/* Load path (NULL: the embedded default) and compile its policy. Returns 0
 * with *out holding one reference, -EINVAL with the errors in *diag (always
 * initialised; free with cfg_diag_free), or another negative errno. Pure:
 * safe to call off the loop thread. */
int moat_gen_load(const char *path, moat_gen_t **out, cfg_diag_t *diag);

/* Compile a generation from an already loaded config (takes ownership of cfg,
 * also on failure). moat's own listeners become refused destinations. */
int moat_gen_from_cfg(cfg_t *cfg, moat_gen_t **out);

/* Take a reference; returns gen. */
moat_gen_t *moat_gen_ref(moat_gen_t *gen);

/* Drop a reference; the last one frees gen. NULL is a no-op. */
void moat_gen_unref(moat_gen_t *gen);

/* Who frees a generation whose last reference went: by default
 * moat_gen_unref itself, at once. The daemon sets a reaper that frees it
 * on libuv's thread pool instead, so a generation of many tenants is never
 * freed on the loop (that would hold up every query and connection for as
 * long). reap(gen, arg) must end with moat_gen_free(gen), and runs on the
 * thread that dropped the reference (any worker's). NULL: back to freeing
 * at once. Any thread. */
typedef void (*moat_gen_reap_fn)(moat_gen_t *gen, void *arg);
void moat_gen_set_reaper(moat_gen_reap_fn reap, void *arg);

/* Free a generation no one refers to any more (refs 0). Any thread. */
void moat_gen_free(moat_gen_t *gen);

/* Make *slot hold a reference on gen, dropping the one it held (if any). */
void moat_gen_swap(moat_gen_t **slot, moat_gen_t *gen);

#endif
