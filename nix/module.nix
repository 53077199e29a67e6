# NixOS module for the Waylume VPN node: `services.waylume-server`.
#
# The daemon creates and adopts everything per node in the kernel: the WireGuard link and its
# key (kept in its state directory), the IFB, the HTB roots and its nftables tables. The module
# provides what it cannot do itself from a hardened unit without root: forwarding, the kernel
# modules loaded at boot, network managers kept off its interfaces, and isolation rules of the
# host (nix/firewall.nix) that hold while the daemon is down.
{
  config,
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkIf mkMerge mkOption mkOverride optional types;

  cfg = config.services.waylume-server;
  wl = import ./lib.nix;
  settingsFormat = pkgs.formats.toml {};

  wgSettings = cfg.settings.wireguard;
  dataplane = cfg.settings.dataplane;
  iface = wgSettings.interface;
  ifb = wl.ifbName iface;
  stateDir = "/var/lib/waylume-server";
  user = "waylume-server";
  kernelLink = wgSettings.backend != "userspace";
  apiPort = cfg.settings.api.port;

  # `null` means "not set here, the daemon's default applies"; TOML has no null.
  settingsRendered = lib.filterAttrsRecursive (_: v: v != null) cfg.settings;
  rawConfigFile = settingsFormat.generate "waylume-server.toml" settingsRendered;
  check = import ./config-check.nix {
    inherit lib;
    serverIdFromEnvironment = cfg.settings.server_id == null;
    # Every credential the unit is given.
    credentials = lib.unique (
      optional (cfg.supabaseKeyFile != null) "supabase-key"
      ++ optional (cfg.apiSecretFile != null) "api-secret"
      ++ cfg.importCredentials
    );
  };
  # A bad key or value fails the system build instead of the service.
  configFile =
    if cfg.checkConfig && pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform
    then
      pkgs.runCommand "waylume-server-checked.toml" {} ''
        waylume=${lib.getExe cfg.package}
        config=${rawConfigFile}
        ${check.script}
        cp ${rawConfigFile} $out
      ''
    else rawConfigFile;

  option = type: default: description: mkOption {inherit type default description;};
  optionalSetting = type: description: option (types.nullOr type) null description;

  capabilities =
    [
      # Create and configure the WireGuard link, its addresses and routes, the IFB, the HTB
      # classes and filters and the nftables tables: netlink answers EPERM without it.
      "CAP_NET_ADMIN"
      # Open the AF_PACKET capture on the WireGuard link that classifies peers' traffic.
      "CAP_NET_RAW"
    ]
    # Bind the API to a privileged port, only when one is configured.
    ++ optional (apiPort < 1024) "CAP_NET_BIND_SERVICE";
in {
  options.services.waylume-server = {
    enable = lib.mkEnableOption "the Waylume WireGuard VPN node";

    package = lib.mkPackageOption pkgs "waylume-server" {};

    settings = mkOption {
      default = {};
      description = ''
        The daemon's configuration, rendered to TOML and checked with
        `waylume-server check-config` at build time. Keys not declared here are passed through
        unchanged; the daemon rejects keys it does not know. Secrets never go here (the file is
        in the world-readable Nix store): use {option}`services.waylume-server.supabaseKeyFile`
        and {option}`services.waylume-server.apiSecretFile`. Per-node values that are only known
        at boot (server id, location, endpoint) can come from
        {option}`services.waylume-server.environmentFiles` instead.
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          server_id = optionalSetting types.str "This node's id in the control plane (environment: SERVER_ID).";
          state_dir = mkOption {
            type = types.str;
            default = stateDir;
            readOnly = true;
            description = "Where the daemon keeps its database and the link's private key; the unit's StateDirectory.";
          };
          teardown_on_stop = option types.bool false "Remove the interface, peers and rules when the daemon stops. Off: a restart or upgrade keeps the data plane forwarding.";

          api = {
            port = option types.port 3000 "TCP port of the peer-management API (environment: EXTERNAL_PORT).";
            bind = optionalSetting types.str "Address the API listens on; the daemon's default when unset.";
          };

          wireguard = {
            interface = option types.str "wg0" "WireGuard interface name, at most 15 bytes. The daemon creates it, or adopts one that exists.";
            backend = option (types.enum ["auto" "kernel" "userspace"]) "auto" "`kernel` uses the kernel module, `userspace` runs wireguard-go, `auto` prefers the kernel.";
            listen_port = option types.port 51820 "UDP port WireGuard listens on.";
            subnet = option types.str "10.0.0.0/8" "IPv4 network peers are addressed from; the node takes its first address.";
            subnet_v6 = optionalSetting types.str "Optional IPv6 network for peers.";
            endpoint = optionalSetting types.str "host:port clients connect to, written into the peer configs the API returns.";
            dns = option (types.listOf types.str) [] "DNS servers written into peer configs.";
            mtu = option types.ints.positive 1420 "MTU of the WireGuard link and of peer configs.";
            persistent_keepalive = option types.ints.unsigned 25 "Keepalive interval in seconds written into peer configs (0: off).";
          };

          node = {
            country = optionalSetting types.str "Country reported to the control plane (environment: SERVER_COUNTRY).";
            city = optionalSetting types.str "City reported to the control plane (environment: SERVER_CITY).";
            latitude = optionalSetting types.float "Latitude reported to the control plane.";
            longitude = optionalSetting types.float "Longitude reported to the control plane.";
            max_capacity = option types.ints.positive 1000 "Most peers this node accepts.";
          };

          supabase = {
            url = optionalSetting types.str "Control-plane URL (environment: SUPABASE_URL). Unset: the node runs without registration and heartbeats.";
            heartbeat_interval_secs = option types.ints.positive 30 "Seconds between heartbeats.";
            usage_interval_secs = option types.ints.positive 60 "Seconds between usage reports.";
          };

          dataplane = {
            reconcile_interval_secs = option types.ints.positive 5 "Seconds between reconciliations of the kernel state; the unit's watchdog allows six missed rounds.";
            isolation = option types.bool true "Peers cannot reach each other (also enforced in the NixOS firewall).";
            block_private_networks = option types.bool true "Peers cannot reach private and link-local networks through the node (also enforced in the NixOS firewall).";
            shaping = option types.bool true "Per-peer speed limits with HTB on the link and on its IFB.";
            firewall_backend = option (types.enum ["nft"]) "nft" "How the daemon programs per-peer rules.";
          };

          inspection = {
            enabled = option types.bool true "Classify peers' traffic by protocol.";
            log_hostnames = option types.bool false "Log the hostnames seen in TLS and DNS (privacy: off by default).";
            policy = option (types.attrsOf (types.enum ["report" "block" "throttle"])) {} "Action per detected protocol, for example `{ bittorrent = \"block\"; }`.";
          };
        };
      };
    };

    checkConfig = option types.bool true "Run `waylume-server check-config` on the rendered configuration at build time.";

    configCheck = mkOption {
      internal = true;
      readOnly = true;
      type = types.attrs;
      description = "The build-time check (nix/config-check.nix) with the settings it renders, for checks outside Nix.";
    };

    supabaseKeyFile = optionalSetting types.str ''
      File holding the Supabase service key, passed to the daemon as the `supabase-key`
      credential. Give a path outside the Nix store (a store path fails evaluation).
    '';

    apiSecretFile = optionalSetting types.str ''
      File holding the shared secret that API clients present, passed as the `api-secret`
      credential. Give a path outside the Nix store.
    '';

    importCredentials = option (types.listOf types.str) [] ''
      Credentials (`supabase-key`, `api-secret`) imported from the system's credential store
      (/etc/credstore, /run/credstore, ...) with systemd's `ImportCredential=`, for nodes where
      they are written at boot rather than known when the system is built. Absent ones are
      skipped, and the daemon then names what is missing.
    '';

    environmentFiles = option (types.listOf types.str) [] ''
      systemd `EnvironmentFile=` entries with per-node values (SERVER_ID, SERVER_COUNTRY,
      SUPABASE_URL, WAYLUME_ENDPOINT, ...). Prefix a path with `-` to start without it.
    '';

    openFirewall = option types.bool false ''
      Open the WireGuard port (UDP) to everyone and the API port (TCP) to
      {option}`services.waylume-server.apiAllowedSources` only.
    '';

    apiAllowedSources = option (types.listOf types.str) [] ''
      Source networks (IPv4 or IPv6 CIDR) allowed to reach the API port when
      {option}`services.waylume-server.openFirewall` is set, e.g. the control plane's egress.
    '';
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions =
        map (message: {
          assertion = false;
          inherit message;
        }) (wl.configErrors {
          inherit (cfg) settings;
          secretFiles = {inherit (cfg) supabaseKeyFile apiSecretFile;};
        })
        ++ [
          {
            assertion = cfg.apiAllowedSources == [] || cfg.openFirewall;
            message = "services.waylume-server.apiAllowedSources has no effect without services.waylume-server.openFirewall.";
          }
        ];

      warnings = optional (!config.networking.firewall.enable && !config.networking.nftables.enable) "services.waylume-server: neither the NixOS firewall nor nftables is on, so peer isolation relies on the daemon's own nftables table alone.";

      services.waylume-server.configCheck = {
        inherit (check) env credentials script;
        settings = settingsRendered;
      };

      # Forwarding is what makes this host a VPN node. Above mkDefault (100), as nixpkgs' nat
      # and tailscale modules do: network-interfaces.nix sets mkDefault values here too.
      boot.kernel.sysctl =
        {"net.ipv4.conf.all.forwarding" = mkOverride 99 true;}
        // lib.optionalAttrs (wgSettings.subnet_v6 != null) {"net.ipv6.conf.all.forwarding" = mkOverride 99 true;};

      # Loaded at boot because the unit may not load modules (ProtectKernelModules). No stray
      # ifb0/ifb1: the daemon creates its IFB by name.
      boot.kernelModules = optional kernelLink "wireguard" ++ ["ifb" "sch_htb" "sch_ingress" "cls_u32" "act_mirred"];
      boot.extraModprobeConfig = "options ifb numifbs=0";

      # The tables NixOS does not declare survive a firewall reload only without a full flush;
      # the daemon's `inet waylume` table holds the peers' quota counters.
      networking.nftables.flushRuleset = lib.mkDefault false;

      # The daemon's link and IFB are its own; no network manager may configure them.
      networking.dhcpcd.denyInterfaces = [iface ifb];
      networking.networkmanager.unmanaged = ["interface-name:${iface}" "interface-name:${ifb}"];
      systemd.network.networks."40-waylume-${iface}" = mkIf config.networking.useNetworkd {
        matchConfig.Name = "${iface} ${ifb}";
        linkConfig.Unmanaged = true;
      };

      environment.systemPackages = [cfg.package pkgs.wireguard-tools];

      users.users.${user} = {
        isSystemUser = true;
        group = user;
        description = "Waylume VPN node";
      };
      users.groups.${user} = {};

      systemd.services.waylume-server = {
        description = "Waylume WireGuard VPN node";
        wantedBy = ["multi-user.target"];
        wants = ["network-online.target"];
        after = ["network-online.target" "nftables.service" "firewall.service"];
        # On a switch, restart in place: the data plane keeps forwarding in between and the
        # daemon adopts it again.
        stopIfChanged = false;

        serviceConfig = {
          Type = "notify";
          NotifyAccess = "main";
          ExecStart = "${lib.getExe cfg.package} serve --config ${configFile}";
          # The reconcile loop sends WATCHDOG=1 each round; six missed rounds mean it is stuck.
          WatchdogSec = "${toString (lib.max 30 (6 * dataplane.reconcile_interval_secs))}s";
          Restart = "on-failure";
          RestartSec = 5;
          # The API's connection cap is sized from the file limit; the daemon raises its soft
          # limit to this hard one at start.
          LimitNOFILE = 65536;
          # 78 (EX_CONFIG): the daemon cannot run with this configuration (a missing server id
          # or key, say). Restarting would not help; the unit stays failed with the reason.
          RestartPreventExitStatus = [78];
          EnvironmentFile = cfg.environmentFiles;
          LoadCredential =
            optional (cfg.supabaseKeyFile != null) "supabase-key:${cfg.supabaseKeyFile}"
            ++ optional (cfg.apiSecretFile != null) "api-secret:${cfg.apiSecretFile}";
          ImportCredential = cfg.importCredentials;

          # A user of its own with the network capabilities only, as nixpkgs' firezone gateway:
          # it cannot read root's files (SSH host keys, other services' secrets), and its state
          # directory (the link's private key, the peer database) is its alone.
          User = user;
          Group = user;
          StateDirectory = "waylume-server";
          StateDirectoryMode = "0700";
          WorkingDirectory = stateDir;
          CapabilityBoundingSet = capabilities;
          AmbientCapabilities = capabilities;
          # The capabilities must be real in the initial user namespace to change its network.
          PrivateUsers = false;
          NoNewPrivileges = true;
          # wireguard-go, when used, needs the TUN device and its UAPI socket directory.
          DevicePolicy = "closed";
          DeviceAllow = ["/dev/net/tun rw"];
          ReadWritePaths = ["-/run/wireguard"];
          # AF_NETLINK: links, routes, qdiscs, nftables; AF_PACKET: the capture; AF_UNIX:
          # sd_notify, journald and the wireguard-go UAPI socket.
          RestrictAddressFamilies = ["AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" "AF_PACKET"];

          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          PrivateMounts = true;
          ProtectClock = true;
          ProtectControlGroups = true;
          ProtectHostname = true;
          ProtectKernelLogs = true;
          ProtectKernelModules = true;
          ProtectKernelTunables = true;
          ProtectProc = "invisible";
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          RemoveIPC = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          SystemCallArchitectures = "native";
          SystemCallFilter = ["@system-service"];
          UMask = "0077";
        };
      };

      # wireguard-go's UAPI sockets live here; the daemon's user must be able to create them.
      systemd.tmpfiles.rules = optional (wgSettings.backend != "kernel") "d /run/wireguard 0750 ${user} ${user} -";
    }

    (import ./firewall.nix {
      inherit lib cfg config;
      inherit (wl) privateNetworks4;
    })
  ]);
}
