/* app/nft.c: `moat nft FILE --iface NAME`, the nftables ruleset for a guest
 * behind one interface (see nft.h). */
#include "app/nft.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "app/cli.h"

bool nft_iface_ok(const char *name)
{
    if (!name)
        return false;
    size_t n = strlen(name);
    if (n == 0 || n > NFT_IFACE_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.';
        if (!ok)
            return false;
    }
    return true;
}

static uint16_t nft_port(const cfg_addr_t *a)
{
    if (a->sa.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
}

static bool nft_is_loopback(const cfg_addr_t *a)
{
    if (a->sa.ss_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&a->sa)->sin6_addr);
    return (ntohl(((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr) >> 24) == 127;
}

/* Whether some listener in l serves family on port, and whether one of those
 * is reachable by a REDIRECT from an interface (not bound to loopback). */
static void nft_family_check(const cfg_addr_list_t *l, int family, uint16_t port, bool *any,
                             bool *reachable)
{
    *any = *reachable = false;
    for (size_t i = 0; i < l->n; i++) {
        if (l->items[i].sa.ss_family != family || nft_port(&l->items[i]) != port)
            continue;
        *any = true;
        if (!nft_is_loopback(&l->items[i]))
            *reachable = true;
    }
}

/* A REDIRECT in prerouting sends the packet to the incoming interface's own
 * address: a listener only on loopback (or only on the other family) never
 * sees it. Warn, do not fail: the operator may add the listener later. */
static void nft_warn_reach(const cfg_addr_list_t *l, const char *what, uint16_t port,
                           const char *iface, FILE *err)
{
    static const struct {
        int family;
        const char *name, *wild;
    } fams[] = {{AF_INET, "IPv4", "0.0.0.0"}, {AF_INET6, "IPv6", "[::]"}};
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        bool any, reachable;
        nft_family_check(l, fams[f].family, port, &any, &reachable);
        if (!any)
            fprintf(err,
                    "moat nft: warning: no %s %s listener on port %u: the guest's %s traffic "
                    "redirected there is refused (add e.g. %s:%u)\n",
                    fams[f].name, what, port, fams[f].name, fams[f].wild, port);
        else if (!reachable)
            fprintf(err,
                    "moat nft: warning: the %s %s listener on port %u is on loopback only; a "
                    "redirect from %s arrives at %s's own address: listen on it or on %s:%u\n",
                    fams[f].name, what, port, iface, iface, fams[f].wild, port);
    }
}

/* The ports the ruleset redirects to. */
typedef struct nft_ports {
    uint16_t tport; /* the first proxy.transparent listener's */
    uint16_t dport; /* the first dns.listen listener's; 0: no DNS listener */
    bool have_dns;
} nft_ports_t;

/* Whether a ruleset can be made for cfg and iface: MOAT_EXIT_OK with *ports
 * set (warnings on err), or MOAT_EXIT_CONFIG with the reason on err. */
static int nft_check(const cfg_t *cfg, const char *iface, nft_ports_t *ports, FILE *err)
{
    if (!nft_iface_ok(iface)) {
        fprintf(err, "moat nft: bad interface name '%s': 1 to %d characters of A-Z a-z 0-9 _ . -\n",
                iface ? iface : "", NFT_IFACE_MAX);
        return MOAT_EXIT_CONFIG;
    }
    if (cfg->proxy.transparent.n == 0) {
        fprintf(err,
                "moat nft: %s has no proxy.transparent listener: the ruleset redirects the "
                "guest's TCP to it (add e.g. proxy: {transparent: [\"0.0.0.0:15001\", "
                "\"[::]:15001\"]})\n",
                cfg->path ? cfg->path : "config");
        return MOAT_EXIT_CONFIG;
    }
    ports->tport = nft_port(&cfg->proxy.transparent.items[0]);
    ports->have_dns = cfg->dns.listen.n > 0;
    ports->dport = ports->have_dns ? nft_port(&cfg->dns.listen.items[0]) : 0;

    nft_warn_reach(&cfg->proxy.transparent, "transparent", ports->tport, iface, err);
    if (ports->have_dns)
        nft_warn_reach(&cfg->dns.listen, "DNS", ports->dport, iface, err);
    else
        fprintf(err, "moat nft: warning: dns.listen is empty: the guest's DNS is dropped\n");
    return MOAT_EXIT_OK;
}

/* The comment that opens the file, and the replace-the-table preamble. */
static void nft_print_header(const cfg_t *cfg, const char *iface, const nft_ports_t *ports,
                             FILE *out)
{
    const char *t = iface; /* the table is moat_<iface>: nft_iface_ok keeps it an identifier */
    fprintf(out,
            "#!/usr/sbin/nft -f\n"
            "# moat in front of the guest behind interface \"%s\", generated by\n"
            "# `moat nft %s --iface %s`. Apply with `nft -f FILE`; applying it again\n"
            "# replaces the table, and `nft delete table inet moat_%s` removes it.\n"
            "# Nothing outside table inet moat_%s is touched.\n"
            "#   guest DNS (udp/tcp 53, any address) -> moat dns port %u\n"
            "#   guest TCP (any other)               -> moat transparent port %u\n"
            "#   anything else from the guest to this host: dropped\n"
            "#   anything from the guest forwarded past this host (QUIC, other UDP): dropped\n"
            "\n"
            "table inet moat_%s {}\n"
            "delete table inet moat_%s\n"
            "\n"
            "table inet moat_%s {\n",
            iface, cfg->path ? cfg->path : "FILE", iface, t, t, ports->dport, ports->tport, t, t,
            t);
}

/* The nat chain: the guest's DNS and TCP redirected to moat. */
static void nft_print_prerouting(const char *iface, const nft_ports_t *ports, FILE *out)
{
    fprintf(out, "\tchain prerouting {\n"
                 "\t\ttype nat hook prerouting priority -100; policy accept;\n");
    if (ports->have_dns)
        fprintf(out,
                "\t\t# DNS first, so TCP port 53 reaches moat's DNS and not the proxy; any\n"
                "\t\t# destination, so a guest with a hard-coded resolver gets moat too.\n"
                "\t\tiifname \"%s\" udp dport 53 counter redirect to :%u\n"
                "\t\tiifname \"%s\" tcp dport 53 counter redirect to :%u\n",
                iface, ports->dport, iface, ports->dport);
    fprintf(out,
            "\t\t# every other TCP connection: moat reads the original destination\n"
            "\t\t# with SO_ORIGINAL_DST\n"
            "\t\tiifname \"%s\" meta l4proto tcp counter redirect to :%u\n"
            "\t}\n\n",
            iface, ports->tport);
}

/* The input chain and the guest's own: only moat's ports are open to it. */
static void nft_print_input(const char *iface, const nft_ports_t *ports, FILE *out)
{
    fprintf(out,
            "\tchain input {\n"
            "\t\ttype filter hook input priority 0; policy accept;\n"
            "\t\t# only the guest's packets; the host's own traffic is not ours to judge\n"
            "\t\tiifname \"%s\" jump guest_input\n"
            "\t}\n\n",
            iface);

    fprintf(out, "\t# the guest's input policy: drop unless accepted here\n"
                 "\tchain guest_input {\n"
                 "\t\tct state established,related accept\n"
                 "\t\tct state invalid drop\n"
                 "\t\t# neighbour discovery (the IPv6 ARP), echo, path MTU\n"
                 "\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, "
                 "echo-request, packet-too-big, destination-unreachable, time-exceeded, "
                 "parameter-problem } accept\n"
                 "\t\ticmp type { echo-request, destination-unreachable, time-exceeded, "
                 "parameter-problem } accept\n");
    if (ports->have_dns)
        fprintf(out,
                "\t\t# moat's DNS (the redirect above has already rewritten the port)\n"
                "\t\tudp dport %u accept\n"
                "\t\ttcp dport %u accept\n",
                ports->dport, ports->dport);
    fprintf(out,
            "\t\t# moat's transparent listener\n"
            "\t\ttcp dport %u accept\n"
            "\t\tcounter drop\n"
            "\t}\n\n",
            ports->tport);
}

/* The forward chain, and the end of the table. */
static void nft_print_forward(const char *iface, FILE *out)
{
    fprintf(out,
            "\tchain forward {\n"
            "\t\ttype filter hook forward priority 0; policy accept;\n"
            "\t\t# nothing from the guest is routed past this host: TCP goes through\n"
            "\t\t# moat, and UDP (QUIC) and every other protocol never leaves\n"
            "\t\tiifname \"%s\" counter drop\n"
            "\t}\n"
            "}\n",
            iface);
}

int nft_print(const cfg_t *cfg, const char *iface, FILE *out, FILE *err)
{
    nft_ports_t ports;
    int rc = nft_check(cfg, iface, &ports, err);
    if (rc != MOAT_EXIT_OK)
        return rc;
    nft_print_header(cfg, iface, &ports, out);
    nft_print_prerouting(iface, &ports, out);
    nft_print_input(iface, &ports, out);
    nft_print_forward(iface, out);
    return ferror(out) ? MOAT_EXIT_RUNTIME : MOAT_EXIT_OK;
}

int nft_main(const char *path, const char *iface, FILE *out, FILE *err)
{
    /* Check the name before the file, so a bad name is reported whatever the
     * file says. */
    if (!nft_iface_ok(iface))
        return nft_print(NULL, iface, out, err);
    moat_gen_t *gen;
    if (cli_load_config(path, &gen, err) != 0)
        return MOAT_EXIT_CONFIG;
    int rc = nft_print(gen->cfg, iface, out, err);
    moat_gen_unref(gen);
    return rc;
}
