# The cloud image's system (as packages.image is built from it), by evaluation: it can find its
# root disk on a KVM cloud, its API is reachable from outside, and it leaves the node's settings
# and secrets to boot time.
{
  pkgs,
  image,
}: let
  inherit (pkgs) lib;
  config = image.passthru.config;
  wl = config.services.waylume-server;
  cases = {
    virtioDiskInInitrd = builtins.elem "virtio_blk" config.boot.initrd.availableKernelModules && builtins.elem "virtio_net" config.boot.initrd.availableKernelModules;
    apiReachable = wl.openFirewall && wl.apiAllowedSources != [] && lib.hasInfix "tcp dport ${toString wl.settings.api.port} accept" config.networking.firewall.extraInputRules;
    networkdWithTheModule = config.networking.useNetworkd && config.networking.wireguard.interfaces == {};
    settingsFromBoot = wl.settings.server_id == null && wl.settings.require_server_id && wl.importCredentials == ["supabase-key" "api-secret"];
    checkedWithStandIns = wl.configCheck.env == {SERVER_ID = "build-time-check";} && wl.configCheck.credentials == ["supabase-key" "api-secret"];
  };
  failed = builtins.filter (name: !cases.${name}) (builtins.attrNames cases);
in
  if failed == []
  then pkgs.runCommand "waylume-image-assertions" {} "echo ${toString (builtins.length (builtins.attrNames cases))} cases passed > $out"
  else throw "image checks failed: ${builtins.concatStringsSep ", " failed}"
