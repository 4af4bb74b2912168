/* filter/tenant.h: which tenant a client address belongs to (SPEC §2.7).
 *
 * A compiled table maps client prefixes to tenant indices; a lookup returns
 * the tenant whose prefix holding the address is longest. Like the
 * policy's address rules it probes one hash per prefix length in use,
 * longest first, so its cost does not grow with the number of tenants.
 * Immutable once compiled; shared by any number of readers.
 */
#ifndef MOAT_FILTER_TENANT_H
#define MOAT_FILTER_TENANT_H

#include <stddef.h>

#include "filter/addr.h"

typedef struct filter_tenants filter_tenants_t;

/* One tenant's client prefixes (borrowed for the compile only). */
typedef struct filter_tenant_input {
    const filter_prefix_t *clients;
    size_t n_clients;
} filter_tenant_input_t;

/* Compile n tenants; tenant i's index is i. Returns 0 with *out set, or
 * -ENOMEM, -EINVAL (a prefix the config should have refused), or -EEXIST
 * when two tenants list the same prefix (the config refuses that first),
 * with *out NULL. */
int filter_tenants_compile(const filter_tenant_input_t *tenants, size_t n, filter_tenants_t **out);

/* Free a table (NULL is fine). */
void filter_tenants_free(filter_tenants_t *t);

/* The index of the tenant holding client by the longest prefix, or -1 for
 * none (also for t NULL). IPv4-mapped addresses have been unmapped by
 * filter_addr_from_sockaddr; both families are looked up as they are. */
long filter_tenants_lookup(const filter_tenants_t *t, const filter_addr_t *client);

/* Bytes the table holds (for the bench and `moat check`). */
size_t filter_tenants_memory(const filter_tenants_t *t);

#endif
