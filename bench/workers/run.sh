#!/usr/bin/env bash
# bench/workers/run.sh BUILD_DIR: moat with `workers: 1` and `workers: 2`
# side by side with its peers at 1 and 2 threads (issue 15, Workers), in one
# run: DNS (blocked names and cache hits, dnsload) against unbound
# (num-threads, so-reuseport) and dnsdist (UDP listener threads, reusePort),
# and TCP (a ClientHello per connection, tcpload) against haproxy (nbthread).
# See bench/workers/README.md.
#
# Two kinds of cells: "same CPU" (every server pinned to core 0, the load on
# core 1: workers 2 share one core, so their CPU per query or connection
# shows any contention) and "both cores" (servers, load, upstream and
# responders all on cores 0,1: what a second worker buys). Every server runs
# for the whole run and is moved between the two with `taskset -a -p`.
#
# Runs in network and mount namespaces of its own (re-executes itself under
# `unshare --net --mount`): loopback and 198.18.0.0/15 addresses only, the
# DNS upstream is a dnsmasq the script starts there; every process is killed
# at exit. Bounded: BENCH_ROUNDS (default 3) rounds of BENCH_SECONDS (default
# 6) per cell, 27 cells a round: about 9 minutes.
#
# Environment: BENCH_SECONDS, BENCH_ROUNDS, BENCH_LOADS (default "dns tcp"),
# BENCH_MODES (default "same both"), BENCH_INFLIGHT (dnsload queries in
# flight, default 256), BENCH_SOCKETS (dnsload sockets, default 16: the
# kernel spreads them over the SO_REUSEPORT sockets by hash), BENCH_PAR
# (tcpload connections in parallel, default 32), BENCH_DNS_SAME /
# BENCH_DNS_BOTH / BENCH_TCP_SAME / BENCH_TCP_BOTH (the servers of each kind
# of cell; by default a one-thread peer runs "same CPU" only: on both cores
# it has nothing more to use).
set -euo pipefail

BUILD=${1:-build-bench}
cd "$(dirname "$0")/../.."
ROOT=$PWD
SELF=$ROOT/bench/workers/run.sh
. "$ROOT/bench/lib.sh"
MOAT=$ROOT/$BUILD/moat
DNSLOAD=$ROOT/$BUILD/bench/dns/dnsload
TCPBIN=$ROOT/$BUILD/bench/tcp
SECS=${BENCH_SECONDS:-6}
ROUNDS=${BENCH_ROUNDS:-3}
LOADS=${BENCH_LOADS:-dns tcp}
MODES=${BENCH_MODES:-same both}
INFLIGHT=${BENCH_INFLIGHT:-256}
SOCKETS=${BENCH_SOCKETS:-16}
PAR=${BENCH_PAR:-32}
DNS_SAME=${BENCH_DNS_SAME:-moat-1 moat-2 unbound-1 unbound-2 dnsdist-1 dnsdist-2}
DNS_BOTH=${BENCH_DNS_BOTH:-moat-1 moat-2 unbound-2 dnsdist-2}
TCP_SAME=${BENCH_TCP_SAME:-moat-1 moat-2 haproxy-1 haproxy-2}
TCP_BOTH=${BENCH_TCP_BOTH:-moat-1 moat-2 haproxy-2}
NETNS_ENV=MOAT_WORKERSB_NETNS

die() { echo "bench/workers: $*" >&2; exit 1; }
has_load() { [[ " $LOADS " == *" $1 "* ]]; }

# ---- outside: checks, packages, then the namespace ------------------------------------
if [ -z "${!NETNS_ENV:-}" ]; then
  [ "$(id -u)" -eq 0 ] || die "needs root (network and mount namespaces)"
  for b in "$MOAT" "$DNSLOAD" "$TCPBIN/tcpload" "$TCPBIN/tcpresp"; do
    [ -x "$b" ] || die "no $b (meson setup $BUILD --buildtype=release && ninja -C $BUILD)"
  done
  [ "$(nproc)" -ge 2 ] || die "needs 2 cores"
  tools/need-pkgs dnsmasq-base unbound dnsdist haproxy iproute2 util-linux procps python3 curl
  exec unshare --net --mount -- env "$NETNS_ENV=1" "$SELF" "$BUILD"
fi

# ---- inside the namespace ------------------------------------------------------------------
ip link set lo up
HZ=$(getconf CLK_TCK)
N_ALLOWED=64
UP_PORT=53 # dnsmasq: the DNS servers' upstream, and moat's resolver for the proxy
BASE=15400
declare -A PORT=([moat-1]=$((BASE + 1)) [moat-2]=$((BASE + 2)) [unbound-1]=$((BASE + 3))
                 [unbound-2]=$((BASE + 4)) [dnsdist-1]=$((BASE + 5)) [dnsdist-2]=$((BASE + 6)))
declare -A METRICS=([moat-1]=$((BASE + 11)) [moat-2]=$((BASE + 12)))
# TCP: each proxy its own listener address; the responder answers on port
# 443 of every address, each proxy dials its own target.
NAME=allowed.test
LPORT=8443
declare -A LISTEN=([moat-1]=198.18.0.10 [moat-2]=198.18.0.11 [haproxy-1]=198.18.0.12
                   [haproxy-2]=198.18.0.13)
declare -A TARGET=([moat]=198.18.1.2 [haproxy-1]=198.18.1.4 [haproxy-2]=198.18.1.5)
for a in "${LISTEN[@]}" "${TARGET[@]}"; do ip addr add "$a/32" dev lo; done
# Short connections by the hundred thousand: a wide port range, few TIME_WAIT
# sockets kept (as bench/tcp).
sysctl -q -w net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1 \
  net.ipv4.tcp_max_tw_buckets=256
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/moat-bench-workers.XXXXXX)
PIDS=()      # everything started, killed at exit
LOAD_PIDS=() # the load side (upstream, responder): moved with the load
declare -A PID=()
cleanup() {
  bench_stop_pids "${PIDS[@]}"
  if [ -n "${BENCH_KEEP:-}" ]; then echo "bench/workers: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'trap - EXIT; cleanup; exit 130' INT TERM

# ---- the upstream (allowed.test for DNS and the proxy), query files, hello ----------------
bench_dns_queries "$WORK" $N_ALLOWED
mapfile -t up_args < <(bench_dns_upstream_args $N_ALLOWED)
# allowed.test itself: the proxies' target (moat resolves it; AAAA answered
# at once, NODATA, by --local).
taskset -c 1 dnsmasq --keep-in-foreground --no-resolv --no-hosts --port=$UP_PORT \
  --listen-address=127.0.0.1 --bind-interfaces --user=root --pid-file= --cache-size=0 \
  --local=/allowed.test/ "${up_args[@]}" "--host-record=$NAME,${TARGET[moat]},3600" \
  >"$WORK/upstream.log" 2>&1 &
PIDS+=($!) LOAD_PIDS+=($!)

HELLO=$WORK/hello.bin
python3 - "$HELLO" "$NAME" <<'EOF'
import ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(inc, out, server_hostname=sys.argv[2])
try:
    obj.do_handshake()
except ssl.SSLWantReadError:
    pass
open(sys.argv[1], "wb").write(out.read())
EOF
if has_load tcp; then
  taskset -c 1 "$TCPBIN/tcpresp" 443 "$(stat -c %s "$HELLO")" >"$WORK/tcpresp.out" 2>&1 &
  PIDS+=($!) LOAD_PIDS+=($!)
  bench_wait_port "${TARGET[moat]}" 443 || die "tcpresp: nothing on port 443"
fi

probe() { bench_dns_probe "$DNSLOAD" "$@"; } # port file: answered within 5 s
probe $UP_PORT "$WORK/allowed.txt" || die "the upstream dnsmasq did not answer: $(cat "$WORK/upstream.log")"

# ---- the servers (started on core 0) -----------------------------------------------------
# moat-N: one process per worker count, serving the DNS and the tls listener.
moat_yaml() { # N
  local s=moat-$1
  cat <<EOF
workers: $1
dns:
  listen: ["127.0.0.1:${PORT[$s]}"]
  upstream: ["127.0.0.1:$UP_PORT"]
  cache_size: 10000
proxy:
  transparent: []
  tls: ["${LISTEN[$s]}:$LPORT"]
  http: []
  peek_timeout: 60s
  max_connections: 20000
metrics: {listen: "127.0.0.1:${METRICS[$s]}"}
allow: ["$NAME", "*.$NAME"]
log: {format: text, level: warn}
EOF
}
haproxy_cfg() { # N
  local s=haproxy-$1
  cat <<EOF
global
    nbthread $1
    maxconn 7000
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend fe
    bind ${LISTEN[$s]}:$LPORT
    tcp-request inspect-delay 60s
    tcp-request content accept if { req.ssl_hello_type 1 }
    use_backend allowed if { req.ssl_sni -i $NAME }
backend allowed
    server s1 ${TARGET[$s]}:443
EOF
}

SERVERS=()
has_load dns && SERVERS+=(moat-1 moat-2 unbound-1 unbound-2 dnsdist-1 dnsdist-2)
has_load tcp && SERVERS+=(haproxy-1 haproxy-2)
has_load dns || SERVERS+=(moat-1 moat-2)
for s in "${SERVERS[@]}"; do
  n=${s##*-}
  f=$WORK/$s
  case $s in
  moat-*)
    moat_yaml "$n" >"$f.yaml"
    taskset -c 0 "$MOAT" -c "$f.yaml" >"$f.log" 2>&1 &
    ;;
  unbound-*)
    bench_unbound_conf "$WORK" "${PORT[$s]}" $UP_PORT "$n" >"$f.conf"
    taskset -c 0 unbound -d -c "$f.conf" >"$f.log" 2>&1 &
    ;;
  dnsdist-*)
    bench_dnsdist_conf "${PORT[$s]}" $UP_PORT 0 "$n" >"$f.conf"
    taskset -c 0 dnsdist --supervised --disable-syslog -C "$f.conf" >"$f.log" 2>&1 &
    ;;
  haproxy-*)
    haproxy_cfg "$n" >"$f.cfg"
    taskset -c 0 /usr/sbin/haproxy -db -f "$f.cfg" >"$f.log" 2>&1 &
    ;;
  esac
  PID[$s]=$!
  PIDS+=($!)
done

for s in "${SERVERS[@]}"; do
  case $s in
  haproxy-*) bench_wait_port "${LISTEN[$s]}" $LPORT || die "$s: nothing on ${LISTEN[$s]}:$LPORT: $(tail -5 "$WORK/$s.log")" ;;
  moat-*)
    has_load tcp && { bench_wait_port "${LISTEN[$s]}" $LPORT || die "$s: no tls listener: $(tail -5 "$WORK/$s.log")"; }
    ;;
  esac
  if [ -n "${PORT[$s]:-}" ] && has_load dns; then
    probe "${PORT[$s]}" "$WORK/blocked.txt" ||
      die "$s did not answer on 127.0.0.1:${PORT[$s]}: $(tail -5 "$WORK/$s.log")"
    # Warm every cache (the allowed set SOCKETS times over SOCKETS sockets:
    # every worker's or thread's cache sees each name), and check that
    # every answer is NOERROR.
    for q in allowed blocked; do
      out=$(taskset -c 1 "$DNSLOAD" -s 127.0.0.1 -p "${PORT[$s]}" -f "$WORK/$q.txt" \
        -n $((2 * N_ALLOWED * SOCKETS)) -c "$SOCKETS" -q "$SOCKETS" -T 1000)
      case $out in
      *" lost=0 "*"not_noerror=0") ;;
      *) die "$s: warm-up with $q.txt: $out" ;;
      esac
    done
  fi
done

# ---- measuring ----------------------------------------------------------------------------
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime+stime, every thread
# moat's per-worker counter SERIES as "n0 n1 ...".
worker_counts() { # server series
  curl -s --max-time 5 "http://127.0.0.1:${METRICS[$1]}/metrics" |
    awk -v m="$2" 'index($0, m "{worker=\"") == 1 { split($0, a, "\""); v[a[2]] = $NF; if (a[2] + 1 > n) n = a[2] + 1 }
      END { for (i = 0; i < n; i++) printf "%s%d", (i ? " " : ""), v[i] }'
}
share_delta() { # "before" "after": "d0 d1 ..."
  awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " ")
    for (i = 1; i <= n; i++) printf "%s%d", (i > 1 ? " " : ""), y[i] - x[i] }'
}
core_busy() { awk '$1 ~ /^cpu[01]$/ { printf "%s=%d ", $1, $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
pin() { # cpus pid...: every thread of each
  local c=$1 p
  shift
  for p in "$@"; do taskset -a -p -c "$c" "$p" >/dev/null; done
}
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<" $2"; } # KEY LINE

RESULTS=$WORK/results.tsv
: >"$RESULTS"
# results: kind mode server round rate cpu_us p99 lost share(d0,d1,...)

dns_cell() { # mode load server round
  local mode=$1 load=$2 s=$3 round=$4 pid=${PID[$3]} t0 t1 out w0="" w1="" share=""
  kill -0 "$pid" 2>/dev/null || die "$s exited: $(tail -5 "$WORK/$s.log")"
  [ "$s" = moat-2 ] && w0=$(worker_counts "$s" moat_worker_dns_queries_total)
  t0=$(cpu_ticks "$pid")
  # Both cores shared: dnsload sleeps when nothing moved (-w) instead of
  # busy-polling a core, so a server with two threads can have both.
  local wait=()
  [ "$mode" = both ] && wait=(-w)
  out=$(taskset -c "$LOAD_CPUS" "$DNSLOAD" -s 127.0.0.1 -p "${PORT[$s]}" -f "$WORK/$load.txt" \
    -t "$SECS" -c "$SOCKETS" -q "$INFLIGHT" -b 32 -T 1000 "${wait[@]}")
  t1=$(cpu_ticks "$pid")
  [ "$s" = moat-2 ] && { w1=$(worker_counts "$s" moat_worker_dns_queries_total); share=$(share_delta "$w0" "$w1"); }
  local answered qps
  answered=$(field answered "$out")
  qps=$(field qps "$out")
  [ -n "$qps" ] && [ "${answered:-0}" -gt 0 ] || die "$s ($load, $mode): no result: $out"
  [ "$(field not_noerror "$out")" = 0 ] || die "$s ($load, $mode): answers not NOERROR: $out"
  printf 'dns-%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$load" "$mode" "$s" "$round" "$qps" \
    "$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$answered" 'BEGIN { printf "%.3f", d * 1e6 / hz / n }')" \
    "$(field p99_us "$out")" "$(field lost "$out")" "$share" >>"$RESULTS"
  printf 'bench/workers: round %s %-4s dns %-7s %-9s %8.0f QPS p99 %s us lost %s%s\n' "$round" "$mode" \
    "$load" "$s" "$qps" "$(field p99_us "$out")" "$(field lost "$out")" "${share:+ per worker $share}" >&2
}

declare -A TCP_RATE=() # last rate seen per server and mode: sizes the next cell
tcp_cell() { # mode server round
  local mode=$1 s=$2 round=$3 pid=${PID[$2]} t0 t1 out w0="" w1="" share="" n
  kill -0 "$pid" 2>/dev/null || die "$s exited: $(tail -5 "$WORK/$s.log")"
  # Warm-up, not counted: it also sizes the cell to about SECS seconds.
  out=$(timeout 60 taskset -c "$LOAD_CPUS" "$TCPBIN/tcpload" rate "${LISTEN[$s]}" $LPORT "$HELLO" \
    2000 "$PAR") || die "$s ($mode): warm-up: $out"
  local r=${TCP_RATE[$s,$mode]:-$(field rate "$out")}
  n=$(awk -v r="$r" -v t="$SECS" 'BEGIN { n = int(r * t); print (n < 2000 ? 2000 : (n > 2000000 ? 2000000 : n)) }')
  [ "$s" = moat-2 ] && w0=$(worker_counts "$s" moat_worker_connections_total)
  t0=$(cpu_ticks "$pid")
  out=$(timeout 90 taskset -c "$LOAD_CPUS" "$TCPBIN/tcpload" rate "${LISTEN[$s]}" $LPORT "$HELLO" \
    "$n" "$PAR") || die "$s ($mode): rate: $out"
  t1=$(cpu_ticks "$pid")
  [ "$s" = moat-2 ] && { w1=$(worker_counts "$s" moat_worker_connections_total); share=$(share_delta "$w0" "$w1"); }
  TCP_RATE[$s,$mode]=$(field rate "$out")
  local conns
  conns=$(field conns "$out")
  printf 'tcp\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$s" "$round" "$(field rate "$out")" \
    "$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$conns" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')" \
    "$(field p99_us "$out")" "$(field errors "$out")" "$share" >>"$RESULTS"
  printf 'bench/workers: round %s %-4s tcp %-9s %8.0f conn/s p99 %s us errors %s%s\n' "$round" "$mode" \
    "$s" "$(field rate "$out")" "$(field p99_us "$out")" "$(field errors "$out")" "${share:+ per worker $share}" >&2
}

# A busy machine makes every number here noise: say so up front.
b0=$(core_busy)
sleep 1
b1=$(core_busy)
IDLE_NOTE=$(awk -v a="$b0" -v b="$b1" -v hz="$HZ" 'BEGIN { split(a, x, "[ =]"); split(b, y, "[ =]")
  printf "core 0 %.0f%% and core 1 %.0f%% busy with the servers idle", 100 * (y[2] - x[2]) / hz, 100 * (y[4] - x[4]) / hz }')
echo "bench/workers: before the run: $IDLE_NOTE" >&2

for round in $(seq "$ROUNDS"); do
  for mode in $MODES; do
    case $mode in
    same) SERVER_CPUS=0 LOAD_CPUS=1 dns_servers=$DNS_SAME tcp_servers=$TCP_SAME ;;
    both) SERVER_CPUS=0,1 LOAD_CPUS=0,1 dns_servers=$DNS_BOTH tcp_servers=$TCP_BOTH ;;
    *) die "unknown mode $mode (same, both)" ;;
    esac
    pin "$SERVER_CPUS" "${PID[@]}"
    pin "$LOAD_CPUS" "${LOAD_PIDS[@]}"
    if has_load dns; then
      for load in blocked allowed; do
        for s in $dns_servers; do dns_cell "$mode" "$load" "$s" "$round"; done
      done
    fi
    if has_load tcp; then
      for s in $tcp_servers; do tcp_cell "$mode" "$s" "$round"; done
    fi
  done
done

# ---- the tables ------------------------------------------------------------------------------
echo
python3 - "$RESULTS" "$SECS" "$ROUNDS" "$IDLE_NOTE" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
secs, rounds, idle = sys.argv[2], sys.argv[3], sys.argv[4]
cells = {}
for kind, mode, srv, rnd, rate, cpu, p99, lost, share in rows:
    c = cells.setdefault((kind, mode, srv), {"rate": [], "cpu": [], "p99": [], "lost": 0, "share": None})
    c["rate"].append(float(rate))
    c["cpu"].append(float(cpu))
    c["p99"].append(float(p99 or 0))
    c["lost"] += int(lost or 0)
    if share:
        d = [int(x) for x in share.split()]
        c["share"] = d if c["share"] is None else [a + b for a, b in zip(c["share"], d)]
med = statistics.median
order = ["moat-1", "moat-2", "unbound-1", "unbound-2", "dnsdist-1", "dnsdist-2", "haproxy-1", "haproxy-2"]
label = {"moat-1": "moat workers 1", "moat-2": "moat workers 2", "unbound-1": "unbound 1 thread",
         "unbound-2": "unbound 2 threads", "dnsdist-1": "dnsdist 1 listener", "dnsdist-2": "dnsdist 2 listeners",
         "haproxy-1": "haproxy nbthread 1", "haproxy-2": "haproxy nbthread 2"}
titles = {"dns-blocked": ("DNS, blocked A/AAAA (dnsload)", "QPS", "CPU µs/query"),
          "dns-allowed": ("DNS, cache hits (dnsload)", "QPS", "CPU µs/query"),
          "tcp": ("TCP, hello → reply, SNI allowed (tcpload)", "conn/s", "CPU µs/conn")}
modes = {"same": "same CPU", "both": "both cores"}
verdicts = []
for kind in ["dns-blocked", "dns-allowed", "tcp"]:
    srvs = [s for s in order if any((kind, m, s) in cells for m in modes)]
    if not srvs:
        continue
    title, unit, cpuu = titles[kind]
    print(f"### {title}\n")
    print("| | " + " | ".join(label[s] for s in srvs) + " |")
    print("|---|" + "---:|" * len(srvs))
    for m, mn in modes.items():
        if not any((kind, m, s) in cells for s in srvs):
            continue
        base = cells.get((kind, m, "moat-1"))
        def line(name, f):
            out = []
            for s in srvs:
                c = cells.get((kind, m, s))
                out.append(f(c) if c else "–")
            print(f"| {mn}: {name} | " + " | ".join(out) + " |")
        line(unit, lambda c: f"{med(c['rate']):.0f}" + (f" (lost {c['lost']})" if c["lost"] else ""))
        if base:
            line(f"{unit} × moat 1", lambda c: f"{med(c['rate']) / med(base['rate']):.2f}×")
        line(cpuu, lambda c: f"{med(c['cpu']):.2f}")
        if base:
            line(f"CPU × moat 1", lambda c: f"{med(c['cpu']) / med(base['cpu']):.2f}×")
        line("p99 µs", lambda c: f"{med(c['p99']):.0f}")
        def sh(c):
            if not c["share"] or not sum(c["share"]):
                return ""
            t = sum(c["share"])
            return " / ".join(f"w{i} {100 * v / t:.0f}%" for i, v in enumerate(c["share"]))
        line("per worker", sh)
        m1, m2 = cells.get((kind, m, "moat-1")), cells.get((kind, m, "moat-2"))
        if m1 and m2:
            if m == "same":
                r = med(m2["cpu"]) / med(m1["cpu"])
                verdicts.append(f"{title}, same CPU: workers 2 CPU per unit {r:.2f}× workers 1 (target ≤ 1.05×: {'met' if r <= 1.05 else 'NOT met'})")
            else:
                r = med(m2["rate"]) / med(m1["rate"])
                verdicts.append(f"{title}, both cores: workers 2 {unit} {r:.2f}× workers 1 (target > 1×: {'met' if r > 1 else 'NOT met'})")
    print()
for v in verdicts:
    print(v)
print(f"(medians of {rounds} rounds, {secs} s per cell; same CPU: servers on core 0, load on core 1; "
      f"both cores: servers, load, upstream and responder on cores 0,1; per worker: moat's "
      f"moat_worker_*_total over every round; {idle})")
EOF
