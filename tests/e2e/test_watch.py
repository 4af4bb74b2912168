"""End-to-end: `reload: {watch: true}` (SPEC §1): moat reloads when its
config file or an included file changes, however it is written: in place,
replaced by a rename, as vim writes it, as a Kubernetes ConfigMap volume
swaps its `..data` link; a tenant file added to an include directory, also
one created later; a broken file is rejected and its fix applied; a
burst of writes gives one reload (two at most), never one per write; with
watch off (the default) nothing is reloaded.

Loopback only: moat's DNS listener on 127.0.0.1 forwards to a scripted
upstream that answers every A query with 198.18.0.30, so an allowed name
resolves to it and a blocked one to the sinkhole 0.0.0.0. A tenant's guest
is the source address 127.0.0.2."""
import os
import shutil
import socket
import time
import unittest
import urllib.request

from dnsfixture import Response, ScriptedUpstream, answer_a, build_query
from moatlib import Moat, MoatTestCase, free_port

REAL = "198.18.0.30"
SINK = "0.0.0.0"
QUIET = 0.25  # MOAT_WATCH_QUIET_MS (core/watch.h)
SETTLE = 1.5  # after a reload: long enough for a second one to show


class WatchTest(MoatTestCase):
    def setUp(self):
        super().setUp()
        self.up_port = free_port()
        self.add_upstream(ScriptedUpstream(self.up_port, lambda m: answer_a(m, REAL)))
        self.dns_port = free_port()
        self.metrics_port = free_port()

    def config(self, allow, watch=True, extra=""):
        return ("dns:\n"
                "  listen: [\"127.0.0.1:%d\"]\n"
                "  upstream: [\"127.0.0.1:%d\"]\n"
                "proxy: {tls: [], http: []}\n"
                "metrics: {listen: \"127.0.0.1:%d\"}\n"
                "shutdown_grace: 1s\n"
                "reload: {watch: %s}\n"
                "%s"
                "allow: [%s]\n" % (self.dns_port, self.up_port, self.metrics_port,
                                   "true" if watch else "false", extra, ", ".join(allow)))

    def start(self, path):
        self.moat = Moat(path)
        self.moat.wait_line("moat running")

    def start_file(self, allow, watch=True, extra=""):
        """moat on dir/moat.yaml with allow; returns the path."""
        path = os.path.join(self.dir, "moat.yaml")
        with open(path, "w") as f:
            f.write(self.config(allow, watch=watch, extra=extra))
        self.start(path)
        if watch:
            self.moat.wait_line("config watch: on")
        return path

    def resolve(self, name, src="127.0.0.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((src, 0))
            u.settimeout(3)
            u.sendto(build_query(name), ("127.0.0.1", self.dns_port))
            return [rr.addr() for rr in Response(u.recv(4096)).answer if rr.type == 1]

    def count(self, needle, start):
        return sum(1 for l in self.moat.lines[start:] if needle in l)

    def reloads(self, start):
        return self.count("info reloaded ", start)

    def wait_reloads(self, start, n=1, timeout=10.0):
        """Wait for the n-th reload after start, then SETTLE more; return
        how many reloads there were by then."""
        deadline = time.monotonic() + timeout
        while self.reloads(start) < n:
            self.assertLess(time.monotonic(), deadline,
                            "no reload:\n" + "\n".join(self.moat.lines[start:]))
            time.sleep(0.05)
        time.sleep(SETTLE)
        return self.reloads(start)

    def metric_reloads(self, result):
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                      timeout=5).read().decode()
        key = 'moat_config_reloads_total{result="%s"} ' % result
        return int(next(l for l in body.splitlines() if l.startswith(key)).split()[1])

    @staticmethod
    def write_in_place(path, text):
        with open(path, "r+") as f:  # open, truncate, write: the same inode
            f.truncate(0)
            f.write(text)

    # ---- tests ---------------------------------------------------------------------------------

    def test_edit_in_place(self):
        path = self.start_file(["a.example"])
        self.assertEqual(self.resolve("b.example"), [SINK])
        ino = os.stat(path).st_ino
        mark = len(self.moat.lines)
        self.write_in_place(path, self.config(["a.example", "b.example"]))
        self.assertEqual(os.stat(path).st_ino, ino)
        self.assertEqual(self.wait_reloads(mark), 1)
        self.moat.line_with("config watch:", "moat.yaml changed", start=mark)
        self.assertEqual(self.resolve("b.example"), [REAL])
        self.assertEqual(self.resolve("c.example"), [SINK])

    def test_replace_by_rename_and_as_vim_writes(self):
        path = self.start_file(["a.example"])
        mark = len(self.moat.lines)
        with open(path + ".tmp", "w") as f:
            f.write(self.config(["b.example"]))
        os.rename(path + ".tmp", path)
        self.assertEqual(self.wait_reloads(mark), 1)
        self.assertEqual(self.resolve("b.example"), [REAL])
        self.assertEqual(self.resolve("a.example"), [SINK])

        # vim (backupcopy=no): the file moves to a backup, a new one is
        # written in its place, the backup goes.
        mark = len(self.moat.lines)
        open(os.path.join(self.dir, "4913"), "w").close()
        os.unlink(os.path.join(self.dir, "4913"))
        os.rename(path, path + "~")
        with open(path, "w") as f:
            f.write(self.config(["c.example"]))
        os.chmod(path, 0o644)
        os.unlink(path + "~")
        self.assertEqual(self.wait_reloads(mark), 1)
        self.assertEqual(self.resolve("c.example"), [REAL])
        self.assertEqual(self.resolve("b.example"), [SINK])

        # The new file (a new inode) is watched in its turn.
        mark = len(self.moat.lines)
        self.write_in_place(path, self.config(["d.example"]))
        self.assertEqual(self.wait_reloads(mark), 1)
        self.assertEqual(self.resolve("d.example"), [REAL])

    def configmap_swap(self, cm, stamp, text):
        """What the kubelet does: a new timestamped directory, a new link
        ..data_tmp to it renamed over ..data, the old directory removed."""
        new = os.path.join(cm, stamp)
        os.mkdir(new)
        with open(os.path.join(new, "moat.yaml"), "w") as f:
            f.write(text)
        old = os.readlink(os.path.join(cm, "..data"))
        os.symlink(stamp, os.path.join(cm, "..data_tmp"))
        os.rename(os.path.join(cm, "..data_tmp"), os.path.join(cm, "..data"))
        shutil.rmtree(os.path.join(cm, old))

    def test_configmap_data_swap(self):
        cm = os.path.join(self.dir, "cm")
        first = os.path.join(cm, "..2026_12_06_10_00_00.000000001")
        os.makedirs(first)
        with open(os.path.join(first, "moat.yaml"), "w") as f:
            f.write(self.config(["a.example"]))
        os.symlink(os.path.basename(first), os.path.join(cm, "..data"))
        os.symlink("..data/moat.yaml", os.path.join(cm, "moat.yaml"))
        self.start(os.path.join(cm, "moat.yaml"))
        self.moat.wait_line("config watch: on")
        self.assertEqual(self.resolve("b.example"), [SINK])

        mark = len(self.moat.lines)
        self.configmap_swap(cm, "..2026_12_06_10_01_00.000000002", self.config(["b.example"]))
        self.assertIn(self.wait_reloads(mark), (1, 2))
        self.assertEqual(self.resolve("b.example"), [REAL])
        self.assertEqual(self.resolve("a.example"), [SINK])

        # The watch followed the link to the new directory: a second swap,
        # and an edit of the file in the directory ..data points at now.
        mark = len(self.moat.lines)
        self.configmap_swap(cm, "..2026_12_06_10_02_00.000000003", self.config(["c.example"]))
        self.assertIn(self.wait_reloads(mark), (1, 2))
        self.assertEqual(self.resolve("c.example"), [REAL])
        mark = len(self.moat.lines)
        self.write_in_place(os.path.join(cm, "..data", "moat.yaml"), self.config(["d.example"]))
        self.assertEqual(self.wait_reloads(mark), 1)
        self.assertEqual(self.resolve("d.example"), [REAL])
        self.assertEqual(self.resolve("c.example"), [SINK])

    def test_included_tenant_file_added_and_removed(self):
        tenants = os.path.join(self.dir, "tenants.d")
        os.mkdir(tenants)
        self.start_file(["a.example"], extra="include: [\"tenants.d/*.yaml\"]\n")
        self.assertEqual(self.resolve("t.example", src="127.0.0.2"), [SINK])

        # Files the pattern does not match (an editor's swap file, a
        # temporary file) are not a change.
        mark = len(self.moat.lines)
        with open(os.path.join(tenants, ".box.yaml.swp"), "w") as f:
            f.write("x")
        with open(os.path.join(tenants, "box.yaml.tmp"), "w") as f:
            f.write("name: box\nclients: [127.0.0.2]\nallow: [t.example]\n")
        time.sleep(QUIET + SETTLE)
        self.assertEqual(self.reloads(mark), 0, "\n".join(self.moat.lines[mark:]))

        os.rename(os.path.join(tenants, "box.yaml.tmp"), os.path.join(tenants, "box.yaml"))
        self.assertEqual(self.wait_reloads(mark), 1)
        self.assertIn("1 tenant", self.moat.line_with("info reloaded ", start=mark))
        self.assertEqual(self.resolve("t.example", src="127.0.0.2"), [REAL])
        self.assertEqual(self.resolve("t.example"), [SINK])
        self.assertEqual(self.resolve("a.example", src="127.0.0.2"), [SINK])

        # The included file is watched too: an edit in place.
        mark = len(self.moat.lines)
        self.write_in_place(os.path.join(tenants, "box.yaml"),
                            "name: box\nclients: [127.0.0.2]\nallow: [u.example]\n")
        self.assertEqual(self.wait_reloads(mark), 1)
        self.assertEqual(self.resolve("u.example", src="127.0.0.2"), [REAL])
        self.assertEqual(self.resolve("t.example", src="127.0.0.2"), [SINK])

        mark = len(self.moat.lines)
        os.unlink(os.path.join(tenants, "box.yaml"))
        self.assertEqual(self.wait_reloads(mark), 1)
        self.assertIn("0 tenants", self.moat.line_with("info reloaded ", start=mark))
        self.assertEqual(self.resolve("a.example", src="127.0.0.2"), [REAL])

    def test_include_directory_created_later(self):
        self.start_file(["a.example"], extra="include: [\"later.d/*.yaml\"]\n")
        mark = len(self.moat.lines)
        later = os.path.join(self.dir, "later.d")
        os.mkdir(later)  # watched through its parent until it exists
        self.assertEqual(self.wait_reloads(mark), 1)
        mark = len(self.moat.lines)
        with open(os.path.join(later, "box.yaml"), "w") as f:
            f.write("name: box\nclients: [127.0.0.2]\nallow: [t.example]\n")
        self.assertEqual(self.wait_reloads(mark), 1)
        self.assertIn("1 tenant", self.moat.line_with("info reloaded ", start=mark))
        self.assertEqual(self.resolve("t.example", src="127.0.0.2"), [REAL])

    def test_broken_write_then_fixed(self):
        path = self.start_file(["a.example"])
        mark = len(self.moat.lines)
        self.write_in_place(path, self.config(["a.example", "\"*\""]))
        self.moat.wait_line("rejected", start=mark)
        time.sleep(SETTLE)
        self.assertEqual(self.count("rejected", mark), 1, "\n".join(self.moat.lines[mark:]))
        self.assertEqual(self.reloads(mark), 0)
        self.moat.line_with("config error:", "moat.yaml:", start=mark)
        self.assertEqual(self.resolve("a.example"), [REAL])  # the old config serves

        fixed = len(self.moat.lines)
        self.write_in_place(path, self.config(["b.example"]))
        self.assertEqual(self.wait_reloads(fixed), 1)
        self.assertEqual(self.count("rejected", fixed), 0)
        self.assertEqual(self.resolve("b.example"), [REAL])
        self.assertEqual(self.resolve("a.example"), [SINK])
        self.assertEqual(self.metric_reloads("error"), 1)
        self.assertEqual(self.metric_reloads("ok"), 1)

    def test_burst_of_writes_gives_one_reload(self):
        path = self.start_file(["a.example"])
        mark = len(self.moat.lines)
        for i in range(20):
            self.write_in_place(path, self.config(["a.example", "n%d.example" % i]))
            time.sleep(0.01)
        n = self.wait_reloads(mark)
        self.assertIn(n, (1, 2), "\n".join(self.moat.lines[mark:]))
        self.assertEqual(self.metric_reloads("ok"), n)
        self.assertEqual(self.resolve("n19.example"), [REAL])
        self.assertEqual(self.resolve("n18.example"), [SINK])

    def test_watch_off_by_default_reloads_nothing(self):
        path = self.start_file(["a.example"], watch=False)
        mark = len(self.moat.lines)
        self.write_in_place(path, self.config(["b.example"], watch=False))
        time.sleep(QUIET + SETTLE)
        self.assertEqual(self.reloads(mark), 0)
        self.assertEqual(self.count("config watch", 0), 0)
        self.assertEqual(self.resolve("b.example"), [SINK])

        # Turned on by a reload (SIGHUP), then off again by the file it watches.
        self.write_in_place(path, self.config(["b.example"]))
        self.moat.sighup()
        self.moat.wait_line("config watch: on", start=mark)
        mark = len(self.moat.lines)
        self.write_in_place(path, self.config(["c.example"], watch=False))
        self.assertEqual(self.wait_reloads(mark), 1)
        self.moat.wait_line("config watch: off", start=mark)
        mark = len(self.moat.lines)
        self.write_in_place(path, self.config(["d.example"], watch=False))
        time.sleep(QUIET + SETTLE)
        self.assertEqual(self.reloads(mark), 0)
        self.assertEqual(self.resolve("c.example"), [REAL])


if __name__ == "__main__":
    unittest.main(verbosity=2)
