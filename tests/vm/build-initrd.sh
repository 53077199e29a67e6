#!/usr/bin/env bash
# Build the initramfs for the kernel-path VM tier.
#
# usage: build-initrd.sh OUT_DIR KERNEL_VERSION TEST_SCRIPT [DAEMON_BINARY]
#
#   KERNEL_ROOT=dir   where the kernel's lib/modules/ lives (default /; an unpacked package works)
#
# The image holds the kernel modules for KERNEL_VERSION (those in tests/vm/modules with their
# dependencies, and net/, lib/, crypto/), real iproute2/tc/wg/wg-quick/nft/iperf3/ping/jq copied
# with their shared libraries, a static busybox for everything else, the test script as /test.sh and, when
# given, the daemon as /usr/bin/waylume-server. Writes OUT_DIR/initrd.gz.
set -euo pipefail

OUT=${1:?usage: build-initrd.sh OUT_DIR KERNEL_VERSION TEST_SCRIPT [DAEMON_BINARY]}
KVER=${2:?kernel version missing}
TEST_SCRIPT=${3:?test script missing}
DAEMON=${4:-}
HERE=$(cd "$(dirname "$0")" && pwd)
KROOT=${KERNEL_ROOT:-}
MODS=$KROOT/lib/modules/$KVER
ROOT=$OUT/root

[ -d "$MODS/kernel/drivers/net/wireguard" ] || { echo "no WireGuard module under $MODS" >&2; exit 1; }

rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,lib64,proc,sys,dev,run,tmp,etc,root,var/lib}

# Kernel modules: the whole of net/, lib/, crypto/ (nft and tc load their expression, qdisc and
# action modules on demand), plus every module in tests/vm/modules with each of its dependencies
# wherever they live, found through the kernel's own modules.dep. Then depmod indexes exactly what
# the image holds, so modprobe inside never names a file that is not there. Modules stay as the
# package ships them (plain or compressed): kmod reads either.
kmod_tool() { command -v "$1" 2>/dev/null || echo "/sbin/$1"; }
DEPMOD=$(kmod_tool depmod) MODPROBE=$(kmod_tool modprobe)
[ -e "$MODS/modules.dep" ] || "$DEPMOD" -b "${KROOT:-/}" "$KVER" \
    || { echo "no modules.dep under $MODS and depmod failed" >&2; exit 1; }
IM=$ROOT/lib/modules/$KVER
mkdir -p "$IM/kernel/arch/x86"
cp "$MODS"/modules.order "$MODS"/modules.builtin* "$IM/"
cp -a "$MODS/kernel/net" "$MODS/kernel/lib" "$MODS/kernel/crypto" "$IM/kernel/"
[ -d "$MODS/kernel/arch/x86/crypto" ] && cp -a "$MODS/kernel/arch/x86/crypto" "$IM/kernel/arch/x86/"
grep -v '^#' "$HERE/modules" | while read -r module; do
    [ -n "$module" ] || continue
    # Lines are "insmod PATH [params]" or "builtin NAME"; built-in modules need no file.
    "$MODPROBE" -d "${KROOT:-/}" -S "$KVER" --show-depends "$module" \
        || { echo "module $module: not found for $KVER" >&2; exit 1; }
done | awk '$1 == "insmod" {print $2}' | while read -r file; do
    rel=${file#"$MODS"/}
    mkdir -p "$IM/$(dirname "$rel")"
    cp -a "$file" "$IM/$rel"
done
"$DEPMOD" -b "$ROOT" "$KVER"
install -m 0644 "$HERE/modules" "$ROOT/etc/waylume-vm-modules"

# Copy a dynamically linked program and every library ldd names for it.
copy_with_libs() {
    local src=$1 dst=$2 lib
    cp -L "$src" "$ROOT$dst"
    # ldd fails on static binaries and scripts: they need no libraries.
    { ldd "$src" 2>/dev/null || true; } | awk '/=> \//{print $3} $1 ~ /^\//{print $1}' | while read -r lib; do
        [ -e "$ROOT$lib" ] && continue
        mkdir -p "$ROOT$(dirname "$lib")"
        cp -L "$lib" "$ROOT$lib"
    done
}

# timeout too: busybox's applet would run its own `ip` applet instead of iproute2's.
for tool in ip tc wg nft iperf3 ping jq bash kmod timeout; do
    path=$(command -v "$tool") || { echo "missing host tool: $tool" >&2; exit 1; }
    copy_with_libs "$path" "/usr/bin/$tool"
done
# wg-quick is a bash script; only its `strip` subcommand is used, to turn the returned
# wg-quick file into `wg setconf` input as a real client would.
cp "$(command -v wg-quick)" "$ROOT/usr/bin/wg-quick"
for name in modprobe insmod lsmod; do ln -sf /usr/bin/kmod "$ROOT/sbin/$name"; done
ln -sf /usr/bin/bash "$ROOT/bin/bash"

busybox=$(command -v busybox)
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' \
    || { echo "$busybox is not static (install busybox-static)" >&2; exit 1; }
cp -L "$busybox" "$ROOT/bin/busybox"

if [ -n "$DAEMON" ]; then
    copy_with_libs "$DAEMON" /usr/bin/waylume-server
    # A debug build carries hundreds of MB of symbols; the VM needs none of them.
    if command -v strip >/dev/null; then strip "$ROOT/usr/bin/waylume-server" 2>/dev/null || true; fi
fi

cp /etc/protocols /etc/services "$ROOT/etc/" 2>/dev/null || true
echo 'root:x:0:0:root:/root:/bin/bash' >"$ROOT/etc/passwd"
echo 'root:x:0:' >"$ROOT/etc/group"
install -m 0755 "$HERE/init.sh" "$ROOT/init"
install -m 0755 "$TEST_SCRIPT" "$ROOT/test.sh"
install -m 0644 "$HERE/lib.sh" "$ROOT/lib.sh"

(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1 >"$OUT/initrd.gz")
echo "initramfs: $OUT/initrd.gz ($(du -h "$OUT/initrd.gz" | cut -f1))"
