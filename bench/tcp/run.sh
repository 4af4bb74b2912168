#!/usr/bin/env bash
# bench/tcp/run.sh BUILD_DIR: moat's TCP proxy side by side with sniproxy,
# haproxy and a bare splice relay (issue 4, Performance), and its explicit
# proxies (CONNECT, SOCKS5) side by side with squid, squid with an SNI peek,
# tinyproxy, dante and microsocks (issue 14), in one run. See
# bench/tcp/README.md.
#
# Runs inside network and mount namespaces of its own (re-executes itself
# under `unshare --net --mount`, loopback up, its own /etc/hosts and
# /etc/resolv.conf bound over the host's: the peers resolve names through
# the namespace's dnsmasq, as moat does), so ports 53, 80 and 443 and the
# 198.18.0.0/15 addresses are free and nothing touches the host. Every proxy is pinned to core 0; the load generator
# (tcpload), the responders (tcpresp) and dnsmasq (moat's upstream) run on
# core 1. Bounded: about 8 minutes (3 rounds), every step under a timeout.
#
# Environment: BENCH_CONNS (connections per rate cell, default 30000),
# BENCH_TUNNELS (tunnels per tunnel rate cell, default BENCH_CONNS up to
# 10000), BENCH_KA (requests per keep-alive cell, default 5/3 BENCH_CONNS:
# 50000; BENCH_KA_PER per connection, default 100), BENCH_PAR (in parallel, default 32), BENCH_BULK (bytes,
# default 2e9), BENCH_HOLD (held connections and tunnels, default 5000),
# BENCH_CONFIGS (default: all),
# BENCH_ROUNDS (rate and bulk loads per configuration, interleaved; default 3),
# BENCH_PERF=1 (perf record of each proxy during the rate load; with
# BENCH_KEEP=1 the profiles stay in the scratch dir), BENCH_STRACE=1 (strace -c
# of each proxy during the rate load instead: system calls per connection;
# the rates of such a run mean nothing), BENCH_MOAT_LOG (moat's log level,
# default warn), BENCH_PEER_DNS=1 (the peers resolve the tunnels' names
# through dnsmasq instead of /etc/hosts), BENCH_MOAT_BASE (another moat
# binary, e.g. a build from before a change: its tls listener runs the rate
# load beside moat's, and its http and transparent listeners the keep-alive
# load, as moat-base and moat-tp-base).
set -euo pipefail

BUILD=${1:-build-bench}
cd "$(dirname "$0")/../.."
ROOT=$PWD
SELF=$ROOT/bench/tcp/run.sh
. "$ROOT/bench/lib.sh"
MOAT=$ROOT/$BUILD/moat
MOAT_BASE=${BENCH_MOAT_BASE:-}
BIN=$ROOT/$BUILD/bench/tcp
CONNS=${BENCH_CONNS:-30000}
TUNNELS=${BENCH_TUNNELS:-$((CONNS < 10000 ? CONNS : 10000))}
KA=${BENCH_KA:-$((CONNS * 5 / 3))}
KA_PER=${BENCH_KA_PER:-100}
PAR=${BENCH_PAR:-32}
BULK=${BENCH_BULK:-2000000000}
HOLD=${BENCH_HOLD:-5000}
CONFIGS=${BENCH_CONFIGS:-direct moat sniproxy haproxy haproxy-splice uring moat-connect moat-socks squid squid-peek tinyproxy dante microsocks relay moat-off moat-tp}
ROUNDS=${BENCH_ROUNDS:-3}
PROXY_CPU=0
LOAD_CPU=1
NETNS_ENV=MOAT_TCPB_NETNS
# squid-peek runs Debian's squid-openssl binary, unpacked here (the package
# conflicts with squid, whose squid-common it shares).
SQUID_SSL_DIR=$ROOT/$BUILD/bench/tcp/squid-openssl
SQUID_SSL=$SQUID_SSL_DIR/usr/sbin/squid

die() { echo "bench/tcp: $*" >&2; exit 1; }
has_cfg() { [[ " $CONFIGS " == *" $1 "* ]]; }
# With a baseline moat, its rows follow moat's: moat-base after moat,
# moat-tp-base after moat-tp.
if [ -n "$MOAT_BASE" ]; then
  [ -x "$MOAT_BASE" ] || die "BENCH_MOAT_BASE: no moat binary at $MOAT_BASE"
  MOAT_BASE=$(realpath "$MOAT_BASE")
  CONFIGS=$(sed -e 's/\(^\| \)moat\( \|$\)/\1moat moat-base\2/' \
    -e 's/\(^\| \)moat-tp\( \|$\)/\1moat-tp moat-tp-base\2/' <<<"$CONFIGS")
fi

# ---- outside: packages, then the namespace ------------------------------------------
if [ -z "${!NETNS_ENV:-}" ]; then
  [ "$(id -u)" -eq 0 ] || die "needs root (network and mount namespaces, nftables, ports 80 and 443)"
  for b in "$MOAT" "$BIN/tcpload" "$BIN/tcpresp" "$BIN/splicerelay"; do
    [ -x "$b" ] || die "no $b (meson setup $BUILD --buildtype=release && ninja -C $BUILD)"
  done
  [ "$(nproc)" -ge 2 ] || die "needs 2 cores (proxy on core $PROXY_CPU, load on core $LOAD_CPU)"
  pkgs=(dnsmasq-base nftables iproute2 util-linux procps python3)
  has_cfg sniproxy && pkgs+=(sniproxy)
  { has_cfg haproxy || has_cfg haproxy-splice; } && pkgs+=(haproxy)
  { has_cfg squid || has_cfg squid-peek; } && pkgs+=(squid) # squid-peek: its squid-common
  has_cfg squid-peek && pkgs+=(openssl)
  has_cfg tinyproxy && pkgs+=(tinyproxy-bin) # the binary without the service
  has_cfg dante && pkgs+=(dante-server)
  has_cfg microsocks && pkgs+=(microsocks)
  tools/need-pkgs "${pkgs[@]}"
  if has_cfg squid-peek && [ ! -x "$SQUID_SSL" ]; then
    # The package is only downloaded and unpacked, never installed.
    tmp=$(mktemp -d)
    (cd "$tmp" && timeout 120 apt-get download -q squid-openssl >/dev/null 2>&1) ||
      { apt-get update -q >&2 && (cd "$tmp" && timeout 120 apt-get download -q squid-openssl >/dev/null 2>&1); } ||
      die "squid-peek: apt-get download squid-openssl failed"
    dpkg-deb -x "$tmp"/squid-openssl_*.deb "$SQUID_SSL_DIR"
    rm -rf "$tmp"
    [ -x "$SQUID_SSL" ] || die "squid-peek: no $SQUID_SSL in the squid-openssl package"
  fi
  exec unshare --net --mount -- env "$NETNS_ENV=1" "$SELF" "$BUILD"
fi

# ---- inside the namespace --------------------------------------------------------------
GUEST=198.18.0.1 # source of the redirected (transparent) connections
declare -A LISTEN=([moat]=198.18.0.10 [sniproxy]=198.18.0.11 [haproxy]=198.18.0.12
                   [haproxy-splice]=198.18.0.13 [uring]=198.18.0.14
                   [moat-connect]=198.18.0.20 [moat-socks]=198.18.0.21 [squid]=198.18.0.22
                   [squid-peek]=198.18.0.23 [tinyproxy]=198.18.0.24 [dante]=198.18.0.25
                   [microsocks]=198.18.0.26 [moat-base]=198.18.0.15)
# The responders answer on every address; each configuration has its own
# (separate TIME_WAIT space, and the transparent ones are told apart by it).
declare -A TARGET=([direct]=198.18.1.1 [moat]=198.18.1.2 [sniproxy]=198.18.1.3
                   [haproxy]=198.18.1.4 [haproxy-splice]=198.18.1.5 [moat-off]=198.18.1.6
                   [relay]=198.18.1.7 [uring]=198.18.1.8 [moat-tp]=198.18.1.9
                   [moat-tp-base]=198.18.1.10
                   [moat-connect]=198.18.1.20 [moat-socks]=198.18.1.21 [squid]=198.18.1.22
                   [squid-peek]=198.18.1.23 [tinyproxy]=198.18.1.24 [dante]=198.18.1.25
                   [microsocks]=198.18.1.26)
# transparent listeners on 127.0.0.1
declare -A TPORT=([moat-off]=10006 [relay]=10007 [moat-tp]=10008 [moat-tp-base]=10009)
DNS_PORT=53 # dnsmasq: moat's upstream, and the peers' resolver (resolv.conf)
LPORT=8443 # the proxies' listeners (the responder has port 443 on every address)
HPORT=8080 # moat's http listener (the HTTP responder has port 80 on every address)
NAME=allowed.test
BLOCKED=blocked.test # a name no proxy allows (it resolves: to the responder)
# The explicit proxies: how the load talks to each (tcpload --connect or
# --socks), and the name each tunnel asks for (its own target in dnsmasq;
# every name as long as NAME, so every hello has one length).
declare -A TUNNEL=([moat-connect]=connect [moat-socks]=socks [squid]=connect
                   [squid-peek]=connect [tinyproxy]=connect [dante]=socks [microsocks]=socks)
declare -A TNAME=([moat-connect]=tunnel1.test [moat-socks]=tunnel2.test [squid]=tunnel3.test
                  [squid-peek]=tunnel4.test [tinyproxy]=tunnel5.test [dante]=tunnel6.test
                  [microsocks]=tunnel7.test)
# What each configuration runs: rate (a), bulk (b), hold (c; round 1 only),
# ka (d, the keep-alive HTTP load).
declare -A LOADS=([direct]="rate bulk hold ka" [moat]="rate bulk hold ka" [relay]="rate bulk ka"
                  [moat-off]="rate bulk hold ka" [moat-tp]="ka" [moat-connect]="rate bulk hold ka"
                  [moat-base]="rate ka" [moat-tp-base]="ka")
loads() { echo "${LOADS[$1]:-rate bulk hold}"; }

ip link set lo up
for a in $GUEST "${LISTEN[@]}" "${TARGET[@]}"; do
  ip addr add "$a/32" dev lo
done
# The peers resolve the tunnels' names with the libc's getaddrinfo (squid:
# its hosts_file and DNS client) from this namespace's own /etc/hosts: their
# cheapest way, no round trip. moat asks dnsmasq (with its dial cache).
# tinyproxy and microsocks cache nothing: through DNS, every tunnel waits
# for dnsmasq, which shares the load's busy core, and their rate measures
# its scheduling more than them (BENCH_PEER_DNS=1 does that: /etc/hosts
# without the names). Anything else goes to this namespace's dnsmasq on
# 127.0.0.1:53 (squid asks it for the reverse of its listener): never the
# host's resolver or hosts.
ETC=$(mktemp -d /tmp/moat-bench-tcp-etc.XXXXXX)
chmod 755 "$ETC"
{
  printf '127.0.0.1 localhost\n::1 localhost\n'
  if [ -z "${BENCH_PEER_DNS:-}" ]; then
    for c in "${!TNAME[@]}"; do echo "${TARGET[$c]} ${TNAME[$c]}"; done
    echo "${TARGET[direct]} $BLOCKED"
  fi
} >"$ETC/hosts"
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$ETC/resolv.conf"
chmod 644 "$ETC/hosts" "$ETC/resolv.conf"
mount --bind "$ETC/hosts" /etc/hosts
mount --bind "$ETC/resolv.conf" /etc/resolv.conf
# Hundreds of thousands of short connections in a few minutes: a wide port
# range, and few TIME_WAIT sockets kept (past the cap a closed socket skips
# TIME_WAIT). Otherwise tens of thousands of them pile up per configuration
# and every connect() -- the proxies' as well as ours -- pays a longer and
# longer search for a free port, and the rates fall by half during a run.
sysctl -q -w net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1 \
  net.ipv4.tcp_max_tw_buckets=256
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/moat-bench-tcp.XXXXXX)
chmod 755 "$WORK" # squid reads its files as user proxy
PIDS=()
nft_off() { nft delete table ip moat_bench 2>/dev/null || true; } # the REDIRECT table (nft_on)
cleanup() {
  [ -n "${HOLDP_PID:-}" ] && kill "$HOLDP_PID" 2>/dev/null
  bench_stop_pids "${PIDS[@]}"
  nft_off
  umount /etc/hosts /etc/resolv.conf 2>/dev/null || true
  rm -rf "$ETC"
  if [ -n "${BENCH_KEEP:-}" ]; then echo "bench/tcp: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'trap - EXIT; cleanup; exit 130' INT TERM

# Only in the background (`on_proxy cmd &`): exec keeps $! the program's pid.
on_load() { exec taskset -c $LOAD_CPU "$@"; }
on_proxy() { exec taskset -c $PROXY_CPU "$@"; }
# moat_one_worker BIN: `--workers 1` for this build's moat (these tables
# compare one core with one core; bench/workers has the workers table),
# nothing for BENCH_MOAT_BASE (an older build may not know the option).
moat_one_worker() { [ "$1" = "$MOAT" ] && echo --workers 1 || true; }
HZ=$(getconf CLK_TCK)
# A proxy and its descendants (dante forks children that carry the tunnels).
tree() { # PID
  ps -e -o pid=,ppid= | awk -v root="$1" '{ kids[$2] = kids[$2] " " $1 }
    END { q[0] = root; n = 1; for (i = 0; i < n; i++) { printf "%s ", q[i]
      m = split(kids[q[i]], k, " "); for (j = 1; j <= m; j++) q[n++] = k[j] } }'
}
# utime + stime of a process tree, all threads, and of its reaped children
# (cutime + cstime: a dante child that exits is counted in its parent), in
# clock ticks (proc(5) fields 14-17).
ticks() {
  local p v t=0
  for p in $(tree "$1"); do
    v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13 + $14 + $15}') || true
    t=$((t + ${v:-0})) # a process gone meanwhile: counted in its parent's cutime
  done
  echo $t
}
# Memory: a single process's VmRSS; for a tree, the sum of its processes'
# Pss (proportional: pages a fork shares with its parent counted once).
rss_kb() {
  local ps
  ps=($(tree "$1"))
  if [ ${#ps[@]} -eq 1 ]; then
    awk '/^VmRSS/{print $2}' "/proc/$1/status"
  else
    for p in "${ps[@]}"; do cat "/proc/$p/smaps_rollup" 2>/dev/null; done | awk '/^Pss:/{s += $2} END{print s + 0}'
  fi
}
nfds() {
  local p
  for p in $(tree "$1"); do ls "/proc/$p/fd" 2>/dev/null; done | wc -l
}
nprocs() { tree "$1" | wc -w; }
# Busy ticks of core 0 (everything but idle and iowait: softirq included).
core0() { awk '$1 == "cpu'$PROXY_CPU'" {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# ---- the fixed ClientHellos, the responders, the upstream ------------------------------------
# One hello for NAME (hello.bin) and one per tunnel name (hello-NAME.bin),
# all of one length (tcpresp reads exactly that many bytes).
HELLO=$WORK/hello.bin
python3 - "$WORK" "$NAME" "${TNAME[@]}" <<'EOF'
import ssl, sys
def hello(name):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()
work, name = sys.argv[1], sys.argv[2]
open(work + "/hello.bin", "wb").write(hello(name))
for n in sys.argv[3:]:
    open(work + "/hello-" + n + ".bin", "wb").write(hello(n))
EOF
HELLO_LEN=$(stat -c %s "$HELLO")
for n in "${TNAME[@]}"; do
  [ "$(stat -c %s "$WORK/hello-$n.bin")" = "$HELLO_LEN" ] || die "the hello for $n is not $HELLO_LEN bytes"
done
# The keep-alive load's request (a small GET, as a browser or an SDK sends
# it), one per Host it names.
request() { # HOST FILE
  printf 'GET /v1/items/42?fields=name HTTP/1.1\r\nHost: %s\r\nUser-Agent: tcpload/1.0\r\nAccept: */*\r\nAccept-Encoding: gzip\r\n\r\n' "$1" >"$2"
}

on_load "$BIN/tcpresp" 443 "$HELLO_LEN" >"$WORK/tcpresp.out" 2>&1 &
PIDS+=($!)
on_load "$BIN/tcpresp" 80 http >"$WORK/tcpresp-http.out" 2>&1 &
PIDS+=($!)
dns_names=("--address=/$NAME/${TARGET[moat]}")
for c in "${!TNAME[@]}"; do dns_names+=("--address=/${TNAME[$c]}/${TARGET[$c]}"); done
dns_names+=("--address=/$BLOCKED/${TARGET[direct]}")
on_load /usr/sbin/dnsmasq --keep-in-foreground --no-resolv --no-hosts --port=$DNS_PORT \
  --listen-address=127.0.0.1 --bind-interfaces --user=root --pid-file= --cache-size=1000 \
  "--local=/test/" "--local=/in-addr.arpa/" "${dns_names[@]}" >"$WORK/dnsmasq.out" 2>&1 &
# --local: AAAA allowed.test is answered at once (NXDOMAIN), not REFUSED (which
# c-ares would retry: one more query per connection for moat); so are
# squid's reverse lookups of its own listener (unanswered, they pile up in
# its query list and cost it more with each connection).
PIDS+=($!)

wait_port() { bench_wait_port "$@" || die "nothing listening on $1:$2"; } # ADDR PORT
wait_port "${TARGET[direct]}" 443
wait_port "${TARGET[direct]}" 80

# ---- proxies --------------------------------------------------------------------------------
PROXY_PID=
start_proxy() { # CONFIG: sets PROXY_PID, waits for the listener
  local cfg=$1 f=$WORK/$1
  case $cfg in
  moat | moat-base)
    cat >"$f.yaml" <<EOF
dns:
  listen: []
  upstream: ["127.0.0.1:$DNS_PORT"]
proxy:
  transparent: []
  tls: ["${LISTEN[$cfg]}:$LPORT"]
  http: ["${LISTEN[$cfg]}:$HPORT"]
  peek_timeout: 60s
  max_connections: 20000
log: {level: ${BENCH_MOAT_LOG:-warn}}
allow: [$NAME]
EOF
    local bin=$MOAT
    [ "$cfg" = moat-base ] && bin=$MOAT_BASE
    on_proxy "$bin" -c "$f.yaml" $(moat_one_worker "$bin") >"$f.out" 2>&1 &
    ;;
  moat-tp | moat-tp-base)
    # The transparent listener with filtering on: it reads the first
    # request head of each connection (port 80) and decides its Host.
    cat >"$f.yaml" <<EOF
dns:
  listen: []
  upstream: ["127.0.0.1:$DNS_PORT"]
proxy:
  transparent: ["127.0.0.1:${TPORT[$cfg]}"]
  tls: []
  http: []
  peek_timeout: 60s
  max_connections: 20000
log: {level: ${BENCH_MOAT_LOG:-warn}}
allow: [$NAME]
EOF
    local bin=$MOAT
    [ "$cfg" = moat-tp-base ] && bin=$MOAT_BASE
    on_proxy "$bin" -c "$f.yaml" $(moat_one_worker "$bin") >"$f.out" 2>&1 &
    ;;
  moat-connect | moat-socks)
    moat_tunnel_yaml "$cfg" >"$f.yaml"
    on_proxy "$MOAT" -c "$f.yaml" --workers 1 >"$f.out" 2>&1 &
    ;;
  squid | squid-peek)
    squid_conf "$cfg"
    local bin=/usr/sbin/squid
    [ "$cfg" = squid-peek ] && bin=$SQUID_SSL
    on_proxy "$bin" -N -f "$f.conf" >"$f.out" 2>&1 &
    ;;
  tinyproxy)
    echo "${TNAME[tinyproxy]}" >"$f.filter"
    cat >"$f.conf" <<EOF
User root
Group root
Port $LPORT
Listen ${LISTEN[tinyproxy]}
Bind ${LISTEN[tinyproxy]}
Timeout 600
MaxClients 20000
LogLevel Error
LogFile "$f.log"
ConnectPort 443
DisableViaHeader Yes
Filter "$f.filter"
FilterType fnmatch
FilterDefaultDeny Yes
EOF
    on_proxy /usr/bin/tinyproxy -d -c "$f.conf" >"$f.out" 2>&1 &
    ;;
  dante)
    cat >"$f.conf" <<EOF
logoutput: $f.log
internal: ${LISTEN[dante]} port = $LPORT
external: ${LISTEN[dante]}
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: root
timeout.negotiate: 60
timeout.io: 0
client pass {
    from: 0.0.0.0/0 to: 0.0.0.0/0
}
socks pass {
    from: 0.0.0.0/0 to: ${TNAME[dante]} port = 443
    command: connect
}
socks block {
    from: 0.0.0.0/0 to: 0.0.0.0/0
}
EOF
    on_proxy /usr/sbin/danted -f "$f.conf" >"$f.out" 2>&1 &
    ;;
  microsocks)
    # No name rules: it relays any target (a peer for its cost, not its checks).
    on_proxy /usr/bin/microsocks -i "${LISTEN[microsocks]}" -p $LPORT -b "${LISTEN[microsocks]}" \
      >"$f.out" 2>&1 &
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
    on_proxy "$MOAT" -c "$f.yaml" --workers 1 >"$f.out" 2>&1 &
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
  moat-off | relay | moat-tp | moat-tp-base) wait_port 127.0.0.1 "${TPORT[$cfg]}" ;;
  *) bench_wait_port "${LISTEN[$cfg]}" $LPORT ||
    die "$cfg: nothing listening on ${LISTEN[$cfg]}:$LPORT: $(tail -5 "$f.out" "$f".log "$f"/cache.log 2>/dev/null)" ;;
  esac
}

# moat's explicit proxies (SPEC §2.6): a CONNECT or SOCKS5 listener, the
# tunnel's name allowed on 443 (the rate, bulk and hold loads) and 80 (the
# keep-alive load through a tunnel).
moat_tunnel_yaml() { # CONFIG
  local kind=${TUNNEL[$1]}
  cat <<EOF
dns:
  listen: []
  upstream: ["127.0.0.1:$DNS_PORT"]
proxy:
  transparent: []
  tls: []
  http: []
  $kind: ["${LISTEN[$1]}:$LPORT"]
  peek_timeout: 60s
  max_connections: 20000
log: {level: ${BENCH_MOAT_LOG:-warn}}
allow: [${TNAME[$1]}]
EOF
}

# squid: CONNECT to port 443 of names a dstdomain ACL allows, nothing
# cached, no access log (moat logs no allowed connection at level warn).
# squid-peek adds what only an OpenSSL build can do: peek at the
# ClientHello in the tunnel (step 1), splice it when the SNI is allowed
# (ssl::server_name), close it otherwise; never a bump (no certificate is
# minted: the static one below is never shown).
squid_conf() { # CONFIG: writes $WORK/CONFIG.conf, and its cache_log dir
  local cfg=$1 f=$WORK/$1 port
  mkdir -p "$f"
  chown proxy: "$f" 2>/dev/null || chmod 777 "$f"
  port="http_port ${LISTEN[$cfg]}:$LPORT"
  if [ "$cfg" = squid-peek ]; then
    [ -f "$WORK/squid-ca.pem" ] || openssl req -x509 -newkey rsa:2048 -nodes -days 2 \
      -subj /CN=moat-bench -keyout "$WORK/squid-ca.key" -out "$WORK/squid-ca.pem" >/dev/null 2>&1
    chmod 644 "$WORK/squid-ca.key"
    port+=" ssl-bump tls-cert=$WORK/squid-ca.pem tls-key=$WORK/squid-ca.key generate-host-certificates=off"
  fi
  cat >"$f.conf" <<EOF
$port
visible_hostname moat-bench
acl allowed dstdomain ${TNAME[$cfg]}
acl tls_port port 443
acl CONNECT method CONNECT
http_access deny CONNECT !tls_port
http_access allow CONNECT allowed
http_access deny all
cache deny all
cache_mem 8 MB
access_log none
cache_store_log none
cache_log $f/cache.log
pid_filename none
netdb_filename none
coredump_dir $f
hosts_file /etc/hosts
dns_nameservers 127.0.0.1
max_filedescriptors $(ulimit -n)
shutdown_lifetime 0 seconds
pinger_enable off
EOF
  if [ "$cfg" = squid-peek ]; then
    cat >>"$f.conf" <<EOF
acl step1 at_step SslBump1
acl allowed_sni ssl::server_name ${TNAME[$cfg]}
ssl_bump peek step1
ssl_bump splice allowed_sni
ssl_bump terminate all
EOF
  fi
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
    ip saddr $GUEST ip daddr ${TARGET[moat-off]} tcp dport { 80, 443 } redirect to :${TPORT[moat-off]}
    ip saddr $GUEST ip daddr ${TARGET[relay]} tcp dport { 80, 443 } redirect to :${TPORT[relay]}
    ip saddr $GUEST ip daddr ${TARGET[moat-tp]} tcp dport { 80, 443 } redirect to :${TPORT[moat-tp]}
    ip saddr $GUEST ip daddr ${TARGET[moat-tp-base]} tcp dport { 80, 443 } redirect to :${TPORT[moat-tp-base]}
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

# ---- one configuration: its loads ---------------------------------------------------------
RESULTS=$WORK/results.tsv
: >"$RESULTS"
LOG=$WORK/raw.log

# Warm-up (allocator, pools, caches), not counted. Once in a few dozen
# runs the first transparent row's warm-up loses over 1 % of its
# connections, right after the NAT table went on; it is said and tried
# again once (the measured loads that follow fail at 1 % themselves).
warm_up() { # CONFIG TCPLOAD-ARGS...
  local cfg=$1 try
  shift
  for try in 1 2; do
    if timeout 60 taskset -c $LOAD_CPU "$BIN/tcpload" "$@" >"$WORK/$cfg.warmup"; then
      return 0
    fi
    [ $try -eq 1 ] || die "$cfg: warm-up failed twice: $(cat "$WORK/$cfg.warmup")"
    echo "bench/tcp: $cfg: warm-up failed, once more in 2 s: $(cat "$WORK/$cfg.warmup")" | tee -a "$LOG" >&2
    sleep 2
  done
}

# What an explicit proxy refuses, checked once (round 1): a tunnel to a name
# it does not allow (BLOCKED, which resolves: to the responder), and a
# tunnel to its allowed name whose ClientHello names another (NAME: domain
# fronting). Refused: no tcpresp reply came back. A "check" row: 1 refused,
# 0 let through.
refusals() { # CONFIG ADDR PORT
  local cfg=$1 name=0 sni=0
  timeout 10 taskset -c $LOAD_CPU "$BIN/tcpload" "--${TUNNEL[$cfg]}" "$BLOCKED:443" rate "$2" "$3" \
    "$HELLO" 1 1 >"$WORK/$cfg.refuse-name" 2>&1 || name=1
  timeout 10 taskset -c $LOAD_CPU "$BIN/tcpload" "--${TUNNEL[$cfg]}" "${TNAME[$cfg]}:443" rate "$2" "$3" \
    "$HELLO" 1 1 >"$WORK/$cfg.refuse-sni" 2>&1 || sni=1
  echo "$cfg refuses: another name $name, another SNI $sni" | tee -a "$LOG" >&2
  printf 'check\t%s\t%s\t%s\n' "$cfg" "$name" "$sni" >>"$RESULTS"
}

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; } # KEY LINE

# The loads of one configuration (loads CONFIG says which): (a) rate and
# (b) bulk, the keep-alive load (d), and in round 1 the held connections
# (c). The explicit proxies' rows are tagged trate, tbulk, thold (their
# own table).
measure() { # CONFIG ROUND
  local cfg=$1 round=$2 addr port src=() px=() hello=$HELLO pid out t0 t1 c0 c1 n=$CONNS tag=""
  local ld
  ld=" $(loads "$cfg") "
  case $cfg in
  direct) addr=${TARGET[direct]} port=443 ;;
  moat-off | relay | moat-tp | moat-tp-base) addr=${TARGET[$cfg]} port=443 src=($GUEST) ;;
  *) addr=${LISTEN[$cfg]} port=$LPORT ;;
  esac
  if [ -n "${TUNNEL[$cfg]:-}" ]; then
    px=("--${TUNNEL[$cfg]}" "${TNAME[$cfg]}:443")
    hello=$WORK/hello-${TNAME[$cfg]}.bin
    n=$TUNNELS
    tag=t
  fi
  if [ "$cfg" != direct ]; then
    start_proxy "$cfg"
  fi
  pid=$PROXY_PID
  if [ "$round" = 1 ] && [ -n "$tag" ]; then
    refusals "$cfg" "$addr" "$port"
  fi

  if [[ $ld == *" rate "* ]]; then
    warm_up "$cfg" "${px[@]}" rate "$addr" "$port" "$hello" 3000 "$PAR" "${src[@]}"

    # (a) connection (or tunnel) rate.
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
    out=$(timeout 90 taskset -c $LOAD_CPU "$BIN/tcpload" "${px[@]}" rate "$addr" "$port" "$hello" \
      "$n" "$PAR" "${src[@]}") || die "$cfg: rate: $out"
    c1=$(core0)
    [ -n "$pid" ] && t1=$(ticks "$pid")
    if [ ${#perf[@]} -gt 0 ]; then
      kill -INT "${perf[0]}"
      wait "${perf[0]}" 2>/dev/null || true
      [ -z "${BENCH_PERF:-}" ] || perf report -i "$WORK/$cfg.perf.data" --no-children --stdio --percent-limit 1.5 \
        -g none 2>/dev/null | grep -v '^#' | grep . >"$WORK/$cfg.perf.txt" || true
    fi
    echo "$cfg rate: $out core0_ticks=$((c1 - c0))" | tee -a "$LOG" >&2
    local cpu=""
    [ -n "$pid" ] && cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$n" \
      'BEGIN{printf "%.1f", d / hz * 1e6 / n}')
    printf '%srate\t%s\t%s\t%s\t%s\t%s\n' "$tag" "$cfg" "$(field rate "$out")" "$(field p50_us "$out")" \
      "$(field p99_us "$out")" "$cpu" >>"$RESULTS"

    # (b) one-stream bulk (through a tunnel: after the handshake).
    [ -n "$pid" ] && t0=$(ticks "$pid")
    c0=$(core0)
    out=$(timeout 90 taskset -c $LOAD_CPU "$BIN/tcpload" "${px[@]}" bulk "$addr" "$port" "$hello" \
      "$BULK" "${src[@]}") || die "$cfg: bulk: $out"
    c1=$(core0)
    [ -n "$pid" ] && t1=$(ticks "$pid")
    echo "$cfg bulk: $out core0_ticks=$((c1 - c0))" | tee -a "$LOG" >&2
    cpu=""
    [ -n "$pid" ] && cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v b="$BULK" \
      'BEGIN{printf "%.2f", d / hz / (b / 1e9)}')
    printf '%sbulk\t%s\t%s\t\t\t%s\n' "$tag" "$cfg" "$(field gbps "$out")" "$cpu" >>"$RESULTS"
  fi

  # (d) keep-alive HTTP: KA requests, KA_PER on each connection, PAR
  # connections at a time, to port 80 (moat: its http listener; moat-tp and
  # the transparent rows: redirected; moat-connect: a CONNECT tunnel to
  # port 80 of its name).
  if [[ $ld == *" ka "* ]]; then
    local kaddr=$addr kport=80 kpx=() host=$NAME req
    case $cfg in
    moat | moat-base) kport=$HPORT ;;
    moat-connect) kport=$LPORT kpx=(--connect "${TNAME[$cfg]}:80") host=${TNAME[$cfg]} ;;
    esac
    req=$WORK/request-$host.txt
    request "$host" "$req"
    warm_up "$cfg" "${kpx[@]}" ka "$kaddr" "$kport" "$req" 2000 "$PAR" "$KA_PER" "${src[@]}"
    [ -n "$pid" ] && t0=$(ticks "$pid")
    c0=$(core0)
    out=$(timeout 90 taskset -c $LOAD_CPU "$BIN/tcpload" "${kpx[@]}" ka "$kaddr" "$kport" "$req" \
      "$KA" "$PAR" "$KA_PER" "${src[@]}") || die "$cfg: ka: $out"
    c1=$(core0)
    [ -n "$pid" ] && t1=$(ticks "$pid")
    echo "$cfg ka: $out core0_ticks=$((c1 - c0))" | tee -a "$LOG" >&2
    local kcpu=""
    [ -n "$pid" ] && kcpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$KA" \
      'BEGIN{printf "%.2f", d / hz * 1e6 / n}')
    printf 'ka\t%s\t%s\t%s\t%s\t%s\n' "$cfg" "$(field rate "$out")" "$(field p50_us "$out")" \
      "$(field p99_us "$out")" "$kcpu" >>"$RESULTS"
  fi

  # (c) held connections (tunnels): before the hello (accepted, or the
  # tunnel set up; peeking where the proxy peeks) and after (spliced, idle).
  # Round 1 only. Not the relay: it is a reference for (a) and (b) only (it
  # keeps its pipes for a connection's life: 6 descriptors each).
  if [ "$round" = 1 ] && [ -n "$pid" ] && [[ $ld == *" hold "* ]]; then
    sleep 1 # let the last connections of (b) go
    local r0 f0 r1 f1 r2 f2 line
    r0=$(rss_kb "$pid")
    f0=$(nfds "$pid")
    coproc HOLDP { exec timeout 180 taskset -c $LOAD_CPU "$BIN/tcpload" "${px[@]}" hold "$addr" \
      "$port" "$hello" "$HOLD" "${src[@]}"; }
    local hin=${HOLDP[1]} hout=${HOLDP[0]} hpid=$HOLDP_PID
    read -r -t 100 line <&"$hout" || die "$cfg: hold: no connections"
    sleep 1.5
    r1=$(rss_kb "$pid")
    f1=$(nfds "$pid")
    echo go >&"$hin"
    read -r -t 60 line <&"$hout" || die "$cfg: hold: no replies"
    [ "$line" = "replied $HOLD" ] || echo "bench/tcp: $cfg hold: $line" >&2
    sleep 1.5
    r2=$(rss_kb "$pid")
    f2=$(nfds "$pid")
    local np
    np=$(nprocs "$pid")
    eval "exec $hin>&-"
    wait "$hpid" 2>/dev/null || true
    echo "$cfg hold: n=$HOLD rss_kb=$r0/$r1/$r2 fds=$f0/$f1/$f2 procs=$np ($line)" | tee -a "$LOG" >&2
    printf '%shold\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tag" "$cfg" \
      "$(awk -v a="$r0" -v b="$r1" -v n="$HOLD" 'BEGIN{printf "%.2f", (b - a) / n}')" \
      "$(awk -v a="$r0" -v b="$r2" -v n="$HOLD" 'BEGIN{printf "%.2f", (b - a) / n}')" \
      "$(awk -v a="$f0" -v b="$f1" -v n="$HOLD" 'BEGIN{printf "%.2f", (b - a) / n}')" \
      "$(awk -v a="$f0" -v b="$f2" -v n="$HOLD" 'BEGIN{printf "%.2f", (b - a) / n}')" \
      "$np" >>"$RESULTS"
  fi
  stop_proxy
}

# moat's explicit proxies run only with a moat that has them: `moat check`
# says whether it knows proxy.connect / proxy.socks; without them the rows
# are left out, said once.
RUN=()
for cfg in $CONFIGS; do
  case $cfg in
  moat-connect | moat-socks)
    moat_tunnel_yaml "$cfg" >"$WORK/$cfg.check.yaml"
    if ! "$MOAT" check "$WORK/$cfg.check.yaml" >"$WORK/$cfg.check.out" 2>&1; then
      echo "bench/tcp: $cfg: left out, this moat refuses its config: $(grep -m1 . "$WORK/$cfg.check.out")" |
        tee -a "$LOG" >&2
      continue
    fi
    ;;
  uring)
    if [ ! -x "$BIN/uringsni" ]; then # optional: needs liburing-dev at setup
      echo "bench/tcp: no $BIN/uringsni (liburing-dev): no uring row" >&2
      continue
    fi
    ;;
  direct | moat | moat-base | sniproxy | haproxy | haproxy-splice | squid | squid-peek | tinyproxy | \
    dante | microsocks | relay | moat-off | moat-tp | moat-tp-base) ;;
  *) die "unknown configuration $cfg" ;;
  esac
  RUN+=("$cfg")
done

# Rounds: the loads of every configuration, in turn, ROUNDS times (the held
# connections, memory, in the first round only). This VM's CPU time per
# connection moves by ±20 % between minutes (its neighbours, not us: steal
# time reads 0), so one run per configuration can put any of them ahead; the
# table takes each configuration's median over rounds that alternate with
# its peers'.
for round in $(seq "$ROUNDS"); do
  NFT=0
  for cfg in "${RUN[@]}"; do
    case $cfg in
    moat-off | relay | moat-tp | moat-tp-base)
      # Transparent ones last: the NAT table turns on conntrack for every
      # connection in the namespace, which the others should not pay.
      if [ $NFT -eq 0 ]; then
        nft_on
        NFT=1
      fi
      ;;
    *) [ $NFT -eq 0 ] || echo "bench/tcp: $cfg runs with conntrack on (put it before moat-off/relay/moat-tp)" >&2 ;;
    esac
    echo "bench/tcp: round $round/$ROUNDS: $cfg" >&2
    measure "$cfg" "$round"
  done
  nft_off
done

# ---- the table --------------------------------------------------------------------------------
echo
python3 "$ROOT/bench/tcp/table.py" "$RESULTS" "$CONNS" "$BULK" "$HOLD" "$ROUNDS" "$TUNNELS" "$KA" "$KA_PER"
