#!/usr/bin/env bash
# Peak memory of failway while a 10 MiB upload and a 10 MiB download pass
# through it, and whether both arrive byte-identical.
# Usage (from the repository root, after `cargo build --release`):
#   bash bench/memory-10mib.sh
set -euo pipefail
BIN=${BIN:-target/release/failway}
WORK=$(mktemp -d)
ORIGIN_PORT=18480 PROXY_PORT=18483 ADMIN_PORT=18491
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

python3 "$(dirname "$0")/origin.py" $ORIGIN_PORT 10 & pids+=($!)
cat > "$WORK/failway.toml" <<TOML
[proxy]
listen = "127.0.0.1:$PROXY_PORT"
max_request_body = "16MiB"
worker_threads = 1
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[upstreams.primary]
url = "http://127.0.0.1:$ORIGIN_PORT"
[upstreams.replica]
url = "http://127.0.0.1:$((ORIGIN_PORT + 1))"
[classify]
profile = "http-methods"
TOML
RUST_LOG=warn "$BIN" run --config "$WORK/failway.toml" & pids+=($!)
FW=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.1; done
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ORIGIN_PORT/health" >/dev/null && break; sleep 0.1; done

head -c $((10 << 20)) /dev/urandom > "$WORK/up.bin"
want="$(stat -c %s "$WORK/up.bin") $(sha256sum "$WORK/up.bin" | cut -d' ' -f1)"
got=$(curl -sf --data-binary @"$WORK/up.bin" -H 'content-type: application/octet-stream' "http://127.0.0.1:$PROXY_PORT/sink")
[ "$got" = "$want" ] && echo "upload:   10 MiB byte-identical" || { echo "upload differs: $got vs $want"; exit 1; }

curl -sf "http://127.0.0.1:$PROXY_PORT/big" -o "$WORK/down.bin"
curl -sf "http://127.0.0.1:$ORIGIN_PORT/big" -o "$WORK/direct.bin"
cmp -s "$WORK/down.bin" "$WORK/direct.bin" && echo "download: 10 MiB byte-identical" || { echo "download differs"; exit 1; }

echo "failway peak RSS (VmHWM): $(grep VmHWM /proc/$FW/status | awk '{print $2, $3}')"
