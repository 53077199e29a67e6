#!/usr/bin/env bash
# The whole test suite: formatting and lints, unit and in-process tests, the privileged lab tests
# in network namespaces (root), and the extra tiers in scripts/ when their tools are present.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: the lab tests create network namespaces" >&2; exit 1; }
source scripts/deps.sh test

step() { printf '\n== %s\n' "$*"; }

step "format and lints"
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings

step "unit and in-process tests"
cargo test --locked

step "privileged lab tests (network namespaces, wireguard-go, PostgreSQL, Deno)"
# The connection-request Edge Function runs under npm's deno package with supabase-js, pinned by its lock.
npm ci --no-audit --no-fund --silent --prefix supabase/functions/connection-request
cargo test --locked -- --ignored --test-threads=1

for extra in scripts/check-nix.sh scripts/vm-test.sh; do
  if [ -x "$extra" ]; then
    step "$extra"
    "$extra"
  fi
done
step "all tests passed"
