"""End-to-end: `moat learn` (SPEC §2.8) on logs real clients produce.

moat runs in audit mode in a network namespace of its own (see
proxyfixture.py) with two tenants and every allow list empty, logging to
log.file (text, then JSON). Real clients of both tenants resolve names
through moat's DNS, fetch pages through the tls and http listeners, and
box-1 connects to port 22 of a name it resolved through moat, through the
transparent listener (nftables REDIRECT of the guest's port 22). `moat
learn` turns the log into a policy that `moat check` accepts; moat
restarted on it in enforce mode lets the same clients through, and a name
the logs never saw stays blocked.

Guests: box-1 is proxyfixture's GUEST (198.18.0.5, whose port 22 traffic
the nftables rule redirects), box-2 198.18.0.6. Backends: a.test ->
198.18.0.2 (nginx TLS "server-a", HTTP "http-a"), b.test -> 198.18.0.3
(TLS "server-b"), ssh.test -> 198.18.0.4 (an echo server on port 22),
never.test -> 198.18.0.2 (in no log)."""
import gzip
import os
import subprocess
import time
import unittest

import proxyfixture as pf
from moatlib import MOAT, SANITIZER_MARK, Moat, free_port, run_moat, write_config

SKIP = pf.netns_skip(__name__, __file__)

BOX1, BOX2 = pf.GUEST, "198.18.0.6"
NAMES = {"a.test": pf.ADDRS["a"], "b.test": pf.ADDRS["b"], "ssh.test": pf.ADDRS["bulk"],
         "never.test": pf.ADDRS["a"]}

SETTINGS = """dns:
  listen: ["127.0.0.1:{dns}"]
  upstream: ["127.0.0.1:{up}"]
proxy:
  tls: ["127.0.0.1:{tls}"]
  http: ["127.0.0.1:{http}"]
  transparent: ["127.0.0.1:{tp}"]
shutdown_grace: 2s
log: {{file: "{log}", format: {fmt}}}
"""

AUDIT = """mode: audit
allow: []
tenants:
  - name: box-1
    clients: [{box1}]
    allow: []
  - name: box-2
    clients: [{box2}]
    allow: []
"""


class EchoServer(pf.TcpServer):
    """Port 22 of ssh.test: sends back what it reads."""

    def _serve(self, c):
        with c:
            c.settimeout(10)
            try:
                while True:
                    d = c.recv(4096)
                    if not d:
                        return
                    c.sendall(d)
            except OSError:
                return


@unittest.skipIf(SKIP, SKIP)
class LearnTest(pf.SourceClients, pf.NetnsTestCase):
    @classmethod
    def start_servers(cls):
        pf.setup_netns()
        subprocess.run(["ip", "addr", "add", BOX2 + "/32", "dev", "lo"], check=True)
        cls.cert, key = pf.make_cert(cls.dir, ["a.test", "b.test", "never.test"])
        cls.nginx = cls.serve(pf.Nginx(cls.dir, cls.cert, key))
        cls.echo = cls.serve(EchoServer(pf.ADDRS["bulk"], 22))
        cls.start_dnsmasq(pf.address_args(NAMES.items()))

    # ---- moat with its log in a file ---------------------------------------------------------

    def start(self, fmt, policy, name):
        self.ports = {"dns": free_port(), "tls": free_port(), "http": free_port(),
                      "tp": free_port()}
        self.client_ports = self.ports
        self.log = os.path.join(self.dir, name + ".log")
        if os.path.exists(self.log):
            os.unlink(self.log)
        self.settings = SETTINGS.format(up=self.up_port, log=self.log, fmt=fmt, **self.ports)
        self.config = write_config(self.dir, self.settings + policy, name + ".yaml")
        self.moat = Moat(self.config)
        self.wait_log("moat running")
        for n in self.nfts:  # the last moat's
            n.stop()
        self.nfts = []
        self.nfts.append(pf.Nft([22], self.ports["tp"]))

    def log_lines(self):
        try:
            with open(self.log) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def wait_log(self, needle, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in l for l in self.log_lines()):
                return
            if self.moat.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.fail("no log line with %r in %s:\n%s\n%s" % (
            needle, self.log, "\n".join(self.log_lines()[-20:]), "\n".join(self.moat.lines)))

    # ---- the clients, each from its tenant's address ------------------------------------------

    def ssh_echo(self, src):
        """Port 22 of ssh.test, resolved through moat, through the
        transparent listener: what the echo server sends back."""
        addrs = self.resolve_as(src, "ssh.test")
        self.assertEqual(addrs, [pf.ADDRS["bulk"]])
        try:
            s = self.connect_as(src, addrs[0], 22)
            got = pf.echo_back(s, b"SSH-2.0-learn\r\n")
        except ConnectionResetError:
            return b"reset"
        s.close()
        return got

    def replay(self):
        """Every client of the sandbox, as the log saw them; each must get
        through (in audit mode, as in enforce under the learned policy)."""
        self.assertEqual(self.resolve_as(BOX1, "a.test"), [pf.ADDRS["a"]])
        self.assertEqual(self.tls_body_as(BOX1, "a.test"), "server-a\n")
        self.assertIn(" 200 ", self.http_status_as(BOX1, "a.test"))
        self.assertEqual(self.ssh_echo(BOX1), b"SSH-2.0-learn\r\n")
        self.assertEqual(self.resolve_as(BOX2, "b.test"), [pf.ADDRS["b"]])
        self.assertEqual(self.tls_body_as(BOX2, "b.test"), "server-b\n")
        self.assertIn(" 200 ", self.http_status_as(BOX2, "a.test"))

    # ---- the test ------------------------------------------------------------------------------

    def learn_and_replay(self, fmt, feed):
        self.start(fmt, AUDIT.format(box1=BOX1, box2=BOX2), "audit-" + fmt)
        audit_config = self.config
        self.replay()
        self.stop_moat()  # every connection logged, the log flushed
        lines = self.log_lines()
        self.assertTrue(any("ssh.test" in l and "22" in l and "transparent" in l
                            for l in lines), "\n".join(lines))

        r = feed(self.log, audit_config)
        self.assertEqual(r.returncode, 0, r.stderr)
        learned = r.stdout
        if os.environ.get("MOAT_E2E_VERBOSE"):
            print("\n$ moat learn (%s log):\n%s%s" % (fmt, learned, r.stderr))
        self.assertIn("  - name: box-1\n", learned)
        self.assertIn("  - name: box-2\n", learned)
        self.assertIn('{host: "ssh.test", ports: [22]}', learned)
        self.assertIn('- "a.test"', learned)
        self.assertIn('- "b.test"', learned)
        self.assertNotIn("cidr:", learned)  # a name was seen for every destination
        self.assertIn("clients: [\"%s/32\"]" % BOX1, learned)
        self.assertRegex(learned, r'"a.test"    # \d+ times?, first 20\d\d-')

        # The learned policy, with the same settings, in enforce mode.
        policy = self.settings + "mode: enforce\n" + learned
        path = write_config(self.dir, policy, "learned-" + fmt + ".yaml")
        c = run_moat("check", path)
        self.assertEqual(c.returncode, 0, c.stdout + c.stderr + learned)

        self.start(fmt, "mode: enforce\n" + learned, "enforce-" + fmt)
        self.replay()
        # Learned per tenant: box-1 never used b.test, box-2 never ssh.test.
        self.assertEqual(self.tls_body_as(BOX1, "b.test"), "denied")
        self.assertEqual(self.resolve_as(BOX2, "ssh.test"), ["0.0.0.0"])
        # A name in no log stays blocked.
        self.assertEqual(self.resolve_as(BOX1, "never.test"), ["0.0.0.0"])
        self.assertEqual(self.tls_body_as(BOX1, "never.test"), "denied")
        self.assertIn(" 403 ", self.http_status_as(BOX2, "never.test"))
        self.stop_moat()
        blocked = [l for l in self.log_lines() if "verdict=block" in l or
                   '"verdict":"block"' in l]
        self.assertTrue(all("never.test" in l or "b.test" in l or "ssh.test" in l
                            for l in blocked), "\n".join(blocked))

    def test_text_log(self):
        def feed(log, config):
            return run_moat("learn", "--config", config, log)
        self.learn_and_replay("text", feed)

    def test_json_log_gzip_and_stdin(self):
        def feed(log, config):
            # Rotated and compressed, and the same read from stdin: every
            # line counted twice, the same policy.
            with open(log, "rb") as f, gzip.open(log + ".1.gz", "wb") as g:
                g.write(f.read())
            with open(log, "rb") as f:
                r = subprocess.run([MOAT, "learn", "--config", config, log + ".1.gz", "-"],
                                   stdin=f, capture_output=True, text=True, timeout=20)
            self.assertNotRegex(r.stderr, SANITIZER_MARK)
            self.assertRegex(r.stdout, r'"a.test"    # [2-9]\d* times')
            return r
        self.learn_and_replay("json", feed)


if __name__ == "__main__":
    unittest.main(verbosity=2)
