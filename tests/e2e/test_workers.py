"""End-to-end: `workers: 2` (core/worker.h). Two event loops, each with its
own sockets on the same addresses (SO_REUSEPORT), serve one guest; the
kernel spreads its queries and connections over them. What must hold:

- both workers answer and decide, and /metrics sums them (and shows the
  spread, moat_worker_*_total);
- SPEC §2.3 step 3 reads every worker's DNS memory: a name resolved once
  (through whichever worker) admits connections to its address on every
  worker;
- proxy.max_connections bounds the process, not each worker;
- SIGTERM drains every worker: no listener accepts any more, open tunnels
  finish their work, the exit is clean.

Reload under load with two workers is test_reload.py's
ReloadTwoWorkersTest. Runs in the explicit-proxy guest namespace
(explicitfixture.py): the guest's only way out is moat."""
import socket
import time
import unittest
import urllib.request

import explicitfixture as xf
import proxyfixture as pf
from dnsfixture import Response, build_query

SKIP = pf.netns_skip(__name__, __file__)

WORKERS = "workers: 2\n"
# Bounds: queries and connections per test.
N_QUERIES = 200
N_TUNNELS = 24


def metric_values(text, name):
    """{labels text: value} of every sample of name in a scrape."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, value = line.rsplit(" ", 1)
            out[series[len(name):]] = float(value)
    return out


class WorkersTest(xf.ExplicitCase):
    NEEDS = ["nft", "sshd", "dig"]

    def scrape(self):
        url = "http://127.0.0.1:%d/metrics" % self.metrics_port
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()

    def per_worker(self, family):
        """[worker 0's value, worker 1's value] of moat_worker_<family>_total."""
        v = metric_values(self.scrape(), "moat_worker_%s_total" % family)
        return [v.get('{worker="0"}', 0), v.get('{worker="1"}', 0)]

    def guest_query(self, name):
        """One A query from the guest, from a fresh source port: the
        addresses of the answer."""
        with self.guest.inside():
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with u:
            u.bind((xf.GUEST_A, 0))
            u.settimeout(3)
            u.sendto(build_query(name), (xf.GW, xf.DNS_PORT))
            return Response(u.recv(4096)).addrs()

    def test_queries_and_connections_spread_over_both_workers(self):
        self.start(extra=WORKERS)
        self.assertTrue(self.moat.line_with("moat running").endswith(", 2 workers"))
        for i in range(N_QUERIES):
            name = "allowed.test" if i % 2 else "blocked.test"
            want = [xf.ALLOWED] if i % 2 else ["0.0.0.0"]
            self.assertEqual(self.guest_query(name), want, "query %d" % i)
        dns = self.per_worker("dns_queries")
        self.assertEqual(sum(dns), N_QUERIES)
        # 200 fresh source ports: each worker got some (all on one worker
        # would happen with probability 2^-199).
        self.assertGreater(min(dns), 0, "one worker answered every query: %r" % dns)
        total = metric_values(self.scrape(), "moat_dns_queries_total")
        self.assertEqual(sum(total.values()), N_QUERIES)
        for _ in range(N_TUNNELS):
            s, rep = self.socks_tunnel("blocked.test", 443)
            self.assertEqual(rep, 2)
            s.close()
        deadline = time.monotonic() + 5
        while sum(self.per_worker("connections")) < N_TUNNELS and time.monotonic() < deadline:
            time.sleep(0.05)
        conns = self.per_worker("connections")
        self.assertEqual(sum(conns), N_TUNNELS)
        self.assertGreater(min(conns), 0, "one worker decided every connection: %r" % conns)

    def test_step3_reads_the_memory_of_the_worker_that_answered(self):
        """ssh.test is allowed on port 22 by name only: a SOCKS tunnel to
        its address is admitted once the guest resolved it through moat.
        One query lands on one worker; the tunnels land on both, and every
        one is admitted."""
        self.start(extra=WORKERS)
        self.assertEqual(self.socks_tunnel(xf.SSHADDR, 22)[1], 2)
        self.assertEqual(self.guest_query("ssh.test"), [xf.SSHADDR])
        before = self.per_worker("connections")
        for i in range(N_TUNNELS):
            s, rep = self.socks_tunnel(xf.SSHADDR, 22)
            self.assertEqual(rep, 0, "tunnel %d refused" % i)
            s.settimeout(10)
            self.assertTrue(s.recv(100).startswith(b"SSH-2.0-"))
            s.close()
        deadline = time.monotonic() + 5
        after = before
        while sum(after) - sum(before) < N_TUNNELS and time.monotonic() < deadline:
            time.sleep(0.05)
            after = self.per_worker("connections")
        spread = [a - b for a, b in zip(after, before)]
        self.assertEqual(sum(spread), N_TUNNELS)
        self.assertGreater(min(spread), 0, "the tunnels all landed on one worker: %r" % spread)

    def test_max_connections_bounds_the_process(self):
        self.start(proxy_extra="  max_connections: 4\n", extra=WORKERS)
        held = []
        for _ in range(4):
            s, rep = self.socks_tunnel("ssh.test", 22)
            self.assertEqual(rep, 0)
            held.append(s)
        # Every further client is reset, on whichever worker it lands.
        for i in range(8):
            try:  # reset before connect() returns, or right after
                s = self.gconnect(xf.SOCKS_PORT)
                s.settimeout(5)
                got = s.recv(10)
            except ConnectionResetError:
                got = b""
            self.assertEqual(got, b"", "client %d past max_connections was served" % i)
        deadline = time.monotonic() + 5
        while (self.log().count("reason=max-connections") < 8 and
               time.monotonic() < deadline):
            time.sleep(0.05)
        self.assertEqual(self.log().count("reason=max-connections"), 8)
        for s in held:
            s.close()
        # Room again once they are gone.
        deadline = time.monotonic() + 5
        while True:
            try:  # reset while moat has not yet closed the held ones
                rep = self.socks_tunnel("ssh.test", 22)[1]
            except ConnectionResetError:
                rep = None
            if rep == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(rep, 0)

    def test_a_reload_keeps_the_workers_and_says_so(self):
        self.start(extra=WORKERS)
        n = self.reload(self.config_text.replace(WORKERS, "workers: 1\n"))
        self.moat.wait_line("workers: the config asks for 1, 2 are running; a change of "
                            "workers takes effect at the next start", start=n)
        self.moat.wait_line("reloaded", start=n)
        # Both workers still answer.
        for _ in range(N_QUERIES // 4):
            self.assertEqual(self.guest_query("blocked.test"), ["0.0.0.0"])
        self.assertGreater(min(self.per_worker("dns_queries")), 0)

    def test_sigterm_drains_every_worker(self):
        self.start(extra=WORKERS)
        tunnels = []
        for _ in range(8):
            s, status, _ = self.tunnel("allowed.test:80")
            self.assertEqual(status, 200)
            tunnels.append(s)
        self.moat.send(15)
        self.moat.wait_line("SIGTERM: stopping")
        # No worker accepts any more (each closed its listening socket).
        deadline = time.monotonic() + 5
        refused = 0
        while refused < 8 and time.monotonic() < deadline:
            try:
                s = self.gconnect(xf.CONNECT_PORT)
                s.close()
                time.sleep(0.05)
            except OSError:
                refused += 1
        self.assertEqual(refused, 8, "a listener still accepted after SIGTERM")
        # The open tunnels, on both workers, still carry their requests.
        for s in tunnels:
            s.sendall(b"GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
            head, body = pf.read_response(lambda s=s: s.recv(65536))
            self.assertTrue(head.startswith("HTTP/1.1 200 "), head)
            s.close()
        self.assertEqual(self.moat.wait_exit(timeout=10), 0)
        self.assertIn("stopped", self.log())


if __name__ == "__main__":
    unittest.main(verbosity=2)
