"""End-to-end: the explicit proxies (SPEC §2.6) and every HTTP request of a
connection decided (SPEC §2.3, last paragraphs), with the real binary, real
nginx and real clients (curl, python) in a network namespace of its own
(see proxyfixture.py): the core cases, one test each. The wider client
matrix and the attacks are in test_explicit_*.py.

Backends as in test_proxy.py: a.test and blocked.test → 198.18.0.2 (nginx
TLS "server-a" on 443, HTTP "http-a" on 80), b.test → 198.18.0.3 (TLS
"server-b")."""
import shutil
import socket
import ssl
import subprocess
import unittest

import proxyfixture as pf
from moatlib import Moat, free_port, recv_all, write_config

SKIP = pf.netns_skip(__name__, __file__)
NAMES = {"a.test": pf.ADDRS["a"], "b.test": pf.ADDRS["b"], "blocked.test": pf.ADDRS["a"],
         "lo.test": "127.0.0.1", "ws.test": pf.ADDRS["bulk"]}


class UpgradeServer(pf.TcpServer):
    """On (addr, 80): answers a request head asking to upgrade with 101 and
    then echoes raw bytes; any other request gets 426 (Content-Length 0)
    and the connection stays for the next request."""

    def _serve(self, c):
        try:
            c.settimeout(10)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(4096)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                if b"upgrade: websocket" in head.lower():
                    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              b"Connection: Upgrade\r\n\r\n" + buf)
                    while True:
                        d = c.recv(4096)
                        if not d:
                            return
                        c.sendall(d)
                c.sendall(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass
        finally:
            c.close()


@unittest.skipIf(SKIP, SKIP)
class ProxyRequestsTest(pf.NetnsTestCase):
    @classmethod
    def start_servers(cls):
        pf.setup_netns()
        cls.cert, key = pf.make_cert(cls.dir, ["a.test", "b.test", "blocked.test"])
        cls.nginx = cls.serve(pf.Nginx(cls.dir, cls.cert, key))
        cls.ws = cls.serve(UpgradeServer(pf.ADDRS["bulk"], 80))
        cls.start_dnsmasq(pf.address_args(NAMES.items()))

    def start(self, allow="allow: [a.test]", extra=""):
        self.allow_text = allow
        self.cport, self.sport, self.hport = free_port(), free_port(), free_port()
        text = ("dns:\n"
                "  listen: []\n"
                "  upstream: [\"127.0.0.1:%d\"]\n"
                "proxy:\n"
                "  tls: []\n"
                "  http: [\"127.0.0.1:%d\"]\n"
                "  connect: [\"127.0.0.1:%d\"]\n"
                "  socks: [\"127.0.0.1:%d\"]\n"
                "shutdown_grace: 2s\n"
                "log: {allowed: true}\n"
                "%s%s\n" % (self.up_port, self.hport, self.cport, self.sport, extra, allow))
        self.config_path = write_config(self.dir, text)
        self.text = text
        self.moat = Moat(self.config_path)
        self.moat.wait_line("moat running")

    def curl(self, *args):
        return subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", self.cert, *args],
                              capture_output=True, text=True, timeout=20)

    def connect(self, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.socks.append(s)
        return s

    # ---- connect listener ----------------------------------------------------------------

    def test_connect_allowed_and_blocked(self):
        self.start()
        proxy = "http://127.0.0.1:%d" % self.cport
        r = self.curl("-x", proxy, "https://a.test/")
        self.assertEqual(r.stdout, "server-a\n", r.stderr)
        self.moat.wait_line("listener=connect")
        r = self.curl("-x", proxy, "https://b.test/")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("403", r.stderr)
        self.moat.wait_line("name=b.test verdict=block reason=not-allowed")

    def test_forward_absolute_form(self):
        self.start()
        proxy = "http://127.0.0.1:%d" % self.cport
        r = self.curl("-x", proxy, "-D", "-", "http://a.test/")
        self.assertIn("http-a\n", r.stdout, r.stderr)
        r = self.curl("-x", proxy, "-D", "-", "http://b.test/")
        self.assertIn("403", r.stdout.split("\r\n")[0])
        self.assertIn("X-Proxy-Error: blocked-by-allowlist", r.stdout)

    def test_connect_refused_range_and_dns_failure(self):
        self.start()
        s = self.connect(self.cport)
        s.sendall(b"CONNECT [::ffff:127.0.0.1]:22 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b" 403 ", recv_all(s, timeout=5).split(b"\r\n")[0])
        self.moat.wait_line("reason=refused-range")
        self.start("allow: [nowhere.test]")
        s = self.connect(self.cport)
        s.sendall(b"CONNECT nowhere.test:443 HTTP/1.1\r\nHost: nowhere.test:443\r\n\r\n")
        head = recv_all(s, timeout=5)
        self.assertIn(b" 502 ", head.split(b"\r\n")[0])
        self.assertIn(b"X-Proxy-Error: dns-failure", head)

    def test_sni_mismatch_in_tunnel(self):
        self.start()
        s = self.connect(self.cport)
        s.sendall(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n")
        head, _ = pf.read_head(s)
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])
        with self.assertRaises(ssl.SSLError) as e:
            ssl.create_default_context(cafile=self.cert).wrap_socket(
                s, server_hostname="blocked.test")
        self.assertIn("ACCESS_DENIED", str(e.exception).upper())
        self.moat.wait_line("name=blocked.test verdict=block reason=sni-mismatch")

    def test_connect_http_port_host_mismatch(self):
        self.start()
        s = self.connect(self.cport)
        s.sendall(b"CONNECT a.test:80 HTTP/1.1\r\nHost: a.test:80\r\n\r\n")
        head, _ = pf.read_head(s)
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        head, body = pf.read_head(s)
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])
        s.sendall(b"GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n")
        self.assertIn(b" 403 ", recv_all(s, timeout=5))
        self.moat.wait_line("name=blocked.test verdict=block reason=host-mismatch")

    def test_tunnel_closed_by_reload(self):
        self.start()
        s = self.connect(self.cport)
        s.sendall(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n")
        head, _ = pf.read_head(s)
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])
        t = ssl.create_default_context(cafile=self.cert).wrap_socket(s, server_hostname="a.test")
        self.socks.append(t)
        t.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        head, _ = pf.read_head(t)
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])
        with open(self.config_path, "w") as f:
            f.write(self.text.replace(self.allow_text, "allow: []"))
        self.moat.sighup()
        self.assertIsNotNone(pf.closed_within(t, 5))
        self.moat.line_with("listener=connect", "reason=policy-reload")

    def test_audit_lets_tunnels_and_switches_through(self):
        self.start(extra="mode: audit\n")
        proxy = "http://127.0.0.1:%d" % self.cport
        r = self.curl("-x", proxy, "https://b.test/")
        self.assertEqual(r.stdout, "server-b\n", r.stderr)
        s = self.connect(self.cport)
        s.sendall(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n")
        head, _ = pf.read_head(s)
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])
        t = ssl.create_default_context(cafile=self.cert).wrap_socket(
            s, server_hostname="blocked.test")
        self.socks.append(t)
        self.moat.line_with("name=blocked.test", "reason=sni-mismatch", "audit=passed")
        h = self.connect(self.hport)
        h.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        pf.read_head(h)
        h.sendall(b"GET / HTTP/1.1\r\nHost: b.test\r\n\r\n")
        self.moat.line_with("name=b.test", "reason=host-switch", "audit=passed")

    # ---- socks listener ------------------------------------------------------------------

    def test_socks_allowed_and_blocked(self):
        self.start()
        proxy = "socks5h://127.0.0.1:%d" % self.sport
        r = self.curl("--proxy", proxy, "https://a.test/")
        self.assertEqual(r.stdout, "server-a\n", r.stderr)
        r = self.curl("--proxy", proxy, "https://b.test/")
        self.assertNotEqual(r.returncode, 0)
        self.moat.wait_line("listener=socks")
        self.moat.wait_line("name=b.test verdict=block reason=not-allowed")

    def test_socks_login(self):
        self.start("allow: []\ntenants:\n  - {name: t1, users: [{name: u1, password: s3cret}],"
                   " allow: [a.test]}")
        proxy = "socks5h://127.0.0.1:%d" % self.sport
        r = self.curl("--proxy", proxy, "--proxy-user", "u1:s3cret", "https://a.test/")
        self.assertEqual(r.stdout, "server-a\n", r.stderr)
        r = self.curl("--proxy", proxy, "--proxy-user", "u1:wrong", "https://a.test/")
        self.assertNotEqual(r.returncode, 0)
        self.moat.wait_line("reason=proxy-auth")
        r = self.curl("-x", "http://127.0.0.1:%d" % self.cport, "https://a.test/")
        self.assertIn("407", r.stderr)
        r = self.curl("-x", "http://u1:s3cret@127.0.0.1:%d" % self.cport, "https://a.test/")
        self.assertEqual(r.stdout, "server-a\n", r.stderr)
        self.assertNotIn("s3cret", "\n".join(self.moat.lines))

    # ---- every request decided ---------------------------------------------------------------

    def test_keepalive_host_switch_refused(self):
        self.start()
        s = self.connect(self.hport)
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        head, body = pf.read_head(s)
        self.assertIn(b" 200 ", head.split(b"\r\n")[0])
        s.settimeout(5)
        if b"http-a" not in body:
            body += s.recv(100)
        self.assertIn(b"http-a", body)
        s.sendall(b"GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n")
        rest = recv_all(s, timeout=5)
        self.assertIn(b" 403 ", rest)
        self.moat.wait_line("name=blocked.test verdict=block reason=host-switch")

    def test_pipelined_host_switch_refused_after_first_response(self):
        self.start()
        s = self.connect(self.hport)
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"
                  b"GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n")
        data = recv_all(s, timeout=5)
        first = data.find(b"http-a")
        self.assertGreater(first, 0, data)
        self.assertGreater(data.find(b" 403 "), first, data)

    def test_upgrade_followed_until_101(self):
        """A request without the upgrade gets 426 and the next request is
        still decided (host-switch); after a 101 the bytes are opaque."""
        self.start("allow: [ws.test, a.test]")
        s = self.connect(self.hport)
        s.sendall(b"GET / HTTP/1.1\r\nHost: ws.test\r\n\r\n")
        head, _ = pf.read_head(s)
        self.assertIn(b" 426 ", head.split(b"\r\n")[0])
        s.sendall(b"GET / HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\n"
                  b"Upgrade: websocket\r\n\r\nearly")
        head, rest = pf.read_head(s)
        self.assertIn(b" 101 ", head.split(b"\r\n")[0])
        got = rest
        while len(got) < 5:
            got += s.recv(100)
        self.assertEqual(got, b"early")
        frame = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n\x81\x05hello"  # not a request any more
        s.sendall(frame)
        got = b""
        while len(got) < len(frame):
            d = s.recv(4096)
            self.assertTrue(d)
            got += d
        self.assertEqual(got, frame)
        s2 = self.connect(self.hport)
        s2.sendall(b"GET / HTTP/1.1\r\nHost: ws.test\r\n\r\n")
        head, _ = pf.read_head(s2)
        self.assertIn(b" 426 ", head.split(b"\r\n")[0])
        s2.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\n"
                   b"Upgrade: websocket\r\n\r\n")
        self.assertIn(b" 403 ", recv_all(s2, timeout=5))
        self.moat.wait_line("name=a.test verdict=block reason=host-switch")

    def test_upgrade_bytes_held_then_client_half_close(self):
        """Bytes sent behind an Upgrade request and then the client's EOF:
        the bytes reach the server after its 101, then the EOF."""
        self.start("allow: [ws.test]")
        s = self.connect(self.hport)
        s.sendall(b"GET / HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\n"
                  b"Upgrade: websocket\r\n\r\nearly")
        s.shutdown(socket.SHUT_WR)
        data = recv_all(s, timeout=5)
        self.assertIn(b" 101 ", data.split(b"\r\n")[0])
        self.assertTrue(data.endswith(b"\r\n\r\nearly"), data)

    def test_keepalive_same_host_goes_on(self):
        self.start()
        s = self.connect(self.hport)
        for _ in range(3):
            s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            head, got = pf.read_head(s)
            self.assertIn(b" 200 ", head.split(b"\r\n")[0])
            n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
                    .split(b":")[1])
            while len(got) < n:
                got += s.recv(n - len(got))
            self.assertEqual(got, b"http-a\n")


if __name__ == "__main__":
    unittest.main()
