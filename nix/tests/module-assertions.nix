# The module evaluated by real NixOS (a flake check, evaluation only): each bad input of the
# module's contract fails with its own assertion message, good configurations with none and
# with a system that evaluates in full (so that this harness never accepts a configuration a
# real evaluation would refuse), and the rendered unit and firewall carry what the daemon and
# the isolation rely on.
{
  lib,
  pkgs,
  module,
}: let
  evalWith = modules: extra:
    (lib.nixosSystem {
      modules =
        [
          module
          {
            nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system;
            boot.loader.grub.enable = false;
            fileSystems."/" = {
              device = "/dev/vda";
              fsType = "ext4";
            };
            networking.nftables.enable = lib.mkDefault true;
            services.waylume-server =
              lib.recursiveUpdate {
                enable = true;
                # Evaluation only: nothing is built, so the daemon's own check does not run
                # here; scripts/check-nix.sh runs it on the VM tests' and the image's settings.
                checkConfig = false;
              }
              extra;
            system.stateVersion = "26.05";
          }
        ]
        ++ modules;
    })
    .config;
  eval = evalWith [];
  failures = config: map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  failsWith = needle: extra: builtins.any (lib.hasInfix needle) (failures (eval extra));
  # The whole system evaluates: every option that has no default is defined, every assertion
  # of nixpkgs' modules holds.
  evaluatesInFull = config: failures config == [] && lib.isString config.system.build.toplevel.drvPath;

  secrets = {
    supabaseKeyFile = "/run/secrets/supabase-key";
    apiSecretFile = "/run/secrets/api-secret";
  };
  good = eval secrets;
  unit = good.systemd.services.waylume-server.serviceConfig;
  networkd = evalWith [{networking.useNetworkd = true;}] {};
  iptables = evalWith [{networking.nftables.enable = false;}] {
    openFirewall = true;
    apiAllowedSources = ["203.0.113.0/24"];
  };
  # network-interfaces.nix on nixos-25.11 defines forwarding with mkDefault as well.
  otherDefault = evalWith [{boot.kernel.sysctl."net.ipv4.conf.all.forwarding" = lib.mkDefault false;}] {};
  opened = eval {
    openFirewall = true;
    apiAllowedSources = ["203.0.113.0/24" "2001:db8::/32"];
  };
  imported = eval {importCredentials = ["supabase-key" "api-secret"];};
  isolation = good.networking.nftables.tables.waylume_isolation;

  cases = {
    goodEvaluatesInFull = evaluatesInFull good;
    networkdEvaluatesInFull = evaluatesInFull networkd && networkd.systemd.network.networks."40-waylume-wg0".linkConfig.Unmanaged;
    iptablesEvaluatesInFull = evaluatesInFull iptables;
    interfaceTooLong = failsWith "1 to 15 bytes" {settings.wireguard.interface = "waylume-uplink-0";};
    subnetNotANetwork = failsWith "not a network address" {settings.wireguard.subnet = "10.0.0.1/8";};
    portClash = failsWith "both 51820" {settings.api.port = 51820;};
    secretInStore = failsWith "is in the Nix store" {supabaseKeyFile = "${pkgs.writeText "supabase-key" "not a secret"}";};
    sourcesNeedOpenFirewall = failsWith "has no effect without" {apiAllowedSources = ["192.0.2.0/24"];};

    notifyUnit = unit.Type == "notify" && unit.WatchdogSec == "30s" && unit.Restart == "on-failure" && unit.RestartPreventExitStatus == [78];
    credentials = unit.LoadCredential == ["supabase-key:/run/secrets/supabase-key" "api-secret:/run/secrets/api-secret"];
    ownUserWithNetworkCapabilities =
      unit.User
      or null
      == "waylume-server"
      && good.users.users.waylume-server.isSystemUser
      && unit.CapabilityBoundingSet == ["CAP_NET_ADMIN" "CAP_NET_RAW"]
      && unit.AmbientCapabilities == unit.CapabilityBoundingSet
      && unit.ReadWritePaths == ["-/run/wireguard"]
      && unit.StateDirectory == "waylume-server";
    bindCapabilityOnlyBelow1024 = builtins.elem "CAP_NET_BIND_SERVICE" (eval {settings.api.port = 80;}).systemd.services.waylume-server.serviceConfig.CapabilityBoundingSet;
    # The daemon makes the link: nothing for nixpkgs' WireGuard module (and its networkd
    # backend) to refuse.
    linkLeftToTheDaemon = good.networking.wireguard.interfaces == {} && !(good.systemd.services ? "wireguard-wg0");
    modulesLoadedAtBoot = lib.all (m: builtins.elem m good.boot.kernelModules) ["wireguard" "ifb" "sch_htb" "act_mirred"];
    managersKeepOff = builtins.elem "ifb-wg0" good.networking.dhcpcd.denyInterfaces && builtins.elem "interface-name:ifb-wg0" good.networking.networkmanager.unmanaged;
    forwarding = good.boot.kernel.sysctl."net.ipv4.conf.all.forwarding" == true;
    forwardingOverAnotherDefault = otherDefault.boot.kernel.sysctl."net.ipv4.conf.all.forwarding" == true;

    nftablesIsolationBeforeTheFirewall =
      isolation.family
      == "inet"
      && lib.hasInfix "hook forward priority filter - 1;" isolation.content
      && lib.hasInfix ''iifname "wg0" oifname "wg0" drop'' isolation.content
      && lib.hasInfix ''iifname "wg0" ip daddr { 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 169.254.0.0/16 } drop'' isolation.content
      && lib.hasInfix ''iifname "wg0" ip6 daddr { fc00::/7, fe80::/10 } drop'' isolation.content
      && lib.hasInfix ''oifname "wg0" iifname != "wg0" ct state new drop'' isolation.content
      && good.networking.firewall.filterForward
      && lib.hasInfix ''iifname "wg0" accept'' good.networking.firewall.extraForwardRules;
    nftablesKeepsOtherTables = good.networking.nftables.flushRuleset == false;
    iptablesIsolation = let
      cmds = iptables.networking.firewall.extraCommands;
    in
      lib.hasInfix "iptables -w -A waylume-fwd -i wg0 -o wg0 -j DROP" cmds
      && lib.hasInfix "ip6tables -w -A waylume-fwd -i wg0 -d fc00::/7 -j DROP" cmds
      && lib.hasInfix "iptables -w -A waylume-fwd -o wg0 ! -i wg0 -m conntrack --ctstate NEW,INVALID -j DROP" cmds
      && lib.hasInfix "iptables -w -I nixos-fw 1 -p tcp -s 203.0.113.0/24 --dport 3000 -j nixos-fw-accept" cmds
      && lib.hasInfix "iptables -w -D FORWARD -j waylume-fwd" iptables.networking.firewall.extraStopCommands
      && !(iptables.networking.nftables.tables ? waylume_isolation);
    closedByDefault = good.networking.firewall.allowedUDPPorts == [] && good.networking.firewall.extraInputRules == "";
    openedWireGuardPort = opened.networking.firewall.allowedUDPPorts == [51820];
    apiOnlyFromSources =
      lib.hasInfix "ip saddr { 203.0.113.0/24 } tcp dport 3000 accept" opened.networking.firewall.extraInputRules
      && lib.hasInfix "ip6 saddr { 2001:db8::/32 } tcp dport 3000 accept" opened.networking.firewall.extraInputRules;

    # The build-time check gets a stand-in for each credential the unit is given and for an
    # id left to the environment, and nothing else.
    standInsForRuntimeSecrets = let
      c = good.services.waylume-server.configCheck;
    in
      c.credentials == ["supabase-key" "api-secret"] && c.env == {SERVER_ID = "build-time-check";};
    standInsForImportedCredentials =
      imported.services.waylume-server.configCheck.credentials
      == ["supabase-key" "api-secret"]
      && imported.systemd.services.waylume-server.serviceConfig.ImportCredential == ["supabase-key" "api-secret"];
    noStandInForAGivenId = (eval {settings.server_id = "de-fra-1";}).services.waylume-server.configCheck.env == {};
    renderedWithoutNulls = let
      s = good.services.waylume-server.configCheck.settings;
    in
      !(s ? server_id) && !(s.wireguard ? endpoint) && s.wireguard.interface == "wg0" && s.state_dir == "/var/lib/waylume-server";
  };
  failed = builtins.filter (name: !cases.${name}) (builtins.attrNames cases);
in
  if failed == []
  then pkgs.runCommand "waylume-module-assertions" {} "echo ${toString (builtins.length (builtins.attrNames cases))} cases passed > $out"
  else throw "module checks failed: ${builtins.concatStringsSep ", " failed}"
