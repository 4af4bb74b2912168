"""End-to-end: the metrics endpoint (SPEC §4, issue 5 point 3) of the real
binary: GET /metrics parses as Prometheus text format 0.0.4 (checked by the
small parser below) and its counters move with real traffic by exactly what
the test sent; GET /healthz; the error answers; reload; no guest-chosen
string ever in the body.

DNS goes to dnsmasq on loopback as moat's upstream (the dial cache test: a
scripted upstream that answers late, so dials can join a lookup in flight).
The TCP tests that need a real server behind moat (allowed connections,
bytes, the dial cache) run nginx in a network namespace of the script's
own, as test_proxy.py does (root only; skipped with the reason otherwise);
everything else runs on loopback."""
import math
import os
import re
import secrets
import select
import signal
import socket
import ssl
import struct
import subprocess
import time
import unittest

import proxyfixture as pf
from dnsfixture import (Response, ScriptedUpstream, answer_a, build_query, encode_name,
                        tcp_exchange, udp_exchange, udp_query)
from moatlib import (Moat, MoatTestCase, free_port, loopback_config, recv_all, write_config,
                     yaml_list)

NETNS_SKIP = pf.netns_skip(__name__, __file__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# ---- a small Prometheus text format 0.0.4 parser ------------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
SAMPLE = re.compile(r"^(%s)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$" % NAME)
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_value(s):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", s):
        raise ValueError("bad value %r" % s)
    return float(s)


def parse_labels(s, line):
    labels, pos = {}, 0
    while pos < len(s):
        m = re.compile(LABEL).match(s, pos)
        if not m:
            raise ValueError("bad label syntax at %d in %r" % (pos, line))
        if m.group(1) in labels:
            raise ValueError("label %s twice in %r" % (m.group(1), line))
        labels[m.group(1)] = m.group(2)
        pos = m.end()
        if pos < len(s):
            if s[pos] != ",":
                raise ValueError("expected ',' at %d in %r" % (pos, line))
            pos += 1
    return labels


class Scrape:
    """A parsed /metrics body: types {family: type}, helps {family: text},
    samples {(name, ((label, value), ...)): value}. Raises ValueError on
    anything the format does not allow."""

    def __init__(self, text):
        self.text = text
        self.types, self.helps, self.samples = {}, {}, {}
        if not text.endswith("\n"):
            raise ValueError("the body does not end with a newline")
        for line in text.split("\n")[:-1]:
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) < 3 or parts[1] not in ("HELP", "TYPE") or \
                        not re.fullmatch(NAME, parts[2]):
                    raise ValueError("bad comment line %r" % line)
                fam = parts[2]
                if parts[1] == "TYPE":
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise ValueError("bad TYPE %r" % line)
                    if fam in self.types:
                        raise ValueError("TYPE of %s twice" % fam)
                    if any(self.family(n) == fam for n, _ in self.samples):
                        raise ValueError("TYPE of %s after its samples" % fam)
                    self.types[fam] = parts[3]
                else:
                    if fam in self.helps:
                        raise ValueError("HELP of %s twice" % fam)
                    self.helps[fam] = parts[3] if len(parts) == 4 else ""
                continue
            m = SAMPLE.match(line)
            if not m:
                raise ValueError("bad sample line %r" % line)
            name, labels = m.group(1), parse_labels(m.group(2) or "", line)
            fam = self.family(name)
            if fam is None:
                raise ValueError("sample %s of no declared family" % name)
            key = (name, tuple(sorted(labels.items())))
            if key in self.samples:
                raise ValueError("sample %r twice" % (key,))
            self.samples[key] = parse_value(m.group(3))
        for fam, t in self.types.items():
            if fam not in self.helps:
                raise ValueError("no HELP for %s" % fam)
            if t == "histogram":
                self.check_histogram(fam)

    def family(self, name):
        if name in self.types:
            return name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and self.types.get(base) == "histogram":
                return base
        return None

    def check_histogram(self, fam):
        buckets = sorted(((float(dict(k)["le"]), v) for (n, k), v in self.samples.items()
                          if n == fam + "_bucket"), key=lambda b: b[0])
        if not buckets or buckets[-1][0] != math.inf:
            raise ValueError("%s has no +Inf bucket" % fam)
        for (_, a), (_, b) in zip(buckets, buckets[1:]):
            if b < a:
                raise ValueError("%s buckets are not cumulative" % fam)
        if buckets[-1][1] != self.get(fam + "_count"):
            raise ValueError("%s: +Inf bucket != _count" % fam)
        if (fam + "_sum", ()) not in self.samples:
            raise ValueError("%s has no _sum" % fam)

    def get(self, name, **labels):
        """The sample's value; 0 when the series is absent (moat renders a
        reason- or rcode-labelled series once it is first counted)."""
        return self.samples.get((name, tuple(sorted(labels.items()))), 0)

    def has(self, name, **labels):
        return (name, tuple(sorted(labels.items()))) in self.samples


def http_request(port, raw, timeout=10.0):
    """Send raw bytes to 127.0.0.1:port; return (status, headers, body) of
    the one response (the server closes the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        data = recv_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for l in lines[1:]:
        k, v = l.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers and raw.split(b" ", 1)[0] != b"HEAD":
        if int(headers["content-length"]) != len(body):
            raise AssertionError("Content-Length %s, body %d bytes" %
                                 (headers["content-length"], len(body)))
    return status, headers, body


def get(port, path, method="GET"):
    return http_request(port, ("%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                               "User-Agent: test_metrics\r\n\r\n" % (method, path, port)).encode())


class MetricsBase:
    """Helpers shared by both test classes (a mixin: self.moat, self.mport)."""

    def scrape(self, port=None):
        status, headers, body = get(port or self.mport, "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], CONTENT_TYPE)
        return Scrape(body.decode("utf-8"))

    def wait_for(self, pred, what, timeout=10.0):
        """Scrape until pred(scrape) holds (bounded); return that scrape."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.scrape()
            if pred(s):
                return s
            if time.monotonic() > deadline:
                self.fail("%s: not reached; last scrape:\n%s" % (what, s.text))
            time.sleep(0.05)

    def active(self, s):
        return sum(s.get("moat_connections_active", listener=l)
                   for l in ("tls", "http", "transparent"))


def dns_config(dns_port, up_port, tls_port, http_port, mport, allow, extra="", proxy_extra="",
               timeout="1s"):
    return loopback_config(dns_port, up_port, yaml_list(allow), timeout=timeout, tls_port=tls_port,
                           http_port=http_port, grace="10s",
                           proxy_extra="  peek_timeout: 5s\n" + proxy_extra,
                           extra="metrics: {listen: \"127.0.0.1:%d\"}\n%s" % (mport, extra))


class MetricsTest(MetricsBase, MoatTestCase):
    """Everything that needs no server behind moat: on loopback."""

    ALLOW = ["allowed.test", "nx.test"]

    def setUp(self):
        super().setUp()
        self.start_dnsmasq([
            "--host-record=allowed.test,198.18.0.10,300",
            "--address=/nx.test/",  # NXDOMAIN
        ])
        self.port, self.tls_port, self.http_port, self.mport = (free_port() for _ in range(4))

    def config_text(self, allow=None, mport=None, proxy_extra=""):
        # One worker: these tests count one DNS cache's hits and misses
        # (test_workers.py checks the sums over two).
        return dns_config(self.port, self.up_port, self.tls_port, self.http_port,
                          mport or self.mport, self.ALLOW if allow is None else allow,
                          "workers: 1\n", proxy_extra=proxy_extra)

    def start(self, proxy_extra=""):
        self.start_config(self.config_text(proxy_extra=proxy_extra))
        self.moat.wait_line("metrics listening on http://127.0.0.1:%d/metrics" % self.mport)

    def q(self, name, qtype="A"):
        r = udp_query(self.port, name, qtype)
        self.assertIsNotNone(r, "no answer for %s" % name)
        return r

    # ---- the endpoint ------------------------------------------------------------------

    def test_scrape_parses_and_lists_every_family(self):
        self.start()
        s = self.scrape()
        want = {
            "moat_dns_queries_total": "counter",
            "moat_dns_cache_hits_total": "counter",
            "moat_dns_cache_misses_total": "counter",
            "moat_dns_upstream_queries_total": "counter",
            "moat_dns_upstream_latency_seconds": "histogram",
            "moat_connections_total": "counter",
            "moat_connections_active": "gauge",
            "moat_bytes_total": "counter",
            "moat_connections_refused_total": "counter",
            "moat_proxy_dialcache_hits_total": "counter",
            "moat_proxy_dialcache_misses_total": "counter",
            "moat_proxy_dialcache_coalesced_total": "counter",
            "moat_proxy_dialcache_expired_total": "counter",
            "moat_proxy_dialcache_evictions_total": "counter",
            "moat_proxy_dialcache_entries": "gauge",
            "moat_config_reloads_total": "counter",
            "moat_config_generation": "gauge",
            "moat_dns_cache_entries": "gauge",
            "moat_addrmem_entries": "gauge",
            "moat_log_dropped_lines_total": "counter",
            "moat_start_time_seconds": "gauge",
            "moat_build_info": "gauge",
            "moat_worker_dns_queries_total": "counter",
            "moat_worker_connections_total": "counter",
        }
        self.assertEqual(s.types, want)
        self.assertEqual(s.get("moat_config_generation"), 1)
        self.assertEqual(s.get("moat_dns_upstream_latency_seconds_count"), 0)
        self.assertEqual(self.active(s), 0)
        start = s.get("moat_start_time_seconds")
        self.assertLess(abs(start - time.time()), 600, "start time is Unix seconds")
        (ver,) = [dict(k)["version"] for n, k in s.samples if n == "moat_build_info"]
        out = subprocess.run([os.environ.get("MOAT", "build/moat"), "--version"],
                             capture_output=True, text=True, timeout=20).stdout
        # --version's first line: "moat VERSION (git REV)".
        self.assertEqual(out.splitlines()[0].split(" (")[0], "moat " + ver)
        for (name, labels), _ in s.samples.items():
            self.assertTrue(name.startswith("moat_"), name)

    def test_healthz_and_error_answers(self):
        self.start()
        status, headers, body = get(self.mport, "/healthz")
        self.assertEqual((status, body), (200, b"ok\n"))
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(get(self.mport, "/metrics?x=1")[0], 200)
        status, headers, body = get(self.mport, "/metrics", "HEAD")
        self.assertEqual((status, body), (200, b""))
        self.assertGreater(int(headers["content-length"]), 1000)
        self.assertEqual(get(self.mport, "/")[0], 404)
        self.assertEqual(get(self.mport, "/metricsx")[0], 404)
        self.assertEqual(get(self.mport, "/healthz/")[0], 404)
        status, headers, _ = get(self.mport, "/metrics", "POST")
        self.assertEqual(status, 405)
        self.assertEqual(headers["allow"], "GET, HEAD")
        self.assertEqual(get(self.mport, "/metrics", "DELETE")[0], 405)
        self.assertEqual(http_request(self.mport, b"\x16\x03\x01\x00\x05hello")[0], 400)
        self.assertEqual(http_request(self.mport, b"GET /metrics\r\n\r\n")[0], 400)
        big = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 5000 + b"\r\n\r\n"
        self.assertEqual(http_request(self.mport, big)[0], 431)
        # A client that sends nothing and goes away, and one that sends half a
        # head and goes away, leave the endpoint serving.
        socket.create_connection(("127.0.0.1", self.mport), timeout=5).close()
        with socket.create_connection(("127.0.0.1", self.mport), timeout=5) as c:
            c.sendall(b"GET /metr")
        self.assertEqual(get(self.mport, "/healthz")[0], 200)
        # A request split over many writes.
        with socket.create_connection(("127.0.0.1", self.mport), timeout=5) as c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for b in b"GET /healthz HTTP/1.0\r\n\r\n":
                c.sendall(bytes([b]))
            data = recv_all(c)
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK\r\n"), data)
        self.assertTrue(data.endswith(b"\r\n\r\nok\n"), data)

    def test_many_clients_at_once_are_bounded(self):
        self.start()
        # 100 idle clients (the cap is 64): the 36 past the cap are closed at
        # once, the others stay open (until the 10 s client timeout, far
        # beyond this test's window); once they are gone, it serves again.
        idle = []
        try:
            for _ in range(100):
                idle.append(socket.create_connection(("127.0.0.1", self.mport), timeout=5))
            closed, deadline = set(), time.monotonic() + 3
            while len(closed) < 36 and time.monotonic() < deadline:
                r, _, _ = select.select([c for c in idle if c not in closed], [], [], 0.2)
                for c in r:
                    try:
                        if c.recv(1) == b"":
                            closed.add(c)
                    except ConnectionResetError:
                        closed.add(c)
            time.sleep(0.3)  # nothing more is closed
            r, _, _ = select.select([c for c in idle if c not in closed], [], [], 0)
            self.assertEqual((len(closed), r), (36, []))
        finally:
            for c in idle:
                c.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                if get(self.mport, "/healthz")[0] == 200:
                    break
            except (OSError, IndexError):
                pass
            self.assertLess(time.monotonic(), deadline, "endpoint does not serve again")
            time.sleep(0.05)

    # ---- DNS ---------------------------------------------------------------------------------

    def test_dns_counters_move_by_what_was_sent(self):
        self.start()
        before = self.scrape()
        for _ in range(5):
            r = self.q("blocked.test")
            self.assertEqual(r.rcode_name, "NOERROR")
        for _ in range(2):
            self.assertEqual(self.q("blocked.test", "TXT").rcode_name, "NOERROR")
        r = self.q("allowed.test")
        self.assertEqual(r.addrs(), ["198.18.0.10"])
        r = self.q("allowed.test")  # from the cache
        self.assertEqual(r.addrs(), ["198.18.0.10"])
        (t,) = tcp_exchange(self.port, [build_query("allowed.test")])  # cache, over TCP
        self.assertEqual(t.addrs(), ["198.18.0.10"])
        self.assertEqual(self.q("nx.test").rcode_name, "NXDOMAIN")
        # Answered before any decision: FORMERR (two questions), NOTIMP
        # (opcode 2), REFUSED (class CH).
        for msg, rc in ((build_query("a.test", qdcount=2), 1), (build_query("a.test", opcode=2), 4),
                        (build_query("a.test", qclass=3), 5)):
            a = udp_exchange(self.port, msg)
            self.assertIsNotNone(a)
            self.assertEqual(a[3] & 0x0F, rc)
        after = self.scrape()

        def d(name, **labels):
            return after.get(name, **labels) - before.get(name, **labels)

        q = "moat_dns_queries_total"
        self.assertEqual(d(q, verdict="block", rcode="NOERROR"), 7)
        self.assertEqual(d(q, verdict="allow", rcode="NOERROR"), 3)
        self.assertEqual(d(q, verdict="allow", rcode="NXDOMAIN"), 1)
        self.assertEqual(d(q, verdict="none", rcode="FORMERR"), 1)
        self.assertEqual(d(q, verdict="none", rcode="NOTIMP"), 1)
        self.assertEqual(d(q, verdict="none", rcode="REFUSED"), 1)
        total = sum(v for (n, _), v in after.samples.items() if n == q) - \
            sum(v for (n, _), v in before.samples.items() if n == q)
        self.assertEqual(total, 14, "no query counted twice or elsewhere")
        self.assertEqual(d("moat_dns_cache_misses_total"), 2)  # allowed.test, nx.test
        self.assertEqual(d("moat_dns_cache_hits_total"), 2)
        self.assertEqual(d("moat_dns_upstream_queries_total", result="ok"), 2)
        self.assertEqual(d("moat_dns_upstream_queries_total", result="error"), 0)
        self.assertEqual(d("moat_dns_upstream_latency_seconds_count"), 2)
        self.assertEqual(d("moat_dns_upstream_latency_seconds_bucket", le="+Inf"), 2)
        self.assertGreater(d("moat_dns_upstream_latency_seconds_sum"), 0)
        # allowed.test is cached; dnsmasq's NXDOMAIN carries no SOA, so it is
        # not (RFC 2308 §5, dns/cache.h).
        self.assertEqual(after.get("moat_dns_cache_entries"), 1)
        self.assertGreaterEqual(after.get("moat_addrmem_entries"), 1)
        self.assertEqual(d("moat_connections_total", listener="tls", verdict="block",
                           reason="not-tls"), 0)

    def test_upstream_failure_counts_as_error(self):
        self.start()
        self.dnsmasq.stop()  # nothing answers on the upstream port any more
        before = self.scrape()
        r = self.q("allowed.test")
        self.assertEqual(r.rcode_name, "SERVFAIL")
        after = self.scrape()
        self.assertEqual(after.get("moat_dns_upstream_queries_total", result="error") -
                         before.get("moat_dns_upstream_queries_total", result="error"), 1)
        self.assertEqual(after.get("moat_dns_queries_total", verdict="allow", rcode="SERVFAIL") -
                         before.get("moat_dns_queries_total", verdict="allow", rcode="SERVFAIL"),
                         1)
        self.assertEqual(after.get("moat_dns_upstream_latency_seconds_count") -
                         before.get("moat_dns_upstream_latency_seconds_count"), 1)

    def test_guest_chosen_names_never_appear(self):
        self.start()
        token = "zq" + secrets.token_hex(8)
        blocked, allowed_miss = token + ".test", token + ".nx.test"
        self.q(blocked)
        self.q(blocked, "HTTPS")
        self.q(allowed_miss)
        # An SNI and a Host header with the token on the proxy's listeners.
        with socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as s:
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            try:
                ctx.wrap_socket(s, server_hostname=token + ".sni.test")
            except (ssl.SSLError, OSError):
                pass
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=5) as s:
            s.sendall(b"GET /%s HTTP/1.1\r\nHost: %s.host.test\r\n\r\n" %
                      (token.encode(), token.encode()))
            s.recv(4096)
        self.moat.wait_line("name=%s.sni.test" % token)
        self.moat.wait_line("name=%s.host.test" % token)
        self.moat.wait_line("name=%s" % allowed_miss)
        # The metrics endpoint's own request line carries it too.
        self.assertEqual(get(self.mport, "/" + token)[0], 404)
        s = self.scrape()
        self.assertNotIn(token, s.text)
        self.assertNotIn(token.upper(), s.text.upper())
        for (_, labels), _ in s.samples.items():
            for k, v in labels:
                self.assertRegex(v, r"^[A-Za-z0-9.+_-]*$", "label %s=%r" % (k, v))

    # ---- TCP without a server behind moat -----------------------------------------------------

    def test_blocked_connections_count_with_reason(self):
        self.start()
        before = self.scrape()
        with socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as s:
            s.sendall(b"hello, not tls\r\n")
            try:
                s.recv(100)
            except ConnectionResetError:
                pass
        self.moat.wait_line("reason=not-tls")
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n")
            head, _ = pf.read_response(lambda: s.recv(4096))
            self.assertIn(" 403 ", head.split("\r\n")[0])
        self.moat.wait_line("name=blocked.test verdict=block reason=not-allowed")
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            s.recv(4096)
        self.moat.wait_line("reason=no-host")
        after = self.wait_for(lambda s: self.active(s) == 0, "active connections back to 0")

        def d(**labels):
            return after.get("moat_connections_total", **labels) - \
                before.get("moat_connections_total", **labels)

        self.assertEqual(d(listener="tls", verdict="block", reason="not-tls"), 1)
        self.assertEqual(d(listener="http", verdict="block", reason="not-allowed"), 1)
        self.assertEqual(d(listener="http", verdict="block", reason="no-host"), 1)
        n = sum(v for (name, _), v in after.samples.items() if name == "moat_connections_total")
        self.assertEqual(n, 3)
        for l in ("tls", "http"):
            for direction in ("up", "down"):
                self.assertEqual(after.get("moat_bytes_total", listener=l, direction=direction),
                                 0, "blocked connections move no bytes")

    def test_max_connections_refused(self):
        self.start(proxy_extra="  max_connections: 1\n")
        held = socket.create_connection(("127.0.0.1", self.tls_port), timeout=5)
        try:
            self.wait_for(lambda s: s.get("moat_connections_active", listener="tls") == 1,
                          "the held connection is active")
            # Reset at once: on loopback the RST may be there when connect()
            # returns.
            try:
                with socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as s:
                    self.assertEqual(s.recv(10), b"")
            except ConnectionResetError:
                pass
            self.moat.wait_line("reason=max-connections")
            s = self.scrape()
            self.assertEqual(s.get("moat_connections_refused_total", listener="tls",
                                   reason="max-connections"), 1)
            self.assertFalse(s.has("moat_connections_total", listener="tls", verdict="block",
                                   reason="max-connections"),
                             "refused connections are not decisions")
            self.assertEqual(s.get("moat_connections_active", listener="tls"), 1)
        finally:
            held.close()
        self.moat.wait_line("reason=client-closed")
        self.wait_for(lambda s: self.active(s) == 0, "active connections back to 0")

    # ---- lifecycle ------------------------------------------------------------------------------

    def test_reload_counts_and_generation(self):
        self.start()
        s = self.scrape()
        self.assertEqual(s.get("moat_config_reloads_total", result="ok"), 0)
        self.assertEqual(s.get("moat_config_generation"), 1)
        # A good reload: counted, next generation, the same socket serves.
        write_config(self.dir, self.config_text(allow=self.ALLOW + ["new.test"]))
        self.moat.sighup()
        s = self.scrape()
        self.assertEqual(s.get("moat_config_reloads_total", result="ok"), 1)
        self.assertEqual(s.get("moat_config_reloads_total", result="error"), 0)
        self.assertEqual(s.get("moat_config_generation"), 2)
        self.assertFalse(any("metrics: no longer listening" in l for l in self.moat.lines))
        # A bad one: counted as an error, generation unchanged.
        write_config(self.dir, self.config_text(allow=["*.com"]))
        self.moat.sighup("rejected")
        s = self.scrape()
        self.assertEqual(s.get("moat_config_reloads_total", result="ok"), 1)
        self.assertEqual(s.get("moat_config_reloads_total", result="error"), 1)
        self.assertEqual(s.get("moat_config_generation"), 2)
        # metrics.listen moved: the old port closes, the new one serves, the
        # counters carry over.
        new_port = free_port()
        write_config(self.dir, self.config_text(mport=new_port))
        n = self.moat.sighup("metrics listening on http://127.0.0.1:%d/metrics" % new_port)
        self.moat.wait_line("reloaded", start=n)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", self.mport), timeout=5).close()
        s = self.scrape(new_port)
        self.assertEqual(s.get("moat_config_reloads_total", result="ok"), 2)
        self.assertEqual(s.get("moat_config_generation"), 3)
        # metrics.listen emptied: nothing listens.
        write_config(self.dir, self.config_text(mport=new_port).replace(
            "metrics: {listen: \"127.0.0.1:%d\"}" % new_port, "metrics: {listen: \"\"}"))
        self.moat.sighup()
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", new_port), timeout=5).close()

    def test_healthz_503_while_draining(self):
        self.start()
        # A connection the proxy is still peeking at keeps it draining.
        held = socket.create_connection(("127.0.0.1", self.tls_port), timeout=5)
        try:
            self.wait_for(lambda s: s.get("moat_connections_active", listener="tls") == 1,
                          "the held connection is active")
            n = len(self.moat.lines)
            self.moat.send(signal.SIGTERM)
            self.moat.wait_line("SIGTERM", start=n)
            status, _, body = get(self.mport, "/healthz")
            self.assertEqual((status, body), (503, b"draining\n"))
            s = self.scrape()  # /metrics still answers during the drain
            self.assertEqual(s.get("moat_connections_active", listener="tls"), 1)
        finally:
            held.close()
        self.assertEqual(self.moat.wait_exit(timeout=15), 0)

    def test_metrics_listen_in_use_exits_two(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", self.mport))
            busy.listen(1)
            path = write_config(self.dir, self.config_text())
            m = Moat(path)
            self.assertEqual(m.wait_exit(timeout=15), 2)
        self.assertTrue(any("metrics: listen 127.0.0.1:%d" % self.mport in l and "in use" in l
                            for l in m.lines), m.lines)


NAMES = {"a.test": pf.ADDRS["a"], "blocked.test": pf.ADDRS["a"]}
# The dial cache test's upstream answers this late: dials that arrive
# meanwhile join the lookup in flight.
DIAL_DELAY = 0.5
DIAL_CACHE = ("moat_proxy_dialcache_hits_total", "moat_proxy_dialcache_misses_total",
              "moat_proxy_dialcache_coalesced_total", "moat_proxy_dialcache_expired_total",
              "moat_proxy_dialcache_evictions_total")


def slow_answer(query):
    """Every name is ADDRS[a] for 300 s (A); any other type is NODATA."""
    q = Response(query)
    if q.qtype == 1:
        return answer_a(query, pf.ADDRS["a"], 300)
    qid, flags = struct.unpack("!HH", query[:4])
    qend = 12 + len(encode_name(q.qname)) + 4
    return struct.pack("!HHHHHH", qid, 0x8180 | (flags & 0x0100), 1, 0, 0, 0) + query[12:qend]


@unittest.skipIf(NETNS_SKIP, NETNS_SKIP)
class MetricsProxyTest(MetricsBase, pf.NetnsTestCase):
    """Allowed connections through real nginx in the script's namespace."""

    @classmethod
    def start_servers(cls):
        pf.setup_netns()
        cls.cert, key = pf.make_cert(cls.dir, ["a.test"])
        cls.serve(pf.Nginx(cls.dir, cls.cert, key))
        cls.start_dnsmasq(pf.address_args(NAMES.items()))
        cls.slow_port = free_port()
        cls.slow = cls.serve(ScriptedUpstream(cls.slow_port, slow_answer, delay=DIAL_DELAY))

    def setUp(self):
        super().setUp()
        self.start_moat(self.up_port, ["a.test"])

    def start_moat(self, up_port, allow, timeout="1s"):
        self.tls_port, self.http_port, self.mport = free_port(), free_port(), free_port()
        # One worker: the dial cache counts are one cache's (each worker has
        # its own).
        text = dns_config(free_port(), up_port, self.tls_port, self.http_port, self.mport,
                          allow, "log: {allowed: true}\nworkers: 1\n", timeout=timeout)
        self.moat = Moat(write_config(self.dir, text, "metrics-proxy.yaml"))
        self.moat.wait_line("moat running")

    def decision_bytes(self, needle):
        i = self.moat.wait_line(needle)
        f = dict(kv.split("=", 1) for kv in self.moat.lines[i].split() if "=" in kv)
        return int(f["bytes_up"]), int(f["bytes_down"])

    def test_allowed_connections_count_bytes_and_close(self):
        before = self.scrape()
        # TLS through the tls listener.
        ctx = ssl.create_default_context(cafile=self.cert)
        with socket.create_connection(("127.0.0.1", self.tls_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="a.test") as t:
                t.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                head, body = pf.read_response(lambda: t.recv(65536))
                self.assertEqual(body, b"server-a\n")
                during = self.scrape()
                self.assertEqual(during.get("moat_connections_active", listener="tls"), 1)
        tls_up, tls_down = self.decision_bytes("listener=tls")
        # Plain HTTP through the http listener.
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            head, body = pf.read_response(lambda: s.recv(65536))
            self.assertEqual(body, b"http-a\n")
        http_up, http_down = self.decision_bytes("listener=http")
        after = self.wait_for(lambda s: self.active(s) == 0, "active connections back to 0")

        def d(name, **labels):
            return after.get(name, **labels) - before.get(name, **labels)

        for l in ("tls", "http"):
            self.assertEqual(d("moat_connections_total", listener=l, verdict="allow",
                               reason="allowlist"), 1, l)
        self.assertGreater(tls_up, 0)
        self.assertGreater(tls_down, len(b"server-a\n"))
        self.assertEqual(d("moat_bytes_total", listener="tls", direction="up"), tls_up)
        self.assertEqual(d("moat_bytes_total", listener="tls", direction="down"), tls_down)
        self.assertEqual(d("moat_bytes_total", listener="http", direction="up"), http_up)
        self.assertEqual(d("moat_bytes_total", listener="http", direction="down"), http_down)
        # moat resolved a.test itself to dial it: upstream exchanges, timed.
        self.assertGreaterEqual(d("moat_dns_upstream_latency_seconds_count"), 1)
        self.assertEqual(d("moat_dns_upstream_latency_seconds_count"),
                         d("moat_dns_upstream_queries_total", result="ok") +
                         d("moat_dns_upstream_queries_total", result="error"))

    def test_dial_cache_hits_misses_and_coalesced(self):
        # moat on the slow upstream: each lookup takes DIAL_DELAY s (well
        # within c-ares's first try, dns.timeout / 3: no retransmission).
        self.stop_moat()
        self.start_moat(self.slow_port, ["a.test", "c.test"], timeout="5s")
        before = self.scrape()
        self.assertEqual(before.get("moat_proxy_dialcache_entries"), 0)
        for name in DIAL_CACHE:
            self.assertEqual(before.get(name), 0, name)
        up_a, up_c = self.slow.count("a.test"), self.slow.count("c.test")
        # N connections to a.test one after the other, through both
        # listeners: the first looks the name up, the others dial from the
        # cache (300 s TTL, one cache for both listeners).
        n = 6
        ctx = ssl.create_default_context(cafile=self.cert)
        for i in range(n):
            if i % 2 == 0:
                with socket.create_connection(("127.0.0.1", self.tls_port), timeout=10) as raw:
                    with ctx.wrap_socket(raw, server_hostname="a.test") as t:
                        t.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                        self.assertEqual(pf.read_response(lambda: t.recv(65536))[1],
                                         b"server-a\n")
            else:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=10) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                    self.assertEqual(pf.read_response(lambda: s.recv(65536))[1], b"http-a\n")
        mid = self.scrape()

        def d(a, b, name):
            return b.get(name) - a.get(name)

        self.assertEqual(d(before, mid, "moat_proxy_dialcache_misses_total"), 1)
        self.assertEqual(d(before, mid, "moat_proxy_dialcache_hits_total"), n - 1)
        self.assertEqual(d(before, mid, "moat_proxy_dialcache_coalesced_total"), 0)
        self.assertEqual(d(before, mid, "moat_proxy_dialcache_expired_total"), 0)
        self.assertEqual(d(before, mid, "moat_proxy_dialcache_evictions_total"), 0)
        self.assertEqual(mid.get("moat_proxy_dialcache_entries"), 1)
        self.assertEqual(self.slow.count("a.test") - up_a, 1, "one upstream lookup for a.test")
        # A burst of K requests for c.test, all sent before its answer can
        # come: one lookup, the other dials join it (or, on a very slow
        # machine, hit its answer) and every one is served.
        k = 8
        socks = [socket.create_connection(("127.0.0.1", self.http_port), timeout=10)
                 for _ in range(k)]
        self.socks.extend(socks)
        t0 = time.monotonic()
        for s in socks:
            s.sendall(b"GET / HTTP/1.1\r\nHost: c.test\r\nConnection: close\r\n\r\n")
        sent = time.monotonic() - t0
        for s in socks:
            self.assertEqual(pf.read_response(lambda: s.recv(65536))[1], b"http-a\n")
            s.close()
        after = self.wait_for(lambda s: self.active(s) == 0, "active connections back to 0")
        self.assertEqual(d(mid, after, "moat_proxy_dialcache_misses_total"), 1)
        joined = d(mid, after, "moat_proxy_dialcache_coalesced_total")
        self.assertEqual(joined + d(mid, after, "moat_proxy_dialcache_hits_total"), k - 1,
                         "every dial counted once")
        self.assertGreaterEqual(joined, 1, "no dial joined the lookup in flight")
        if sent < DIAL_DELAY / 2:
            self.assertEqual(joined, k - 1, "sent in %.3f s, before the answer" % sent)
        self.assertEqual(after.get("moat_proxy_dialcache_entries"), 2)
        self.assertEqual(self.slow.count("c.test") - up_c, 1, "one upstream lookup for c.test")
        self.assertEqual(after.get("moat_connections_total", listener="http", verdict="allow",
                                   reason="allowlist"), n // 2 + k)

    def test_blocked_sni_counts_with_reason(self):
        before = self.scrape()
        ctx = ssl.create_default_context(cafile=self.cert)
        with socket.create_connection(("127.0.0.1", self.tls_port), timeout=10) as raw:
            with self.assertRaises((ssl.SSLError, ConnectionResetError)):
                ctx.wrap_socket(raw, server_hostname="blocked.test")
        self.moat.wait_line("name=blocked.test verdict=block reason=not-allowed")
        after = self.wait_for(lambda s: self.active(s) == 0, "active connections back to 0")
        self.assertEqual(after.get("moat_connections_total", listener="tls", verdict="block",
                                   reason="not-allowed") -
                         before.get("moat_connections_total", listener="tls", verdict="block",
                                    reason="not-allowed"), 1)


if __name__ == "__main__":
    unittest.main()
