"""End-to-end: the command line of SPEC §1 (check, explain, --version, --help,
usage errors, exit statuses), on the real binary."""
import os
import re
import socket
import unittest

from moatlib import TempDir, run_moat, write_config

POLICY = """\
mode: enforce
proxy:
  tls_ports: [443]
  http_ports: [80]
allow:
  - api.openai.com
  - "*.githubusercontent.com"
  - {host: github.com, ports: [22, 443]}
  - 203.0.113.0/24
  - {cidr: "2001:db8::/32", ports: ["8000-8100"]}
  - {host: internal.example, ports: [5432]}
"""


class CliTest(unittest.TestCase):
    def setUp(self):
        self._tmp = TempDir()
        self.dir = self._tmp.__enter__()
        self.policy = write_config(self.dir, POLICY)

    def tearDown(self):
        self._tmp.__exit__(None, None, None)

    # --- version, help, usage ---------------------------------------------

    def test_version(self):
        r = run_moat("--version")
        self.assertEqual(r.returncode, 0)
        # The version, the git revision ("unknown" outside git; "+" marks
        # uncommitted changes), then the libraries moat runs with.
        self.assertRegex(r.stdout,
                         r"\Amoat \d+\.\d+\.\d+ \(git (?:[0-9a-f]{12}\+?|unknown)\)\n"
                         r"libuv \d+\.\d+\.\d+, c-ares \d+\.\d+\.\d+, ldns \d+\.\d+\.\d+, "
                         r"libyaml \d+\.\d+\.\d+\n\Z")

    def test_help_ends_with_a_newline(self):
        r = run_moat("--help")
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.endswith("\n") and not r.stdout.endswith("\n\n\n"))

    # --- start-up errors name the file or address and what to do ---------------

    def test_start_on_missing_config_says_what_to_do(self):
        path = os.path.join(self.dir, "nope.yaml")
        r = run_moat("-c", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn(path + ": cannot read: No such file or directory", r.stderr)
        self.assertIn("moat: not started: cannot read the config %s; give a readable file "
                      "with -c FILE" % path, r.stderr)

    def test_start_on_bad_config_names_file_and_check(self):
        p = write_config(self.dir, "dns:\n  timout: 2s\n", "bad.yaml")
        r = run_moat("-c", p)
        self.assertEqual(r.returncode, 1)
        self.assertIn(p + ":2:3: unknown key", r.stderr)
        self.assertIn("moat: not started: fix the errors in %s above (moat check %s lists them)"
                      % (p, p), r.stderr)

    def test_start_on_port_in_use_names_address_and_file(self):
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            held.listen()
            port = held.getsockname()[1]
            p = write_config(self.dir, "dns: {listen: []}\nproxy: {tls: [\"127.0.0.1:%d\"], "
                             "http: []}\n" % port, "busy.yaml")
            r = run_moat("-c", p)
        self.assertEqual(r.returncode, 2)
        self.assertIn("proxy: listen 127.0.0.1:%d (tls): Address already in use" % port, r.stderr)
        self.assertIn("proxy failed to start; stopping: free the address or socket named above",
                      r.stderr)
        self.assertIn("or change it in " + p, r.stderr)

    def test_help_shows_commands_and_default_config(self):
        r = run_moat("--help")
        self.assertEqual(r.returncode, 0)
        for word in ("moat check FILE", "moat explain FILE TARGET [PORT]", "dns:", "listen"):
            self.assertIn(word, r.stdout)

    def test_unknown_argument_is_usage_error(self):
        r = run_moat("--frobnicate")
        self.assertEqual(r.returncode, 1)
        self.assertIn("unknown argument", r.stderr)

    def test_check_needs_a_file(self):
        self.assertEqual(run_moat("check").returncode, 1)

    def test_explain_needs_target(self):
        self.assertEqual(run_moat("explain", self.policy).returncode, 1)

    def test_config_flag_needs_file(self):
        self.assertEqual(run_moat("-c").returncode, 1)

    def test_workers_flag_needs_auto_or_a_number(self):
        for args in (["--workers"], ["--workers", "0"], ["--workers", "257"],
                     ["--workers", "two"], ["--workers", "2x"], ["--workers=-1"],
                     ["--workers", "2", "--workers", "2"]):
            with self.subTest(args=args):
                r = run_moat(*args)
                self.assertEqual(r.returncode, 1)
                self.assertIn("--workers needs one value: auto or a number from 1 to 256",
                              r.stderr)

    # --- check ----------------------------------------------------------------

    def test_check_valid_prints_summary(self):
        r = run_moat("check", self.policy)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("OK", r.stdout)
        self.assertIn("6 rules", r.stdout)
        self.assertIn("api.openai.com", r.stdout)
        self.assertIn("*.githubusercontent.com", r.stdout)
        # one screen: the summary stays short
        self.assertLess(len(r.stdout.splitlines()), 40)

    def test_check_empty_allow_is_air_gap(self):
        p = write_config(self.dir, "allow: []\n", "gap.yaml")
        r = run_moat("check", p)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("air gap", r.stdout)

    def test_check_no_allow_is_filtering_off(self):
        p = write_config(self.dir, "mode: enforce\n", "off.yaml")
        r = run_moat("check", p)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("filtering  off", r.stdout)

    def test_check_reports_every_error_with_position(self):
        bad = (
            "mode: enforce\n"               # 1
            "dns:\n"                        # 2
            "  timeout: 2\n"                # 3: bare number
            "  colour: blue\n"              # 4: unknown key
            "allow:\n"                      # 5
            "  - \"*.com\"\n"               # 6: wildcard over a TLD
            "  - 300.1.2.3\n"               # 7: not an address
            "  - {host: a.example, ports: [0]}\n"  # 8: port 0
            "  - 10.0.0.0/33\n"             # 9: bad prefix length
        )
        p = write_config(self.dir, bad, "bad.yaml")
        r = run_moat("check", p)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, "")
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        positions = []
        for l in lines:
            m = re.match(re.escape(p) + r":(\d+):(\d+): (.+)$", l)
            self.assertIsNotNone(m, "not FILE:LINE:COL: message: %r" % l)
            positions.append(int(m.group(1)))
        for line in (3, 4, 6, 7, 8, 9):
            self.assertIn(line, positions, r.stderr)

    def test_check_missing_file(self):
        r = run_moat("check", os.path.join(self.dir, "nope.yaml"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("nope.yaml", r.stderr)

    def test_check_yaml_syntax_error_has_position(self):
        p = write_config(self.dir, "allow:\n  - [unclosed\n", "syntax.yaml")
        r = run_moat("check", p)
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, re.escape(p) + r":\d+:\d+: ")

    # --- explain --------------------------------------------------------------

    def explain(self, *args):
        return run_moat("explain", self.policy, *args)

    def test_explain_exact_name_allowed_lists_ports(self):
        r = self.explain("api.openai.com")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("allowed", r.stdout)
        self.assertIn("80, 443", r.stdout)
        self.assertRegex(r.stdout, r"moat\.yaml:6:\d+")

    def test_explain_case_and_trailing_dot(self):
        self.assertEqual(self.explain("API.OpenAI.com.", "443").returncode, 0)

    def test_explain_blocked_name(self):
        r = self.explain("evil.com")
        self.assertEqual(r.returncode, 3)
        self.assertIn("not-allowed", r.stdout)
        self.assertIn("sinkholed", r.stdout)

    def test_explain_wildcard(self):
        self.assertEqual(self.explain("raw.githubusercontent.com", "443").returncode, 0)
        self.assertEqual(self.explain("a.b.githubusercontent.com", "443").returncode, 0)
        self.assertEqual(self.explain("githubusercontent.com").returncode, 3)
        self.assertEqual(self.explain("notgithubusercontent.com").returncode, 3)

    def test_explain_ports(self):
        self.assertEqual(self.explain("github.com", "22").returncode, 0)
        r = self.explain("github.com", "80")
        self.assertEqual(r.returncode, 3)
        self.assertIn("port-not-allowed", r.stdout)
        self.assertEqual(self.explain("api.openai.com", "22").returncode, 3)

    def test_explain_non_tls_port_notes_dns_requirement(self):
        r = self.explain("internal.example", "5432")
        self.assertEqual(r.returncode, 0)
        self.assertIn("resolved", r.stdout)

    def test_explain_addresses(self):
        self.assertEqual(self.explain("203.0.113.9", "9999").returncode, 0)
        self.assertEqual(self.explain("203.0.114.1").returncode, 3)
        self.assertEqual(self.explain("2001:db8::1", "8050").returncode, 0)
        self.assertEqual(self.explain("[2001:db8::1]", "8050").returncode, 0)
        r = self.explain("2001:db8::1", "443")
        self.assertEqual(r.returncode, 3)
        self.assertIn("port-not-allowed", r.stdout)

    def test_explain_refused_ranges(self):
        for target in ("127.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "224.0.0.1"):
            r = self.explain(target, "80")
            self.assertEqual(r.returncode, 3, target)
            self.assertIn("refused-range", r.stdout, target)
        # SPEC §2.5: an IPv6 form is refused as the IPv4 address it carries,
        # and explain says which.
        for target, v4 in (("64:ff9b::a9fe:a9fe", "169.254.169.254"),
                           ("2002:7f00:1::", "127.0.0.1"), ("::127.0.0.1", "127.0.0.1")):
            r = self.explain(target, "80")
            self.assertEqual(r.returncode, 3, target)
            self.assertIn("refused-range", r.stdout, target)
            self.assertIn("carries the IPv4 address %s" % v4, r.stdout, target)

    def test_explain_bad_port_and_bad_address(self):
        self.assertEqual(self.explain("github.com", "0").returncode, 1)
        self.assertEqual(self.explain("github.com", "65536").returncode, 1)
        self.assertEqual(self.explain("github.com", "https").returncode, 1)
        self.assertEqual(self.explain("300.1.2.3").returncode, 1)

    def test_explain_bad_name_is_blocked(self):
        r = self.explain("a..b.com")
        self.assertEqual(r.returncode, 3)
        self.assertIn("bad-name", r.stdout)

    def test_explain_filtering_off_and_air_gap(self):
        off = write_config(self.dir, "mode: enforce\n", "off.yaml")
        r = run_moat("explain", off, "anything.example", "443")
        self.assertEqual(r.returncode, 0)
        self.assertIn("filter-off", r.stdout)
        # refused ranges hold with filtering off too (SPEC §2.4)
        self.assertEqual(run_moat("explain", off, "127.0.0.1", "80").returncode, 3)
        gap = write_config(self.dir, "allow: []\n", "gap.yaml")
        self.assertEqual(run_moat("explain", gap, "api.openai.com", "443").returncode, 3)
        self.assertEqual(run_moat("explain", gap, "203.0.113.1", "443").returncode, 3)

    def test_explain_audit_mode_says_so(self):
        p = write_config(self.dir, "mode: audit\nallow: []\n", "audit.yaml")
        r = run_moat("explain", p, "evil.com")
        self.assertEqual(r.returncode, 3)
        self.assertIn("audit", r.stdout)

    def test_explain_bad_config(self):
        p = write_config(self.dir, "allow: [\"*\"]\n", "star.yaml")
        r = run_moat("explain", p, "evil.com")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"star\.yaml:1:\d+: ")


    # --- tenants (SPEC §2.7) ------------------------------------------------

    TENANTS = """\
allow: []
lists: {py: [pypi.org, 198.51.100.0/24]}
tenants:
  - name: box-1
    clients: [10.77.0.0/16]
    users: [{name: alice, password: s3cret}]
    allow: [{list: py}, api.openai.com]
  - name: box-2
    clients: [10.77.5.0/24, "fd00:77::/64"]
    mode: audit
    allow: [github.com]
include: ["more/*.yaml"]
"""

    def tenants(self):
        os.makedirs(os.path.join(self.dir, "more"), exist_ok=True)
        write_config(os.path.join(self.dir, "more"),
                     "name: box-3\nclients: [10.78.0.1]\nallow: [\"*.example.org\"]\n",
                     "box-3.yaml")
        return write_config(self.dir, self.TENANTS, "tenants.yaml")

    def test_check_lists_tenants_and_lists(self):
        p = self.tenants()
        r = run_moat("check", p)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"list +py: 2 rules, compiled once, used by 1 allow list")
        self.assertIn("tenants    3", r.stdout)
        self.assertRegex(r.stdout, r"tenant +box-1 \(.*tenants\.yaml:\d+\): clients "
                                   r"10\.77\.0\.0/16; 1 rule; lists py; proxy users")
        self.assertRegex(r.stdout, r"tenant +box-2 .*clients 10\.77\.5\.0/24, fd00:77::/64; "
                                   r"1 rule; mode audit")
        self.assertRegex(r.stdout, r"tenant +box-3 \(.*more/box-3\.yaml:1\)")

    def test_explain_as_a_client_or_user_decides_as_its_tenant(self):
        p = self.tenants()
        r = run_moat("explain", p, "pypi.org", "443", "--client", "10.77.1.1")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("as tenant box-1", r.stdout)
        self.assertIn("tenants.yaml:2:", r.stdout)  # the list's rule, in the config
        # The longest prefix: 10.77.5.9 is box-2's (audit), which lacks pypi.org.
        r = run_moat("explain", p, "pypi.org", "443", "--client=10.77.5.9")
        self.assertEqual(r.returncode, 3)
        self.assertIn("as tenant box-2", r.stdout)
        self.assertIn("mode: audit", r.stdout)
        r = run_moat("explain", p, "github.com", "--client", "fd00:77::9")
        self.assertEqual(r.returncode, 0)
        # An included tenant's rule is shown in its own file.
        r = run_moat("explain", p, "a.example.org", "443", "--client", "10.78.0.1")
        self.assertEqual(r.returncode, 0)
        self.assertIn("more/box-3.yaml:3:", r.stdout)
        # No tenant: the top-level allow ([]).
        r = run_moat("explain", p, "pypi.org", "--client", "192.0.2.1")
        self.assertEqual(r.returncode, 3)
        self.assertIn("in no tenant's clients", r.stdout)
        r = run_moat("explain", p, "198.51.100.7", "22", "--user", "alice")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("as tenant box-1", r.stdout)
        r = run_moat("explain", p, "pypi.org", "--user", "mallory")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no tenant has a user 'mallory'", r.stderr)
        for bad in (["--client", "nope"], ["--client", "10.0.0.1", "--user", "alice"],
                    ["--client"]):
            r = run_moat("explain", p, "pypi.org", *bad)
            self.assertEqual(r.returncode, 1, bad)


if __name__ == "__main__":
    unittest.main(verbosity=2)
