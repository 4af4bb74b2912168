#!/usr/bin/env bash
# examples/proxy-only/run.sh up|exec CMD...|test|down: a sandbox whose only
# way out is moat's explicit proxies (HTTP CONNECT and SOCKS5), the way agent
# sandboxes, CI jobs and pods are gated with HTTPS_PROXY / ALL_PROXY; built
# in network namespaces on one machine (see README.md beside this file).
#
#   moatpo-guest  eth0 198.18.8.2  no route but its own link; programs run
#        │ veth    with HTTPS_PROXY, HTTP_PROXY, ALL_PROXY set (`exec`)
#   moatpo-gate   gw0 198.18.8.1: moat's DNS (53), connect (3128) and socks
#        │ veth    (1080) listeners; nftables: the guest may reach those
#        │         ports and nothing else; no forwarding
#   moatpo-inet   eth0 198.18.9.2; nginx allowed.test 198.18.7.10, blocked.test
#                  198.18.7.11; dnsmasq 198.18.7.53 (moat's upstream)
#
# MOAT=path picks the binary (default build/moat); STATE=dir the work
# directory (default /tmp/moat-example-proxy-only).
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

GUEST=moatpo-guest GATE=moatpo-gate INET=moatpo-inet
STATE=${STATE:-/tmp/moat-example-proxy-only}
GW=198.18.8.1

up() {
  need_root_and_tools
  MOAT_BIN=$(moat_bin)
  teardown "$GUEST" "$GATE" "$INET" # a half-built earlier run
  mkdir -p "$STATE" && chmod 755 "$STATE"

  # 1. Three namespaces, two links.
  ip netns add "$GUEST"; ip netns add "$GATE"; ip netns add "$INET"
  ip link add gw0 netns "$GATE" type veth peer name eth0 netns "$GUEST"
  ip link add up0 netns "$GATE" type veth peer name eth0 netns "$INET"
  for ns in "$GUEST" "$GATE" "$INET"; do nsx "$ns" ip link set lo up; done

  # 2. Addresses. The guest gets its link and no default route: it can
  # talk to the gate's address and nothing else. The gate does not forward.
  nsx "$GUEST" ip addr add 198.18.8.2/24 dev eth0
  nsx "$GUEST" ip link set eth0 up
  nsx "$GATE" ip addr add $GW/24 dev gw0
  nsx "$GATE" ip addr add 198.18.9.1/24 dev up0
  nsx "$GATE" ip link set gw0 up
  nsx "$GATE" ip link set up0 up
  nsx "$GATE" ip route add 198.18.7.0/24 via 198.18.9.2
  nsx "$GATE" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
  nsx "$INET" ip addr add 198.18.9.2/24 dev eth0
  nsx "$INET" ip link set eth0 up
  for a in 198.18.7.10 198.18.7.11 198.18.7.53; do nsx "$INET" ip addr add $a/32 dev lo; done

  # 3. The gate's firewall for the guest's link: moat's ports, replies and
  # ICMP in; nothing else in, nothing forwarded. A guest that adds a route
  # of its own still reaches only moat.
  nsx "$GATE" nft -f - <<NFT
table inet moat_proxy_only {
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "gw0" ct state established,related accept
    iifname "gw0" meta l4proto { icmp, ipv6-icmp } accept
    iifname "gw0" udp dport 53 accept
    iifname "gw0" tcp dport { 53, 3128, 1080 } accept
    iifname "gw0" drop
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    iifname "gw0" drop
  }
}
NFT

  # 4. The internet: nginx (allowed.test, blocked.test) and dnsmasq.
  make_cert "$STATE"
  start_internet "$INET" 198.18.7.10 198.18.7.11 198.18.7.53

  # 5. moat in the gate: the explicit proxies and DNS on the guest's link,
  # no transparent, tls or http listener.
  cat > "$STATE/moat.yaml" <<YAML
dns:
  listen: ["$GW:53"]
  upstream: ["198.18.7.53:53"]
proxy:
  connect: ["$GW:3128"]   # HTTP CONNECT and absolute-form: HTTPS_PROXY, HTTP_PROXY
  socks: ["$GW:1080"]     # SOCKS5: ALL_PROXY=socks5h://...
  tls: []
  http: []
log: {allowed: true}
shutdown_grace: 1s
allow:
  - allowed.test
YAML
  "$MOAT_BIN" check "$STATE/moat.yaml" > /dev/null
  start_moat "$GATE"

  # 6. The guest's resolver is moat too (for programs that look a name up
  # before they use the proxy; ip netns exec mounts this file over
  # /etc/resolv.conf).
  mkdir -p "/etc/netns/$GUEST"
  echo "nameserver $GW" > "/etc/netns/$GUEST/resolv.conf"
  echo "up: guest $GUEST, gate $GATE (moat log $STATE/moat.log), internet $INET"
  echo "try: $0 exec curl https://allowed.test/"
}

# Run a command in the guest with the proxy settings (both spellings: curl
# reads the lower-case http_proxy only) and the example's CA certificate.
guest_exec() {
  [[ -f $STATE/moat.yaml ]] || { echo "$0: not up (run: $0 up)" >&2; exit 1; }
  local http=http://$GW:3128 socks=socks5h://$GW:1080
  exec ip netns exec "$GUEST" env \
    HTTPS_PROXY="$http" https_proxy="$http" HTTP_PROXY="$http" http_proxy="$http" \
    ALL_PROXY="$socks" all_proxy="$socks" NO_PROXY= no_proxy= \
    CURL_CA_BUNDLE="$STATE/cert.pem" SSL_CERT_FILE="$STATE/cert.pem" \
    GIT_SSL_CAINFO="$STATE/cert.pem" "$@"
}

down() {
  PATH=$PATH:/usr/sbin:/sbin
  teardown "$GUEST" "$GATE" "$INET"
}

smoke() {
  local c=(guest_exec curl -sS --max-time 10)
  # guest_exec replaces its shell: each runs in a subshell
  echo "--- curl https://allowed.test/ (HTTPS_PROXY: CONNECT, allowed)"; ("${c[@]}" https://allowed.test/)
  echo "--- curl http://allowed.test/ (HTTP_PROXY: absolute form, allowed)"; ("${c[@]}" http://allowed.test/)
  echo "--- curl https://blocked.test/ (CONNECT refused: 403)"
  if ("${c[@]}" https://blocked.test/); then echo "FAIL: blocked.test answered"; return 1; fi
  echo "--- curl --noproxy '*' https://allowed.test/ (no way out but moat)"
  if ("${c[@]}" --noproxy '*' --max-time 3 --resolve allowed.test:443:198.18.7.10 \
    https://allowed.test/); then echo "FAIL: the guest got out"; return 1; fi
  echo "--- ALL_PROXY only: curl https://allowed.test/ over SOCKS5"
  (guest_exec env -u HTTPS_PROXY -u https_proxy curl -sS --max-time 10 https://allowed.test/)
}

case ${1:-} in
  up) up ;;
  exec) shift; [[ $# -gt 0 ]] || { echo "usage: $0 exec CMD [ARG...]" >&2; exit 1; }; guest_exec "$@" ;;
  down) down ;;
  test) smoke ;;
  *) echo "usage: $0 up|exec CMD...|test|down" >&2; exit 1 ;;
esac
