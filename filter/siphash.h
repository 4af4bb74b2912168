/* filter/siphash.h: the keyed hash every table of guest-chosen keys uses.
 *
 * SipHash-1-3 (Aumasson and Bernstein) with a per-table random key, so a
 * guest that picks names (and through them addresses) cannot pick our hash
 * buckets. Used by the resolver's cache and address memory and by the
 * proxy's dial cache. Pure; no allocation.
 */
#ifndef MOAT_FILTER_SIPHASH_H
#define MOAT_FILTER_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define FILTER_SIPHASH_KEY_LEN 16

/* SipHash-1-3 of in[0..len) under key. */
uint64_t filter_siphash(const uint8_t key[FILTER_SIPHASH_KEY_LEN], const uint8_t *in, size_t len);

/* Fill key with random bytes (getrandom). Without entropy yet (early boot) a
 * weaker key that still varies per process and per table (salt: e.g. the
 * table's address) is used instead. */
void filter_siphash_key(uint8_t key[FILTER_SIPHASH_KEY_LEN], const void *salt);

#endif
