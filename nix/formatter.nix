# The flake's `formatter` (`nix fmt`): alejandra, as the library version pinned by the project's
# tools/nixfmt-check, which is also what CI checks with. Using one build for both means a file
# `nix fmt` left alone never fails the check because of a formatter version difference.
{
  lib,
  rustPlatform,
  writeShellScriptBin,
}: let
  fs = lib.fileset;
  tool = rustPlatform.buildRustPackage {
    pname = "nixfmt-check";
    version = "0.1.0";
    src = fs.toSource {
      root = ../tools/nixfmt-check;
      fileset = fs.unions [
        ../tools/nixfmt-check/Cargo.toml
        ../tools/nixfmt-check/Cargo.lock
        ../tools/nixfmt-check/src
      ];
    };
    cargoLock.lockFile = ../tools/nixfmt-check/Cargo.lock;
    meta.mainProgram = "nixfmt-check";
  };
in
  writeShellScriptBin "waylume-nix-fmt" ''
    exec ${lib.getExe tool} --write "$@"
  ''
