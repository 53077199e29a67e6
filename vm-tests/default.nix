# The VM tests, one scenario per file, as flake checks. Every node gets the project's module.
{
  pkgs,
  module,
  imageModule,
}: let
  runTest = test:
    pkgs.testers.runNixOSTest {
      imports = [test];
      globalTimeout = 15 * 60;
      extraBaseModules.imports = [module];
      node.specialArgs = {inherit imageModule;};
    };
in {
  vm-peer-lifecycle = runTest ./peer-lifecycle.nix;
  vm-isolation-nftables = runTest ./isolation.nix;
  vm-isolation-iptables = runTest {
    imports = [./isolation.nix];
    name = pkgs.lib.mkForce "waylume-isolation-iptables";
    nodes.node.networking.nftables.enable = false;
  };
  vm-speed-limit = runTest ./speed-limit.nix;
  vm-data-cap = runTest ./data-cap.nix;
  vm-persistence = runTest ./persistence.nix;
  vm-switch = runTest ./switch.nix;
  vm-control-plane = runTest ./control-plane.nix;
  vm-image-boot = runTest ./image-boot.nix;
}
