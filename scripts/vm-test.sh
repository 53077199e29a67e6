#!/usr/bin/env bash
# Kernel-path tier: boot Debian's kernel under QEMU (software emulation, no KVM needed) with an
# initramfs holding the lab tools and, when built, the daemon; run one test script inside and
# read the verdict from the serial console.
#
# usage: scripts/vm-test.sh [smoke|e2e|all]      (default: all)
#   WAYLUME_BIN=path   daemon binary for the e2e scenario (default: target/{release,debug}/waylume-server)
#   VM_TIMEOUT=secs    limit for one boot (default: 300)
#   VM_KEEP=1          keep the work directory (initramfs and console logs)
#   VM_KERNEL_ROOT=dir a directory with boot/vmlinuz-VER and lib/modules/VER (/ for the host's
#                      installed kernel); default: Debian's linux-image-amd64, unpacked into
#                      VM_CACHE (default target/vm-kernel)
# Exit status: 0 when every scenario printed PASS, 1 otherwise (a timeout counts as a failure).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHICH=${1:-all}
VM_TIMEOUT=${VM_TIMEOUT:-300}

source "$ROOT/scripts/deps.sh" vm

# The kernel: by default the one a fresh Debian installs (the package linux-image-amd64 points
# at), unpacked into a cache and never installed, so the host's boot stays as it is and every
# machine tests the same kernel. VM_KERNEL_ROOT=/ takes the host's installed kernel instead.
fetch_debian_kernel() {
    local pkg dir
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
    [ -n "$pkg" ] || { echo "apt knows no linux-image-amd64" >&2; return 1; }
    dir=$VM_CACHE/$pkg
    if [ ! -d "$dir/boot" ]; then
        echo "fetching $pkg (not installed: unpacked into $dir)" >&2
        rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
        (cd "$dir.tmp" && { apt-get download -q "$pkg" || { apt-get update -qq && apt-get download -q "$pkg"; }; }) >&2
        dpkg-deb -x "$dir.tmp"/*.deb "$dir.tmp/root"
        mv "$dir.tmp/root" "$dir" && rm -rf "$dir.tmp"
    fi
    echo "$dir"
}
VM_CACHE=${VM_CACHE:-$ROOT/target/vm-kernel}
KROOT=${VM_KERNEL_ROOT:-$(fetch_debian_kernel)} || exit 1
KROOT=${KROOT%/}
# Any kernel under KROOT whose modules include WireGuard.
KVER=
for image in "$KROOT"/boot/vmlinuz-*; do
    [ -r "$image" ] || continue
    ver=${image#"$KROOT"/boot/vmlinuz-}
    [ -d "$KROOT/lib/modules/$ver/kernel/drivers/net/wireguard" ] && { KVER=$ver; break; }
done
[ -n "$KVER" ] || { echo "no kernel with a WireGuard module under ${KROOT:-/}/boot" >&2; exit 1; }

WORK=$(mktemp -d /tmp/waylume-vm.XXXXXX)
cleanup() {
    if [ "${VM_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# boot NAME TEST_SCRIPT [DAEMON]: one VM, one verdict.
boot() {
    local name=$1 script=$2 daemon=${3:-} out=$WORK/$1 start verdict
    mkdir -p "$out"
    KERNEL_ROOT=$KROOT "$ROOT/tests/vm/build-initrd.sh" "$out" "$KVER" "$script" "$daemon" >"$out/build.log" 2>&1 \
        || { echo "== $name: initramfs build failed"; sed 's/^/   /' "$out/build.log"; return 1; }
    start=$(date +%s)
    # -no-reboot + panic=-1: a kernel panic ends QEMU instead of looping; timeout covers a hang.
    timeout --kill-after=10 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -smp 2 -m 1024 \
        -nographic -no-reboot -nic none \
        -kernel "$KROOT/boot/vmlinuz-$KVER" -initrd "$out/initrd.gz" \
        -append 'console=ttyS0 panic=-1 quiet rdinit=/init' \
        </dev/null >"$out/console.log" 2>&1 || true
    verdict=$(grep -a -o 'WAYLUME-VM-RESULT: [A-Z]*' "$out/console.log" | tail -1 || true)
    echo "== $name ($(($(date +%s) - start)) s, kernel $KVER): ${verdict:-no verdict (timeout or crash)}"
    grep -a -E '^(PASS|FAIL|SKIP|waylume-vm):' "$out/console.log" | sed 's/^/   /' || true
    if [ "$verdict" != "WAYLUME-VM-RESULT: PASS" ]; then
        echo "-- console tail ($name):"
        tail -n 40 "$out/console.log" | sed 's/^/   /'
        return 1
    fi
}

daemon=${WAYLUME_BIN:-}
if [ -z "$daemon" ]; then
    for candidate in "$ROOT/target/release/waylume-server" "$ROOT/target/debug/waylume-server"; do
        [ -x "$candidate" ] && { daemon=$candidate; break; }
    done
fi

status=0
case "$WHICH" in
smoke | all) boot smoke "$ROOT/tests/vm/smoke.sh" || status=1 ;;&
e2e | all)
    if [ -n "$daemon" ]; then
        boot e2e "$ROOT/tests/vm/e2e.sh" "$daemon" || status=1
    elif [ "$WHICH" = e2e ]; then
        echo "e2e: no daemon binary (build it or set WAYLUME_BIN)" >&2
        status=1
    else
        echo "== e2e: skipped, no daemon binary (build it or set WAYLUME_BIN)"
    fi
    ;;
smoke) ;;
*) echo "usage: $0 [smoke|e2e|all]" >&2; exit 2 ;;
esac
exit "$status"
