# Peer lifecycle end to end: two clients bring up the configs the API returned and reach a host
# behind the node; the API refuses callers without the secret; a deleted peer loses its tunnel
# while the other keeps working.
let
  common = import ./common.nix;
in {
  name = "waylume-peer-lifecycle";

  nodes = {
    node = common.nodeModule;
    client1 = common.clientModule 1;
    client2 = common.clientModule 2;
    web = common.webModule;
  };

  testScript = ''
    ${common.prelude}
    start_all()
    node.wait_for_unit("waylume-server.service")
    web.wait_for_unit("nginx.service")

    with subtest("the daemon brought up the link with a key of its own, as its own user"):
        node.succeed("ip -d link show wg0 | grep -q wireguard")
        node.succeed("test $(systemctl show -P User waylume-server.service) = waylume-server")
        node.succeed("test $(stat -c %U:%a /var/lib/waylume-server/private.key) = waylume-server:600")
        # Root's files stay closed to it: the API secret is handed over as a credential.
        node.fail("setpriv --reuid waylume-server --regid waylume-server --clear-groups cat /etc/waylume/api-secret")
        node.succeed("ip addr show wg0 | grep -q 'inet ${common.nodeTunnel}/24'")
        node.succeed("test -s /var/lib/waylume-server/private.key")
        listen = node.succeed("wg show wg0 listen-port").strip()
        assert listen == "51820", f"wg0 listens on {listen}"

    with subtest("the API answers health checks and wants signed requests"):
        client1.wait_until_succeeds("curl -sf --max-time 5 http://192.168.1.1:3000/health", timeout=30)
        code = client1.succeed("curl -s -o /dev/null -w '%{http_code}' http://192.168.1.1:3000/api/peers").strip()
        assert code == "401", f"an unsigned request was answered {code}"
        node.fail("WAYLUME_API_SECRET=wrong waylume-server peers list")

    with subtest("two peers connect with the returned configs"):
        peer1 = connect(client1, "wl0")
        peer2 = connect(client2, "wl0")
        assert tunnel_ip(peer1) != tunnel_ip(peer2), "two peers got one address"
        for client in (client1, client2):
            client.wait_until_succeeds("ping -c 1 -W 2 ${common.nodeTunnel}", timeout=30)
            client.succeed("curl -sf --max-time 10 http://${common.web}/ | grep -q 'behind the node'")
        listed = peer_ids()
        assert {peer1["peer_id"], peer2["peer_id"]} <= listed, f"list is {listed}"
        handshakes = node.succeed("wg show wg0 latest-handshakes")
        assert all(int(line.split()[1]) > 0 for line in handshakes.splitlines()), handshakes

    with subtest("a deleted peer loses its tunnel, the other keeps it"):
        node.succeed(f"{CLI} peers delete {peer1['peer_id']}")
        node.wait_until_fails(f"wg show wg0 allowed-ips | grep -q '{tunnel_ip(peer1)}/'", timeout=20)
        client1.fail("curl -sf --max-time 5 http://${common.web}/")
        client2.succeed("curl -sf --max-time 10 http://${common.web}/")
        node.fail(f"{CLI} peers get {peer1['peer_id']}")
  '';
}
