#!/usr/bin/env bash
# examples/gvproxy/run.sh up|down|test: moat in front of a user-mode
# (gvproxy-style) guest network, simulated in network namespaces with
# slirp4netns, the same architecture as gvproxy (see README.md beside this
# file):
#
#   moatgv-guest  tap0 198.18.6.100 (the "VM"; its stack ends in a user-mode
#        │         network process, not in a kernel route)
#        │ slirp4netns, run as uid 65534 (stand-in for gvproxy, run as its own user)
#   moatgv-host   up0 198.18.4.1; moat on 127.0.0.1 (DNS :53, transparent :15001);
#        │         nftables: the user-mode stack's DNS -> moat's DNS, its TCP ->
#        │         moat's transparent listener, the rest of its traffic dropped
#   moatgv-inet   eth0 198.18.4.2; nginx allowed.test 198.18.5.10, blocked.test
#                  198.18.5.11; dnsmasq 198.18.5.53 (moat's upstream)
#
# The guest's resolver is 198.18.6.2: slirp4netns's address for the host's
# loopback (gvproxy: a `nat` entry such as 192.168.127.254 -> 127.0.0.1), so
# its DNS lands on moat's 127.0.0.1:53.
# MOAT=path picks the binary (default build/moat); STATE=dir the work
# directory (default /tmp/moat-example-gvproxy).
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

GUEST=moatgv-guest HOST=moatgv-host INET=moatgv-inet
STATE=${STATE:-/tmp/moat-example-gvproxy}
NETUID=65534 # the user the user-mode network runs as (nobody)

up() {
  need_root_and_tools slirp4netns setpriv
  MOAT_BIN=$(moat_bin)
  teardown "$GUEST" "$HOST" "$INET"
  mkdir -p "$STATE" && chmod 755 "$STATE"

  # 1. Namespaces; the host and the internet share a link; the guest has
  # none yet (slirp4netns makes its tap0).
  ip netns add "$GUEST"; ip netns add "$HOST"; ip netns add "$INET"
  ip link add up0 netns "$HOST" type veth peer name eth0 netns "$INET"
  for ns in "$GUEST" "$HOST" "$INET"; do nsx "$ns" ip link set lo up; done
  nsx "$HOST" ip addr add 198.18.4.1/24 dev up0
  nsx "$HOST" ip link set up0 up
  nsx "$HOST" ip route add 198.18.5.0/24 via 198.18.4.2
  nsx "$INET" ip addr add 198.18.4.2/24 dev eth0
  nsx "$INET" ip link set eth0 up
  for a in 198.18.5.10 198.18.5.11 198.18.5.53; do nsx "$INET" ip addr add $a/32 dev lo; done

  # 2. The internet.
  make_cert "$STATE"
  start_internet "$INET" 198.18.5.10 198.18.5.11 198.18.5.53

  # 3. moat on the host's loopback: the user-mode network's connections are
  # local sockets, and a REDIRECT in the output hook lands on 127.0.0.1.
  cat > "$STATE/moat.yaml" <<YAML
dns:
  listen: ["127.0.0.1:53"]
  upstream: ["198.18.5.53:53"]
proxy:
  transparent: ["127.0.0.1:15001"]
  tls: []
  http: []
log: {allowed: true}
shutdown_grace: 1s
allow:
  - allowed.test
YAML
  "$MOAT_BIN" check "$STATE/moat.yaml" > /dev/null
  start_moat "$HOST"

  # 4. nftables on the host: every socket of the user-mode network's user
  # goes through moat. moat's own sockets (another user) are untouched.
  cat > "$STATE/ruleset.nft" <<NFT
table inet moat_usernet {}
delete table inet moat_usernet
table inet moat_usernet {
	chain output_nat {
		type nat hook output priority -100; policy accept;
		# the guest's DNS, whatever resolver it names -> moat's DNS
		meta skuid $NETUID meta l4proto { tcp, udp } th dport 53 counter redirect to :53
		# every other TCP connection -> moat's transparent listener
		meta skuid $NETUID meta l4proto tcp counter redirect to :15001
	}
	chain output_filter {
		type filter hook output priority 0; policy accept;
		# after the redirects (every TCP and DNS packet now goes to moat on
		# loopback): moat's two ports
		meta skuid $NETUID ip daddr 127.0.0.1 meta l4proto { tcp, udp } th dport 53 accept
		meta skuid $NETUID ip daddr 127.0.0.1 tcp dport 15001 accept
		# UDP (QUIC), ICMP, anything else the guest sends: dropped
		meta skuid $NETUID counter drop
	}
}
NFT
  nsx "$HOST" nft -f "$STATE/ruleset.nft"

  # 5. The user-mode network: slirp4netns as uid $NETUID (capabilities only
  # to enter the guest namespace and make its tap0), guest 198.18.6.100,
  # gateway 198.18.6.2 (= the host's loopback), its own DNS at .3 unused.
  nsx "$HOST" setpriv --reuid=$NETUID --regid=$NETUID --clear-groups \
    --inh-caps=+sys_admin,+net_admin,+dac_override \
    --ambient-caps=+sys_admin,+net_admin,+dac_override \
    slirp4netns --configure --mtu=1500 --cidr=198.18.6.0/24 --disable-dns \
    --netns-type=path "/run/netns/$GUEST" tap0 > "$STATE/slirp4netns.log" 2>&1 &
  echo $! > "$STATE/slirp4netns.extra.pid"
  wait_for 10 nsx "$GUEST" ip -4 route show default ||
    { echo "slirp4netns did not configure the guest:" >&2; cat "$STATE/slirp4netns.log" >&2; return 1; }

  mkdir -p "/etc/netns/$GUEST"
  echo "nameserver 198.18.6.2" > "/etc/netns/$GUEST/resolv.conf"
  echo "up: guest $GUEST, host $HOST (moat log $STATE/moat.log), internet $INET"
  echo "try: ip netns exec $GUEST curl --cacert $STATE/cert.pem https://allowed.test/"
}

down() {
  PATH=$PATH:/usr/sbin:/sbin
  teardown "$GUEST" "$HOST" "$INET"
}

smoke() {
  local c=(ip netns exec "$GUEST" curl -sS --max-time 10 --cacert "$STATE/cert.pem")
  echo "--- curl https://allowed.test/ (allowed)"; "${c[@]}" https://allowed.test/
  echo "--- curl https://blocked.test/ at its real address (blocked: TLS access_denied alert)"
  if "${c[@]}" --resolve blocked.test:443:198.18.5.11 https://blocked.test/; then
    echo "FAIL: blocked.test answered"; return 1
  fi
  echo "--- dig blocked.test (sinkholed)"
  ip netns exec "$GUEST" dig +short +time=3 +tries=1 blocked.test
}

case ${1:-} in
  up) up ;;
  down) down ;;
  test) smoke ;;
  *) echo "usage: $0 up|down|test" >&2; exit 1 ;;
esac
