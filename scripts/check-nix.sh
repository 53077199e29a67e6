#!/usr/bin/env bash
# Checks of the Nix side that run without nixpkgs, a binary cache or KVM:
#   - every .nix file parses (nix-instantiate --parse)
#   - every .nix file is formatted as `nix fmt` leaves it: the flake's formatter is the same
#     tools/nixfmt-check (the alejandra library) that checks here
#   - no dead code (deadnix)
#   - flake.lock matches flake.nix: Nix resolves the flake's inputs from the lock without
#     updating it, and the lock's structure is checked field by field
#   - the module's evaluation-time checks (nix/lib.nix) pass their tests
# and, when the offline evaluator is beside the repository (../shared/nix-eval: Nix 2.26 in a
# chroot and a nixpkgs snapshot, see its README), against that snapshot:
#   - `nix flake check --no-build` has no error: every output, the module's checks
#     (nix/tests/module-assertions.nix) and every VM test with its driver evaluated
#   - each VM test node's, the example node's and the image's waylume-server settings pass the
#     daemon's check-config exactly as the module's build step runs it (nix/config-check.nix)
#   - the package's check phase (its cargoTestFlags) passes outside Nix with no PostgreSQL
#   - examples/docker-compose.yml matches the OCI image and passes check-config
# Installs what it needs: Debian's nix-bin, python3-toml and python3-yaml, deadnix from crates.io.
# usage: scripts/check-nix.sh [--fix]   (--fix rewrites unformatted files instead of failing)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
FIX=0
[ "${1:-}" = --fix ] && FIX=1

DEADNIX_VERSION=1.3.1
if ! command -v nix-instantiate >/dev/null; then
    echo "installing nix-bin"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends nix-bin >/dev/null
fi
# Debian's python3 with Debian's modules, whichever python3 comes first on PATH.
PY=/usr/bin/python3
if ! $PY -c 'import toml, yaml' 2>/dev/null; then
    echo "installing python3-toml python3-yaml"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends python3-toml python3-yaml >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! deadnix --version 2>/dev/null | grep -q "$DEADNIX_VERSION"; then
    echo "installing deadnix $DEADNIX_VERSION"
    cargo install --quiet --locked deadnix --version "$DEADNIX_VERSION"
fi
cargo build --quiet --release --locked --manifest-path tools/nixfmt-check/Cargo.toml
NIXFMT=tools/nixfmt-check/target/release/nixfmt-check

# Root without the nixbld group (Debian's nix-bin in a container): evaluate only, never build.
export NIX_CONFIG="experimental-features = nix-command flakes
build-users-group =
substituters ="

mapfile -t FILES < <(git ls-files --cached --others --exclude-standard '*.nix')
[ "${#FILES[@]}" -gt 0 ] || { echo "no .nix files found" >&2; exit 1; }
failed=0
step() { echo "== $*"; }
bad() { echo "FAIL: $*"; failed=1; }

# Against the snapshot, in the evaluator's chroot. The flake is evaluated from a copy holding
# the files git knows (tracked or not ignored, as they are in the working tree): a worktree's
# git directory lies outside the chroot, and nothing here writes into the checkout.
evaluate_against_snapshot() {
    step "offline evaluator ($EVAL_KIT)"
    "$EVAL_KIT/setup.sh" >/dev/null || { bad "the evaluator's setup.sh failed"; return; }
    local snap out
    snap=$(mktemp -d /tmp/check-nix-flake.XXXXXX)
    git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar -c --null -T - | tar -x -C "$snap"
    git -C "$snap" init -q && git -C "$snap" add -A
    out=$snap/.eval
    mkdir "$out"
    cat >"$snap/.eval.sh" <<'EVAL'
O="--override-input nixpkgs path:/src/nixpkgs"
nix flake check --no-build --keep-going $O >.eval/flake-check.log 2>&1
echo $? >.eval/flake-check.rc
# One evaluation for what the checks outside Nix need, through a flake that takes this one
# with nixpkgs replaced by the snapshot.
mkdir -p /tmp/outside
cat >/tmp/outside/flake.nix <<'FLAKE'
{
  inputs.waylume.url = "git+file:///src/flake";
  inputs.waylume.inputs.nixpkgs.url = "path:/src/nixpkgs";
  outputs = { waylume, ... }: let
    system = "x86_64-linux";
    checkOf = c: c.services.waylume-server.configCheck;
    on = nodes: builtins.removeAttrs nodes (builtins.filter (n: !nodes.${n}.services.waylume-server.enable) (builtins.attrNames nodes));
    # Each node and each of its specialisations.
    withSpecialisations = nodes: builtins.foldl' (acc: n:
      acc // builtins.listToAttrs (map (s: { name = "${n}/${s}"; value = nodes.${n}.specialisation.${s}.configuration; })
        (builtins.attrNames nodes.${n}.specialisation))) nodes (builtins.attrNames nodes);
    checks = waylume.checks.${system};
    # By name: looking into any other check would evaluate it in full.
    vmTests = builtins.removeAttrs checks (builtins.filter (n: builtins.match "vm-.*" n == null || n == "vm-tests-consistency") (builtins.attrNames checks));
    packages = waylume.packages.${system};
  in {
    data = {
      vmTests = builtins.mapAttrs (_: t: builtins.mapAttrs (_: checkOf) (on (withSpecialisations t.nodes))) vmTests;
      systems = builtins.mapAttrs (_: s: checkOf s.config) waylume.nixosConfigurations // { image = checkOf packages.image.passthru.config; };
      package = { testFlags = packages.default.cargoTestFlags or []; checkFlags = packages.default.checkFlags or []; };
      oci = { name = packages.oci-image.imageName; tag = packages.oci-image.imageTag; config = packages.oci-image.passthru.imageConfig; };
    };
  };
}
FLAKE
nix eval --json /tmp/outside#data >.eval/data.json 2>.eval/data.err
EVAL
    # run.sh bind-mounts fixed paths in the chroot: one evaluation at a time on this machine.
    local lock=${NIX_EVAL_DIR:-/var/tmp/nix-eval}/.check-nix.lock
    flock "$lock" "$EVAL_KIT/run.sh" "$snap" 'bash .eval.sh' || bad "the evaluator did not run"

    step "nix flake check --no-build against the snapshot"
    grep -E '^(checking|derivation evaluated)' "$out/flake-check.log" | grep -c 'derivation evaluated' \
        | xargs printf '   %s derivations evaluated\n'
    if [ "$(cat "$out/flake-check.rc" 2>/dev/null)" != 0 ] || grep -q 'error' "$out/flake-check.log"; then
        bad "nix flake check reported errors"
        grep -v '^warning: ' "$out/flake-check.log" | grep -v '^checking\|^derivation evaluated' | head -80
    fi
    for vm in $(nix-instantiate --eval --json -E 'builtins.attrNames (import ./vm-tests/default.nix { pkgs = { lib = null; testers = null; }; module = null; imageModule = null; })' 2>/dev/null | jq -r '.[]'); do
        grep -A1 -x "checking derivation checks.x86_64-linux.$vm\.\.\." "$out/flake-check.log" | grep -q '^derivation evaluated to ' \
            || bad "VM test $vm was not evaluated"
    done
    [ -s "$out/data.json" ] || { bad "evaluating the settings, the package and the OCI image"; grep -v '^warning: ' "$out/data.err" | tail -20; }

    step "check-config on the VM tests' and systems' settings, as the module's build step"
    cargo build --quiet --locked
    $PY scripts/check-nix-outside.py configs "$out" "$ROOT/target/debug/waylume-server" || bad "build-time check-config"

    step "the OCI image and examples/docker-compose.yml"
    $PY scripts/check-nix-outside.py compose "$out" "$ROOT/target/debug/waylume-server" examples/docker-compose.yml \
        || bad "compose example"

    step "the package's check phase outside Nix, without PostgreSQL"
    # As in the build sandbox: no PostgreSQL on PATH and none found elsewhere (PG_BIN names an
    # empty directory, so the test harness's look into /usr/lib/postgresql is skipped).
    # Debug profile: the test binaries scripts/test.sh built already; Nix builds them in release.
    local nopg path_nopg flags
    nopg=$(mktemp -d)
    path_nopg=$(tr ':' '\n' <<<"$PATH" | while read -r d; do [ -x "$d/initdb" ] || [ -x "$d/postgres" ] || printf '%s:' "$d"; done)
    mapfile -t flags < <(jq -r '.package.testFlags[]' "$out/data.json")
    mapfile -t check_flags < <(jq -r '.package.checkFlags[]' "$out/data.json")
    if PATH=$path_nopg command -v initdb >/dev/null; then
        bad "initdb still on PATH"
    elif ! PATH=$path_nopg PG_BIN=$nopg cargo test --quiet --locked "${flags[@]}" -- "${check_flags[@]}" >"$out/check-phase.log" 2>&1; then
        bad "the package's check phase fails without PostgreSQL"
        tail -30 "$out/check-phase.log"
    else
        grep -E '^test result' "$out/check-phase.log" | awk '{p+=$4; i+=$8} END {printf "   %d tests passed, %d ignored\n", p, i}'
    fi
    rm -rf "$nopg"
    [ "$failed" = 0 ] && rm -rf "$snap" || echo "   evaluator output kept in $out"
}

step "parse (${#FILES[@]} files)"
for f in "${FILES[@]}"; do
    nix-instantiate --parse "$f" >/dev/null 2>/tmp/check-nix-parse.$$ || { bad "$f does not parse"; cat /tmp/check-nix-parse.$$; }
done
rm -f /tmp/check-nix-parse.$$

step "format (alejandra)"
if [ "$FIX" = 1 ]; then
    "$NIXFMT" --write "${FILES[@]}" || bad "formatting"
else
    "$NIXFMT" "${FILES[@]}" || bad "not formatted: run scripts/check-nix.sh --fix (or nix fmt)"
fi

step "dead code (deadnix)"
NO_COLOR=1 deadnix --fail "${FILES[@]}" || bad "deadnix found unused code"

step "flake.lock against flake.nix"
inputs_nix=$(nix-instantiate --eval --strict --json -E 'builtins.attrNames (import ./flake.nix).inputs')
inputs_lock=$(jq -c '.nodes[.root].inputs | keys' flake.lock)
[ "$inputs_nix" = "$inputs_lock" ] || bad "flake.nix has inputs $inputs_nix, flake.lock has $inputs_lock"
jq -e '.version == 7' flake.lock >/dev/null || bad "flake.lock is not lock version 7"
for input in $(jq -r '.nodes[.root].inputs | keys[]' flake.lock); do
    url=$(nix-instantiate --eval --strict --json -E "(import ./flake.nix).inputs.$input.url" | jq -r .)
    node=$(jq -c --arg i "$input" '.nodes[.nodes[.root].inputs[$i]]' flake.lock)
    original="github:$(jq -r '.original | "\(.owner)/\(.repo)/\(.ref)"' <<<"$node")"
    [ "$url" = "$original" ] || bad "input $input: flake.nix says $url, the lock's original is $original"
    jq -e '.locked | (.rev | test("^[0-9a-f]{40}$")) and (.narHash | test("^sha256-[A-Za-z0-9+/]{43}=$"))
        and (.lastModified | type == "number")' <<<"$node" >/dev/null \
        || bad "input $input: locked rev, narHash or lastModified malformed"
done
# Nix itself: resolve the inputs from the lock, refusing to update it. Only flake.nix and
# flake.lock are copied, so nothing else is read and nothing is fetched.
meta_dir=$(mktemp -d)
cp flake.nix flake.lock "$meta_dir/"
if meta=$(timeout 60 nix flake metadata --json --no-update-lock-file "path:$meta_dir" 2>"$meta_dir/err"); then
    for input in $(jq -r '.nodes[.root].inputs | keys[]' flake.lock); do
        want=$(jq -r --arg i "$input" '.nodes[.nodes[.root].inputs[$i]].locked.rev' flake.lock)
        got=$(jq -r --arg i "$input" '.locks.nodes[.locks.nodes[.locks.root].inputs[$i]].locked.rev' <<<"$meta")
        [ "$want" = "$got" ] || bad "input $input: nix resolved $got, the lock has $want"
    done
else
    bad "nix flake metadata refused the lock file"
    cat "$meta_dir/err"
fi
rm -rf "$meta_dir"

# The module's pure helpers.
for test in nix/tests/lib.nix; do
    step "module checks without nixpkgs ($test)"
    if cases=$(nix-instantiate --eval --strict "$test" 2>/tmp/check-nix-eval.$$); then
        echo "   $cases cases passed"
    else
        bad "$test"
        grep -v nixbld /tmp/check-nix-eval.$$ || true
    fi
done
rm -f /tmp/check-nix-eval.$$

EVAL_KIT=$ROOT/../shared/nix-eval
if [ -x "$EVAL_KIT/run.sh" ]; then
    evaluate_against_snapshot
else
    echo "== no evaluator at $EVAL_KIT: the flake is not evaluated against nixpkgs here"
fi

if [ "$failed" = 0 ]; then echo "check-nix: all passed"; else echo "check-nix: FAILED"; fi
exit "$failed"
