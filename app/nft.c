/* app/nft.c: `moat nft FILE --iface NAME... [--host-port PORT...]`, the
 * nftables ruleset for the guests behind one or more interfaces (see nft.h). */
#include "app/nft.h"

#include <arpa/inet.h>
#include <errno.h>
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

int nft_target_add_iface(nft_target_t *t, const char *name, FILE *err)
{
    for (size_t i = 0; i < t->n_ifaces; i++) {
        if (strcmp(t->ifaces[i], name) == 0) {
            fprintf(err, "moat nft: interface '%s' given twice\n", name);
            return -EEXIST;
        }
    }
    if (t->n_ifaces == NFT_IFACES_MAX) {
        fprintf(err, "moat nft: more than %d --iface options\n", NFT_IFACES_MAX);
        return -E2BIG;
    }
    t->ifaces[t->n_ifaces++] = name;
    return 0;
}

/* "PORT", "PORT/tcp" or "PORT/udp" into *hp: 0 or -EINVAL. */
static int nft_parse_host_port(const char *text, nft_host_port_t *hp)
{
    hp->port = 0;
    hp->udp = false;
    unsigned long v = 0;
    size_t i = 0;
    for (; text[i] >= '0' && text[i] <= '9' && i < 5; i++)
        v = v * 10 + (unsigned long)(text[i] - '0');
    if (i == 0 || v == 0 || v > 65535)
        return -EINVAL;
    if (strcmp(text + i, "/udp") == 0)
        hp->udp = true;
    else if (text[i] != '\0' && strcmp(text + i, "/tcp") != 0)
        return -EINVAL;
    hp->port = (uint16_t)v;
    return 0;
}

int nft_target_add_host_port(nft_target_t *t, const char *text, FILE *err)
{
    nft_host_port_t hp;
    if (nft_parse_host_port(text, &hp) != 0) {
        fprintf(err, "moat nft: bad host port '%s': PORT (TCP) or PORT/udp, PORT 1 to 65535\n",
                text);
        return -EINVAL;
    }
    if (hp.port == 53) {
        fprintf(err,
                "moat nft: --host-port %s: port 53 is the guests' DNS, which goes to "
                "moat's dns.listen\n",
                text);
        return -EINVAL;
    }
    for (size_t i = 0; i < t->n_host_ports; i++) {
        if (t->host_ports[i].port == hp.port && t->host_ports[i].udp == hp.udp) {
            fprintf(err, "moat nft: host port %u/%s given twice\n", hp.port,
                    hp.udp ? "udp" : "tcp");
            return -EEXIST;
        }
    }
    if (t->n_host_ports == NFT_HOST_PORTS_MAX) {
        fprintf(err, "moat nft: more than %d --host-port options\n", NFT_HOST_PORTS_MAX);
        return -E2BIG;
    }
    t->host_ports[t->n_host_ports++] = hp;
    return 0;
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

/* What the ruleset and its messages call the guests' interfaces, and the
 * ports it redirects to. */
typedef struct nft_ruleset {
    const cfg_t *cfg;
    const nft_target_t *t;
    char table[sizeof "moat_" + NFT_IFACE_MAX]; /* moat_<iface>, or moat for several */
    char iif[NFT_IFACE_MAX + 3];                /* "<iface>" (quoted), or @guests */
    char from[32];                              /* the warnings' words for the interface */
    char at[32];                                /* and for its own address's owner */
    uint16_t tport;                             /* the first proxy.transparent listener's */
    uint16_t dport; /* the first dns.listen listener's; 0: no DNS listener */
    bool have_dns;
} nft_ruleset_t;

/* A REDIRECT in prerouting sends the packet to the incoming interface's own
 * address: a listener only on loopback (or only on the other family) never
 * sees it. Warn, do not fail: the operator may add the listener later. */
static void nft_warn_reach(const nft_ruleset_t *r, const cfg_addr_list_t *l, const char *what,
                           uint16_t port, FILE *err)
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
                    "redirect from %s arrives at %s own address: listen on it or on %s:%u\n",
                    fams[f].name, what, port, r->from, r->at, fams[f].wild, port);
    }
}

/* Whether every interface name in t is usable: MOAT_EXIT_OK, or
 * MOAT_EXIT_CONFIG with the reason on err. */
static int nft_check_ifaces(const nft_target_t *t, FILE *err)
{
    if (t->n_ifaces == 0) {
        fprintf(err, "moat nft: no --iface: name the interface of at least one guest\n");
        return MOAT_EXIT_CONFIG;
    }
    for (size_t i = 0; i < t->n_ifaces; i++) {
        if (!nft_iface_ok(t->ifaces[i])) {
            fprintf(err,
                    "moat nft: bad interface name '%s': 1 to %d characters of A-Z a-z 0-9 _ . -\n",
                    t->ifaces[i] ? t->ifaces[i] : "", NFT_IFACE_MAX);
            return MOAT_EXIT_CONFIG;
        }
    }
    return MOAT_EXIT_OK;
}

/* The names of the table and of the interfaces in rules and warnings: one
 * interface by its name, several by the set that holds them. */
static void nft_names(nft_ruleset_t *r)
{
    const nft_target_t *t = r->t;
    if (t->n_ifaces == 1) {
        snprintf(r->table, sizeof r->table, "moat_%s", t->ifaces[0]);
        snprintf(r->iif, sizeof r->iif, "\"%s\"", t->ifaces[0]);
        snprintf(r->from, sizeof r->from, "%s", t->ifaces[0]);
        snprintf(r->at, sizeof r->at, "%s's", t->ifaces[0]);
    } else {
        snprintf(r->table, sizeof r->table, "moat");
        snprintf(r->iif, sizeof r->iif, "@guests");
        snprintf(r->from, sizeof r->from, "a guest's interface");
        snprintf(r->at, sizeof r->at, "that interface's");
    }
}

/* Whether a ruleset can be made for cfg and t: MOAT_EXIT_OK with *r set
 * (warnings on err), or MOAT_EXIT_CONFIG with the reason on err. */
static int nft_check(const cfg_t *cfg, const nft_target_t *t, nft_ruleset_t *r, FILE *err)
{
    memset(r, 0, sizeof *r);
    int rc = nft_check_ifaces(t, err);
    if (rc != MOAT_EXIT_OK)
        return rc;
    if (cfg->proxy.transparent.n == 0) {
        fprintf(err,
                "moat nft: %s has no proxy.transparent listener: the ruleset redirects the "
                "guest's TCP to it (add e.g. proxy: {transparent: [\"0.0.0.0:15001\", "
                "\"[::]:15001\"]})\n",
                cfg->path ? cfg->path : "config");
        return MOAT_EXIT_CONFIG;
    }
    r->cfg = cfg;
    r->t = t;
    nft_names(r);
    r->tport = nft_port(&cfg->proxy.transparent.items[0]);
    r->have_dns = cfg->dns.listen.n > 0;
    r->dport = r->have_dns ? nft_port(&cfg->dns.listen.items[0]) : 0;

    nft_warn_reach(r, &cfg->proxy.transparent, "transparent", r->tport, err);
    if (r->have_dns)
        nft_warn_reach(r, &cfg->dns.listen, "DNS", r->dport, err);
    else
        fprintf(err, "moat nft: warning: dns.listen is empty: the guest's DNS is dropped\n");
    return MOAT_EXIT_OK;
}

/* How many of t's host ports are UDP (udp) or TCP (!udp). */
static size_t nft_count_ports(const nft_target_t *t, bool udp)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n_host_ports; i++)
        if (t->host_ports[i].udp == udp)
            n++;
    return n;
}

/* t's host ports of one protocol as an nftables value: "8080", or an
 * anonymous set "{ 8080, 8443 }". */
static void nft_print_ports(const nft_target_t *t, bool udp, FILE *out)
{
    bool set = nft_count_ports(t, udp) > 1;
    const char *sep = set ? "{ " : "";
    for (size_t i = 0; i < t->n_host_ports; i++) {
        if (t->host_ports[i].udp != udp)
            continue;
        fprintf(out, "%s%u", sep, t->host_ports[i].port);
        sep = ", ";
    }
    if (set)
        fprintf(out, " }");
}

/* The command that makes this ruleset, as the header quotes it. */
static void nft_print_command(const nft_ruleset_t *r, FILE *out)
{
    const nft_target_t *t = r->t;
    fprintf(out, "`moat nft %s", r->cfg->path ? r->cfg->path : "FILE");
    for (size_t i = 0; i < t->n_ifaces; i++)
        fprintf(out, " --iface %s", t->ifaces[i]);
    for (size_t i = 0; i < t->n_host_ports; i++)
        fprintf(out, " --host-port %u%s", t->host_ports[i].port,
                t->host_ports[i].udp ? "/udp" : "");
    fprintf(out, "`");
}

/* The comment that opens the file. */
static void nft_print_comment(const nft_ruleset_t *r, FILE *out)
{
    const nft_target_t *t = r->t;
    if (t->n_ifaces == 1)
        fprintf(out, "# moat in front of the guest behind interface \"%s\", generated by\n# ",
                t->ifaces[0]);
    else
        fprintf(out, "# moat in front of the guests behind %zu interfaces, generated by\n# ",
                t->n_ifaces);
    nft_print_command(r, out);
    bool one_line = t->n_ifaces == 1 && t->n_host_ports == 0;
    fprintf(out,
            ".%sApply with `nft -f FILE`; applying it again\n"
            "# replaces the table, and `nft delete table inet %s` removes it.\n"
            "# Nothing outside table inet %s is touched.\n",
            one_line ? " " : "\n# ", r->table, r->table);
    if (t->n_ifaces > 1)
        fprintf(out, "# The interfaces are the set @guests: `nft add element inet moat guests\n"
                     "# { \"NAME\" }` adds one until the ruleset is applied again.\n");
    fprintf(out,
            "#   guest DNS (udp/tcp 53, any address) -> moat dns port %u\n"
            "#   guest TCP (any other)               -> moat transparent port %u\n",
            r->dport, r->tport);
    if (t->n_host_ports > 0) {
        fprintf(out, "#   guest to this host's");
        for (size_t i = 0; i < t->n_host_ports; i++)
            fprintf(out, "%s %s %u", i ? "," : "", t->host_ports[i].udp ? "udp" : "tcp",
                    t->host_ports[i].port);
        fprintf(out, ": accepted (--host-port)\n");
    }
    fprintf(out, "#   anything else from the guest to this host: dropped\n"
                 "#   anything from the guest forwarded past this host (QUIC, other UDP): "
                 "dropped\n\n");
}

/* The file's header: the comment, the replace-the-table preamble and, for
 * several interfaces, the set that names them. */
static void nft_print_header(const nft_ruleset_t *r, FILE *out)
{
    const char *t = r->table; /* nft_iface_ok keeps it an identifier */
    fprintf(out, "#!/usr/sbin/nft -f\n");
    nft_print_comment(r, out);
    fprintf(out,
            "table inet %s {}\n"
            "delete table inet %s\n"
            "\n"
            "table inet %s {\n",
            t, t, t);
    if (r->t->n_ifaces == 1)
        return;
    fprintf(out, "\t# the guests' interfaces\n"
                 "\tset guests {\n"
                 "\t\ttype ifname\n"
                 "\t\telements = { ");
    for (size_t i = 0; i < r->t->n_ifaces; i++)
        fprintf(out, "%s\"%s\"", i ? ", " : "", r->t->ifaces[i]);
    fprintf(out, " }\n"
                 "\t}\n\n");
}

/* The nat chain: the guest's DNS and TCP redirected to moat, but for the
 * host ports. */
static void nft_print_prerouting(const nft_ruleset_t *r, FILE *out)
{
    const char *iif = r->iif;
    fprintf(out, "\tchain prerouting {\n"
                 "\t\ttype nat hook prerouting priority -100; policy accept;\n");
    if (r->have_dns)
        fprintf(out,
                "\t\t# DNS first, so TCP port 53 reaches moat's DNS and not the proxy; any\n"
                "\t\t# destination, so a guest with a hard-coded resolver gets moat too.\n"
                "\t\tiifname %s udp dport 53 counter redirect to :%u\n"
                "\t\tiifname %s tcp dport 53 counter redirect to :%u\n",
                iif, r->dport, iif, r->dport);
    if (nft_count_ports(r->t, false) > 0) {
        fprintf(out,
                "\t\t# this host's services opened to the guests (--host-port), on this\n"
                "\t\t# host's own addresses only: not redirected\n"
                "\t\tiifname %s fib daddr type local tcp dport ",
                iif);
        nft_print_ports(r->t, false, out);
        fprintf(out, " accept\n");
    }
    fprintf(out,
            "\t\t# every other TCP connection: moat reads the original destination\n"
            "\t\t# with SO_ORIGINAL_DST\n"
            "\t\tiifname %s meta l4proto tcp counter redirect to :%u\n"
            "\t}\n\n",
            iif, r->tport);
}

/* The guest's input chain's rules for the --host-port ports. */
static void nft_print_host_ports(const nft_target_t *t, FILE *out)
{
    if (t->n_host_ports == 0)
        return;
    fprintf(out, "\t\t# this host's services opened to the guests (--host-port)\n");
    for (int i = 0; i < 2; i++) {
        bool udp = i == 1;
        if (nft_count_ports(t, udp) == 0)
            continue;
        fprintf(out, "\t\t%s dport ", udp ? "udp" : "tcp");
        nft_print_ports(t, udp, out);
        fprintf(out, " accept\n");
    }
}

/* The input chain and the guest's own: only moat's ports and the host
 * ports are open to it. */
static void nft_print_input(const nft_ruleset_t *r, FILE *out)
{
    fprintf(out,
            "\tchain input {\n"
            "\t\ttype filter hook input priority 0; policy accept;\n"
            "\t\t# only the guest's packets; the host's own traffic is not ours to judge\n"
            "\t\tiifname %s jump guest_input\n"
            "\t}\n\n",
            r->iif);

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
    if (r->have_dns)
        fprintf(out,
                "\t\t# moat's DNS (the redirect above has already rewritten the port)\n"
                "\t\tudp dport %u accept\n"
                "\t\ttcp dport %u accept\n",
                r->dport, r->dport);
    fprintf(out,
            "\t\t# moat's transparent listener\n"
            "\t\ttcp dport %u accept\n",
            r->tport);
    nft_print_host_ports(r->t, out);
    fprintf(out, "\t\tcounter drop\n"
                 "\t}\n\n");
}

/* The forward chain, and the end of the table. */
static void nft_print_forward(const nft_ruleset_t *r, FILE *out)
{
    fprintf(out,
            "\tchain forward {\n"
            "\t\ttype filter hook forward priority 0; policy accept;\n"
            "\t\t# nothing from the guest is routed past this host: TCP goes through\n"
            "\t\t# moat, and UDP (QUIC) and every other protocol never leaves\n"
            "\t\tiifname %s counter drop\n"
            "\t}\n"
            "}\n",
            r->iif);
}

int nft_print(const cfg_t *cfg, const nft_target_t *t, FILE *out, FILE *err)
{
    nft_ruleset_t r;
    int rc = nft_check(cfg, t, &r, err);
    if (rc != MOAT_EXIT_OK)
        return rc;
    nft_print_header(&r, out);
    nft_print_prerouting(&r, out);
    nft_print_input(&r, out);
    nft_print_forward(&r, out);
    return ferror(out) ? MOAT_EXIT_RUNTIME : MOAT_EXIT_OK;
}

int nft_main(const char *path, const nft_target_t *t, FILE *out, FILE *err)
{
    /* Check the names before the file, so a bad name is reported whatever
     * the file says. */
    int rc = nft_check_ifaces(t, err);
    if (rc != MOAT_EXIT_OK)
        return rc;
    moat_gen_t *gen;
    if (cli_load_config(path, &gen, err) != 0)
        return MOAT_EXIT_CONFIG;
    rc = nft_print(gen->cfg, t, out, err);
    moat_gen_unref(gen);
    return rc;
}
