#!/usr/bin/env bash
# Live configuration reloads while wrk drives failway at full speed: the
# config file is rewritten (atomic rename) and SIGHUP sent several times
# during the run; wrk's count of non-2xx/3xx answers must stay 0.
# Needs nginx and wrk (Debian packages). Usage (from the repository root,
# after `cargo build --release`):
#   bash bench/reload-under-load.sh [SECONDS]
set -euo pipefail
BIN=${BIN:-target/release/failway}
SECS=${1:-10}
WORK=$(mktemp -d)
ORIGIN_PORT=18580 REPLICA_PORT=18581 PROXY_PORT=18583 ADMIN_PORT=18591
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

# nginx as both regions' origin, so the origin is not the bottleneck.
cat > "$WORK/origin.conf" <<NGINX
worker_processes 1; daemon off; pid $WORK/origin.pid; error_log $WORK/origin.err warn;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$ORIGIN_PORT; location / { return 200 "ok"; } }
  server { listen 127.0.0.1:$REPLICA_PORT; location / { return 200 "ok"; } } }
NGINX
nginx -c "$WORK/origin.conf" & pids+=($!)
config() { # $1: max_attempts, $2: backoff_base
  cat > "$WORK/failway.toml.tmp" <<TOML
[proxy]
listen = "127.0.0.1:$PROXY_PORT"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[upstreams.primary]
url = "http://127.0.0.1:$ORIGIN_PORT"
[upstreams.replica]
url = "http://127.0.0.1:$REPLICA_PORT"
[health]
path = "/health"
[retry]
max_attempts = $1
backoff_base = "$2"
TOML
  mv "$WORK/failway.toml.tmp" "$WORK/failway.toml"
}
config 3 50ms
RUST_LOG=warn "$BIN" run --config "$WORK/failway.toml" & FW=$!; pids+=($FW)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.1; done
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ORIGIN_PORT/health" >/dev/null && break; sleep 0.1; done

wrk -t1 -c50 -d"${SECS}s" "http://127.0.0.1:$PROXY_PORT/health" > "$WORK/wrk.txt" &
WRK=$!
reloads=0
for i in $(seq 1 $((SECS - 1))); do
  sleep 1
  if (( i % 2 )); then config $((2 + i % 3)) "$((40 + i))ms"; else kill -HUP "$FW"; fi
  reloads=$((reloads + 1))
done
wait "$WRK"
cat "$WORK/wrk.txt"
ok=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^failway_config_reloads_total\{result="success"\}/ {print $2}')
err=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^failway_config_reloads_total\{result="error"\}/ {print $2}')
non2xx=$(awk '/Non-2xx or 3xx responses/ {print $5}' "$WORK/wrk.txt")
echo "reload triggers: $reloads; failway_config_reloads_total success=$ok error=$err; non-2xx answers: ${non2xx:-0}"
[ "${non2xx:-0}" = 0 ]
