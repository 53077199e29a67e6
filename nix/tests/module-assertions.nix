# The module evaluated by real NixOS (a flake check, evaluation only): each bad input of the
# module's contract fails with its own assertion message, a good configuration with none, and
# the rendered unit and firewall carry what the daemon relies on.
{
  lib,
  pkgs,
  module,
}: let
  eval = extra:
    (lib.nixosSystem {
      modules = [
        module
        {
          nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system;
          boot.loader.grub.enable = false;
          fileSystems."/".device = "/dev/vda";
          networking.nftables.enable = true;
          services.waylume-server =
            lib.recursiveUpdate {
              enable = true;
              # Evaluation only: nothing is built, so the daemon's own check does not run here.
              checkConfig = false;
            }
            extra;
          system.stateVersion = "25.11";
        }
      ];
    })
    .config;
  failures = config: map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  failsWith = needle: extra: builtins.any (lib.hasInfix needle) (failures (eval extra));

  good = eval {
    supabaseKeyFile = "/run/secrets/supabase-key";
    apiSecretFile = "/run/secrets/api-secret";
  };
  unit = good.systemd.services.waylume-server.serviceConfig;

  cases = {
    goodHasNoFailures = failures good == [];
    interfaceTooLong = failsWith "1 to 15 bytes" {settings.wireguard.interface = "waylume-uplink-0";};
    subnetNotANetwork = failsWith "not a network address" {settings.wireguard.subnet = "10.0.0.1/8";};
    portClash = failsWith "both 51820" {settings.api.port = 51820;};
    secretInStore = failsWith "is in the Nix store" {supabaseKeyFile = "${pkgs.writeText "supabase-key" "not a secret"}";};
    notifyUnit = unit.Type == "notify" && unit.WatchdogSec == "30s" && unit.Restart == "on-failure";
    credentials = unit.LoadCredential == ["supabase-key:/run/secrets/supabase-key" "api-secret:/run/secrets/api-secret"];
    leastCapabilities = unit.CapabilityBoundingSet == ["CAP_NET_ADMIN" "CAP_NET_RAW"];
    linkDeclared = good.networking.wireguard.interfaces.wg0.ips == ["10.0.0.1/8"];
    isolationInFirewall = lib.hasInfix ''iifname "wg0" oifname "wg0" drop'' good.networking.firewall.extraForwardRules;
    forwarding = good.boot.kernel.sysctl."net.ipv4.conf.all.forwarding" == true;
  };
  failed = builtins.filter (name: !cases.${name}) (builtins.attrNames cases);
in
  if failed == []
  then pkgs.runCommand "waylume-module-assertions" {} "echo ${toString (builtins.length (builtins.attrNames cases))} cases passed > $out"
  else throw "module checks failed: ${builtins.concatStringsSep ", " failed}"
