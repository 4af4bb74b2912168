"""bench/tcp/table.py RESULTS CONNS BULK HOLD ROUNDS [TUNNELS KA KA_PER]: the
markdown tables of a bench/tcp run (run.sh writes RESULTS: tab-separated rows

    rate  CONFIG conn/s p50_us p99_us cpu_us_per_conn
    bulk  CONFIG GB/s   -      -      cpu_s_per_GB
    hold  CONFIG rss_kb_per_conn_before rss_kb_per_conn_after fds_before fds_after procs
    trate, tbulk, thold: the same for the explicit proxies (a tunnel per
          connection, set up by CONNECT or SOCKS5)
    check CONFIG refused_another_name refused_another_sni (1 or 0)
    ka    CONFIG req/s  p50_us p99_us cpu_us_per_request
).

A configuration has one rate, bulk and ka row per round (run.sh alternates
the configurations, ROUNDS times): its cells are the medians over the
rounds, and the CPU cells show the lowest and highest round as well.

Three tables:
1. the SNI proxies (issue 4): moat's rows get their ratio to the best peer
   (sniproxy, haproxy, haproxy-splice: the best value of each column,
   highest rate, least CPU, least memory) and to direct; moat-off's to the
   bare splice relay as well;
2. the explicit proxies (issue 14): every row gets its ratio to the best
   peer (squid, squid-peek, tinyproxy, dante, microsocks); moat's rows
   also to squid (CPU per tunnel) and, for bulk, to moat's transparent
   listener (moat-off's bulk row);
3. the keep-alive HTTP load: CPU per request, each moat row against plain
   splicing (moat-off: the transparent listener with filtering off never
   reads a head) and, with a baseline build (BENCH_MOAT_BASE), against the
   same listener of that build."""
import statistics
import sys

PEERS = ["sniproxy", "haproxy", "haproxy-splice"]
ORDER = ["direct", "relay", "moat-off", "moat", "moat-base", "sniproxy", "haproxy", "haproxy-splice", "uring"]
TPEERS = ["squid", "squid-peek", "tinyproxy", "dante", "microsocks"]
TORDER = ["moat-connect", "moat-socks"] + TPEERS
KORDER = ["direct", "relay", "moat-off", "moat", "moat-base", "moat-tp", "moat-tp-base",
          "moat-connect"]


def num(s):
    try:
        return float(s)
    except ValueError:
        return None


def span(vals, fmt):
    """" (lowest–highest)" of a cell's rounds, when there are several."""
    if len(vals) < 2:
        return ""
    return (" (" + fmt + "–" + fmt + ")") % (min(vals), max(vals))


def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return "%.2f×" % (a / b)


def load_results(path):
    rows = {}
    with open(path) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            rows.setdefault(cols[0], {}).setdefault(cols[1], []).append(
                [num(c) for c in cols[2:]])

    def median(vals):
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    # Each configuration's row: the median of every column over its rounds.
    data = {load: {cfg: [median(col) for col in zip(*rs)] for cfg, rs in by_cfg.items()}
            for load, by_cfg in rows.items()}
    spread = {load: {cfg: [r[3] for r in rs if len(r) > 3 and r[3] is not None]
                     for cfg, rs in by_cfg.items()}
              for load, by_cfg in rows.items() if not load.endswith("hold")}
    return data, spread


def best(data, load, col, low, peers):
    vals = [(data.get(load, {})[p][col], p) for p in peers
            if p in data.get(load, {}) and data[load][p][col] is not None]
    if not vals:
        return None, None
    return (min if low else max)(vals)


def sni_table(data, spread, conns, bulk, hold, rounds):
    out = ["| load | config | rate | p50 | p99 | proxy CPU | RSS/conn | fds/conn | "
           "moat ratio (to best peer; to direct) |",
           "|---|---|---|---|---|---|---|---|---|"]
    med = ", median of %s rounds" % rounds if rounds != "1" else ""
    label = {"rate": "(a) %s conns, ClientHello → reply%s" % (conns, med),
             "bulk": "(b) one stream, %.1f GB%s" % (float(bulk) / 1e9, med),
             "hold": "(c) %s held, before → after hello" % hold}
    for load in ("rate", "bulk", "hold"):
        for cfg in ORDER:
            r = data.get(load, {}).get(cfg)
            if not r:
                continue
            cells = [label[load], cfg] + [""] * 7
            if load == "rate":
                rate, p50, p99, cpu = r[:4]
                cells[2] = "%.0f conn/s" % rate
                cells[3] = "%.0f µs" % p50
                cells[4] = "%.0f µs" % p99
                cells[5] = "%.1f µs/conn" % cpu if cpu is not None else "–"
                cells[5] += span(spread["rate"][cfg], "%.0f")
                brate, bp = best(data, "rate", 0, False, PEERS)
                bcpu, bc = best(data, "rate", 3, True, PEERS)
                d = data["rate"].get("direct", [None])[0]
                ref = data["rate"].get("relay")
            elif load == "bulk":
                rate, cpu = r[0], r[3]
                cells[2] = "%.2f GB/s" % rate
                cells[5] = "%.2f s/GB" % cpu if cpu is not None else "–"
                cells[5] += span(spread["bulk"][cfg], "%.2f")
                brate, bp = best(data, "bulk", 0, False, PEERS)
                bcpu, bc = best(data, "bulk", 3, True, PEERS)
                d = data["bulk"].get("direct", [None])[0]
                ref = data["bulk"].get("relay")
                ref = [ref[0], None, None, ref[3]] if ref else None
            else:
                rb, ra, fb, fa = r[:4]
                cells[6] = "%.2f → %.2f KB" % (rb, ra)
                cells[7] = "%.2f → %.2f" % (fb, fa)
            if cfg in ("moat", "moat-base", "moat-off") and load != "hold":
                parts = ["rate %s, CPU %s best peer (%s; %s)" %
                         (ratio(rate, brate), ratio(cpu, bcpu), bp, bc),
                         "rate %s direct" % ratio(rate, d)]
                if cfg == "moat-off" and ref:
                    parts.insert(0, "rate %s, CPU %s relay" % (ratio(rate, ref[0]),
                                                              ratio(cpu, ref[3])))
                cells[8] = "; ".join(parts)
            elif cfg in ("moat", "moat-off"):
                bb, pb = best(data, "hold", 0, True, PEERS)
                ba, pa = best(data, "hold", 1, True, PEERS)
                hp = data["hold"].get("haproxy")
                parts = ["RSS %s → %s best peer (%s; %s)" % (ratio(rb, bb), ratio(ra, ba), pb, pa)]
                if hp:
                    parts.append("%s → %s haproxy" % (ratio(rb, hp[0]), ratio(ra, hp[1])))
                cells[8] = "; ".join(parts)
            out.append("| " + " | ".join(cells) + " |")
    return out


def tunnel_table(data, spread, tunnels, bulk, hold, rounds):
    out = ["| load | config | rate | p50 | p99 | proxy CPU | RSS/tunnel | fds/tunnel | "
           "ratio (to best peer; moat: to squid, to the transparent listener) |",
           "|---|---|---|---|---|---|---|---|---|"]
    checks = data.get("check", {})
    if checks:
        # Which tunnels each one refused (run.sh's refusals), first.
        yes = {1.0: "refused", 0.0: "let through"}
        for cfg in TORDER:
            c = checks.get(cfg)
            if c:
                out.append("| refuses: another name; the allowed name with another SNI | %s | "
                           "%s; %s |  |  |  |  |  |  |" % (cfg, yes.get(c[0], "?"),
                                                          yes.get(c[1], "?")))
    med = ", median of %s rounds" % rounds if rounds != "1" else ""
    label = {"trate": "(e) %s tunnels: handshake, ClientHello → reply%s" % (tunnels, med),
             "tbulk": "(f) one stream through a tunnel, %.1f GB%s" % (float(bulk) / 1e9, med),
             "thold": "(g) %s tunnels held, before → after hello" % hold}
    squid = data.get("trate", {}).get("squid")
    transparent = data.get("bulk", {}).get("moat-off")
    for load in ("trate", "tbulk", "thold"):
        for cfg in TORDER:
            r = data.get(load, {}).get(cfg)
            if not r:
                continue
            cells = [label[load], cfg] + [""] * 7
            moat = cfg.startswith("moat")
            if load in ("trate", "tbulk"):
                rate, p50, p99, cpu = r[:4]
                brate, bp = best(data, load, 0, False, TPEERS)
                bcpu, bc = best(data, load, 3, True, TPEERS)
                if load == "trate":
                    cells[2] = "%.0f tunnels/s" % rate
                    cells[3] = "%.0f µs" % p50
                    cells[4] = "%.0f µs" % p99
                    cells[5] = "%.1f µs/tunnel" % cpu if cpu is not None else "–"
                    cells[5] += span(spread[load][cfg], "%.0f")
                else:
                    cells[2] = "%.2f GB/s" % rate
                    cells[5] = "%.2f s/GB" % cpu if cpu is not None else "–"
                    cells[5] += span(spread[load][cfg], "%.2f")
                parts = ["rate %s, CPU %s best peer (%s; %s)" %
                         (ratio(rate, brate), ratio(cpu, bcpu), bp, bc)]
                if moat and load == "trate" and squid:
                    parts.append("CPU %s squid" % ratio(cpu, squid[3]))
                if moat and load == "tbulk" and transparent:
                    parts.append("rate %s, CPU %s transparent (moat-off)" %
                                 (ratio(rate, transparent[0]), ratio(cpu, transparent[3])))
                cells[8] = "; ".join(parts)
            else:
                rb, ra, fb, fa = r[:4]
                procs = r[4] if len(r) > 4 else None
                cells[6] = "%.2f → %.2f KB" % (rb, ra)
                cells[7] = "%.2f → %.2f" % (fb, fa)
                if procs and procs > 1:
                    cells[7] += " (%.0f processes)" % procs
                bb, pb = best(data, "thold", 0, True, TPEERS)
                ba, pa = best(data, "thold", 1, True, TPEERS)
                cells[8] = "RSS %s → %s best peer (%s; %s)" % (ratio(rb, bb), ratio(ra, ba), pb, pa)
            out.append("| " + " | ".join(cells) + " |")
    return out


def ka_table(data, spread, ka, ka_per, rounds):
    out = ["| load | config | requests/s | p50 | p99 | proxy CPU | "
           "ratio (CPU to plain splicing; to the baseline build) |",
           "|---|---|---|---|---|---|---|"]
    med = ", median of %s rounds" % rounds if rounds != "1" else ""
    label = "(d) %s HTTP requests, %s per kept-alive connection%s" % (ka, ka_per, med)
    ka_rows = data.get("ka", {})
    splice = ka_rows.get("moat-off")
    for cfg in KORDER:
        r = ka_rows.get(cfg)
        if not r:
            continue
        rate, p50, p99, cpu = r[:4]
        cells = [label, cfg, "%.0f req/s" % rate, "%.0f µs" % p50, "%.0f µs" % p99,
                 ("%.2f µs/req" % cpu if cpu is not None else "–") +
                 span(spread["ka"][cfg], "%.2f"), ""]
        parts = []
        if cfg.startswith("moat") and cfg != "moat-off" and splice:
            parts.append("CPU %s moat-off" % ratio(cpu, splice[3]))
        base = ka_rows.get(cfg + "-base")
        if base:
            parts.append("CPU %s %s-base" % (ratio(cpu, base[3]), cfg))
        cells[6] = "; ".join(parts)
        out.append("| " + " | ".join(cells) + " |")
    return out


def main():
    path, conns, bulk, hold, rounds = sys.argv[1:6]
    tunnels, ka, ka_per = (sys.argv[6:9] + ["?", "?", "?"])[:3]
    data, spread = load_results(path)
    tables = []
    if any(load in data for load in ("rate", "bulk", "hold")):
        tables.append(sni_table(data, spread, conns, bulk, hold, rounds))
    if any(load in data for load in ("trate", "tbulk", "thold")):
        tables.append(tunnel_table(data, spread, tunnels, bulk, hold, rounds))
    if "ka" in data:
        tables.append(ka_table(data, spread, ka, ka_per, rounds))
    print("\n\n".join("\n".join(t) for t in tables))


main()
