# Tests of nix/lib.nix that need no nixpkgs:
#   nix-instantiate --eval --strict nix/tests/lib.nix
# Evaluates to the number of passing cases, or aborts naming the first failing one.
let
  wl = import ../lib.nix;

  settings = {
    api.port = 3000;
    wireguard = {
      interface = "wg0";
      subnet = "10.0.0.0/8";
      subnet_v6 = null;
      listen_port = 51820;
    };
  };
  noSecrets = {
    supabaseKeyFile = null;
    apiSecretFile = null;
  };
  errorsOf = {
    wireguard ? {},
    api ? {},
    secretFiles ? {},
  }:
    wl.configErrors {
      settings = {
        api = settings.api // api;
        wireguard = settings.wireguard // wireguard;
      };
      secretFiles = noSecrets // secretFiles;
    };
  # One failing check whose message contains `needle`.
  failsWith = needle: errors:
    builtins.length errors == 1 && builtins.match ".*${needle}.*" (builtins.head errors) != null;

  cases = {
    validNames = builtins.all wl.validInterfaceName ["wg0" "waylume0" "a" "wg_node-1.x=+" "fifteen-bytes15"];
    invalidNames = !(builtins.any wl.validInterfaceName ["" "sixteen-bytes-16" "wg 0" "wg/0" "wg:0"]);
    parsesCidr =
      wl.parseCidr4 "10.20.30.0/24"
      == {
        octets = [10 20 30 0];
        prefix = 24;
      };
    rejectsMalformedCidr = builtins.all (c: wl.parseCidr4 c == null) [
      "10.0.0.0"
      "10.0.0/8"
      "256.0.0.0/8"
      "10.0.0.0/33"
      "010.0.0.0/8"
      "10.0.0.0/08"
      "fd00::/64"
    ];
    networks = builtins.all wl.isNetwork4 ["10.0.0.0/8" "10.77.0.0/24" "192.168.4.0/22" "0.0.0.0/0" "10.0.0.7/32"];
    notNetworks = !(builtins.any wl.isNetwork4 ["10.0.0.1/8" "10.77.0.1/24" "192.168.5.0/22" "nonsense"]);
    networkHint = wl.networkOf4 "192.168.5.9/22" == "192.168.4.0/22";
    gateway = wl.gatewayAddress4 "10.0.0.0/8" == "10.0.0.1/8" && wl.gatewayAddress4 "10.77.0.0/24" == "10.77.0.1/24";
    ipv6 = wl.isCidr6 "fd00:77::/64" && !(wl.isCidr6 "fd00:77::/129") && !(wl.isCidr6 "10.0.0.0/8");
    # The same names as src/core/plan/names.rs's test expects from the shared file.
    ifbNames = wl.ifbName "wg0" == "ifb-wg0" && wl.ifbName "waylume-uplink0" == "ifb-waylume-upl";
    storePaths = wl.isStorePath "${builtins.storeDir}/abc-secret" && !(wl.isStorePath "/run/secrets/supabase-key");

    defaultsAreValid = errorsOf {} == [];
    secretsOutsideStoreAreValid =
      errorsOf {
        secretFiles = {
          supabaseKeyFile = "/run/secrets/supabase-key";
          apiSecretFile = "/etc/waylume/api-secret";
        };
      }
      == [];
    longInterface = failsWith "1 to 15 bytes.*it is 16 bytes" (errorsOf {wireguard.interface = "waylume-uplink-0";});
    hostBitsSet = failsWith "not a network address.*the network is 10.0.0.0/8" (errorsOf {wireguard.subnet = "10.0.0.1/8";});
    notACidr = failsWith "not an IPv4 network in CIDR form" (errorsOf {wireguard.subnet = "10.0.0.0";});
    tooSmall = failsWith "leaves no room for peers" (errorsOf {wireguard.subnet = "10.0.0.0/31";});
    badV6 = failsWith "subnet_v6" (errorsOf {wireguard.subnet_v6 = "fd00::";});
    portClash = failsWith "both 51820" (errorsOf {api.port = 51820;});
    storeSecret = failsWith "supabaseKeyFile = .* is in the Nix store" (errorsOf {
      secretFiles.supabaseKeyFile = "${builtins.storeDir}/0000000000000000000000000000000-supabase-key";
    });
    twoProblemsTwoMessages =
      builtins.length (errorsOf {
        api.port = 51820;
        wireguard.interface = "this-name-is-too-long";
      })
      == 2;
  };

  failed = builtins.filter (name: !cases.${name}) (builtins.attrNames cases);
in
  if failed == []
  then builtins.length (builtins.attrNames cases)
  else throw "nix/lib.nix tests failed: ${builtins.concatStringsSep ", " failed}"
