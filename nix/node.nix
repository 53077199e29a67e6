# An example fleet node, built by `nixos-rebuild switch --flake .#node`. Copy it per node and
# adapt the hardware, disks, addresses and secret paths; the secrets themselves are put on the
# node by the operator's secret tooling and never enter the store.
{
  boot.loader.grub.device = "/dev/vda";
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };

  networking.hostName = "waylume-fra-1";
  networking.nftables.enable = true;

  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };

  services.waylume-server = {
    enable = true;
    openFirewall = true;
    # The control plane's egress (documentation prefix here): the only sources allowed to the API.
    apiAllowedSources = ["203.0.113.0/24"];
    supabaseKeyFile = "/run/secrets/waylume/supabase-key";
    apiSecretFile = "/run/secrets/waylume/api-secret";
    settings = {
      server_id = "de-fra-1";
      wireguard = {
        endpoint = "fra-1.vpn.example.net:51820";
        subnet = "10.64.0.0/16";
        dns = ["9.9.9.9"];
      };
      node = {
        country = "DE";
        city = "Frankfurt";
        latitude = 50.11;
        longitude = 8.68;
        max_capacity = 250;
      };
      supabase.url = "https://example.supabase.co";
      inspection.policy.bittorrent = "throttle";
    };
  };

  system.stateVersion = "26.05";
}
