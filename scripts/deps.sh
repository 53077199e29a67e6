#!/usr/bin/env bash
# Installs the system packages the node and its tests use, with apt, only when missing.
# Usage: scripts/deps.sh run|test
set -euo pipefail

# A package, or package:command when the command may come from elsewhere (e.g. a newer Node.js).
run_pkgs=(pkg-config libpcap-dev iproute2:ip nftables:nft wireguard-tools:wg wireguard-go:wireguard-go ca-certificates)
test_pkgs=(iperf3:iperf3 iputils-ping:ping curl:curl postgresql procps:pgrep npm:npm)

case "${1:-run}" in
  run) want=("${run_pkgs[@]}") ;;
  test) want=("${run_pkgs[@]}" "${test_pkgs[@]}") ;;
  *) echo "usage: $0 run|test" >&2; exit 2 ;;
esac

missing=()
for entry in "${want[@]}"; do
  pkg=${entry%%:*} cmd=${entry#*:}
  if [ "$cmd" != "$entry" ]; then
    command -v "$cmd" >/dev/null && continue
  else
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && continue
  fi
  missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${missing[*]}; run as root (or install them) first" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup, 1.88 or newer)" >&2; exit 1; }
