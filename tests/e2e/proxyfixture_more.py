"""More backends for test_proxy_more.py (standard library only, plus the
nginx, nft and ip binaries), next to proxyfixture.py's: IPv6, private,
link-local and "never answers" addresses in the test's network namespace, an
nginx serving them (and a large file), an echo server, and nftables rules
(an ip6 REDIRECT for the transparent listener, a SYN-dropping blackhole).

Everything lives in the namespace the test script re-executes itself in
(proxyfixture.reexec_in_netns), so nothing here touches the host."""
import hashlib
import os
import subprocess
import time

import proxyfixture as pf

# IPv6 backends. fd00::/8 is inside fc00::/7, private space (SPEC §2.4):
# a name resolving only there is refused with filtering on, so the ordinary
# v6 backend is in 2001:db8::/32, which §2.4 names as an ordinary test
# destination (the namespace keeps it off any real network). nginx on SIX
# and PRIV6; OTHER6 has no listener (a transparent guest aims at it);
# GUEST6 is the v6 "guest".
SIX = "2001:db8::2"
OTHER6 = "2001:db8::3"
GUEST6 = "2001:db8::5"
PRIV6 = "fd00::2"
# IPv4 extras: an RFC 1918 backend, the metadata address, an address whose
# SYNs are dropped (never answers), one with no listener (RST), an echo
# server, a bulk-download nginx.
PRIV = "10.0.0.2"
META = "169.254.169.254"
BLACK = "198.18.5.1"
BLACK_NET = "198.18.5.0/24"
CLOSED = "198.18.0.9"
ECHO = "198.18.0.6"
BIG = "198.18.0.7"
ECHO_PORT6 = 2222

BIG_SIZE = 32 << 20
BIG_DATA = os.urandom(BIG_SIZE)
BIG_SHA = hashlib.sha256(BIG_DATA).hexdigest()


def setup_netns_more():
    """proxyfixture's addresses plus ours (on lo: reachable from the
    namespace only)."""
    pf.setup_netns()
    for a in (PRIV, META, BLACK, CLOSED, ECHO, BIG):
        subprocess.run(["ip", "addr", "replace", a + "/32", "dev", "lo"], check=True, timeout=10)
    for a in (SIX, OTHER6, GUEST6, PRIV6):
        subprocess.run(["ip", "-6", "addr", "replace", a + "/128", "dev", "lo", "nodad"],
                       check=True, timeout=10)


class NginxMore(pf.NginxServer):
    """nginx: TLS six.test on [SIX]:443 ("server-six"), HTTP on [SIX]:80
    ("http-six"); TLS and HTTP on PRIV ("server-priv", "http-priv"); TLS on
    [PRIV6]:443 ("server-priv6"); HTTP on
    META:80 ("meta"); HTTP on BIG:80 serving /big (BIG_DATA)."""

    def __init__(self, tmpdir, cert, key):
        d = os.path.join(tmpdir, "nginx-more")
        pages = {"six": "server-six\n", "six_h": "http-six\n", "priv": "server-priv\n",
                 "priv_h": "http-priv\n", "meta": "meta\n", "priv6": "server-priv6\n"}
        pages = {site + "/index.html": text for site, text in pages.items()}
        pages["big/big"] = BIG_DATA
        servers = (
            "  server {{ listen [{six}]:443 ssl; root {d}/six; }}\n"
            "  server {{ listen [{six}]:80; root {d}/six_h; }}\n"
            "  server {{ listen {priv}:443 ssl; root {d}/priv; }}\n"
            "  server {{ listen {priv}:80; root {d}/priv_h; }}\n"
            "  server {{ listen [{priv6}]:443 ssl; root {d}/priv6; }}\n"
            "  server {{ listen {meta}:80; root {d}/meta; }}\n"
            "  server {{ listen {big}:80; root {d}/big; }}\n"
        ).format(d=d, six=SIX, priv6=PRIV6, priv=PRIV, meta=META, big=BIG)
        super().__init__(d, cert, key, pages=pages, servers=servers,
                         probes=[(SIX, 443), (BIG, 80), (META, 80)], workers=2,
                         extra="  send_timeout 60s;\n  sendfile on;\n")


class EchoServer(pf.TcpServer):
    """On (addr, port): with http=True first read a request head and answer
    `ready\\n`; then echo every byte back until EOF, then close. Records when
    each connection ended (`closed`: list of monotonic times)."""

    def __init__(self, addr, port, http=False):
        self.http = http
        self.closed = []
        self.conns = []
        super().__init__(addr, port)

    def accepted(self, c):
        self.conns.append(c)

    def _serve(self, c):
        try:
            c.settimeout(30)
            rest = b""
            if self.http:
                got = pf.read_head(c)
                if got is None:
                    return
                rest = got[1]
                c.sendall(b"ready\n")
            if rest:
                c.sendall(rest)
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        finally:
            self.closed.append(time.monotonic())
            c.close()

    def stop(self):
        super().stop()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def nft(*args):
    subprocess.run(["nft", *args], check=True, capture_output=True, timeout=10)


class Nft6:
    """nftables ip6 NAT: TCP from GUEST6 to the given ports is REDIRECTed
    to [::1]:to_port (IP6T_SO_ORIGINAL_DST keeps the original destination)."""

    def __init__(self, ports, to_port):
        self.table = "moat_e2e6"
        nft("add", "table", "ip6", self.table)
        nft("add", "chain", "ip6", self.table, "out", "{ type nat hook output priority -100; }")
        nft("add", "rule", "ip6", self.table, "out", "ip6", "saddr", GUEST6, "tcp", "dport",
            "{ %s }" % ", ".join(str(p) for p in ports), "redirect", "to", ":%d" % to_port)

    def stop(self):
        subprocess.run(["nft", "delete", "table", "ip6", self.table], capture_output=True,
                       timeout=10)


class Blackhole:
    """SYNs to BLACK_NET are dropped on input: a connect() there is never
    answered (neither SYN-ACK nor RST), as with a filtered remote host."""

    def __init__(self):
        self.table = "moat_e2e_bh"
        nft("add", "table", "ip", self.table)
        nft("add", "chain", "ip", self.table, "in", "{ type filter hook input priority 0; }")
        nft("add", "rule", "ip", self.table, "in", "ip", "daddr", BLACK_NET, "tcp", "flags",
            "syn", "drop")

    def stop(self):
        subprocess.run(["nft", "delete", "table", "ip", self.table], capture_output=True,
                       timeout=10)
