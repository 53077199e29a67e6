# The cloud image's configuration: `nix build .#image` gives a qcow2 disk from NixOS'
# system.build.images. Nothing node-specific is inside. At boot cloud-init reads the user-data
# from a config drive (NoCloud `cidata`, OpenStack `config-2`) or the cloud's metadata service;
# the user-data writes (see README, "Cloud image"):
#
#   /etc/waylume/node.env        SERVER_ID=…, SUPABASE_URL=…, WAYLUME_ENDPOINT=…, SERVER_COUNTRY=…
#   /etc/credstore/supabase-key  the Supabase key (mode 0600)
#   /etc/credstore/api-secret    the API secret (mode 0600)
#
# Without them the image still boots; the daemon stops with a line naming what is missing and
# the unit stays failed instead of restarting in a loop.
{
  lib,
  modulesPath,
  ...
}: {
  # virtio disk and network drivers in the initrd: without them the root disk is not found on
  # a KVM cloud.
  imports = [(modulesPath + "/profiles/qemu-guest.nix")];

  services.cloud-init = {
    enable = true;
    network.enable = true;
    settings.datasource_list = ["NoCloud" "ConfigDrive" "OpenStack" "Ec2" "None"];
  };
  networking.useNetworkd = true;
  networking.nftables.enable = true;

  # Access is by the SSH keys the cloud passes in; no passwords in the image.
  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };

  services.waylume-server = {
    enable = true;
    openFirewall = true;
    # Where the control plane calls from is not known when the image is built. The API answers
    # only signed requests (the daemon refuses a non-loopback API without a secret), so it is
    # open to every source; narrow this in a configuration of your own.
    apiAllowedSources = ["0.0.0.0/0" "::/0"];
    # `-`: a node without a config drive still starts the unit, and the daemon names the gap.
    environmentFiles = ["-/etc/waylume/node.env"];
    # No host-name default for the id: without the config drive the daemon says SERVER_ID is missing.
    settings.require_server_id = true;
    # From /etc/credstore when cloud-init wrote them; absent ones are skipped rather than
    # failing the unit before the daemon could say what is missing.
    importCredentials = ["supabase-key" "api-secret"];
  };

  systemd.services.waylume-server = {
    wants = ["cloud-init.service"];
    after = ["cloud-init.service"];
  };

  systemd.tmpfiles.rules = [
    "d /etc/credstore 0700 root root -"
    "d /etc/waylume 0755 root root -"
  ];

  system.stateVersion = lib.mkDefault "26.05";
}
