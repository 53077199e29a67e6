#!/usr/bin/env bash
# Checks of the Nix side that run without nixpkgs, a binary cache or KVM:
#   - every .nix file parses (nix-instantiate --parse)
#   - every .nix file is formatted as `nix fmt` leaves it: the flake's formatter is the same
#     tools/nixfmt-check (the alejandra library) that checks here
#   - no dead code (deadnix)
#   - flake.lock matches flake.nix: Nix resolves the flake's inputs from the lock without
#     updating it, and the lock's structure is checked field by field
#   - the module's evaluation-time checks (nix/lib.nix) pass their tests, and the module,
#     evaluated over a stand-in for nixpkgs, renders the unit, link and firewall rules expected
# Installs what it needs: Debian's nix-bin, deadnix from crates.io.
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

# The module's pure helpers, then the module itself evaluated over a stand-in for nixpkgs.
for test in nix/tests/lib.nix nix/tests/module-stub.nix; do
    step "module checks without nixpkgs ($test)"
    if cases=$(nix-instantiate --eval --strict "$test" 2>/tmp/check-nix-eval.$$); then
        echo "   $cases cases passed"
    else
        bad "$test"
        grep -v nixbld /tmp/check-nix-eval.$$ || true
    fi
done
rm -f /tmp/check-nix-eval.$$

if [ "$failed" = 0 ]; then echo "check-nix: all passed"; else echo "check-nix: FAILED"; fi
exit "$failed"
