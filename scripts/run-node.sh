#!/usr/bin/env bash
# Builds and starts a standalone node on this machine (no Supabase): wg0 on 10.0.0.1/8,
# UDP 51820, the API on 127.0.0.1:3000 without a secret, state in /var/lib/waylume-server.
# Any setting can be given as an environment variable (see README); Ctrl-C stops the daemon and
# leaves the data plane up.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: the node creates interfaces and firewall rules" >&2; exit 1; }
source scripts/deps.sh run
cargo build --release --locked
exec target/release/waylume-server serve "$@"
