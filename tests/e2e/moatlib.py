"""Helpers shared by the end-to-end tests: start the real moat binary with a
config written by the test, wait for its log lines, stop it, and find free
loopback ports. Standard library only."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from dnsfixture import Dnsmasq

MOAT = os.environ.get("MOAT", "build/moat")
# MOAT_TEST_WORKERS=N: every daemon a test starts runs N workers (--workers
# N) unless the test picks its own; CI runs the suites with 1 and with 2.
TEST_WORKERS = os.environ.get("MOAT_TEST_WORKERS", "")
SANITIZER_MARK = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")
E2E_DIR = os.environ.get("MOAT_E2E_DIR", os.path.dirname(os.path.abspath(__file__)))


_ports_given = set()


def free_port(family=socket.AF_INET, kind=socket.SOCK_STREAM):
    """A port that is free on loopback for both TCP and UDP right now, and
    not handed out before by this process (several picked in a row for one
    config must differ: the kernel may offer a freed port again)."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    for _ in range(100):
        with socket.socket(family, kind) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port in _ports_given:
            continue
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(family, other) as s2:
                s2.bind((host, port))
            _ports_given.add(port)
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def run_moat(*args, timeout=20):
    """Run moat to completion (check, explain, --help): returns CompletedProcess.
    Fails when moat printed a sanitizer report."""
    r = subprocess.run([MOAT, *args], capture_output=True, text=True, timeout=timeout)
    if SANITIZER_MARK.search(r.stderr):
        raise AssertionError("sanitizer report from moat %s:\n%s" % (" ".join(args), r.stderr))
    return r


def loopback_config(dns_port, up_port, allow, timeout="2s", tls_port=None, http_port=None,
                    grace="2s", proxy_extra="", extra=""):
    """A config with the DNS listener on 127.0.0.1:dns_port forwarding to
    127.0.0.1:up_port, tls and http listeners on loopback (port None: a
    fresh one, 0: no listener); allow: the YAML text of the list,
    proxy_extra: more lines under `proxy:`, extra: more top-level lines."""

    def listener(port):
        return "[]" if port == 0 else "[\"127.0.0.1:%d\"]" % (port or free_port())

    return (
        "dns:\n"
        "  listen: [\"127.0.0.1:%d\"]\n"
        "  upstream: [\"127.0.0.1:%d\"]\n"
        "  timeout: %s\n"
        "proxy:\n"
        "  tls: %s\n"
        "  http: %s\n"
        "%s"
        "shutdown_grace: %s\n"
        "%s"
        "allow: %s\n" % (dns_port, up_port, timeout, listener(tls_port), listener(http_port),
                         proxy_extra, grace, extra, allow))


def yaml_list(items):
    """["a", "b"] -> '["a", "b"]' (each item quoted)."""
    return "[%s]" % ", ".join('"%s"' % a for a in items)


def write_config(tmpdir, text, name="moat.yaml"):
    path = os.path.join(tmpdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def pins_workers(config_path, args):
    """Whether a test chose the number of workers itself: --workers among
    args, or a `workers:` line in its config (a test of something one loop
    owns, such as a cache or a per-worker bound, writes `workers: 1`)."""
    if any(a.startswith("--workers") for a in args):
        return True
    try:
        with open(config_path) as f:
            return any(line.startswith("workers:") for line in f)
    except OSError:
        return False


class Moat:
    """A running moat daemon whose stderr is collected line by line."""

    def __init__(self, config_path=None, extra_args=(), env=None, wrapper=()):
        # wrapper: a command line to run moat under (prlimit, valgrind).
        args = [*wrapper, MOAT]
        if config_path:
            args += ["-c", config_path]
        args += list(extra_args)
        if TEST_WORKERS and config_path and not pins_workers(config_path, args):
            args += ["--workers", TEST_WORKERS]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.lines = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(self, needle, timeout=10.0, start=0):
        """Wait until a stderr line at index >= start contains needle; return its index."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.lines)):
                    if needle in self.lines[i]:
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError("no line with %r in moat's log:\n%s" %
                                         (needle, "\n".join(self.lines)))
                self._cond.wait(min(left, 0.2))

    def line_with(self, *needles, start=0, timeout=10.0):
        """The first stderr line at index >= start holding every needle."""
        deadline = time.monotonic() + timeout
        i = start
        while True:
            i = self.wait_line(needles[0], timeout=max(0.1, deadline - time.monotonic()),
                               start=i)
            if all(n in self.lines[i] for n in needles):
                return self.lines[i]
            i += 1

    def send(self, sig):
        self.proc.send_signal(sig)

    def sighup(self, wait="reloaded", timeout=10.0):
        """Send SIGHUP and wait for a line with wait logged after it; returns
        the index of the first line logged after the signal."""
        n = len(self.lines)
        self.send(signal.SIGHUP)
        self.wait_line(wait, timeout=timeout, start=n)
        return n

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Send sig and return the exit status (raises if it does not exit)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self._close()
        return rc

    def wait_exit(self, timeout=10.0):
        """Wait for moat to exit on its own; return its status."""
        rc = self.proc.wait(timeout=timeout)
        self._close()
        return rc

    def _close(self):
        self._reader.join(timeout=5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f and not f.closed:
                f.close()
        self.check_sanitizers()

    def check_sanitizers(self):
        """Fail when moat printed a sanitizer report (sanitizer builds)."""
        bad = [l for l in self.lines if SANITIZER_MARK.search(l)]
        if bad:
            raise AssertionError("sanitizer report from moat:\n" + "\n".join(self.lines))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._close()

    def json_lines(self):
        return [json.loads(l) for l in self.lines]


def recv_all(s, timeout=None, size=65536):
    """Everything s receives until the peer closes it (timeout: set on s
    first)."""
    if timeout is not None:
        s.settimeout(timeout)
    out = b""
    while True:
        d = s.recv(size)
        if not d:
            return out
        out += d


def close_all(socks):
    """Close every socket in socks, ignoring errors."""
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


class TempDir:
    def __enter__(self):
        self._t = tempfile.TemporaryDirectory(prefix="moat-e2e-")
        return self._t.name

    def __exit__(self, *exc):
        self._t.cleanup()


class MoatTestCase(unittest.TestCase):
    """A test with sockets to close (self.socks) and at most one moat
    (self.moat). After each test the sockets are closed and moat is
    stopped with SIGTERM: it must exit 0 (in sanitizer builds, the leak
    check at exit). Then the cleanups run (upstreams added with
    self.add_upstream(...) are stopped). self.dir is a temporary directory
    of the test's own, unless PER_TEST_DIR is off (the class provides
    one)."""

    PER_TEST_DIR = True

    def setUp(self):
        if self.PER_TEST_DIR:
            tmp = TempDir()
            self.dir = tmp.__enter__()
            self.addCleanup(tmp.__exit__, None, None, None)
        self.moat = None
        self.socks = []

    def tearDown(self):
        close_all(self.socks)
        self.stop_moat()

    def stop_moat(self, tail=None):
        """Stop self.moat, if any, with SIGTERM and check it exits 0; with
        MOAT_E2E_VERBOSE set, print its log (the last tail lines) first."""
        m, self.moat = self.moat, None
        if not m:
            return
        if os.environ.get("MOAT_E2E_VERBOSE"):
            sys.stderr.write("\n".join(m.lines[-tail:] if tail else m.lines) + "\n")
        try:
            if m.proc.poll() is None:
                self.assertEqual(m.stop(signal.SIGTERM), 0,
                                 "moat's exit status on SIGTERM:\n" + "\n".join(m.lines[-40:]))
        finally:
            m.kill()

    def log_line(self, *needles, start=0, timeout=10.0):
        """The first log line of self.moat (from start) holding every needle."""
        return self.moat.line_with(*needles, start=start, timeout=timeout)

    def add_upstream(self, server):
        """server (anything with stop()), stopped after the test."""
        self.addCleanup(server.stop)
        return server

    def start_dnsmasq(self, args):
        """dnsmasq with args on a fresh loopback port (self.up_port), as
        self.dnsmasq, stopped after the test."""
        self.up_port = free_port()
        self.dnsmasq = self.add_upstream(Dnsmasq(self.dir, self.up_port, args))
        return self.dnsmasq

    def start_config(self, text, **kw):
        """moat on config text (written to self.cfg_path), running."""
        self.cfg_path = write_config(self.dir, text)
        self.moat = Moat(self.cfg_path, **kw)
        self.moat.wait_line("moat running")
        return self.moat
