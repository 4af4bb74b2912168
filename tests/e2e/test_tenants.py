"""End-to-end: tenants (one moat, several sandboxes, each with its own
allowlist) with the real binary, nginx and dnsmasq, in a network namespace
of its own (see proxyfixture.py).

The guests are source addresses on the namespace's loopback: box-1 is
198.18.0.6, box-2 198.18.0.7, box-3 198.18.0.8 (a tenant read from an
included file the test adds, edits and removes); 127.0.0.1 is a client of
no tenant. Backends as in test_proxy.py: a.test -> 198.18.0.2 (nginx TLS
"server-a", HTTP "http-a"), b.test -> 198.18.0.3 (TLS "server-b"),
bulk.test -> 198.18.0.4 (the bulk server on port 80)."""
import hashlib
import os
import socket
import ssl
import subprocess
import unittest

import proxyfixture as pf
from moatlib import Moat, free_port, write_config

SKIP = pf.netns_skip(__name__, __file__)

NAMES = {"a.test": pf.ADDRS["a"], "b.test": pf.ADDRS["b"], "bulk.test": pf.ADDRS["bulk"]}
BOX = {"box-1": "198.18.0.6", "box-2": "198.18.0.7", "box-3": "198.18.0.8"}
NONE = "127.0.0.1"

CONFIG = """dns:
  listen: ["127.0.0.1:{dns}"]
  upstream: ["127.0.0.1:{up}"]
proxy:
  tls: ["127.0.0.1:{tls}"]
  http: ["127.0.0.1:{http}"]
shutdown_grace: 2s
log: {{allowed: true}}
lists:
  common: [bulk.test]
allow: [bulk.test]
tenants:
  - name: box-1
    clients: [{box1}]
    allow: [a.test, {{list: common}}]
  - name: box-2
    clients: ["{box2}/32"]
    allow: [b.test]
include: ["tenants.d/*.yaml"]
"""


@unittest.skipIf(SKIP, SKIP)
class TenantTest(pf.SourceClients, pf.NetnsTestCase):
    @classmethod
    def start_servers(cls):
        pf.setup_netns()
        for a in BOX.values():
            subprocess.run(["ip", "addr", "add", a + "/32", "dev", "lo"], check=True)
        cls.cert, key = pf.make_cert(cls.dir, ["a.test", "b.test"])
        cls.nginx = cls.serve(pf.Nginx(cls.dir, cls.cert, key))
        cls.bulk = cls.serve(pf.BulkServer(pf.ADDRS["bulk"]))
        cls.start_dnsmasq(pf.address_args(NAMES.items()))

    def start(self):
        self.dns_port, self.tls_port, self.http_port = free_port(), free_port(), free_port()
        self.client_ports = {"dns": self.dns_port, "tls": self.tls_port, "http": self.http_port}
        self.tenants_d = os.path.join(self.dir, "tenants.d")
        os.makedirs(self.tenants_d, exist_ok=True)
        for f in os.listdir(self.tenants_d):
            os.unlink(os.path.join(self.tenants_d, f))
        self.config = write_config(self.dir, CONFIG.format(
            dns=self.dns_port, up=self.up_port, tls=self.tls_port, http=self.http_port,
            box1=BOX["box-1"], box2=BOX["box-2"]))
        self.moat = Moat(self.config)
        self.moat.wait_line("moat running")

    def write_tenant(self, text):
        path = os.path.join(self.tenants_d, "box-3.yaml")
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.rename(path + ".tmp", path)

    # ---- tests -------------------------------------------------------------------------------

    def test_dns_answers_follow_the_tenant(self):
        self.start()
        sink = ["0.0.0.0"]
        self.assertEqual(self.resolve_as(BOX["box-1"], "a.test"), [pf.ADDRS["a"]])
        self.assertEqual(self.resolve_as(BOX["box-1"], "b.test"), sink)
        self.assertEqual(self.resolve_as(BOX["box-1"], "bulk.test"), [pf.ADDRS["bulk"]])  # a list
        self.assertEqual(self.resolve_as(BOX["box-2"], "b.test"), [pf.ADDRS["b"]])
        self.assertEqual(self.resolve_as(BOX["box-2"], "a.test"), sink)
        self.assertEqual(self.resolve_as(BOX["box-2"], "bulk.test"), sink)
        self.assertEqual(self.resolve_as(NONE, "a.test"), sink)  # the top-level allow
        self.assertEqual(self.resolve_as(NONE, "bulk.test"), [pf.ADDRS["bulk"]])
        self.moat.line_with("kind=dns", "client=%s:" % BOX["box-2"], "tenant=box-2",
                            "name=a.test", "verdict=block")
        self.moat.line_with("kind=dns", "client=%s:" % NONE, "tenant=-", "name=a.test")

    def test_tls_and_http_follow_the_tenant(self):
        self.start()
        self.assertEqual(self.tls_body_as(BOX["box-1"], "a.test"), "server-a\n")
        self.assertEqual(self.tls_body_as(BOX["box-1"], "b.test"), "denied")
        self.assertEqual(self.tls_body_as(BOX["box-2"], "b.test"), "server-b\n")
        self.assertEqual(self.tls_body_as(BOX["box-2"], "a.test"), "denied")
        self.assertEqual(self.tls_body_as(NONE, "a.test"), "denied")
        self.assertIn(" 200 ", self.http_status_as(BOX["box-1"], "a.test"))
        self.assertIn(" 403 ", self.http_status_as(BOX["box-2"], "a.test"))
        self.assertIn(" 403 ", self.http_status_as(NONE, "a.test"))
        self.moat.line_with("kind=tcp", "listener=tls", "tenant=box-2", "name=a.test",
                            "verdict=block reason=not-allowed")
        self.moat.line_with("kind=tcp", "listener=tls", "tenant=box-1", "name=a.test",
                            "verdict=allow")

    def test_included_tenant_added_edited_removed(self):
        self.start()
        box3 = BOX["box-3"]
        # Not a tenant yet: the top-level allow.
        self.assertEqual(self.tls_body_as(box3, "b.test"), "denied")
        self.write_tenant("name: box-3\nclients: [%s]\nallow: [b.test]\n" % box3)
        self.moat.sighup()
        self.assertEqual(self.tls_body_as(box3, "b.test"), "server-b\n")
        self.assertEqual(self.resolve_as(box3, "b.test"), [pf.ADDRS["b"]])

        # An open connection of box-3 to b.test, and a transfer of box-1.
        held = self.connect_as(box3, "127.0.0.1", self.tls_port)
        held_tls = ssl.create_default_context(cafile=self.cert).wrap_socket(
            held, server_hostname="b.test")
        self.socks.append(held_tls)
        blocks = 24
        bulk = self.connect_as(BOX["box-1"], "127.0.0.1", self.http_port)
        bulk.settimeout(30)
        bulk.sendall(b"POST / HTTP/1.1\r\nHost: bulk.test\r\nX-Blocks: %d\r\nContent-Length: 1000000000\r\n\r\n" % blocks)
        first = b""
        while len(first) < len(pf.DOWN_BLOCK):
            d = bulk.recv(1 << 20)
            self.assertTrue(d, "the transfer ended early")
            first += d

        # box-3 loses b.test: its connection is closed, box-1's goes on.
        mark = len(self.moat.lines)
        self.write_tenant("name: box-3\nclients: [%s]\nallow: [a.test]\n" % box3)
        self.moat.sighup()
        self.moat.line_with("tenant=box-3", "name=b.test", "reason=policy-reload", start=mark)
        held_tls.settimeout(5)
        try:
            self.assertEqual(held_tls.recv(100), b"")
        except (ConnectionResetError, ssl.SSLError):
            pass
        bulk.shutdown(socket.SHUT_WR)
        rest = first
        while True:
            d = bulk.recv(1 << 20)
            if not d:
                break
            rest += d
        want = blocks * len(pf.DOWN_BLOCK)
        exp = hashlib.sha256(pf.DOWN_BLOCK * blocks).hexdigest()
        self.assertEqual(hashlib.sha256(rest[:want]).hexdigest(), exp)
        self.assertEqual(rest[want:].decode().strip(),
                         "sha256=%s len=0" % hashlib.sha256(b"").hexdigest())
        self.assertFalse(any("tenant=box-1" in l and "policy-reload" in l
                             for l in self.moat.lines[mark:]))
        self.assertEqual(self.tls_body_as(box3, "a.test"), "server-a\n")
        self.assertEqual(self.tls_body_as(box3, "b.test"), "denied")

        # Removed: box-3's clients fall back to the top-level allow.
        os.unlink(os.path.join(self.tenants_d, "box-3.yaml"))
        self.moat.sighup()
        self.assertEqual(self.tls_body_as(box3, "a.test"), "denied")
        self.assertEqual(self.resolve_as(box3, "bulk.test"), [pf.ADDRS["bulk"]])
        # The other tenants never noticed.
        self.assertEqual(self.tls_body_as(BOX["box-2"], "b.test"), "server-b\n")

    def test_broken_tenant_file_rejects_the_reload(self):
        self.start()
        self.write_tenant("name: box-3\nclients: [%s]\nallow: [b.test]\n" % BOX["box-3"])
        self.moat.sighup()
        self.write_tenant("name: box-3\nclients: [%s]\nallow: [\"*\"]\n" % BOX["box-3"])
        mark = self.moat.sighup(wait="rejected")
        self.moat.line_with("config error:", "box-3.yaml:3:", start=mark)
        # The running generation keeps serving box-3 as before.
        self.assertEqual(self.tls_body_as(BOX["box-3"], "b.test"), "server-b\n")


if __name__ == "__main__":
    unittest.main(verbosity=2)
