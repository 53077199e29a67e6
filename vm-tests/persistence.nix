# Peers and their usage survive a daemon restart (the data plane keeps forwarding meanwhile)
# and a reboot of the node, after which clients reconnect with the configs they already have.
let
  common = import ./common.nix;
in {
  name = "waylume-persistence";

  nodes = {
    node = common.nodeModule;
    client1 = common.clientModule 1;
    web = common.webModule;
  };

  testScript = ''
    ${common.prelude}
    start_all()
    node.wait_for_unit("waylume-server.service")
    web.wait_for_unit("nginx.service")
    peer = connect(client1, "wl0", "--download-kbps 5000 --upload-kbps 5000")
    client1.wait_until_succeeds("ping -c 1 -W 2 ${common.web}", timeout=30)
    client1.succeed("ping -c 20 -i 0.2 -s 1000 ${common.web}")
    node.wait_until_succeeds(
        f"{CLI} peers get {peer['peer_id']} | jq -e '[to_entries[] | select((.key | test(\"bytes\")) and (.key | test(\"cap\") | not)) | .value] | add > 20000'",
        timeout=30,
    )
    before = usage(peer["peer_id"])
    assert before, "the peer reports no byte counters"

    with subtest("the data plane keeps forwarding while the daemon is down"):
        node.systemctl("stop waylume-server.service")
        client1.succeed("ping -c 3 -W 2 ${common.web}")
        node.succeed(f"wg show wg0 allowed-ips | grep -q '{tunnel_ip(peer)}/'")

    with subtest("a restart keeps the peer, its limit and its usage"):
        node.systemctl("start waylume-server.service")
        node.wait_for_unit("waylume-server.service")
        after = usage(peer["peer_id"])
        assert all(after.get(k, -1) >= v for k, v in before.items()), f"usage went back: {before} -> {after}"
        node.succeed("tc class show dev wg0 | grep -q 'rate 5Mbit'")
        client1.succeed("ping -c 3 -W 2 ${common.web}")

    with subtest("a reboot keeps the peer, its key and its usage"):
        pubkey = node.succeed("wg show wg0 public-key").strip()
        node.shutdown()
        node.start()
        node.wait_for_unit("waylume-server.service")
        assert node.succeed("wg show wg0 public-key").strip() == pubkey, "the node's key changed"
        after = usage(peer["peer_id"])
        assert all(after.get(k, -1) >= v for k, v in before.items()), f"usage went back: {before} -> {after}"
        client1.wait_until_succeeds("ping -c 1 -W 2 ${common.web}", timeout=60)

    with subtest("a deleted peer stays deleted across a restart"):
        node.succeed(f"{CLI} peers delete {peer['peer_id']}")
        node.systemctl("restart waylume-server.service")
        node.wait_for_unit("waylume-server.service")
        node.fail(f"{CLI} peers get {peer['peer_id']}")
        client1.fail("ping -c 2 -W 1 ${common.web}")
  '';
}
