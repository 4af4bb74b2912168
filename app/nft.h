/* app/nft.h: `moat nft FILE --iface NAME... [--host-port PORT[/udp]...]`
 * (SPEC §5): the nftables ruleset that puts moat in front of the guests
 * behind interfaces NAME (TAP devices or veths), generated from the config's
 * listeners.
 *
 * The ruleset is one table of its own, `table inet moat_NAME` for one
 * interface and `table inet moat` for several (their names then in the set
 * `guests`), written so that `nft -f` of it replaces any earlier version of
 * that table and touches nothing else:
 *   - prerouting (nat): the guests' DNS (UDP and TCP port 53, whatever the
 *     destination address) is redirected to moat's dns.listen port; every
 *     other guest TCP connection to moat's proxy.transparent port, except
 *     one to a --host-port TCP port of this host's own addresses;
 *   - input (filter): packets from the guests go through a chain that
 *     accepts established/related, the needed ICMP/ICMPv6 (neighbour
 *     discovery, echo, PMTU), moat's DNS and transparent ports and the
 *     --host-port ports, and drops everything else;
 *   - forward (filter): nothing from the guests is forwarded (so QUIC and
 *     every other UDP never leaves and browsers fall back to TCP through
 *     moat).
 * docs/DECISIONS.md records the choices (per-family listener ports, loopback
 * listeners, DNS redirected rather than accepted, the table's name, host
 * ports).
 */
#ifndef MOAT_APP_NFT_H
#define MOAT_APP_NFT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"

/* The longest interface name Linux takes (IFNAMSIZ less the NUL). */
#define NFT_IFACE_MAX 15

/* The most --iface options, and the most --host-port options. */
#define NFT_IFACES_MAX     64
#define NFT_HOST_PORTS_MAX 64

/* One host service the guests may reach: --host-port PORT (TCP) or
 * PORT/udp. */
typedef struct nft_host_port {
    uint16_t port;
    bool udp; /* false: TCP */
} nft_host_port_t;

/* What the ruleset is for: the guests' interfaces and the host ports opened
 * to them. The names point into the caller's strings (argv), which must
 * outlive the target. Zero it before the first add. */
typedef struct nft_target {
    const char *ifaces[NFT_IFACES_MAX];
    size_t n_ifaces;
    nft_host_port_t host_ports[NFT_HOST_PORTS_MAX];
    size_t n_host_ports;
} nft_target_t;

/* true when name is a usable interface name: 1..15 bytes of [A-Za-z0-9_.-],
 * not "." or "..". Stricter than the kernel (which takes any byte but '/',
 * ':' and white space) so the name is safe inside an nftables identifier. */
bool nft_iface_ok(const char *name);

/* Add interface name (not yet checked by nft_iface_ok) to t. Returns 0, or
 * -EEXIST (given twice) or -E2BIG (more than NFT_IFACES_MAX) with the reason
 * on err. */
int nft_target_add_iface(nft_target_t *t, const char *name, FILE *err);

/* Add a host port written "PORT", "PORT/tcp" or "PORT/udp" (PORT 1..65535,
 * not 53) to t. Returns 0, or -EINVAL, -EEXIST or -E2BIG with the reason
 * on err. */
int nft_target_add_host_port(nft_target_t *t, const char *text, FILE *err);

/* Print the ruleset for cfg and t on out (warnings on err). Returns the
 * process exit status: 0, or 1 with a message on err for a bad or missing
 * interface name or a config without proxy.transparent listeners. */
int nft_print(const cfg_t *cfg, const nft_target_t *t, FILE *out, FILE *err);

/* `moat nft FILE ...`: check t's interface names, load FILE (errors as
 * `moat check` prints them) and print its ruleset. Returns the exit status
 * (0 or 1). */
int nft_main(const char *path, const nft_target_t *t, FILE *out, FILE *err);

#endif
