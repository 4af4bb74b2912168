"""bench/tcp/table.py RESULTS CONNS BULK HOLD ROUNDS: the markdown table of a
bench/tcp run (run.sh writes RESULTS: tab-separated rows

    rate  CONFIG conn/s p50_us p99_us cpu_us_per_conn
    bulk  CONFIG GB/s   -      -      cpu_s_per_GB
    hold  CONFIG rss_kb_per_conn_before rss_kb_per_conn_after fds_before fds_after
).

A configuration has one rate and one bulk row per round (run.sh alternates
the configurations, ROUNDS times): its cells are the medians over the
rounds, and the CPU cells show the lowest and highest round as well.

moat's rows get their ratio to the best peer (sniproxy, haproxy,
haproxy-splice: the best value of each column, highest rate, least CPU,
least memory) and to direct; moat-off's to the bare splice relay as well."""
import statistics
import sys

PEERS = ["sniproxy", "haproxy", "haproxy-splice"]
ORDER = ["direct", "relay", "moat-off", "moat", "sniproxy", "haproxy", "haproxy-splice", "uring"]


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


def main():
    path, conns, bulk, hold, rounds = sys.argv[1:6]
    rows = {"rate": {}, "bulk": {}, "hold": {}}
    with open(path) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            rows[cols[0]].setdefault(cols[1], []).append([num(c) for c in cols[2:]])

    def median(vals):
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    # Each configuration's row: the median of every column over its rounds.
    data = {load: {cfg: [median(col) for col in zip(*rs)] for cfg, rs in by_cfg.items()}
            for load, by_cfg in rows.items()}
    spread = {load: {cfg: [r[3] for r in rs if r[3] is not None] for cfg, rs in by_cfg.items()}
              for load, by_cfg in rows.items() if load != "hold"}

    def best(load, col, low):
        vals = [(data[load][p][col], p) for p in PEERS
                if p in data[load] and data[load][p][col] is not None]
        if not vals:
            return None, None
        return (min if low else max)(vals)

    out = ["| load | config | rate | p50 | p99 | proxy CPU | RSS/conn | fds/conn | "
           "moat ratio (to best peer; to direct) |",
           "|---|---|---|---|---|---|---|---|---|"]
    med = ", median of %s rounds" % rounds if rounds != "1" else ""
    label = {"rate": "(a) %s conns, ClientHello → reply%s" % (conns, med),
             "bulk": "(b) one stream, %.1f GB%s" % (float(bulk) / 1e9, med),
             "hold": "(c) %s held, before → after hello" % hold}
    for load in ("rate", "bulk", "hold"):
        for cfg in ORDER:
            r = data[load].get(cfg)
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
                brate, bp = best("rate", 0, False)
                bcpu, bc = best("rate", 3, True)
                d = data["rate"].get("direct", [None])[0]
                ref = data["rate"].get("relay")
            elif load == "bulk":
                rate, cpu = r[0], r[3]
                cells[2] = "%.2f GB/s" % rate
                cells[5] = "%.2f s/GB" % cpu if cpu is not None else "–"
                cells[5] += span(spread["bulk"][cfg], "%.2f")
                brate, bp = best("bulk", 0, False)
                bcpu, bc = best("bulk", 3, True)
                d = data["bulk"].get("direct", [None])[0]
                ref = data["bulk"].get("relay")
                ref = [ref[0], None, None, ref[3]] if ref else None
            else:
                rb, ra, fb, fa = r[:4]
                cells[6] = "%.2f → %.2f KB" % (rb, ra)
                cells[7] = "%.2f → %.2f" % (fb, fa)
            if cfg in ("moat", "moat-off") and load != "hold":
                parts = ["rate %s, CPU %s best peer (%s; %s)" %
                         (ratio(rate, brate), ratio(cpu, bcpu), bp, bc),
                         "rate %s direct" % ratio(rate, d)]
                if cfg == "moat-off" and ref:
                    parts.insert(0, "rate %s, CPU %s relay" % (ratio(rate, ref[0]),
                                                              ratio(cpu, ref[3])))
                cells[8] = "; ".join(parts)
            elif cfg in ("moat", "moat-off"):
                bb, pb = best("hold", 0, True)
                ba, pa = best("hold", 1, True)
                hp = data["hold"].get("haproxy")
                parts = ["RSS %s → %s best peer (%s; %s)" % (ratio(rb, bb), ratio(ra, ba), pb, pa)]
                if hp:
                    parts.append("%s → %s haproxy" % (ratio(rb, hp[0]), ratio(ra, hp[1])))
                cells[8] = "; ".join(parts)
            out.append("| " + " | ".join(cells) + " |")
    print("\n".join(out))


main()
