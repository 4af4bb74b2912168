"""bench/soak/report.py: the table rows and the verdict of bench/soak/run.sh.

  report.py header            the table's header (markdown)
  report.py row SAMPLES       the row of the last sample in SAMPLES
  report.py verdict WORK      the whole report (markdown) from run.sh's scratch
                              dir; exit 0 when every check passed, 1 otherwise

SAMPLES is run.sh's samples.tsv, one line per sample: phase, t, VmRSS kB,
open fds, CPU s, CPU %, DNS answered, TCP ok, held, load errors,
moat_connections_active, moat_log_dropped_lines_total,
moat_dns_cache_entries, DNS sent ("n/a" when /metrics has no such series,
empty before the load starts). The run's parameters come in SOAK_*
environment variables (see run.sh).
"""
import json
import os
import re
import sys

FIELDS = ["phase", "t", "rss_kb", "fds", "cpu_s", "cpu_pct", "dns_ok", "tcp_ok", "held",
          "errors", "active", "dropped", "cache", "dns_sent"]
RSS_TOL_FRAC = 0.05       # RSS flat: the end within 5 % of the baseline ...
RSS_TOL_KB = 2 * 1024     # ... or within 2 MiB, whichever is larger
FD_TOL = 64               # descriptors at the end vs the baseline
FD_AFTER_TOL = 2 * 64 + 8  # after the load: moat's pipe pool keeps up to 64 pipes

HEADER = ("| phase | t (s) | RSS MiB | Δ RSS vs ramp MiB | moat fds | moat CPU s | CPU % "
          "| DNS answered | TCP conns ok | held | load errors | active conns (metrics) "
          "| log lines dropped (metrics) | DNS cache entries (metrics) |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def load_samples(path):
    rows = []
    with open(path) as f:
        for line in f:
            v = line.rstrip("\n").split("\t")
            rows.append(dict(zip(FIELDS, v + [""] * (len(FIELDS) - len(v)))))
    return rows


def mib(kb):
    return int(kb) / 1024


def fmt_row(r, ramp):
    delta = ""
    if ramp is not None and r["phase"] not in ("idle",):
        delta = "%+.1f" % (mib(r["rss_kb"]) - mib(ramp["rss_kb"]))
    cells = [r["phase"], r["t"], "%.1f" % mib(r["rss_kb"]), delta, r["fds"], r["cpu_s"],
             r["cpu_pct"], r["dns_ok"], r["tcp_ok"], r["held"], r["errors"], r["active"],
             r["dropped"], r["cache"]]
    return "| " + " | ".join(c if c != "" else "–" for c in cells) + " |"


def table(rows):
    ramp = next((r for r in rows if r["phase"] == "ramp"), None)
    return "\n".join([HEADER] + [fmt_row(r, ramp) for r in rows])


def kv(line):
    return dict(m.groups() for m in re.finditer(r"(\S+)=(\S+)", line))


def metric(text, name):
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key = line.split()[0]
        if key == name or key.startswith(name + "{"):
            total += float(line.split()[-1])
            found = True
    return int(total) if found else None


def log_counts(path, src):
    """Decision lines from the load's source address, by kind and verdict;
    lines that are not JSON are counted apart (a torn line is a loss)."""
    counts, bad = {}, 0
    prefix = src + ":"
    with open(path, errors="replace") as f:
        for line in f:
            try:
                d = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if not str(d.get("client", "")).startswith(prefix):
                continue
            k = (d.get("kind"), d.get("verdict"))
            counts[k] = counts.get(k, 0) + 1
    return counts, bad


def verdict(work):
    env = os.environ
    conns = int(env["SOAK_CONNS"])
    warmup = int(env.get("SOAK_WARMUP", "30"))
    rows = load_samples(os.path.join(work, "samples.tsv"))
    out = open(os.path.join(work, "soakload.out")).read().splitlines()
    done = kv(next((l for l in out if l.startswith("done ")), ""))
    err_classes = [l[len("error-class "):] for l in out if l.startswith("error-class ")]
    ramp_line = kv(next((l for l in out if l.startswith("held ")), ""))
    try:
        final_metrics = open(os.path.join(work, "metrics-final.txt")).read()
    except OSError:
        final_metrics = ""

    def pair(name):  # "ok/sent" from the done line
        a, _, b = done.get(name, "0/0").partition("/")
        return int(a), int(b)

    checks = []  # (ok: True/False/None for skipped, text)

    # 1. The load saw no error.
    errors = int(done.get("errors", "-1"))
    checks.append((errors == 0 and env.get("SOAK_LOAD_RC") == "0",
                   "load errors: %s (soakload exit %s)%s" % (
                       done.get("errors", "unknown: no done line"), env.get("SOAK_LOAD_RC"),
                       "; " + "; ".join(err_classes) if err_classes else "")))

    # 2. Every held connection came up and was still alive at the end.
    held_up, held_ver = int(done.get("held", "0")), int(done.get("held_verified", "0"))
    checks.append((held_up == conns and held_ver == conns,
                   "held connections: %d of %d spliced after the ramp (%s s), %d still carried "
                   "a round trip at the end" % (held_up, conns, ramp_line.get("secs", "?"),
                                                held_ver)))

    # 3. RSS flat and 4. descriptors stable, against the first sample after the warm-up.
    ramp = next((r for r in rows if r["phase"] == "ramp"), None)
    end = next((r for r in rows if r["phase"] == "end"), None)
    idle = next((r for r in rows if r["phase"] == "idle"), None)
    after = next((r for r in rows if r["phase"] == "after"), None)
    base = next((r for r in rows if r["phase"] == "mix" and r["t"] and int(r["t"]) >= warmup),
                None)
    base_name = "the t=%s s sample" % base["t"] if base else None
    if base is None:
        base, base_name = ramp, "the ramp sample (the run is shorter than the warm-up)"
    if base and end:
        b, e = int(base["rss_kb"]), int(end["rss_kb"])
        tol = max(RSS_TOL_FRAC * b, RSS_TOL_KB)
        mix = [int(r["rss_kb"]) for r in rows if r["phase"] in ("mix", "end")]
        # Operations (queries + connections) between the baseline and the end,
        # for a per-operation figure: a leak shows up as bytes per operation.
        ops = sum(int(r["dns_sent"] or 0) + int(r["tcp_ok"] or 0) for r in (end,)) - \
            sum(int(r["dns_sent"] or 0) + int(r["tcp_ok"] or 0) for r in (base,))
        per_op = " = %+.1f bytes per query or connection over the %d since" % (
            (e - b) * 1024.0 / ops, ops) if ops > 0 else ""
        per_conn = ""
        if idle and conns > 0:
            per_conn = " (%.2f KiB per held connection)" % (
                (int(ramp["rss_kb"]) - int(idle["rss_kb"])) / conns)
        checks.append((abs(e - b) <= tol,
                       "RSS flat: %.1f MiB at the end vs %.1f MiB at %s (%+.2f MiB, %+.1f %%%s; "
                       "allowed ±%.1f MiB); during the mix %.1f–%.1f MiB; %.1f MiB idle, "
                       "%.1f MiB after the ramp%s" % (
                           mib(e), mib(b), base_name, mib(e - b), 100.0 * (e - b) / b, per_op,
                           tol / 1024, mib(min(mix)), mib(max(mix)), mib(idle["rss_kb"]),
                           mib(ramp["rss_kb"]), per_conn)))
        bf, ef = int(base["fds"]), int(end["fds"])
        checks.append((abs(ef - bf) <= FD_TOL,
                       "descriptors stable: %d at the end vs %d at %s (allowed ±%d)" % (
                           ef, bf, base_name, FD_TOL)))
    else:
        checks.append((False, "RSS / descriptors: no ramp or end sample"))
    if idle and after:
        i, a = int(idle["fds"]), int(after["fds"])
        checks.append((a <= i + FD_AFTER_TOL,
                       "descriptors released: %d after the load vs %d idle (allowed +%d for "
                       "the pipe pool)" % (a, i, FD_AFTER_TOL)))

    # 5. Active connections: all the held ones at the end, none after.
    if end and after and end["active"] != "n/a" and after["active"] != "n/a":
        checks.append((int(after["active"]) == 0 and int(end["active"]) >= held_up,
                       "moat_connections_active: %s at the end (held: %d), %s after the load" % (
                           end["active"], held_up, after["active"])))
    else:
        checks.append((None, "moat_connections_active: not in /metrics (skipped)"))

    # 6. Nothing lost from the decision log: one line per query and connection.
    counts, bad = log_counts(os.path.join(work, "moat.log"), env.get("SOAK_SRC", "127.0.0.2"))
    dns_allow = sum(pair(k)[1] for k in ("dns-hit", "dns-miss"))
    dns_block = sum(pair(k)[1] for k in ("dns-blocked-a", "dns-blocked-aaaa",
                                         "dns-blocked-other"))
    tcp_allow = conns + sum(pair(k)[1] for k in ("tls-allowed", "http-allowed"))
    tcp_block = sum(pair(k)[1] for k in ("tls-blocked", "http-blocked", "not-tls"))
    want = {("dns", "allow"): dns_allow, ("dns", "block"): dns_block,
            ("tcp", "allow"): tcp_allow, ("tcp", "block"): tcp_block}
    dropped = metric(final_metrics, "moat_log_dropped_lines_total")
    got_total, want_total = sum(counts.values()), sum(want.values())
    detail = ", ".join("%s %s %d/%d" % (k[0], k[1], counts.get(k, 0), n)
                       for k, n in want.items())
    lost = want_total - got_total
    exact = all(counts.get(k, 0) == n for k, n in want.items()) and got_total == want_total
    checks.append((exact and bad == 0 and (dropped in (0, None)),
                   "decision log: %d of %d lines (%s); %d unparsable; "
                   "moat_log_dropped_lines_total %s" % (
                       got_total, want_total, detail, bad,
                       "n/a" if dropped is None else dropped)
                   + ("" if exact else "; %d lines missing" % lost if lost else
                      "; the split by verdict differs from the load's (connections refused "
                      "or failed: see the load errors)")))

    # 7. A clean stop.
    rc, secs = env.get("SOAK_MOAT_RC"), env.get("SOAK_STOP_SECS")
    checks.append((rc == "0", "SIGTERM: moat exited with status %s after %s s" % (rc, secs)))

    passed = all(ok is not False for ok, _ in checks)
    hits = metric(final_metrics, "moat_dns_cache_hits_total")
    misses = metric(final_metrics, "moat_dns_cache_misses_total")

    p = print
    p("# bench/soak report\n")
    p("- command: `%s` (moat build type %s, tree %s)" % (
        env.get("SOAK_CMD"), env.get("SOAK_BUILDTYPE"), env.get("SOAK_GIT")))
    p("- started %s; %s cores, kernel %s; load average (1/5/15 min) %s before, %s after" % (
        env.get("SOAK_DATE"), env.get("SOAK_NPROC"), env.get("SOAK_KERNEL"),
        env.get("SOAK_LOAD_BEFORE"), env.get("SOAK_LOAD_AFTER")))
    p("- %s min of mixed load at %s DNS queries/s and %s short TCP connections/s, with %d "
      "connections held open through moat's tls listener" % (
          env.get("SOAK_MINUTES"), env.get("SOAK_DNS_QPS"), env.get("SOAK_TCP_CPS"), conns))
    p("- load totals (answered correctly / sent): " + ", ".join(
        "%s %d/%d" % ((k,) + pair(k)) for k in (
            "dns-hit", "dns-miss", "dns-blocked-a", "dns-blocked-aaaa", "dns-blocked-other",
            "tls-allowed", "tls-blocked", "http-allowed", "http-blocked", "not-tls")))
    skipped = int(done.get("dns_skipped", "0")), int(done.get("late_starts", "0"))
    if any(skipped):
        p("- behind the schedule (the load generator or moat did not get the CPU for over a "
          "second): %d queries and %d connections skipped, not made up" % skipped)
    if hits is not None:
        p("- moat's DNS cache over the run: %d hits, %d misses (moat_dns_cache_*_total: the "
          "load's allowed queries and run.sh's one readiness query; the proxy dials through its "
          "own dial cache)" % (hits, misses or 0))
    p()
    p(table(rows))
    p()
    p("## Verdict: %s\n" % ("PASS" if passed else "FAIL"))
    for ok, text in checks:
        p("- %s %s" % ({True: "PASS", False: "FAIL", None: "SKIP"}[ok], text))
    return 0 if passed else 1


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "header":
        print(HEADER)
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "row":
        rows = load_samples(sys.argv[2])
        ramp = next((r for r in rows if r["phase"] == "ramp"), None)
        print(fmt_row(rows[-1], ramp), flush=True)
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "verdict":
        return verdict(sys.argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
