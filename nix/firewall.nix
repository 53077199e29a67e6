# Peer isolation on the host, independent of the daemon: peers never reach each other or the
# private networks behind the node, and nothing outside opens connections to peers. The rules
# hold while the daemon is stopped or restarting.
#
# nftables: a table of the module's own whose forward chain runs before the NixOS firewall's
# (priority filter - 1), so that none of the firewall's own accepts (ICMPv6, DNAT) come first; a
# drop in any base chain is final. The firewall's forward-allow chain then lets peers out.
# iptables: a chain at the head of FORWARD with the same drops, since the iptables firewall
# leaves FORWARD at ACCEPT.
{
  lib,
  cfg,
  config,
  privateNetworks4,
}: let
  inherit (lib) concatMapStrings concatStringsSep mkIf mkMerge optional optionalString optionals;
  dataplane = cfg.settings.dataplane;
  iface = cfg.settings.wireguard.interface;
  apiPort = cfg.settings.api.port;
  privateNetworks6 = ["fc00::/7" "fe80::/10"];
  firewallOn = config.networking.firewall.enable;
  nft = config.networking.nftables.enable;
  isV6 = source: lib.hasInfix ":" source;
  sources4 = builtins.filter (s: !isV6 s) cfg.apiAllowedSources;
  sources6 = builtins.filter isV6 cfg.apiAllowedSources;
  # The operator's allow-list opens its networks here as in the daemon's own fence.
  allow = dataplane.allow_networks or [];
  allow4 = builtins.filter (s: !isV6 s) allow;
  allow6 = builtins.filter isV6 allow;

  nftIsolation = concatStringsSep "\n" (
    optional dataplane.isolation ''iifname "${iface}" oifname "${iface}" drop comment "peers never reach each other"''
    ++ optionals dataplane.block_private_networks (
      optional (allow4 != []) ''iifname "${iface}" ip daddr { ${concatStringsSep ", " allow4} } accept comment "dataplane.allow_networks"''
      ++ optional (allow6 != []) ''iifname "${iface}" ip6 daddr { ${concatStringsSep ", " allow6} } accept comment "dataplane.allow_networks"''
    )
    ++ optionals dataplane.block_private_networks [
      ''iifname "${iface}" ip daddr { ${concatStringsSep ", " privateNetworks4} } drop comment "no private networks through the tunnel"''
      ''iifname "${iface}" ip6 daddr { ${concatStringsSep ", " privateNetworks6} } drop comment "no private networks through the tunnel"''
    ]
    ++ [''oifname "${iface}" iifname != "${iface}" ct state new drop comment "nothing outside opens connections to peers"'']
  );

  iptablesForward = tool: nets: allowed:
    ''
      ${tool} -w -N waylume-fwd 2>/dev/null || ${tool} -w -F waylume-fwd
    ''
    + optionalString dataplane.isolation ''
      ${tool} -w -A waylume-fwd -i ${iface} -o ${iface} -j DROP
    ''
    + optionalString dataplane.block_private_networks (concatMapStrings (net: ''
        ${tool} -w -A waylume-fwd -i ${iface} -d ${net} -j RETURN
      '')
      allowed
      + concatMapStrings (net: ''
        ${tool} -w -A waylume-fwd -i ${iface} -d ${net} -j DROP
      '')
      nets)
    + ''
      ${tool} -w -A waylume-fwd -o ${iface} ! -i ${iface} -m conntrack --ctstate NEW,INVALID -j DROP
      ${tool} -w -C FORWARD -j waylume-fwd 2>/dev/null || ${tool} -w -I FORWARD 1 -j waylume-fwd
    '';
  iptablesStop = tool: ''
    ${tool} -w -D FORWARD -j waylume-fwd 2>/dev/null || true
    ${tool} -w -F waylume-fwd 2>/dev/null || true
    ${tool} -w -X waylume-fwd 2>/dev/null || true
  '';
  iptablesApi = tool: sources:
    concatMapStrings (source: ''
      ${tool} -w -I nixos-fw 1 -p tcp -s ${source} --dport ${toString apiPort} -j nixos-fw-accept
    '')
    sources;
in
  mkMerge [
    (mkIf nft {
      networking.nftables.tables.waylume_isolation = {
        family = "inet";
        content = ''
          chain forward {
            type filter hook forward priority filter - 1; policy accept;
            ${nftIsolation}
          }
        '';
      };
    })

    (mkIf (firewallOn && nft) {
      # The firewall's forward chain drops what its forward-allow chain does not accept.
      networking.firewall.filterForward = true;
      networking.firewall.extraForwardRules = ''iifname "${iface}" accept comment "waylume: peers reach the internet"'';
      networking.firewall.extraInputRules = mkIf cfg.openFirewall (
        optionalString (sources4 != []) ''
          ip saddr { ${concatStringsSep ", " sources4} } tcp dport ${toString apiPort} accept comment "waylume API"
        ''
        + optionalString (sources6 != []) ''
          ip6 saddr { ${concatStringsSep ", " sources6} } tcp dport ${toString apiPort} accept comment "waylume API"
        ''
      );
    })

    (mkIf (firewallOn && !nft) {
      networking.firewall.extraCommands =
        iptablesForward "iptables" privateNetworks4 allow4
        + iptablesForward "ip6tables" privateNetworks6 allow6
        + optionalString cfg.openFirewall (iptablesApi "iptables" sources4 + iptablesApi "ip6tables" sources6);
      networking.firewall.extraStopCommands = iptablesStop "iptables" + iptablesStop "ip6tables";
    })

    (mkIf cfg.openFirewall {
      networking.firewall.allowedUDPPorts = [cfg.settings.wireguard.listen_port];
    })
  ]
