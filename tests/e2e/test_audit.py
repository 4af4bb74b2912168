"""End-to-end: `mode: audit` (SPEC §2, §2.2; issue 5 point 4). Every test
runs the same config twice, once with `mode: enforce` and once with
`mode: audit`, and shows the difference: audit decides and logs exactly as
enforce (verdict=block with the same reason, plus audit=passed) but lets the
query or connection through; what DECISIONS.md says audit still enforces
(refused ranges, moat's own listeners, a TLS hello with nowhere to route) is
refused in both modes.

Runs in a network namespace of its own (proxyfixture.reexec_in_netns), with
the addresses of proxyfixture_more.py on lo. Names, served by dnsmasq:
  a.test       198.18.0.2       allowed; nginx TLS "server-a", HTTP "http-a"
  b.test       198.18.0.3       not allowed; nginx TLS "server-b"
  blocked.test 198.18.0.2       not allowed
  lo.test      127.0.0.1        not allowed; refused range
  meta.test    169.254.169.254  not allowed; refused range (nginx HTTP "meta")
  priv.test    10.0.0.2         allowed; private range (nginx "server-priv")
An echo server listens on 198.18.0.4:2222 (an address no rule covers)."""
import os
import socket
import ssl
import unittest

import proxyfixture as pf
import proxyfixture_more as pm
from dnsfixture import udp_query
from moatlib import Moat, close_all, free_port, write_config

SKIP = pf.netns_skip(__name__, __file__)

NAMES = {"a.test": pf.ADDRS["a"], "b.test": pf.ADDRS["b"], "blocked.test": pf.ADDRS["a"],
         "lo.test": "127.0.0.1", "meta.test": pm.META, "priv.test": pm.PRIV}
ECHO_PORT = 2222
OWN = pm.CLOSED  # an http listener of moat's own on this (non-loopback) address
MODES = ("enforce", "audit")


@unittest.skipIf(SKIP, SKIP)
class AuditTest(pf.NetnsTestCase):
    @classmethod
    def start_servers(cls):
        pm.setup_netns_more()
        cls.cert, key = pf.make_cert(os.path.join(cls.dir, "cert"),
                                     ["a.test", "b.test", "priv.test", "lo.test"])
        cls.nginx = cls.serve(pf.Nginx(cls.dir, cls.cert, key))
        cls.nginx_more = cls.serve(pm.NginxMore(cls.dir, cls.cert, key))
        cls.echo = cls.serve(pm.EchoServer(pf.ADDRS["bulk"], ECHO_PORT))
        cls.start_dnsmasq(pf.address_args(NAMES.items()))

    def tearDown(self):
        self.stop()

    def stop(self):
        """Close the test's sockets, remove the REDIRECT and stop moat (exit
        status 0): before each start and after the test."""
        close_all(self.socks)
        self.socks = []
        for n in self.nfts:
            n.stop()
        self.nfts = []
        self.stop_moat()

    # ---- helpers ------------------------------------------------------------------------

    def config_text(self, mode, allow="[a.test, priv.test]"):
        return ("mode: %s\n"
                "dns:\n"
                "  listen: [\"127.0.0.1:%d\"]\n"
                "  upstream: [\"127.0.0.1:%d\"]\n"
                "proxy:\n"
                "  tls: [\"127.0.0.1:%d\"]\n"
                "  http: [\"127.0.0.1:%d\", \"%s:%d\"]\n"
                "  transparent: [\"127.0.0.1:%d\"]\n"
                "shutdown_grace: 1s\n"
                "log: {allowed: true}\n"
                "allow: %s\n" % (mode, self.dns_port, self.up_port, self.tls_port, self.http_port,
                                 OWN, self.own_port, self.t_port, allow))

    def start(self, mode, **kw):
        """moat in mode, with dns, tls, http (also on OWN) and transparent
        listeners; the guest's TCP to ports 443, 80, 2222 and own_port is
        redirected to the transparent one."""
        self.stop()
        self.dns_port, self.tls_port, self.http_port = free_port(), free_port(), free_port()
        self.own_port, self.t_port = free_port(), free_port()
        self.config = write_config(self.dir, self.config_text(mode, **kw))
        self.moat = Moat(self.config)
        i = self.moat.wait_line("moat running")
        self.assertIn("mode %s" % mode, self.moat.lines[i])
        self.nfts.append(pf.Nft([443, 80, ECHO_PORT, self.own_port], self.t_port))
        return self.moat

    def both_modes(self, check):
        """check(mode) on a fresh moat per mode, each as a subtest."""
        for mode in MODES:
            with self.subTest(mode=mode):
                self.start(mode)
                check(mode)

    def assert_audit_flag(self, line, audit):
        """audit=passed on a block that audit mode let through, never else."""
        if audit:
            self.assertIn(" audit=passed", line)
        else:
            self.assertNotIn("audit=", line)

    def connect(self, hostport, source=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socks.append(s)
        s.settimeout(10)
        if source:
            s.bind((source, 0))
        s.connect(hostport)
        return s

    def ctx(self):
        return ssl.create_default_context(cafile=self.cert)

    def tls_try(self, hostport, name, source=None):
        """GET / over TLS with SNI name: the body, or 'alert' (access_denied),
        or 'reset'."""
        s = self.connect(hostport, source)
        try:
            t = self.ctx().wrap_socket(s, server_hostname=name)
        except ssl.SSLError as e:
            if "ACCESS_DENIED" in str(e).upper():
                return "alert"
            raise
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        self.socks.append(t)
        t.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % name.encode())
        _, body = pf.read_response(lambda: t.recv(65536))
        t.close()
        return body

    def http_try(self, hostport, host, source=None):
        """GET / with Host host: (status line, body), or 'reset' / 'eof'."""
        s = self.connect(hostport, source)
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode())
            head, body = pf.read_response(lambda: s.recv(65536))
        except ConnectionResetError:
            return "reset"
        except AssertionError:  # EOF before a response head
            return "eof"
        s.close()
        return head.split("\r\n")[0], body

    def closes_at_once(self, hostport, data, source=None):
        try:
            s = self.connect(hostport, source)
            s.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        return pf.closed_within(s, 2.0)

    # ---- DNS --------------------------------------------------------------------------------

    def test_dns_blocked_name_forwarded_in_audit(self):
        """b.test (not allowed), A and TXT: enforce answers locally (sinkhole
        0.0.0.0 with AA; NODATA with the synthetic SOA) and never asks
        upstream; audit forwards both and returns dnsmasq's real answer.
        Both log verdict=block reason=not-allowed, audit with audit=passed.
        The allowed name is answered the same in both modes."""
        def check(mode):
            audit = mode == "audit"
            before_a = self.dnsmasq.queries("b.test", "A")
            before_txt = self.dnsmasq.queries("b.test", "TXT")
            r = udp_query(self.dns_port, "b.test")
            txt = udp_query(self.dns_port, "b.test", "TXT")
            if audit:
                self.assertEqual(r.addrs(), [pf.ADDRS["b"]])
                self.assertEqual(self.dnsmasq.queries("b.test", "A"), before_a + 1)
                # dnsmasq refuses TXT for an --address name; c-ares retries.
                self.assertGreaterEqual(self.dnsmasq.queries("b.test", "TXT"), before_txt + 1)
                self.assertFalse(any(rr.soa_mname() == "sinkhole.moat.invalid"
                                     for rr in txt.authority if rr.type == 6))
            else:
                self.assertEqual(r.addrs(), ["0.0.0.0"])
                self.assertTrue(r.aa)
                self.assertEqual((txt.rcode_name, txt.answer), ("NOERROR", []))
                self.assertEqual([rr.soa_mname() for rr in txt.authority if rr.type == 6],
                                 ["sinkhole.moat.invalid"])
                self.assertEqual(self.dnsmasq.queries("b.test"), before_a + before_txt)
            for qtype in ("A", "TXT"):
                line = self.log_line("kind=dns", "name=b.test", "qtype=%s" % qtype)
                self.assertIn("verdict=block reason=not-allowed", line)
                self.assert_audit_flag(line, audit)
            self.assertEqual(udp_query(self.dns_port, "a.test").addrs(), [pf.ADDRS["a"]])
            line = self.log_line("kind=dns", "name=a.test")
            self.assertIn("verdict=allow reason=allowlist rule=a.test", line)
            self.assert_audit_flag(line, False)

        self.both_modes(check)

    def test_dns_rebinding_filter_applies_in_both_modes(self):
        """lo.test (not allowed) resolves to 127.0.0.1: enforce sinkholes it;
        audit forwards it, but the rebinding filter (a refused range) still
        removes the loopback address, so the guest gets no address into
        moat's refused ranges in either mode."""
        def check(mode):
            r = udp_query(self.dns_port, "lo.test")
            if mode == "audit":
                self.assertEqual((r.rcode_name, r.addrs()), ("NOERROR", []))
                line = self.log_line("kind=dns", "name=lo.test")
                self.assertIn("verdict=block reason=not-allowed", line)
                self.assert_audit_flag(line, True)
            else:
                self.assertEqual(r.addrs(), ["0.0.0.0"])

        self.both_modes(check)

    # ---- TCP: tls and http listeners -------------------------------------------------------------

    def test_tls_listener_blocked_name_spliced_in_audit(self):
        """SNI b.test on the tls listener: enforce answers with the
        access_denied alert; audit splices it to b.test's server. Both log
        verdict=block reason=not-allowed (audit: with audit=passed, at close,
        with the bytes); a.test goes through in both, without the flag."""
        def check(mode):
            audit = mode == "audit"
            got = self.tls_try(("127.0.0.1", self.tls_port), "b.test")
            self.assertEqual(got, b"server-b\n" if audit else "alert")
            line = self.log_line("listener=tls", "name=b.test")
            self.assertIn("verdict=block reason=not-allowed", line)
            self.assert_audit_flag(line, audit)
            if audit:
                self.assertIn("dest=%s port=443" % pf.ADDRS["b"], line)
                self.assertNotIn("bytes_down=0 ", line)
            self.assertEqual(self.tls_try(("127.0.0.1", self.tls_port), "a.test"), b"server-a\n")
            line = self.log_line("listener=tls", "name=a.test")
            self.assertIn("verdict=allow reason=allowlist", line)
            self.assert_audit_flag(line, False)

        self.both_modes(check)

    def test_tls_without_sni_stays_blocked(self):
        """A hello without SNI on the tls listener has nowhere to go: the
        alert in both modes, no audit=passed."""
        def check(mode):
            s = self.connect(("127.0.0.1", self.tls_port))
            with self.assertRaises(ssl.SSLError) as e:
                pf.unverified_context().wrap_socket(s)
            self.assertIn("ACCESS_DENIED", str(e.exception).upper())
            self.assert_audit_flag(self.log_line("listener=tls", "reason=no-sni"), False)

        self.both_modes(check)

    def test_http_listener_blocked_host_spliced_in_audit(self):
        """Host blocked.test on the http listener: enforce gives the 403
        (X-Proxy-Error), audit the backend's page; both log
        verdict=block reason=not-allowed."""
        def check(mode):
            audit = mode == "audit"
            status, body = self.http_try(("127.0.0.1", self.http_port), "blocked.test")
            if audit:
                self.assertIn(" 200 ", status)
                self.assertEqual(body, b"http-a\n")
            else:
                self.assertEqual(status, "HTTP/1.1 403 Forbidden")
                self.assertIn(b"blocked.test", body)
            line = self.log_line("listener=http", "name=blocked.test")
            self.assertIn("verdict=block reason=not-allowed", line)
            self.assert_audit_flag(line, audit)

        self.both_modes(check)

    # ---- TCP: transparent listener ----------------------------------------------------------

    def test_transparent_blocked_connections_spliced_in_audit(self):
        """A guest redirected to the transparent listener: SNI b.test aimed at
        b.test's address gets the alert in enforce and b.test's page in
        audit; a connection to 198.18.0.4:2222 (no rule covers the address,
        no name resolved through moat) is reset in enforce and spliced to
        that very destination (the echo server) in audit."""
        def check(mode):
            audit = mode == "audit"
            got = self.tls_try((pf.ADDRS["b"], 443), "b.test", source=pf.GUEST)
            self.assertEqual(got, b"server-b\n" if audit else "alert")
            line = self.log_line("listener=transparent", "name=b.test")
            self.assertIn("client=%s:" % pf.GUEST, line)
            self.assertIn("verdict=block reason=not-allowed", line)
            self.assert_audit_flag(line, audit)

            dest = (pf.ADDRS["bulk"], ECHO_PORT)
            if audit:
                s = self.connect(dest, source=pf.GUEST)
                self.assertEqual(pf.echo_back(s, b"ping-audit"), b"ping-audit")
                s.close()
            else:
                self.assertEqual(self.closes_at_once(dest, b"ping-enforce", source=pf.GUEST),
                                 "reset")
            line = self.log_line("listener=transparent", "dest=%s port=%d" % dest)
            self.assertIn("verdict=block reason=not-allowed", line)
            self.assert_audit_flag(line, audit)

        self.both_modes(check)

    # ---- what audit still enforces ----------------------------------------------------------

    def test_refused_ranges_and_own_listener_refused_in_both_modes(self):
        """DECISIONS.md: audit still enforces refused-range and own-listener.
        In both modes: the literal Host 169.254.169.254 gets the 403; a
        transparent connection to 169.254.169.254:80 and one to moat's own
        http listener on 198.18.0.9 are reset; none is flagged audit=passed
        and the metadata server is never reached."""
        def check(mode):
            n = len(self.moat.lines)
            status, body = self.http_try(("127.0.0.1", self.http_port), pm.META)
            self.assertTrue(status.startswith("HTTP/1.1 403"), status)
            self.assert_audit_flag(self.log_line("listener=http", "name=169.254.169.254",
                                                 "reason=refused-range", start=n), False)
            got = self.closes_at_once((pm.META, 80), b"GET / HTTP/1.1\r\nHost: meta.test\r\n\r\n",
                                      source=pf.GUEST)
            self.assertEqual(got, "reset")
            self.assert_audit_flag(self.log_line("listener=transparent",
                                                 "dest=169.254.169.254 port=80",
                                                 "reason=refused-range", start=n), False)
            got = self.closes_at_once((OWN, self.own_port),
                                      b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", source=pf.GUEST)
            self.assertEqual(got, "reset")
            self.assert_audit_flag(self.log_line("listener=transparent",
                                                 "dest=%s port=%d" % (OWN, self.own_port),
                                                 "reason=own-listener", start=n), False)
            self.assertFalse(any("verdict=allow" in l for l in self.moat.lines[n:]))

        self.both_modes(check)

    def test_names_into_refused_ranges_refused_in_both_modes(self):
        """meta.test and lo.test are not allowed (enforce: 403 / alert for the
        name); in audit the name passes but the address it resolves to is
        in a refused range, so the connection is reset and logged
        refused-range, without audit=passed: the metadata server or a
        loopback service is never reached through audit mode."""
        def check(mode):
            audit = mode == "audit"
            n = len(self.moat.lines)
            got = self.http_try(("127.0.0.1", self.http_port), "meta.test")
            if audit:
                self.assertIn(got, ("reset", "eof"))
                line = self.log_line("listener=http", "name=meta.test", start=n)
                self.assertIn("verdict=block reason=refused-range", line)
                self.assert_audit_flag(line, False)
            else:
                self.assertTrue(got[0].startswith("HTTP/1.1 403"), got)
                line = self.log_line("listener=http", "name=meta.test", start=n)
                self.assertIn("verdict=block reason=not-allowed", line)
            got = self.tls_try(("127.0.0.1", self.tls_port), "lo.test")
            self.assertEqual(got, "reset" if audit else "alert")
            line = self.log_line("listener=tls", "name=lo.test", start=n)
            self.assertIn("reason=%s" % ("refused-range" if audit else "not-allowed"), line)
            self.assert_audit_flag(line, False)
            self.assertFalse(any("verdict=allow" in l for l in self.moat.lines[n:]))

        self.both_modes(check)

    def test_private_range_passed_in_audit(self):
        """priv.test is allowed but resolves only to 10.0.0.2 (private, no
        address rule): enforce resets it with private-range on both
        listeners; audit reaches nginx there and logs the same block
        (private-range, with the rule) with audit=passed. DECISIONS.md: audit
        enforces refused ranges and own listeners, not private space."""
        def check(mode):
            audit = mode == "audit"
            n = len(self.moat.lines)
            got = self.tls_try(("127.0.0.1", self.tls_port), "priv.test")
            self.assertEqual(got, b"server-priv\n" if audit else "reset")
            got = self.http_try(("127.0.0.1", self.http_port), "priv.test")
            if audit:
                self.assertEqual(got[1], b"http-priv\n")
            else:
                self.assertIn(got, ("reset", "eof"))
            for listener in ("tls", "http"):
                line = self.log_line("listener=%s" % listener, "name=priv.test", start=n)
                self.assertIn("verdict=block reason=private-range rule=priv.test", line)
                self.assert_audit_flag(line, audit)
                if audit:
                    self.assertIn("dest=%s" % pm.PRIV, line)

        self.both_modes(check)

    # ---- reload between the modes ---------------------------------------------------------

    def test_reload_from_audit_to_enforce_cuts_audited_connections(self):
        """An audit-passed connection (SNI b.test) is cut with policy-reload
        when a reload switches to enforce; the allowed a.test connection stays
        open and works; a new b.test connection gets the alert. Switching
        back to audit lets it through again."""
        self.start("audit")
        ta = self.ctx().wrap_socket(self.connect(("127.0.0.1", self.tls_port)),
                                    server_hostname="a.test")
        tb = self.ctx().wrap_socket(self.connect(("127.0.0.1", self.tls_port)),
                                    server_hostname="b.test")
        self.socks += [ta, tb]
        for t, name, want in ((ta, "a.test", b"server-a\n"), (tb, "b.test", b"server-b\n")):
            t.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % name.encode())
            self.assertEqual(pf.read_response(lambda: t.recv(65536))[1], want)
        write_config(self.dir, self.config_text("enforce"))
        n = self.moat.sighup()
        self.assertIsNotNone(pf.closed_within(tb, 5), "audited connection not cut")
        line = self.log_line("name=b.test", "reason=policy-reload", start=n)
        self.assertIn("verdict=block", line)
        ta.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertEqual(pf.read_response(lambda: ta.recv(65536))[1], b"server-a\n")
        self.assertEqual(self.tls_try(("127.0.0.1", self.tls_port), "b.test"), "alert")
        write_config(self.dir, self.config_text("audit"))
        self.moat.sighup()
        self.assertEqual(self.tls_try(("127.0.0.1", self.tls_port), "b.test"), b"server-b\n")
        self.assertFalse(any("policy-reload" in l and "name=a.test" in l for l in self.moat.lines))

    def test_reload_cuts_refused_range_connection_in_both_modes(self):
        """An address rule for 169.254.169.254 lifts its refusal: a guest's
        transparent keep-alive connection to the metadata server is
        admitted. A reload that drops the rule (same mode) cuts it with
        policy-reload in audit as in enforce: a refused range is never
        audited, also not on reload. a.test's connection (and in audit the
        audit-passed b.test one) stays open and works."""
        rule = "[a.test, priv.test, 169.254.169.254]"

        def get(t, host, want):
            t.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())
            self.assertEqual(pf.read_response(lambda: t.recv(65536))[1], want)

        def check(mode):
            self.start(mode, allow=rule)
            meta = self.connect((pm.META, 80), source=pf.GUEST)
            get(meta, "meta.test", b"meta\n")
            keep = [(self.ctx().wrap_socket(self.connect(("127.0.0.1", self.tls_port)),
                                            server_hostname=name), name, want)
                    for name, want in (("a.test", b"server-a\n"), ("b.test", b"server-b\n"))
                    if name == "a.test" or mode == "audit"]
            for t, name, want in keep:
                self.socks.append(t)
                get(t, name, want)
            write_config(self.dir, self.config_text(mode))
            n = self.moat.sighup()
            self.assertIsNotNone(pf.closed_within(meta, 5), "metadata connection not cut")
            line = self.log_line("dest=169.254.169.254 port=80", "reason=policy-reload", start=n)
            self.assertIn("listener=transparent", line)
            for t, name, want in keep:
                get(t, name, want)
            self.assertFalse(any("policy-reload" in l and "name=" in l
                                 for l in self.moat.lines[n:]))

        for mode in MODES:
            with self.subTest(mode=mode):
                check(mode)


if __name__ == "__main__":
    unittest.main(verbosity=2)
