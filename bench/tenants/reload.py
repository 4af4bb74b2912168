#!/usr/bin/env python3
"""bench/tenants/reload.py MOAT [--tenants N] [--rounds R]: how long a reload
that changes one tenant file among N takes, and whether it stalls the loop.

moat runs with N tenants (each its own included file, 20 rules of its own
and a shared 1,000-rule list; tenant i's client is 127.1.x.y) and a DNS
listener on loopback; dnsmasq on loopback is its upstream. A probe sends a
query for a blocked name every millisecond from tenant 1's address (answered
by moat itself, so its round trip is moat's loop) and records each round
trip. Each round rewrites tenant N/2's file to allow one more name, sends
SIGHUP, and polls that name from tenant N/2's address until moat answers it
from upstream: the time from the signal to that answer is the reload time.
Reported: the reload time (median and worst over the rounds), and the DNS
round trips before and during the reloads (p50, p99, max).

Loopback only; every loop is bounded (a round gives up after 10 s)."""
import argparse
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

LIST_RULES = 1000
OWN_RULES = 20


def query(name, qid):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", 1, 1)


def first_a(msg):
    """The first A record's address in a response, or None."""
    an = struct.unpack("!H", msg[6:8])[0]
    off = 12
    while msg[off]:
        off += 1 + msg[off]
    off += 5
    for _ in range(an):
        if msg[off] & 0xC0 == 0xC0:
            off += 2
        else:
            while msg[off]:
                off += 1 + msg[off]
            off += 1
        rtype, _, _, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        if rtype == 1:
            return socket.inet_ntoa(msg[off:off + 4])
        off += rdlen
    return None


def client_of(i):
    return "127.1.%d.%d" % (i // 256, i % 256)


def write_tenant(d, i, extra=()):
    path = os.path.join(d, "tenants.d", "t%05d.yaml" % i)
    with open(path + ".tmp", "w") as f:
        f.write("name: t%d\nclients: [%s]\nallow:\n  - {list: common}\n" % (i, client_of(i)))
        for j in range(OWN_RULES - 1):
            f.write("  - h%d.t%d.test\n" % (j, i))
        f.write("  - 203.0.%d.%d\n" % (i // 256 % 256, i % 256))
        for name in extra:
            f.write("  - %s\n" % name)
    os.rename(path + ".tmp", path)


def write_config(d, n, dns_port, up_port):
    os.makedirs(os.path.join(d, "tenants.d"))
    with open(os.path.join(d, "moat.yaml"), "w") as f:
        f.write('dns: {listen: ["127.0.0.1:%d"], upstream: ["127.0.0.1:%d"]}\n'
                "proxy: {tls: [], http: []}\nlog: {level: info}\nlists:\n  common:\n"
                % (dns_port, up_port))
        for i in range(LIST_RULES):
            f.write("    - n%d.common.test\n" % i)
        f.write('allow: []\ninclude: ["tenants.d/*.yaml"]\n')
    for i in range(n):
        write_tenant(d, i)


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Probe(threading.Thread):
    """A blocked-name query every millisecond; (send time, round trip) per answer."""

    def __init__(self, port, src):
        super().__init__(daemon=True)
        self.port, self.src = port, src
        self.samples = []
        self.stop = threading.Event()

    def run(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((self.src, 0))
            s.settimeout(1.0)
            qid = 0
            while not self.stop.is_set():
                qid = (qid + 1) & 0xFFFF
                t0 = time.monotonic()
                s.sendto(query("blocked.test", qid), ("127.0.0.1", self.port))
                try:
                    while True:
                        msg = s.recv(4096)
                        if struct.unpack("!H", msg[:2])[0] == qid:
                            break
                    self.samples.append((t0, time.monotonic() - t0))
                except socket.timeout:
                    self.samples.append((t0, 1.0))
                left = 0.001 - (time.monotonic() - t0)
                if left > 0:
                    time.sleep(left)


def percentiles(xs):
    xs = sorted(xs)
    if not xs:
        return (0, 0, 0)
    return (xs[len(xs) // 2] * 1e3, xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1e3, xs[-1] * 1e3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("moat")
    ap.add_argument("--tenants", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    d = tempfile.mkdtemp(prefix="moat-bench-tenants.")
    procs = []
    try:
        dns_port, up_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        write_config(d, a.tenants, dns_port, up_port)
        procs.append(subprocess.Popen(
            [dnsmasq, "-k", "-C", "/dev/null", "-R", "-p", str(up_port),
             "--listen-address=127.0.0.1", "--bind-interfaces", "--no-hosts",
             "--address=/test/198.18.0.1"], stderr=subprocess.DEVNULL))
        moat = subprocess.Popen([a.moat, "-c", os.path.join(d, "moat.yaml"), "--workers", "1"],
                                stderr=subprocess.PIPE, text=True)
        procs.append(moat)
        lines = []

        def read():
            for line in moat.stderr:
                lines.append(line)
        threading.Thread(target=read, daemon=True).start()
        t_start = time.monotonic()
        target = a.tenants // 2
        ask = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ask.bind((client_of(target), 0))
        ask.settimeout(0.2)

        def resolves(name):
            ask.sendto(query(name, 7), ("127.0.0.1", dns_port))
            try:
                got = first_a(ask.recv(4096))
            except socket.timeout:
                return None
            return got is not None and got != "0.0.0.0"

        while resolves("h0.t%d.test" % target) is not True:
            if time.monotonic() - t_start > 60 or moat.poll() is not None:
                sys.exit("moat did not start:\n" + "".join(lines))
            time.sleep(0.05)
        start_s = time.monotonic() - t_start
        probe = Probe(dns_port, client_of(1))
        probe.start()
        time.sleep(2.0)
        windows, reloads = [], []
        for r in range(a.rounds):
            name = "new%d.t%d.test" % (r, target)
            write_tenant(d, target, extra=[name])
            t0 = time.monotonic()
            moat.send_signal(signal.SIGHUP)
            while not resolves(name):
                if time.monotonic() - t0 > 10:
                    sys.exit("round %d: %s never resolved:\n%s" % (r, name, "".join(lines)))
            reloads.append(time.monotonic() - t0)
            time.sleep(0.5)
            windows.append((t0, time.monotonic()))
            time.sleep(0.5)
        probe.stop.set()
        probe.join(5)
        first_reload = windows[0][0]
        before = [rtt for t, rtt in probe.samples if t < first_reload]
        during = [rtt for t, rtt in probe.samples if any(w0 <= t <= w1 for w0, w1 in windows)]
        b, du = percentiles(before), percentiles(during)
        print("| tenants | start s | reload ms (median, worst of %d) | DNS rtt before p50/p99/max ms "
              "| DNS rtt during reloads p50/p99/max ms | probes |" % a.rounds)
        print("|---:|---:|---:|---:|---:|---:|")
        print("| %d | %.2f | %.0f, %.0f | %.2f / %.2f / %.2f | %.2f / %.2f / %.2f | %d |" % (
            a.tenants, start_s, statistics.median(reloads) * 1e3, max(reloads) * 1e3,
            *b, *du, len(probe.samples)))
        with open("/proc/%d/status" % moat.pid) as f:
            rss = [l for l in f if l.startswith("VmRSS")]
        print("moat %s" % (rss[0].strip() if rss else ""))
        for line in lines:
            if "reloaded" in line:
                print(line.strip())
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
