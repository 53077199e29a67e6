# The NixOS module evaluated without nixpkgs: `nix-instantiate --eval --strict nix/tests/module-stub.nix`.
#
# A small stand-in for the parts of nixpkgs' `lib` and `pkgs` the module uses (options keep
# their declarations, mkIf/mkMerge are resolved by a plain deep merge) is enough to check what
# the module renders from given option values: the link, the unit, the firewall rules for both
# backends, the configuration file and the build-time check. It cannot check option types or
# NixOS' own options; the flake's module-assertions check does that against real NixOS.
# Evaluates to the number of passing cases, or aborts naming the failing ones.
let
  inherit (builtins) all any attrNames concatMap concatStringsSep elem filter foldl' isAttrs isList length listToAttrs mapAttrs match;

  hasInfix = needle: haystack: length (builtins.split (escapeRegex needle) haystack) > 1;
  # Bracket expressions: std::regex (Nix's) rejects some backslash escapes such as `\{`.
  escapeRegex = builtins.replaceStrings ["\\" "." "[" "]" "{" "}" "(" ")" "*" "+" "?" "^" "$" "|"] ["\\\\" "[.]" "[[]" "[]]" "[{]" "[}]" "[(]" "[)]" "[*]" "[+]" "[?]" "\\^" "[$]" "[|]"];

  recursiveUpdate = a: b:
    a
    // mapAttrs (n: v:
      if isAttrs v && isAttrs (a.${n} or null) && !(v ? _option)
      then recursiveUpdate a.${n} v
      else v)
    b;

  lib = {
    inherit recursiveUpdate hasInfix;
    mkOption = decl: decl // {_option = true;};
    mkEnableOption = _: lib.mkOption {default = false;};
    mkPackageOption = _: name: _: lib.mkOption {default = "pkgs.${name}";};
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };
    mkDefault = v: v;
    optional = c: v:
      if c
      then [v]
      else [];
    optionals = c: v:
      if c
      then v
      else [];
    optionalString = c: s:
      if c
      then s
      else "";
    optionalAttrs = c: a:
      if c
      then a
      else {};
    concatMapStrings = f: l: concatStringsSep "" (map f l);
    max = a: b:
      if a > b
      then a
      else b;
    getExe = p: "${p}/bin/waylume-server";
    filterAttrsRecursive = pred: set:
      listToAttrs (concatMap (name: let
        v = set.${name};
      in
        if pred name v
        then [
          {
            inherit name;
            value =
              if isAttrs v
              then lib.filterAttrsRecursive pred v
              else v;
          }
        ]
        else []) (attrNames set));
    types = {
      submodule = m: {submodule = m;};
      nullOr = t: t;
      listOf = t: t;
      attrsOf = t: t;
      enum = _: "enum";
      str = "str";
      bool = "bool";
      port = "port";
      float = "float";
      ints = {
        positive = "int";
        unsigned = "int";
      };
    };
  };

  pkgs = {
    formats.toml = _: {
      type = "toml";
      # Store paths stand-ins that carry their content, so it can be read back from strings.
      generate = name: value: "/stub/${name}:${builtins.toJSON value}";
    };
    runCommand = name: _: script: "/stub/${name}:${builtins.toJSON {inherit script;}}";
    stdenv = {
      buildPlatform.canExecute = _: true;
      hostPlatform = "x86_64-linux";
    };
    iproute2 = "iproute2";
    nftables = "nftables";
    gnugrep = "gnugrep";
  };

  # Option declarations -> their defaults, settings' submodule included.
  defaults = opts:
    if opts ? _option
    then
      (
        if opts ? type && isAttrs opts.type && opts.type ? submodule
        then recursiveUpdate (defaults opts.type.submodule.options) (opts.default or {})
        else opts.default or null
      )
    else mapAttrs (_: defaults) opts;

  # mkIf/mkMerge resolved; lists from several definitions are concatenated.
  merge = a: b:
    if isAttrs a && isAttrs b
    then
      a
      // mapAttrs (n: v:
        if a ? ${n}
        then merge a.${n} v
        else v)
      b
    else if isList a && isList b
    then a ++ b
    else b;
  resolve = v:
    if isAttrs v && (v._type or null) == "if"
    then
      (
        if v.condition
        then resolve v.content
        else {}
      )
    else if isAttrs v && (v._type or null) == "merge"
    then foldl' merge {} (map resolve v.contents)
    else if isAttrs v
    then mapAttrs (_: resolve) (removeDisabled v)
    else v;
  # An attribute whose value is a false mkIf is not defined at all.
  removeDisabled = set:
    builtins.removeAttrs set (filter (n: isAttrs set.${n} && (set.${n}._type or null) == "if" && !set.${n}.condition) (attrNames set));

  evalWith = {
    cfg ? {},
    nftables ? true,
  }: let
    module = import ../module.nix {
      inherit lib pkgs;
      config = {
        services.waylume-server = recursiveUpdate (defaults module.options.services.waylume-server) ({enable = true;} // cfg);
        networking = {
          nftables.enable = nftables;
          firewall.enable = true;
          useNetworkd = false;
        };
      };
    };
  in
    resolve module.config;

  plain = evalWith {};
  unit = plain.systemd.services.waylume-server;
  iptables = evalWith {nftables = false;};
  userspace = evalWith {cfg.settings.wireguard.backend = "userspace";};
  lowPort = evalWith {cfg.settings.api.port = 80;};
  opened = evalWith {
    cfg = {
      openFirewall = true;
      apiAllowedSources = ["203.0.113.0/24" "2001:db8::/32"];
    };
  };
  openedIptables = evalWith {
    nftables = false;
    cfg = {
      openFirewall = true;
      apiAllowedSources = ["203.0.113.0/24"];
    };
  };
  withId = evalWith {cfg.settings.server_id = "de-fra-1";};
  secrets = evalWith {
    cfg = {
      supabaseKeyFile = "/run/secrets/supabase-key";
      apiSecretFile = "/run/secrets/api-secret";
    };
  };
  bad = evalWith {cfg.settings.wireguard.interface = "sixteen-bytes-16";};
  # What the unit runs with: the build-time check (name, script) and the TOML it renders.
  configOf = e: let
    execStart = e.systemd.services.waylume-server.serviceConfig.ExecStart;
    checked = match "pkgs.waylume-server/bin/waylume-server serve --config /stub/([^:]*):(.*)" execStart;
    script = (builtins.fromJSON (builtins.elemAt checked 1)).script;
    checkLine = builtins.head (filter (l: builtins.isString l && hasInfix "check-config" l) (builtins.split "\n" script));
    raw = match ".*--config /stub/waylume-server.toml:(.*)" checkLine;
  in {
    name = builtins.elemAt checked 0;
    inherit script;
    rendered = builtins.fromJSON (builtins.elemAt raw 0);
  };
  cases = {
    noAssertionFails = all (a: a.assertion) plain.assertions;
    badInterfaceAsserts = any (a: !a.assertion && hasInfix "1 to 15 bytes" a.message) bad.assertions;
    linkDeclared =
      plain.networking.wireguard.interfaces.wg0
      == {
        ips = ["10.0.0.1/8"];
        listenPort = 51820;
        mtu = 1420;
        privateKeyFile = "/var/lib/waylume-server/private.key";
        generatePrivateKeyFile = true;
      };
    notifyWithWatchdog = unit.serviceConfig.Type == "notify" && unit.serviceConfig.WatchdogSec == "30s";
    restartsButNotOnConfigErrors = unit.serviceConfig.Restart == "on-failure" && unit.serviceConfig.RestartPreventExitStatus == [78];
    orderedAfterTheLink = elem "wireguard-wg0.service" unit.after && elem "waylume-dataplane.service" unit.after;
    leastCapabilities = unit.serviceConfig.CapabilityBoundingSet == ["CAP_NET_ADMIN" "CAP_NET_RAW"];
    bindCapabilityOnlyBelow1024 = elem "CAP_NET_BIND_SERVICE" lowPort.systemd.services.waylume-server.serviceConfig.CapabilityBoundingSet;
    stateDirectory = unit.serviceConfig.StateDirectory == "waylume-server" && unit.serviceConfig.StateDirectoryMode == "0700";
    noCredentialsByDefault = unit.serviceConfig.LoadCredential == [];
    credentials = secrets.systemd.services.waylume-server.serviceConfig.LoadCredential == ["supabase-key:/run/secrets/supabase-key" "api-secret:/run/secrets/api-secret"];
    forwarding = plain.boot.kernel.sysctl."net.ipv4.conf.all.forwarding" == true && !(plain.boot.kernel.sysctl ? "net.ipv6.conf.all.forwarding");
    nftablesIsolation =
      plain.networking.firewall.filterForward
      && hasInfix ''iifname "wg0" oifname "wg0" drop'' plain.networking.firewall.extraForwardRules
      && hasInfix ''iifname "wg0" ip daddr { 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, 169.254.0.0/16 } drop'' plain.networking.firewall.extraForwardRules
      && !(plain.networking.firewall ? extraCommands);
    nftablesKeepsOtherTables = plain.networking.nftables.flushRuleset == false;
    iptablesIsolation =
      hasInfix "iptables -w -A waylume-fwd -i wg0 -o wg0 -j DROP" iptables.networking.firewall.extraCommands
      && hasInfix "ip6tables -w -A waylume-fwd -i wg0 -d fc00::/7 -j DROP" iptables.networking.firewall.extraCommands
      && hasInfix "iptables -w -D FORWARD -j waylume-fwd" iptables.networking.firewall.extraStopCommands
      && !(iptables.networking.firewall ? extraForwardRules);
    closedByDefault = !(plain.networking.firewall ? allowedUDPPorts) && !(plain.networking.firewall ? extraInputRules && plain.networking.firewall.extraInputRules != "");
    openedWireGuardPort = opened.networking.firewall.allowedUDPPorts == [51820];
    apiOnlyFromSources =
      hasInfix "ip saddr { 203.0.113.0/24 } tcp dport 3000 accept" opened.networking.firewall.extraInputRules
      && hasInfix "ip6 saddr { 2001:db8::/32 } tcp dport 3000 accept" opened.networking.firewall.extraInputRules;
    apiOnlyFromSourcesIptables = hasInfix "iptables -w -I nixos-fw 1 -p tcp -s 203.0.113.0/24 --dport 3000 -j nixos-fw-accept" openedIptables.networking.firewall.extraCommands;
    userspaceDeclaresNoLink =
      !(userspace.networking ? wireguard)
      && !(userspace.systemd.services ? waylume-dataplane)
      && userspace.systemd.services.waylume-server.serviceConfig.ReadWritePaths == ["/run/wireguard"]
      && userspace.systemd.tmpfiles.rules == ["d /run/wireguard 0700 root root -"];
    scaffoldingOnlyAdds = let
      script = plain.systemd.services.waylume-dataplane.script;
    in
      hasInfix "ip link show ifb-wg0 >/dev/null 2>&1 || ip link add ifb-wg0 type ifb" script
      && hasInfix "nft add table inet waylume" script
      && !(hasInfix "nft flush" script)
      && !(hasInfix "qdisc del" script)
      && hasInfix "|| tc qdisc replace dev wg0 root handle 1: htb default 0" script;
    buildTimeCheck = let
      check = configOf plain;
    in
      check.name
      == "waylume-server-checked.toml"
      && hasInfix "SERVER_ID=build-time-check waylume-server check-config --config" check.script;
    buildTimeCheckKeepsAGivenId = !(hasInfix "SERVER_ID=" (configOf withId).script);
    renderedWithoutNulls = let
      inherit (configOf plain) rendered;
    in
      !(rendered ? server_id) && !(rendered.wireguard ? endpoint) && rendered.wireguard.interface == "wg0";
    settingsDefaults = let
      s =
        (defaults
          (import ../module.nix {
            inherit lib pkgs;
            config = {};
          })
          .options
          .services
          .waylume-server)
        .settings;
    in
      s.wireguard.interface
      == "wg0"
      && s.wireguard.listen_port == 51820
      && s.wireguard.subnet == "10.0.0.0/8"
      && s.api.port == 3000
      && s.dataplane.reconcile_interval_secs == 5
      && s.state_dir == "/var/lib/waylume-server"
      && s.server_id == null
      && withId.systemd.services.waylume-server.serviceConfig.Type == "notify";
  };
  failed = filter (name: !cases.${name}) (attrNames cases);
in
  if failed == []
  then length (attrNames cases)
  else throw "module stub checks failed: ${concatStringsSep ", " failed}"
