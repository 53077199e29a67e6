# The VM tests, one scenario per file, as flake checks. Every node gets the project's module.
# `vm-tests-consistency` checks, by evaluation alone, what a test run would otherwise find out
# only after building every VM (see consistency.nix).
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
  tests = {
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
  };
in
  tests
  // {
    vm-tests-consistency = import ./consistency.nix {
      inherit pkgs tests;
    };
  }
