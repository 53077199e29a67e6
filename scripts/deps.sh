#!/usr/bin/env bash
# Installs the system packages the node, its tests and benchmarks use, with apt, only when
# missing. Every program a script, test or bench runs is named here with its package
# (tests/deps checks that, so a new one cannot be forgotten); programs of a minimal Debian
# (debootstrap --variant=minbase: coreutils, grep, sed, util-linux, dpkg, apt...) need no entry.
# Usage: scripts/deps.sh run|test|vm|bench   (test includes vm; run is part of all of them)
set -euo pipefail

# package, or package:cmd1,cmd2 — the commands it provides. A package with commands counts as
# present when all of them are on PATH (they may come from elsewhere, e.g. a newer Node.js).
# Building: a C toolchain (rustup brings none) and libpcap for the capture.
run_pkgs=(gcc:cc,gcc libc6-dev pkg-config:pkg-config libpcap-dev ca-certificates
    iproute2:ip,tc nftables:nft wireguard-tools:wg,wg-quick wireguard-go:wireguard-go procps:sysctl,kill)
test_pkgs=(iperf3:iperf3 iputils-ping:ping curl:curl postgresql procps:pgrep npm:npm
    python3:python3 jq:jq git:git shfmt:shfmt prometheus:prometheus,promtool nix-bin:nix,nix-instantiate)
# scripts/vm-test.sh: QEMU, the initramfs tools, and a static busybox for inside the VM.
vm_pkgs=(qemu-system-x86:qemu-system-x86_64 cpio:cpio file:file kmod:modprobe,depmod
    binutils:strip busybox-static jq:jq iperf3:iperf3 iputils-ping:ping)
# scripts/bench-*.sh: nDPI's reader and the capture tools for bench-inspect.
bench_pkgs=(libndpi-bin:ndpiReader wireshark-common:capinfos,editcap,mergecap)

case "${1:-run}" in
  run) want=("${run_pkgs[@]}") ;;
  test) want=("${run_pkgs[@]}" "${test_pkgs[@]}" "${vm_pkgs[@]}") ;;
  vm) want=("${run_pkgs[@]}" "${vm_pkgs[@]}") ;;
  bench) want=("${run_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "usage: $0 run|test|vm|bench" >&2; exit 2 ;;
esac

has_commands() {
  local cmd
  for cmd in ${1//,/ }; do
    command -v "$cmd" >/dev/null || [ -x "/sbin/$cmd" ] || [ -x "/usr/sbin/$cmd" ] || return 1
  done
}
missing=()
for entry in "${want[@]}"; do
  pkg=${entry%%:*} cmds=${entry#*:}
  if [ "$cmds" != "$entry" ]; then
    has_commands "$cmds" && continue
  else
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && continue
  fi
  [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${missing[*]}; run as root (or install them) first" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The tests run prometheus themselves on a loopback port; the packaged service is not wanted.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup, 1.88 or newer)" >&2; exit 1; }
