#!/usr/bin/env bash
# Fleet mode at scale: N fleet members (failway's fleet code, one process,
# no proxies) against one local etcd, for each N given (default 100 500
# 1000). Prints one table row per N (benches/fleet_scale.rs says what each
# column is). Starts etcd on free loopback ports with its data in a
# temporary folder, and stops it by PID.
#
#   bash bench/fleet-scale.sh            # N = 100, 500, 1000
#   bash bench/fleet-scale.sh 50 200
#
# Needs etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -gt 0 ]] || set -- 100 500 1000
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client=$(free_port); peer=$(free_port)
dir=$(mktemp -d)
cargo bench --bench fleet_scale --no-run
etcd --name=bench --data-dir="$dir/data" \
  --listen-client-urls="http://127.0.0.1:$client" --advertise-client-urls="http://127.0.0.1:$client" \
  --listen-peer-urls="http://127.0.0.1:$peer" --initial-advertise-peer-urls="http://127.0.0.1:$peer" \
  --initial-cluster="bench=http://127.0.0.1:$peer" >"$dir/etcd.log" 2>&1 & etcd=$!
cleanup() { kill "$etcd" 2>/dev/null || true; wait "$etcd" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$client/health" >/dev/null && break
  sleep 0.2
done
ulimit -n "$(ulimit -Hn)"
cargo bench --bench fleet_scale -- "http://127.0.0.1:$client" "$etcd" "$@"
