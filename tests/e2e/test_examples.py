"""End-to-end: the integration examples of SPEC §5, driven through their own
scripts (examples/tap/run.sh, examples/gvproxy/run.sh): bring the example up,
then from the guest namespace: an allowed name over real TLS works, a blocked
one gets the TLS access_denied alert, DNS for a blocked name is sinkholed,
UDP to port 443 (QUIC) never reaches the internet; then down, and nothing of
the example is left. examples/proxy-only/run.sh (a guest whose only way out
is moat's CONNECT and SOCKS5 listeners) is checked through its `exec`: the
proxy variables it sets carry curl and urllib to allowed names and get
blocked ones refused. Needs root (network namespaces, nftables); the gvproxy
simulation also needs slirp4netns and setpriv."""
import os
import re
import shutil
import subprocess
import sys
import time
import unittest

from moatlib import MOAT

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def missing(tools):
    return [t for t in tools if not shutil.which(t, path=PATH)]


BASE_TOOLS = ["ip", "nft", "nginx", "dnsmasq", "openssl", "curl", "dig"]
SKIP = None
if os.geteuid() != 0:
    SKIP = "needs root (network namespaces and nftables)"
elif missing(BASE_TOOLS):
    SKIP = "needs " + ", ".join(missing(BASE_TOOLS))

# UDP listener run in the internet namespace: prints "ready", then one line
# per datagram received until the deadline, then "done".
UDP_LISTENER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 443))
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while True:
    left = end - time.monotonic()
    if left <= 0:
        break
    s.settimeout(left)
    try:
        d, a = s.recvfrom(2048)
    except socket.timeout:
        break
    print("got %s %r" % (a[0], d), flush=True)
print("done", flush=True)
"""


class ExampleBase:
    """Mixed into a TestCase per example; subclasses set the names below."""
    SCRIPT = GUEST = GATE = INET = None
    ALLOWED_IP = BLOCKED_IP = None
    EXTRA_TOOLS = []

    def setUp(self):
        miss = missing(self.EXTRA_TOOLS)
        if miss:
            self.skipTest("needs " + ", ".join(miss))
        self.state = "/tmp/moat-e2e-%s-%d" % (os.path.basename(os.path.dirname(self.SCRIPT)),
                                              os.getpid())
        self.env = dict(os.environ, MOAT=os.path.abspath(MOAT), STATE=self.state, PATH=PATH)
        self.addCleanup(self.down)
        r = self.run_script("up", timeout=120)
        self.assertEqual(r.returncode, 0, "up failed:\n%s\n%s" % (r.stdout, r.stderr))

    def run_script(self, cmd, timeout=60):
        return subprocess.run(["bash", self.SCRIPT, cmd], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def down(self):
        r = self.run_script("down", timeout=60)
        if r.returncode != 0:
            sys.stderr.write("down failed:\n%s\n%s" % (r.stdout, r.stderr))

    def in_ns(self, ns, *args, timeout=30):
        return subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env)

    def curl(self, *args):
        return self.in_ns(self.GUEST, "curl", "-sS", "--max-time", "10", "--cacert",
                          os.path.join(self.state, "cert.pem"), *args)

    def moat_log(self):
        with open(os.path.join(self.state, "moat.log")) as f:
            return f.read()

    def wait_log(self, pattern, timeout=5.0):
        """moat logs an allowed connection when it closes, which may be just
        after the client returned: poll for the line, bounded."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.moat_log()
            if re.search(pattern, log) or time.monotonic() > deadline:
                self.assertRegex(log, pattern)
                return
            time.sleep(0.05)

    def udp_arrives(self, sender_ns, timeout=3.0):
        """Send UDP datagrams to ALLOWED_IP:443 from sender_ns; return what
        the internet namespace received."""
        lst = subprocess.Popen(["ip", "netns", "exec", self.INET, sys.executable, "-c",
                                UDP_LISTENER, self.ALLOWED_IP, str(timeout)],
                               stdout=subprocess.PIPE, text=True, env=self.env)
        try:
            self.assertEqual(lst.stdout.readline().strip(), "ready")
            send = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                    "for i in range(5):\n"
                    "    s.sendto(b'quic-initial-%d' % i, ('" + self.ALLOWED_IP + "', 443))\n"
                    "    time.sleep(0.05)\n")
            r = self.in_ns(sender_ns, sys.executable, "-c", send)
            self.assertEqual(r.returncode, 0, r.stderr)
            out, _ = lst.communicate(timeout=timeout + 10)
        finally:
            if lst.poll() is None:
                lst.kill()
                lst.wait(5)
        self.assertTrue(out.rstrip().endswith("done"), out)
        return [l for l in out.splitlines() if l.startswith("got ")]

    def test_example(self):
        # allowed name: real TLS to nginx in the internet namespace, via moat
        r = self.curl("https://allowed.test/")
        self.assertEqual(r.returncode, 0, r.stderr + self.moat_log())
        self.assertEqual(r.stdout, "allowed-site\n")
        self.wait_log(r"kind=tcp listener=transparent .*dest=%s port=443 "
                      r"name=allowed\.test verdict=allow" % self.ALLOWED_IP.replace(".", r"\."))

        # blocked name at its real address (a guest that ignores DNS): TLS alert
        r = self.curl("--resolve", "blocked.test:443:" + self.BLOCKED_IP, "https://blocked.test/")
        self.assertEqual(r.returncode, 35, r.stderr)  # CURLE_SSL_CONNECT_ERROR
        self.assertIn("access denied", r.stderr)
        self.wait_log(r"name=blocked\.test verdict=block reason=not-allowed")

        # DNS: allowed resolves upstream, blocked is sinkholed, through the
        # guest's configured resolver
        r = self.in_ns(self.GUEST, "dig", "+short", "+time=3", "+tries=2", "allowed.test")
        self.assertEqual(r.stdout.split(), [self.ALLOWED_IP], r.stderr)
        r = self.in_ns(self.GUEST, "dig", "+short", "+time=3", "+tries=2", "blocked.test")
        self.assertEqual(r.stdout.split(), ["0.0.0.0"], r.stderr)
        # ... and through a resolver the guest picked itself
        r = self.in_ns(self.GUEST, "dig", "+short", "+time=3", "+tries=2",
                       "@" + self.UPSTREAM_IP, "blocked.test")
        self.assertEqual(r.stdout.split(), ["0.0.0.0"], r.stderr)

        # blocked name by DNS: curl gets the sinkhole and cannot connect
        r = self.curl("https://blocked.test/")
        self.assertNotEqual(r.returncode, 0)

        # QUIC: UDP to port 443 never leaves; the same from the gate arrives
        # (so the listener and the route work, and the ruleset is what stops it)
        self.assertEqual(self.udp_arrives(self.GUEST), [])
        self.assertEqual(len(self.udp_arrives(self.GATE)), 5)

        # down leaves nothing of ours
        r = self.run_script("down")
        self.assertEqual(r.returncode, 0, r.stderr)
        ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=10).stdout
        for n in (self.GUEST, self.GATE, self.INET):
            self.assertNotIn(n, ns)
            self.assertFalse(os.path.exists("/etc/netns/" + n))
        self.assertFalse(os.path.exists(self.state))


@unittest.skipIf(SKIP, SKIP)
class TapExampleTest(ExampleBase, unittest.TestCase):
    SCRIPT = os.path.join(ROOT, "examples", "tap", "run.sh")
    GUEST, GATE, INET = "moattap-guest", "moattap-gate", "moattap-inet"
    ALLOWED_IP, BLOCKED_IP, UPSTREAM_IP = "198.18.3.10", "198.18.3.11", "198.18.3.53"

    def test_ipv6_tcp_goes_through_moat(self):
        """The guest's IPv6 TCP is redirected too: a connection to an fd00::
        literal lands on moat, which answers 403 (no address rule)."""
        r = self.curl("-g", "-i", "http://[fd00:18:3::10]/")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("403 Forbidden", r.stdout)
        self.assertIn("is not on the egress allowlist", r.stdout)
        deadline = time.monotonic() + 5
        while "dest=fd00:18:3::10" not in self.moat_log() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIn("dest=fd00:18:3::10 port=80", self.moat_log())


@unittest.skipIf(SKIP, SKIP)
class GvproxyExampleTest(ExampleBase, unittest.TestCase):
    SCRIPT = os.path.join(ROOT, "examples", "gvproxy", "run.sh")
    GUEST, GATE, INET = "moatgv-guest", "moatgv-host", "moatgv-inet"
    ALLOWED_IP, BLOCKED_IP, UPSTREAM_IP = "198.18.5.10", "198.18.5.11", "198.18.5.53"
    EXTRA_TOOLS = ["slirp4netns", "setpriv"]


@unittest.skipIf(SKIP, SKIP)
class ProxyOnlyExampleTest(ExampleBase, unittest.TestCase):
    SCRIPT = os.path.join(ROOT, "examples", "proxy-only", "run.sh")
    GUEST, GATE, INET = "moatpo-guest", "moatpo-gate", "moatpo-inet"
    ALLOWED_IP, BLOCKED_IP = "198.18.7.10", "198.18.7.11"

    def exec_(self, *args, timeout=30):
        """args run in the guest by `run.sh exec` (the proxy variables set)."""
        return subprocess.run(["bash", self.SCRIPT, "exec", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def test_example(self):
        curl = ("curl", "-sS", "--max-time", "10")
        # HTTPS_PROXY: CONNECT; HTTP_PROXY: absolute form
        r = self.exec_(*curl, "https://allowed.test/")
        self.assertEqual((r.returncode, r.stdout), (0, "allowed-site\n"),
                         r.stderr + self.moat_log())
        self.wait_log(r"kind=tcp listener=connect .*port=443 .*name=allowed\.test verdict=allow")
        r = self.exec_(*curl, "http://allowed.test/")
        self.assertEqual((r.returncode, r.stdout), (0, "allowed-site\n"), r.stderr)
        self.wait_log(r"listener=connect .*port=80 .*name=allowed\.test verdict=allow")

        # blocked: 403 to the CONNECT; moat's 403 page for the absolute form
        r = self.exec_(*curl, "-o", "/dev/null", "-w", "%{http_connect}", "https://blocked.test/")
        self.assertEqual((r.returncode, r.stdout), (56, "403"), r.stderr)
        r = self.exec_(*curl, "-i", "http://blocked.test/")
        self.assertRegex(r.stdout, r"^HTTP/1\.1 403 ")
        self.assertIn("X-Proxy-Error: blocked-by-allowlist", r.stdout)
        self.wait_log(r"listener=connect .*name=blocked\.test verdict=block reason=not-allowed")

        # ALL_PROXY alone: SOCKS5, the name resolved by moat (socks5h)
        r = self.exec_("env", "-u", "HTTPS_PROXY", "-u", "https_proxy", *curl,
                       "https://allowed.test/")
        self.assertEqual((r.returncode, r.stdout), (0, "allowed-site\n"), r.stderr)
        self.wait_log(r"listener=socks .*name=allowed\.test verdict=allow")
        r = self.exec_("env", "-u", "HTTPS_PROXY", "-u", "https_proxy", *curl,
                       "https://blocked.test/")
        self.assertEqual(r.returncode, 97, r.stderr)  # CURLE_PROXY: SOCKS5 reply 2

        # Python's standard library reads the same variables
        r = self.exec_(sys.executable, "-c",
                       "import urllib.request as u; print(u.urlopen('https://allowed.test/', "
                       "timeout=10).read().decode(), end='')")
        self.assertEqual((r.returncode, r.stdout), (0, "allowed-site\n"), r.stderr)

        # no way out but moat: the server's own address is unreachable
        r = self.exec_(*curl, "--noproxy", "*", "--max-time", "3", "--resolve",
                       "allowed.test:443:" + self.ALLOWED_IP, "https://allowed.test/")
        self.assertIn(r.returncode, (7, 28), r.stderr)  # no route / dropped

        r = self.run_script("down")
        self.assertEqual(r.returncode, 0, r.stderr)
        ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=10).stdout
        for n in (self.GUEST, self.GATE, self.INET):
            self.assertNotIn(n, ns)
            self.assertFalse(os.path.exists("/etc/netns/" + n))
        self.assertFalse(os.path.exists(self.state))


if __name__ == "__main__":
    unittest.main()
