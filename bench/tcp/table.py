"""bench/tcp/table.py RESULTS CONNS BULK HOLD: the markdown table of a
bench/tcp run (run.sh writes RESULTS: tab-separated rows

    rate  CONFIG conn/s p50_us p99_us cpu_us_per_conn
    bulk  CONFIG GB/s   -      -      cpu_s_per_GB
    hold  CONFIG rss_kb_per_conn_before rss_kb_per_conn_after fds_before fds_after
).

moat's rows get their ratio to the best peer (sniproxy, haproxy,
haproxy-splice: the best value of each column, highest rate, least CPU,
least memory) and to direct; moat-off's to the bare splice relay as well."""
import sys

PEERS = ["sniproxy", "haproxy", "haproxy-splice"]
ORDER = ["direct", "relay", "moat-off", "moat", "sniproxy", "haproxy", "haproxy-splice"]


def num(s):
    try:
        return float(s)
    except ValueError:
        return None


def ratio(a, b):
    if a is None or b in (None, 0):
        return "–"
    return "%.2f×" % (a / b)


def main():
    path, conns, bulk, hold = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    data = {"rate": {}, "bulk": {}, "hold": {}}
    with open(path) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            data[cols[0]][cols[1]] = [num(c) for c in cols[2:]]

    def best(load, col, low):
        vals = [(data[load][p][col], p) for p in PEERS
                if p in data[load] and data[load][p][col] is not None]
        if not vals:
            return None, None
        return (min if low else max)(vals)

    out = ["| load | config | rate | p50 | p99 | proxy CPU | RSS/conn | fds/conn | "
           "moat ratio (to best peer; to direct) |",
           "|---|---|---|---|---|---|---|---|---|"]
    label = {"rate": "(a) %s conns, ClientHello → reply" % conns,
             "bulk": "(b) one stream, %.1f GB" % (float(bulk) / 1e9),
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
                brate, bp = best("rate", 0, False)
                bcpu, bc = best("rate", 3, True)
                d = data["rate"].get("direct", [None])[0]
                ref = data["rate"].get("relay")
            elif load == "bulk":
                rate, cpu = r[0], r[3]
                cells[2] = "%.2f GB/s" % rate
                cells[5] = "%.2f s/GB" % cpu if cpu is not None else "–"
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
