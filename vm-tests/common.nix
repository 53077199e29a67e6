# Shared pieces of the VM tests. Fixed addresses, so that scripts and configs can name them:
#
#   vlan 1 "access":   node eth1 192.168.1.1, clients eth1 192.168.1.11, 192.168.1.12, …
#   vlan 2 "internet": node eth2 203.0.113.1 and 172.16.50.1; web eth1 203.0.113.10 (public
#                      documentation prefix) and 172.16.50.10 (a private network behind the node)
#   tunnel:            10.77.0.0/24, the node is 10.77.0.1
#
# !!! The API secret below is a test fixture: a real secret never goes into the store.
rec {
  subnet = "10.77.0.0/24";
  nodeTunnel = "10.77.0.1";
  web = "203.0.113.10";
  webPrivate = "172.16.50.10";
  apiSecret = "5a4e4f4b45f0e1d2c3b4a5968778695a4b3c2d1e0f5a4e4f4b45f0e1d2c3b4a5";
  serverId = "vm-node";

  staticAddress = lib: iface: addresses: {
    networking.interfaces.${iface}.ipv4.addresses = lib.mkForce (map (address: {
        inherit address;
        prefixLength = 24;
      })
      addresses);
  };

  nodeModule = {
    lib,
    pkgs,
    ...
  }: {
    imports = [
      (staticAddress lib "eth1" ["192.168.1.1"])
      (staticAddress lib "eth2" ["203.0.113.1" "172.16.50.1"])
    ];
    virtualisation.vlans = [1 2];
    networking.useDHCP = false;
    networking.nftables.enable = lib.mkDefault true;

    environment.etc."waylume/api-secret" = {
      text = apiSecret;
      mode = "0600";
    };
    environment.systemPackages = [pkgs.jq pkgs.iperf3];

    services.waylume-server = {
      enable = true;
      openFirewall = true;
      apiAllowedSources = ["192.168.1.0/24"];
      apiSecretFile = "/etc/waylume/api-secret";
      settings = {
        server_id = serverId;
        api.bind = "0.0.0.0";
        wireguard = {
          inherit subnet;
          endpoint = "192.168.1.1:51820";
        };
        # Short rounds keep the tests quick; the watchdog still allows 30 s.
        dataplane.reconcile_interval_secs = 2;
        # The stand-in internet shares the node's link network, which the fence closes (a
        # neighbour on the node's own link is private); this opens that one network, as an
        # operator opens an internal service. 172.16.50.0/24 behind the node stays fenced.
        dataplane.allow_networks = ["203.0.113.0/24"];
      };
    };
  };

  clientModule = n: {
    lib,
    pkgs,
    ...
  }: {
    imports = [(staticAddress lib "eth1" ["192.168.1.${toString (10 + n)}"])];
    virtualisation.vlans = [1];
    networking.useDHCP = false;
    # wg-quick routes everything through the tunnel from a policy-routing table, which a strict
    # reverse-path filter (looking at the main table) would take for spoofing.
    networking.firewall.checkReversePath = "loose";
    environment.systemPackages = [pkgs.wireguard-tools pkgs.iperf3 pkgs.curl pkgs.jq];
  };

  webModule = {lib, ...}: {
    imports = [(staticAddress lib "eth1" [web webPrivate])];
    virtualisation.vlans = [2];
    networking.useDHCP = false;
    # Replies to peers go back through the node.
    networking.interfaces.eth1.ipv4.routes = [
      {
        address = "10.77.0.0";
        prefixLength = 24;
        via = "203.0.113.1";
      }
    ];
    services.nginx = {
      enable = true;
      virtualHosts.web = {
        default = true;
        locations."/".return = "200 'behind the node'";
      };
    };
    services.iperf3 = {
      enable = true;
      openFirewall = true;
    };
    networking.firewall.allowedTCPPorts = [80];
  };

  # Python helpers shared by the test scripts.
  prelude = ''
    import json

    # The operator CLI on the node, with the secret and the server id it signs requests for
    # (without SERVER_ID it would sign for the host name, and the daemon answer 401).
    CLI = "SERVER_ID=${serverId} WAYLUME_API_SECRET_FILE=/etc/waylume/api-secret waylume-server"

    def api(args):
        """Run `peers ARGS` on the node and parse its JSON answer."""
        return json.loads(node.succeed(f"{CLI} peers {args}"))

    def peer_ids():
        listed = api("list")
        if isinstance(listed, dict):
            listed = listed.get("peers", [])
        return {p["peer_id"] for p in listed}

    def connect(client, iface, args=""):
        """Create a peer and bring the returned wg-quick config up on `client`, as a user would."""
        peer = api(f"create {args}")
        client.succeed(
            f"install -D -m 600 /dev/stdin /etc/wireguard/{iface}.conf <<'EOF'\n{peer['config']}\nEOF"
        )
        client.succeed(f"wg-quick up {iface}")
        return peer

    def tunnel_ip(peer):
        return peer["address"].split("/")[0]

    def usage(peer_id):
        """The peer's byte counters, whatever their names: every integer field about bytes but the cap."""
        peer = api(f"get {peer_id}")
        return {k: v for k, v in peer.items() if "bytes" in k and "cap" not in k and isinstance(v, int)}
  '';
}
