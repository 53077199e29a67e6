# NixOS module for the Waylume VPN node: `services.waylume-server`.
#
# The module declares the host side that outlives the daemon (the WireGuard link and its key,
# forwarding, the isolation rules in the NixOS firewall, the IFB device and the HTB roots) and
# runs the daemon, which adopts all of it and manages per-peer state inside: peers on the link,
# classes under the HTB roots, quotas in its own `inet waylume` nftables table.
{
  config,
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkIf mkMerge mkOption mkDefault optional optionals optionalString types;

  cfg = config.services.waylume-server;
  wl = import ./lib.nix;
  settingsFormat = pkgs.formats.toml {};

  wgSettings = cfg.settings.wireguard;
  dataplane = cfg.settings.dataplane;
  iface = wgSettings.interface;
  # The daemon names the upload IFB after the link and cuts it to the 15-byte limit.
  ifb = builtins.substring 0 15 "ifb-${iface}";
  stateDir = "/var/lib/waylume-server";
  # The daemon reads the link's private key from here when it adopts the link.
  privateKeyFile = "${stateDir}/private.key";
  kernelLink = wgSettings.backend != "userspace";
  nftFirewall = config.networking.nftables.enable;
  apiPort = cfg.settings.api.port;

  # `null` means "not set here, the daemon's default applies"; TOML has no null.
  rawConfigFile = settingsFormat.generate "waylume-server.toml" (lib.filterAttrsRecursive (_: v: v != null) cfg.settings);
  # A bad key or value fails the system build instead of the service.
  configFile =
    if cfg.checkConfig && pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform
    then
      pkgs.runCommand "waylume-server-checked.toml" {nativeBuildInputs = [cfg.package];} ''
        ${
          # A node whose id comes from its environment at boot (the cloud image) is checked
          # with a stand-in id, so that the file's own keys are still validated here.
          optionalString (cfg.settings.server_id == null) "SERVER_ID=build-time-check"
        } waylume-server check-config --config ${rawConfigFile}
        cp ${rawConfigFile} $out
      ''
    else rawConfigFile;

  option = type: default: description: mkOption {inherit type default description;};
  optionalSetting = type: description: option (types.nullOr type) null description;

  privateNets4 = builtins.concatStringsSep ", " wl.privateNetworks4;
  isV6 = source: lib.hasInfix ":" source;
  sources4 = builtins.filter (s: !isV6 s) cfg.apiAllowedSources;
  sources6 = builtins.filter isV6 cfg.apiAllowedSources;

  # Isolation for the nftables-based NixOS firewall: appended to its forward-allow chain, which
  # sees only new connections (replies are accepted by its conntrack rule).
  nftForwardRules = builtins.concatStringsSep "\n" (
    optional dataplane.isolation ''iifname "${iface}" oifname "${iface}" drop comment "waylume: peers never reach each other"''
    ++ optionals dataplane.block_private_networks [
      ''iifname "${iface}" ip daddr { ${privateNets4} } drop comment "waylume: no private networks through the tunnel"''
      ''iifname "${iface}" ip6 daddr { fc00::/7, fe80::/10 } drop comment "waylume: no private networks through the tunnel"''
    ]
    ++ [''iifname "${iface}" accept comment "waylume: peers reach the internet"'']
  );

  # The same rules for the iptables-based firewall, in a chain of their own at the head of
  # FORWARD, rebuilt on every firewall start.
  iptablesForwardRules = tool: nets:
    ''
      ${tool} -w -N waylume-fwd 2>/dev/null || ${tool} -w -F waylume-fwd
    ''
    + optionalString dataplane.isolation ''
      ${tool} -w -A waylume-fwd -i ${iface} -o ${iface} -j DROP
    ''
    + optionalString dataplane.block_private_networks (lib.concatMapStrings (net: ''
        ${tool} -w -A waylume-fwd -i ${iface} -d ${net} -j DROP
      '')
      nets)
    + ''
      ${tool} -w -C FORWARD -j waylume-fwd 2>/dev/null || ${tool} -w -I FORWARD 1 -j waylume-fwd
    '';
  iptablesStop = tool: ''
    ${tool} -w -D FORWARD -j waylume-fwd 2>/dev/null || true
    ${tool} -w -F waylume-fwd 2>/dev/null || true
    ${tool} -w -X waylume-fwd 2>/dev/null || true
  '';
  iptablesApiRules = tool: sources:
    lib.concatMapStrings (source: ''
      ${tool} -w -I nixos-fw 1 -p tcp -s ${source} --dport ${toString apiPort} -j nixos-fw-accept
    '')
    sources;

  capabilities =
    [
      # Create and configure the WireGuard link, its addresses and routes, the HTB classes and
      # filters and the `inet waylume` nftables table: netlink answers EPERM without it.
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
            interface = option types.str "wg0" "WireGuard interface name, at most 15 bytes. The module creates it; the daemon adopts it.";
            backend = option (types.enum ["auto" "kernel" "userspace"]) "auto" "`kernel` uses the kernel module, `userspace` runs wireguard-go, `auto` prefers the kernel. With `userspace` the module does not create the link.";
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

    supabaseKeyFile = optionalSetting types.str ''
      File holding the Supabase service key, passed to the daemon as the `supabase-key`
      credential. Give a path outside the Nix store (a store path fails evaluation).
    '';

    apiSecretFile = optionalSetting types.str ''
      File holding the shared secret that API clients present, passed as the `api-secret`
      credential. Give a path outside the Nix store.
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

      warnings = optional (!config.networking.firewall.enable) "services.waylume-server: the NixOS firewall is off, so peer isolation relies on the daemon's own nftables table alone.";

      # Forwarding is what makes this host a VPN node.
      boot.kernel.sysctl =
        {"net.ipv4.conf.all.forwarding" = mkDefault true;}
        // lib.optionalAttrs (wgSettings.subnet_v6 != null) {"net.ipv6.conf.all.forwarding" = mkDefault true;};

      # Loaded at boot because the unit may not load modules (ProtectKernelModules). No stray
      # ifb0/ifb1: the IFB device is created by name below.
      boot.kernelModules = ["wireguard" "ifb" "sch_htb" "sch_ingress" "cls_u32" "act_mirred"];
      boot.extraModprobeConfig = "options ifb numifbs=0";

      # The tables NixOS does not declare survive a firewall reload only without a full flush;
      # the daemon's `inet waylume` table holds the peers' quota counters.
      networking.nftables.flushRuleset = mkDefault false;

      networking.dhcpcd.denyInterfaces = [iface ifb];
      networking.networkmanager.unmanaged = ["interface-name:${iface}" "interface-name:${ifb}"];
      systemd.network.networks."40-waylume-${iface}" = mkIf config.networking.useNetworkd {
        matchConfig.Name = "${iface} ${ifb}";
        linkConfig.Unmanaged = true;
      };

      environment.systemPackages = [cfg.package];

      systemd.services.waylume-server = {
        description = "Waylume WireGuard VPN node";
        wantedBy = ["multi-user.target"];
        wants = ["network-online.target"] ++ optionals kernelLink ["wireguard-${iface}.service" "waylume-dataplane.service"];
        after =
          ["network-online.target" "nftables.service" "firewall.service"]
          ++ optionals kernelLink ["wireguard-${iface}.service" "waylume-dataplane.service"];
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
          # 78 (EX_CONFIG): the daemon cannot run with this configuration (a missing server id
          # or key, say). Restarting would not help; the unit stays failed with the reason.
          RestartPreventExitStatus = [78];
          EnvironmentFile = cfg.environmentFiles;
          LoadCredential =
            optional (cfg.supabaseKeyFile != null) "supabase-key:${cfg.supabaseKeyFile}"
            ++ optional (cfg.apiSecretFile != null) "api-secret:${cfg.apiSecretFile}";
          StateDirectory = "waylume-server";
          StateDirectoryMode = "0700";
          WorkingDirectory = stateDir;

          # Runs as uid 0 with a bounding set of network capabilities only: the link's private
          # key in the state directory is created root-only by wireguard-${iface}-key.service,
          # and without CAP_DAC_OVERRIDE or CAP_SYS_ADMIN root here can change nothing but its
          # own files and the network.
          CapabilityBoundingSet = capabilities;
          AmbientCapabilities = capabilities;
          # The capabilities must be real in the initial user namespace to change its network.
          PrivateUsers = false;
          NoNewPrivileges = true;
          # wireguard-go, when used, needs the TUN device and its UAPI socket directory.
          DevicePolicy = "closed";
          DeviceAllow = ["/dev/net/tun rw"];
          ReadWritePaths = optional (wgSettings.backend != "kernel") "/run/wireguard";
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

      systemd.tmpfiles.rules = optional (wgSettings.backend != "kernel") "d /run/wireguard 0700 root root -";
    }

    (mkIf kernelLink {
      # The link and its key: generated on the node by the wireguard module's key unit, never
      # in the store. No peers here: they belong to the daemon.
      networking.wireguard.interfaces.${iface} = {
        ips = [(wl.gatewayAddress4 wgSettings.subnet)];
        listenPort = wgSettings.listen_port;
        inherit (wgSettings) mtu;
        inherit privateKeyFile;
        generatePrivateKeyFile = true;
      };

      # The roots the daemon hangs per-peer state from. Each step adds only what is missing,
      # so running again after a switch never resets the daemon's classes, filters or quotas.
      # It follows the link: if the link is recreated, this runs again.
      systemd.services.waylume-dataplane = {
        description = "Waylume data-plane roots on ${iface}";
        wantedBy = ["multi-user.target"];
        requires = ["wireguard-${iface}.service"];
        after = ["wireguard-${iface}.service"];
        partOf = ["wireguard-${iface}.service"];
        before = ["waylume-server.service"];
        path = [pkgs.iproute2 pkgs.nftables pkgs.gnugrep];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
        };
        script =
          ''
            ip link show ${ifb} >/dev/null 2>&1 || ip link add ${ifb} type ifb
            ip link set ${ifb} up
            # `add table` creates the daemon's table when missing and never flushes it.
            nft add table inet waylume
          ''
          + optionalString dataplane.shaping ''
            # Download is shaped on the link, upload on the IFB fed from the link's ingress.
            # `default 0`: traffic of peers without a class passes unshaped. The same objects,
            # with the same parameters, as the daemon's plan, so that it adopts them unchanged.
            tc qdisc show dev ${iface} root | grep -q '^qdisc htb 1: ' \
              || tc qdisc replace dev ${iface} root handle 1: htb default 0 r2q 10
            tc qdisc show dev ${ifb} root | grep -q '^qdisc htb 1: ' \
              || tc qdisc replace dev ${ifb} root handle 1: htb default 0 r2q 10
            if ! tc qdisc show dev ${iface} ingress | grep -q '^qdisc ingress'; then
              tc qdisc add dev ${iface} handle ffff: ingress
              tc filter add dev ${iface} parent ffff: prio 1 protocol all u32 match u32 0 0 \
                action mirred egress redirect dev ${ifb}
            fi
          '';
      };
    })

    (mkIf (config.networking.firewall.enable && nftFirewall) {
      networking.firewall.filterForward = true;
      networking.firewall.extraForwardRules = nftForwardRules;
      networking.firewall.extraInputRules = mkIf cfg.openFirewall (
        optionalString (sources4 != []) ''
          ip saddr { ${builtins.concatStringsSep ", " sources4} } tcp dport ${toString apiPort} accept comment "waylume API"
        ''
        + optionalString (sources6 != []) ''
          ip6 saddr { ${builtins.concatStringsSep ", " sources6} } tcp dport ${toString apiPort} accept comment "waylume API"
        ''
      );
    })

    (mkIf (config.networking.firewall.enable && !nftFirewall) {
      networking.firewall.extraCommands =
        iptablesForwardRules "iptables" wl.privateNetworks4
        + iptablesForwardRules "ip6tables" ["fc00::/7" "fe80::/10"]
        + optionalString cfg.openFirewall (iptablesApiRules "iptables" sources4 + iptablesApiRules "ip6tables" sources6);
      networking.firewall.extraStopCommands = iptablesStop "iptables" + iptablesStop "ip6tables";
    })

    (mkIf cfg.openFirewall {
      networking.firewall.allowedUDPPorts = [wgSettings.listen_port];
    })
  ]);
}
