"""End-to-end: the TCP proxy (SPEC §2.3, §2.4) with the real binary, real
nginx (TLS and plain HTTP) and real clients (python's ssl, curl), in a
network namespace of its own (see proxyfixture.py).

Backends: a.test → 198.18.0.2 (nginx TLS "server-a", HTTP "http-a"),
b.test → 198.18.0.3 (nginx TLS "server-b"), bulk.test → 198.18.0.4 (the
Python bulk server on port 80), lo.test → 127.0.0.1 (refused range),
blocked.test → 198.18.0.2 (not on the allowlist), all served by dnsmasq on
loopback as moat's upstream.

The transparent listener is tested with an nftables REDIRECT of the
connections a "guest" source address (198.18.0.5) makes, in the same
namespace; a guest in a namespace of its own is test_netns.py's job."""
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import unittest

import proxyfixture as pf
from dnsfixture import Response, build_query
from moatlib import Moat, free_port, recv_all, write_config

SKIP = pf.netns_skip(__name__, __file__)

NAMES = {"a.test": pf.ADDRS["a"], "b.test": pf.ADDRS["b"], "bulk.test": pf.ADDRS["bulk"],
         "blocked.test": pf.ADDRS["a"], "lo.test": "127.0.0.1"}


@unittest.skipIf(SKIP, SKIP)
class ProxyTest(pf.NetnsTestCase):
    @classmethod
    def start_servers(cls):
        pf.setup_netns()
        cls.cert, key = pf.make_cert(cls.dir, ["a.test", "b.test", "blocked.test"])
        cls.nginx = cls.serve(pf.Nginx(cls.dir, cls.cert, key))
        cls.bulk = cls.serve(pf.BulkServer(pf.ADDRS["bulk"]))
        cls.bulk2222 = cls.serve(pf.BulkServer(pf.ADDRS["bulk"], 2222))
        cls.start_dnsmasq(pf.address_args(NAMES.items()))

    # After every test (NetnsTestCase.tearDown) a clean stop: exit status 0
    # and, in sanitizer builds, the leak check at exit.

    def start(self, allow="allow: [a.test, bulk.test]", proxy_extra=""):
        """moat with tls and http listeners on fresh ports; proxy_extra:
        more lines under `proxy:`."""
        self.tls_port, self.http_port = free_port(), free_port()
        self.config_text = lambda allow_: (
            "dns:\n"
            "  listen: []\n"
            "  upstream: [\"127.0.0.1:%d\"]\n"
            "proxy:\n"
            "  tls: [\"127.0.0.1:%d\"]\n"
            "  http: [\"127.0.0.1:%d\"]\n"
            "%s"
            "shutdown_grace: 2s\n"
            "log: {allowed: true}\n"
            "%s\n" % (self.up_port, self.tls_port, self.http_port, proxy_extra, allow_))
        self.config = write_config(self.dir, self.config_text(allow))
        self.moat = Moat(self.config)
        self.moat.wait_line("moat running")
        return self.moat

    def connect(self, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socks.append(s)
        return s

    def ctx(self):
        c = ssl.create_default_context(cafile=self.cert)
        return c

    def tls_get(self, name, port=None):
        """GET / over TLS through the tls listener with SNI name; returns
        (status line, body)."""
        s = self.connect(port or self.tls_port)
        t = self.ctx().wrap_socket(s, server_hostname=name)
        self.socks.append(t)
        t.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % name.encode())
        head, body = pf.read_response(lambda: t.recv(65536))
        return head.split("\r\n")[0], body, t

    def assert_reset(self, s, timeout=5.0):
        s.settimeout(timeout)
        with self.assertRaises(ConnectionResetError):
            s.recv(100)

    def assert_reset_at_once(self, port):
        """A connection reset right after accept: on loopback the RST may
        already be there when connect() returns."""
        try:
            s = self.connect(port)
        except ConnectionResetError:
            return
        self.assert_reset(s, timeout=2)

    # ---- tls listener -------------------------------------------------------------------

    def test_tls_allowed_name_reaches_its_server(self):
        self.start("allow: [a.test, b.test]")
        status, body, _ = self.tls_get("a.test")
        self.assertIn("200", status)
        self.assertEqual(body, b"server-a\n")
        status, body, t = self.tls_get("b.test")
        self.assertEqual(body, b"server-b\n")
        t.close()  # allowed connections are logged when they end
        i = self.moat.wait_line("name=b.test verdict=allow reason=allowlist rule=b.test")
        self.assertIn("dest=%s port=443" % pf.ADDRS["b"], self.moat.lines[i])

    def test_tls_with_curl(self):
        if not shutil.which("curl"):
            self.skipTest("no curl")
        self.start()
        r = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", self.cert,
                            "--connect-to", "a.test:443:127.0.0.1:%d" % self.tls_port,
                            "https://a.test/"], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.stdout, "server-a\n", r.stderr)

    def test_tls_blocked_name_gets_access_denied(self):
        self.start()
        s = self.connect(self.tls_port)
        with self.assertRaises(ssl.SSLError) as e:
            self.ctx().wrap_socket(s, server_hostname="blocked.test")
        self.assertIn("ACCESS_DENIED", str(e.exception).upper())
        self.moat.wait_line("name=blocked.test verdict=block reason=not-allowed")

    def test_tls_no_sni_gets_access_denied(self):
        self.start()
        s = self.connect(self.tls_port)
        with self.assertRaises(ssl.SSLError) as e:
            pf.unverified_context().wrap_socket(s)
        self.assertIn("ACCESS_DENIED", str(e.exception).upper())
        self.moat.wait_line("listener=tls client=127.0.0.1")
        self.moat.wait_line("verdict=block reason=no-sni")

    def test_tls_not_tls_is_reset(self):
        self.start()
        s = self.connect(self.tls_port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assert_reset(s)
        self.moat.wait_line("reason=not-tls")

    def test_tls_hello_one_byte_per_write(self):
        self.start()
        s = self.connect(self.tls_port)
        d = pf.TlsDriver(s, self.ctx(), "a.test")
        hello = d.first_flight()
        for i in range(len(hello)):
            s.send(hello[i:i + 1])
            if i % 16 == 0:
                time.sleep(0.001)
        d.finish_handshake()
        d.write(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        _, body = pf.read_response(d.read_some)
        self.assertEqual(body, b"server-a\n")

    def test_tls_hello_split_across_two_records(self):
        self.start()
        s = self.connect(self.tls_port)
        d = pf.TlsDriver(s, self.ctx(), "a.test")
        s.sendall(pf.split_records(d.first_flight(), 40))
        d.finish_handshake()
        d.write(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        _, body = pf.read_response(d.read_some)
        self.assertEqual(body, b"server-a\n")

    def test_tls_hello_over_max_hello_is_reset(self):
        self.start()
        s = self.connect(self.tls_port)
        s.sendall(pf.big_hello("a.test", 20000))
        self.assert_reset(s)
        self.moat.wait_line("reason=hello-too-big")

    def test_tls_stalled_hello_closed_after_peek_timeout(self):
        self.start(proxy_extra="  peek_timeout: 1s\n")
        s = self.connect(self.tls_port)
        t0 = time.monotonic()
        d = pf.TlsDriver(s, self.ctx(), "a.test")
        hello = d.first_flight()
        s.sendall(hello[:len(hello) // 2])
        s.settimeout(5)
        try:
            got = s.recv(100)
            self.assertEqual(got, b"")
        except ConnectionResetError:
            pass
        took = time.monotonic() - t0
        self.assertGreater(took, 0.9)
        self.assertLess(took, 1.6)
        self.moat.wait_line("reason=peek-timeout")

    def test_tls_filtering_off_routes_by_name(self):
        self.start(allow="")
        status, body, _ = self.tls_get("b.test")
        self.assertEqual(body, b"server-b\n")
        # Not checked: a name that would be blocked is routed too.
        s = self.connect(self.tls_port)
        c = ssl.create_default_context(cafile=self.cert)
        t = c.wrap_socket(s, server_hostname="blocked.test")
        self.socks.append(t)
        t.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        _, body = pf.read_response(lambda: t.recv(65536))
        self.assertEqual(body, b"server-a\n")
        for x in self.socks:
            x.close()
        self.moat.wait_line("name=b.test verdict=allow reason=filter-off")

    def test_name_resolving_to_loopback_is_refused(self):
        self.start("allow: [lo.test]")
        s = self.connect(self.tls_port)
        with self.assertRaises((ConnectionResetError, ssl.SSLError)):
            self.ctx().wrap_socket(s, server_hostname="lo.test")
        self.moat.wait_line("name=lo.test verdict=block reason=refused-range")

    # ---- http listener --------------------------------------------------------------------

    def http(self, request):
        s = self.connect(self.http_port)
        s.sendall(request)
        return pf.read_response(lambda: s.recv(65536))

    def test_http_allowed_host(self):
        self.start()
        head, body = self.http(b"GET / HTTP/1.1\r\nHost: a.test:8080\r\n\r\n")
        self.assertIn(" 200 ", head.split("\r\n")[0])
        self.assertEqual(body, b"http-a\n")

    def test_http_allowed_absolute_form_with_curl(self):
        if not shutil.which("curl"):
            self.skipTest("no curl")
        self.start()
        r = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", "Host: a.test",
                            "http://127.0.0.1:%d/" % self.http_port],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.stdout, "http-a\n", r.stderr)
        # Absolute form through moat as an HTTP proxy.
        r = subprocess.run(["curl", "-sS", "--max-time", "10", "--proxy",
                            "http://127.0.0.1:%d" % self.http_port, "http://a.test/"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.stdout, "http-a\n", r.stderr)

    def test_http_blocked_host_gets_403(self):
        self.start()
        head, body = self.http(b"GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n")
        self.assertTrue(head.startswith("HTTP/1.1 403 Forbidden"), head)
        self.assertIn("X-Proxy-Error: blocked-by-allowlist", head)
        self.assertIn(b"blocked.test", body)
        self.moat.wait_line("listener=http")
        self.moat.wait_line("name=blocked.test verdict=block reason=not-allowed")

    def test_http_host_conflict_gets_403(self):
        self.start()
        head, body = self.http(b"GET http://a.test/ HTTP/1.1\r\nHost: blocked.test\r\n\r\n")
        self.assertTrue(head.startswith("HTTP/1.1 403"), head)
        self.moat.wait_line("reason=host-conflict")

    def test_http_not_http_is_reset(self):
        self.start()
        s = self.connect(self.http_port)
        s.sendall(b"\x16\x03\x01\x00\x10binary")
        self.assert_reset(s)
        self.moat.wait_line("reason=not-http")

    # ---- bulk, half-close ------------------------------------------------------------------

    def test_100mb_both_ways_and_half_close(self):
        self.start()
        blocks = 100
        s = self.connect(self.http_port)
        s.settimeout(60)
        # Framed as the request's body: every request is decided (SPEC §2.3).
        s.sendall(b"POST / HTTP/1.1\r\nHost: bulk.test\r\nX-Blocks: %d\r\nContent-Length: %d\r\n\r\n"
                  % (blocks, blocks * len(pf.UP_BLOCK)))
        up = hashlib.sha256()
        errors = []

        def sender():
            try:
                for _ in range(blocks):
                    s.sendall(pf.UP_BLOCK)
                s.shutdown(socket.SHUT_WR)  # half-close: the answer must still come
            except OSError as e:
                errors.append(e)

        for _ in range(blocks):
            up.update(pf.UP_BLOCK)
        t = threading.Thread(target=sender)
        t.start()
        down, n = hashlib.sha256(), 0
        want = blocks * len(pf.DOWN_BLOCK)
        tail = b""
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            if n < want:
                take = d[:want - n]
                down.update(take)
                n += len(take)
                tail += d[len(take):]
            else:
                tail += d
        t.join(60)
        self.assertEqual(errors, [])
        exp = hashlib.sha256()
        for _ in range(blocks):
            exp.update(pf.DOWN_BLOCK)
        self.assertEqual(n, want)
        self.assertEqual(down.hexdigest(), exp.hexdigest())
        self.assertEqual(tail.decode().strip(), "sha256=%s len=%d" % (up.hexdigest(),
                                                                      blocks * len(pf.UP_BLOCK)))
        self.assertEqual(self.bulk.errors, [])
        i = self.moat.wait_line("name=bulk.test verdict=allow")
        self.assertIn("bytes_down=%d" % (want + len(tail)), self.moat.lines[i])

    # ---- limits and reload ------------------------------------------------------------------

    def test_max_connections(self):
        self.start("allow: [a.test, b.test]", proxy_extra="  max_connections: 2\n")
        _, body1, t1 = self.tls_get("a.test")
        _, body2, t2 = self.tls_get("b.test")
        self.assert_reset_at_once(self.tls_port)
        self.moat.wait_line("reason=max-connections")
        for t, want in ((t1, b"server-a\n"), (t2, b"server-b\n")):
            t.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            _, body = pf.read_response(lambda: t.recv(65536))
            self.assertEqual(body, want)

    def test_reload_closes_disallowed_connection(self):
        self.start("allow: [a.test, b.test]")
        _, _, ta = self.tls_get("a.test")
        _, _, tb = self.tls_get("b.test")
        with open(self.config, "w") as f:
            f.write(self.config_text("allow: [a.test]"))
        n = self.moat.sighup()
        self.moat.wait_line("name=b.test verdict=block reason=policy-reload", start=n)
        tb.settimeout(5)
        try:
            self.assertEqual(tb.recv(100), b"")
        except (ConnectionResetError, ssl.SSLError):
            pass
        ta.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        _, body = pf.read_response(lambda: ta.recv(65536))
        self.assertEqual(body, b"server-a\n")

    def test_listen_in_use_exits_2(self):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.socks.append(busy)
        port = busy.getsockname()[1]
        text = ("dns: {listen: [], upstream: [\"127.0.0.1:%d\"]}\n"
                "proxy:\n  tls: [\"127.0.0.1:%d\"]\n  http: []\n" % (self.up_port, port))
        self.moat = Moat(write_config(self.dir, text, "busy.yaml"))
        self.assertEqual(self.moat.wait_exit(), 2)
        self.assertTrue(any("proxy: listen 127.0.0.1:%d (tls)" % port in l
                            for l in self.moat.lines), self.moat.lines)

    def test_sigterm_with_open_connection_exits_zero(self):
        self.start()
        _, body, t = self.tls_get("a.test")
        self.moat.wait_line("proxy listening on tls 127.0.0.1:%d" % self.tls_port)
        self.assertEqual(self.moat.stop(signal.SIGTERM), 0)

    def test_audit_mode_lets_blocked_through_and_logs_it(self):
        self.start("mode: audit\nallow: [b.test]")
        head, body = self.http(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        self.assertEqual(body, b"http-a\n")
        for x in self.socks:
            x.close()
        i = self.moat.wait_line("name=a.test verdict=block reason=not-allowed")
        self.assertIn("audit=passed", self.moat.lines[i])

    def test_reload_opens_and_closes_listeners(self):
        self.start()
        new_http = free_port()
        text = self.config_text("allow: [a.test]").replace(
            "http: [\"127.0.0.1:%d\"]" % self.http_port, "http: [\"127.0.0.1:%d\"]" % new_http)
        with open(self.config, "w") as f:
            f.write(text)
        n = self.moat.sighup("proxy listening on http 127.0.0.1:%d" % new_http)
        self.moat.wait_line("no longer listening on http 127.0.0.1:%d" % self.http_port, start=n)
        self.http_port = new_http
        _, body = self.http(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertEqual(body, b"http-a\n")
        # The kept tls listener still serves.
        _, body, _ = self.tls_get("a.test")
        self.assertEqual(body, b"server-a\n")

    def test_accept_backs_off_on_emfile(self):
        if not shutil.which("prlimit"):
            self.skipTest("no prlimit")
        # One worker: each worker's listeners back off on their own (and
        # each says so once).
        self.start(proxy_extra="", allow="workers: 1\nallow: [a.test, bulk.test]")
        pid = self.moat.proc.pid
        base = len(os.listdir("/proc/%d/fd" % pid))
        # Soft limit only (raising a hard limit again needs CAP_SYS_RESOURCE).
        subprocess.run(["prlimit", "--pid", str(pid), "--nofile=%d:" % (base + 2)],
                       check=True, timeout=10)
        held = [self.connect(self.tls_port) for _ in range(2)]
        third = self.connect(self.tls_port)  # completed by the kernel, not accepted
        self.moat.wait_line("pausing accepts")

        def cpu():
            with open("/proc/%d/stat" % pid) as f:
                v = f.read().rsplit(")", 1)[1].split()
            return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")

        c0 = cpu()
        time.sleep(1.0)
        self.assertLess(cpu() - c0, 0.5, "accept loop spinning on EMFILE")
        self.assertEqual(sum("pausing accepts" in l for l in self.moat.lines), 1)
        subprocess.run(["prlimit", "--pid", str(pid), "--nofile=4096:"], check=True,
                       timeout=10)
        for h in held:
            h.close()
        self.moat.wait_line("accepting again", timeout=5)
        t = self.ctx().wrap_socket(third, server_hostname="a.test")
        self.socks.append(t)
        t.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        _, body = pf.read_response(lambda: t.recv(65536))
        self.assertEqual(body, b"server-a\n")

    # ---- transparent listener (nftables REDIRECT) ----------------------------------------------

    def start_transparent(self, allow):
        self.t_port, self.dns_port = free_port(), free_port()
        text = ("dns: {listen: [\"127.0.0.1:%d\"], upstream: [\"127.0.0.1:%d\"]}\n"
                "proxy:\n  transparent: [\"127.0.0.1:%d\"]\n  tls: []\n  http: []\n"
                "log: {allowed: true}\n%s\n" % (self.dns_port, self.up_port, self.t_port, allow))
        self.moat = Moat(write_config(self.dir, text, "transparent.yaml"))
        self.moat.wait_line("moat running")
        self.moat.wait_line("proxy listening on transparent 127.0.0.1:%d" % self.t_port)
        self.nfts.append(pf.Nft([443, 80, 2222], self.t_port))

    def guest_connect(self, addr, port):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socks.append(s)
        s.settimeout(10)
        s.bind((pf.GUEST, 0))
        s.connect((addr, port))
        return s

    def assert_guest_reset(self, addr, port):
        """A guest connection moat resets at once: on loopback the RST may
        already be there when connect() returns."""
        try:
            s = self.guest_connect(addr, port)
        except ConnectionResetError:
            return
        self.assert_reset(s)

    def guest_resolve(self, name):
        """Resolve name through moat's DNS from the guest's address."""
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socks.append(u)
        u.bind((pf.GUEST, 0))
        u.settimeout(3)
        u.sendto(build_query(name), ("127.0.0.1", self.dns_port))
        return [rr.addr() for rr in Response(u.recv(4096)).answer if rr.type == 1]

    def bulk_exchange(self, s, blocks=1):
        # Framed as the request's body: every request is decided (SPEC §2.3).
        s.sendall(b"POST / HTTP/1.1\r\nHost: bulk.test\r\nX-Blocks: %d\r\nContent-Length: %d\r\n\r\n"
                  % (blocks, blocks * len(pf.UP_BLOCK)))
        for _ in range(blocks):
            s.sendall(pf.UP_BLOCK)
        s.shutdown(socket.SHUT_WR)
        data = recv_all(s, 20)
        self.assertEqual(len(data) - data.rindex(b"sha256="), len(data) - blocks * (1 << 20))
        return data

    def test_transparent_sni_lands_on_the_named_server(self):
        self.start_transparent("allow: [a.test]")
        # Aimed at b.test's address, SNI a.test: moat dials a.test itself.
        s = self.guest_connect(pf.ADDRS["b"], 443)
        t = self.ctx().wrap_socket(s, server_hostname="a.test")
        self.socks.append(t)
        t.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        _, body = pf.read_response(lambda: t.recv(65536))
        self.assertEqual(body, b"server-a\n")
        t.close()
        i = self.moat.wait_line("listener=transparent client=%s" % pf.GUEST)
        self.assertIn("name=a.test verdict=allow", self.moat.lines[i])
        self.assertIn("dest=%s port=443" % pf.ADDRS["a"], self.moat.lines[i])

    def test_transparent_blocked_name_gets_alert(self):
        self.start_transparent("allow: [a.test]")
        s = self.guest_connect(pf.ADDRS["b"], 443)
        with self.assertRaises(ssl.SSLError) as e:
            self.ctx().wrap_socket(s, server_hostname="b.test")
        self.assertIn("ACCESS_DENIED", str(e.exception).upper())
        self.moat.wait_line("name=b.test verdict=block reason=not-allowed")

    def test_transparent_other_port_needs_resolution_through_moat(self):
        self.start_transparent("allow: [{host: bulk.test, ports: [2222]}]")
        self.assert_guest_reset(pf.ADDRS["bulk"], 2222)
        self.moat.wait_line("dest=%s port=2222 verdict=block reason=not-allowed" %
                            pf.ADDRS["bulk"])
        self.assertEqual(self.guest_resolve("bulk.test"), [pf.ADDRS["bulk"]])
        s = self.guest_connect(pf.ADDRS["bulk"], 2222)
        self.bulk_exchange(s)
        s.close()
        self.moat.wait_line("name=bulk.test verdict=allow reason=allowlist rule=")

    def test_transparent_address_rule_admits_without_peeking(self):
        self.start_transparent("allow: [{cidr: %s/32, ports: [2222]}]" % pf.ADDRS["bulk"])
        s = self.guest_connect(pf.ADDRS["bulk"], 2222)
        self.bulk_exchange(s, 2)
        # Same address, a port the rule does not list: reset.
        s = self.guest_connect(pf.ADDRS["bulk"], 80)
        s.sendall(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")
        head, _ = pf.read_response(lambda: s.recv(65536))
        self.assertTrue(head.startswith("HTTP/1.1 403"), head)

    def test_transparent_filtering_off_splices_to_original_destination(self):
        self.start_transparent("")
        s = self.guest_connect(pf.ADDRS["bulk"], 2222)
        self.bulk_exchange(s, 3)
        s.close()
        self.moat.wait_line("dest=%s port=2222 verdict=allow reason=filter-off" %
                            pf.ADDRS["bulk"])

    def test_transparent_direct_connection_is_own_listener(self):
        self.start_transparent("allow: []")
        # Not redirected: the destination is moat itself.
        self.assert_reset_at_once(self.t_port)
        # Loopback: the refused range comes first (own-listener is the
        # reason for moat's listeners on other addresses).
        self.moat.wait_line("dest=127.0.0.1 port=%d verdict=block reason=refused-range" %
                            self.t_port)


if __name__ == "__main__":
    unittest.main(verbosity=2)
