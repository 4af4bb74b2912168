#!/usr/bin/env bash
# bench/tcp/run.sh BUILD_DIR: moat's TCP proxy side by side with sniproxy,
# haproxy and a bare splice relay, in one run (issue 4, Performance). See
# bench/tcp/README.md.
#
# Runs inside a network namespace of its own (re-executes itself under
# `unshare --net`, loopback up), so ports 443 and the 198.18.0.0/15 addresses
# are free and nothing touches the host. Every proxy is pinned to core 0;
# the load generator (tcpload), the responder (tcpresp) and dnsmasq (moat's
# upstream) run on core 1. Bounded: about 5 minutes (3 rounds), every step under a
# timeout.
#
# Environment: BENCH_CONNS (connections per rate cell, default 30000),
# BENCH_PAR (in parallel, default 32), BENCH_BULK (bytes, default 2e9),
# BENCH_HOLD (held connections, default 5000), BENCH_CONFIGS (default: all),
# BENCH_ROUNDS (rate and bulk loads per configuration, interleaved; default 3),
# BENCH_PERF=1 (perf record of each proxy during the rate load; with
# BENCH_KEEP=1 the profiles stay in the scratch dir), BENCH_STRACE=1 (strace -c
# of each proxy during the rate load instead: system calls per connection;
# the rates of such a run mean nothing), BENCH_MOAT_LOG (moat's log level,
# default warn).
set -euo pipefail

BUILD=${1:-build-bench}
cd "$(dirname "$0")/../.."
ROOT=$PWD
SELF=$ROOT/bench/tcp/run.sh
. "$ROOT/bench/lib.sh"
MOAT=$ROOT/$BUILD/moat
BIN=$ROOT/$BUILD/bench/tcp
CONNS=${BENCH_CONNS:-30000}
PAR=${BENCH_PAR:-32}
BULK=${BENCH_BULK:-2000000000}
HOLD=${BENCH_HOLD:-5000}
CONFIGS=${BENCH_CONFIGS:-direct moat sniproxy haproxy haproxy-splice uring relay moat-off}
ROUNDS=${BENCH_ROUNDS:-3}
PROXY_CPU=0
LOAD_CPU=1
NETNS_ENV=MOAT_TCPB_NETNS

die() { echo "bench/tcp: $*" >&2; exit 1; }

# ---- outside: packages, then the namespace ------------------------------------------
if [ -z "${!NETNS_ENV:-}" ]; then
  [ "$(id -u)" -eq 0 ] || die "needs root (a network namespace, nftables, ports 443)"
  for b in "$MOAT" "$BIN/tcpload" "$BIN/tcpresp" "$BIN/splicerelay"; do
    [ -x "$b" ] || die "no $b (meson setup $BUILD --buildtype=release && ninja -C $BUILD)"
  done
  [ "$(nproc)" -ge 2 ] || die "needs 2 cores (proxy on core $PROXY_CPU, load on core $LOAD_CPU)"
  tools/need-pkgs haproxy sniproxy dnsmasq-base nftables iproute2 util-linux python3
  exec unshare --net -- env "$NETNS_ENV=1" "$SELF" "$BUILD"
fi

# ---- inside the namespace --------------------------------------------------------------
GUEST=198.18.0.1 # source of the redirected (transparent) connections
declare -A LISTEN=([moat]=198.18.0.10 [sniproxy]=198.18.0.11 [haproxy]=198.18.0.12
                   [haproxy-splice]=198.18.0.13 [uring]=198.18.0.14)
# The responder answers on every address; each configuration has its own
# (separate TIME_WAIT space, and the transparent ones are told apart by it).
declare -A TARGET=([direct]=198.18.1.1 [moat]=198.18.1.2 [sniproxy]=198.18.1.3
                   [haproxy]=198.18.1.4 [haproxy-splice]=198.18.1.5 [moat-off]=198.18.1.6
                   [relay]=198.18.1.7 [uring]=198.18.1.8)
declare -A TPORT=([moat-off]=10006 [relay]=10007) # transparent listeners on 127.0.0.1
DNS_PORT=5353
LPORT=8443 # the proxies' listeners (the responder has port 443 on every address)
NAME=allowed.test

ip link set lo up
for a in $GUEST "${LISTEN[@]}" "${TARGET[@]}"; do
  ip addr add "$a/32" dev lo
done
# Hundreds of thousands of short connections in a few minutes: a wide port
# range, and few TIME_WAIT sockets kept (past the cap a closed socket skips
# TIME_WAIT). Otherwise tens of thousands of them pile up per configuration
# and every connect() -- the proxies' as well as ours -- pays a longer and
# longer search for a free port, and the rates fall by half during a run.
sysctl -q -w net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1 \
  net.ipv4.tcp_max_tw_buckets=256
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/moat-bench-tcp.XXXXXX)
PIDS=()
nft_off() { nft delete table ip moat_bench 2>/dev/null || true; } # the REDIRECT table (nft_on)
cleanup() {
  [ -n "${HOLDP_PID:-}" ] && kill "$HOLDP_PID" 2>/dev/null
  bench_stop_pids "${PIDS[@]}"
  nft_off
  if [ -n "${BENCH_KEEP:-}" ]; then echo "bench/tcp: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'trap - EXIT; cleanup; exit 130' INT TERM

# Only in the background (`on_proxy cmd &`): exec keeps $! the program's pid.
on_load() { exec taskset -c $LOAD_CPU "$@"; }
on_proxy() { exec taskset -c $PROXY_CPU "$@"; }
HZ=$(getconf CLK_TCK)
# utime + stime of a process, all threads, in clock ticks (proc(5) fields 14, 15).
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
nfds() { ls "/proc/$1/fd" | wc -l; }
# Busy ticks of core 0 (everything but idle and iowait: softirq included).
core0() { awk '$1 == "cpu'$PROXY_CPU'" {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# ---- the fixed ClientHello, the responder, the upstream ------------------------------------
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
HELLO_LEN=$(stat -c %s "$HELLO")

on_load "$BIN/tcpresp" 443 "$HELLO_LEN" >"$WORK/tcpresp.out" 2>&1 &
PIDS+=($!)
on_load /usr/sbin/dnsmasq --keep-in-foreground --no-resolv --no-hosts --port=$DNS_PORT \
  --listen-address=127.0.0.1 --bind-interfaces --user=root --pid-file= --cache-size=1000 \
  "--local=/test/" "--address=/$NAME/${TARGET[moat]}" >"$WORK/dnsmasq.out" 2>&1 &
# --local: AAAA allowed.test is answered at once (NXDOMAIN), not REFUSED (which
# c-ares would retry: one more query per connection for moat).
PIDS+=($!)

wait_port() { bench_wait_port "$@" || die "nothing listening on $1:$2"; } # ADDR PORT
wait_port "${TARGET[direct]}" 443

# ---- proxies --------------------------------------------------------------------------------
PROXY_PID=
start_proxy() { # CONFIG: sets PROXY_PID, waits for the listener
  local cfg=$1 f=$WORK/$1
  case $cfg in
  moat)
    cat >"$f.yaml" <<EOF
dns:
  listen: []
  upstream: ["127.0.0.1:$DNS_PORT"]
proxy:
  transparent: []
  tls: ["${LISTEN[moat]}:$LPORT"]
  http: []
  peek_timeout: 60s
  max_connections: 20000
log: {level: ${BENCH_MOAT_LOG:-warn}}
allow: [$NAME]
EOF
    on_proxy "$MOAT" -c "$f.yaml" >"$f.out" 2>&1 &
    ;;
  moat-off)
    cat >"$f.yaml" <<EOF
dns:
  listen: []
  upstream: ["127.0.0.1:$DNS_PORT"]
proxy:
  transparent: ["127.0.0.1:${TPORT[moat-off]}"]
  tls: []
  http: []
  max_connections: 20000
log: {level: ${BENCH_MOAT_LOG:-warn}}
EOF
    on_proxy "$MOAT" -c "$f.yaml" >"$f.out" 2>&1 &
    ;;
  relay)
    on_proxy "$BIN/splicerelay" 127.0.0.1 "${TPORT[relay]}" >"$f.out" 2>&1 &
    ;;
  uring)
    on_proxy "$BIN/uringsni" "${LISTEN[uring]}" $LPORT $NAME "${TARGET[uring]}" 443 >"$f.out" 2>&1 &
    ;;
  sniproxy)
    cat >"$f.conf" <<EOF
user root
pidfile $f.pid
error_log {
    filename $f.err
    priority warning
}
listener ${LISTEN[sniproxy]}:$LPORT {
    protocol tls
    table allowed
}
table allowed {
    ^allowed\\.test\$ ${TARGET[sniproxy]}:443
}
EOF
    on_proxy /usr/sbin/sniproxy -f -c "$f.conf" >"$f.out" 2>&1 &
    ;;
  haproxy | haproxy-splice)
    local splice=""
    [ "$cfg" = haproxy-splice ] && splice="    option splice-auto"
    cat >"$f.cfg" <<EOF
global
    nbthread 1
    maxconn 7000
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
$splice
frontend fe
    bind ${LISTEN[$cfg]}:$LPORT
    tcp-request inspect-delay 60s
    tcp-request content accept if { req.ssl_hello_type 1 }
    use_backend allowed if { req.ssl_sni -i $NAME }
backend allowed
    server s1 ${TARGET[$cfg]}:443
EOF
    on_proxy /usr/sbin/haproxy -db -f "$f.cfg" >"$f.out" 2>&1 &
    ;;
  esac
  PROXY_PID=$!
  PIDS+=($PROXY_PID)
  case $cfg in
  moat-off | relay) wait_port 127.0.0.1 "${TPORT[$cfg]}" ;;
  *) wait_port "${LISTEN[$cfg]}" $LPORT ;;
  esac
}

stop_proxy() {
  [ -n "$PROXY_PID" ] || return 0
  kill "$PROXY_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=
}

# The transparent configurations: connections from GUEST to their target are
# REDIRECTed to the proxy's listener; the proxy finds the target with
# SO_ORIGINAL_DST and dials it (from another source, so not redirected).
nft_on() {
  nft -f - <<EOF
table ip moat_bench {
  chain out {
    type nat hook output priority -100;
    ip saddr $GUEST ip daddr ${TARGET[moat-off]} tcp dport 443 redirect to :${TPORT[moat-off]}
    ip saddr $GUEST ip daddr ${TARGET[relay]} tcp dport 443 redirect to :${TPORT[relay]}
  }
}
EOF
  # Finished connections leave conntrack at once (this namespace's own
  # setting): else each row inherits the previous rows' tens of thousands of
  # TIME_WAIT entries, and a reused client port meets a stale one.
  sysctl -q -w net.netfilter.nf_conntrack_tcp_timeout_time_wait=1 \
    net.netfilter.nf_conntrack_tcp_timeout_fin_wait=2 net.netfilter.nf_conntrack_tcp_timeout_close=1 \
    net.netfilter.nf_conntrack_tcp_timeout_last_ack=2 || true
}

# ---- one configuration: the three loads ---------------------------------------------------------
RESULTS=$WORK/results.tsv
: >"$RESULTS"
LOG=$WORK/raw.log

measure() { # CONFIG ROUND: the rate and bulk loads; in round 1 the held connections too
  local cfg=$1 round=$2 addr port src=() pid out t0 t1 c0 c1
  case $cfg in
  direct) addr=${TARGET[direct]} port=443 ;;
  moat-off | relay) addr=${TARGET[$cfg]} port=443 src=($GUEST) ;;
  *) addr=${LISTEN[$cfg]} port=$LPORT ;;
  esac
  if [ "$cfg" != direct ]; then
    start_proxy "$cfg"
  fi
  pid=$PROXY_PID

  # Warm-up (allocator, pools, caches), not counted. Once in a few dozen
  # runs the first transparent row's warm-up loses over 1 % of its
  # connections, right after the NAT table went on; it is said and tried
  # again once (the measured loads that follow fail at 1 % themselves).
  local try
  for try in 1 2; do
    if timeout 60 taskset -c $LOAD_CPU "$BIN/tcpload" rate "$addr" "$port" "$HELLO" 3000 "$PAR" \
      "${src[@]}" >"$WORK/$cfg.warmup"; then
      break
    fi
    [ $try -eq 1 ] || die "$cfg: warm-up failed twice: $(cat "$WORK/$cfg.warmup")"
    echo "bench/tcp: $cfg: warm-up failed, once more in 2 s: $(cat "$WORK/$cfg.warmup")" | tee -a "$LOG" >&2
    sleep 2
  done

  # (a) connection rate.
  local perf=()
  if [ -n "${BENCH_PERF:-}" ] && [ -n "$pid" ]; then # a profile of the rate load
    perf record -q -g -p "$pid" -o "$WORK/$cfg.perf.data" >/dev/null 2>&1 &
    perf=($!)
    sleep 0.5
  elif [ -n "${BENCH_STRACE:-}" ] && [ -n "$pid" ]; then # system calls of the rate load
    strace -c -f -q -p "$pid" -o "$WORK/$cfg.strace.txt" &
    perf=($!)
    sleep 0.5
  fi
  [ -n "$pid" ] && t0=$(ticks "$pid")
  c0=$(core0)
  out=$(timeout 90 taskset -c $LOAD_CPU "$BIN/tcpload" rate "$addr" "$port" "$HELLO" "$CONNS" \
    "$PAR" "${src[@]}") || die "$cfg: rate: $out"
  c1=$(core0)
  [ -n "$pid" ] && t1=$(ticks "$pid")
  if [ ${#perf[@]} -gt 0 ]; then
    kill -INT "${perf[0]}"
    wait "${perf[0]}" 2>/dev/null || true
    [ -z "${BENCH_PERF:-}" ] || perf report -i "$WORK/$cfg.perf.data" --no-children --stdio --percent-limit 1.5 \
      -g none 2>/dev/null | grep -v '^#' | grep . >"$WORK/$cfg.perf.txt" || true
  fi
  echo "$cfg rate: $out core0_ticks=$((c1 - c0))" | tee -a "$LOG" >&2
  local rate p50 p99 cpu=""
  rate=$(sed 's/.*rate=\([0-9.]*\).*/\1/' <<<"$out")
  p50=$(sed 's/.*p50_us=\([0-9]*\).*/\1/' <<<"$out")
  p99=$(sed 's/.*p99_us=\([0-9]*\).*/\1/' <<<"$out")
  [ -n "$pid" ] && cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$CONNS" \
    'BEGIN{printf "%.1f", d / hz * 1e6 / n}')
  printf 'rate\t%s\t%s\t%s\t%s\t%s\n' "$cfg" "$rate" "$p50" "$p99" "$cpu" >>"$RESULTS"

  # (b) one-stream bulk.
  [ -n "$pid" ] && t0=$(ticks "$pid")
  c0=$(core0)
  out=$(timeout 90 taskset -c $LOAD_CPU "$BIN/tcpload" bulk "$addr" "$port" "$HELLO" "$BULK" \
    "${src[@]}") || die "$cfg: bulk: $out"
  c1=$(core0)
  [ -n "$pid" ] && t1=$(ticks "$pid")
  echo "$cfg bulk: $out core0_ticks=$((c1 - c0))" | tee -a "$LOG" >&2
  local gbps
  gbps=$(sed 's/.*gbps=\([0-9.]*\).*/\1/' <<<"$out")
  cpu=""
  [ -n "$pid" ] && cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v b="$BULK" \
    'BEGIN{printf "%.2f", d / hz / (b / 1e9)}')
  printf 'bulk\t%s\t%s\t\t\t%s\n' "$cfg" "$gbps" "$cpu" >>"$RESULTS"
  if [ "$round" != 1 ]; then
    stop_proxy
    return 0
  fi

  # (c) held connections: before the hello (accepted; peeking where the
  # proxy peeks) and after (spliced, idle).
  # Not the relay: it is a reference for (a) and (b) only (it keeps its pipes
  # for a connection's life: 6 descriptors each).
  if [ -n "$pid" ] && [ "$cfg" != relay ]; then
    sleep 1 # let the last connections of (b) go
    local r0 f0 r1 f1 r2 f2 line
    r0=$(rss_kb "$pid")
    f0=$(nfds "$pid")
    coproc HOLDP { exec timeout 120 taskset -c $LOAD_CPU "$BIN/tcpload" hold "$addr" "$port" \
      "$HELLO" "$HOLD" "${src[@]}"; }
    local hin=${HOLDP[1]} hout=${HOLDP[0]} hpid=$HOLDP_PID
    read -r -t 60 line <&"$hout" || die "$cfg: hold: no connections"
    sleep 1.5
    r1=$(rss_kb "$pid")
    f1=$(nfds "$pid")
    echo go >&"$hin"
    read -r -t 60 line <&"$hout" || die "$cfg: hold: no replies"
    [ "$line" = "replied $HOLD" ] || echo "bench/tcp: $cfg hold: $line" >&2
    sleep 1.5
    r2=$(rss_kb "$pid")
    f2=$(nfds "$pid")
    eval "exec $hin>&-"
    wait "$hpid" 2>/dev/null || true
    echo "$cfg hold: n=$HOLD rss_kb=$r0/$r1/$r2 fds=$f0/$f1/$f2 ($line)" | tee -a "$LOG" >&2
    printf 'hold\t%s\t%s\t%s\t%s\t%s\n' "$cfg" \
      "$(awk -v a="$r0" -v b="$r1" -v n="$HOLD" 'BEGIN{printf "%.2f", (b - a) / n}')" \
      "$(awk -v a="$r0" -v b="$r2" -v n="$HOLD" 'BEGIN{printf "%.2f", (b - a) / n}')" \
      "$(awk -v a="$f0" -v b="$f1" -v n="$HOLD" 'BEGIN{printf "%.2f", (b - a) / n}')" \
      "$(awk -v a="$f0" -v b="$f2" -v n="$HOLD" 'BEGIN{printf "%.2f", (b - a) / n}')" \
      >>"$RESULTS"
  fi
  stop_proxy
}

# Rounds: the rate and bulk loads of every configuration, in turn, ROUNDS
# times (the held connections, memory, in the first round only). This VM's CPU time per connection moves
# by ±20 % between minutes (its neighbours, not us: steal time reads 0), so
# one run per configuration can put any of them ahead; the table takes each
# configuration's median over rounds that alternate with its peers'.
for round in $(seq "$ROUNDS"); do
  NFT=0
  for cfg in $CONFIGS; do
    case $cfg in
    moat-off | relay)
      # Transparent ones last: the NAT table turns on conntrack for every
      # connection in the namespace, which the others should not pay.
      if [ $NFT -eq 0 ]; then
        nft_on
        NFT=1
      fi
      ;;
    uring)
      if [ ! -x "$BIN/uringsni" ]; then # optional: needs liburing-dev at setup
        [ "$round" -gt 1 ] || echo "bench/tcp: no $BIN/uringsni (liburing-dev): no uring row" >&2
        continue
      fi
      ;;
    *) [ $NFT -eq 0 ] || echo "bench/tcp: $cfg runs with conntrack on (put it before moat-off/relay)" >&2 ;;
    esac
    echo "bench/tcp: round $round/$ROUNDS: $cfg" >&2
    measure "$cfg" "$round"
  done
  nft_off
done

# ---- the table --------------------------------------------------------------------------------
echo
python3 "$ROOT/bench/tcp/table.py" "$RESULTS" "$CONNS" "$BULK" "$HOLD" "$ROUNDS"
