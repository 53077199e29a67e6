# Switching the node to a changed configuration (`nixos-rebuild switch` in the field; here the
# specialisation's switch-to-configuration) restarts the daemon with the new settings and keeps
# the link, its peers and their traffic.
let
  common = import ./common.nix;
in {
  name = "waylume-switch";

  nodes = {
    node = {
      imports = [common.nodeModule];
      specialisation.changed.configuration = {lib, ...}: {
        services.waylume-server.settings = {
          node.city = "Changed City";
          # common.nix sets 2: a specialisation's definition adds to the parent's.
          dataplane.reconcile_interval_secs = lib.mkForce 3;
        };
      };
    };
    client1 = common.clientModule 1;
    web = common.webModule;
  };

  testScript = ''
    ${common.prelude}
    start_all()
    node.wait_for_unit("waylume-server.service")
    web.wait_for_unit("nginx.service")
    peer = connect(client1, "wl0")
    client1.wait_until_succeeds("ping -c 1 -W 2 ${common.web}", timeout=30)
    ifindex = node.succeed("cat /sys/class/net/wg0/ifindex").strip()
    invocation = node.succeed("systemctl show -P InvocationID waylume-server.service").strip()
    node.fail("grep -q 'Changed City' $(systemctl show -P ExecStart waylume-server.service | grep -o '/nix/store/[^ ]*toml')")

    with subtest("switch to the changed configuration"):
        node.succeed("/run/current-system/specialisation/changed/bin/switch-to-configuration test")
        node.wait_for_unit("waylume-server.service")
        assert node.succeed("systemctl show -P InvocationID waylume-server.service").strip() != invocation, "the daemon was not restarted"
        node.succeed("grep -q 'Changed City' $(systemctl show -P ExecStart waylume-server.service | grep -o '/nix/store/[^ ]*toml')")

    with subtest("the link and its peers are kept"):
        assert node.succeed("cat /sys/class/net/wg0/ifindex").strip() == ifindex, "wg0 was recreated"
        assert peer["peer_id"] in peer_ids()
        client1.succeed("ping -c 3 -W 2 ${common.web}")
        client1.succeed("curl -sf --max-time 10 http://${common.web}/")
  '';
}
