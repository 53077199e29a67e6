# The cloud image's configuration boots to READY with its node settings and secrets from a
# config drive (cloud-init NoCloud, volume label `cidata`), none of them in the store. Without a
# config drive it still boots, and the daemon refuses to start with a line naming what is
# missing, once, instead of restarting in a loop.
let
  common = import ./common.nix;

  configDrive = pkgs:
    pkgs.runCommand "waylume-config-drive" {nativeBuildInputs = [pkgs.cdrkit];} ''
      mkdir drive
      cat > drive/meta-data <<'EOF'
      instance-id: waylume-vm-test-1
      local-hostname: waylume-image-test
      EOF
      cat > drive/user-data <<'EOF'
      #cloud-config
      write_files:
        - path: /etc/waylume/node.env
          permissions: "0644"
          content: |
            SERVER_ID=image-node
            SERVER_COUNTRY=NL
            SERVER_CITY=Amsterdam
            WAYLUME_ENDPOINT=192.168.1.1:51820
            WAYLUME_API_BIND=0.0.0.0
        - path: /etc/credstore/api-secret
          permissions: "0600"
          content: ${common.apiSecret}
      EOF
      mkdir $out
      genisoimage -volid cidata -joliet -rock -o $out/cidata.iso drive
    '';

  # `imageModule` is nix/image.nix, handed to the nodes by default.nix (node.specialArgs).
  imageNode = address: {
    imageModule,
    lib,
    ...
  }: {
    imports = [imageModule (common.staticAddress lib "eth1" [address])];
    virtualisation.vlans = [1];
    # The test network is static; in a cloud, cloud-init configures it.
    services.cloud-init.network.enable = lib.mkForce false;
    networking.useDHCP = false;
  };
in {
  name = "waylume-image-boot";

  nodes = {
    configured = {pkgs, ...}: {
      imports = [(imageNode "192.168.1.1")];
      virtualisation.qemu.options = ["-cdrom" "${configDrive pkgs}/cidata.iso"];
    };
    bare = imageNode "192.168.1.2";
    # Calls the API from outside, as the control plane would.
    client = common.clientModule 1;
  };

  testScript = ''
    start_all()

    with subtest("with a config drive the daemon reaches READY with the drive's settings"):
        configured.wait_for_unit("cloud-init.service")
        configured.wait_for_unit("waylume-server.service")
        configured.succeed("test $(systemctl show -P Type waylume-server.service) = notify")
        configured.succeed("test -s /etc/credstore/api-secret")
        configured.succeed(
            "WAYLUME_API_SECRET_FILE=/etc/credstore/api-secret SERVER_ID=image-node waylume-server peers list"
        )
        configured.succeed("ip -d link show wg0 | grep -q wireguard")

    with subtest("the API is reachable from outside the node"):
        client.wait_until_succeeds("curl -sf --max-time 5 http://192.168.1.1:3000/health", timeout=60)

    with subtest("neither settings nor secrets are in the store"):
        config_file = configured.succeed(
            "systemctl show -P ExecStart waylume-server.service | grep -o '/nix/store/[^ ]*toml' | head -n1"
        ).strip()
        configured.fail(f"grep -q -e image-node -e ${common.apiSecret} {config_file}")
        configured.fail("systemctl cat waylume-server.service | grep -q -e image-node -e ${common.apiSecret}")

    with subtest("without a config drive the image boots and the daemon says what is missing"):
        bare.wait_for_unit("multi-user.target")
        bare.wait_until_succeeds("systemctl is-failed waylume-server.service", timeout=60)
        bare.succeed("journalctl -u waylume-server.service | grep -i server_id")
        restarts = bare.succeed("systemctl show -P NRestarts waylume-server.service").strip()
        assert restarts == "0", f"the unit restarted {restarts} times"
        bare.succeed("systemctl is-active sshd.service")
  '';
}
