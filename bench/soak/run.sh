#!/usr/bin/env bash
# bench/soak/run.sh [BUILD_DIR] [--minutes N] [--conns N] [--dns-qps N] [--tcp-cps N] [--out FILE]
#
# Load and soak (issue 6): moat holds --conns idle spliced connections (default
# 10000) while a rate-limited mix of DNS queries and short TCP connections,
# every answer checked, runs for --minutes (default 10). moat's RSS, open
# descriptors, CPU time and /metrics are sampled every 10 s; one markdown
# table row per sample, then a verdict (RSS flat, 0 errors, descriptors
# stable, nothing lost from the decision log, clean SIGTERM). Exit 0 only
# when every check passed. See bench/soak/README.md; the last report is in
# docs/SOAK.md. Not part of any test suite.
#
# Runs in a network namespace of its own (re-executes itself under
# `unshare --net`): moat, two tcpresp backends (bench/tcp) and a dnsmasq
# upstream listen only there; nothing touches the host's ports or resolver.
# Bounded: every wait has a limit, and everything started is killed on exit.
#
# Environment: SOAK_SAMPLE (seconds between samples, 10), SOAK_WARMUP (the
# RSS/fd baseline is the first sample at least this long into the mix, 30),
# SOAK_KEEP=1 (keep the scratch dir: configs, moat's log, raw samples; it is
# also kept when a check fails).
set -euo pipefail

CALLER=${SOAK_CALLER_PWD:-$PWD} # a relative --out is relative to where run.sh was started
export SOAK_CALLER_PWD=$CALLER
cd "$(dirname "$0")/../.."
ROOT=$PWD
SELF=$ROOT/bench/soak/run.sh
. "$ROOT/bench/lib.sh"
ARGS=("$@")
NETNS_ENV=MOAT_SOAK_NETNS

die() { echo "bench/soak: $*" >&2; exit 2; }
usage() {
  echo "usage: bench/soak/run.sh [BUILD_DIR] [--minutes N] [--conns N] [--dns-qps N]" \
    "[--tcp-cps N] [--out FILE]" >&2
  exit 2
}

BUILD=build-bench MINUTES=10 CONNS=10000 DNS_QPS=500 TCP_CPS=100 OUT=
while [ $# -gt 0 ]; do
  case $1 in
  --minutes | --conns | --dns-qps | --tcp-cps | --out) [ $# -ge 2 ] || usage ;;
  esac
  case $1 in
  --minutes) MINUTES=$2 ;;
  --conns) CONNS=$2 ;;
  --dns-qps) DNS_QPS=$2 ;;
  --tcp-cps) TCP_CPS=$2 ;;
  --out) OUT=$2 ;;
  -*) usage ;;
  *) BUILD=$1 ;;
  esac
  case $1 in -*) shift 2 ;; *) shift ;; esac
done
for v in "$MINUTES" "$CONNS" "$DNS_QPS" "$TCP_CPS"; do
  [[ $v =~ ^[0-9]+$ ]] || usage
done
if [ "$MINUTES" -lt 1 ] || [ "$MINUTES" -gt 1440 ]; then die "--minutes: 1 to 1440"; fi
[ "$CONNS" -le 200000 ] || die "--conns: at most 200000"
case $OUT in "" | /*) ;; *) OUT=$CALLER/$OUT ;; esac
SECS=$((MINUTES * 60))
SAMPLE=${SOAK_SAMPLE:-10}
WARMUP=${SOAK_WARMUP:-30}
MOAT=$ROOT/$BUILD/moat
SOAKLOAD=$ROOT/$BUILD/bench/soak/soakload
TCPRESP=$ROOT/$BUILD/bench/tcp/tcpresp
# moat: two descriptors per connection (client and server side), at most
# CONNS + 200 of them (max_connections: the held ones and the short ones in
# flight), its pipe pool (up to 64 idle pipes) and listeners; the load
# generator and tcpresp need fewer (one per connection).
MAXCONN=$((CONNS + 200))
NOFILE=$((2 * MAXCONN + 200))

# ---- outside: checks and packages, then the namespace -------------------------------------
if [ -z "${!NETNS_ENV:-}" ]; then
  [ "$(id -u)" -eq 0 ] || die "needs root (a network namespace, ports 443 and 80, RLIMIT_NOFILE)"
  for b in "$MOAT" "$SOAKLOAD" "$TCPRESP"; do
    [ -x "$b" ] || die "no $b (meson setup $BUILD --buildtype=release && ninja -C $BUILD)"
  done
  # Raising the hard limit takes CAP_SYS_RESOURCE, which containers often lack:
  # then say how many connections fit instead of failing half-way.
  hard=$(ulimit -Hn)
  if [ "$hard" != unlimited ] && [ "$hard" -lt "$NOFILE" ]; then
    ulimit -n "$NOFILE" 2>/dev/null ||
      die "$CONNS held connections need $NOFILE descriptors in moat (2 per connection" \
        "plus short connections in flight, its pipe pool and listeners); RLIMIT_NOFILE's" \
        "hard limit is $hard and cannot be raised here (no CAP_SYS_RESOURCE):" \
        "use --conns $(((hard - 200) / 2 - 200)) or fewer"
  else
    ulimit -Sn "$NOFILE"
  fi
  tools/need-pkgs dnsmasq-base iproute2 util-linux python3 curl bind9-dnsutils
  exec unshare --net -- env "$NETNS_ENV=1" "$SELF" "${ARGS[@]}"
fi

# ---- inside the namespace ------------------------------------------------------------------
BACKEND=198.18.1.1 # tcpresp on :443 and :80; every allowed name resolves here
SRC=127.0.0.2      # soakload's source: its decisions are told apart in moat's log
UP_PORT=5300 DNS_PORT=5353 TLS_PORT=8443 HTTP_PORT=8080 METRICS_PORT=9090
HZ=$(getconf CLK_TCK)

ip link set lo up
ip addr add "$BACKEND/32" dev lo
# Tens of thousands of connections from one source address: a wide port range.
sysctl -q -w net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1

WORK=$(mktemp -d /tmp/moat-soak.XXXXXX)
PIDS=()
KEEP=${SOAK_KEEP:-}
cleanup() {
  bench_stop_pids "${PIDS[@]}"
  if [ -n "$KEEP" ]; then echo "bench/soak: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_port() { bench_wait_port "$@" || die "nothing listening on $1:$2"; } # ADDR PORT

# ---- what the guest sends --------------------------------------------------------------------
# Real ClientHellos (python's ssl through the e2e tests' MemoryBIO driver).
python3 - "$WORK" <<'EOF'
import ssl, sys
sys.path.insert(0, "tests/e2e")
from proxyfixture import TlsDriver
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
for name, f in (("tls.allowed.test", "hello-allowed.bin"), ("tls.blocked.test", "hello-blocked.bin")):
    open(sys.argv[1] + "/" + f, "wb").write(TlsDriver(None, ctx, name).first_flight())
EOF
for h in allowed blocked; do
  printf 'GET /soak HTTP/1.1\r\nHost: web.%s.test\r\nUser-Agent: moat-soak\r\nAccept: */*\r\n\r\n' \
    "$h" >"$WORK/req-$h.txt"
done

# ---- backends and the upstream -----------------------------------------------------------------
# tcpresp answers its fixed 32 bytes once it has read exactly the hello (443)
# or the request (80), then counts payload bytes (see bench/tcp/tcpresp.c).
"$TCPRESP" 443 "$(stat -c %s "$WORK/hello-allowed.bin")" >"$WORK/tcpresp-443.out" 2>&1 &
PIDS+=($!)
"$TCPRESP" 80 "$(stat -c %s "$WORK/req-allowed.txt")" >"$WORK/tcpresp-80.out" 2>&1 &
PIDS+=($!)
# The upstream: 64 cache-hit names and the dialled names with TTL 3600;
# *.miss.allowed.test with TTL 1 s (soakload visits 500 of them in turn, so
# every visit misses moat's cache); the rest of .test answered NXDOMAIN.
up_args=("--host-record=tls.allowed.test,$BACKEND,3600" "--host-record=web.allowed.test,$BACKEND,3600")
for i in $(seq 0 63); do up_args+=("--host-record=h$i.allowed.test,$BACKEND,3600"); done
dnsmasq --keep-in-foreground --no-resolv --no-hosts --port=$UP_PORT --listen-address=127.0.0.1 \
  --bind-interfaces --user=root --pid-file= --cache-size=0 --local-ttl=1 --local=/test/ \
  --address=/miss.allowed.test/$BACKEND "${up_args[@]}" >"$WORK/dnsmasq.out" 2>&1 &
PIDS+=($!)
wait_port "$BACKEND" 443
wait_port "$BACKEND" 80

# ---- moat -------------------------------------------------------------------------------------
cat >"$WORK/moat.yaml" <<EOF
dns:
  listen: ["127.0.0.1:$DNS_PORT"]
  upstream: ["127.0.0.1:$UP_PORT"]
  timeout: 2s
proxy:
  tls: ["127.0.0.1:$TLS_PORT"]
  http: ["127.0.0.1:$HTTP_PORT"]
  idle_timeout: $((MINUTES + 10))m
  max_connections: $MAXCONN
allow:
  - "*.allowed.test"
log: {format: json, level: info, allowed: true, file: "$WORK/moat.log"}
metrics: {listen: "127.0.0.1:$METRICS_PORT"}
shutdown_grace: 5s
EOF
"$MOAT" -c "$WORK/moat.yaml" >"$WORK/moat.out" 2>&1 &
MOAT_PID=$!
PIDS+=("$MOAT_PID")
wait_port 127.0.0.1 $TLS_PORT
wait_port 127.0.0.1 $HTTP_PORT
ok=
for _ in $(seq 20); do
  a=$(dig +short +time=1 +tries=1 -p $DNS_PORT @127.0.0.1 h0.allowed.test A 2>/dev/null || true)
  if [ "$a" = "$BACKEND" ]; then ok=1; break; fi
  sleep 0.25
done
[ -n "$ok" ] || die "moat's DNS does not answer h0.allowed.test with $BACKEND: $(tail -n 5 "$WORK/moat.out" "$WORK/moat.log")"

# ---- sampling -------------------------------------------------------------------------------
metrics() { curl -s --max-time 2 "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null || true; }
# The sum of a metric over its label sets, or n/a when /metrics has no such series.
metric() { # TEXT NAME
  awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF; f = 1 }
    END { if (f) printf "%.0f\n", s; else print "n/a" }' <<<"$1"
}
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; } # utime + stime
LOADOUT=$WORK/soakload.out
: >"$LOADOUT"
field() { # NAME LINE: the value of NAME=... in one of soakload's stat lines
  tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"
}
SAMPLES=$WORK/samples.tsv
T0=
PREV_T=$EPOCHREALTIME
PREV_TICKS=$(ticks $MOAT_PID)
sample() { # PHASE
  local now t st rss fds tk m cpu
  kill -0 "$MOAT_PID" 2>/dev/null ||
    die "moat exited during the run ($1): $(tail -n 3 "$WORK/moat.out" "$WORK/moat.log")"
  # The load's counters and moat's /proc figures first, at one instant.
  now=$EPOCHREALTIME
  st=$(grep '^stat ' "$LOADOUT" | tail -n 1 || true)
  rss=$(awk '/^VmRSS/{print $2}' "/proc/$MOAT_PID/status")
  tk=$(ticks "$MOAT_PID")
  fds=$(find "/proc/$MOAT_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
  m=$(metrics)
  t=$([ -n "$T0" ] && awk -v a="$T0" -v b="$now" 'BEGIN{printf "%.0f", b - a}' || echo "")
  cpu=$(awk -v d=$((tk - PREV_TICKS)) -v hz="$HZ" -v a="$PREV_T" -v b="$now" \
    'BEGIN{printf "%.1f", (b > a) ? 100 * d / hz / (b - a) : 0}')
  PREV_T=$now PREV_TICKS=$tk
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$t" "$rss" "$fds" \
    "$(awk -v t="$tk" -v hz="$HZ" 'BEGIN{printf "%.1f", t / hz}')" "$cpu" \
    "$(field dns_ok "$st")" "$(field tcp_ok "$st")" "$(field held "$st")" "$(field errors "$st")" \
    "$(metric "$m" moat_connections_active)" "$(metric "$m" moat_log_dropped_lines_total)" \
    "$(metric "$m" moat_dns_cache_entries)" "$(field dns_sent "$st")" >>"$SAMPLES"
  python3 "$ROOT/bench/soak/report.py" row "$SAMPLES"
}

# ---- the run ---------------------------------------------------------------------------------------
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
python3 "$ROOT/bench/soak/report.py" header
sample idle
IDLE_FDS=$(tail -1 "$SAMPLES" | cut -f4)

GATE=$WORK/gate
mkfifo "$GATE"
timeout -k 5 $((SECS + 600 + CONNS / 10)) "$SOAKLOAD" -t 127.0.0.1:$TLS_PORT \
  -w 127.0.0.1:$HTTP_PORT -d 127.0.0.1:$DNS_PORT -S $SRC -H "$WORK/hello-allowed.bin" \
  -B "$WORK/hello-blocked.bin" -R "$WORK/req-allowed.txt" -X "$WORK/req-blocked.txt" \
  -e $BACKEND -n "$CONNS" -s "$SECS" -q "$DNS_QPS" -c "$TCP_CPS" -g "$GATE" \
  >"$LOADOUT" 2>"$WORK/soakload.err" &
LOAD_PID=$!
PIDS+=("$LOAD_PID")

# soakload waits at its gate (a FIFO) after the ramp and after the mix, so
# that moat is sampled in a known state; a line lets it go on.
gate() { timeout 60 bash -c 'echo go >"$1"' _ "$GATE" || die "soakload is not at its gate"; }
# Wait for one of soakload's lines (bounded); fail when it exits first.
wait_line() { # REGEX SECONDS
  local i
  for i in $(seq $(($2 * 5))); do
    grep -q "$1" "$LOADOUT" && return 0
    kill -0 $LOAD_PID 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}
# The ramp: up to 30 s per connection, 128 at a time.
wait_line '^held ' $((60 + CONNS / 20)) ||
  die "soakload did not finish its ramp: $(tail -n 3 "$WORK/soakload.err" "$LOADOUT")"
sample ramp
gate # soakload starts the mix
T0=$EPOCHREALTIME
k=1
while [ $((k * SAMPLE)) -lt "$SECS" ]; do
  target=$(awk -v a="$T0" -v k=$((k * SAMPLE)) 'BEGIN{printf "%.3f", a + k}')
  left=$(awk -v t="$target" -v n="$EPOCHREALTIME" 'BEGIN{d = t - n; printf "%.3f", (d > 0) ? d : 0}')
  sleep "$left"
  kill -0 $LOAD_PID 2>/dev/null || break
  sample mix
  k=$((k + 1))
done
# The mix is over and in-flight work is done; the held ones are still open.
wait_line '^stat .*phase=mix-end' 60 || echo "bench/soak: soakload did not reach the end of its mix" >&2
sample end
gate # soakload checks the held connections and exits
LOAD_RC=0
for _ in $(seq 900); do kill -0 $LOAD_PID 2>/dev/null || break; sleep 0.2; done
wait $LOAD_PID || LOAD_RC=$?

# Everything closed: moat's descriptors back to idle (its pipe pool keeps up
# to 64 pipes, 128 descriptors) and no active connection, within 20 s.
for _ in $(seq 100); do
  fds=$(find "/proc/$MOAT_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
  act=$(metric "$(metrics)" moat_connections_active)
  if [ "$fds" -le $((IDLE_FDS + 136)) ] && { [ "$act" = 0 ] || [ "$act" = n/a ]; }; then break; fi
  sleep 0.2
done
sample after

# ---- clean stop -----------------------------------------------------------------------------
# The last counters before it stops (moat_dns_cache_*_total at the end).
metrics >"$WORK/metrics-final.txt"
T_STOP=$EPOCHREALTIME
kill -TERM $MOAT_PID
MOAT_RC=timeout
for _ in $(seq 150); do kill -0 $MOAT_PID 2>/dev/null || break; sleep 0.1; done
if ! kill -0 $MOAT_PID 2>/dev/null; then
  MOAT_RC=0
  wait $MOAT_PID || MOAT_RC=$?
fi
STOP_SECS=$(awk -v a="$T_STOP" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b - a}')

# ---- verdict and report ------------------------------------------------------------------------
GIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] || GIT="$GIT+changes"
BUILDTYPE=$(meson introspect "$ROOT/$BUILD" --buildoptions 2>/dev/null |
  python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "buildtype"))' \
  2>/dev/null || echo unknown)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
NPROC=$(nproc)
KERNEL=$(uname -r)
export SOAK_CMD="bench/soak/run.sh ${ARGS[*]}" SOAK_DATE="$START_DATE" SOAK_LOAD_BEFORE="$LOAD_BEFORE" \
  SOAK_LOAD_AFTER="$LOAD_AFTER" SOAK_GIT="$GIT" SOAK_BUILDTYPE="$BUILDTYPE" \
  SOAK_MINUTES=$MINUTES SOAK_CONNS=$CONNS SOAK_DNS_QPS=$DNS_QPS SOAK_TCP_CPS=$TCP_CPS \
  SOAK_WARMUP=$WARMUP SOAK_MOAT_RC=$MOAT_RC SOAK_STOP_SECS=$STOP_SECS SOAK_LOAD_RC=$LOAD_RC \
  SOAK_SRC=$SRC SOAK_NPROC="$NPROC" SOAK_KERNEL="$KERNEL"
REPORT=$WORK/report.md
VERDICT=0
python3 "$ROOT/bench/soak/report.py" verdict "$WORK" >"$REPORT" || VERDICT=$?
sed -n '/^## Verdict/,$p' "$REPORT"
if [ -n "$OUT" ]; then
  cp "$REPORT" "$OUT"
  echo "bench/soak: report written to $OUT" >&2
fi
if [ "$VERDICT" -ne 0 ]; then
  KEEP=1
  echo "bench/soak: FAILED (soakload errors: $WORK/soakload.err)" >&2
fi
exit "$VERDICT"
