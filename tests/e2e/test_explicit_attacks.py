"""End-to-end: what moat's explicit proxies refuse (SPEC §2.3 end, §2.5,
§2.6), with the real binary and real clients in a guest namespace whose
only way out is moat (see explicitfixture.py):

- inside an allowed tunnel to a TLS port, a ClientHello naming another name
  (openssl s_client -proxy, gnutls-cli through a CONNECT made in Python,
  Python's ssl, a raw hello): a TLS access_denied alert (`sni-mismatch`),
  and the other site's server never sees a byte; no SNI is allowed;
- inside a tunnel to an HTTP port, a request naming another host
  (`host-mismatch`), first or later;
- every HTTP request decided, on the http, transparent and connect
  listeners: a keep-alive or pipelined second request naming another
  virtual host of the allowed name's own nginx is refused (`host-switch`)
  after the answers owed, and that vhost's access log stays empty;
  request bodies that look like requests are bodies;
- §2.5: loopback, metadata and private destinations in IPv6 clothing;
- a SOCKS IPv4 target on a port only a name rule lists: refused until the
  client resolved the name to it through moat (SPEC §2.3 step 3)."""
import socket
import ssl
import threading
import unittest

import explicitfixture as xf
import proxyfixture as pf
from moatlib import recv_all

SKIP = pf.netns_skip(__name__, __file__)

GET = "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"


def get(host, path="/", extra=""):
    return GET.format(host=host, path=path, extra=extra).encode()


class Forwarder:
    """A listener on the guest's loopback (127.0.0.1:port in the guest)
    that, for each connection, opens a CONNECT tunnel to target through
    moat and relays both ways: lets a client with no proxy support
    (gnutls-cli) talk through a raw CONNECT. self.statuses: the CONNECT
    answers, in order."""

    def __init__(self, guest, target, port=4433):
        self.guest, self.target, self.port = guest, target, port
        self.statuses = []
        with guest.inside():
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            u = self.guest.connect(xf.CONNECT_PORT)
            status, _, _ = xf.connect_request(u, self.target)
            self.statuses.append(status)
            if status != 200:
                return
            t = threading.Thread(target=self._pipe, args=(u, c), daemon=True)
            t.start()
            self._pipe(c, u)
            t.join(20)
        except (OSError, AssertionError):
            pass
        finally:
            c.close()

    @staticmethod
    def _pipe(a, b):
        try:
            a.settimeout(20)
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


@unittest.skipIf(SKIP, SKIP)
class ExplicitAttackTest(xf.ExplicitCase):
    NEEDS = ["curl", "openssl", "gnutls-cli", "nft", "git", "fcgiwrap", "sshd", "ssh",
             "ssh-keygen", "nc", "dig"]

    def assert_vhost_untouched(self, *names):
        for n in names:
            self.assertEqual(self.nginx.access_log(n), "", "%s's server saw a request" % n)

    # ---- SNI inside a tunnel ------------------------------------------------------------------

    def test_sni_of_another_name_in_a_connect_tunnel_gets_the_alert(self):
        """The recorder behind rec.test stands for the allowed name's server:
        it never receives a byte of the hello for blocked.test."""
        self.start()
        s, status, _ = self.tunnel("rec.test:443")
        self.assertEqual(status, 200)
        self.assertEqual(xf.tls_alert_from(s, pf.client_hello("blocked.test")), "access_denied")
        self.assert_closed(s)
        self.moat.line_with("listener=connect", "name=blocked.test", "reason=sni-mismatch")
        # the hello split across writes and records changes nothing
        s, status, _ = self.tunnel("rec.test:443")
        self.assertEqual(status, 200)
        hello = pf.split_records(pf.client_hello("blocked.test"), 7)
        for i in range(0, len(hello) - 1, 50):
            s.sendall(hello[i:min(i + 50, len(hello) - 1)])
        self.assertEqual(xf.tls_alert_from(s, hello[-1:]), "access_denied")
        self.assertEqual(self.rec.total(), 0, "the server saw bytes of a refused hello")
        # the allowed name's own SNI goes through to it
        s, status, _ = self.tunnel("rec.test:443")
        hello = pf.client_hello("rec.test")
        s.sendall(hello)
        xf.wait_until(lambda: self.rec.total() == len(hello), 5, "the hello at rec.test")
        s.close()
        self.moat.line_with("listener=connect", "name=rec.test", "verdict=allow")

    def test_fronting_the_allowed_names_server_with_python_ssl(self):
        """secret.test is a virtual host of allowed.test's own nginx (one
        address, one certificate): SNI secret.test through a tunnel to
        allowed.test is refused, and secret.test's access log stays empty."""
        self.start()
        s, status, _ = self.tunnel("allowed.test:443")
        self.assertEqual(status, 200)
        with self.assertRaises(ssl.SSLError) as cm:
            xf.tls_in_tunnel(s, "secret.test", self.cert)
        self.assertIn("ACCESS_DENIED", str(cm.exception).upper())
        self.moat.line_with("listener=connect", "name=secret.test", "reason=sni-mismatch")
        # over SOCKS5 (a name target) too
        s, rep = self.socks_tunnel("allowed.test", 443)
        self.assertEqual(rep, 0)
        with self.assertRaises(ssl.SSLError) as cm:
            xf.tls_in_tunnel(s, "secret.test", self.cert)
        self.assertIn("ACCESS_DENIED", str(cm.exception).upper())
        self.moat.line_with("listener=socks", "name=secret.test", "reason=sni-mismatch")
        # no SNI at all is allowed (the tunnel already named the host)
        s, status, _ = self.tunnel("allowed.test:443")
        ctx = ssl.create_default_context(cafile=self.cert)
        ctx.check_hostname = False
        t = ctx.wrap_socket(s)
        self.socks.append(t)
        self.assertEqual(xf.get_over(t, "allowed.test"), ("HTTP/1.1 200 OK", b"allowed-site\n"))
        self.assert_vhost_untouched("secret")

    def test_openssl_s_client_with_another_servername(self):
        self.start()
        proxy = "%s:%d" % (xf.GW, xf.CONNECT_PORT)
        base = ["openssl", "s_client", "-proxy", proxy, "-connect", "allowed.test:443",
                "-CAfile", self.cert, "-verify_return_error"]
        r = self.guest.run(*base, "-servername", "secret.test", input="", timeout=20)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("alert access denied", r.stdout + r.stderr)
        self.moat.line_with("listener=connect", "name=secret.test", "reason=sni-mismatch")
        r = self.guest.run(*base, "-servername", "allowed.test", input="", timeout=20)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Verify return code: 0 (ok)", r.stdout)
        self.assert_vhost_untouched("secret")

    def test_gnutls_cli_through_a_python_connect(self):
        self.start()
        fwd = Forwarder(self.guest, "allowed.test:443")
        self.addCleanup(fwd.stop)
        base = ["gnutls-cli", "--x509cafile", self.cert, "-p", str(fwd.port)]
        r = self.guest.run(*base, "--sni-hostname", "secret.test", "--verify-hostname",
                           "allowed.test", "127.0.0.1", input="", timeout=20)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Received alert [49]", r.stdout + r.stderr)  # access_denied
        r = self.guest.run(*base, "--sni-hostname", "allowed.test", "--verify-hostname",
                           "allowed.test", "127.0.0.1", input="", timeout=20)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Handshake was completed", r.stdout)
        self.assertEqual(fwd.statuses, [200, 200])
        self.moat.line_with("listener=connect", "name=secret.test", "reason=sni-mismatch")
        self.assert_vhost_untouched("secret")

    # ---- Host inside a tunnel -----------------------------------------------------------------

    def test_host_of_another_name_in_a_tunnel_to_port_80(self):
        self.start()
        # the first request already names another host
        s, status, _ = self.tunnel("allowed.test:80")
        self.assertEqual(status, 200)
        s.sendall(get("secret.test"))
        status, h, _ = xf.read_head_exact(s)
        self.assertEqual((status, h.get("x-proxy-error")), (403, "blocked-by-allowlist"))
        self.assert_closed(s)
        self.moat.line_with("listener=connect", "name=secret.test", "reason=host-mismatch")
        # an absolute URI naming another host, with the right Host header
        s, _, _ = self.tunnel("allowed.test:80")
        s.sendall(b"GET http://secret.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
        self.assertEqual(xf.read_head_exact(s)[0], 403)
        # a keep-alive second request (CONNECT, then SOCKS5)
        s, _, _ = self.tunnel("allowed.test:80")
        self.assert_second_request_refused(s, "host-mismatch", "listener=connect")
        s, rep = self.socks_tunnel("allowed.test", 80)
        self.assertEqual(rep, 0)
        self.assert_second_request_refused(s, "host-mismatch", "listener=socks")
        self.assert_vhost_untouched("secret")

    def assert_second_request_refused(self, s, reason, listener, pipelined=False,
                                      second="secret.test"):
        """On s (a connection whose first request may name allowed.test):
        GET / for allowed.test (keep-alive), then GET / for second: the
        first is answered by its server, the second gets moat's 403, then
        s is closed; reason and listener are in the log."""
        mark = len(self.moat.lines)
        before = self.nginx.access_log("allowed").count("\n")
        first, then = get("allowed.test"), get(second, extra="Connection: close\r\n")
        reader = xf.HttpReader(s)
        s.sendall(first + then if pipelined else first)
        status, _, body = reader.response()
        self.assertEqual((status, body), (200, b"allowed-site\n"))
        if not pipelined:
            s.sendall(then)
        status, h, _ = reader.response()
        self.assertEqual(status, 403)
        self.assertEqual(h.get("x-proxy-error"), "blocked-by-allowlist")
        self.assert_closed(s)
        self.moat.line_with(listener, "name=%s" % second, "reason=%s" % reason, start=mark)
        # nginx logs a request as it ends: the first one only
        count = lambda: self.nginx.access_log("allowed").count("\n")  # noqa: E731
        xf.wait_until(lambda: count() > before, 5, "allowed.test's access log line")
        self.assertEqual(count(), before + 1, self.nginx.access_log("allowed"))

    # ---- every request decided (SPEC §2.3 end) -----------------------------------------------

    def test_keepalive_and_pipelined_host_switch_on_the_http_listener(self):
        self.start()
        s = self.gconnect(xf.HTTP_PORT)
        self.assert_second_request_refused(s, "host-switch", "listener=http")
        s = self.gconnect(xf.HTTP_PORT)
        self.assert_second_request_refused(s, "host-switch", "listener=http", pipelined=True)
        # another host that is allowed is refused all the same: it is not
        # what the connection was decided for (git.test has no vhost here,
        # so nginx would answer it from allowed.test's default server)
        s = self.gconnect(xf.HTTP_PORT)
        self.assert_second_request_refused(s, "host-switch", "listener=http", pipelined=True,
                                           second="git.test")
        self.assert_vhost_untouched("secret", "git")

    def test_host_switch_on_the_transparent_listener(self):
        """The guest of proxyfixture (198.18.0.5, in the host namespace)
        redirected to the transparent listener by nftables."""
        self.start(proxy_extra='  transparent: ["127.0.0.1:15001"]\n')
        nft = pf.Nft([80], 15001)
        self.nfts.append(nft)
        for pipelined in (False, True):
            s = socket.create_connection((xf.ALLOWED, 80), timeout=10,
                                         source_address=(pf.GUEST, 0))
            self.socks.append(s)
            self.assert_second_request_refused(s, "host-switch", "listener=transparent",
                                               pipelined=pipelined)
        self.assert_vhost_untouched("secret")

    def test_absolute_form_pipelined_pair_on_the_connect_listener(self):
        """One request per proxy connection: the second of a pipelined pair
        never reaches secret.test's virtual host."""
        self.start()
        s = self.gconnect(xf.CONNECT_PORT)
        reader = xf.HttpReader(s)
        s.sendall(b"GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
                  b"GET http://secret.test/ HTTP/1.1\r\nHost: secret.test\r\n\r\n")
        self.assertEqual(reader.response()[::2], (200, b"allowed-site\n"))
        rest = reader.buf
        try:
            rest += recv_all(s, timeout=5)
        except (ConnectionResetError, socket.timeout):
            pass
        self.assertNotIn(b"secret-site", rest)
        self.nginx.wait_access("allowed", '"GET / HTTP/1.1" 200')
        self.assert_vhost_untouched("secret")

    def test_bodies_that_look_like_requests_are_bodies(self):
        """Request boundaries: a Content-Length body and a chunked body (with
        an extension and a trailer) holding a request for secret.test are
        relayed as bodies, and the next request (allowed.test) is answered."""
        self.start()
        fake = get("secret.test")
        chunked = (b"5;ext=1\r\n" + fake[:5] + b"\r\n" + b"%x\r\n" % (len(fake) - 5) +
                   fake[5:] + b"\r\n0\r\nX-Trailer: 1\r\n\r\n")
        for body_head, body in ((b"Content-Length: %d\r\n" % len(fake), fake),
                                (b"Transfer-Encoding: chunked\r\n", chunked)):
            for port in (xf.HTTP_PORT, None):
                if port:
                    s = self.gconnect(port)
                    listener = "listener=http"
                else:
                    s, _, _ = self.tunnel("allowed.test:80")
                    listener = "listener=connect"
                mark = len(self.moat.lines)
                reader = xf.HttpReader(s)
                s.sendall(b"POST / HTTP/1.1\r\nHost: allowed.test\r\n" + body_head + b"\r\n" +
                          body + get("allowed.test", extra="Connection: close\r\n"))
                self.assertEqual(reader.response()[0], 405)  # nginx: POST to a static page
                self.assertEqual(reader.response()[::2], (200, b"allowed-site\n"))
                s.close()
                self.moat.line_with(listener, "name=allowed.test", "verdict=allow", start=mark)
                self.assertFalse([l for l in self.moat.lines[mark:] if "verdict=block" in l])
        self.assert_vhost_untouched("secret")

    def test_backslash_in_an_absolute_uri_is_refused(self):
        """`http://secret.test\\@allowed.test/`: a WHATWG URL parser reads the
        host as secret.test."""
        self.start()
        for port in (xf.HTTP_PORT, xf.CONNECT_PORT):
            s = self.gconnect(port)
            s.sendall(b"GET http://secret.test\\@allowed.test/ HTTP/1.1\r\n"
                      b"Host: allowed.test\r\nConnection: close\r\n\r\n")
            status, _, _ = xf.read_head_exact(s)
            self.assertIn(status, (400, 403), port)
        self.assert_vhost_untouched("secret")
        self.assertEqual(self.nginx.access_log("allowed"), "")

    # ---- SPEC §2.5 --------------------------------------------------------------------------

    def test_ipv6_forms_of_refused_addresses(self):
        self.start()
        cases = [("127.0.0.1:22", "refused-range"),
                 ("[::ffff:127.0.0.1]:22", "refused-range"),    # IPv4-mapped
                 ("[::127.0.0.1]:22", "refused-range"),         # IPv4-compatible
                 ("[64:ff9b::7f00:1]:22", "refused-range"),     # NAT64
                 ("[2002:7f00:1::]:22", "refused-range"),       # 6to4
                 ("169.254.169.254:80", "refused-range"),
                 ("[::ffff:169.254.169.254]:80", "refused-range"),
                 ("[64:ff9b::a9fe:a9fe]:80", "refused-range"),
                 ("mapped.test:443", "private-range")]          # AAAA ::ffff:10.0.0.1
        for target, reason in cases:
            mark = len(self.moat.lines)
            _, status, h = self.tunnel(target)
            self.assertEqual(status, 403, target)
            self.moat.line_with("listener=connect", "reason=" + reason, start=mark)
        # the same through SOCKS5 (IPv6 and IPv4 address targets)
        for host, port in (("::ffff:127.0.0.1", 22), ("64:ff9b::a9fe:a9fe", 80),
                           ("127.0.0.1", 22), ("169.254.169.254", 80)):
            self.assertEqual(self.socks_tunnel(host, port)[1], 2, host)
        self.assertEqual(self.socks_tunnel("mapped.test", 443)[1], 2)
        # and moat's DNS answers mapped.test's AAAA with no address (the
        # rebinding filter sees the IPv4 address inside)
        self.assertEqual(self.resolve_in_guest("mapped.test", qtype="AAAA"), [])

    # ---- SOCKS IPv4 targets: step 3 ---------------------------------------------------------

    def test_socks_ipv4_target_needs_the_name_resolved_through_moat(self):
        self.start()
        s, rep = self.socks_tunnel(xf.SSHADDR, 22)
        self.assertEqual(rep, 2)
        self.moat.line_with("listener=socks", "dest=%s" % xf.SSHADDR, "port=22",
                            "verdict=block")
        # the guest asks moat's DNS (its resolv.conf), then the same target works
        r = self.guest.run("dig", "+short", "+time=3", "+tries=1", "ssh.test", timeout=15)
        self.assertEqual(r.stdout.split(), [xf.SSHADDR], r.stderr)
        s, rep = self.socks_tunnel(xf.SSHADDR, 22)
        self.assertEqual(rep, 0)
        s.settimeout(10)
        self.assertTrue(s.recv(100).startswith(b"SSH-2.0-"))
        s.close()
        # ... and ssh to the address, through nc -X 5
        nc = "nc -X 5 -x %s:%d %%h %%p" % (xf.GW, xf.SOCKS_PORT)
        r = self.guest.run(*self.sshd.ssh_args(nc, target=xf.SSHADDR), "echo", "by-address",
                           timeout=60)
        self.assertEqual((r.returncode, r.stdout), (0, "by-address\n"), r.stderr)
        # the memory is per client address: the guest's other address did not ask
        self.assertEqual(self.socks_tunnel(xf.SSHADDR, 22, src=xf.GUEST_B)[1], 2)
        # a CONNECT to the address is decided the same way
        _, status, _ = self.tunnel("%s:22" % xf.SSHADDR)
        self.assertEqual(status, 200)
        _, status, _ = self.tunnel("%s:22" % xf.SSHADDR, src=xf.GUEST_B)
        self.assertEqual(status, 403)


if __name__ == "__main__":
    unittest.main(verbosity=2)
