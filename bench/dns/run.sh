#!/usr/bin/env bash
# bench/dns/run.sh BUILD_DIR: moat's DNS server side by side with dnsmasq,
# unbound and dnsdist (issue 3, Performance), and with the physical limit: a
# recvmmsg/sendmmsg UDP echo server (udpecho.c, row "echo (limit)", issue 15).
# See bench/dns/README.md.
#
# Every server runs single-threaded (dnsdist: one UDP listener thread) on
# 127.0.0.1, each on its own port, all pinned to core 0; the load generators
# (dnsperf and our dnsload) and the upstream run on core 1. Loopback only:
# nothing ever asks the machine's resolver. Bounded: BENCH_SECONDS (default 8)
# per cell, 3 loads x 2 tools x 7 servers, about 6 minutes in all.
#
# Environment: BENCH_SECONDS, BENCH_PORT_BASE (default 15300), BENCH_INFLIGHT
# (dnsload queries in flight, default 256), BENCH_SERVERS (default
# "echo moat moat-info dnsmasq unbound dnsdist dnsdist-mmsg"), BENCH_TOOLS
# (default "dnsload dnsperf"). dnsdist runs twice: as shipped, and with its
# recvmmsg/sendmmsg frontend turned on (setUDPMultipleMessagesVectorSize),
# the one peer that batches system calls as moat does. moat runs twice: at
# log.level warn (row moat: the DNS path alone) and at the shipped default
# log.level info into a log file (row moat-info: every blocked decision
# logged, as operators run it). BENCH_MOAT_BASE=PATH: another moat binary
# (an older build, to measure a change) for the rows moat-base and
# moat-base-info, which BENCH_SERVERS must then name.
set -euo pipefail

BUILD=${1:-build-bench}
cd "$(dirname "$0")/../.."
ROOT=$PWD
. "$ROOT/bench/lib.sh"
MOAT=$ROOT/$BUILD/moat
DNSLOAD=$ROOT/$BUILD/bench/dns/dnsload
UDPECHO=$ROOT/$BUILD/bench/dns/udpecho
SECS=${BENCH_SECONDS:-7}
BASE=${BENCH_PORT_BASE:-15300}
INFLIGHT=${BENCH_INFLIGHT:-256}
SERVERS=${BENCH_SERVERS:-echo moat moat-info dnsmasq unbound dnsdist dnsdist-mmsg}
TOOLS=${BENCH_TOOLS:-dnsload dnsperf}
SERVER_CPU=0
LOAD_CPU=1
UP_PORT=$((BASE + 10))
declare -A PORT=([moat]=$((BASE + 1)) [dnsmasq]=$((BASE + 2)) [unbound]=$((BASE + 3))
                 [dnsdist]=$((BASE + 4)) [dnsdist-mmsg]=$((BASE + 5)) [echo]=$((BASE + 6))
                 [moat-info]=$((BASE + 7)) [moat-base]=$((BASE + 8)) [moat-base-info]=$((BASE + 9)))
MOAT_BASE=${BENCH_MOAT_BASE:-}
N_ALLOWED=64 # names in the cache-hit set (each asked A and AAAA)

die() { echo "bench/dns: $*" >&2; exit 1; }

[ -x "$MOAT" ] || die "no $MOAT (build it: meson setup $BUILD --buildtype=release && ninja -C $BUILD)"
[ -x "$DNSLOAD" ] || die "no $DNSLOAD (ninja -C $BUILD)"
[ -x "$UDPECHO" ] || die "no $UDPECHO (ninja -C $BUILD)"
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (servers on core $SERVER_CPU, load on core $LOAD_CPU)"

# ---- packages ------------------------------------------------------------------
tools/need-pkgs dnsperf dnsmasq-base unbound dnsdist util-linux

# ---- scratch dir, process bookkeeping ---------------------------------------------
WORK=$(mktemp -d /tmp/moat-bench-dns.XXXXXX)
declare -A PID=()
UP_PID=
cleanup() {
  # shellcheck disable=SC2086 # UP_PID: empty or one pid
  bench_stop_pids "${PID[@]}" $UP_PID
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ROOT_USER=()
[ "$(id -u)" -eq 0 ] && ROOT_USER=(--user=root)

# ---- query files (the same for every server and tool) -------------------------------
# (bench/lib.sh) blocked, allowed (N_ALLOWED names: cache hits once warmed), mix 90/10.
bench_dns_queries "$WORK" $N_ALLOWED

# ---- the upstream: authoritative for allowed.test (core 1) ---------------------------
mapfile -t up_args < <(bench_dns_upstream_args $N_ALLOWED)
taskset -c $LOAD_CPU dnsmasq --keep-in-foreground --no-resolv --no-hosts --port=$UP_PORT \
  --listen-address=127.0.0.1 --bind-interfaces "${ROOT_USER[@]}" --pid-file= --cache-size=0 \
  --local=/allowed.test/ "${up_args[@]}" >"$WORK/upstream.log" 2>&1 &
UP_PID=$!

# ---- the servers (core 0) ---------------------------------------------------------------
cat >"$WORK/moat.yaml" <<EOF
dns:
  listen: ["127.0.0.1:${PORT[moat]}"]
  upstream: ["127.0.0.1:$UP_PORT"]
  cache_size: 10000
proxy:
  tls: ["127.0.0.1:$((BASE + 21))"]
  http: ["127.0.0.1:$((BASE + 22))"]
allow: ["*.allowed.test"]
log: {format: text, level: warn}
EOF
# The shipped default (packaging/moat.yaml): text at info, here into a file
# as with log.file under /var/log/moat. Emptied after each cell.
sed -e "s/${PORT[moat]}/${PORT[moat-info]}/" -e "s/$((BASE + 21))/$((BASE + 23))/" \
  -e "s/$((BASE + 22))/$((BASE + 24))/" \
  -e "s|^log: .*|log: {format: text, level: info, file: \"$WORK/moat-info.decisions\"}|" \
  "$WORK/moat.yaml" >"$WORK/moat-info.yaml"
for v in moat moat-info; do
  sed -e "s/${PORT[$v]}/${PORT[${v/moat/moat-base}]}/" -e "s/$((BASE + 21))/$((BASE + 31))/" \
    -e "s/$((BASE + 22))/$((BASE + 32))/" -e "s/$((BASE + 23))/$((BASE + 33))/" \
    -e "s/$((BASE + 24))/$((BASE + 34))/" -e "s/moat-info.decisions/moat-base-info.decisions/" \
    "$WORK/$v.yaml" >"$WORK/${v/moat/moat-base}.yaml"
done

bench_unbound_conf "$WORK" "${PORT[unbound]}" $UP_PORT >"$WORK/unbound.conf"
bench_dnsdist_conf "${PORT[dnsdist]}" $UP_PORT 0 >"$WORK/dnsdist.conf"
bench_dnsdist_conf "${PORT[dnsdist-mmsg]}" $UP_PORT 64 >"$WORK/dnsdist-mmsg.conf"

start_server() { # name
  local n=$1 port=${PORT[$1]}
  case $n in
  moat | moat-info)
    # One worker: this table is the one-core comparison (bench/workers has
    # the workers table).
    taskset -c $SERVER_CPU "$MOAT" -c "$WORK/$n.yaml" --workers 1 >"$WORK/$n.log" 2>&1 &
    ;;
  moat-base | moat-base-info)
    [ -x "$MOAT_BASE" ] || die "$n needs BENCH_MOAT_BASE (a moat binary)"
    taskset -c $SERVER_CPU "$MOAT_BASE" -c "$WORK/$n.yaml" >"$WORK/$n.log" 2>&1 &
    ;;
  echo)
    taskset -c $SERVER_CPU "$UDPECHO" 127.0.0.1 "$port" 64 >"$WORK/echo.log" 2>&1 &
    ;;
  dnsmasq)
    taskset -c $SERVER_CPU dnsmasq --keep-in-foreground --no-resolv --no-hosts --port="$port" \
      --listen-address=127.0.0.1 --bind-interfaces "${ROOT_USER[@]}" --pid-file= \
      --cache-size=10000 --dns-forward-max=1000 --server="/allowed.test/127.0.0.1#$UP_PORT" \
      --address=/blocked.test/# >"$WORK/dnsmasq.log" 2>&1 &
    ;;
  unbound)
    taskset -c $SERVER_CPU unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 &
    ;;
  dnsdist | dnsdist-mmsg)
    taskset -c $SERVER_CPU dnsdist --supervised --disable-syslog -C "$WORK/$n.conf" \
      >"$WORK/$n.log" 2>&1 &
    ;;
  esac
  PID[$n]=$!
}

probe() { bench_dns_probe "$DNSLOAD" "$@"; } # port file: answered within 5 s

probe $UP_PORT "$WORK/allowed.txt" || die "the upstream dnsmasq did not answer: $(cat "$WORK/upstream.log")"
for s in $SERVERS; do
  start_server "$s"
done
for s in $SERVERS; do
  probe "${PORT[$s]}" "$WORK/blocked.txt" ||
    die "$s did not answer on 127.0.0.1:${PORT[$s]}: $(tail -5 "$WORK/$s.log")"
  # Warm the cache (every allowed question once, a few at a time), and check
  # that every server gives every load NOERROR answers.
  for f in allowed blocked; do
    out=$(taskset -c $LOAD_CPU "$DNSLOAD" -s 127.0.0.1 -p "${PORT[$s]}" -f "$WORK/$f.txt" \
      -n $((2 * N_ALLOWED)) -c 1 -q 8 -T 1000)
    case $out in
    *" lost=0 "*"not_noerror=0") ;;
    *) die "$s: warm-up with $f.txt: $out" ;;
    esac
  done
done

cpu_ticks() { # pid: utime+stime of the whole process (all threads)
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}
rss_mb() {
  awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"
}
core_ticks() { # cpu: "busy idle" jiffies of that core (busy counts irq, softirq, steal)
  awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat
}
core_busy_pct() { # "busy idle" before, after
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ")
    db = y[1] - x[1]; di = y[2] - x[2]; printf "%.0f", (db + di > 0) ? 100 * db / (db + di) : 0 }'
}
HZ=$(getconf CLK_TCK)

# A busy machine makes every number here noise: say so up front.
c0=$(core_ticks $SERVER_CPU); c1=$(core_ticks $LOAD_CPU); sleep 1
idle_note="core $SERVER_CPU $(core_busy_pct "$c0" "$(core_ticks $SERVER_CPU)")% and core $LOAD_CPU $(core_busy_pct "$c1" "$(core_ticks $LOAD_CPU)")% busy with the servers idle"
echo "bench/dns: before the run: $idle_note" >&2

# ---- the cells ---------------------------------------------------------------------------
RESULTS=$WORK/results.tsv
for v in moat-info moat-base-info; do # the warm-up's lines
  [ -z "${PID[$v]:-}" ] || : >"$WORK/$v.decisions"
done
: >"$RESULTS"
for load in blocked allowed mix; do
  for tool in $TOOLS; do
    for s in $SERVERS; do
      pid=${PID[$s]}
      port=${PORT[$s]}
      kill -0 "$pid" 2>/dev/null || die "$s exited: $(tail -5 "$WORK/$s.log")"
      t0=$(cpu_ticks "$pid")
      k0=$(core_ticks $SERVER_CPU)
      case $tool in
      dnsload)
        out=$(taskset -c $LOAD_CPU "$DNSLOAD" -s 127.0.0.1 -p "$port" -f "$WORK/$load.txt" \
          -t "$SECS" -c 8 -q "$INFLIGHT" -b 32 -T 1000)
        qps=$(sed -n 's/.* qps=\([0-9.]*\).*/\1/p' <<<"$out")
        answered=$(sed -n 's/.* answered=\([0-9]*\).*/\1/p' <<<"$out")
        p50=$(sed -n 's/.* p50_us=\([0-9]*\).*/\1/p' <<<"$out")
        p99=$(sed -n 's/.* p99_us=\([0-9]*\).*/\1/p' <<<"$out")
        lost=$(sed -n 's/.* lost=\([0-9]*\).*/\1/p' <<<"$out")
        bad=$(sed -n 's/.* not_noerror=\([0-9]*\).*/\1/p' <<<"$out")
        ;;
      dnsperf)
        # -v prints every answer's latency: the only way to p50/p99 with
        # dnsperf 2.10. Its cost lands on core 1, not on the server.
        taskset -c $LOAD_CPU dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/$load.txt" -l "$SECS" \
          -c 8 -q 500 -T 1 -t 1 -v >"$WORK/dnsperf.out" 2>&1 || true
        qps=$(sed -n 's/.*Queries per second: *\([0-9.]*\).*/\1/p' "$WORK/dnsperf.out")
        answered=$(sed -n 's/.*Queries completed: *\([0-9]*\).*/\1/p' "$WORK/dnsperf.out")
        lost=$(sed -n 's/.*Queries lost: *\([0-9]*\).*/\1/p' "$WORK/dnsperf.out")
        bad=$(awk '$1 == ">" && NF >= 5 && $2 != "NOERROR" { n++ } END { print n + 0 }' \
          "$WORK/dnsperf.out")
        read -r p50 p99 < <(awk '$1 == ">" && NF >= 5 { printf "%d\n", $NF * 1e6 }' \
          "$WORK/dnsperf.out" | sort -n | awk '{ v[NR] = $1 }
          END { if (!NR) { print "0 0"; exit }
                printf "%d %d\n", v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1] }')
        ;;
      esac
      t1=$(cpu_ticks "$pid")
      logged=
      if [ "$s" = moat-info ] || [ "$s" = moat-base-info ]; then
        # Lines the cell wrote (the writer thread may still hold a few).
        sleep 0.2
        logged=" logged $(wc -l <"$WORK/$s.decisions")"
        : >"$WORK/$s.decisions"
      fi
      busy=$(core_busy_pct "$k0" "$(core_ticks $SERVER_CPU)")
      rss=$(rss_mb "$pid")
      [ -n "$qps" ] && [ "${answered:-0}" -gt 0 ] || die "$tool against $s ($load): no result: $out"
      cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$answered" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }')
      printf '%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$load" "$tool" "$s" "$qps" "$p50" \
        "$p99" "$cpu" "$rss" "$lost" "$bad" "$busy" >>"$RESULTS"
      printf 'bench/dns: %-7s %-7s %-12s %8.0f QPS p50 %s us p99 %s us lost %s%s\n' "$load" "$tool" \
        "$s" "$qps" "$p50" "$p99" "$lost" "$logged" >&2
    done
  done
done

# ---- the table -------------------------------------------------------------------------------
# Peers: every server but moat's rows and the echo limit. moat's rows get two
# ratios: to the echo server (the kernel's floor on this machine, same run)
# and to the best peer.
awk -F'\t' -v secs="$SECS" -v idle_note="$idle_note" '
  function name(l) { return l == "blocked" ? "blocked A/AAAA" : l == "allowed" ? "cache hits" : "90/10 mix" }
  function ismoat(s) { return s ~ /^moat/ }
  function shown(s) { return s == "echo" ? "echo (limit)" : s }
  { row[NR] = $0; k = $1 SUBSEP $2
    if (!ismoat($3) && $3 != "echo") {
      if ($4 > best[k]) { best[k] = $4; bestn[k] = $3 }
      if (!(k in bestp99) || $6 < bestp99[k]) bestp99[k] = $6 }
    if ($3 == "echo") { echo[k] = $4; echocpu[k] = $7 }
    if (ismoat($3)) { mq[$3, k] = $4; mp99[$3, k] = $6; mlost[$3, k] = $9 } }
  END {
    print "| load | tool | server | QPS | p50 µs | p99 µs | CPU µs/query | RSS MB | core 0 busy | × echo | echo CPU ÷ CPU | × best peer |"
    print "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for (i = 1; i <= NR; i++) {
      split(row[i], f, "\t"); k = f[1] SUBSEP f[2]
      re = (ismoat(f[3]) && (k in echo) && echo[k] > 0) ? sprintf("%.2f×", f[4] / echo[k]) : ""
      rc = (ismoat(f[3]) && (k in echo) && f[7] > 0) ? sprintf("%.2f×", echocpu[k] / f[7]) : ""
      rb = (ismoat(f[3]) && (k in best) && best[k] > 0) ? sprintf("%.2f× (%s)", f[4] / best[k], bestn[k]) : ""
      note = (f[9] > 0 || f[10] > 0) ? sprintf(" (lost %d, non-NOERROR %d)", f[9], f[10]) : ""
      printf "| %s | %s | %s | %d%s | %d | %d | %s | %s | %s%% | %s | %s | %s |\n", name(f[1]), f[2], shown(f[3]), f[4], note, f[5], f[6], f[7], f[8], f[11], re, rc, rb
    }
    print ""
    for (m = 1; m <= 2; m++) { mn = m == 1 ? "moat" : "moat-info"
      for (i = 1; i <= 2; i++) { k = (i == 1 ? "blocked" : "allowed") SUBSEP "dnsload"
        mk = mn SUBSEP k
        if (!(mk in mq) || !(k in best)) continue
        split(k, kk, SUBSEP)
        printf "%s, %s, dnsload: %s× echo, %.2f× the best peer (%s), lost %d, p99 %d µs vs best peer p99 %d µs (%s)\n",
          mn, name(kk[1]), ((k in echo) && echo[k] > 0 ? sprintf("%.2f", mq[mk] / echo[k]) : "?"),
          mq[mk] / best[k], bestn[k], mlost[mk], mp99[mk], bestp99[k],
          (mp99[mk] < bestp99[k] ? "lower than every peer" : "NOT lower than every peer") } }
    printf "(%s s per cell; servers pinned to core 0, load on core 1; dnsperf cells are capped by dnsperf; %s)\n", secs, idle_note
  }' "$RESULTS"
