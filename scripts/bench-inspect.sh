#!/usr/bin/env bash
# Compares `waylume-server inspect` with nDPI's reader on one large capture, in one run.
#
# The capture is built in a temporary directory from a folder of test captures: every file of
# one link type (Ethernet by default) concatenated, then repeated with shifted timestamps until
# it holds about a million packets. Both readers run pinned to the same single core, three
# times each, alternating; the best time of each is compared.
#
# Usage: scripts/bench-inspect.sh PCAP_DIR [BINARY] [TARGET_PACKETS]
# Needs: ndpiReader (Debian libndpi-bin), mergecap, editcap, capinfos (wireshark-common), GNU time.
set -euo pipefail

pcap_dir=${1:?usage: bench-inspect.sh PCAP_DIR [BINARY] [TARGET_PACKETS]}
bin=${2:-target/release/waylume-server}
target=${3:-1000000}
encap=${ENCAP:-ether}
core=${CORE:-0}

for tool in ndpiReader mergecap editcap capinfos taskset /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "missing $bin (cargo build --release)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Files of the chosen link type; pcapng files with one interface are converted to pcap.
inputs=()
for f in "$pcap_dir"/*; do
    [ -f "$f" ] || continue
    if [ "$(capinfos -T -E "$f" 2>/dev/null | tail -n 1 | cut -f 2)" = "$encap" ]; then
        inputs+=("$f")
    fi
done
[ ${#inputs[@]} -gt 0 ] || { echo "no $encap captures in $pcap_dir" >&2; exit 1; }
mergecap -F pcap -a -w "$tmp/base.pcap" "${inputs[@]}"
base=$(capinfos -c -M "$tmp/base.pcap" | awk '/Number of packets/ {print $NF}')
copies=$(( (target + base - 1) / base ))

# Each copy is shifted by a day so flows of one copy end before the next copy starts.
parts=()
for i in $(seq 0 $((copies - 1))); do
    editcap -t $((i * 86400)) "$tmp/base.pcap" "$tmp/part$i.pcap"
    parts+=("$tmp/part$i.pcap")
done
mergecap -F pcap -a -w "$tmp/big.pcap" "${parts[@]}"
rm -f "${parts[@]}"
packets=$(capinfos -c -M "$tmp/big.pcap" | awk '/Number of packets/ {print $NF}')
echo "capture: ${#inputs[@]} $encap files, $base packets, x$copies = $packets packets"

# Warm the page cache so both readers start from memory.
cat "$tmp/big.pcap" >/dev/null

calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
min() { awk "BEGIN { print ($1 < $2) ? $1 : $2 }"; }
# `timed OUT CMD...`: runs CMD pinned to the core, stdout to OUT, stderr to OUT.err; sets W to
# its wall seconds and C to its CPU (user + system) seconds.
timed() {
    local out=$1
    shift
    /usr/bin/time -f '%e %U %S' -o "$tmp/time" taskset -c "$core" "$@" >"$out" 2>"$out.err"
    read -r W u s <"$tmp/time"
    C=$(calc "$u + $s")
}
# Best of three runs of each, alternating, so a noisy neighbour hurts both alike.
ours_s=1e9 ndpi_s=1e9 ours_cpu=1e9 ndpi_cpu=1e9
for run in 1 2 3; do
    timed "$tmp/ours.json" "$bin" inspect --pcap "$tmp/big.pcap" --json
    ours_s=$(min "$ours_s" "$W") ours_cpu=$(min "$ours_cpu" "$C")
    echo "run $run: waylume $W s wall, $C s CPU"
    timed "$tmp/ndpi.txt" ndpiReader -i "$tmp/big.pcap"
    ndpi_s=$(min "$ndpi_s" "$W") ndpi_cpu=$(min "$ndpi_cpu" "$C")
    echo "run $run: nDPI    $W s wall, $C s CPU"
done

ours_pps=$(calc "$packets / $ours_s")
ndpi_pps=$(calc "$packets / $ndpi_s")
printf 'waylume-server inspect: %8.3f s  %12.0f packets/s  (%d flows)\n' "$ours_s" "$ours_pps" "$(wc -l <"$tmp/ours.json")"
printf 'ndpiReader:             %8.3f s  %12.0f packets/s\n' "$ndpi_s" "$ndpi_pps"
cat "$tmp/ndpi.txt" "$tmp/ndpi.txt.err" | grep -m1 'nDPI throughput' | sed 's/^[[:space:]]*/ndpiReader reports:     /' || true
printf 'ratio (waylume/nDPI):   %8.2f  wall, best of three\n' "$(calc "$ours_pps / $ndpi_pps")"
printf 'CPU ratio:              %8.2f  (%.2f s against %.2f s)\n' "$(calc "$ndpi_cpu / $ours_cpu")" "$ours_cpu" "$ndpi_cpu"
