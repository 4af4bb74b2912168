"""End-to-end: the explicit proxies (SPEC §2.6) with the real binary and real
clients in a guest network namespace whose only way out is moat (see
explicitfixture.py): curl through the CONNECT proxy (`-x http://`) and the
SOCKS5 proxy (`socks5h://`), git over HTTPS through CONNECT, ssh through
SOCKS5 with `nc -X 5` as ProxyCommand, Python's urllib with a ProxyHandler;
the answers of §2.6 (403, 502, 504, 400; the SOCKS5 reply codes), proxy
users (§2.7: 407, the RFC 1929 failure, a user of one tenant from another
tenant's address; no secret in the log), reload closing a tunnel the new
policy refuses, and the `listener` label in /metrics.

The attacks (an SNI or Host other than the one asked for, a keep-alive
second request to another virtual host, §2.5 addresses, a SOCKS IPv4
target no name was resolved to) are test_explicit_attacks.py's."""
import hashlib
import os
import shutil
import socket
import ssl

import unittest
import urllib.error
import urllib.request

import explicitfixture as xf
import proxyfixture as pf
from moatlib import recv_all

SKIP = pf.netns_skip(__name__, __file__)

PW = {"u1": "pw-a-Zx81q", "u2": "pw-b-Qy72r", "u3": "pw-c-Wv63s"}
BAD = "bad-Kp93z"  # a wrong password, never to be logged either
AUTH_CONFIG = """allow: []
tenants:
  - name: team-a
    clients: ["{a}"]
    users: [{{name: u1, password: "{u1}"}}]
    allow: [allowed.test, rec.test]
  - name: team-b
    clients: ["{b}"]
    users: [{{name: u2, password: "sha256:{u2hash}"}}]
    allow: [blocked.test]
  - name: team-c
    users: [{{name: u3, password: "{u3}"}}]
    allow: [secret.test]
""".format(a=xf.GUEST_A, b=xf.GUEST_B, u1=PW["u1"], u3=PW["u3"],
           u2hash=hashlib.sha256(PW["u2"].encode()).hexdigest())


@unittest.skipIf(SKIP, SKIP)
class ExplicitProxyTest(xf.ExplicitCase):

    # ---- curl ---------------------------------------------------------------------------------

    def test_curl_connect_https_allowed_and_blocked(self):
        self.start()
        r = self.curl("-x", self.proxy_url(), "https://allowed.test/")
        self.assertEqual((r.returncode, r.stdout), (0, "allowed-site\n"), r.stderr)
        self.moat.line_with("listener=connect", "client=%s:" % xf.GUEST_A, "port=443",
                            "name=allowed.test", "verdict=allow")
        r = self.curl("-x", self.proxy_url(), "-o", "/dev/null", "-w", "%{http_connect}",
                      "https://blocked.test/")
        self.assertEqual(r.returncode, 56, r.stderr)  # CURLE_RECV_ERROR: CONNECT refused
        self.assertEqual(r.stdout, "403")
        self.moat.line_with("listener=connect", "name=blocked.test", "verdict=block",
                            "reason=not-allowed")
        self.assertEqual(self.nginx.access_log("blocked"), "")

    def test_curl_connect_proxy_plain_http(self):
        """Absolute-form requests: forwarded in origin form; a blocked name
        gets moat's 403 with X-Proxy-Error."""
        self.start()
        r = self.curl("-x", self.proxy_url(), "http://allowed.test/")
        self.assertEqual((r.returncode, r.stdout), (0, "allowed-site\n"), r.stderr)
        self.nginx.wait_access("allowed", '"GET / HTTP/1.1" 200')
        self.moat.line_with("listener=connect", "port=80", "name=allowed.test", "verdict=allow")
        r = self.curl("-x", self.proxy_url(), "-i", "http://blocked.test/")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^HTTP/1\.1 403 ")
        self.assertIn("X-Proxy-Error: blocked-by-allowlist", r.stdout)
        self.moat.line_with("listener=connect", "port=80", "name=blocked.test",
                            "reason=not-allowed")
        self.assertEqual(self.nginx.access_log("blocked"), "")

    def test_curl_socks5h_https_and_http(self):
        self.start()
        socks = self.proxy_url("socks5h")
        r = self.curl("--proxy", socks, "https://allowed.test/")
        self.assertEqual((r.returncode, r.stdout), (0, "allowed-site\n"), r.stderr)
        r = self.curl("--proxy", socks, "http://allowed.test/")
        self.assertEqual((r.returncode, r.stdout), (0, "allowed-site\n"), r.stderr)
        self.moat.line_with("listener=socks", "port=443", "name=allowed.test", "verdict=allow")
        self.moat.line_with("listener=socks", "port=80", "name=allowed.test", "verdict=allow")
        for url in ("https://blocked.test/", "http://blocked.test/"):
            r = self.curl("--proxy", socks, url)
            self.assertEqual(r.returncode, 97, r.stderr)  # CURLE_PROXY
            self.assertIn("(2)", r.stderr)  # 0x02: not allowed by the ruleset
        self.moat.line_with("listener=socks", "name=blocked.test", "verdict=block",
                            "reason=not-allowed")
        self.assertEqual(self.nginx.access_log("blocked"), "")

    def test_the_guest_has_no_other_way_out(self):
        """The fixture's premise: without the proxy, the guest reaches
        nothing (no route), even with the server's address in hand."""
        self.start()
        r = self.curl("--noproxy", "*", "--max-time", "3", "--resolve",
                      "allowed.test:443:" + xf.ALLOWED, "https://allowed.test/")
        self.assertEqual(r.returncode, 7, r.stderr)  # CURLE_COULDNT_CONNECT

    # ---- git, ssh, urllib ---------------------------------------------------------------------

    def test_git_over_https_through_connect(self):
        self.start()
        env = xf.git_env(self.home)
        env.update(https_proxy=self.proxy_url(), GIT_SSL_CAINFO=self.cert)
        r = self.guest.run("git", "ls-remote", "https://git.test/repo.git", env=env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("%s\trefs/heads/main" % self.git_head, r.stdout)
        dst = os.path.join(self.dir, "clone")
        shutil.rmtree(dst, ignore_errors=True)
        r = self.guest.run("git", "clone", "-q", "https://git.test/repo.git", dst, env=env,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(dst, "README")) as f:
            self.assertEqual(f.read(), "moat git over CONNECT\n")
        self.moat.line_with("listener=connect", "name=git.test", "port=443", "verdict=allow")
        # The same clone from a name moat does not allow fails at CONNECT.
        r = self.guest.run("git", "ls-remote", "https://blocked.test/repo.git", env=env,
                           timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("403", r.stderr)

    def test_ssh_through_socks_with_nc(self):
        self.start()
        nc = "nc -X 5 -x %s:%d %%h %%p" % (xf.GW, xf.SOCKS_PORT)
        r = self.guest.run(*self.sshd.ssh_args(nc), "echo", "hello-over-moat", timeout=60)
        self.assertEqual((r.returncode, r.stdout), (0, "hello-over-moat\n"), r.stderr)
        self.moat.line_with("listener=socks", "name=ssh.test", "port=22", "verdict=allow")
        # allowed.test is allowed on 443 and 80 only.
        r = self.guest.run(*self.sshd.ssh_args(nc, target="allowed.test"), "true", timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.moat.line_with("listener=socks", "name=allowed.test", "port=22", "verdict=block",
                            "reason=port-not-allowed")

    def test_python_urllib_through_connect(self):
        self.start()
        proxy = self.proxy_url()
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"https": proxy, "http": proxy}),
            urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=self.cert)))
        with self.guest.inside():  # urllib's sockets are made in this thread
            with opener.open("https://allowed.test/", timeout=10) as f:
                self.assertEqual(f.read(), b"allowed-site\n")
            with opener.open("http://allowed.test/big", timeout=10) as f:
                self.assertEqual(f.read(), xf.NginxVhosts.BIG)
            with self.assertRaises(OSError) as cm:  # http.client: "Tunnel connection failed"
                opener.open("https://blocked.test/", timeout=10)
            self.assertIn("403", str(cm.exception))
            with self.assertRaises(urllib.error.HTTPError) as cm:
                opener.open("http://blocked.test/", timeout=10)
            self.assertEqual(cm.exception.code, 403)
            self.assertEqual(cm.exception.headers["X-Proxy-Error"], "blocked-by-allowlist")
            cm.exception.close()
        self.moat.line_with("listener=connect", "name=allowed.test", "port=443",
                            "verdict=allow")

    # ---- what each listener answers (SPEC §2.6) -----------------------------------------------

    def test_connect_answers(self):
        self.start()
        s, status, h = self.tunnel("allowed.test:443")
        self.assertEqual(status, 200)
        t = xf.tls_in_tunnel(s, "allowed.test", self.cert)
        self.socks.append(t)
        self.assertEqual(xf.get_over(t, "allowed.test"), ("HTTP/1.1 200 OK", b"allowed-site\n"))

        _, status, h = self.tunnel("blocked.test:443")
        self.assertEqual((status, h.get("x-proxy-error")), (403, "blocked-by-allowlist"))
        _, status, h = self.tunnel("nx.test:443")  # allowed, NXDOMAIN upstream
        self.assertEqual((status, h.get("x-proxy-error")), (502, "dns-failure"))
        _, status, h = self.tunnel("closed.test:443")  # nothing listens: refused
        self.assertEqual((status, h.get("x-proxy-error")), (502, "dial-failed"))
        _, status, h = self.tunnel("black.test:443")  # SYNs dropped: connect_timeout 1s
        self.assertEqual((status, h.get("x-proxy-error")), (504, "connect-timeout"))
        self.assertRegex(self.moat.line_with("listener=connect", "name=nx.test", "verdict=block"),
                         r"reason=(no-address|dns-failure)")
        self.moat.line_with("listener=connect", "name=closed.test", "reason=dial-failed")
        self.moat.line_with("listener=connect", "name=black.test", "reason=connect-timeout")

        # HTTP, but no proxy request: 400
        served = self.nginx.access_log("allowed")
        for bad in (b"CONNECT allowed.test HTTP/1.1\r\n\r\n",  # no port
                    b"CONNECT allowed.test:0 HTTP/1.1\r\n\r\n",
                    b"CONNECT allowed.test:65536 HTTP/1.1\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n",  # origin form
                    b"GET https://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
                    b"GET http://u:p@allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n"):
            s = self.gconnect(xf.CONNECT_PORT)
            s.sendall(bad)
            status, _, _ = xf.read_head_exact(s)
            self.assertEqual(status, 400, bad)
        self.assertEqual(self.nginx.access_log("allowed"), served)
        # not HTTP at all: closed
        s = self.gconnect(xf.CONNECT_PORT)
        s.sendall(pf.client_hello("allowed.test"))
        self.assert_closed(s)

    def test_socks_replies(self):
        self.start()
        s, rep = self.socks_tunnel("allowed.test", 443)
        self.assertEqual(rep, 0)
        t = xf.tls_in_tunnel(s, "allowed.test", self.cert)
        self.socks.append(t)
        self.assertEqual(xf.get_over(t, "allowed.test"), ("HTTP/1.1 200 OK", b"allowed-site\n"))
        # an IPv6 target an address rule admits on a port that is neither a
        # TLS nor an HTTP port (so nothing inside is checked)
        s, rep = self.socks_tunnel(xf.SIX, xf.SIX_PORT)
        self.assertEqual(rep, 0)
        self.assertEqual(xf.get_over(s, "six.test"), ("HTTP/1.1 200 OK", b"six-site\n"))
        s.close()  # an allowed connection is logged when it ends
        self.moat.line_with("listener=socks", "dest=%s" % xf.SIX, "port=%d" % xf.SIX_PORT,
                            "verdict=allow")

        self.assertEqual(self.socks_tunnel("blocked.test", 443)[1], 2)
        self.assertEqual(self.socks_tunnel("nx.test", 443)[1], 4)
        self.assertEqual(self.socks_tunnel("closed.test", 443)[1], 5)
        self.assertEqual(self.socks_tunnel("black.test", 443)[1], 6)
        self.assertEqual(self.socks_tunnel("allowed.test", 443, cmd=2)[1], 7)  # BIND
        self.assertEqual(self.socks_tunnel("allowed.test", 443, cmd=3)[1], 7)  # UDP ASSOCIATE
        self.assertEqual(self.socks_tunnel("allowed.test", 443, atyp=5)[1], 8)
        self.moat.line_with("listener=socks", "name=blocked.test", "reason=not-allowed")

        # Not SOCKS5: closed without a tunnel.
        s = self.gconnect(xf.SOCKS_PORT)
        s.sendall(b"\x04\x01\x01\xbb\xc6\x12\x00\x02\x00")  # SOCKS4
        self.assert_closed(s)

    # ---- proxy users (SPEC §2.7) ------------------------------------------------------------

    def test_connect_users(self):
        self.start(allow=AUTH_CONFIG)
        # no credentials, a wrong password, an unknown user: 407
        for auth in (None, xf.basic("u1", BAD), xf.basic("nobody", PW["u1"]),
                     "Bearer " + PW["u1"]):
            _, status, h = self.tunnel("allowed.test:443", auth=auth)
            self.assertEqual(status, 407, auth)
            self.assertEqual(h.get("proxy-authenticate"), 'Basic realm="moat"')
        # u1 (team-a): team-a's allow list decides
        s, status, _ = self.tunnel("allowed.test:443", auth=xf.basic("u1", PW["u1"]))
        self.assertEqual(status, 200)
        t = xf.tls_in_tunnel(s, "allowed.test", self.cert)
        self.socks.append(t)
        self.assertEqual(xf.get_over(t, "allowed.test")[1], b"allowed-site\n")
        t.close()
        self.moat.line_with("listener=connect", "tenant=team-a", "name=allowed.test",
                            "verdict=allow")
        _, status, _ = self.tunnel("blocked.test:443", auth=xf.basic("u1", PW["u1"]))
        self.assertEqual(status, 403)
        # u2 (team-b, a sha256: password) from team-b's address
        _, status, _ = self.tunnel("blocked.test:443", src=xf.GUEST_B,
                                   auth=xf.basic("u2", PW["u2"]))
        self.assertEqual(status, 200)
        # u1 from team-b's address: refused, whatever it asks for
        for target in ("allowed.test:443", "blocked.test:443"):
            _, status, _ = self.tunnel(target, src=xf.GUEST_B, auth=xf.basic("u1", PW["u1"]))
            self.assertIn(status, (403, 407), target)
        # u3's tenant has no clients: usable from anywhere, its own list decides
        _, status, _ = self.tunnel("secret.test:443", auth=xf.basic("u3", PW["u3"]))
        self.assertEqual(status, 200)
        _, status, _ = self.tunnel("allowed.test:443", auth=xf.basic("u3", PW["u3"]))
        self.assertEqual(status, 403)

        # curl with the user in the proxy URL, CONNECT and absolute form
        url = self.proxy_url(auth="u1:" + PW["u1"])
        r = self.curl("-x", url, "https://allowed.test/")
        self.assertEqual((r.returncode, r.stdout), (0, "allowed-site\n"), r.stderr)
        r = self.curl("-x", url, "http://allowed.test/")
        self.assertEqual((r.returncode, r.stdout), (0, "allowed-site\n"), r.stderr)
        r = self.curl("-x", self.proxy_url(auth="u1:" + BAD), "-o", "/dev/null", "-w",
                      "%{http_connect}", "https://allowed.test/")
        self.assertEqual((r.returncode, r.stdout), (56, "407"), r.stderr)
        # Proxy-Authorization never reaches the server
        n = len(self.rec80.received)
        r = self.curl("-x", url, "http://rec.test/x")
        self.assertEqual(r.stdout, "recorded\n", r.stderr)
        head = self.rec80.received[n]
        self.assertNotIn(b"proxy-authorization", head.lower())
        self.assert_secrets_absent()

    def test_socks_users(self):
        self.start(allow=AUTH_CONFIG)
        # a client that offers no user/password method
        self.assertEqual(self.socks_tunnel("allowed.test", 443)[1], "no-acceptable-method")
        for user, pw in (("u1", BAD), ("nobody", PW["u1"]), ("u1", PW["u2"])):
            s, rep = self.socks_tunnel("allowed.test", 443, user=user, password=pw)
            self.assertEqual(rep, xf.SOCKS_AUTH_FAILED, (user, pw))
            self.assert_closed(s)
        s, rep = self.socks_tunnel("allowed.test", 443, user="u1", password=PW["u1"])
        self.assertEqual(rep, 0)
        self.assertEqual(self.socks_tunnel("blocked.test", 443, user="u1",
                                           password=PW["u1"])[1], 2)
        s, rep = self.socks_tunnel("blocked.test", 443, src=xf.GUEST_B, user="u2",
                                   password=PW["u2"])
        self.assertEqual(rep, 0)
        s.close()  # an allowed connection is logged when it ends
        s, rep = self.socks_tunnel("allowed.test", 443, src=xf.GUEST_B, user="u1",
                                   password=PW["u1"])
        self.assertIn(rep, (xf.SOCKS_AUTH_FAILED, 2))
        self.moat.line_with("listener=socks", "tenant=team-b", "name=blocked.test",
                            "verdict=allow")
        # curl
        r = self.curl("--proxy", self.proxy_url("socks5h", auth="u1:" + PW["u1"]),
                      "https://allowed.test/")
        self.assertEqual((r.returncode, r.stdout), (0, "allowed-site\n"), r.stderr)
        r = self.curl("--proxy", self.proxy_url("socks5h", auth="u1:" + BAD),
                      "https://allowed.test/")
        self.assertEqual(r.returncode, 97, r.stderr)
        self.assertIn("User was rejected", r.stderr)
        self.assert_secrets_absent()

    def assert_secrets_absent(self):
        """No password, and no Basic credentials, anywhere in moat's log
        (debug level)."""
        for user, pw in PW.items():
            self.assert_not_in_log(pw, xf.basic(user, pw).split()[1])
        self.assert_not_in_log(BAD, xf.basic("u1", BAD).split()[1],
                               hashlib.sha256(PW["u2"].encode()).hexdigest())

    # ---- the same daemon: reload, metrics ---------------------------------------------------

    def test_reload_closes_tunnels_the_new_policy_refuses(self):
        self.start()
        s, status, _ = self.tunnel("allowed.test:443")
        self.assertEqual(status, 200)
        t = xf.tls_in_tunnel(s, "allowed.test", self.cert)
        self.socks.append(t)
        self.assertEqual(xf.get_over(t, "allowed.test", close=False)[1], b"allowed-site\n")
        s2, rep = self.socks_tunnel("allowed.test", 80)
        self.assertEqual(rep, 0)
        self.assertEqual(xf.get_over(s2, "allowed.test", close=False)[1], b"allowed-site\n")
        s3, status, _ = self.tunnel("git.test:443")  # still allowed after the reload
        self.assertEqual(status, 200)
        t3 = xf.tls_in_tunnel(s3, "git.test", self.cert)
        self.socks.append(t3)

        mark = self.reload(self.config_text.replace("  - allowed.test\n", ""))
        self.moat.line_with("listener=connect", "name=allowed.test", "reason=policy-reload",
                            start=mark)
        self.moat.line_with("listener=socks", "name=allowed.test", "reason=policy-reload",
                            start=mark)
        self.assert_closed(t)
        self.assert_closed(s2)
        status, body = xf.get_over(t3, "git.test", "/repo.git/info/refs")
        self.assertEqual(status, "HTTP/1.1 200 OK")
        self.assertIn(b"refs/heads/main", body)
        self.assertFalse(any("name=git.test" in l and "policy-reload" in l
                             for l in self.moat.lines[mark:]))
        _, status, _ = self.tunnel("allowed.test:443")
        self.assertEqual(status, 403)

    def test_metrics_carry_the_listener(self):
        self.start()
        self.assertEqual(self.tunnel("blocked.test:443")[1], 403)
        self.assertEqual(self.socks_tunnel("blocked.test", 443)[1], 2)
        r = self.curl("-x", self.proxy_url(), "https://allowed.test/")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.moat.line_with("listener=connect", "name=allowed.test", "verdict=allow")
        with socket.create_connection(("127.0.0.1", self.metrics_port), timeout=5) as m:
            m.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            text = recv_all(m, timeout=5).decode()
        lines = text.splitlines()
        self.assertTrue(any('listener="connect"' in l and 'verdict="block"' in l
                            and 'reason="not-allowed"' in l for l in lines), text)
        self.assertTrue(any('listener="socks"' in l and 'verdict="block"' in l for l in lines),
                        text)
        self.assertTrue(any('listener="connect"' in l and 'verdict="allow"' in l
                            for l in lines), text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
