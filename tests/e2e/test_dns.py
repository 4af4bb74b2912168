"""End-to-end: moat's DNS (SPEC §2.2, issue 3 points 2-4) against a real
upstream on loopback: dnsmasq, which logs every query it receives (so the
tests can show a blocked name never left moat), and a scripted Python server
for slow and broken upstreams. Clients: hand-built messages over UDP/TCP, and
dig where it is the natural client."""
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dnsfixture import (Response, ScriptedUpstream, answer_a, build_query,  # noqa: E402
                        encode_name, tcp_exchange, udp_exchange, udp_query)
from moatlib import Moat, MoatTestCase, free_port, write_config  # noqa: E402

BIG_TXT = ["%c" % c * 200 for c in "abcde"]
# HTTPS 1 . alpn=h2 ech=deadbeef (RFC 9460 wire form)
ECH_RDATA = "0001" + "00" + "0001000302" + "6832" + "00050004deadbeef"

DNSMASQ_ARGS = [
    "--host-record=allowed.test,198.18.0.10,300",
    "--host-record=allowed.test,2001:db8::10,300",
    "--host-record=x.wild.test,198.18.0.11,300",
    "--host-record=deep.a.wild.test,198.18.0.13,300",
    "--host-record=wild.test,198.18.0.12,300",
    "--host-record=blocked.test,198.18.0.66,300",
    "--host-record=new.test,198.18.0.77,300",
    "--host-record=rebind.test,127.0.0.1,300",
    "--host-record=rebind.test,198.18.0.20,300",
    "--host-record=private.test,10.0.0.5,300",
    "--host-record=meta.test,169.254.169.254,300",
    "--txt-record=big.test," + ",".join(BIG_TXT),
    "--dns-rr=ech.test,65," + ECH_RDATA,
]


def config(dns_port, upstream_port, allow=None, extra="", listen=None, timeout="1s"):
    listen = listen or ["127.0.0.1:%d" % dns_port]
    text = (
        "dns:\n"
        "  listen: [%s]\n"
        "  upstream: [\"127.0.0.1:%d\"]\n"
        "  timeout: %s\n"
        "proxy:\n"
        "  tls: [\"127.0.0.1:%d\"]\n"
        "  http: [\"127.0.0.1:%d\"]\n"
        "shutdown_grace: 2s\n"
        "%s" % (", ".join('"%s"' % l for l in listen), upstream_port, timeout, free_port(),
                free_port(), extra)
    )
    if allow is not None:
        text += "allow: [%s]\n" % ", ".join('"%s"' % a for a in allow)
    return text


class DnsTestBase(MoatTestCase):
    def setUp(self):
        super().setUp()
        self.start_dnsmasq(DNSMASQ_ARGS)
        self.port = free_port()

    def start(self, text):
        self.start_config(text)

    def start_allow(self, allow, extra="", **kw):
        self.start(config(self.port, self.up_port, allow, extra, **kw))

    def q(self, name, qtype="A", **kw):
        return udp_query(self.port, name, qtype, **kw)

    def assertSinkholed(self, r, name):
        self.assertEqual(r.rcode_name, "NOERROR")
        self.assertTrue(r.aa)
        self.assertEqual(r.qname, name)

    def assertNeverUpstream(self, *names):
        seen = set(self.dnsmasq.logged_names())
        for n in names:
            self.assertNotIn(n.lower(), seen, "upstream saw a blocked name")


class BlockedTest(DnsTestBase):
    def test_blocked_a_and_aaaa(self):
        self.start_allow(["allowed.test"])
        r = self.q("blocked.test", "A")
        self.assertSinkholed(r, "blocked.test")
        self.assertEqual([(rr.addr(), rr.ttl) for rr in r.answer], [("0.0.0.0", 10)])
        r = self.q("blocked.test", "AAAA")
        self.assertSinkholed(r, "blocked.test")
        self.assertEqual([(rr.addr(), rr.ttl) for rr in r.answer], [("::", 10)])
        # Over TCP too, and with the question's letter case kept.
        (t,) = tcp_exchange(self.port, [build_query("BlOcKeD.TeSt", "A")])
        self.assertEqual(t.qname, "BlOcKeD.TeSt")
        self.assertEqual(t.addrs(), ["0.0.0.0"])
        self.assertNeverUpstream("blocked.test")

    def test_blocked_other_types_nodata_with_tld_soa(self):
        self.start_allow(["allowed.test"])
        for t in ("MX", "TXT", "HTTPS", "SVCB", "CNAME", "NS", "SRV", "PTR", "ANY"):
            r = self.q("blocked.test", t)
            self.assertSinkholed(r, "blocked.test")
            self.assertEqual(r.answer, [], t)
            self.assertEqual(len(r.authority), 1, t)
            soa = r.authority[0]
            self.assertEqual((soa.type, soa.name.lower()), (6, "test"), t)
        self.assertNeverUpstream("blocked.test")

    def test_nxdomain_mode(self):
        self.start_allow(["allowed.test"], "sinkhole: {mode: nxdomain}\n")
        for t in ("A", "AAAA", "TXT"):
            r = self.q("blocked.test", t)
            self.assertEqual(r.rcode_name, "NXDOMAIN", t)
            self.assertEqual(r.answer, [])
            self.assertEqual(r.authority[0].type, 6)
        self.assertNeverUpstream("blocked.test")

    def test_ede_15_only_with_edns(self):
        self.start_allow(["allowed.test"])
        r = self.q("blocked.test", "A", edns=1232)
        self.assertEqual(r.ede(), 15)
        self.assertEqual(r.opt().rclass, 1232)
        r = self.q("blocked.test", "A")
        self.assertIsNone(r.opt())
        self.assertIsNone(r.ede())

    def test_doh_canary(self):
        self.start_allow(["allowed.test"])
        r = self.q("use-application-dns.net", "A")
        self.assertEqual(r.rcode_name, "NXDOMAIN")
        self.assertNeverUpstream("use-application-dns.net")

    def test_allow_empty_sinkholes_everything(self):
        self.start_allow([])
        for n in ("allowed.test", "x.wild.test", "example.com"):
            self.assertEqual(self.q(n).addrs(), ["0.0.0.0"], n)
        self.assertEqual(self.dnsmasq.logged_names(), [])

    def test_wildcard_rules(self):
        self.start_allow(["*.wild.test"])
        self.assertEqual(self.q("x.wild.test").addrs(), ["198.18.0.11"])
        self.assertEqual(self.q("DEEP.a.wild.test").addrs(), ["198.18.0.13"])
        self.assertEqual(self.q("wild.test").addrs(), ["0.0.0.0"])  # not the base name
        self.assertNeverUpstream("wild.test")

    def test_blocked_logged(self):
        self.start_allow(["allowed.test"])
        self.q("Blocked.test", "MX")
        i = self.moat.wait_line("name=Blocked.test")
        line = self.moat.lines[i]
        for part in ("kind=dns", "listener=dns", "qtype=MX", "rcode=NOERROR", "verdict=block",
                     "reason=not-allowed", "client=127.0.0.1:"):
            self.assertIn(part, line)


class AllowedTest(DnsTestBase):
    def test_allowed_forwarded_and_case_kept(self):
        self.start_allow(["allowed.test"])
        r = self.q("AlLoWeD.TeSt", "A", qid=0xBEEF)
        self.assertEqual((r.rcode_name, r.id, r.qname), ("NOERROR", 0xBEEF, "AlLoWeD.TeSt"))
        self.assertEqual(r.addrs(), ["198.18.0.10"])
        self.assertTrue(r.qr)
        r = self.q("allowed.test", "AAAA", edns=1232)
        self.assertEqual(r.addrs(), ["2001:db8::10"])
        self.assertIsNotNone(r.opt())
        out = subprocess.run(["dig", "+short", "@127.0.0.1", "-p", str(self.port), "allowed.test"],
                             capture_output=True, text=True, timeout=10)
        self.assertEqual(out.stdout.split(), ["198.18.0.10"])

    def test_cached_ttl_counts_down(self):
        # One worker: the second query must meet the first one's cache.
        self.start_allow(["allowed.test"], "workers: 1\n")
        first = self.q("allowed.test")
        self.assertEqual(first.answer[0].ttl, 300)
        time.sleep(2.1)
        second = self.q("ALLOWED.test")
        self.assertEqual(second.addrs(), ["198.18.0.10"])
        self.assertLessEqual(second.answer[0].ttl, 298)
        self.assertEqual(second.qname, "ALLOWED.test")
        self.assertEqual(self.dnsmasq.queries("allowed.test", "A"), 1)

    def test_coalescing(self):
        slow_port = free_port()
        up = self.add_upstream(
            ScriptedUpstream(slow_port, lambda m: answer_a(m, "198.18.0.30"), delay=0.4))
        # One worker: identical questions are coalesced within a loop (each
        # worker has its own pending queries and cache).
        self.start(config(self.port, slow_port, ["coal.test"], timeout="3s") + "workers: 1\n")
        socks = []
        for i in range(20):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(3)
            s.sendto(build_query("coal.TEST" if i % 2 else "coal.test", "A", qid=i), ("127.0.0.1", self.port))
            socks.append(s)
        for i, s in enumerate(socks):
            r = Response(s.recv(4096))
            s.close()
            self.assertEqual((r.id, r.addrs()), (i, ["198.18.0.30"]))
            self.assertEqual(r.qname, "coal.TEST" if i % 2 else "coal.test")
        self.assertEqual(up.count("coal.test"), 1)

    def test_ech_removed(self):
        self.start_allow(["ech.test"])
        r = self.q("ech.test", "HTTPS", edns=1232)
        https = [rr for rr in r.answer if rr.type == 65]
        self.assertEqual(len(https), 1)
        self.assertEqual(https[0].svc_keys(), [1])  # alpn kept, ech (5) gone

    def test_rebinding_filtered(self):
        self.start_allow(["rebind.test", "private.test", "meta.test"])
        self.assertEqual(self.q("rebind.test").addrs(), ["198.18.0.20"])
        r = self.q("private.test")
        self.assertEqual((r.rcode_name, r.addrs()), ("NOERROR", []))
        self.assertEqual(self.q("meta.test").addrs(), [])

    def test_rebinding_kept_when_address_rule_covers(self):
        self.start_allow(["private.test", "meta.test", "10.0.0.0/8", "169.254.169.254"])
        self.assertEqual(self.q("private.test").addrs(), ["10.0.0.5"])
        self.assertEqual(self.q("meta.test").addrs(), ["169.254.169.254"])

    def test_no_allow_forwards_everything(self):
        self.start_allow(None)
        self.assertEqual(self.q("blocked.test").addrs(), ["198.18.0.66"])
        self.assertEqual(self.q("private.test").addrs(), ["10.0.0.5"])  # no rewriting
        r = self.q("ech.test", "HTTPS", edns=1232)
        self.assertEqual([rr.svc_keys() for rr in r.answer if rr.type == 65], [[1, 5]])
        self.q("use-application-dns.net")  # dnsmasq REFUSEs it; c-ares retries
        self.assertGreaterEqual(self.dnsmasq.queries("use-application-dns.net"), 1)

    def test_audit_forwards_and_logs_would_block(self):
        self.start_allow(["allowed.test"], "mode: audit\n")
        self.assertEqual(self.q("blocked.test").addrs(), ["198.18.0.66"])
        line = self.moat.lines[self.moat.wait_line("name=blocked.test")]
        self.assertIn("verdict=block", line)
        self.assertIn("audit=passed", line)
        self.assertEqual(self.dnsmasq.queries("blocked.test"), 1)

    def test_truncated_udp_then_tcp(self):
        self.start_allow(["big.test"])
        r = self.q("big.test", "TXT")  # no EDNS: 512 bytes at most
        self.assertTrue(r.tc)
        self.assertEqual(r.answer, [])
        self.assertLessEqual(len(r.raw), 512)
        out = subprocess.run(["dig", "+tcp", "+short", "@127.0.0.1", "-p", str(self.port), "big.test",
                              "TXT"], capture_output=True, text=True, timeout=10)
        got = out.stdout.replace('"', "").split()
        self.assertEqual(got, BIG_TXT)
        r = self.q("big.test", "TXT", edns=4096)  # fits 1232: whole over UDP
        self.assertFalse(r.tc)
        self.assertEqual(len(r.answer), 1)

    def test_pipelined_tcp(self):
        self.start_allow(["allowed.test"])
        msgs = [build_query("allowed.test", "A", qid=1), build_query("blocked.test", "A", qid=2),
                build_query("allowed.test", "AAAA", qid=3), build_query("blocked.test", "AAAA", qid=4),
                build_query("use-application-dns.net", "A", qid=5)]
        rs = {r.id: r for r in tcp_exchange(self.port, msgs)}
        self.assertEqual(sorted(rs), [1, 2, 3, 4, 5])
        self.assertEqual(rs[1].addrs(), ["198.18.0.10"])
        self.assertEqual(rs[2].addrs(), ["0.0.0.0"])
        self.assertEqual(rs[3].addrs(), ["2001:db8::10"])
        self.assertEqual(rs[4].addrs(), ["::"])
        self.assertEqual(rs[5].rcode_name, "NXDOMAIN")

    def test_ipv6_listener(self):
        p6 = free_port(socket.AF_INET6)
        self.port = p6
        self.start_allow(["allowed.test"], listen=["[::1]:%d" % p6])
        self.moat.wait_line("dns listening on udp [::1]:%d" % p6)
        self.moat.wait_line("dns listening on tcp [::1]:%d" % p6)
        self.assertEqual(udp_query(p6, "allowed.test", host="::1").addrs(), ["198.18.0.10"])
        (t,) = tcp_exchange(p6, [build_query("blocked.test")], host="::1")
        self.assertEqual(t.addrs(), ["0.0.0.0"])

    def test_reload_adds_name(self):
        self.start_allow(["allowed.test"])
        self.assertEqual(self.q("new.test").addrs(), ["0.0.0.0"])
        write_config(self.dir, config(self.port, self.up_port, ["allowed.test", "new.test"]))
        self.moat.send(signal.SIGHUP)
        self.moat.wait_line("generation 2")
        self.assertEqual(self.q("new.test").addrs(), ["198.18.0.77"])
        # And back: removed again, sinkholed at once (the cache was cleared).
        write_config(self.dir, config(self.port, self.up_port, ["allowed.test"]))
        self.moat.send(signal.SIGHUP)
        self.moat.wait_line("generation 3")
        self.assertEqual(self.q("new.test").addrs(), ["0.0.0.0"])

    def test_reload_listeners(self):
        self.start_allow(["allowed.test"])
        p2 = free_port()
        write_config(self.dir, config(self.port, self.up_port, ["allowed.test"],
                                      listen=["127.0.0.1:%d" % p2]))
        self.moat.send(signal.SIGHUP)
        self.moat.wait_line("generation 2")
        self.assertEqual(udp_query(p2, "allowed.test").addrs(), ["198.18.0.10"])
        self.assertIsNone(udp_exchange(self.port, build_query("allowed.test"), timeout=0.5))


    def test_reload_changes_upstream_in_flight_query_finishes(self):
        slow_port = free_port()
        up = self.add_upstream(
            ScriptedUpstream(slow_port, lambda m: answer_a(m, "198.18.0.30"), delay=0.6))
        self.start(config(self.port, slow_port, ["allowed.test", "coal.test"], timeout="3s"))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(build_query("coal.test", "A", qid=9), ("127.0.0.1", self.port))
        time.sleep(0.1)
        # Upstream switched to dnsmasq while coal.test waits on the old one.
        write_config(self.dir, config(self.port, self.up_port, ["allowed.test", "coal.test"]))
        self.moat.send(signal.SIGHUP)
        self.moat.wait_line("generation 2")
        self.assertEqual(self.q("allowed.test").addrs(), ["198.18.0.10"])
        r = Response(s.recv(4096))
        s.close()
        self.assertEqual((r.id, r.addrs()), (9, ["198.18.0.30"]))
        self.assertEqual(up.count("allowed.test"), 0)
        self.assertEqual(self.dnsmasq.queries("coal.test"), 0)


class UpstreamFailureTest(DnsTestBase):
    def assertServfailInTime(self, port, timeout_s, edns=1232):
        t0 = time.monotonic()
        r = udp_query(self.port, "allowed.test", edns=edns, timeout=timeout_s + 2)
        took = time.monotonic() - t0
        self.assertEqual(r.rcode_name, "SERVFAIL")
        self.assertLessEqual(took, timeout_s + 0.5)
        return r, took

    def test_upstream_down(self):
        self.start(config(self.port, free_port(), ["allowed.test"]))  # nothing listens there
        r, _ = self.assertServfailInTime(self.port, 1.0)
        self.assertIn(r.ede_codes()[0], (22, 23))

    def test_upstream_silent(self):
        port = free_port()
        self.add_upstream(ScriptedUpstream(port, lambda m: None))
        self.start(config(self.port, port, ["allowed.test"]))
        r, took = self.assertServfailInTime(self.port, 1.0)
        self.assertGreaterEqual(took, 0.5)
        self.assertEqual(r.ede_codes(), [22])
        # moat is still fine afterwards.
        self.assertEqual(self.q("blocked.test").addrs(), ["0.0.0.0"])

    def test_upstream_garbage(self):
        port = free_port()

        def bad(m):  # right ID and question, an answer record cut short
            qend = 12 + len(encode_name(Response(m).qname)) + 4
            return m[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + m[12:qend] + b"\xc0\x0c\x00"

        self.add_upstream(ScriptedUpstream(port, bad))
        self.start(config(self.port, port, ["allowed.test"]))
        self.assertServfailInTime(self.port, 1.0)


class HygieneTest(DnsTestBase):
    def test_bad_queries(self):
        self.start_allow(["allowed.test"])
        # No header: dropped.
        self.assertIsNone(udp_exchange(self.port, b"\x01\x02\x03", timeout=0.5))
        # A response sent to us: dropped.
        resp = bytearray(build_query("allowed.test"))
        resp[2] |= 0x80
        self.assertIsNone(udp_exchange(self.port, bytes(resp), timeout=0.5))
        # QDCOUNT 2: FORMERR.
        r = Response(udp_exchange(self.port, build_query("allowed.test", qdcount=2)))
        self.assertEqual(r.rcode_name, "FORMERR")
        # Garbage after a header: FORMERR.
        r = Response(udp_exchange(self.port, build_query("allowed.test")[:12] + b"\xff" * 20))
        self.assertEqual(r.rcode_name, "FORMERR")
        # Opcode STATUS: NOTIMP.
        r = Response(udp_exchange(self.port, build_query("allowed.test", opcode=2)))
        self.assertEqual(r.rcode_name, "NOTIMP")
        # Class CH: REFUSED.
        r = Response(udp_exchange(self.port, build_query("allowed.test", qclass=3)))
        self.assertEqual(r.rcode_name, "REFUSED")
        # Over TCP a zero-length and a garbage message, then a good one.
        with socket.create_connection(("127.0.0.1", self.port), timeout=3) as s:
            good = build_query("allowed.test", qid=7)
            s.sendall(b"\0\0" + b"\0\x03abc" + struct.pack("!H", len(good)) + good)
            ln = struct.unpack("!H", s.recv(2))[0]
            data = b""
            while len(data) < ln:
                data += s.recv(ln - len(data))
            self.assertEqual(Response(data).id, 7)
        self.assertEqual(self.q("allowed.test").addrs(), ["198.18.0.10"])
        self.assertEqual(self.moat.proc.poll(), None)

    def test_listen_in_use_exits_2(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", self.port))
            m = Moat(write_config(self.dir, config(self.port, self.up_port, ["a.test"])))
            self.moat = m
            self.assertEqual(m.wait_exit(), 2)
        self.assertTrue(any("dns: listen 127.0.0.1:%d (udp): address already in use" % self.port
                            in l for l in m.lines), m.lines)

    def test_sigterm_with_pending_upstream_query(self):
        port = free_port()
        self.add_upstream(
            ScriptedUpstream(port, lambda m: answer_a(m, "198.18.0.30"), delay=0.5))
        self.start(config(self.port, port, ["coal.test"], timeout="2s"))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(build_query("coal.test", "A", qid=3), ("127.0.0.1", self.port))
        time.sleep(0.1)
        self.moat.send(signal.SIGTERM)
        # Drain answers what is pending before exiting.
        r = Response(s.recv(4096))
        s.close()
        self.assertEqual(r.addrs(), ["198.18.0.30"])
        self.assertEqual(self.moat.wait_exit(timeout=5), 0)

    def test_sigterm_with_idle_tcp_client(self):
        self.start_allow(["allowed.test"])
        with socket.create_connection(("127.0.0.1", self.port), timeout=3):
            self.assertEqual(self.moat.stop(signal.SIGTERM), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
