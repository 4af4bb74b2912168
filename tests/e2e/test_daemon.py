"""End-to-end: the daemon's lifecycle (SPEC §1): start, SIGHUP reload (good
and bad files), SIGTERM / SIGINT stop with status 0, bad config at start,
JSON logs, log.file."""
import json
import os
import signal
import time
import unittest

from moatlib import Moat, TempDir, free_port, write_config


def config(dns_port, extra=""):
    # Every listener on a port of its own so tests never collide.
    return (
        "dns:\n"
        "  listen: [\"127.0.0.1:%d\"]\n"
        "  upstream: [\"127.0.0.1:%d\"]\n"
        "proxy:\n"
        "  tls: [\"127.0.0.1:%d\"]\n"
        "  http: [\"127.0.0.1:%d\"]\n"
        "shutdown_grace: 2s\n"
        "%s" % (dns_port, free_port(), free_port(), free_port(), extra)
    )


class DaemonTest(unittest.TestCase):
    def setUp(self):
        self._tmp = TempDir()
        self.dir = self._tmp.__enter__()
        self.moat = None

    def tearDown(self):
        if self.moat:
            self.moat.kill()
        self._tmp.__exit__(None, None, None)

    def start(self, text, name="moat.yaml"):
        path = write_config(self.dir, text, name)
        self.moat = Moat(path)
        self.moat.wait_line("moat running")
        return path

    def test_sigterm_exits_zero(self):
        self.start(config(free_port(), "allow: []\n"))
        self.assertEqual(self.moat.stop(signal.SIGTERM), 0)
        self.moat.wait_line("stopped")

    def test_sigint_exits_zero(self):
        self.start(config(free_port()))
        self.assertEqual(self.moat.stop(signal.SIGINT), 0)

    def test_bad_config_at_start_exits_one_with_position(self):
        path = write_config(self.dir, "allow:\n  - \"*.com\"\n", "bad.yaml")
        m = Moat(path)
        self.assertEqual(m.wait_exit(), 1)
        self.assertTrue(any(l.startswith(path + ":2:") for l in m.lines), m.lines)

    def test_missing_config_file_exits_one(self):
        m = Moat(os.path.join(self.dir, "absent.yaml"))
        self.assertEqual(m.wait_exit(), 1)

    def test_reload_good_then_bad_then_good(self):
        port = free_port()
        path = self.start(config(port, "allow: [a.example]\n"))
        self.moat.wait_line("generation 1")
        self.assertIn("1 rule", self.moat.lines[self.moat.wait_line("moat running")])

        write_config(self.dir, config(port, "allow: [a.example, b.example]\n"))
        self.moat.send(signal.SIGHUP)
        i = self.moat.wait_line("generation 2")
        self.assertIn("2 rules", self.moat.lines[i])

        # A bad file: every error logged with file and position, old config kept.
        write_config(self.dir, config(port, "allow:\n  - \"*\"\n  - 300.1.2.3\n"))
        self.moat.send(signal.SIGHUP)
        j = self.moat.wait_line("rejected", start=i)
        errors = [l for l in self.moat.lines[i:j] if "config error" in l]
        self.assertEqual(len(errors), 2, self.moat.lines[i:j + 1])
        self.assertTrue(any(path in l and "9:" in l for l in errors), errors)
        self.assertIn("keeping the running config", self.moat.lines[j])
        self.assertIsNone(self.moat.proc.poll())

        # The daemon still serves and the next good file becomes generation 3.
        write_config(self.dir, config(port, "allow: [c.example]\n"))
        self.moat.send(signal.SIGHUP)
        k = self.moat.wait_line("generation 3", start=j)
        self.assertIn("1 rule", self.moat.lines[k])
        self.assertEqual(self.moat.stop(), 0)

    def test_reload_of_deleted_file_keeps_running(self):
        path = self.start(config(free_port()))
        os.unlink(path)
        self.moat.send(signal.SIGHUP)
        self.moat.wait_line("keeping the running config")
        self.assertIsNone(self.moat.proc.poll())
        self.assertEqual(self.moat.stop(), 0)

    def test_json_log_every_line_is_an_object(self):
        self.start(config(free_port(), "log: {format: json}\nallow: []\n"))
        self.moat.send(signal.SIGHUP)
        self.moat.wait_line("generation 2")
        self.assertEqual(self.moat.stop(), 0)
        for obj in self.moat.json_lines():
            self.assertIn("time", obj)
            self.assertIn("level", obj)
            self.assertIn("msg", obj)

    def test_log_file(self):
        log_path = os.path.join(self.dir, "moat.log")
        path = write_config(self.dir, config(free_port(), "log: {file: %s, format: json}\n" % log_path))
        m = Moat(path)
        try:
            # Nothing on stderr: wait for the file instead.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if os.path.exists(log_path) and "moat running" in open(log_path).read():
                    break
                time.sleep(0.05)
            self.assertEqual(m.stop(), 0)
            with open(log_path) as f:
                objs = [json.loads(l) for l in f if l.strip()]
            self.assertTrue(any("moat running" in o["msg"] for o in objs))
            self.assertTrue(any(o["msg"] == "stopped" for o in objs))
        finally:
            m.kill()

    def test_default_config_runs(self):
        # Plain `moat` runs on the embedded default (filtering off).
        self.moat = Moat()
        i = self.moat.wait_line("moat running")
        self.assertIn("filtering off", self.moat.lines[i])
        # it says where it listens and how to try it
        self.moat.wait_line("dns listening")
        self.moat.wait_line("dig @127.0.0.1 -p 5353 example.com")
        self.moat.wait_line("curl --connect-to ::127.0.0.1:8443 https://example.com/")
        self.assertEqual(self.moat.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
