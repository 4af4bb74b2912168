"""End-to-end: SIGHUP reload under a running load (SPEC §1; issue 5 point 1,
issue 6 point 3). test_daemon.py, test_dns.py and test_proxy.py check one
reload at a time on an idle daemon; here the reloads come every ~200 ms
while DNS clients and TCP clients keep moat busy, and nothing may be lost.

Runs in a network namespace of its own (proxyfixture.reexec_in_netns) with
real nginx (TLS and HTTP), the bulk server and an echo server as backends
and dnsmasq as moat's upstream. Names:
  a.test       198.18.0.2  nginx TLS "server-a" and HTTP "http-a", /blob
  b.test       198.18.0.3  nginx TLS "server-b"
  bulk.test    198.18.0.4  bulk server on port 80 (bytes checked both ways)
  echo.test    198.18.0.6  echo server on port 80 (after the request head)
  echo2.test   198.18.0.6  the same server, under a second name
  flip.test    198.18.0.8  allowed in some configs, blocked in others
  priv.test    10.0.0.2    allowed; private: its address is removed from the
                           answer unless the config has a rule for 10.0.0.0/8
  blocked.test 198.18.0.2  never allowed
"""
import hashlib
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import unittest

import proxyfixture as pf
import proxyfixture_more as pm
from dnsfixture import Response, build_query, recv_exact, udp_exchange
from moatlib import Moat, close_all, free_port, recv_all

SKIP = pf.netns_skip(__name__, __file__)

FLIP = "198.18.0.8"
NAMES = {"a.test": pf.ADDRS["a"], "b.test": pf.ADDRS["b"], "bulk.test": pf.ADDRS["bulk"],
         "echo.test": pm.ECHO, "echo2.test": pm.ECHO, "flip.test": FLIP, "priv.test": pm.PRIV,
         "blocked.test": pf.ADDRS["a"]}
BLOB = os.urandom(256 << 10)
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()
# The names whose answer changes between configs: the addresses each
# config's answer has (sinkholed, real, or emptied by the rebinding filter).
WATCH = {"flip.test": {"A": [FLIP], "B": ["0.0.0.0"], "C": [FLIP]},
         "priv.test": {"A": [], "B": [pm.PRIV], "C": []}}
BULK_REPLY = pf.DOWN_BLOCK + b"sha256=%s len=%d\n" % (
    hashlib.sha256(pf.UP_BLOCK).hexdigest().encode(), len(pf.UP_BLOCK))

# Bounds of the load test: reloads, wall clock, and per-client counts.
RELOADS = 60
RELOAD_EVERY = 0.2
WALL_CAP = 60.0
MAX_DNS_QUERIES = 200000
MAX_TCP_CONNS = 3000


class Load:
    """What the load clients saw: counts, failures (with a cap on how many
    are kept), and the answers for WATCH names with their send/receive
    times."""

    def __init__(self, deadline):
        self.deadline = deadline
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []
        self.n_failures = 0
        self.watched = []  # (name, t_sent, t_answered, addresses)
        self.threads = []

    def running(self):
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def fail(self, what):
        with self.lock:
            self.n_failures += 1
            if len(self.failures) < 30:
                self.failures.append("%.3f %s" % (time.monotonic(), what))

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def spawn(self, fn, *args):
        t = threading.Thread(target=self._guard, args=(fn, args), daemon=True)
        t.start()
        self.threads.append(t)

    def _guard(self, fn, args):
        try:
            fn(*args)
        except Exception as e:  # a crashed client is a failure, not a hang
            self.fail("%s crashed: %r" % (fn.__name__, e))


def listening_sockets(pid):
    """{(proto, port): inode} of moat's listening TCP and bound UDP sockets
    on 127.0.0.1 (from /proc, in the test's namespace, which is moat's)."""
    mine = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            mine.add(int(link[8:-1]))
    out = {}
    for proto in ("tcp", "udp"):
        with open("/proc/%d/net/%s" % (pid, proto)) as f:
            for line in f.readlines()[1:]:
                v = line.split()
                addr, port = v[1].split(":")
                inode = int(v[9])
                if addr != "0100007F" or inode not in mine:
                    continue
                if proto == "udp" and v[2] != "00000000:0000":  # connected: upstream
                    continue
                if proto == "tcp" and v[3] != "0A":  # LISTEN
                    continue
                out[(proto, int(port, 16))] = inode
    return out


@unittest.skipIf(SKIP, SKIP)
class ReloadTest(pf.NetnsTestCase):
    # Extra command line (ReloadTwoWorkersTest pins the workers).
    WORKERS_ARGS = ()

    @classmethod
    def start_servers(cls):
        pm.setup_netns_more()
        cls.cert, key = pf.make_cert(cls.dir, ["a.test", "b.test"])
        cls.nginx = cls.serve(pf.Nginx(cls.dir, cls.cert, key))
        for site in ("a", "h"):
            with open(os.path.join(cls.nginx.dir, site, "blob"), "wb") as f:
                f.write(BLOB)
        cls.bulk = cls.serve(pf.BulkServer(pf.ADDRS["bulk"]))
        cls.echo = cls.serve(pm.EchoServer(pm.ECHO, 80, http=True))
        # TTL 300 (--address answers have TTL 0, which moat does not cache):
        # answers are cached, so each reload must drop them.
        cls.start_dnsmasq(["--host-record=%s,%s,300" % na for na in NAMES.items()])

    def setUp(self):
        super().setUp()
        self.load = None

    def tearDown(self):
        if self.load:
            self.load.stop.set()
            for t in self.load.threads:
                t.join(15)
        close_all(self.socks)
        self.stop_moat(tail=200)

    # ---- config ------------------------------------------------------------------------

    def config_text(self, variant):
        """The config of a variant; every variant allows the names under load
        (a.test, bulk.test, and b.test / echo2.test until "cut"):
          A    base, flip.test allowed
          B    flip.test blocked, 10.0.0.0/8 and two more rules, another
               cache size, and allowed decisions logged (log_configure on
               every reload)
          C    A plus an extra dns.listen and an extra proxy.tls address,
               B's cache size
          cut  A without b.test and echo2.test
          bad  A plus two invalid entries (config errors, rejected)"""
        allow = ["a.test", "b.test", "bulk.test", "echo.test", "echo2.test", "priv.test"]
        dns = ["127.0.0.1:%d" % self.dns_port]
        tls = ["127.0.0.1:%d" % self.tls_port]
        cache, log = 10000, "log: {allowed: false}\n"
        if variant != "B":
            allow.append("flip.test")
        if variant == "B":
            allow += ['"*.extra.test"', "203.0.113.0/24", "10.0.0.0/8"]
            cache, log = 5000, "log: {allowed: true}\n"
        if variant == "C":
            dns.append("127.0.0.1:%d" % self.extra_dns)
            tls.append("127.0.0.1:%d" % self.extra_tls)
            cache = 5000  # B -> C -> B keep the cache (cleared), B -> A makes a new one
        if variant == "cut":
            allow.remove("b.test")
            allow.remove("echo2.test")
        if variant == "bad":
            allow += ['"*.com"', "300.1.2.3"]
        q = lambda xs: ", ".join('"%s"' % x for x in xs)
        return ("dns:\n"
                "  listen: [%s]\n"
                "  upstream: [\"127.0.0.1:%d\"]\n"
                "  timeout: 2s\n"
                "  cache_size: %d\n"
                "proxy:\n"
                "  tls: [%s]\n"
                "  http: [\"127.0.0.1:%d\"]\n"
                "shutdown_grace: 2s\n"
                "%s"
                "allow:\n%s" % (q(dns), self.up_port, cache, q(tls), self.http_port, log,
                                "".join("  - %s\n" % a for a in allow)))

    def write(self, variant):
        """Replace the config file atomically (moat reads it on a worker
        thread: a half-written file would be a spurious bad config)."""
        tmp = self.config + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.config_text(variant))
        os.replace(tmp, self.config)

    def bad_positions(self):
        """FILE:LINE:COL of the two bad entries of the "bad" variant."""
        out = []
        for no, line in enumerate(self.config_text("bad").splitlines(), 1):
            for bad in ('"*.com"', "300.1.2.3"):
                if line.endswith("- " + bad):
                    out.append("%s:%d:%d:" % (self.config, no, line.index(bad) + 1))
        self.assertEqual(len(out), 2)
        return out

    def start(self):
        self.dns_port, self.tls_port, self.http_port = free_port(), free_port(), free_port()
        self.extra_dns, self.extra_tls = free_port(), free_port()
        self.config = os.path.join(self.dir, "moat.yaml")
        self.write("A")
        self.moat = Moat(self.config, extra_args=self.WORKERS_ARGS)
        self.moat.wait_line("moat running")

    def reload(self, variant, timeout=10.0):
        """Write variant, SIGHUP, wait for its outcome; returns the index of
        the line that says so ('reloaded' or 'rejected')."""
        self.write(variant)
        n = len(self.moat.lines)
        self.moat.send(signal.SIGHUP)
        needle = "rejected" if variant == "bad" else "reloaded"
        i = self.moat.wait_line(needle, timeout=timeout, start=n)
        if variant != "bad":
            # No other outcome line in between (a reload applied in part, a
            # reload rejected) went unnoticed.
            bad = [l for l in self.moat.lines[n:i + 1] if " error " in l or " warn " in l]
            self.assertEqual(bad, [], "reload to %s" % variant)
        return n, i

    # ---- clients ------------------------------------------------------------------------

    def ctx(self):
        return ssl.create_default_context(cafile=self.cert)

    def connect(self, port, keep=True):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if keep:
            self.socks.append(s)
        return s

    def expect_dns(self, name, addr, got, load=None):
        """Check one answer; addr None: a WATCH name, any config's answer."""
        if got.rcode_name != "NOERROR":
            return "%s: %s" % (name, got.rcode_name)
        addrs = got.addrs()
        if addr is None:
            if addrs not in WATCH[name].values():
                return "%s: %r" % (name, addrs)
        elif addrs != [addr]:
            return "%s: %r, want %s" % (name, addrs, addr)
        if addrs == ["0.0.0.0"] and not got.aa:
            return "%s: sinkhole answer without AA" % name
        return None

    DNS_MIX = [("a.test", pf.ADDRS["a"]), ("b.test", pf.ADDRS["b"]),
               ("blocked.test", "0.0.0.0"), ("flip.test", None), ("priv.test", None)]

    def dns_udp_client(self, load, idx):
        """UDP queries one at a time, no retries: a query without an answer
        within 5 s is lost."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.connect(("127.0.0.1", self.dns_port))
        n = 0
        try:
            while load.running() and n < MAX_DNS_QUERIES // 4:
                name, want = self.DNS_MIX[n % len(self.DNS_MIX)]
                qid = (idx * 16381 + n) & 0xFFFF
                t0 = time.monotonic()
                s.send(build_query(name, qid=qid))
                n += 1
                try:
                    while True:
                        r = Response(s.recv(4096))
                        if r.id == qid:
                            break
                except socket.timeout:
                    load.fail("udp %d: %s lost" % (idx, name))
                    continue
                except OSError as e:
                    load.fail("udp %d: %s: %r" % (idx, name, e))
                    continue
                t1 = time.monotonic()
                err = self.expect_dns(name, want, r)
                if err:
                    load.fail("udp %d: %s" % (idx, err))
                if want is None:
                    with load.lock:
                        load.watched.append((name, t0, t1, r.addrs()))
        finally:
            s.close()
            load.add("dns_udp", n)

    def dns_tcp_client(self, load):
        """Queries one after the other on ONE TCP connection opened before the
        reloads: the kept DNS listener's connections stay up."""
        s = self.connect(self.dns_port, keep=False)
        s.settimeout(5)
        n = 0
        try:
            while load.running() and n < MAX_DNS_QUERIES // 4:
                name, want = self.DNS_MIX[n % len(self.DNS_MIX)]
                q = build_query(name, qid=n & 0xFFFF)
                n += 1
                try:
                    s.sendall(struct.pack("!H", len(q)) + q)
                    ln = struct.unpack("!H", recv_exact(s, 2))[0]
                    r = Response(recv_exact(s, ln))
                except (OSError, EOFError) as e:
                    load.fail("dns tcp: %s: %r (connection lost)" % (name, e))
                    return
                err = self.expect_dns(name, want, r)
                if err:
                    load.fail("dns tcp: %s" % err)
        finally:
            s.close()
            load.add("dns_tcp", n)

    def tls_client(self, load):
        """New TLS connections through the tls listener, GET /blob from
        a.test, body checked."""
        n = 0
        while load.running() and n < MAX_TCP_CONNS:
            n += 1
            try:
                with self.connect(self.tls_port, keep=False) as s, \
                        self.ctx().wrap_socket(s, server_hostname="a.test") as t:
                    t.sendall(b"GET /blob HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                    head, body = pf.read_response(lambda: t.recv(65536))
                status = head.split("\r\n")[0]
                if " 200 " not in status or hashlib.sha256(body).hexdigest() != BLOB_SHA:
                    load.fail("tls: %s, %d body bytes" % (status, len(body)))
            except (OSError, AssertionError) as e:
                load.fail("tls: %r" % e)
        load.add("tls", n)

    def http_client(self, load):
        """New connections through the http listener: GET /blob from a.test,
        and 1 MiB each way through the bulk server (both directions checked,
        the half-close passed on)."""
        n = 0
        while load.running() and n < MAX_TCP_CONNS:
            n += 1
            try:
                with self.connect(self.http_port, keep=False) as s:
                    if n % 2:
                        s.sendall(b"GET /blob HTTP/1.1\r\nHost: a.test\r\n"
                                  b"Connection: close\r\n\r\n")
                        head, body = pf.read_response(lambda: s.recv(65536))
                        ok = " 200 " in head and hashlib.sha256(body).hexdigest() == BLOB_SHA
                        what = "GET /blob: %s, %d bytes" % (head.split("\r\n")[0], len(body))
                    else:
                        s.sendall(b"POST / HTTP/1.1\r\nHost: bulk.test\r\nX-Blocks: 1\r\nContent-Length: 1000000000\r\n\r\n")
                        s.sendall(pf.UP_BLOCK)
                        s.shutdown(socket.SHUT_WR)
                        got = recv_all(s, size=1 << 20)
                        ok = got == BULK_REPLY
                        what = "bulk: %d bytes back, tail %r" % (len(got), got[-90:])
                if not ok:
                    load.fail("http: " + what)
            except (OSError, AssertionError) as e:
                load.fail("http: %r" % e)
        load.add("http", n)

    # Long-lived connections, opened before the reloads.

    def open_tls_keepalive(self, name):
        t = self.ctx().wrap_socket(self.connect(self.tls_port), server_hostname=name)
        self.socks.append(t)
        return t

    def tls_keepalive_get(self, t, name, want):
        t.settimeout(10)
        t.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % name.encode())
        head, body = pf.read_response(lambda: t.recv(65536))
        if body != want:
            raise AssertionError("%s: %r" % (name, body))

    def open_echo(self, name):
        s = self.connect(self.http_port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000000000\r\n\r\n" % name.encode())
        if recv_exact(s, 6) != b"ready\n":
            raise AssertionError("echo did not answer")
        return s

    def echo_roundtrip(self, s, size=16384):
        data = os.urandom(size)
        s.settimeout(10)
        s.sendall(data)
        if recv_exact(s, size) != data:
            raise AssertionError("echo: bytes differ")

    def long_lived_client(self, load, conns):
        """One exchange on each long-lived connection every ~100 ms."""
        n = 0
        while load.running():
            for kind, c, name, want in conns:
                try:
                    if kind == "tls":
                        self.tls_keepalive_get(c, name, want)
                    else:
                        self.echo_roundtrip(c)
                except (OSError, AssertionError, EOFError) as e:
                    load.fail("long-lived %s %s: %r" % (kind, name, e))
                    return
            n += 1
            load.stop.wait(0.1)
        load.add("long_lived_rounds", n)

    # ---- the test ---------------------------------------------------------------------

    def check_refused(self, port):
        """TCP: connection refused; UDP (a connected socket): ICMP port
        unreachable. Polled briefly: the socket closes on the loop turn after
        the reload."""
        deadline = time.monotonic() + 3
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                tcp = False
            except ConnectionRefusedError:
                tcp = True
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.settimeout(0.3)
            u.connect(("127.0.0.1", port))
            try:
                u.send(build_query("a.test"))
                u.recv(4096)
                udp = False
            except ConnectionRefusedError:
                udp = True
            except socket.timeout:
                udp = False
            finally:
                u.close()
            if tcp and udp:
                return
            if time.monotonic() > deadline:
                self.fail("port %d still open after the reload (tcp refused: %s, udp: %s)" %
                          (port, tcp, udp))
            time.sleep(0.05)

    def check_extra_listeners(self):
        """Variant C: the added DNS and TLS listeners serve."""
        r = Response(udp_exchange(self.extra_dns, build_query("a.test")))
        self.assertEqual(r.addrs(), [pf.ADDRS["a"]])
        with self.ctx().wrap_socket(self.connect(self.extra_tls, keep=False),
                                    server_hostname="a.test") as t:
            t.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            _, body = pf.read_response(lambda: t.recv(65536))
        self.assertEqual(body, b"server-a\n")

    def test_reload_under_load_loses_nothing(self):
        """60 reloads ~200 ms apart, cycling A, B, C, B (every tenth one a bad
        file instead), while 3 UDP DNS clients, 1 DNS client on one TCP
        connection, a TLS client and an HTTP client (new connection each time,
        payload checked) and 4 long-lived connections keep moat busy.
        Then: no query lost or wrong, no allowed connection failed or
        corrupted, the long-lived ones still work, the answers for flip.test
        (sinkholed or not) and priv.test (rebinding filter: emptied or not)
        follow every reload at once (checked by the driver after each reload
        and on every load query that fell between two reloads), the unchanged
        listeners kept their sockets, and C's extra listeners opened and
        closed each time. Last, a reload to "cut" closes the long-lived
        connections to names it drops (logged policy-reload) and no other."""
        self.start()
        self.moat.wait_line("proxy listening on http")
        main = {("udp", self.dns_port), ("tcp", self.dns_port), ("tcp", self.tls_port),
                ("tcp", self.http_port)}
        before = listening_sockets(self.moat.proc.pid)
        self.assertEqual(set(before), main)

        keep_a = self.open_tls_keepalive("a.test")
        self.tls_keepalive_get(keep_a, "a.test", b"server-a\n")
        keep_b = self.open_tls_keepalive("b.test")
        self.tls_keepalive_get(keep_b, "b.test", b"server-b\n")
        echo1, echo2 = self.open_echo("echo.test"), self.open_echo("echo2.test")
        long_lived = [("tls", keep_a, "a.test", b"server-a\n"),
                      ("tls", keep_b, "b.test", b"server-b\n"),
                      ("echo", echo1, "echo.test", None), ("echo", echo2, "echo2.test", None)]

        load = self.load = Load(time.monotonic() + WALL_CAP)
        for i in range(3):
            load.spawn(self.dns_udp_client, load, i)
        load.spawn(self.dns_tcp_client, load)
        load.spawn(self.tls_client, load)
        load.spawn(self.http_client, load)
        load.spawn(self.long_lived_client, load, long_lived)

        # The driver. windows: (from, to, config) where `from` is when the
        # reload was seen done and `to` when the next good reload was
        # signalled.
        windows, running, win_from = [], "A", time.monotonic()
        cycle = ["A", "B", "C", "B"]
        good = bad = 0
        last_good = "A"
        t_end = time.monotonic() + WALL_CAP - 10
        for k in range(RELOADS):
            if time.monotonic() > t_end or load.n_failures:
                break
            t_next = time.monotonic() + RELOAD_EVERY
            variant = "bad" if k % 10 == 9 else cycle[good % 4]
            if variant != "bad":
                windows.append((win_from, time.monotonic(), running))
            n, i = self.reload(variant)
            if variant == "bad":
                bad += 1
                errs = [l for l in self.moat.lines[n:i] if "config error" in l]
                self.assertEqual(len(errs), 2, self.moat.lines[n:i + 1])
                for where, e in zip(self.bad_positions(), errs):
                    self.assertIn(where, e)
            else:
                good += 1
                running, win_from = variant, time.monotonic()
            # At once: the WATCH names answered by the running policy.
            for name, want in WATCH.items():
                r = Response(udp_exchange(self.dns_port, build_query(name)))
                self.assertEqual(r.addrs(), want[running],
                                 "%s after reload %d (%s)" % (name, k, variant))
            if variant == "C":
                self.check_extra_listeners()
            elif variant == "B" and last_good == "C":
                self.check_refused(self.extra_dns)
                self.check_refused(self.extra_tls)
            if variant != "bad":
                last_good = variant
            time.sleep(max(0.0, t_next - time.monotonic()))
        if last_good == "C":  # end with the extra listeners closed
            windows.append((win_from, time.monotonic(), running))
            self.reload("B")
            running, win_from = "B", time.monotonic()
        windows.append((win_from, time.monotonic(), running))
        # Let the load run a little on the last generation, then stop it.
        time.sleep(0.5)
        load.stop.set()
        for t in load.threads:
            t.join(30)
            self.assertFalse(t.is_alive(), "a load client hung")

        self.assertEqual(load.n_failures, 0, "\n".join(load.failures))
        self.assertGreaterEqual(good, 20, "too few reloads in %d s" % WALL_CAP)
        self.assertGreaterEqual(bad, 2)
        self.assertIsNone(self.moat.proc.poll())
        # Enough load overlapped the reloads for the test to mean something.
        c = load.counts
        self.assertGreater(c.get("dns_udp", 0), 4 * good, c)
        self.assertGreater(c.get("dns_tcp", 0), good, c)
        self.assertGreater(c.get("tls", 0), 10, c)
        self.assertGreater(c.get("http", 0), 10, c)
        self.assertGreater(c.get("long_lived_rounds", 0), 10, c)
        # Every WATCH query sent and answered within one generation's
        # window had that generation's answer.
        checked, wrong = {n: 0 for n in WATCH}, []
        for name, t0, t1, addrs in load.watched:
            for w0, w1, variant in windows:
                if w0 <= t0 and t1 <= w1:
                    checked[name] += 1
                    if addrs != WATCH[name][variant]:
                        wrong.append("%s %.3f-%.3f: %r, want %r (%s)" %
                                     (name, t0, t1, addrs, WATCH[name][variant], variant))
                    break
        self.assertEqual(wrong[:20], [], "answered by the wrong generation")
        for name in WATCH:
            self.assertGreater(checked[name], good, "too few %s answers inside a window" % name)
        sys.stderr.write("\nreload under load: %d good + %d bad reloads, %r, answers checked "
                         "against their generation: %r\n" % (good, bad, c, checked))

        # The unchanged listeners kept their sockets all along; the extra
        # ones are gone (the last good variant is not C).
        self.assertEqual(listening_sockets(self.moat.proc.pid), before)
        self.check_refused(self.extra_dns)
        self.check_refused(self.extra_tls)
        self.assertGreaterEqual(sum("no longer listening on tls 127.0.0.1:%d" % self.extra_tls
                                    in l for l in self.moat.lines), 2)

        # The long-lived connections still work.
        for kind, c_, name, want in long_lived:
            if kind == "tls":
                self.tls_keepalive_get(c_, name, want)
            else:
                self.echo_roundtrip(c_)

        # Cut: b.test and echo2.test leave the allowlist. Their connections
        # are closed and logged with policy-reload; a.test's and echo.test's
        # stay; DNS for b.test is sinkholed at once (its answer was cached).
        self.assertEqual(Response(udp_exchange(self.dns_port, build_query("b.test"))).addrs(),
                         [pf.ADDRS["b"]])
        n, _ = self.reload("cut")
        self.assertEqual(Response(udp_exchange(self.dns_port, build_query("b.test"))).addrs(),
                         ["0.0.0.0"])
        self.assertIsNotNone(pf.closed_within(keep_b, 5), "b.test connection not cut")
        self.assertIsNotNone(pf.closed_within(echo2, 5), "echo2.test connection not cut")
        for name in ("b.test", "echo2.test"):
            self.moat.wait_line("name=%s verdict=block reason=policy-reload" % name, start=n)
        self.assertFalse(any("reason=policy-reload" in l and ("name=a.test" in l or
                                                              "name=echo.test" in l)
                             for l in self.moat.lines[n:]))
        self.tls_keepalive_get(keep_a, "a.test", b"server-a\n")
        self.echo_roundtrip(echo1)

    def test_reload_burst_of_signals(self):
        """SIGHUPs sent faster than reloads complete (20 back to back, the
        file changing between them) are coalesced, never lost: the last
        file is what runs when the burst has been worked off, and DNS
        answered every query during the burst."""
        self.start()
        stop = threading.Event()
        errors = []

        def querier():
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.settimeout(5)
            u.connect(("127.0.0.1", self.dns_port))
            for qid in range(5000):
                if stop.is_set():
                    break
                u.send(build_query("a.test", qid=qid))
                try:
                    r = Response(u.recv(4096))
                except OSError as e:
                    errors.append(repr(e))
                    continue
                if r.id != qid or r.addrs() != [pf.ADDRS["a"]]:
                    errors.append("%d: %r" % (qid, r.addrs()))
            u.close()

        t = threading.Thread(target=querier, daemon=True)
        t.start()
        n = len(self.moat.lines)
        for k in range(20):
            self.write("B" if k % 2 == 0 else "A")
            self.moat.send(signal.SIGHUP)
        self.write("B")
        self.moat.send(signal.SIGHUP)
        # Coalesced: fewer reloads than signals, at least 2, and the last
        # one ran after the last write. Wait until the log stays quiet.
        deadline = time.monotonic() + 10
        last = -1
        while time.monotonic() < deadline:
            cnt = sum("reloaded" in l for l in self.moat.lines[n:])
            if cnt == last:
                break
            last = cnt
            time.sleep(0.5)
        stop.set()
        t.join(30)
        self.assertEqual(errors, [])
        self.assertGreaterEqual(last, 1)
        self.assertLessEqual(last, 21)
        self.assertEqual(Response(udp_exchange(self.dns_port, build_query("flip.test"))).addrs(),
                         ["0.0.0.0"])


class ReloadTwoWorkersTest(ReloadTest):
    """The load test again with two workers (core/worker.h), whatever
    MOAT_TEST_WORKERS says: each reload swaps the generation of both loops
    while both answer and splice, and nothing may be lost or decided by a
    policy no longer in force."""

    WORKERS_ARGS = ("--workers", "2")
    test_reload_burst_of_signals = None  # the signal handling is the daemon's loop's alone


if __name__ == "__main__":
    unittest.main(verbosity=2)
