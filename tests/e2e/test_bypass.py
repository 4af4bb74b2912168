"""End-to-end policy-bypass tests (issue 6 point 4): the guest is the
attacker and tries to reach what the allowlist forbids. Every case states
its expected outcome next to it.

Already held elsewhere (see docs/SECURITY-TESTS.md) and not repeated: a
transparent connection aimed at another server's address with an allowed
SNI lands on the named server (test_proxy, test_proxy_more v6), absolute
URI allowed + Host blocked (test_proxy host-conflict), blocked names for
the common query types and rebinding of A records to 127/8, 10/8 and
169.254.169.254 (test_dns), loopback and link-local destinations
(test_proxy_more).

  DnsBypassTest (loopback; no root needed)
    - a blocked name asked with 60 query types (every assigned meta and
      data type worth naming, 0 and 65535 included), over UDP with and
      without EDNS and pipelined over TCP: answered locally, the upstream
      never sees one;
    - odd query names (a label holding a dot, NUL or high bytes in a label,
      a `*` label, a 64-octet label, a name over 255 octets, compression
      pointers in the question, the allowed name as a prefix): blocked or
      FORMERR, never forwarded;
    - answers for allowed names rebinding to loopback, private, link-local,
      multicast, IPv4-mapped and ULA addresses (A, AAAA, HTTPS hints, a
      CNAME chain, ANY, the additional section): stripped, also from cache.
  ProxyBypassTest (a network namespace of its own, root)
    - a transparent HTTP connection aimed at another address with an
      allowed Host lands on the Host's server;
    - several host_names in one hello, two server_name extensions, a name
      of another name_type next to an allowed one;
    - a first record holding an allowed-looking fragment of one hello
      continued by another hello; a first record that is not a handshake;
      SSLv2 framing;
    - IP-literal SNIs (also when an address rule covers the address);
    - SNI and Host with NUL, trailing dots, upper case, over-long labels
      and names, ports, spaces, `@`, commas, IDN bytes, numeric hosts;
    - absolute-form URIs, CONNECT targets and duplicate Host headers
      fronting a blocked name behind an allowed Host;
    - moat's own listeners (dns, tls, http, metrics, transparent) reached
      through the transparent path, or as the destination of an allowed
      name, with filtering off, on, and with a covering address rule for
      another port: refused, and never a loop."""
import os
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import proxyfixture as pf  # noqa: E402
from dnsfixture import (Response, ScriptedUpstream, answer_a, build_query,  # noqa: E402
                        encode_name, tcp_exchange, udp_exchange)
from moatlib import (Moat, MoatTestCase, free_port, loopback_config, write_config,  # noqa: E402
                     yaml_list)

SKIP = pf.netns_skip(__name__, __file__)

A, B = pf.ADDRS["a"], pf.ADDRS["b"]
OWN = "198.18.0.8"  # moat's own listeners bind here in ProxyBypassTest
ALERT_ACCESS_DENIED = b"\x15\x03\x03\x00\x02\x02\x31"


def setUpModule():
    if os.environ.get(pf.NETNS_ENV):
        pf.setup_netns()
        subprocess.run(["ip", "addr", "add", OWN + "/32", "dev", "lo"], check=True, timeout=10)


# ---- DNS ------------------------------------------------------------------------------------

# Query types asked for a blocked name: data types old and new, obsolete
# ones, DNSSEC, meta types (OPT, TKEY, TSIG, IXFR, AXFR, MAILB, MAILA, ANY),
# private use, 0 and 65535.
QTYPES = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 25, 28, 29,
          33, 35, 36, 37, 39, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 55, 59, 60,
          61, 62, 63, 64, 65, 99, 249, 250, 251, 252, 253, 254, 255, 256, 257, 32768, 65280,
          65535]


def raw_query(qname_wire, qtype=1, qid=0x3131):
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname_wire + struct.pack("!HH",
                                                                                   qtype, 1)


def rr(owner, rtype, rdata, ttl=300):
    """One resource record; owner: wire bytes (b"\\xc0\\x0c": the question)."""
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def reply(query, answers=(), additional=()):
    """A NOERROR response to query with the given answer / additional RRs."""
    q = Response(query)
    qend = 12 + len(encode_name(q.qname)) + 4
    hdr = query[:2] + struct.pack("!HHHHH", 0x8180, 1, len(answers), 0, len(additional))
    return hdr + query[12:qend] + b"".join(answers) + b"".join(additional)


def v4(a):
    return socket.inet_pton(socket.AF_INET, a)


def v6(a):
    return socket.inet_pton(socket.AF_INET6, a)


PUBLIC4, PUBLIC6 = "198.18.0.10", "2001:db8::10"
BAD4 = ["127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1",
        "169.254.169.254", "0.0.0.0", "224.0.0.1", "255.255.255.255"]
BAD6 = ["::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "fe80::1",
        "fd00::1", "fc00::1", "ff02::1", "::"]
PTR = b"\xc0\x0c"


def https_rdata(v4hints, v6hints):
    """HTTPS 1 . alpn=h2 ipv4hint=... ipv6hint=... (RFC 9460 wire form)."""
    h4 = b"".join(v4(a) for a in v4hints)
    h6 = b"".join(v6(a) for a in v6hints)
    return (b"\x00\x01\x00" + b"\x00\x01\x00\x03\x02h2" + struct.pack("!HH", 4, len(h4)) + h4 +
            struct.pack("!HH", 6, len(h6)) + h6)


def rebind_handler(query):
    q = Response(query)
    name = q.qname.lower()
    if name == "v4.test":
        return reply(query, [rr(PTR, 1, v4(a)) for a in BAD4 + [PUBLIC4]])
    if name == "v6.test":
        return reply(query, [rr(PTR, 28, v6(a)) for a in BAD6 + [PUBLIC6]])
    if name == "only.test":
        return reply(query, [rr(PTR, 1, v4("127.0.0.1"))])
    if name == "cname.test":
        target = encode_name("inner.other.example")
        return reply(query, [rr(PTR, 5, target), rr(target, 1, v4("127.0.0.1")),
                             rr(target, 1, v4("10.9.9.9")), rr(target, 1, v4(PUBLIC4))])
    if name == "hint.test":
        return reply(query, [rr(PTR, 65, https_rdata(["127.0.0.1", PUBLIC4],
                                                     ["::1", PUBLIC6]))])
    if name == "any.test":
        return reply(query, [rr(PTR, 1, v4("127.0.0.1")), rr(PTR, 28, v6("::1")),
                             rr(PTR, 1, v4(PUBLIC4)), rr(PTR, 16, b"\x01x")])
    if name == "mx.test":
        mail = encode_name("mail.mx.test")
        return reply(query, [rr(PTR, 15, b"\x00\x0a" + mail)],
                     [rr(mail, 1, v4("127.0.0.1")), rr(mail, 1, v4(PUBLIC4)),
                      rr(mail, 28, v6("::ffff:127.0.0.1"))])
    return answer_a(query, PUBLIC4)


class DnsBypassTest(MoatTestCase):
    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.up_port = free_port()
        self.up = self.add_upstream(ScriptedUpstream(self.up_port, rebind_handler))

    def start(self, allow):
        self.start_config(loopback_config(self.port, self.up_port, yaml_list(allow), tls_port=0,
                                          http_port=0, grace="1s"))

    def ask(self, msg):
        raw = udp_exchange(self.port, msg, timeout=3)
        self.assertIsNotNone(raw, "no answer")
        return Response(raw)

    def upstream_names(self):
        with self.up._lock:
            return {n for (n, _t), c in self.up.counts.items() if c}

    def test_blocked_name_every_query_type_never_upstream(self):
        """blocked.test, for every type in QTYPES, over UDP without and with
        EDNS, and all pipelined on one TCP connection. Expected: A →
        0.0.0.0, AAAA → ::, each with AA; every other type → NOERROR, AA,
        no answer, the synthetic SOA of `test` in the authority section;
        the upstream receives nothing for blocked.test, while the control
        query for allowed.test does reach it."""
        self.start(["allowed.test"])

        def check(r, t, how):
            self.assertEqual((r.rcode_name, r.aa, r.qname), ("NOERROR", True, "blocked.test"),
                             "%s type %d" % (how, t))
            if t == 1:
                self.assertEqual(r.addrs(), ["0.0.0.0"], how)
            elif t == 28:
                self.assertEqual(r.addrs(), ["::"], how)
            else:
                self.assertEqual(r.answer, [], "%s type %d" % (how, t))
                self.assertEqual([(x.type, x.name.lower()) for x in r.authority], [(6, "test")],
                                 "%s type %d" % (how, t))

        for t in QTYPES:
            check(self.ask(build_query("blocked.test", t, qid=t)), t, "udp")
            r = self.ask(build_query("blocked.test", t, qid=t, edns=1232))
            check(r, t, "udp+edns")
            self.assertEqual(r.ede(), 15)
        replies = tcp_exchange(self.port, [build_query("blocked.test", t, qid=t) for t in QTYPES])
        for r in replies:
            check(r, r.id, "tcp")
        self.assertEqual(sorted(r.id for r in replies), sorted(QTYPES))
        self.assertEqual(self.ask(build_query("allowed.test")).addrs(), [PUBLIC4])
        self.assertEqual(self.upstream_names(), {"allowed.test"})

    def test_odd_query_names_never_forwarded(self):
        """allow [allowed.test, *.wild.test]. Each query, by its wire name,
        with the expected answer; none of the blocked or malformed ones
        reaches the upstream, which sees exactly the two controls."""
        self.start(["allowed.test", "*.wild.test"])
        label63 = b"\x3f" + b"a" * 63
        cases = [
            # (wire name, expected: 'sinkhole' | 'forwarded' | rcode name)
            (b"\x07ALLOWED\x04TEST\x00", "forwarded"),         # control: case-insensitive
            (b"\x0callowed.test\x00", "sinkhole"),             # one label holding a dot
            (b"\x08allowed\x00\x04test\x00", "sinkhole"),      # NUL inside a label
            (b"\x07allowed\x05test\x00\x00", "sinkhole"),      # NUL ending a label
            (b"\x08allowed\xff\x04test\x00", "sinkhole"),      # a high byte
            (b"\x0aallowed te\x04test\x00", "sinkhole"),       # a space
            (b"\x01*\x04wild\x04test\x00", "sinkhole"),        # a literal * label
            (b"\x07allowed\x04test\x04evil\x00", "sinkhole"),  # allowed name as a prefix
            (b"\x08xallowed\x04test\x00", "sinkhole"),         # ... and as a suffix
            (label63 + b"\x04wild\x04test\x00", "forwarded"),  # control: 63 octets is fine
            (b"\x40" + b"a" * 64 + b"\x04wild\x04test\x00", "FORMERR"),  # 64-octet label
            (label63 * 4 + b"\x04wild\x04test\x00", "FORMERR"),           # over 255 octets
            (b"\xc0\x0c", "FORMERR"),                          # pointer to itself
            (b"\x04wild\xc0\x0c", "FORMERR"),                  # pointer back into the name
            (b"\xc0\x04", "FORMERR"),                          # pointer into the header
        ]
        for i, (wire, want) in enumerate(cases):
            with self.subTest(name=wire):
                r = self.ask(raw_query(wire, qid=i))
                self.assertEqual(r.id, i)
                if want == "sinkhole":
                    self.assertEqual((r.rcode_name, r.aa, r.addrs()), ("NOERROR", True,
                                                                         ["0.0.0.0"]))
                elif want == "forwarded":
                    self.assertEqual((r.rcode_name, r.addrs()), ("NOERROR", [PUBLIC4]))
                else:
                    self.assertEqual(r.rcode_name, want)
        self.assertEqual(self.upstream_names(), {"allowed.test", "a" * 63 + ".wild.test"})

    def test_rebinding_answers_stripped(self):
        """Upstream answers for allowed names that point into refused or
        private space. Expected: only PUBLIC4 / PUBLIC6 survive in A and
        AAAA answers (also IPv4-mapped forms are stripped), an answer with
        nothing left is NODATA, HTTPS ipv4hint/ipv6hint lose the bad
        addresses, a CNAME chain's A records and the additional section are
        filtered too, ANY as well; the same holds over TCP and for the
        second (cached) answer."""
        names = ["v4.test", "v6.test", "only.test", "cname.test", "hint.test", "any.test",
                 "mx.test"]
        self.start(names)

        def addrs(rrs):
            return sorted(x.addr() for x in rrs if x.type in (1, 28))

        def check(get):
            r = get("v4.test", "A")
            self.assertEqual(addrs(r.answer), [PUBLIC4])
            r = get("v6.test", "AAAA")
            self.assertEqual(addrs(r.answer), [PUBLIC6])
            r = get("only.test", "A")
            self.assertEqual((r.rcode_name, r.answer), ("NOERROR", []))
            r = get("cname.test", "A")
            self.assertEqual(addrs(r.answer), [PUBLIC4])
            self.assertIn(5, [x.type for x in r.answer])
            r = get("hint.test", "HTTPS")
            (h,) = [x for x in r.answer if x.type == 65]
            self.assertEqual(h.rdata, https_rdata([PUBLIC4], [PUBLIC6]))
            r = get("any.test", "ANY")
            self.assertEqual(addrs(r.answer), [PUBLIC4])
            self.assertIn(16, [x.type for x in r.answer])
            r = get("mx.test", "MX")
            self.assertEqual(len([x for x in r.answer if x.type == 15]), 1)
            self.assertEqual(addrs(r.additional), [PUBLIC4])

        def udp(name, t):
            return self.ask(build_query(name, t, edns=1232))

        def tcp(name, t):
            return tcp_exchange(self.port, [build_query(name, t)])[0]

        check(udp)  # from the upstream
        check(udp)  # from the cache
        check(tcp)


# ---- TCP proxy --------------------------------------------------------------------------------

NAMES = [("a.test", A), ("b.test", B), ("blocked.test", A), ("own.test", OWN)]


def parse_hello(rec):
    """A single-record ClientHello → (record version, body before the
    extensions, [(type, data), ...])."""
    assert rec[0] == 0x16
    msg = rec[5:5 + int.from_bytes(rec[3:5], "big")]
    assert msg[0] == 1
    body = msg[4:4 + int.from_bytes(msg[1:4], "big")]
    off = 2 + 32
    off += 1 + body[off]
    off += 2 + int.from_bytes(body[off:off + 2], "big")
    off += 1 + body[off]
    prefix = body[:off]
    exts, i = [], off + 2
    while i < len(body):
        t = int.from_bytes(body[i:i + 2], "big")
        n = int.from_bytes(body[i + 2:i + 4], "big")
        exts.append((t, body[i + 4:i + 4 + n]))
        i += 4 + n
    return rec[1:3], prefix, exts


def sni_ext(entries):
    """server_name extension data from [(name_type, name bytes), ...]."""
    lst = b"".join(bytes([t]) + len(n).to_bytes(2, "big") + n for t, n in entries)
    return len(lst).to_bytes(2, "big") + lst


def hello_msg(prefix, exts):
    """The handshake message (header included) of a ClientHello."""
    e = b"".join(t.to_bytes(2, "big") + len(d).to_bytes(2, "big") + d for t, d in exts)
    body = prefix + len(e).to_bytes(2, "big") + e
    return b"\x01" + len(body).to_bytes(3, "big") + body


def record(payload, ctype=0x16, ver=b"\x03\x01"):
    return bytes([ctype]) + ver + len(payload).to_bytes(2, "big") + payload


@unittest.skipIf(SKIP, SKIP)
class ProxyBypassTest(pf.NetnsTestCase):
    @classmethod
    def start_servers(cls):
        cls.cert, key = pf.make_cert(cls.dir, ["a.test", "b.test", "blocked.test", "own.test"])
        cls.nginx = cls.serve(pf.Nginx(cls.dir, cls.cert, key))
        cls.start_dnsmasq(["--local=/test/"] + pf.address_args(NAMES))
        cls.tmpl = pf.client_hello("a.test")

    # ---- helpers ----------------------------------------------------------------------------

    def start(self, allow, host="127.0.0.1", transparent_ports=(443, 80), metrics=False,
              proxy_extra="", transparent="127.0.0.1", tls_port=None, http_port=None):
        """moat with dns, tls, http (and metrics) listeners on host, a
        transparent one on `transparent` and an nftables REDIRECT of the
        guest's TCP to transparent_ports; allow=None: filtering off."""
        self.port = {"dns": free_port(), "tls": tls_port or free_port(),
                     "http": http_port or free_port(), "metrics": free_port(),
                     "transparent": free_port()}
        text = ("dns:\n  listen: [\"%s:%d\"]\n  upstream: [\"127.0.0.1:%d\"]\n"
                "proxy:\n  tls: [\"%s:%d\"]\n  http: [\"%s:%d\"]\n  transparent: [\"%s:%d\"]\n%s"
                "%sshutdown_grace: 1s\nlog: {allowed: true}\n%s\n" %
                (host, self.port["dns"], self.up_port, host, self.port["tls"], host,
                 self.port["http"], transparent, self.port["transparent"], proxy_extra,
                 "metrics: {listen: \"%s:%d\"}\n" % (host, self.port["metrics"]) if metrics
                 else "", "" if allow is None else "allow: %s" % allow))
        self.moat = Moat(write_config(self.dir, text))
        self.moat.wait_line("moat running")
        if transparent_ports:
            self.nfts.append(pf.Nft(list(transparent_ports), self.port["transparent"]))

    def connect(self, addr, port, source=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socks.append(s)
        s.settimeout(5)
        if source:
            s.bind((source, 0))
        s.connect((addr, port))
        return s

    def hello(self, entries=None, exts_extra=(), dup=None):
        """A real ClientHello (python's ssl) with its server_name replaced:
        entries [(name_type, bytes)] (None: a.test); dup: a second
        server_name extension with these entries."""
        ver, prefix, exts = parse_hello(self.tmpl)
        others = [(t, d) for t, d in exts if t != 0]
        new = [(0, sni_ext(entries if entries is not None else [(0, b"a.test")]))]
        if dup is not None:
            new.append((0, sni_ext(dup)))
        return record(hello_msg(prefix, new + list(exts_extra) + others), ver=ver)

    def tls_outcome(self, data, addr="127.0.0.1", port=None, source=None, then=None):
        """Send data; how the other side answers: 'alert' (moat's
        access_denied), 'server' (a ServerHello: a TLS server was reached),
        'server-alert' (an alert from a server), 'reset', 'eof'."""
        try:
            s = self.connect(addr, port or self.port["tls"], source)
        except ConnectionResetError:  # reset before connect() returned
            return "reset"
        try:
            s.sendall(data)
            if then:
                then(s)
            d = s.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except socket.timeout:
            return "open"
        finally:
            s.close()  # allowed connections are logged when they end
        if not d:
            return "eof"
        if d.startswith(ALERT_ACCESS_DENIED):
            return "alert"
        if d[0] == 0x16:
            return "server"
        if d[0] == 0x15:
            return "server-alert"
        return "other:" + d[:8].hex()

    def http_outcome(self, request, addr="127.0.0.1", port=None, source=None):
        """(status line | 'reset' | 'eof', body)."""
        try:
            s = self.connect(addr, port or self.port["http"], source)
        except ConnectionResetError:  # reset before connect() returned
            return "reset", b""
        try:
            s.sendall(request)
            head, body = pf.read_response(lambda: s.recv(65536))
        except (ConnectionResetError, BrokenPipeError):
            return "reset", b""
        except AssertionError as e:  # EOF in the head
            return ("eof", b"") if "b''" in str(e) else ("reset", b"")
        finally:
            s.close()  # allowed connections are logged when they end
        return head.split("\r\n")[0], body

    def assert_tls(self, data, want, reason=None, n0=None, **kw):
        n0 = len(self.moat.lines) if n0 is None else n0
        got = self.tls_outcome(data, **kw)
        if isinstance(want, tuple):
            self.assertIn(got, want)
        else:
            self.assertEqual(got, want)
        if reason:
            self.log_line("verdict=block reason=%s" % reason, start=n0)
        return got

    # ---- where an allowed name lands ---------------------------------------------------------

    def test_transparent_http_host_lands_on_named_server(self):
        """A guest aims at B:80 (no HTTP server there) with Host a.test.
        Expected: moat dials a.test itself and the guest gets a.test's page
        (http-a), logged with dest A port 80; with Host blocked.test the
        guest gets the 403 and B:80 is never dialled."""
        self.start("[a.test]")
        status, body = self.http_outcome(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close"
                                         b"\r\n\r\n", B, 80, pf.GUEST)
        self.assertIn(" 200 ", status)
        self.assertEqual(body, b"http-a\n")
        line = self.log_line("listener=transparent", "name=a.test", "verdict=allow")
        self.assertIn("dest=%s port=80" % A, line)
        status, _ = self.http_outcome(b"GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n", B, 80,
                                      pf.GUEST)
        self.assertTrue(status.startswith("HTTP/1.1 403"), status)
        self.log_line("listener=transparent", "name=blocked.test", "reason=not-allowed")

    # ---- ClientHello tricks ------------------------------------------------------------------

    def test_several_server_names_in_one_hello(self):
        """On the tls listener and through the transparent path (aimed at
        B:443). Expected per hello: one host_name a.test → a TLS server
        answers (control); two host_names (a.test + blocked.test, either
        order, or a.test twice) → alert, multi-sni; two server_name
        extensions → reset, not-tls (RFC 8446 §4.2: no duplicate
        extensions); a host_name a.test next to an entry of another
        name_type naming blocked.test → the other type is skipped (RFC
        6066 §3 length framing) and the connection goes to a.test's
        address only."""
        self.start("[a.test]")
        a, bl = b"a.test", b"blocked.test"
        cases = [
            (self.hello([(0, a)]), "server", None),
            (self.hello([(0, a), (0, bl)]), "alert", "multi-sni"),
            (self.hello([(0, bl), (0, a)]), "alert", "multi-sni"),
            (self.hello([(0, a), (0, a)]), "alert", "multi-sni"),
            (self.hello([(0, a)], dup=[(0, bl)]), "reset", "not-tls"),
            (self.hello([(0, bl)], dup=[(0, a)]), "reset", "not-tls"),
        ]
        for via in ("tls", "transparent"):
            kw = {} if via == "tls" else {"addr": B, "port": 443, "source": pf.GUEST}
            for i, (data, want, reason) in enumerate(cases):
                with self.subTest(via=via, case=i):
                    self.assert_tls(data, want, reason, **kw)
            with self.subTest(via=via, case="other name_type"):
                n0 = len(self.moat.lines)
                got = self.tls_outcome(self.hello([(1, bl), (0, a)]), **kw)
                self.assertIn(got, ("server", "server-alert", "eof", "reset"))
                line = self.log_line("name=a.test", "verdict=allow", start=n0)
                self.assertIn("dest=%s port=443" % A, line)

    def test_first_record_fragment_of_another_hello(self):
        """Expected per case:
        (1) record 1 holds the first part of a hello for a.test, complete
            up to and including its server_name extension; nothing is
            decided on it: 1 s later nothing is logged for the connection
            and it is still open. Record 2 then starts a whole hello for
            blocked.test instead of continuing the first: the handshake
            stream (a.test's prefix + the blocked hello's bytes) does not
            parse → reset, not-tls;
        (2) the same first record, then the client stops: reset at
            peek_timeout, never dialled;
        (3) a first record of another type (application data, change
            cipher spec, alert) carrying an allowed name, then a real hello
            for a.test → reset, not-tls (handshake records are not
            interleaved with others, RFC 8446 §5.1);
        (4) an SSLv2-framed ClientHello → reset, not-tls."""
        self.start("[a.test]", proxy_extra="  peek_timeout: 3s\n")
        full_a = self.hello([(0, b"a.test")])
        ver, prefix, exts = parse_hello(full_a)
        msg_a = full_a[5:]
        # The prefix of msg_a through its server_name extension (exts[0]).
        cut = 4 + len(prefix) + 2 + 4 + len(exts[0][1])
        pad = (21, b"\x00" * 600)  # makes the second hello longer than a.test's rest
        msg_b = hello_msg(prefix, [(0, sni_ext([(0, b"blocked.test")])), pad])

        def wait_undecided(s):
            time.sleep(1.0)
            self.assertFalse(any("name=a.test" in l for l in self.moat.lines[n0:]),
                             "decided on a partial hello")
            s.sendall(record(msg_b, ver=ver))

        n0 = len(self.moat.lines)
        self.assert_tls(record(msg_a[:cut], ver=ver), "reset", "not-tls", n0=n0,
                        then=wait_undecided)
        n0 = len(self.moat.lines)
        s = self.connect("127.0.0.1", self.port["tls"])
        s.sendall(record(msg_a[:cut], ver=ver))
        s.settimeout(6)
        t0 = time.monotonic()
        with self.assertRaises(ConnectionResetError):
            s.recv(100)
        self.assertGreater(time.monotonic() - t0, 1.5)
        self.log_line("verdict=block reason=peek-timeout", start=n0)
        self.assertFalse(any("name=a.test" in l for l in self.moat.lines[n0:]))
        for ctype, payload in ((0x17, b"\x01\x00\x00\x10a.test"), (0x14, b"\x01"),
                               (0x15, b"\x01\x00")):
            with self.subTest(first_record=ctype):
                self.assert_tls(record(payload, ctype=ctype) + full_a, "reset", "not-tls")
        sslv2 = b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + b"\x00\x00\x2f" * 7 + \
            b"\x11" * 16
        self.assert_tls(sslv2, "reset", "not-tls")

    def test_ip_literal_sni(self):
        """allow [a.test, 198.18.0.2, 2001:db8::/32]: even with address rules
        covering them, IP literals as SNI are refused (RFC 6066 §3: a
        HostName is never an address). Expected: alert, bad-sni, on the
        tls listener and through the transparent path aimed at B:443 (an
        address no rule covers)."""
        self.start('[a.test, %s, "2001:db8::/32"]' % A)
        for sni in (A.encode(), A.encode() + b".", b"::1", b"[::1]", b"127.0.0.1",
                    b"2001:db8::2", b"[2001:db8::2]", b"3324641282", b"198.18.2"):
            for via in ("tls", "transparent"):
                kw = {} if via == "tls" else {"addr": B, "port": 443, "source": pf.GUEST}
                with self.subTest(sni=sni, via=via):
                    self.assert_tls(self.hello([(0, sni)]), "alert", "bad-sni", **kw)
        # Hex is not an address: just a name that is not on the list.
        self.assert_tls(self.hello([(0, b"0xc6120002")]), "alert", "not-allowed")

    def test_odd_sni_names(self):
        """allow [a.test, *.w.test]. Expected per SNI: case and one trailing
        dot do not matter (→ a.test's server); two trailing dots, empty
        labels, NUL anywhere, bytes outside [A-Za-z0-9-_], a 64-octet
        label, a name over 253 octets, a port, a `*` → alert, bad-sni;
        blocked.test in any case or with a dot → alert, not-allowed; a
        63-octet label under *.w.test is a valid allowed name (it does not
        resolve here: reset, no address)."""
        self.start('[a.test, "*.w.test"]')
        long_name = b".".join([b"x" * 63] * 4) + b".w.test"
        cases = [
            (b"a.test", "server", None), (b"A.TEST", "server", None),
            (b"a.test.", "server", None), (b"a.TeSt.", "server", None),
            (b"a.test..", "alert", "bad-sni"), (b".a.test", "alert", "bad-sni"),
            (b"a..test", "alert", "bad-sni"), (b"a.test\x00", "alert", "bad-sni"),
            (b"a.test\x00.blocked.test", "alert", "bad-sni"),
            (b"blocked.test\x00a.test", "alert", "bad-sni"),
            (b"\x00a.test", "alert", "bad-sni"), (b"", "alert", "bad-sni"),
            (b"blocked.test.", "alert", "not-allowed"), (b"BLOCKED.TEST", "alert", "not-allowed"),
            (b"x" * 64 + b".w.test", "alert", "bad-sni"), (long_name, "alert", "bad-sni"),
            (b"a.test:443", "alert", "bad-sni"), (b"a.test ", "alert", "bad-sni"),
            (b"a test", "alert", "bad-sni"), (b"a.test/", "alert", "bad-sni"),
            (b"a.test@blocked.test", "alert", "bad-sni"), (b"\xc3\xa4.test", "alert", "bad-sni"),
            (b"*.w.test", "alert", "bad-sni"), (b"a.test\\.", "alert", "bad-sni"),
        ]
        for sni, want, reason in cases:
            with self.subTest(sni=sni):
                n0 = len(self.moat.lines)
                self.assert_tls(self.hello([(0, sni)]), want, reason, n0=n0)
                if want == "server":
                    line = self.log_line("name=a.test", "verdict=allow", start=n0)
                    self.assertIn("dest=%s port=443" % A, line)
        n0 = len(self.moat.lines)
        self.assert_tls(self.hello([(0, b"y" * 63 + b".w.test")]), "reset", n0=n0)
        line = self.log_line("name=" + "y" * 63 + ".w.test", start=n0)
        self.assertRegex(line, r"reason=(no-address|dial-failed)")

    # ---- HTTP tricks -------------------------------------------------------------------------

    def test_odd_http_hosts_and_fronting(self):
        """allow [a.test], http listener (and a few through the transparent
        path aimed at B:80). Expected per request head: case, one
        trailing dot and a port do not matter (→ http-a, port 80); every
        other case is a 403 from moat with the reason given (a NUL in the
        head: a reset, not-http), and a.test's server never answers it."""
        self.start("[a.test]")
        ok = [b"a.test", b"A.TEST", b"a.test.", b"a.test.:80", b"a.test:8080"]
        blocked = [
            (b"Host: blocked.test.\r\n", "not-allowed"),
            (b"Host: BLOCKED.test\r\n", "not-allowed"),
            (b"Host: a.test\x00.blocked.test\r\n", "not-http"),  # reset: NUL is not HTTP
            (b"Host: " + b"x" * 64 + b".a.test\r\n", "bad-host"),
            (b"Host: a.test@blocked.test\r\n", "bad-host"),
            (b"Host: a.test blocked.test\r\n", "bad-host"),
            (b"Host: a.test,blocked.test\r\n", "bad-host"),
            (b"Host: a.test..\r\n", "bad-host"),
            (b"Host: 127.0.0.1\r\n", "refused-range"),
            (b"Host: [::1]\r\n", "refused-range"),
            (b"Host: [::ffff:127.0.0.1]\r\n", "refused-range"),
            (b"Host: 169.254.169.254\r\n", "refused-range"),
            (b"Host: a.test\r\nHost: blocked.test\r\n", "multi-host"),
            (b"Host: a.test\r\nHost: a.test\r\n", "multi-host"),
        ]
        fronted = [  # (request line, extra headers) behind Host: a.test
            (b"GET http://blocked.test/ HTTP/1.1", "host-conflict"),
            (b"GET HTTP://BLOCKED.TEST/ HTTP/1.1", "host-conflict"),
            (b"GET https://blocked.test/ HTTP/1.1", "host-conflict"),
            (b"GET http://blocked.test:80/ HTTP/1.1", "host-conflict"),
            (b"CONNECT blocked.test:443 HTTP/1.1", "host-conflict"),
            (b"GET http://a.test@blocked.test/ HTTP/1.1", None),
        ]
        for host in ok:
            with self.subTest(host=host):
                n0 = len(self.moat.lines)
                status, body = self.http_outcome(b"GET / HTTP/1.1\r\nHost: " + host +
                                                 b"\r\nConnection: close\r\n\r\n")
                self.assertIn(" 200 ", status)
                self.assertEqual(body, b"http-a\n")
                self.assertIn("dest=%s port=80" % A,
                              self.log_line("name=a.test", "verdict=allow", start=n0))
        for headers, reason in blocked:
            with self.subTest(headers=headers):
                n0 = len(self.moat.lines)
                status, body = self.http_outcome(b"GET / HTTP/1.1\r\n" + headers + b"\r\n")
                if reason == "not-http":
                    self.assertEqual(status, "reset")
                else:
                    self.assertTrue(status.startswith("HTTP/1.1 403"), status)
                self.assertNotIn(b"http-a", body)
                self.log_line("verdict=block reason=%s" % reason, start=n0)
        for line, reason in fronted:
            for via in ("http", "transparent"):
                kw = {} if via == "http" else {"addr": B, "port": 80, "source": pf.GUEST}
                with self.subTest(line=line, via=via):
                    n0 = len(self.moat.lines)
                    status, body = self.http_outcome(line + b"\r\nHost: a.test\r\n\r\n", **kw)
                    self.assertTrue(status.startswith("HTTP/1.1 403"), status)
                    self.assertNotIn(b"http-a", body)
                    self.log_line("verdict=block", "reason=%s" % (reason or ""), start=n0)

    # ---- moat's own listeners ------------------------------------------------------------------

    def test_own_listeners_through_transparent_path(self):
        """moat's dns, tls, http and metrics listeners on OWN (198.18.0.8),
        and a guest whose TCP to their ports is redirected to the
        transparent listener. Expected, with filtering off, with allow
        [a.test] and with an address rule covering OWN on port 443 only:
        each connection is reset at once and logged own-listener (a
        connection back into moat is refused, SPEC §2.4)."""
        for allow in (None, "[a.test]", "[a.test, {cidr: 198.18.0.0/15, ports: [443]}]"):
            with self.subTest(allow=allow):
                self.start(allow, host=OWN, metrics=True, transparent_ports=())
                ports = [self.port[k] for k in ("dns", "tls", "http", "metrics")]
                self.nfts.append(pf.Nft(ports, self.port["transparent"]))
                for p in ports:
                    n0 = len(self.moat.lines)
                    try:
                        s = self.connect(OWN, p, pf.GUEST)
                        s.sendall(self.hello())
                        how = s.recv(100)
                    except (ConnectionResetError, BrokenPipeError):
                        how = "reset"
                    self.assertEqual(how, "reset", "port %d" % p)
                    line = self.log_line("listener=transparent", "reason=own-listener", start=n0)
                    self.assertIn("dest=%s port=%d" % (OWN, p), line)
                self.nfts.pop().stop()
                self.assertEqual(self.moat.stop(), 0)

    def test_allowed_name_pointing_at_moat_itself(self):
        """own.test (allowed) resolves to OWN, where moat's tls listener
        listens on 443 and its http listener on 80. Expected: SNI own.test
        on that tls listener is reset, logged own-listener (moat never
        dials itself); Host own.test and Host 198.18.0.8 on the http
        listener are refused the same way (reset or 403)."""
        self.start("[own.test]", host=OWN, transparent_ports=(), tls_port=443, http_port=80)
        n0 = len(self.moat.lines)
        self.assertEqual(self.tls_outcome(self.hello([(0, b"own.test")]), OWN, 443), "reset")
        self.log_line("name=own.test", "reason=own-listener", start=n0)
        for host in (b"own.test", OWN.encode()):
            with self.subTest(host=host):
                n0 = len(self.moat.lines)
                status, _ = self.http_outcome(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
                                              OWN, 80)
                self.assertTrue(status == "reset" or status.startswith("HTTP/1.1 403"), status)
                self.log_line("reason=own-listener", start=n0)

    def test_transparent_listener_never_loops_into_itself(self):
        """The transparent listener binds the wildcard address (so it also
        accepts on OWN, which no other listener uses), filtering is off, and the guest's connection to
        OWN:<its port> is redirected to it: the original destination is
        moat's transparent listener itself. Expected: the chain is cut at
        once, the guest's connection ends (reset) within 2 s, moat logs
        own-listener, and it opened at most one connection to itself
        (not a loop that eats its file descriptors)."""
        self.start(None, transparent="0.0.0.0", transparent_ports=())
        tp = self.port["transparent"]
        self.nfts.append(pf.Nft([tp], tp))
        pid = self.moat.proc.pid
        base = len(os.listdir("/proc/%d/fd" % pid))
        n0 = len(self.moat.lines)
        t0 = time.monotonic()
        try:
            # The reset may be there before connect() returns.
            s = self.connect(OWN, tp, pf.GUEST)
            s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            s.settimeout(2)
            how = s.recv(100) or "eof"
        except (ConnectionResetError, BrokenPipeError):
            how = "reset"
        except socket.timeout:
            how = "open"
        self.assertIn(how, ("reset", "eof"), "guest connection %s after %.1f s" %
                      (how, time.monotonic() - t0))
        self.log_line("reason=own-listener", start=n0)
        time.sleep(0.3)
        accepted = sum(1 for l in self.moat.lines[n0:] if "listener=transparent" in l)
        self.assertLessEqual(accepted, 3, "\n".join(self.moat.lines[n0:n0 + 20]))
        self.assertLessEqual(len(os.listdir("/proc/%d/fd" % pid)), base + 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
