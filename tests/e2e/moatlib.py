"""Helpers shared by the end-to-end tests: start the real moat binary with a
config written by the test, wait for its log lines, stop it, and find free
loopback ports. Standard library only."""
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time

MOAT = os.environ.get("MOAT", "build/moat")
SANITIZER_MARK = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")
E2E_DIR = os.environ.get("MOAT_E2E_DIR", os.path.dirname(os.path.abspath(__file__)))


def free_port(family=socket.AF_INET, kind=socket.SOCK_STREAM):
    """A port that is free on loopback for both TCP and UDP right now."""
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    for _ in range(100):
        with socket.socket(family, kind) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(family, other) as s2:
                s2.bind((host, port))
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


def write_config(tmpdir, text, name="moat.yaml"):
    path = os.path.join(tmpdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


class Moat:
    """A running moat daemon whose stderr is collected line by line."""

    def __init__(self, config_path=None, extra_args=(), env=None, wrapper=()):
        # wrapper: a command line to run moat under (prlimit, valgrind).
        args = [*wrapper, MOAT]
        if config_path:
            args += ["-c", config_path]
        args += list(extra_args)
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

    def send(self, sig):
        self.proc.send_signal(sig)

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


class TempDir:
    def __enter__(self):
        self._t = tempfile.TemporaryDirectory(prefix="moat-e2e-")
        return self._t.name

    def __exit__(self, *exc):
        self._t.cleanup()
