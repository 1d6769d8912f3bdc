#!/usr/bin/env bash
# Instructions per proxied request, under callgrind (a count, stable on a
# noisy machine). Starts an nginx origin on 127.0.0.1:18080 and :18086 (the
# ports bench/failway-bench.toml forwards to), runs PROXY under callgrind,
# warms up, zeroes the counters, drives wrk for 10 s, dumps, and prints
# total instructions / requests served. Stops what it started, by PID.
#
#   bash bench/callgrind.sh                       # failway (release build)
#   bash bench/callgrind.sh 18084 bench/plain-hyper/target/release/plain-hyper
#
# CALLGRIND_KEEP=FILE keeps the profile there (for callgrind_annotate).
#
# Needs nginx, wrk and valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-18083}
shift || true
if [[ $# -eq 0 ]]; then
  set -- target/release/failway run --config bench/failway-bench.toml
fi
dir=$(mktemp -d)
cat > "$dir/origin.conf" <<CONF
worker_processes 1; daemon off; pid $dir/origin.pid; error_log $dir/origin.err warn;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:18080; listen 127.0.0.1:18086;
  location / { return 200 "ok"; } } }
CONF
nginx -c "$dir/origin.conf" -p "$dir" & origin=$!
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$@" 2>"$dir/valgrind.err" & proxy=$!
cleanup() { kill "$proxy" "$origin" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/ok" && break
  sleep 0.2
done
wrk -t1 -c10 -d3s "http://127.0.0.1:$PORT/ok" >/dev/null
callgrind_control -z "$proxy" >/dev/null 2>&1
requests=$(wrk -t1 -c10 -d10s "http://127.0.0.1:$PORT/ok" | awk '/requests in/ {print $1}')
callgrind_control -d "$proxy" >/dev/null 2>&1
total=$(callgrind_annotate "$dir"/cg.out.* 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
[[ -n ${CALLGRIND_KEEP:-} ]] && cat "$dir"/cg.out.* > "$CALLGRIND_KEEP"
echo "requests: $requests  instructions: $total  per request: $(( total / requests ))"
