# bench/lib.sh: what the bench run.sh scripts share (sourced, bash).

# bench_stop_pids PID...: SIGTERM each, wait up to 3 s for each to exit, then
# SIGKILL what is left, then reap every child of the shell (for an EXIT trap:
# waits for all background jobs). Bounded: a benchmark never hangs at exit.
bench_stop_pids() {
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}

# bench_wait_port ADDR PORT: return 0 once a TCP connect to ADDR:PORT
# succeeds, 1 after 5 s.
bench_wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

# ---- DNS benches (bench/dns, bench/workers) ---------------------------------------------

# bench_dns_queries DIR N_ALLOWED: the query files, the same for every server
# and tool. blocked.txt: 100 000 random names under blocked.test, A and AAAA.
# allowed.txt: N_ALLOWED names under allowed.test, A and AAAA (cache hits
# once warmed). mix.txt: 90/10.
bench_dns_queries() {
  awk -v seed=42 'BEGIN { srand(seed); for (i = 0; i < 100000; i++)
    printf "b%d-%06x.blocked.test %s\n", i, int(rand() * 16777216), (i % 2 ? "AAAA" : "A") }' \
    >"$1/blocked.txt"
  awk -v n="$2" 'BEGIN { for (i = 0; i < n; i++) {
    printf "n%d.allowed.test A\n", i; printf "n%d.allowed.test AAAA\n", i } }' >"$1/allowed.txt"
  awk -v n=$((2 * $2)) 'NR == FNR { a[FNR - 1] = $0; next }
    { print; if (FNR % 9 == 0) print a[k++ % n] }' "$1/allowed.txt" "$1/blocked.txt" \
    >"$1/mix.txt"
}

# bench_dns_upstream_args N_ALLOWED: the upstream dnsmasq's host records for
# allowed.test, one argument a line: n0..n(N-1) (TTL 3600), and the name
# dnsdist's health check asks.
bench_dns_upstream_args() {
  local i
  for i in $(seq 0 $(($1 - 1))); do
    echo "--host-record=n$i.allowed.test,198.18.0.$((i + 1)),2001:db8::$((i + 1)),3600"
  done
  echo "--host-record=health.allowed.test,198.18.1.1,60"
}

# bench_unbound_conf DIR PORT UPSTREAM_PORT [THREADS]: unbound on
# 127.0.0.1:PORT, blocked.test sinkholed, allowed.test forwarded. THREADS
# (default 1) above 1: a socket per thread (so-reuseport), as moat's workers.
bench_unbound_conf() {
  local n=${4:-1}
  cat <<EOF
server:
  num-threads: $n
  interface: 127.0.0.1@$2
  port: $2
  do-ip6: no
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$1"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "iterator"
  qname-minimisation: no
  num-queries-per-thread: 4096
  so-rcvbuf: 4m
  msg-cache-size: 16m
  rrset-cache-size: 32m
  # test. is one of unbound's default RFC 6761 local zones; let allowed.test
  # through to the forwarder and sinkhole blocked.test like the others.
  local-zone: "test." nodefault
  local-zone: "blocked.test." always_null
EOF
  [ "$n" -le 1 ] || echo "  so-reuseport: yes"
  cat <<EOF
remote-control:
  control-enable: no
forward-zone:
  name: "allowed.test."
  forward-addr: 127.0.0.1@$3
EOF
}

# bench_dnsdist_conf PORT UPSTREAM_PORT MMSG [LISTENERS]: dnsdist on
# 127.0.0.1:PORT with a packet cache, blocked.test spoofed, the rest to the
# upstream. MMSG: its recvmmsg/sendmmsg vector size (0: off, as shipped).
# LISTENERS (default 1) above 1: that many UDP listener threads, each with its
# own SO_REUSEPORT socket on the address.
bench_dnsdist_conf() {
  local n=${4:-1} i
  echo 'setSecurityPollSuffix("")'
  if [ "$n" -le 1 ]; then
    echo "setLocal(\"127.0.0.1:$1\")"
  else
    echo "setLocal(\"127.0.0.1:$1\", {reusePort=true})"
    for i in $(seq 2 "$n"); do echo "addLocal(\"127.0.0.1:$1\", {reusePort=true})"; done
  fi
  cat <<EOF
setACL({"127.0.0.0/8"})
newServer({address="127.0.0.1:$2", checkName="health.allowed.test."})
pc = newPacketCache(10000, {maxTTL=86400})
getPool(""):setCache(pc)
blocked = newSuffixMatchNode()
blocked:add("blocked.test.")
addAction(SuffixMatchNodeRule(blocked), SpoofAction({"0.0.0.0", "::"}))
EOF
  [ "$3" = 0 ] || echo "setUDPMultipleMessagesVectorSize($3)"
}

# bench_dns_probe DNSLOAD PORT FILE: return 0 once a server on
# 127.0.0.1:PORT answers one query of FILE, 1 after 5 s.
bench_dns_probe() {
  local i
  for i in $(seq 50); do
    "$1" -s 127.0.0.1 -p "$2" -f "$3" -n 1 -c 1 -q 1 -T 100 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
