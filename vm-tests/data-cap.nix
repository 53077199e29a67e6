# Data caps: a peer is cut off by the kernel once its cap is used, stays cut off, other peers are
# unaffected, and lifting the cap re-opens the peer.
let
  common = import ./common.nix;
in {
  name = "waylume-data-cap";

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
    capped = connect(client1, "wl0", "--data-cap-bytes 300000")
    connect(client2, "wl0")
    for client in (client1, client2):
        client.wait_until_succeeds("ping -c 1 -W 2 ${common.web}", timeout=30)

    with subtest("traffic passes under the cap"):
        client1.succeed("ping -c 3 -W 2 -s 1000 ${common.web}")

    with subtest("using up the cap cuts the peer off"):
        # About 2 x 1028 bytes a round trip: 400 rounds are well over 300000 bytes.
        client1.execute("ping -q -c 400 -i 0.01 -W 1 -s 1000 ${common.web}")
        client1.wait_until_fails("ping -c 1 -W 1 ${common.web}", timeout=30)
        client1.fail("ping -c 3 -W 1 ${common.web}")
        client1.fail("curl -sf --max-time 5 http://${common.web}/")
        peer = api(f"get {capped['peer_id']}")
        assert any(v is True for k, v in peer.items() if "capped" in k), f"not reported capped: {peer}"

    with subtest("other peers are unaffected"):
        client2.succeed("ping -c 3 -W 2 -s 1000 ${common.web}")

    with subtest("lifting the cap re-opens the peer"):
        node.succeed(f"{CLI} peers data-cap {capped['peer_id']} none")
        client1.wait_until_succeeds("ping -c 1 -W 1 ${common.web}", timeout=30)
  '';
}
