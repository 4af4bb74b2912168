/* app/nft.h: `moat nft FILE --iface NAME` (SPEC §5): the nftables ruleset
 * that puts moat in front of a guest behind interface NAME (a TAP device or
 * a veth), generated from the config's listeners.
 *
 * The ruleset is one table of its own, `table inet moat_NAME`, written so
 * that `nft -f` of it replaces any earlier version of that table and touches
 * nothing else:
 *   - prerouting (nat): the guest's DNS (UDP and TCP port 53, whatever the
 *     destination address) is redirected to moat's dns.listen port; every
 *     other guest TCP connection to moat's proxy.transparent port;
 *   - input (filter): packets from NAME go through a chain that accepts
 *     established/related, the needed ICMP/ICMPv6 (neighbour discovery, echo,
 *     PMTU) and moat's DNS and transparent ports, and drops everything else;
 *   - forward (filter): nothing from NAME is forwarded (so QUIC and every
 *     other UDP never leaves and browsers fall back to TCP through moat).
 * docs/DECISIONS.md records the choices (per-family listener ports, loopback
 * listeners, DNS redirected rather than accepted).
 */
#ifndef MOAT_APP_NFT_H
#define MOAT_APP_NFT_H

#include <stdbool.h>
#include <stdio.h>

#include "config/config.h"

/* The longest interface name Linux takes (IFNAMSIZ less the NUL). */
#define NFT_IFACE_MAX 15

/* true when name is a usable interface name: 1..15 bytes of [A-Za-z0-9_.-],
 * not "." or "..". Stricter than the kernel (which takes any byte but '/',
 * ':' and white space) so the name is safe inside an nftables identifier. */
bool nft_iface_ok(const char *name);

/* Print the ruleset for cfg and iface on out (warnings on err). Returns the
 * process exit status: 0, or 1 with a message on err for a bad iface name or
 * a config without proxy.transparent listeners. */
int nft_print(const cfg_t *cfg, const char *iface, FILE *out, FILE *err);

/* `moat nft FILE --iface NAME`: load FILE (errors as `moat check` prints
 * them) and print its ruleset. Returns the exit status (0 or 1). */
int nft_main(const char *path, const char *iface, FILE *out, FILE *err);

#endif
