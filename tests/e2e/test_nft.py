"""End-to-end: `moat nft FILE --iface NAME... [--host-port PORT[/udp]...]`
(SPEC §5), the nftables ruleset for the guests behind one or more
interfaces. The ruleset is checked by nft itself (`nft -c`, and applied twice
in a throw-away network namespace), and applied for two guests in network
namespaces the test builds (NftGuestsTest), which needs root; the rest runs
as any user. examples/tap (test_examples.py) uses it for real."""
import json
import os
import shutil
import subprocess
import sys
import unittest

from moatlib import Moat, TempDir, run_moat, write_config

GOOD = """\
dns:
  listen: ["0.0.0.0:5300", "[::]:5300"]
  upstream: ["198.18.3.53:53"]
proxy:
  transparent: ["0.0.0.0:15001", "[::]:15001", "0.0.0.0:15002"]
  tls: []
  http: []
allow: [allowed.test]
"""

NFT = shutil.which("nft") or ("/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None)
ROOT_SKIP = None
if os.geteuid() != 0:
    ROOT_SKIP = "needs root (nft -c and a network namespace)"
elif not NFT or not shutil.which("unshare"):
    ROOT_SKIP = "needs nft(8) and unshare(1)"
IP = shutil.which("ip") or ("/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else None)
GUESTS_SKIP = ROOT_SKIP or (None if IP else "needs ip(8)")

# NftGuestsTest: moat and the host's services in namespace "host", two guests
# behind the interfaces gst-a and gst-b (veths), each on its own /24.
GUESTS = [("gst-a", "198.18.61.1", "198.18.61.2"), ("gst-b", "198.18.62.1", "198.18.62.2")]
FAR_WEB, FAR_DNS = "198.18.63.10", "198.18.63.53"  # routed to the host, which has no route on
OPEN_TCP, OPEN_UDP = 8080, 8125  # given as --host-port
SHUT_TCP, SHUT_UDP = 9090, 8126  # listening on the host too, but not given

GUEST_CONFIG = """\
dns:
  listen: ["0.0.0.0:5300"]
  upstream: ["%s:53"]
proxy:
  transparent: ["0.0.0.0:15001"]
  tls: []
  http: []
shutdown_grace: 1s
allow: [allowed.test]
""" % FAR_DNS

# The host's services: TCP and UDP listeners on every address that answer
# "host-PORT" and print "tcp|udp PORT from ADDR" per connection or datagram,
# after "ready", until killed or argv[1] seconds have passed.
HOST_SERVICES = r"""
import select, socket, sys, time
socks = {}
for kind, port in [("tcp", int(p)) for p in sys.argv[2].split(",")] + \
                  [("udp", int(p)) for p in sys.argv[3].split(",")]:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    if kind == "tcp":
        s.listen(16)
    socks[s] = (kind, port)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while end > time.monotonic():
    for s in select.select(list(socks), [], [], end - time.monotonic())[0]:
        kind, port = socks[s]
        if kind == "tcp":
            c, a = s.accept()
            c.sendall(b"host-%d\n" % port)
            c.close()
        else:
            d, a = s.recvfrom(2048)
            s.sendto(b"host-%d\n" % port, a)
        print("%s %d from %s" % (kind, port, a[0]), flush=True)
"""

# From a guest: argv[1] its gateway (the host), argv[2..] the far web and DNS
# addresses and the four ports. Prints one JSON object of what it got back;
# every wait is bounded.
GUEST_PROBE = r"""
import json, socket, struct, sys
gw, web, dns = sys.argv[1:4]
open_tcp, open_udp, shut_tcp, shut_udp = map(int, sys.argv[4:8])
QUERY = struct.pack(">6H", 0x4d6f, 0x0100, 1, 0, 0, 0) + b"\x07blocked\x04test\x00" + \
        struct.pack(">2H", 1, 1)

def sinkholed(resp):
    # the answer to QUERY, NOERROR, with an A record 0.0.0.0 last
    if len(resp) < 12:
        return False
    qid, flags, _, an = struct.unpack(">4H", resp[:8])
    return qid == 0x4d6f and flags & 0x800f == 0x8000 and an >= 1 and resp[-4:] == bytes(4)

def udp(port, data, timeout=3.0, addr=gw):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(data, (addr, port))
            return s.recv(4096)
        except OSError as e:
            return ("error: %r" % e).encode()

def tcp(addr, port, data=b"", timeout=3.0):
    # what the server sent until it closed (or went quiet for timeout)
    out = b""
    try:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            s.sendall(data)
            while True:
                d = s.recv(4096)
                if not d:
                    break
                out += d
    except socket.timeout:
        pass
    except OSError as e:
        out += ("error: %r" % e).encode()
    return out

dns_tcp = tcp(dns, 53, struct.pack(">H", len(QUERY)) + QUERY, timeout=2.0)
print(json.dumps({
    "dns_udp": sinkholed(udp(53, QUERY)),
    "dns_udp_far": sinkholed(udp(53, QUERY, addr=dns)),
    "dns_tcp_far": sinkholed(dns_tcp[2:]),
    "web": tcp(web, 80, b"GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n").decode("latin-1"),
    "open_tcp": tcp(gw, open_tcp).decode("latin-1"),
    "open_udp": udp(open_udp, b"ping").decode("latin-1"),
    "shut_tcp": tcp(gw, shut_tcp, timeout=2.0).decode("latin-1"),
    "shut_udp": udp(shut_udp, b"ping", timeout=1.5).decode("latin-1"),
}))
"""


def chain(out, name):
    """The body of chain name in the ruleset out."""
    return out.split("chain %s {" % name, 1)[1].split("\n\t}", 1)[0]


class NftTest(unittest.TestCase):
    def setUp(self):
        self._tmp = TempDir()
        self.dir = self._tmp.__enter__()
        self.good = write_config(self.dir, GOOD)

    def tearDown(self):
        self._tmp.__exit__(None, None, None)

    def nft(self, *args):
        return run_moat("nft", *args)

    def test_ruleset_shape(self):
        r = self.nft(self.good, "--iface", "tap0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        out = r.stdout
        # its own table, replaced as a whole on every apply
        self.assertIn("table inet moat_tap0 {}\ndelete table inet moat_tap0\n", out)
        self.assertIn('iifname "tap0" udp dport 53 counter redirect to :5300', out)
        self.assertIn('iifname "tap0" tcp dport 53 counter redirect to :5300', out)
        # the FIRST transparent listener's port
        self.assertIn('iifname "tap0" meta l4proto tcp counter redirect to :15001', out)
        self.assertNotIn("15002", out)
        # DNS redirected before the catch-all TCP redirect
        self.assertLess(out.index("tcp dport 53"), out.index("meta l4proto tcp counter redirect"))
        self.assertIn('iifname "tap0" jump guest_input', out)
        self.assertIn("tcp dport 15001 accept", out)
        self.assertIn("udp dport 5300 accept", out)
        self.assertIn("nd-neighbor-solicit", out)
        self.assertIn("packet-too-big", out)
        self.assertIn('iifname "tap0" counter drop', out)
        # the guest chain ends in drop; the base chains never drop the host's traffic
        guest = out.split("chain guest_input {", 1)[1].split("\n\t}", 1)[0]
        self.assertTrue(guest.strip().endswith("counter drop"), guest)
        self.assertNotIn("policy drop", out)

    def test_option_forms(self):
        a = self.nft(self.good, "--iface", "vm-1.tap").stdout
        b = self.nft("--iface=vm-1.tap", self.good).stdout
        self.assertEqual(a, b)
        self.assertIn("table inet moat_vm-1.tap", a)

    def test_bad_iface_exit_1(self):
        for name in ["", "a" * 16, "tap/0", "tap 0", "..", ".", 'ta"p', "tap;0", "täp"]:
            r = self.nft(self.good, "--iface", name)
            self.assertEqual(r.returncode, 1, name)
            self.assertIn("bad interface name", r.stderr, name)
            self.assertEqual(r.stdout, "", name)
        r = self.nft(self.good, "--iface", "a" * 15)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_no_transparent_listener_exit_1(self):
        path = write_config(self.dir, "dns: {listen: [\"0.0.0.0:53\"]}\nallow: []\n", "nt.yaml")
        r = self.nft(path, "--iface", "tap0")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no proxy.transparent listener", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_usage_and_bad_config_exit_1(self):
        for args in [[], [self.good], ["--iface", "tap0"], [self.good, "--iface"],
                     [self.good, "--iface", "a", "--iface", "a"], [self.good, "x", "--iface", "a"],
                     [self.good, "--host-port", "8080"], [self.good, "--iface", "a", "--host-port"]]:
            r = self.nft(*args)
            self.assertEqual(r.returncode, 1, args)
            self.assertIn("usage: moat nft FILE --iface NAME", r.stderr, args)
        bad = write_config(self.dir, "proxy: {transparnt: []}\n", "bad.yaml")
        r = self.nft(bad, "--iface", "tap0")
        self.assertEqual(r.returncode, 1)
        self.assertIn("bad.yaml:1:", r.stderr)
        r = self.nft(os.path.join(self.dir, "missing.yaml"), "--iface", "tap0")
        self.assertEqual(r.returncode, 1)

    def test_several_interfaces(self):
        r = self.nft(self.good, "--iface", "tap0", "--iface=tap1", "--iface", "vm-2.tap")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        out = r.stdout
        # one table for all of them, replaced as a whole; the names in a set
        self.assertIn("table inet moat {}\ndelete table inet moat\n", out)
        self.assertNotIn("moat_tap", out)
        self.assertIn('set guests {\n\t\ttype ifname\n'
                      '\t\telements = { "tap0", "tap1", "vm-2.tap" }\n\t}', out)
        self.assertIn("iifname @guests udp dport 53 counter redirect to :5300", out)
        self.assertIn("iifname @guests tcp dport 53 counter redirect to :5300", out)
        self.assertIn("iifname @guests meta l4proto tcp counter redirect to :15001", out)
        self.assertIn("iifname @guests jump guest_input", out)
        self.assertIn("iifname @guests counter drop", out)
        self.assertNotIn('iifname "', out)
        guest = chain(out, "guest_input")
        self.assertTrue(guest.strip().endswith("counter drop"), guest)
        self.assertNotIn("fib", out)  # no host port, nothing exempt from the redirect
        # the order of the options does not matter, but for the set's order
        same = self.nft("--iface", "tap0", "--iface", "tap1", self.good, "--iface", "vm-2.tap")
        self.assertEqual(same.stdout, out)

    def test_host_ports(self):
        r = self.nft(self.good, "--iface", "tap0", "--iface", "tap1", "--host-port", "8080",
                     "--host-port=8443/tcp", "--host-port", "123/udp")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        # TCP to this host's own addresses on a host port is not redirected ...
        pre = chain(out, "prerouting")
        exempt = "iifname @guests fib daddr type local tcp dport { 8080, 8443 } accept"
        self.assertIn(exempt, pre)
        self.assertLess(pre.index("tcp dport 53"), pre.index(exempt))
        self.assertLess(pre.index(exempt), pre.index("meta l4proto tcp counter redirect"))
        self.assertNotIn("123", pre)  # UDP is not redirected: nothing to exempt
        # ... and the guest's input chain accepts them, then drops the rest
        guest = chain(out, "guest_input")
        self.assertIn("tcp dport { 8080, 8443 } accept", guest)
        self.assertIn("udp dport 123 accept", guest)
        self.assertLess(guest.index("udp dport 123 accept"), guest.index("counter drop"))
        self.assertTrue(guest.strip().endswith("counter drop"), guest)
        self.assertNotIn("policy drop", out)
        self.assertIn("tcp 8080, tcp 8443, udp 123: accepted (--host-port)", out)
        # one interface: its own table and name, one port without a set
        one = self.nft(self.good, "--iface", "tap0", "--host-port", "8080").stdout
        self.assertIn("table inet moat_tap0 {}", one)
        self.assertIn('iifname "tap0" fib daddr type local tcp dport 8080 accept', one)
        self.assertIn("\t\ttcp dport 8080 accept\n\t\tcounter drop", one)
        self.assertNotIn("udp dport 8080", one)
        self.assertNotIn("set guests", one)

    def test_duplicates_and_bad_host_ports_refused(self):
        usage = "usage: moat nft FILE --iface NAME... [--host-port PORT[/udp]...]"
        cases = [
            (["--iface", "tap0", "--iface", "tap1", "--iface=tap0"], "interface 'tap0' given twice"),
            (["--iface", "tap0", "--host-port", "8080", "--host-port", "8080/tcp"],
             "host port 8080/tcp given twice"),
        ]
        for bad in ["0", "65536", "99999", "-1", "x", "80x", "80/sctp", "80/", "/udp", "80/UDP",
                    "", " 80", "1234567"]:
            cases.append((["--iface", "tap0", "--host-port", bad], "bad host port '%s'" % bad))
        cases.append((["--iface", "tap0", "--host-port", "53/udp"], "port 53 is the guests' DNS"))
        cases.append((["--iface", "tap0", "--host-port", "53"], "port 53 is the guests' DNS"))
        for args, why in cases:
            r = self.nft(self.good, *args)
            self.assertEqual(r.returncode, 1, args)
            self.assertIn(why, r.stderr, args)
            self.assertIn(usage, r.stderr, args)
            self.assertEqual(r.stdout, "", args)
        # the same port over UDP and over TCP are two host ports
        r = self.nft(self.good, "--iface", "tap0", "--host-port", "8080", "--host-port", "8080/udp",
                     "--host-port", "1", "--host-port", "65535")
        self.assertEqual(r.returncode, 0, r.stderr)
        # a bad name among several is refused like a single one
        r = self.nft(self.good, "--iface", "tap0", "--iface", "tap/1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("bad interface name 'tap/1'", r.stderr)
        self.assertEqual(r.stdout, "")

    def test_interface_count_bounded(self):
        many = lambda n: [a for i in range(n) for a in ("--iface", "t%d" % i)]
        r = self.nft(self.good, *many(64))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"t0", "t1"', r.stdout)
        self.assertIn('"t63" }', r.stdout)
        r = self.nft(self.good, *many(65))
        self.assertEqual(r.returncode, 1)
        self.assertIn("more than 64 --iface options", r.stderr)
        self.assertEqual(r.stdout, "")
        ports = [a for p in range(1000, 1065) for a in ("--host-port", str(p))]
        r = self.nft(self.good, "--iface", "tap0", *ports)
        self.assertEqual(r.returncode, 1)
        self.assertIn("more than 64 --host-port options", r.stderr)

    def test_warnings_for_unreachable_listeners(self):
        path = write_config(self.dir, "dns: {listen: []}\nproxy: {transparent: [\"127.0.0.1:15001\"]}\n",
                            "lo.yaml")
        r = self.nft(path, "--iface", "tap0")
        self.assertEqual(r.returncode, 0)
        self.assertIn("on loopback only", r.stderr)
        self.assertIn("no IPv6 transparent listener", r.stderr)
        self.assertIn("dns.listen is empty", r.stderr)
        self.assertNotIn("dport 53", r.stdout)

    @unittest.skipIf(ROOT_SKIP, ROOT_SKIP)
    def test_nft_accepts_it(self):
        for args in [["--iface", "tap0"], ["--iface", "vm-1.tap_X"],
                     ["--iface", "tap0", "--iface", "tap1", "--host-port", "8080",
                      "--host-port", "8443", "--host-port", "123/udp"],
                     ["--iface", "tap0", "--host-port", "8080", "--host-port", "5353/udp"]]:
            r = self.nft(self.good, *args)
            self.assertEqual(r.returncode, 0, r.stderr)
            out = r.stdout
            r = subprocess.run(["unshare", "--net", NFT, "-c", "-f", "-"], input=out, text=True,
                               capture_output=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
        nodns = write_config(self.dir, "dns: {listen: []}\nproxy: {transparent: [\"0.0.0.0:1\"]}\n",
                             "nodns.yaml")
        out = self.nft(nodns, "--iface", "tap0").stdout
        r = subprocess.run(["unshare", "--net", NFT, "-c", "-f", "-"], input=out, text=True,
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)

    @unittest.skipIf(ROOT_SKIP, ROOT_SKIP)
    def test_apply_twice_touches_only_its_table(self):
        """In a throw-away namespace: another table survives, applying twice
        leaves one copy of ours, and it deletes cleanly."""
        rules = os.path.join(self.dir, "r.nft")
        with open(rules, "w") as f:
            f.write(self.nft(self.good, "--iface", "tap0").stdout)
        script = ("set -e; {nft} add table inet other; {nft} -f {r}; {nft} -f {r}; "
                  "{nft} list tables; {nft} list table inet moat_tap0 | grep -c 'chain ' ; "
                  "{nft} delete table inet moat_tap0; echo after; {nft} list tables"
                  ).format(nft=NFT, r=rules)
        r = subprocess.run(["unshare", "--net", "sh", "-c", script], text=True,
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        before, after = r.stdout.split("after\n")
        self.assertIn("table inet other", before)
        self.assertIn("table inet moat_tap0", before)
        self.assertIn("\n4\n", "\n" + before)  # prerouting, input, guest_input, forward
        self.assertEqual(after.strip(), "table inet other")



@unittest.skipIf(GUESTS_SKIP, GUESTS_SKIP)
class NftGuestsTest(unittest.TestCase):
    """Two guests behind two interfaces, one ruleset from `moat nft --iface
    gst-a --iface gst-b --host-port 8080 --host-port 8125/udp` applied with
    `nft -f` on the host, moat running there: each guest reaches moat's DNS
    (at the gateway and at a resolver of its own choosing) and, through the
    redirect, its transparent listener, and the host's two open ports; not
    the host's other TCP and UDP ports, though they listen on every address
    and the host itself reaches them."""

    def sh(self, *args, ns=None, timeout=20):
        cmd = [IP, "netns", "exec", ns, *args] if ns else list(args)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        self.assertEqual(r.returncode, 0, "%s: %s" % (" ".join(cmd), r.stderr))
        return r.stdout

    def setUp(self):
        tag = "%d" % os.getpid()
        self.host = "moatnft-host-" + tag
        self.guests = ["moatnft-a-" + tag, "moatnft-b-" + tag]
        self._tmp = TempDir()
        self.dir = self._tmp.__enter__()
        self.addCleanup(self._tmp.__exit__, None, None, None)
        for ns in [self.host, *self.guests]:
            self.sh(IP, "netns", "add", ns)
            self.addCleanup(subprocess.run, [IP, "netns", "del", ns], capture_output=True,
                            timeout=20)
            self.sh(IP, "link", "set", "lo", "up", ns=ns)
        for ns, (iface, gw, addr) in zip(self.guests, GUESTS):
            self.sh(IP, "link", "add", iface, "netns", self.host, "type", "veth", "peer", "name",
                    "eth0", "netns", ns)
            self.sh(IP, "addr", "add", gw + "/24", "dev", iface, ns=self.host)
            self.sh(IP, "link", "set", iface, "up", ns=self.host)
            self.sh(IP, "addr", "add", addr + "/24", "dev", "eth0", ns=ns)
            self.sh(IP, "link", "set", "eth0", "up", ns=ns)
            self.sh(IP, "route", "add", "default", "via", gw, ns=ns)

        config = write_config(self.dir, GUEST_CONFIG)
        r = run_moat("nft", config, "--iface", "gst-a", "--iface", "gst-b", "--host-port",
                     str(OPEN_TCP), "--host-port", "%d/udp" % OPEN_UDP)
        self.assertEqual(r.returncode, 0, r.stderr)
        rules = os.path.join(self.dir, "ruleset.nft")
        with open(rules, "w") as f:
            f.write(r.stdout)
        self.sh(NFT, "-f", rules, ns=self.host)

        self.moat = Moat(config, wrapper=[IP, "netns", "exec", self.host])
        self.addCleanup(self.moat.kill)
        self.moat.wait_line("moat running", timeout=10)
        self.services = subprocess.Popen(
            [IP, "netns", "exec", self.host, sys.executable, "-c", HOST_SERVICES, "120",
             "%d,%d" % (OPEN_TCP, SHUT_TCP), "%d,%d" % (OPEN_UDP, SHUT_UDP)],
            stdout=subprocess.PIPE, text=True)
        self.addCleanup(self.stop_services)
        self.assertEqual(self.services.stdout.readline().strip(), "ready")

    def stop_services(self):
        """Stop the host's services; return what they printed."""
        if self.services.poll() is None:
            self.services.kill()
        out, _ = self.services.communicate(timeout=10)
        return out or ""

    def probe(self, ns, gw):
        out = self.sh(sys.executable, "-c", GUEST_PROBE, gw, FAR_WEB, FAR_DNS, str(OPEN_TCP),
                      str(OPEN_UDP), str(SHUT_TCP), str(SHUT_UDP), ns=ns, timeout=60)
        return json.loads(out)

    def test_guests_reach_moat_and_the_host_ports_only(self):
        for ns, (iface, gw, addr) in zip(self.guests, GUESTS):
            got = self.probe(ns, gw)
            with self.subTest(guest=iface):
                # moat's DNS, at the gateway and at a far resolver, UDP and TCP
                self.assertTrue(got["dns_udp"], got)
                self.assertTrue(got["dns_udp_far"], got)
                self.assertTrue(got["dns_tcp_far"], got)
                # moat's transparent listener: blocked.test gets moat's 403
                self.assertIn("403 Forbidden", got["web"], got)
                # the host ports, TCP and UDP
                self.assertEqual(got["open_tcp"], "host-%d\n" % OPEN_TCP, got)
                self.assertEqual(got["open_udp"], "host-%d\n" % OPEN_UDP, got)
                # not the other ports
                self.assertNotIn("host-", got["shut_tcp"], got)
                self.assertNotIn("host-", got["shut_udp"], got)
        self.moat.line_with("name=blocked.test", "verdict=block", timeout=5)

        # the host itself reaches the port the guests may not
        host_gw = GUESTS[0][1]
        out = self.sh(sys.executable, "-c",
                      "import socket\n"
                      "with socket.create_connection(('%s', %d), timeout=3) as s:\n"
                      "    print(s.recv(64).decode(), end='')\n" % (host_gw, SHUT_TCP),
                      ns=self.host)
        self.assertEqual(out, "host-%d\n" % SHUT_TCP)

        seen = self.stop_services().splitlines()
        for _, _, addr in GUESTS:
            self.assertIn("tcp %d from %s" % (OPEN_TCP, addr), seen)
            self.assertIn("udp %d from %s" % (OPEN_UDP, addr), seen)
        # of the ports not given, only the host's own connection arrived
        shut = [l for l in seen if l.startswith(("tcp %d " % SHUT_TCP, "udp %d " % SHUT_UDP))]
        self.assertEqual(shut, ["tcp %d from %s" % (SHUT_TCP, host_gw)], seen)

if __name__ == "__main__":
    unittest.main()
