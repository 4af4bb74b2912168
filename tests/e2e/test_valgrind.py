"""End-to-end: one clean start / serve / reload / stop cycle of the real
moat under valgrind memcheck (issue 6 point 2): no memory error and no
definite or indirect leak, exit status 0.

moat runs with DNS, tls and http listeners and a loopback dnsmasq upstream
and serves DNS queries (blocked, allowed, cached, TCP, malformed) and TCP
connections (blocked by SNI and by Host, not TLS, allowed and spliced to
loopback echo servers), is reloaded once with SIGHUP, and stopped with
SIGTERM while one spliced connection is still open (the grace ends and
aborts it), so the reload, drain and abort paths are checked too.

Skipped, with the reason, when valgrind is not installed (dev.sh's test
packages install it), when build/moat is a sanitizer build (ASan or
TSan and valgrind do not mix; the ASan build has its own leak check), or when
not root (the backends listen on ports 443 and 80 in a network namespace
of the test's own). valgrind makes moat some 20-50 times slower: every wait
here is long, and every one is bounded."""
import os
import shutil
import signal
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import proxyfixture as pf  # noqa: E402
import proxyfixture_more as pm  # noqa: E402
from dnsfixture import (Response, build_query, recv_exact, tcp_exchange,  # noqa: E402
                        udp_exchange)
from moatlib import MOAT, Moat, close_all, free_port, write_config  # noqa: E402

VALGRIND = shutil.which("valgrind")
SLOW = 60.0  # seconds: any single wait on moat under valgrind


def sanitizer_build(path):
    """Whether the binary at path carries AddressSanitizer or ThreadSanitizer
    (linked or static)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return any(m in data for m in (b"__asan_init", b"libasan.so", b"__tsan_init", b"libtsan.so"))


SKIP = None
if not VALGRIND:
    SKIP = "valgrind is not installed (apt-get install valgrind; ./dev.sh test installs it)"
elif sanitizer_build(MOAT):
    SKIP = ("%s is a sanitizer (ASan or TSan) build: valgrind cannot run it; the ASan "
            "build has its own leak check" % MOAT)
else:
    SKIP = pf.netns_skip(__name__, __file__)

NAMES = [("ok.test", pf.ADDRS["a"]), ("new.test", pf.ADDRS["a"]),
         ("blocked.test", pf.ADDRS["a"])]


def config(dns_port, up_port, tls_port, http_port, allow):
    return ("dns:\n  listen: [\"127.0.0.1:%d\"]\n  upstream: [\"127.0.0.1:%d\"]\n"
            "  timeout: 10s\n"
            "proxy:\n  tls: [\"127.0.0.1:%d\"]\n  http: [\"127.0.0.1:%d\"]\n"
            "  peek_timeout: 60s\n  connect_timeout: 60s\n"
            "shutdown_grace: 3s\nlog: {allowed: true}\nallow: %s\n" %
            (dns_port, up_port, tls_port, http_port, allow))


@unittest.skipIf(SKIP, SKIP)
class ValgrindTest(pf.NetnsTestCase):
    @classmethod
    def start_servers(cls):
        pf.setup_netns()
        # "TLS" on 443 is a raw echo (a hello comes back whole: spliced);
        # HTTP on 80 answers `ready` after the head, then echoes.
        cls.serve(pm.EchoServer(pf.ADDRS["a"], 443))
        cls.serve(pm.EchoServer(pf.ADDRS["a"], 80, http=True))
        cls.start_dnsmasq(["--local=/test/", "--local-ttl=300"] + pf.address_args(NAMES))

    def tearDown(self):
        # No clean stop: the test stops moat itself and reads valgrind's
        # verdict; here only what a failure left behind is killed.
        close_all(self.socks)
        if self.moat:
            self.moat.kill()

    def connect(self, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=SLOW)
        self.socks.append(s)
        return s

    def dns(self, name, qtype="A", qid=1, sock=None):
        """One query; sock: a UDP socket to ask from (the same source port
        reaches the same worker, and so the same cache)."""
        if sock is None:
            raw = udp_exchange(self.dns_port, build_query(name, qtype, qid=qid), timeout=SLOW)
        else:
            sock.sendto(build_query(name, qtype, qid=qid), ("127.0.0.1", self.dns_port))
            raw = sock.recv(65535)
        self.assertIsNotNone(raw, "no answer for %s" % name)
        return Response(raw)

    def test_start_serve_reload_stop_clean(self):
        """Expected: every query and connection gets its usual answer under
        valgrind; after SIGHUP (generation 2) the new name resolves; SIGTERM
        with one connection open exits 0 once the grace aborts it, and the
        valgrind log says 0 errors, nothing definitely or indirectly
        lost."""
        vlog = os.path.join(self.dir, "valgrind.log")
        self.dns_port, tls_port, http_port = free_port(), free_port(), free_port()
        path = write_config(self.dir, config(self.dns_port, self.up_port, tls_port, http_port,
                                             "[ok.test]"))
        self.moat = Moat(path, wrapper=[
            VALGRIND, "--tool=memcheck", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect", "--show-leak-kinds=definite,indirect",
            "--error-exitcode=99", "--track-fds=no", "--num-callers=30", "--log-file=" + vlog])
        self.moat.wait_line("moat running", timeout=180)

        # DNS: blocked (local), allowed (upstream), the same again (cache),
        # AAAA, TCP, and a malformed query.
        r = self.dns("blocked.test")
        self.assertEqual((r.rcode_name, r.addrs()), ("NOERROR", ["0.0.0.0"]))
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socks.append(u)
        u.settimeout(SLOW)
        self.assertEqual(self.dns("ok.test", qid=2, sock=u).addrs(), [pf.ADDRS["a"]])
        self.assertEqual(self.dns("OK.test", qid=3, sock=u).addrs(), [pf.ADDRS["a"]])
        self.assertEqual(self.dnsmasq.queries("ok.test", "A"), 1, "not served from the cache")
        r = self.dns("ok.test", "AAAA", qid=4)  # dnsmasq: no AAAA for it
        self.assertEqual((r.id, r.answer), (4, []))
        (t,) = tcp_exchange(self.dns_port, [build_query("blocked.test", "TXT", qid=5)],
                            timeout=SLOW)
        self.assertEqual((t.id, t.answer, t.authority[0].type), (5, [], 6))
        raw = udp_exchange(self.dns_port, build_query("ok.test", qdcount=2), timeout=SLOW)
        self.assertEqual(Response(raw).rcode_name, "FORMERR")

        # TCP: blocked by SNI (alert), blocked by Host (403), not TLS
        # (reset), allowed on both listeners (spliced to the echo servers).
        s = self.connect(tls_port)
        s.sendall(pf.client_hello("blocked.test"))
        self.assertEqual(recv_exact(s, 7), b"\x15\x03\x03\x00\x02\x02\x31")
        s = self.connect(http_port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n")
        head, _ = pf.read_response(lambda: s.recv(65536))
        self.assertTrue(head.startswith("HTTP/1.1 403"), head)
        s = self.connect(tls_port)
        s.sendall(b"not tls at all\r\n\r\n")
        with self.assertRaises(ConnectionResetError):
            while s.recv(100):
                pass
        hello = pf.client_hello("ok.test")
        s = self.connect(tls_port)
        s.sendall(hello)
        self.assertEqual(recv_exact(s, len(hello)), hello)
        s.close()
        h = self.connect(http_port)
        h.sendall(b"GET / HTTP/1.1\r\nHost: ok.test\r\nContent-Length: 1000000000\r\n\r\n")
        self.assertEqual(recv_exact(h, 6), b"ready\n")
        h.sendall(b"ping")
        self.assertEqual(recv_exact(h, 4), b"ping")
        # h stays open across the reload and the stop.
        self.moat.wait_line("name=ok.test verdict=allow", timeout=SLOW)

        # Reload: a second name.
        write_config(self.dir, config(self.dns_port, self.up_port, tls_port, http_port,
                                      "[ok.test, new.test]"))
        self.moat.send(signal.SIGHUP)
        self.moat.wait_line("generation 2", timeout=SLOW)
        self.assertEqual(self.dns("new.test", qid=6).addrs(), [pf.ADDRS["a"]])
        h.sendall(b"pong")
        self.assertEqual(recv_exact(h, 4), b"pong")

        rc = self.moat.stop(signal.SIGTERM, timeout=180)
        with open(vlog, errors="replace") as f:
            report = f.read()
        self.assertEqual(rc, 0, "moat under valgrind exited %d:\n%s\n%s" %
                         (rc, report[-6000:], "\n".join(self.moat.lines[-20:])))
        self.assertIn("Memcheck", report, "no valgrind report")
        self.assertIn("ERROR SUMMARY: 0 errors", report, report[-6000:])
        if os.environ.get("MOAT_E2E_VERBOSE"):
            sys.stderr.write(report)
        for kind in ("definitely", "indirectly"):
            if "All heap blocks were freed" not in report:
                self.assertRegex(report, r"%s lost: 0 bytes in 0 blocks" % kind, report[-6000:])
        self.assertTrue(any(l.endswith("stopped") for l in self.moat.lines), self.moat.lines)


if __name__ == "__main__":
    unittest.main(verbosity=2)
