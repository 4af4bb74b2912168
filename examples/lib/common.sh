# shellcheck shell=bash
# examples/lib/common.sh: shared by examples/tap/run.sh and
# examples/gvproxy/run.sh (sourced, not run). Needs root, ip(8), nft(8),
# nginx, dnsmasq, openssl; every address is in 198.18.0.0/15 or fd00::/8.
set -euo pipefail

EX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# MOAT=path (default build/moat, relative to the clone when not found here).
moat_bin() {
  local m=${MOAT:-build/moat}
  if [[ $m != /* && ! -x $m && -x $EX_ROOT/$m ]]; then m=$EX_ROOT/$m; fi
  [[ -x $m ]] || { echo "moat binary not found: $m (build it, or set MOAT=path)" >&2; exit 1; }
  (cd "$(dirname "$m")" && echo "$(pwd)/$(basename "$m")")
}

need_root_and_tools() {
  [[ $(id -u) -eq 0 ]] || { echo "$0: needs root (network namespaces, nftables)" >&2; exit 1; }
  local t
  for t in ip nft nginx dnsmasq openssl "$@"; do
    command -v "$t" >/dev/null || [[ -x /usr/sbin/$t ]] ||
      { echo "$0: needs $t" >&2; exit 1; }
  done
  PATH=$PATH:/usr/sbin:/sbin
}

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# Wait (bounded) until a command succeeds.
wait_for() {
  local secs=$1; shift
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.1
  done
}

# A self-signed certificate for allowed.test and blocked.test.
make_cert() {
  local dir=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" -days 2 -subj /CN=allowed.test \
    -addext "subjectAltName=DNS:allowed.test,DNS:blocked.test" >/dev/null 2>&1
}

# The "internet": nginx (TLS on 443, HTTP on 80) for allowed.test on $2 and
# blocked.test on $3, and dnsmasq on $4:53 answering both names (A only: an
# fd00:: answer would be private space, which moat refuses for names).
# $1 is the namespace.
start_internet() {
  local ns=$1 a_ip=$2 b_ip=$3 dns_ip=$4 d=$STATE/nginx
  mkdir -p "$d/allowed" "$d/blocked"
  echo "allowed-site" > "$d/allowed/index.html"
  echo "blocked-site" > "$d/blocked/index.html"
  cat > "$d/nginx.conf" <<NGX
# example only: runs as root so it can read the state directory
user root;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 256; }
http {
  access_log $d/access.log;
  client_body_temp_path $d/t_body;
  proxy_temp_path $d/t_proxy;
  fastcgi_temp_path $d/t_fcgi;
  uwsgi_temp_path $d/t_uwsgi;
  scgi_temp_path $d/t_scgi;
  ssl_certificate $STATE/cert.pem;
  ssl_certificate_key $STATE/key.pem;
  server { listen $a_ip:443 ssl; listen $a_ip:80; server_name allowed.test; root $d/allowed; }
  server { listen $b_ip:443 ssl; listen $b_ip:80; server_name blocked.test; root $d/blocked; }
}
NGX
  nsx "$ns" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
  nsx "$ns" dnsmasq --no-resolv --no-hosts --bind-interfaces --listen-address="$dns_ip" \
    --port=53 --user=root --pid-file="$STATE/dnsmasq.pid" --log-facility="$STATE/dnsmasq.log" \
    --log-queries --local=/test/ --address="/allowed.test/$a_ip" --address="/blocked.test/$b_ip"
  wait_for 10 nsx "$ns" bash -c "exec 3<>/dev/tcp/$a_ip/443" ||
    { echo "nginx did not start" >&2; return 1; }
}

# moat in namespace $1 with config $STATE/moat.yaml, log $STATE/moat.log.
start_moat() {
  local ns=$1
  nsx "$ns" "$MOAT_BIN" -c "$STATE/moat.yaml" > /dev/null 2> "$STATE/moat.log" &
  echo $! > "$STATE/moat.pid"
  wait_for 10 grep -q "moat running" "$STATE/moat.log" ||
    { echo "moat did not start:" >&2; cat "$STATE/moat.log" >&2; return 1; }
}

# Stop what we started (pid files), then anything still in our namespaces
# (started by us: nothing else runs there), then remove the namespaces.
teardown() {
  local f ns pid
  for f in "$STATE"/moat.pid "$STATE"/nginx/nginx.pid "$STATE"/dnsmasq.pid "$STATE"/*.extra.pid; do
    [[ -f $f ]] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ ]]; then kill "$pid" 2>/dev/null || true; fi
  done
  for ns in "$@"; do
    if ip netns list | grep -qw "^$ns"; then
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
      for _ in $(seq 50); do [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break; sleep 0.1; done
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns delete "$ns"
    fi
    rm -rf "/etc/netns/$ns"
  done
  rmdir /etc/netns 2>/dev/null || true
  rm -rf "$STATE"
}
