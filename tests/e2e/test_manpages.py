"""The manual pages man/moat.8 and man/moat.yaml.5: they render without a
warning, and they name every subcommand and option `moat --help` lists and
every config key the loader knows (read from config/config.c and
config/tenants.c), so a key or a command added without docs fails here.
Also: packaging/moat.yaml, the packaged config, is the embedded default."""
import os
import re
import shutil
import subprocess
import unittest

from moatlib import TempDir, run_moat, write_config

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PAGES = {"moat.8": os.path.join(ROOT, "man", "moat.8"),
         "moat.yaml.5": os.path.join(ROOT, "man", "moat.yaml.5")}


def page_words(path):
    """The page's source with roff escapes undone enough to find words:
    \\- is -, font changes and comments are dropped."""
    text = open(path, encoding="utf-8").read()
    text = re.sub(r'^\.\\".*$', "", text, flags=re.M)
    text = text.replace("\\-", "-").replace("\\(dq", '"')
    return re.sub(r"\\f[BIRP]|\\f\[[A-Z]*\]", "", text)


def loader_keys():
    """{source file: [keys]} from every `names[K_N] = {...}` table."""
    keys = {}
    for name in ("config.c", "tenants.c"):
        src = open(os.path.join(ROOT, "config", name), encoding="utf-8").read()
        tables = re.findall(r"names\[K_N\]\s*=\s*\{([^}]*)\}", src)
        keys[name] = [k for t in tables for k in re.findall(r'"([a-z_]+)"', t)]
    return keys


class ManPagesTest(unittest.TestCase):
    def assertFound(self, text, pattern, msg):
        """assertRegex with only msg on failure, not the whole page."""
        if not re.search(pattern, text, flags=re.M):
            self.fail(msg)

    def render(self, argv, page):
        r = subprocess.run(argv + [PAGES[page]], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "MANWIDTH": "80", "LC_ALL": "C.UTF-8"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "", "%s warns: %s" % (page, r.stderr))
        return r.stdout

    def test_groff_renders_without_warnings(self):
        for page in PAGES:
            with self.subTest(page=page):
                self.render(["groff", "-man", "-ww", "-z", "-Tutf8"], page)

    @unittest.skipUnless(shutil.which("man"), "man-db not installed")
    def test_man_renders_without_warnings(self):
        for page in PAGES:
            with self.subTest(page=page):
                out = self.render(["man", "--warnings", "-l"], page)
                self.assertIn("NAME", out)
                self.assertIn("SEE ALSO", out)
                self.assertTrue(all(len(l) <= 80 for l in out.splitlines()), out)

    def test_every_subcommand_and_option_of_help_is_in_moat_8(self):
        help_text = run_moat("--help").stdout.split("The embedded default config")[0]
        cmds = set(re.findall(r"^\s*(?:usage:)?\s*moat ([a-z]+)\b", help_text, flags=re.M))
        opts = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][a-z-]*)", help_text))
        self.assertTrue({"check", "explain", "nft", "reload"} <= cmds, cmds)
        self.assertTrue({"-c", "--config", "--control", "--version", "--help"} <= opts, opts)
        text = page_words(PAGES["moat.8"])
        for cmd in sorted(cmds):
            self.assertFound(text, r"\.B(?:I)? \"?moat %s\b|^\.BI? \"?%s\b" % (cmd, cmd),
                             "moat.8 does not document `moat %s`" % cmd)
        for opt in sorted(opts):
            self.assertFound(text, r"(?<![\w-])%s(?![\w-])" % re.escape(opt),
                             "moat.8 does not mention %s" % opt)

    def test_every_config_key_is_in_moat_yaml_5(self):
        keys = loader_keys()
        self.assertIn("shutdown_grace", keys["config.c"])
        self.assertIn("clients", keys["tenants.c"])
        text = page_words(PAGES["moat.yaml.5"])
        for src, names in keys.items():
            for k in names:
                with self.subTest(key=k, source=src):
                    self.assertFound(text, r"(?<![\w.-])%s(?![\w-])" % re.escape(k),
                                     "moat.yaml.5 does not document %s (config/%s)" % (k, src))

    def test_every_top_level_key_has_its_own_entry(self):
        src = open(os.path.join(ROOT, "config", "config.c"), encoding="utf-8").read()
        top = [t for t in re.findall(r"names\[K_N\]\s*=\s*\{([^}]*)\}", src)
               if '"shutdown_grace"' in t]
        self.assertEqual(len(top), 1)
        text = page_words(PAGES["moat.yaml.5"])
        for k in re.findall(r'"([a-z_]+)"', top[0]):
            with self.subTest(key=k):
                self.assertFound(text, r"\.TP\n\.B %s\n" % k,
                                 "moat.yaml.5 has no .TP entry for the top-level key %s" % k)

    def test_versions_agree(self):
        """The pages' .TH lines and debian/changelog name the version moat
        reports."""
        version = re.match(r"moat (\S+) ", run_moat("--version").stdout).group(1)
        for page, path in PAGES.items():
            with self.subTest(page=page):
                self.assertIn('"moat %s"' % version, open(path, encoding="utf-8").read())
        changelog = open(os.path.join(ROOT, "debian", "changelog"), encoding="utf-8").readline()
        self.assertRegex(changelog, r"^moat \(%s-\d+\) " % re.escape(version))

    def test_packaged_config_is_the_default(self):
        """packaging/moat.yaml (/etc/moat/moat.yaml) compiles to the same
        policy as an empty file: the embedded default, filtering off."""
        with TempDir() as d:
            empty = write_config(d, "", "empty.yaml")
            want = run_moat("check", empty)
            shipped = os.path.join(ROOT, "packaging", "moat.yaml")
            got = run_moat("check", shipped)
        self.assertEqual(want.returncode, 0, want.stderr)
        self.assertEqual(got.returncode, 0, got.stderr)
        self.assertEqual(got.stdout.replace(shipped, "FILE"), want.stdout.replace(empty, "FILE"))
        self.assertIn("filtering  off", got.stdout)


if __name__ == "__main__":
    unittest.main()
