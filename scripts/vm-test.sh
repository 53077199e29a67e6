#!/usr/bin/env bash
# Kernel-path tier: boot Debian's kernel under QEMU (software emulation, no KVM needed) with an
# initramfs holding the lab tools and, when built, the daemon; run one test script inside and
# read the verdict from the serial console.
#
# usage: scripts/vm-test.sh [smoke|e2e|all]      (default: all)
#   WAYLUME_BIN=path   daemon binary for the e2e scenario (default: target/{release,debug}/waylume-server)
#   VM_TIMEOUT=secs    limit for one boot (default: 150)
#   VM_KEEP=1          keep the work directory (initramfs and console logs)
# Exit status: 0 when every scenario printed PASS, 1 otherwise (a timeout counts as a failure).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHICH=${1:-all}
VM_TIMEOUT=${VM_TIMEOUT:-150}

need_apt=()
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
command -v cpio >/dev/null || need_apt+=(cpio)
command -v file >/dev/null || need_apt+=(file)
command -v jq >/dev/null || need_apt+=(jq)
command -v iperf3 >/dev/null || need_apt+=(iperf3)
command -v nft >/dev/null || need_apt+=(nftables)
command -v wg >/dev/null || need_apt+=(wireguard-tools)
command -v ping >/dev/null || need_apt+=(iputils-ping)
file -L "$(command -v busybox || echo /nonexistent)" 2>/dev/null | grep -q 'statically linked' \
    || need_apt+=(busybox-static)

# The kernel: any installed Debian kernel whose modules include WireGuard.
find_kernel() {
    local image ver
    for image in /boot/vmlinuz-*; do
        [ -r "$image" ] || continue
        ver=${image#/boot/vmlinuz-}
        [ -d "/lib/modules/$ver/kernel/drivers/net/wireguard" ] && { echo "$ver"; return 0; }
    done
    return 1
}
find_kernel >/dev/null || need_apt+=(linux-image-amd64)

if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "installing: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${need_apt[@]}" >/dev/null
fi
KVER=$(find_kernel) || { echo "no kernel with a WireGuard module under /boot" >&2; exit 1; }

WORK=$(mktemp -d /tmp/waylume-vm.XXXXXX)
cleanup() {
    if [ "${VM_KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# boot NAME TEST_SCRIPT [DAEMON]: one VM, one verdict.
boot() {
    local name=$1 script=$2 daemon=${3:-} out=$WORK/$1 start verdict
    mkdir -p "$out"
    "$ROOT/tests/vm/build-initrd.sh" "$out" "$KVER" "$script" "$daemon" >"$out/build.log" 2>&1 \
        || { echo "== $name: initramfs build failed"; sed 's/^/   /' "$out/build.log"; return 1; }
    start=$(date +%s)
    # -no-reboot + panic=-1: a kernel panic ends QEMU instead of looping; timeout covers a hang.
    timeout --kill-after=10 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg -smp 2 -m 1024 \
        -nographic -no-reboot -nic none \
        -kernel "/boot/vmlinuz-$KVER" -initrd "$out/initrd.gz" \
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
