"""End-to-end: the decision log (SPEC §4, issue 5 item 2). With log.format
json every line moat writes parses as JSON, start-up included, and decision
lines carry time, listener, client, dest/port where there is one, name,
verdict, reason, rule, bytes each way and duration; log.file is reopened on
SIGUSR1 after a rename (logrotate) and nothing is lost; a sink that does not
drain (a FIFO nobody reads) never stalls DNS: lines are dropped, counted and
announced once the sink catches up."""
import http.client
import json
import os
import select
import signal
import socket
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import proxyfixture as pf  # noqa: E402
from dnsfixture import Response, build_query, udp_query  # noqa: E402
from moatlib import Moat, MoatTestCase, free_port, loopback_config, write_config  # noqa: E402

DNSMASQ_ARGS = ["--host-record=allowed.test,198.18.0.10,300"]
DECISION_FIELDS = ("time", "level", "msg", "kind", "listener", "client", "tenant", "name",
                   "verdict", "reason", "bytes_up", "bytes_down", "duration_ms")


def config(dns_port, up_port, http_port, extra="", allow="[allowed.test]"):
    return loopback_config(dns_port, up_port, allow, http_port=http_port, grace="1s",
                           extra=extra)


def read_json_file(path):
    with open(path) as f:
        text = f.read()
    assert text == "" or text.endswith("\n"), "a line was cut: %r" % text[-200:]
    return [json.loads(l) for l in text.splitlines()]


def wait_for(pred, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class LogTestBase(MoatTestCase):
    def setUp(self):
        super().setUp()
        self.start_dnsmasq(DNSMASQ_ARGS)
        self.port = free_port()
        self.http_port = free_port()

    def start(self, extra="", allow="[allowed.test]", wait=True):
        self.cfg = write_config(self.dir, config(self.port, self.up_port, self.http_port,
                                                 extra, allow))
        self.moat = Moat(self.cfg)
        if wait:
            self.moat.wait_line("moat running")

    def http_blocked(self, host):
        s = socket.create_connection(("127.0.0.1", self.http_port), timeout=10)
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
            head, _ = pf.read_response(lambda: s.recv(65536))
            return head
        finally:
            s.close()


class JsonLogTest(LogTestBase):
    def test_every_line_is_json_and_decisions_carry_the_fields(self):
        self.start("log: {format: json, allowed: true}\n")
        blocked = udp_query(self.port, "Blocked.Test")
        self.assertEqual(blocked.addrs(), ["0.0.0.0"])
        self.assertEqual(udp_query(self.port, "allowed.test").addrs(), ["198.18.0.10"])
        head = self.http_blocked("blocked.test")
        self.assertTrue(head.startswith("HTTP/1.1 403"), head)
        self.moat.wait_line('"listener":"http"')
        self.moat.send(signal.SIGHUP)
        self.moat.wait_line("generation 2")
        self.assertEqual(self.moat.stop(), 0)

        objs = self.moat.json_lines()  # raises unless every line is JSON
        msgs = [o["msg"] for o in objs]
        self.assertTrue(any(m.startswith("dns listening") for m in msgs), msgs)
        self.assertTrue(any(m.startswith("moat running") for m in msgs), msgs)
        self.assertIn("stopped", msgs)
        decisions = [o for o in objs if o["msg"] == "decision"]
        for d in decisions:
            for k in DECISION_FIELDS:
                self.assertIn(k, d, d)
            for k in ("bytes_up", "bytes_down", "duration_ms"):
                self.assertIsInstance(d[k], int, d)

        dns_block = [d for d in decisions if d["kind"] == "dns" and d["name"] == "Blocked.Test"]
        self.assertEqual(len(dns_block), 1, decisions)
        d = dns_block[0]
        self.assertEqual((d["level"], d["listener"], d["verdict"], d["reason"]),
                         ("info", "dns", "block", "not-allowed"))
        self.assertTrue(d["client"].startswith("127.0.0.1:"), d)
        self.assertEqual((d["qtype"], d["rcode"]), ("A", "NOERROR"))
        self.assertGreater(d["bytes_up"], 12)  # the query
        self.assertGreater(d["bytes_down"], d["bytes_up"])  # the sinkhole answer
        self.assertNotIn("rule", d)

        dns_allow = [d for d in decisions if d["kind"] == "dns" and d["name"] == "allowed.test"]
        self.assertEqual(len(dns_allow), 1, decisions)
        d = dns_allow[0]
        self.assertEqual((d["level"], d["verdict"], d["reason"], d["rule"]),
                         ("info", "allow", "allowlist", "allowed.test"))
        self.assertIn("rule_line", d)
        self.assertGreater(d["bytes_down"], d["bytes_up"])

        tcp_block = [d for d in decisions if d["kind"] == "tcp"]
        self.assertEqual(len(tcp_block), 1, decisions)
        d = tcp_block[0]
        self.assertEqual((d["level"], d["listener"], d["name"], d["verdict"], d["reason"]),
                         ("info", "http", "blocked.test", "block", "not-allowed"))
        self.assertEqual(d["port"], 80)
        self.assertTrue(d["client"].startswith("127.0.0.1:"), d)

    def test_allowed_decisions_stay_at_debug_without_log_allowed(self):
        self.start("log: {format: json}\n")
        self.assertEqual(udp_query(self.port, "allowed.test").addrs(), ["198.18.0.10"])
        udp_query(self.port, "after.test")
        self.moat.wait_line('"name":"after.test"')
        self.assertEqual(self.moat.stop(), 0)
        names = [o.get("name") for o in self.moat.json_lines() if o["msg"] == "decision"]
        self.assertEqual(names, ["after.test"])

    def test_hostile_query_names_stay_inside_their_field(self):
        self.start("log: {format: json}\n")
        # A label with a quote, a backslash, a newline and a non-ASCII byte.
        label = b'x"},{"verdict":"allow\\\n\xff'
        q = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + bytes([len(label)]) + label + \
            b"\x04test\x00" + struct.pack("!HH", 1, 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(q, ("127.0.0.1", self.port))
            Response(s.recvfrom(4096)[0])
        udp_query(self.port, "after.test")
        self.moat.wait_line('"name":"after.test"')
        self.assertEqual(self.moat.stop(), 0)
        decisions = [o for o in self.moat.json_lines() if o["msg"] == "decision"]
        self.assertEqual(len(decisions), 2, decisions)
        self.assertEqual(decisions[0]["verdict"], "block")
        self.assertEqual(decisions[0]["reason"], "bad-name")


class RotateTest(LogTestBase):
    def names_in(self, path, prefix):
        return [o["name"] for o in read_json_file(path)
                if o["msg"] == "decision" and o["name"].startswith(prefix)]

    def burst(self, prefix, n=20):
        for i in range(n):
            self.assertEqual(udp_query(self.port, "%s%02d.test" % (prefix, i)).addrs(),
                             ["0.0.0.0"])

    def test_sigusr1_after_rename_moves_to_a_new_file_and_loses_nothing(self):
        log = os.path.join(self.dir, "moat.log")
        old = log + ".1"
        self.start("log: {format: json, file: %s}\n" % log, wait=False)
        wait_for(lambda: os.path.exists(log) and any(
            o["msg"].startswith("moat running") for o in read_json_file(log)), "moat running")

        self.burst("a")
        wait_for(lambda: len(self.names_in(log, "a")) == 20, "the a lines")
        os.rename(log, old)
        self.burst("b")  # still the old file: nothing reopened it yet
        self.moat.send(signal.SIGUSR1)
        wait_for(lambda: os.path.exists(log), "the new file")
        self.burst("c")
        wait_for(lambda: len(self.names_in(log, "c")) == 20, "the c lines")

        # A reopen that fails keeps the file in use and says why.
        os.rename(log, log + ".2")
        os.mkdir(log)
        self.moat.send(signal.SIGUSR1)
        wait_for(lambda: any("cannot reopen" in o["msg"] for o in read_json_file(log + ".2")),
                 "the reopen error")
        self.burst("d")
        os.rmdir(log)
        self.assertEqual(self.moat.stop(), 0)

        a = ["a%02d.test" % i for i in range(20)]
        b = ["b%02d.test" % i for i in range(20)]
        c = ["c%02d.test" % i for i in range(20)]
        d = ["d%02d.test" % i for i in range(20)]
        first = read_json_file(old)
        self.assertEqual(self.names_in(old, "a") + self.names_in(old, "b"), a + b)
        self.assertEqual(self.names_in(old, "c"), [])
        self.assertTrue(any(o["msg"].startswith("moat running") for o in first))
        second = read_json_file(log + ".2")
        self.assertEqual(second[0]["msg"], "SIGUSR1: log file reopened")
        self.assertEqual(self.names_in(log + ".2", "c") + self.names_in(log + ".2", "d"), c + d)
        self.assertEqual(second[-1]["msg"], "stopped")
        self.assertEqual(self.moat.lines, [], "nothing went to stderr")

    def test_sigusr1_on_stderr_logs_and_keeps_running(self):
        self.start()
        self.moat.send(signal.SIGUSR1)
        self.moat.wait_line("no log file to reopen")
        self.assertEqual(udp_query(self.port, "x.test").addrs(), ["0.0.0.0"])


class SlowSinkTest(LogTestBase):
    N = 6000

    def test_a_sink_that_does_not_drain_never_stalls_dns(self):
        fifo = os.path.join(self.dir, "log.fifo")
        os.mkfifo(fifo, 0o600)
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # held open, not read (yet)
        try:
            self._run(fifo, rfd)
        finally:
            os.close(rfd)

    def _run(self, fifo, rfd):
        mport = free_port()
        self.start("log: {format: json, file: %s}\nmetrics: {listen: \"127.0.0.1:%d\"}\n"
                   % (fifo, mport), wait=False)

        def probe():
            try:
                return udp_query(self.port, "probe.test", timeout=0.3)
            except (AssertionError, ConnectionRefusedError):
                return None
        wait_for(probe, "moat's DNS")

        # Long names make long lines: the FIFO (64 KiB) and the queue (1 MiB)
        # fill within the first few thousand. Every query is still answered.
        pad = ".".join(["x" * 60] * 3)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(10)
            for base in range(0, self.N, 100):
                for i in range(base, base + 100):
                    s.sendto(build_query("q%05d.%s.test" % (i, pad), qid=i % 65536),
                             ("127.0.0.1", self.port))
                got = set()
                while len(got) < 100:
                    r = Response(s.recvfrom(4096)[0])  # raises on a stalled loop
                    self.assertEqual(r.addrs(), ["0.0.0.0"])
                    got.add(r.id)
        self.assertIsNone(self.moat.proc.poll())

        # The metrics endpoint (when built) counts the drops.
        try:
            c = http.client.HTTPConnection("127.0.0.1", mport, timeout=5)
            c.request("GET", "/metrics")
            text = c.getresponse().read().decode()
            c.close()
        except OSError:
            text = ""
        for line in text.splitlines():
            if line.startswith("moat_log_dropped_lines_total "):
                self.assertGreater(float(line.split()[1]), 0)

        # Drain: the notice comes once the sink has caught up.
        buf = b""
        deadline = time.monotonic() + 60
        while b"lines dropped (sink too slow)" not in buf:
            self.assertLess(time.monotonic(), deadline, "no notice in the log")
            select.select([rfd], [], [], 0.5)
            try:
                chunk = os.read(rfd, 1 << 16)
            except BlockingIOError:
                continue
            buf += chunk
        # Stop, and keep reading until moat has written its last line.
        self.moat.send(signal.SIGTERM)
        while True:
            self.assertLess(time.monotonic(), deadline, "the log did not end")
            select.select([rfd], [], [], 0.5)
            try:
                chunk = os.read(rfd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                break  # every writer closed: moat is gone
            buf += chunk
        self.assertEqual(self.moat.wait_exit(), 0)

        text = buf.decode()
        self.assertTrue(text.endswith("\n"), "no line was cut")
        objs = [json.loads(l) for l in text.splitlines()]
        self.assertTrue(any(o["msg"].startswith("moat running") for o in objs))
        self.assertEqual(objs[-1]["msg"], "stopped", "a clean stop flushes everything")
        seen = [int(o["name"][1:6]) for o in objs
                if o["msg"] == "decision" and o["name"].startswith("q")]
        self.assertEqual(seen, sorted(set(seen)), "lines kept are whole and in order")
        notices = [o for o in objs if o["msg"].endswith("lines dropped (sink too slow)")]
        self.assertGreater(len(notices), 0)
        dropped = sum(o["dropped"] for o in notices)
        self.assertGreater(dropped, 100)
        self.assertEqual(len(seen) + dropped, self.N, "every decision written or counted")


if __name__ == "__main__":
    unittest.main(verbosity=2)
