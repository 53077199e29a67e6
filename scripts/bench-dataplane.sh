#!/bin/sh
# Data-plane lab benchmark (needs root, wireguard-go, iperf3, nft, tc; not part of CI).
# Prints forwarding throughput with 10 vs 5,000 limited and capped peers (the measured peer
# added last), the time to install 5,000 peers, and the cost of adding one more.
# The timed work is done by nft/tc in the kernel, so a debug build measures the same thing;
# set PROFILE=release for an optimised build.
set -eu
cd "$(dirname "$0")/.."
exec cargo bench --profile "${PROFILE:-dev}" --bench dataplane_lab
