#!/usr/bin/env bash
# bench/dns/profile.sh BUILD_DIR [LOAD...]: moat's user-space instructions per
# DNS query, counted by callgrind (issue 15). LOAD: blocked, allowed (cache
# hits), blocked-info (blocked at log.level info, every decision logged to a
# file); default: all three.
#
# The hardware counters (perf stat -e instructions,cycles) are not exposed in
# the bench VM, and wall-clock figures move with whatever else runs on the
# machine. callgrind counts the instructions moat itself executes (Ir), the
# same from one run to the next whatever the load on the machine, so a cut
# in the user-space path shows as a difference of a few instructions per
# query. The kernel's share (system calls) is not in it: bench/dns/run.sh
# measures that with the rest.
#
# Per load: moat (the same config as run.sh) under callgrind, the cache
# warmed, counters zeroed, PROFILE_QUERIES (default 200000) queries from
# dnsload (8 sockets, 64 in flight, batches of 32, on loopback), counters
# dumped. Prints Ir per answered query and the top functions (inclusive and
# self), and leaves the callgrind files in PROFILE_OUT (default a temporary
# directory, removed) when it is set.
set -euo pipefail

BUILD=${1:-build-bench}
[ $# -gt 0 ] && shift
LOADS=${*:-blocked allowed blocked-info}
cd "$(dirname "$0")/../.."
ROOT=$PWD
. "$ROOT/bench/lib.sh"
MOAT=$ROOT/$BUILD/moat
DNSLOAD=$ROOT/$BUILD/bench/dns/dnsload
N=${PROFILE_QUERIES:-200000}
BASE=${BENCH_PORT_BASE:-15400}
PORT=$((BASE + 1))
UP_PORT=$((BASE + 10))
N_ALLOWED=64

die() { echo "bench/dns/profile: $*" >&2; exit 1; }
[ -x "$MOAT" ] || die "no $MOAT"
[ -x "$DNSLOAD" ] || die "no $DNSLOAD"
tools/need-pkgs valgrind dnsmasq-base

WORK=$(mktemp -d /tmp/moat-profile-dns.XXXXXX)
MOAT_PID=
UP_PID=
cleanup() {
  # shellcheck disable=SC2086 # empty or one pid each
  bench_stop_pids $MOAT_PID $UP_PID
  if [ -n "${PROFILE_OUT:-}" ]; then
    mkdir -p "$PROFILE_OUT" && cp "$WORK"/callgrind.* "$PROFILE_OUT"/ 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ROOT_USER=()
[ "$(id -u)" -eq 0 ] && ROOT_USER=(--user=root)

awk -v seed=42 'BEGIN { srand(seed); for (i = 0; i < 100000; i++)
  printf "b%d-%06x.blocked.test %s\n", i, int(rand() * 16777216), (i % 2 ? "AAAA" : "A") }' \
  >"$WORK/blocked.txt"
awk -v n=$N_ALLOWED 'BEGIN { for (i = 0; i < n; i++) {
  printf "n%d.allowed.test A\n", i; printf "n%d.allowed.test AAAA\n", i } }' >"$WORK/allowed.txt"

up_args=()
for i in $(seq 0 $((N_ALLOWED - 1))); do
  up_args+=("--host-record=n$i.allowed.test,198.18.0.$((i + 1)),2001:db8::$((i + 1)),3600")
done
dnsmasq --keep-in-foreground --no-resolv --no-hosts --port=$UP_PORT --listen-address=127.0.0.1 \
  --bind-interfaces "${ROOT_USER[@]}" --pid-file= --cache-size=0 --local=/allowed.test/ \
  "${up_args[@]}" >"$WORK/upstream.log" 2>&1 &
UP_PID=$!

probe() { # file
  for _ in $(seq 100); do
    "$DNSLOAD" -s 127.0.0.1 -p $PORT -f "$1" -n 1 -c 1 -q 1 -T 500 >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

for load in $LOADS; do
  case $load in
  blocked | allowed) level=warn qfile=$load ;;
  blocked-info) level=info qfile=blocked ;;
  *) die "unknown load $load" ;;
  esac
  cat >"$WORK/moat.yaml" <<EOF
dns:
  listen: ["127.0.0.1:$PORT"]
  upstream: ["127.0.0.1:$UP_PORT"]
  cache_size: 10000
proxy:
  tls: ["127.0.0.1:$((BASE + 21))"]
  http: ["127.0.0.1:$((BASE + 22))"]
allow: ["*.allowed.test"]
log: {format: text, level: $level, file: "$WORK/moat.decisions"}
EOF
  valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.$load" \
    "$MOAT" -c "$WORK/moat.yaml" --workers 1 >"$WORK/moat.log" 2>&1 &
  MOAT_PID=$!
  probe "$WORK/blocked.txt" || die "moat under callgrind did not answer: $(tail -5 "$WORK/moat.log")"
  "$DNSLOAD" -s 127.0.0.1 -p $PORT -f "$WORK/allowed.txt" -n $((2 * N_ALLOWED)) -c 1 -q 8 \
    -T 2000 >/dev/null
  callgrind_control -z "$MOAT_PID" >/dev/null
  out=$("$DNSLOAD" -s 127.0.0.1 -p $PORT -f "$WORK/$qfile.txt" -n "$N" -c 8 -q 64 -b 32 -T 2000)
  callgrind_control -d "$MOAT_PID" >/dev/null
  kill "$MOAT_PID" 2>/dev/null || true
  wait "$MOAT_PID" 2>/dev/null || true
  MOAT_PID=
  answered=$(sed -n 's/.* answered=\([0-9]*\).*/\1/p' <<<"$out")
  [ "${answered:-0}" -gt 0 ] || die "$load: no answers: $out"
  # The dump callgrind_control asked for (part 1), not the one at exit.
  dump=$(ls "$WORK/callgrind.$load".* 2>/dev/null | head -1)
  [ -n "$dump" ] || die "$load: no callgrind dump"
  ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$dump")
  awk -v l="$load" -v ir="$ir" -v n="$answered" -v out="$out" \
    'BEGIN { printf "%s: %d queries answered, %.0f instructions per query (%s)\n", l, n, ir / n, out }'
  # Functions by their own instructions, then by everything they call
  # (the frames every query passes through, and libuv's unnamed ones, left out).
  for incl in no yes; do
    callgrind_annotate --inclusive=$incl --threshold=100 "$dump" 2>/dev/null |
      awk -v n="$answered" -v what="$([ $incl = yes ] && echo incl || echo self)" '
      /^-+$/ { sec++ } sec >= 3 && $1 ~ /^[0-9,]+$/ && $0 !~ /\(100\.0%\)/ && c < 16 {
        v = $1; gsub(",", "", v); f = $0; sub(/^ *[0-9,]+ */, "", f)
        pct = substr(f, 1, index(f, ")")); f = substr(f, index(f, ")") + 1)
        sub(/^ +/, "", f); sub(/ \[.*/, "", f); sub(/^\?\?\?:/, "", f)
        if (f ~ /(^|:)(main|\(below main\)|__libc_start_main.*|moat_daemon_run|uv_run|0x0[0-9a-f]+)$/) next
        printf "  %s %6.0f /query %s %s\n", what, v / n, pct, f; c++ }'
  done
  rm -f "$WORK/moat.decisions"
done
