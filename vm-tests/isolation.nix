# Isolation: a peer reaches the internet behind the node but neither another peer nor a private
# network behind it. The same host answers on a public and on a private address, so only the
# destination differs between the allowed and the refused case. Run with both firewall backends.
let
  common = import ./common.nix;
in {
  name = "waylume-isolation";

  nodes = {
    node = {
      imports = [common.nodeModule];
      # The positive control: the same node with both rules off, switched to at the end.
      specialisation.open.configuration.services.waylume-server.settings.dataplane = {
        isolation = false;
        block_private_networks = false;
      };
    };
    client1 = common.clientModule 1;
    client2 = common.clientModule 2;
    web = common.webModule;
  };

  testScript = ''
    ${common.prelude}
    start_all()
    node.wait_for_unit("waylume-server.service")
    web.wait_for_unit("nginx.service")
    peer1 = connect(client1, "wl0")
    peer2 = connect(client2, "wl0")
    client1.wait_until_succeeds("ping -c 1 -W 2 ${common.nodeTunnel}", timeout=30)
    client2.wait_until_succeeds("ping -c 1 -W 2 ${common.nodeTunnel}", timeout=30)

    with subtest("the internet behind the node is reachable"):
        client1.succeed("ping -c 2 -W 2 ${common.web}")
        client1.succeed("curl -sf --max-time 10 http://${common.web}/")

    with subtest("peers cannot reach each other"):
        client1.fail(f"ping -c 2 -W 2 {tunnel_ip(peer2)}")
        client2.fail(f"ping -c 2 -W 2 {tunnel_ip(peer1)}")

    with subtest("private networks behind the node are out of reach"):
        client1.fail("ping -c 2 -W 2 ${common.webPrivate}")
        client1.fail("curl -sf --max-time 5 http://${common.webPrivate}/")

    with subtest("the rules hold without the daemon"):
        node.systemctl("stop waylume-server.service")
        client1.fail(f"ping -c 2 -W 2 {tunnel_ip(peer2)}")
        client1.fail("ping -c 2 -W 2 ${common.webPrivate}")
        client1.succeed("ping -c 2 -W 2 ${common.web}")

    with subtest("positive control: without the rules the same paths work"):
        node.succeed("/run/current-system/specialisation/open/bin/switch-to-configuration test")
        node.systemctl("start waylume-server.service")
        node.wait_for_unit("waylume-server.service")
        client1.wait_until_succeeds("ping -c 1 -W 2 ${common.webPrivate}", timeout=30)
        client1.succeed("curl -sf --max-time 5 http://${common.webPrivate}/")
        client1.wait_until_succeeds(f"ping -c 1 -W 2 {tunnel_ip(peer2)}", timeout=30)
  '';
}
