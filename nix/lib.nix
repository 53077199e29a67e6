# Pure helpers for the NixOS module, written against `builtins` only so that they can be
# evaluated and tested without nixpkgs (`nix-instantiate --eval nix/tests/lib.nix`).
let
  inherit (builtins) all concatStringsSep elemAt filter foldl' genList match stringLength substring toString;

  # Octets without leading zeros: "010" is octal to some tools and decimal to others.
  octet = "(0|[1-9][0-9]{0,2})";
  ipv4Pattern = "${octet}\\.${octet}\\.${octet}\\.${octet}";

  pow2 = n: foldl' (acc: _: acc * 2) 1 (genList (i: i) n);

  # "10.0.0.0/8" -> { octets = [10 0 0 0]; prefix = 8; } or null when it is not an IPv4 CIDR.
  parseCidr4 = cidr: let
    m = match "${ipv4Pattern}/(0|[1-9][0-9]?)" cidr;
    octets = map (i: builtins.fromJSON (elemAt m i)) [0 1 2 3];
    prefix = builtins.fromJSON (elemAt m 4);
  in
    if m == null || !(all (o: o <= 255) octets) || prefix > 32
    then null
    else {inherit octets prefix;};

  toInt4 = octets: foldl' (acc: o: acc * 256 + o) 0 octets;
  fromInt4 = n:
    concatStringsSep "." (map toString [
      (n / 16777216)
      (builtins.bitAnd (n / 65536) 255)
      (builtins.bitAnd (n / 256) 255)
      (builtins.bitAnd n 255)
    ]);
  hostBits4 = prefix: pow2 (32 - prefix) - 1;

  # "2001:db8::/64" -> true when it has the shape of an IPv6 CIDR with a prefix of at most 128.
  # Host bits are not checked for IPv6: the daemon does that with a real parser.
  isCidr6 = cidr: let
    m = match "([0-9a-fA-F:]*:[0-9a-fA-F:]*)/([0-9]{1,3})" cidr;
  in
    m != null && builtins.fromJSON (elemAt m 1) <= 128;

  storeDir = builtins.storeDir;

  # Names the daemon derives as well, from the same file (src/core/plan/names.rs embeds it).
  names = builtins.fromJSON (builtins.readFile ../src/core/plan/names.json);
in rec {
  inherit parseCidr4 isCidr6;

  # The IFB the daemon creates for a link's upload traffic: "wg0" -> "ifb-wg0", cut to the
  # interface-name limit.
  ifbName = iface: substring 0 names.ifname_max_bytes "${names.ifb_prefix}${iface}";

  # Linux refuses interface names of 16 bytes or more (IFNAMSIZ is 16 with the NUL), and
  # iproute2 rejects '/', whitespace and ':'; wg-quick is stricter still, so follow it.
  validInterfaceName = name:
    stringLength name
    >= 1
    && stringLength name <= names.ifname_max_bytes
    && match "[a-zA-Z0-9_=+.-]+" name != null;

  # A network address has every host bit clear: "10.0.0.0/8" is one, "10.0.0.1/8" is not.
  isNetwork4 = cidr: let
    p = parseCidr4 cidr;
  in
    p != null && builtins.bitAnd (toInt4 p.octets) (hostBits4 p.prefix) == 0;

  # "10.0.0.0/8" -> "10.0.0.0/8" with the host bits cleared, for the assertion's hint.
  networkOf4 = cidr: let
    p = parseCidr4 cidr;
    n = toInt4 p.octets;
  in "${fromInt4 (n - builtins.bitAnd n (hostBits4 p.prefix))}/${toString p.prefix}";

  # The node's own address on the WireGuard link: the first host of the subnet, with the
  # subnet's prefix ("10.0.0.0/8" -> "10.0.0.1/8"), as peers are given the following ones.
  gatewayAddress4 = cidr: let
    p = parseCidr4 cidr;
  in "${fromInt4 (toInt4 p.octets + 1)}/${toString p.prefix}";

  isStorePath = path: let
    s = toString path;
  in
    substring 0 (stringLength storeDir + 1) s == "${storeDir}/";

  # Evaluation-time checks of the module's configuration, as plain data so they can be tested
  # without evaluating NixOS. Returns the list of failed checks' messages.
  configErrors = {
    settings,
    secretFiles,
  }: let
    wg = settings.wireguard;
    api = settings.api;
    checks =
      [
        {
          ok = validInterfaceName wg.interface;
          message = ''services.waylume-server.settings.wireguard.interface = "${wg.interface}" is not a usable interface name: it must be 1 to ${toString names.ifname_max_bytes} bytes (Linux IFNAMSIZ) of letters, digits and _=+.- (it is ${toString (stringLength wg.interface)} bytes).'';
        }
        {
          ok = parseCidr4 wg.subnet != null;
          message = ''services.waylume-server.settings.wireguard.subnet = "${wg.subnet}" is not an IPv4 network in CIDR form such as "10.0.0.0/8".'';
        }
        {
          ok = parseCidr4 wg.subnet == null || isNetwork4 wg.subnet;
          message = ''services.waylume-server.settings.wireguard.subnet = "${wg.subnet}" is not a network address: its host bits are set${
              if parseCidr4 wg.subnet == null
              then ""
              else " (the network is ${networkOf4 wg.subnet})"
            }.'';
        }
        {
          ok = parseCidr4 wg.subnet == null || (parseCidr4 wg.subnet).prefix <= 30;
          message = ''services.waylume-server.settings.wireguard.subnet = "${wg.subnet}" leaves no room for peers: use a prefix of /30 or shorter.'';
        }
        {
          ok = (wg.subnet_v6 or null) == null || isCidr6 wg.subnet_v6;
          message = ''services.waylume-server.settings.wireguard.subnet_v6 = "${toString (wg.subnet_v6 or "")}" is not an IPv6 network in CIDR form such as "fd00:77::/64".'';
        }
        {
          ok = api.port != wg.listen_port;
          message = "services.waylume-server: settings.api.port and settings.wireguard.listen_port are both ${toString api.port}; give the API and WireGuard different ports.";
        }
      ]
      ++ map (name: {
        ok = secretFiles.${name} == null || !(isStorePath secretFiles.${name});
        message = "services.waylume-server.${name} = ${toString secretFiles.${name}} is in the Nix store, which every local user can read; keep the secret outside the store (for example under /run/secrets or /etc/waylume) and give its path as a string.";
      }) (builtins.attrNames secretFiles);
  in
    map (c: c.message) (filter (c: !c.ok) checks);

  # Private and shared address ranges a peer must not reach through the node when
  # `block_private_networks` is on (RFC 1918, RFC 6598 shared space, link-local).
  privateNetworks4 = ["10.0.0.0/8" "172.16.0.0/12" "192.168.0.0/16" "100.64.0.0/10" "169.254.0.0/16"];
}
