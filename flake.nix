{
  description = "Waylume Server: a self-managing WireGuard VPN node, its NixOS module, cloud image and VM tests";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs = {
    self,
    nixpkgs,
  }: let
    inherit (nixpkgs) lib;
    forAllSystems = f:
      lib.genAttrs ["x86_64-linux" "aarch64-linux"] (system: f system nixpkgs.legacyPackages.${system});

    # The cloud image's NixOS configuration; its disk image is packages.image.
    imageSystem = system:
      lib.nixosSystem {
        modules = [
          self.nixosModules.default
          ./nix/image.nix
          {nixpkgs.hostPlatform = system;}
        ];
      };
  in {
    packages = forAllSystems (system: pkgs: {
      default = pkgs.callPackage ./nix/package.nix {};
      waylume-server = self.packages.${system}.default;
      # `./result | docker load`; examples/docker-compose.yml runs it.
      oci-image = pkgs.callPackage ./nix/oci-image.nix {package = self.packages.${system}.default;};
      # BIOS boot where clouds still default to it, UEFI where nothing else exists.
      image =
        (imageSystem system)
        .config
        .system
        .build
        .images
        .${
          if system == "x86_64-linux"
          then "qemu"
          else "qemu-efi"
        };
    });

    # The module, with the package defaulting to this flake's build so no overlay is needed.
    nixosModules.default = {
      lib,
      pkgs,
      ...
    }: {
      imports = [./nix/module.nix];
      services.waylume-server.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
    };

    nixosConfigurations = {
      # An example fleet node: `nixos-rebuild switch --flake .#node` after adapting nix/node.nix.
      node = lib.nixosSystem {
        modules = [
          self.nixosModules.default
          ./nix/node.nix
          {nixpkgs.hostPlatform = "x86_64-linux";}
        ];
      };
    };

    checks = forAllSystems (system: pkgs:
      {
        package = self.packages.${system}.default;
        nix-lib = pkgs.runCommand "waylume-nix-lib-tests" {} ''
          echo "${toString (import ./nix/tests/lib.nix)} cases passed" > $out
        '';
        image-assertions = import ./nix/tests/image-assertions.nix {
          inherit pkgs;
          inherit (self.packages.${system}) image;
        };
        module-assertions = import ./nix/tests/module-assertions.nix {
          inherit lib pkgs;
          module = self.nixosModules.default;
        };
      }
      // import ./vm-tests {
        inherit pkgs;
        module = self.nixosModules.default;
        imageModule = ./nix/image.nix;
      });

    formatter = forAllSystems (_: pkgs: pkgs.callPackage ./nix/formatter.nix {});

    devShells = forAllSystems (system: pkgs: {
      default = pkgs.mkShell {
        inputsFrom = [self.packages.${system}.default];
        packages = with pkgs; [
          cargo
          clippy
          rustfmt
          rust-analyzer
          self.formatter.${system}
          deadnix
          iproute2
          nftables
          wireguard-tools
          wireguard-go
          iperf3
          postgresql
          qemu
        ];
      };
    });
  };
}
