# An OCI image for deployment with Docker or Podman, as the project's first releases were run:
# `nix build .#oci-image && ./result | docker load`. Configuration comes from the environment
# with the original names (SUPABASE_URL, SUPABASE_KEY, SERVER_ID, EXTERNAL_PORT, MAX_CAPACITY,
# SERVER_COUNTRY, ...); examples/docker-compose.yml shows the capabilities and devices it needs.
#
# The container brings no kernel modules: with the host's `wireguard` module loaded the daemon
# uses it, otherwise wireguard-go through /dev/net/tun. Speed limits need the host's `ifb` and
# `sch_htb` modules; isolation and caps need nothing beyond NET_ADMIN.
{
  lib,
  dockerTools,
  package,
}: let
  stateDir = "/var/lib/waylume-server";
  # The image's configuration, also read back by scripts/check-nix.sh to check the compose
  # example against it.
  config = {
    Entrypoint = [(lib.getExe package) "serve"];
    Env = [
      "WAYLUME_STATE_DIR=${stateDir}"
      # Reachable from the host's port mapping; the daemon refuses this without an API secret.
      "WAYLUME_API_BIND=0.0.0.0"
    ];
    ExposedPorts = {
      "3000/tcp" = {};
      "51820/udp" = {};
    };
    Volumes.${stateDir} = {};
    WorkingDir = stateDir;
  };
in
  dockerTools.streamLayeredImage {
    name = "waylume-server";
    tag = package.version;
    # The daemon's wrapper already puts ip, tc, nft, wg and wireguard-go on its PATH.
    contents = [package];
    # The state directory (key and peer database, a volume), /tmp, and wireguard-go's UAPI
    # socket directory.
    extraCommands = ''
      mkdir -p .${stateDir} tmp run/wireguard
      chmod 0700 .${stateDir} run/wireguard
      chmod 1777 tmp
    '';
    inherit config;
    passthru.imageConfig = config;
    meta = {
      description = "Waylume Server as an OCI image";
      inherit (package.meta) license platforms;
    };
  }
