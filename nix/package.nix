{
  lib,
  rustPlatform,
  makeBinaryWrapper,
  installShellFiles,
  pkg-config,
  libpcap,
  iproute2,
  nftables,
  wireguard-tools,
  wireguard-go,
  util-linux,
}: let
  fs = lib.fileset;
  cargoToml = lib.importTOML ../Cargo.toml;
in
  rustPlatform.buildRustPackage {
    pname = cargoToml.package.name;
    inherit (cargoToml.package) version;

    # Only what cargo reads: the tests directory stays whole because integration tests load
    # their fixtures (configs, captures, the Supabase migration) from it at run time.
    src = fs.toSource {
      root = ../.;
      fileset = fs.unions [
        ../Cargo.toml
        ../Cargo.lock
        ../src
        (fs.maybeMissing ../build.rs)
        (fs.maybeMissing ../tests)
        (fs.maybeMissing ../benches)
        (fs.maybeMissing ../examples)
        (fs.maybeMissing ../supabase)
      ];
    };
    cargoLock.lockFile = ../Cargo.lock;

    nativeBuildInputs = [pkg-config makeBinaryWrapper installShellFiles];
    # `script` gives the operator CLI tests their pseudo-terminal.
    nativeCheckInputs = [util-linux];
    buildInputs = [libpcap];

    # The build sandbox has neither root nor PostgreSQL. Tests that need root or network
    # namespaces are #[ignore]d in the source; the tests against PostgreSQL (tests/control/
    # start a cluster of their own with `initdb`) are not, so the check runs only the test
    # targets that need neither: the unit tests and the integration tests of the API, the
    # classifier and the operator's commands. The rest (tests/control, tests/lab, tests/deps)
    # run in the project's CI (scripts/test.sh) and in the VM tests. scripts/check-nix.sh runs
    # this same selection outside Nix with no PostgreSQL reachable.
    cargoTestFlags = ["--lib" "--bins"] ++ lib.concatMap (t: ["--test" t]) ["api" "classify" "operator"];

    # The daemon shells out to ip, tc, nft and wg, and starts wireguard-go when the kernel has
    # no WireGuard module; pin those tools instead of relying on the caller's PATH.
    # Completions and the man page come from the binary's own command line definitions.
    postInstall = ''
      installShellCompletion --cmd waylume-server \
        --bash <($out/bin/waylume-server completions bash) \
        --zsh <($out/bin/waylume-server completions zsh) \
        --fish <($out/bin/waylume-server completions fish)
      $out/bin/waylume-server man > waylume-server.1
      installManPage waylume-server.1
      wrapProgram $out/bin/waylume-server \
        --prefix PATH : ${lib.makeBinPath [iproute2 nftables wireguard-tools wireguard-go]}
    '';

    meta = {
      description = cargoToml.package.description;
      license = lib.licenses.lgpl21Plus;
      mainProgram = "waylume-server";
      platforms = lib.platforms.linux;
    };
  }
