#!/bin/bash
# Kernel-path smoke test: the WireGuard module loads and a kernel WireGuard link can be created,
# configured and carries a handshake between two namespaces. It needs no daemon.
# shellcheck source=tests/vm/lib.sh
. /lib.sh

check "wireguard module loaded" grep -q '^wireguard ' /proc/modules
check "ip link add type wireguard" ip link add wlsmoke0 type wireguard
check "wg shows the kernel link" wg show wlsmoke0
check_not "no userspace UAPI socket (this is the kernel backend)" test -S /run/wireguard/wlsmoke0.sock
ip link del wlsmoke0

# Two namespaces joined by a veth, each with a kernel WireGuard link: a ping through the tunnel
# proves the module's crypto and routing, not just netlink.
ip netns add wls-a && ip netns add wls-b
ip link add wls-va netns wls-a type veth peer name wls-vb netns wls-b
ip -n wls-a addr add 192.0.2.1/24 dev wls-va && ip -n wls-a link set wls-va up
ip -n wls-b addr add 192.0.2.2/24 dev wls-vb && ip -n wls-b link set wls-vb up
umask 077
wg genkey >/tmp/a.key && wg pubkey </tmp/a.key >/tmp/a.pub
wg genkey >/tmp/b.key && wg pubkey </tmp/b.key >/tmp/b.pub
for side in a b; do ip -n wls-$side link add wls$side type wireguard; done
ip netns exec wls-a wg set wlsa listen-port 51820 private-key /tmp/a.key \
    peer "$(cat /tmp/b.pub)" allowed-ips 10.99.0.2/32
ip netns exec wls-b wg set wlsb private-key /tmp/b.key \
    peer "$(cat /tmp/a.pub)" endpoint 192.0.2.1:51820 allowed-ips 10.99.0.1/32
ip -n wls-a addr add 10.99.0.1/24 dev wlsa && ip -n wls-a link set wlsa up
ip -n wls-b addr add 10.99.0.2/24 dev wlsb && ip -n wls-b link set wlsb up
check "ping through a kernel WireGuard tunnel" ip netns exec wls-b ping -c 2 -W 3 10.99.0.1
check "handshake recorded" bash -c '[ "$(ip netns exec wls-a wg show wlsa latest-handshakes | cut -f2)" -gt 0 ]'
check_not "a host outside the allowed IPs is not routed" ip netns exec wls-b ping -c 1 -W 1 10.99.0.3
ip netns del wls-a; ip netns del wls-b

[ "$FAILED" = 0 ]
