# The build-time `waylume-server check-config` of the rendered settings, as one shell script that
# the module's build step runs and that scripts/check-nix.sh runs outside Nix on the settings of
# every VM test node and of the image (read back through the module's internal option
# `services.waylume-server.configCheck`). The caller sets $waylume (the daemon) and $config
# (the TOML file).
#
# What only arrives at run time gets a stand-in, so that everything the file itself decides is
# still validated: each credential the unit will be given (a file with placeholder content in a
# CREDENTIALS_DIRECTORY, as systemd provides them) and the node's id when the file leaves it to
# the environment. `env -i`: nothing from the caller's environment (a SUPABASE_URL, say) takes
# part, in the sandbox or outside.
{
  lib,
  serverIdFromEnvironment,
  credentials,
}: let
  # Shaped like a real secret (the daemon wants at least 32 bytes, hex or base64).
  standIn = "0000000000000000000000000000000000000000000000000000000000000000";
  env =
    lib.optionalAttrs serverIdFromEnvironment {SERVER_ID = "build-time-check";};
  script = ''
    standins=$(mktemp -d)
    for name in ${lib.escapeShellArgs credentials}; do
      printf '%s' ${lib.escapeShellArg standIn} > "$standins/$name"
    done
    env -i ${lib.concatStrings (lib.mapAttrsToList (k: v: "${k}=${lib.escapeShellArg v} ") env)}CREDENTIALS_DIRECTORY="$standins" \
      "$waylume" check-config --config "$config"
    rm -r "$standins"
  '';
in {
  inherit env credentials script;
}
