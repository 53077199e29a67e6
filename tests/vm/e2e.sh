#!/bin/bash
# Kernel-path end-to-end scenario, run as PID 1's child inside the test VM.
#
# The VM's root namespace is the node: the daemon runs there with the kernel WireGuard backend.
# Three client namespaces (wl-a, wl-b, wl-c) reach it over veths and bring up the wg-quick file the
# API returned, the way a real client does (`wg-quick strip` + `wg setconf`); a fourth namespace
# (wl-inet) is the internet behind the node: its address is one hop past the node's link
# network, on a public documentation prefix, because the node fences every network it has an
# address in (a neighbour on the node's own link is a private host, not the internet).
#
#   wl-a  wa-c 172.31.1.2 ── wa-s 172.31.1.1 ┐
#   wl-b  wb-c 172.31.2.2 ── wb-s 172.31.2.1 ├ node (root ns), wg0 10.77.0.1/24, API on 127.0.0.1:3000
#   wl-c  wc-c 172.31.3.2 ── wc-s 172.31.3.1 ┘
#   wl-inet wi-c 203.0.113.2 ── wi-s 203.0.113.1   (and 192.168.77.2 ── 192.168.77.1, private)
#           lo 198.51.100.2, routed by the node via 203.0.113.2: the internet
# shellcheck source=tests/vm/lib.sh
. /lib.sh

SUBNET=10.77.0.0/24
NODE_WG=10.77.0.1
INET=198.51.100.2
PRIVATE=192.168.77.2
BIN=/usr/bin/waylume-server
[ -x "$BIN" ] || { echo "SKIP: no daemon in the image"; exit 1; }
# On any failure, the daemon's own account goes to the console too.
diagnostics() {
    [ "$FAILED" = 0 ] && return
    echo "---- daemon log"; tail -n 60 /tmp/daemon.log 2>/dev/null
    echo "---- wg show wg0"; wg show wg0 2>&1
    echo "---- nft list table inet waylume"; nft list table inet waylume 2>&1
    echo "---- tc -s class show dev wg0"; tc -s class show dev wg0 2>&1
}
trap diagnostics EXIT

# ---- underlay
sysctl -qw net.ipv4.ip_forward=1
n=1
for c in a b c; do
    ip netns add wl-$c
    ip -n wl-$c link set lo up
    ip link add w$c-s type veth peer name w$c-c netns wl-$c
    ip addr add 172.31.$n.1/24 dev w$c-s && ip link set w$c-s up
    ip -n wl-$c addr add 172.31.$n.2/24 dev w$c-c && ip -n wl-$c link set w$c-c up
    ip -n wl-$c route add default via 172.31.$n.1
    n=$((n + 1))
done
ip netns add wl-inet
ip -n wl-inet link set lo up
ip link add wi-s type veth peer name wi-c netns wl-inet
ip addr add 203.0.113.1/24 dev wi-s && ip link set wi-s up
ip -n wl-inet addr add 203.0.113.2/24 dev wi-c && ip -n wl-inet link set wi-c up
ip -n wl-inet addr add $INET/32 dev lo
ip -n wl-inet route add $SUBNET via 203.0.113.1
ip route add $INET/32 via 203.0.113.2
# The same host also sits on a private network behind the node.
ip addr add 192.168.77.1/24 dev wi-s
ip -n wl-inet addr add $PRIVATE/24 dev wi-c

# ---- node configuration (the module renders the same layout)
mkdir -p /etc/waylume /var/lib/waylume-server
umask 077
head -c 32 /dev/urandom | base64 >/etc/waylume/api-secret
cat >/etc/waylume/config.toml <<TOML
server_id = "vm-node"
state_dir = "/var/lib/waylume-server"

[api]
port = 3000
bind = "127.0.0.1"
secret_file = "/etc/waylume/api-secret"

[wireguard]
interface = "wg0"
backend = "kernel"
listen_port = 51820
subnet = "$SUBNET"
endpoint = "172.31.1.1:51820"
dns = ["$NODE_WG"]

[dataplane]
reconcile_interval_secs = 2
isolation = true
block_private_networks = true
shaping = true
firewall_backend = "nft"
TOML
export WAYLUME_CONFIG=/etc/waylume/config.toml
export WAYLUME_API_URL=http://127.0.0.1:3000
export WAYLUME_API_SECRET_FILE=/etc/waylume/api-secret

require "check-config accepts the node configuration" $BIN check-config --config $WAYLUME_CONFIG
printf '[wireguard]\nlisten_prot = 1\n' >/tmp/bad.toml
check_not "check-config rejects an unknown key" $BIN check-config --config /tmp/bad.toml

start_daemon() {
    $BIN serve --config $WAYLUME_CONFIG >>/tmp/daemon.log 2>&1 &
    DAEMON=$!
    wait_for 60 $BIN peers list
}
require "daemon serves the API" start_daemon
require "wg0 is a kernel WireGuard link" bash -c 'ip -d link show wg0 | grep -q wireguard'
check_not "no userspace WireGuard socket" test -S /run/wireguard/wg0.sock
check "nftables table inet waylume exists" nft list table inet waylume

# ---- peers and clients
# client_up NAME [create options...]: create a peer, bring its returned config up in wl-NAME.
client_up() {
    local c=$1 conf=/tmp/wl$1.conf; shift
    $BIN peers create "$@" >/tmp/peer-$c.json && test -s /tmp/peer-$c.json || return 1
    jq -e -r .peer_id /tmp/peer-$c.json >/tmp/peer-$c.id || return 1
    jq -e -r .config /tmp/peer-$c.json >$conf || return 1
    wg-quick strip $conf >/tmp/wl$c.setconf || return 1
    ip -n wl-$c link add wl$c type wireguard || return 1
    ip netns exec wl-$c wg setconf wl$c /tmp/wl$c.setconf || return 1
    local addr
    addr=$(sed -n 's/^Address *= *//p' $conf | tr ',' '\n' | tr -d ' ' | grep -v : | head -n1)
    [ -n "$addr" ] || return 1
    ip -n wl-$c addr add "$addr" dev wl$c
    ip -n wl-$c link set wl$c up
    # A split tunnel: the node's subnet and the internet prefix through WireGuard, the endpoint
    # over the underlay default route.
    ip -n wl-$c route add $SUBNET dev wl$c
    ip -n wl-$c route add $INET/32 dev wl$c
    ip -n wl-$c route add 192.168.77.0/24 dev wl$c
}
tunnel_ip() { jq -r .address /tmp/peer-$1.json | cut -d/ -f1; }
in_ns() { local c=$1; shift; ip netns exec wl-$c "$@"; }

require "peer A created and up" client_up a
require "peer B created and up" client_up b
check "create answer carries peer_id, address and a wg-quick config" \
    jq -e '.peer_id and .address and (.config | test("\\[Interface\\]"))' /tmp/peer-a.json
require "A reaches the node through the tunnel" in_ns a ping -c 2 -W 3 $NODE_WG
check "A reaches the internet behind the node" in_ns a ping -c 2 -W 3 $INET
check "B reaches the internet behind the node" in_ns b ping -c 2 -W 3 $INET
check "the node recorded a handshake" bash -c "wg show wg0 latest-handshakes | awk '\$2 > 0' | grep -q ."

# ---- isolation
check_not "A cannot reach B's tunnel address" in_ns a ping -c 2 -W 2 "$(tunnel_ip b)"
check "the node itself reaches the private network" ping -c 1 -W 2 $PRIVATE
check_not "A cannot reach the private network behind the node" in_ns a ping -c 2 -W 2 $PRIVATE

# ---- speed limit (download = internet -> client, measured by iperf3 -R on the client)
in_ns inet iperf3 -s >/tmp/iperf3-server.log 2>&1 &
IPERF=$!
wait_for 10 in_ns a timeout 5 iperf3 -c $INET -t 1 --connect-timeout 2000
rate() { # rate NAME [-R]: receiver bits/s
    in_ns "$1" timeout 20 iperf3 -c $INET -t 3 -J --connect-timeout 2000 ${2:-} | jq -e '.end.sum_received.bits_per_second | floor'
}
free_b=$(rate b -R || echo 0)
echo "measured: B unlimited download ${free_b} bit/s"
check "set A's speed limit to 2000/2000 kbit/s" $BIN peers speed-limit "$(cat /tmp/peer-a.id)" \
    --download-kbps 2000 --upload-kbps 2000
check "the limit reaches tc on wg0" wait_for 15 bash -c 'tc class show dev wg0 | grep -q "rate 2Mbit"'
down_a=$(rate a -R || echo 0)
up_a=$(rate a || echo 0)
echo "measured: A limited download ${down_a} bit/s, upload ${up_a} bit/s (limit 2000000)"
check "A's download stays within 25% above the limit" test "$down_a" -gt 0 -a "$down_a" -le 2500000
check "A's upload stays within 25% above the limit" test "$up_a" -gt 0 -a "$up_a" -le 2500000
check "an unlimited peer is faster than the limit" test "$free_b" -gt 4000000
kill $IPERF

# ---- data cap: C starts with a 200 kB cap; 1000-byte pings use it up and the node cuts C off.
check "peer C created with a 200000-byte cap and up" client_up c --data-cap-bytes 200000
check "C passes traffic under its cap" in_ns c ping -c 2 -W 3 -s 1000 $INET
# -w: ping's own deadline bounds the flood; the summary shows how much got through.
in_ns c ping -q -c 300 -i 0.01 -w 10 -s 1000 $INET 2>&1 | grep -a 'packets transmitted' | sed 's/^/measured: C flood: /'
check "C is cut off once the cap is used" wait_for 20 bash -c "! ip netns exec wl-c ping -c 1 -W 1 $INET"
check_not "C stays cut off" in_ns c ping -c 2 -W 1 $INET
check "B is not affected by C's cap" in_ns b ping -c 2 -W 3 $INET

# ---- delete
pub_a=$(wg show wg0 allowed-ips | awk -v ip="$(tunnel_ip a)/32" '$2 == ip {print $1}')
check "delete A" $BIN peers delete "$(cat /tmp/peer-a.id)"
check "A's key leaves wg0" wait_for 15 bash -c "! wg show wg0 peers | grep -qF -- '$pub_a'"
check_not "A no longer reaches the internet" in_ns a ping -c 2 -W 1 $INET

# ---- stop leaves the data plane up; a restart keeps peers
kill -TERM $DAEMON
wait $DAEMON
check "daemon exits 0 on SIGTERM" test $? = 0
check "wg0 survives the daemon stopping" ip link show wg0
check "B still passes traffic with the daemon stopped" in_ns b ping -c 2 -W 3 $INET
check "daemon restarts" start_daemon
check "B survives the restart" bash -c "$BIN peers get $(cat /tmp/peer-b.id) | jq -e .peer_id"
check "B passes traffic after the restart" in_ns b ping -c 2 -W 3 $INET
check_not "deleted A stays deleted" bash -c "$BIN peers get $(cat /tmp/peer-a.id)"
kill -TERM $DAEMON
wait $DAEMON

[ "$FAILED" = 0 ]
