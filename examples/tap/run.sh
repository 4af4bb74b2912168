#!/usr/bin/env bash
# examples/tap/run.sh up|down|test: moat in front of a TAP-style guest, built
# in network namespaces on one machine (see README.md beside this file).
#
#   moattap-guest  eth0 198.18.1.2 fd00:18:1::2  (the "VM")
#        │ veth (stands in for the TAP device: a TAP needs a VM on its other end)
#   moattap-gate   tap0 198.18.1.1 fd00:18:1::1  moat + `moat nft ... --iface tap0`
#        │ veth
#   moattap-inet   eth0 198.18.2.2 fd00:18:2::2; nginx allowed.test 198.18.3.10,
#                  blocked.test 198.18.3.11; dnsmasq 198.18.3.53 (moat's upstream)
#
# MOAT=path picks the binary (default build/moat); STATE=dir the work
# directory (default /tmp/moat-example-tap).
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

GUEST=moattap-guest GATE=moattap-gate INET=moattap-inet
STATE=${STATE:-/tmp/moat-example-tap}

up() {
  need_root_and_tools
  MOAT_BIN=$(moat_bin)
  teardown "$GUEST" "$GATE" "$INET" # a half-built earlier run
  mkdir -p "$STATE" && chmod 755 "$STATE"

  # 1. Three namespaces, two links.
  ip netns add "$GUEST"; ip netns add "$GATE"; ip netns add "$INET"
  ip link add tap0 netns "$GATE" type veth peer name eth0 netns "$GUEST"
  ip link add up0 netns "$GATE" type veth peer name eth0 netns "$INET"
  for ns in "$GUEST" "$GATE" "$INET"; do nsx "$ns" ip link set lo up; done

  # 2. Addresses and routes (nodad: usable at once, no IPv6 duplicate detection wait).
  nsx "$GUEST" ip addr add 198.18.1.2/24 dev eth0
  nsx "$GUEST" ip addr add fd00:18:1::2/64 dev eth0 nodad
  nsx "$GUEST" ip link set eth0 up
  nsx "$GUEST" ip route add default via 198.18.1.1
  nsx "$GUEST" ip -6 route add default via fd00:18:1::1
  nsx "$GATE" ip addr add 198.18.1.1/24 dev tap0
  nsx "$GATE" ip addr add fd00:18:1::1/64 dev tap0 nodad
  nsx "$GATE" ip addr add 198.18.2.1/24 dev up0
  nsx "$GATE" ip addr add fd00:18:2::1/64 dev up0 nodad
  nsx "$GATE" ip link set tap0 up
  nsx "$GATE" ip link set up0 up
  nsx "$GATE" ip route add 198.18.3.0/24 via 198.18.2.2
  nsx "$GATE" ip -6 route add fd00:18:3::/64 via fd00:18:2::2
  # The gate routes, like a real VM host: without the ruleset the guest
  # could reach the internet directly. The ruleset is what stops it.
  nsx "$GATE" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  nsx "$INET" ip addr add 198.18.2.2/24 dev eth0
  nsx "$INET" ip addr add fd00:18:2::2/64 dev eth0 nodad
  nsx "$INET" ip link set eth0 up
  for a in 198.18.3.10 198.18.3.11 198.18.3.53; do nsx "$INET" ip addr add $a/32 dev lo; done
  nsx "$INET" ip addr add fd00:18:3::10/128 dev lo nodad
  nsx "$INET" ip route add 198.18.1.0/24 via 198.18.2.1
  nsx "$INET" ip -6 route add fd00:18:1::/64 via fd00:18:2::1

  # 3. The internet: nginx and dnsmasq.
  make_cert "$STATE"
  start_internet "$INET" 198.18.3.10 198.18.3.11 198.18.3.53

  # 4. moat in the gate: DNS and the transparent listener on every address
  # (a REDIRECT lands on tap0's own address), upstream the internet's DNS.
  cat > "$STATE/moat.yaml" <<YAML
dns:
  listen: ["0.0.0.0:53", "[::]:53"]
  upstream: ["198.18.3.53:53"]
proxy:
  transparent: ["0.0.0.0:15001", "[::]:15001"]
  tls: []
  http: []
log: {allowed: true}
shutdown_grace: 1s
allow:
  - allowed.test
YAML
  "$MOAT_BIN" check "$STATE/moat.yaml" > /dev/null
  start_moat "$GATE"

  # 5. The ruleset, generated from the same config, applied in the gate.
  "$MOAT_BIN" nft "$STATE/moat.yaml" --iface tap0 > "$STATE/ruleset.nft"
  nsx "$GATE" nft -f "$STATE/ruleset.nft"

  # 6. The guest's resolver is moat (ip netns exec bind-mounts this file
  # over /etc/resolv.conf for commands run in the guest).
  mkdir -p "/etc/netns/$GUEST"
  echo "nameserver 198.18.1.1" > "/etc/netns/$GUEST/resolv.conf"
  echo "up: guest $GUEST, gate $GATE (moat log $STATE/moat.log), internet $INET"
  echo "try: ip netns exec $GUEST curl --cacert $STATE/cert.pem https://allowed.test/"
}

down() {
  PATH=$PATH:/usr/sbin:/sbin
  teardown "$GUEST" "$GATE" "$INET"
}

smoke() {
  local c=(ip netns exec "$GUEST" curl -sS --max-time 10 --cacert "$STATE/cert.pem")
  echo "--- curl https://allowed.test/ (allowed)"; "${c[@]}" https://allowed.test/
  echo "--- curl https://blocked.test/ (blocked: TLS access_denied alert)"
  if "${c[@]}" https://blocked.test/; then echo "FAIL: blocked.test answered"; return 1; fi
  echo "--- dig blocked.test (sinkholed)"
  ip netns exec "$GUEST" dig +short +time=3 +tries=1 blocked.test
  echo "--- dig @198.18.3.53 blocked.test (a hard-coded resolver: redirected to moat too)"
  ip netns exec "$GUEST" dig +short +time=3 +tries=1 @198.18.3.53 blocked.test
}

case ${1:-} in
  up) up ;;
  down) down ;;
  test) smoke ;;
  *) echo "usage: $0 up|down|test" >&2; exit 1 ;;
esac
