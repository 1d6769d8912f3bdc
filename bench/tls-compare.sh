#!/usr/bin/env bash
# tls-compare.sh - TLS termination benchmark for the gateway role: clients
# speak TLS 1.3 + HTTP/1.1 keep-alive to the proxy, which forwards plain
# HTTP/1.1 to one nginx origin on loopback. failway (rustls) is measured side
# by side with nginx and HAProxy, all three terminating the same throwaway
# self-signed EC P-256 certificate, in one interleaved run
# (rep -> scenario -> target). Modelled on ../shared/bench/compare.sh.
#
# Fixed ports (all on 127.0.0.1; the proxies' ports do not clash with compare.sh's 18081-18084):
ORIGIN_PORT=18080        # origin: nginx, 1 worker. /ok = 2-byte body, /16k = 16 KiB static file
REPLICA_PORT=18086       # the same origin on a second port (failway's replica region)
NGINX_TLS_PORT=18091     # nginx TLS proxy, 1 worker, upstream keepalive pool, TLSv1.3 only
HAPROXY_TLS_PORT=18092   # HAProxy TLS, nbthread 1, mode http, ssl-min-ver TLSv1.3, http-reuse always
FAILWAY_TLS_PORT=18093   # failway, bench/failway-bench.toml + [proxy] tls = { cert, key }
FAILWAY_ADMIN_PORT=19903 # failway's admin listener (compare.sh's failway uses 19901)
#
# CPU placement: "single" mode of compare.sh - wrk, origin and proxy all on
# --cpu (1); the other CPUs are watched and a run during which one of them was
# busier than --max-foreign % (foreign load) or the hypervisor stole more than
# --max-steal % is redone, up to --max-tries times (column `tries`).
#
# Load: wrk -t1 -c$CONNS -d$DURATION --latency https://127.0.0.1:PORT/PATH (keep-alive;
# wrk offers no ALPN, so HTTP/1.1 everywhere), after a --warmup run on the same URL.
# Each (rep, scenario) block starts every proxy fresh, so peak RSS (VmHWM) starts clean.
#
# Options:
#   --reps N (3)  --duration S (5)  --warmup S (1)  --conns C (50)
#   --scenarios "ok 16k"       paths to request
#   --targets "nginx haproxy failway"   subset/order of the targets
#   --failway PATH (target/release/failway)   binary under test; copied into the temp dir
#                              at start, so a rebuild during the run does not change it
#   --cpu N (1)  --max-steal PCT (2)  --max-foreign PCT (5)  --max-tries N (3)
#   --out DIR                  results dir (default ./bench-results/<date>-tls)
# Output: DIR/raw.tsv (one row per run), DIR/tls.tsv (the negotiated protocol,
# cipher, group and served certificate per target), DIR/meta.txt,
# DIR/wrk-*.txt, DIR/logs/ (the proxies' logs, their lines counted by message in
# the summary), DIR/summary.md (+ printed).
# Re-summarize: python3 bench/tls_summarize.py DIR
#
# failway runs with RUST_LOG=warn,failway::proxy::server=debug: no access log
# (as nginx and HAProxy run with access_log off), but its per-connection events
# (TLS handshake failures and time-outs, connections ended with an error) are
# logged; column `log_lines` counts the lines each proxy logged during a run.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPS=3 DURATION=5 WARMUP=1 CONNS=50 SCENARIOS="ok 16k" TARGETS="nginx haproxy failway"
FAILWAY=target/release/failway CPU=1 MAX_STEAL=2 MAX_FOREIGN=5 MAX_TRIES=3 OUT=""

die() { echo "tls-compare.sh: $*" >&2; exit 1; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --reps) REPS=$2; shift 2;;
    --duration) DURATION=$2; shift 2;;
    --warmup) WARMUP=$2; shift 2;;
    --conns) CONNS=$2; shift 2;;
    --scenarios) SCENARIOS=$2; shift 2;;
    --targets) TARGETS=$2; shift 2;;
    --failway) FAILWAY=$2; shift 2;;
    --cpu) CPU=$2; shift 2;;
    --max-steal) MAX_STEAL=$2; shift 2;;
    --max-foreign) MAX_FOREIGN=$2; shift 2;;
    --max-tries) MAX_TRIES=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0;;
    *) die "unknown option $1 (see --help)";;
  esac
done
for sc in $SCENARIOS; do case "$sc" in ok|16k) ;; *) die "unknown scenario $sc (ok, 16k)";; esac; done
for t in $TARGETS; do case "$t" in nginx|haproxy|failway) ;; *) die "unknown target $t";; esac; done
[[ -n $OUT ]] || OUT="$PWD/bench-results/$(date +%Y%m%d-%H%M%S)-tls"

for t in nginx haproxy wrk openssl curl ss taskset python3 sha256sum; do
  command -v "$t" >/dev/null || die "missing $t (apt-get install -y nginx haproxy wrk openssl curl iproute2 util-linux python3)"
done
if [[ " $TARGETS " == *" failway "* ]]; then
  [[ -x $FAILWAY ]] || die "no failway binary at $FAILWAY (cargo build --release, or --failway PATH)"
fi
NGINX_BIN=$(command -v nginx); HAPROXY_BIN=$(command -v haproxy)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
CLK_TCK=$(getconf CLK_TCK)
OTHER_CPUS=""
for c in $(seq 0 $(( $(nproc --all) - 1 ))); do [[ $c == "$CPU" ]] || OTHER_CPUS+="cpu$c "; done

for p in $ORIGIN_PORT $REPLICA_PORT $NGINX_TLS_PORT $HAPROXY_TLS_PORT $FAILWAY_TLS_PORT $FAILWAY_ADMIN_PORT; do
  [[ -z $(ss -H -ltn "sport = :$p" 2>/dev/null) ]] || die "port $p already in use (another benchmark running?)"
done

mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
RUN=$(mktemp -d "${TMPDIR:-/tmp}/failway-tls-bench.XXXXXX")   # certificate, configs, logs, www; removed on exit
chmod 755 "$RUN"   # nginx's workers (user nobody) read www/ and write tmp/
mkdir -p "$RUN/tmp" "$RUN/www"

# ---------------------------------------------------------------- process control
declare -A STARTED=()   # name -> PID of every process this script started and still owns
start_bg() {  # start_bg NAME CMD...   (pinned to $CPU; records the PID of the started program)
  local name=$1; shift
  taskset -c "$CPU" "$@" >>"$RUN/$name.out" 2>&1 &
  STARTED[$name]=$!
}
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
stop_name() {
  [[ -n ${STARTED[$1]:-} ]] || return 0
  stop_pid "${STARTED[$1]}"; unset "STARTED[$1]"
}
cleanup() {
  local n
  for n in "${!STARTED[@]}"; do [[ $n == origin ]] || stop_name "$n"; done
  stop_name origin
  if [[ -d $RUN ]]; then
    cp "$RUN"/*.out "$RUN"/*.log "$OUT/logs/" 2>/dev/null || true
    rm -rf "$RUN"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

listen_pids() {  # PIDs holding a listening TCP socket on :PORT
  ss -H -ltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -un | tr '\n' ' '
}
wait_port() {  # wait_port PORT NAME
  local i
  for i in $(seq 100); do
    [[ -n $(listen_pids "$1") ]] && return 0
    kill -0 "${STARTED[$2]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "---- $2 output:" >&2; tail -20 "$RUN/$2.out" >&2 || true
  die "$2 did not start listening on :$1"
}
wait_port_free() { local i; for i in $(seq 100); do [[ -n $(ss -H -ltn "sport = :$1" 2>/dev/null) ]] || return 0; sleep 0.1; done; die "port $1 still busy"; }

# ---------------------------------------------------------------- certificate and configs
# A throwaway self-signed EC P-256 certificate for 127.0.0.1 and localhost.
# OpenSSL 3 writes the key as PKCS#8 ("BEGIN PRIVATE KEY"), which rustls,
# nginx and HAProxy all read; HAProxy wants certificate and key in one file.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$RUN/tls.key" -out "$RUN/tls.crt" 2>"$RUN/openssl-req.log" \
  || { cat "$RUN/openssl-req.log" >&2; die "openssl could not make the certificate"; }
grep -q 'BEGIN PRIVATE KEY' "$RUN/tls.key" || die "the key is not PKCS#8 PEM"
cat "$RUN/tls.crt" "$RUN/tls.key" >"$RUN/haproxy.pem"
CERT_SHA=$(openssl x509 -in "$RUN/tls.crt" -noout -fingerprint -sha256 | cut -d= -f2)

head -c 16384 /dev/zero | tr '\0' 'a' >"$RUN/www/16k"

cat >"$RUN/origin.conf" <<EOF
# Origin: 1 worker, HTTP/1.1 keep-alive; /ok = 2 bytes, /16k = 16 KiB file.
worker_processes 1;
daemon off;
pid $RUN/origin.pid;
error_log $RUN/origin.error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    default_type application/octet-stream;
    client_body_temp_path $RUN/tmp/origin-body;
    proxy_temp_path $RUN/tmp/origin-proxy;
    fastcgi_temp_path $RUN/tmp/origin-fcgi;
    uwsgi_temp_path $RUN/tmp/origin-uwsgi;
    scgi_temp_path $RUN/tmp/origin-scgi;
    open_file_cache max=100 inactive=600s;
    server {
        listen 127.0.0.1:$ORIGIN_PORT backlog=4096;
        listen 127.0.0.1:$REPLICA_PORT backlog=4096;
        root $RUN/www;
        location = /ok  { return 200 "ok"; }
        location = /16k { try_files /16k =404; }
    }
}
EOF

cat >"$RUN/nginx-tls.conf" <<EOF
# nginx terminating TLS 1.3: 1 worker, keep-alive pool to the origin.
worker_processes 1;
daemon off;
pid $RUN/nginx-tls.pid;
error_log $RUN/nginx-tls.error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 8192; }
http {
    access_log off;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 100000000;
    client_body_temp_path $RUN/tmp/nginx-body;
    proxy_temp_path $RUN/tmp/nginx-proxy;
    fastcgi_temp_path $RUN/tmp/nginx-fcgi;
    uwsgi_temp_path $RUN/tmp/nginx-uwsgi;
    scgi_temp_path $RUN/tmp/nginx-scgi;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 1024;
        keepalive_requests 100000000;
        keepalive_timeout 120s;
    }
    server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl backlog=4096;
        ssl_certificate $RUN/tls.crt;
        ssl_certificate_key $RUN/tls.key;
        ssl_protocols TLSv1.3;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }
    }
}
EOF

cat >"$RUN/haproxy.cfg" <<EOF
# HAProxy terminating TLS 1.3: 1 thread, HTTP mode, keep-alive on both sides,
# idle server connections reused for any request.
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
frontend fe
    bind 127.0.0.1:$HAPROXY_TLS_PORT ssl crt $RUN/haproxy.pem ssl-min-ver TLSv1.3
    default_backend be
backend be
    server s1 127.0.0.1:$ORIGIN_PORT
EOF

# failway: bench/failway-bench.toml (one worker thread, both regions at the
# origin) with its listener moved to the TLS port, the certificate added, and
# its own admin port.
awk -v listen="127.0.0.1:$FAILWAY_TLS_PORT" -v admin="127.0.0.1:$FAILWAY_ADMIN_PORT" \
    -v crt="$RUN/tls.crt" -v key="$RUN/tls.key" '
  /^\[/ { sec = $0 }
  sec == "[proxy]" && /^listen *=/ { print "listen = \"" listen "\""; print "tls = { cert = \"" crt "\", key = \"" key "\" }"; next }
  sec == "[admin]" && /^listen *=/ { print "listen = \"" admin "\""; next }
  { print }' "$BENCH_DIR/failway-bench.toml" >"$RUN/failway-tls.toml"
grep -q "^listen = \"127.0.0.1:$FAILWAY_TLS_PORT\"" "$RUN/failway-tls.toml" \
  && grep -q '^tls = {' "$RUN/failway-tls.toml" && grep -q "^listen = \"127.0.0.1:$FAILWAY_ADMIN_PORT\"" "$RUN/failway-tls.toml" \
  || die "could not derive the TLS config from bench/failway-bench.toml (its [proxy]/[admin] listen lines moved?)"
if [[ " $TARGETS " == *" failway "* ]]; then
  cp "$FAILWAY" "$RUN/failway"
  FAILWAY_SHA=$(sha256sum "$RUN/failway" | cut -c1-16)
  # failway check loads the certificate and key as a start would (exit 64 on a key it cannot use).
  "$RUN/failway" check --config "$RUN/failway-tls.toml" >"$RUN/failway-check.log" 2>&1 \
    || { cat "$RUN/failway-check.log" >&2; die "failway check refused the TLS config"; }
fi

declare -A PORT=([nginx]=$NGINX_TLS_PORT [haproxy]=$HAPROXY_TLS_PORT [failway]=$FAILWAY_TLS_PORT)
declare -A LOGS=([nginx]="$RUN/nginx.out $RUN/nginx-tls.error.log" [haproxy]="$RUN/haproxy.out" [failway]="$RUN/failway.out")
declare -A TPIDS=()
read -r -a NAMES <<<"$TARGETS"

# ---------------------------------------------------------------- start
start_bg origin "$NGINX_BIN" -p "$RUN" -e "$RUN/origin.error.log" -c "$RUN/origin.conf"
wait_port "$ORIGIN_PORT" origin
ORIGIN_PIDS=$(listen_pids "$ORIGIN_PORT")

start_proxies() {
  local t
  for t in "${NAMES[@]}"; do
    case "$t" in
      nginx)   start_bg nginx "$NGINX_BIN" -p "$RUN" -e "$RUN/nginx-tls.error.log" -c "$RUN/nginx-tls.conf";;
      haproxy) start_bg haproxy "$HAPROXY_BIN" -db -f "$RUN/haproxy.cfg";;
      failway) start_bg failway env RUST_LOG=warn,failway::proxy::server=debug "$RUN/failway" run --config "$RUN/failway-tls.toml";;
    esac
    wait_port "${PORT[$t]}" "$t"
    TPIDS[$t]=$(listen_pids "${PORT[$t]}")
  done
}
stop_proxies() {
  local t
  for t in "${NAMES[@]}"; do stop_name "$t"; wait_port_free "${PORT[$t]}"; done
}
start_proxies

# sanity: every target serves every path over TLS 1.3 with the right size
for t in "${NAMES[@]}"; do
  for path in $SCENARIOS; do
    if [[ $path == ok ]]; then want=2; else want=$(stat -c %s "$RUN/www/$path"); fi
    got=$(curl -sk --tlsv1.3 --http1.1 -o /dev/null -w '%{http_code} %{size_download}' "https://127.0.0.1:${PORT[$t]}/$path" || true)
    [[ $got == "200 $want" ]] || die "sanity check failed: $t /$path -> '$got' (want '200 $want')"
  done
done

# once per target: what a TLS 1.3 client negotiates, and that the served leaf is our certificate
TLS_TSV="$OUT/tls.tsv"
printf 'target\tport\tprotocol\tcipher\tgroup\tverify\tsame_cert\n' >"$TLS_TSV"
for t in "${NAMES[@]}"; do
  s=$(openssl s_client -connect "127.0.0.1:${PORT[$t]}" -servername localhost -tls1_3 \
        -CAfile "$RUN/tls.crt" -verify_hostname localhost </dev/null 2>&1 || true)
  echo "$s" >"$RUN/s_client-$t.log"
  proto=$(awk '/^New, /{sub(/,$/,"",$2); print $2; exit}' <<<"$s")
  cipher=$(awk '/^New, /{print $NF; exit}' <<<"$s")
  group=$(awk -F': ' '/^(Server|Peer) Temp Key:/{print $2; exit}' <<<"$s")
  verify=$(awk -F': ' '/Verify return code:/{print $2; exit}' <<<"$s")
  served=$(openssl x509 -noout -fingerprint -sha256 2>/dev/null <<<"$s" | cut -d= -f2 || true)
  same=no; [[ $served == "$CERT_SHA" ]] && same=yes
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${PORT[$t]}" "${proto:--}" "${cipher:--}" "${group:--}" "${verify:--}" "$same" >>"$TLS_TSV"
  echo "tls: $t :${PORT[$t]} ${proto:-?} ${cipher:-?} (${group:-?}), verify: ${verify:-?}, same certificate: $same" >&2
  [[ $proto == TLSv1.3 ]] || die "$t did not negotiate TLS 1.3 (got '${proto:-nothing}'); openssl output in $OUT/logs/s_client-$t.log"
  [[ $same == yes ]] || die "$t serves another certificate than $RUN/tls.crt"
done

# ---------------------------------------------------------------- measurement
sum_status() {  # sum_status FIELD PIDS...  (kB fields of /proc/PID/status)
  local f=$1; shift; local s=0 v p
  for p in "$@"; do v=$(awk -v f="$f:" '$1==f{print $2}' "/proc/$p/status" 2>/dev/null || true); s=$((s + ${v:-0})); done; echo $s
}
sum_ticks() { local s=0 v p; for p in "$@"; do v=$(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0); s=$((s + v)); done; echo $s; }
clear_hwm() { local p; for p in "$@"; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }
log_lines() { local s=0 f n; for f in "$@"; do n=$(wc -l <"$f" 2>/dev/null || echo 0); s=$((s + n)); done; echo $s; }
cpu_snap() { awk '/^cpu[0-9]* /{b=$2+$3+$4+$7+$8; t=b+$5+$6+$9; printf "%s %d %d %d\n", $1, b, t, $9}' /proc/stat; }
cpu_util() {  # cpu_util BEFORE AFTER CPUNAME -> busy %
  paste -d' ' <(echo "$1") <(echo "$2") | awk -v c="$3" '$1==c{ if ($7-$3>0) printf "%.0f", 100*($6-$2)/($7-$3); else print "-" }'
}
foreign_pct() {  # max busy % over the CPUs none of our processes use
  local c m="" v
  for c in $OTHER_CPUS; do
    v=$(cpu_util "$1" "$2" "$c"); [[ $v =~ ^[0-9]+$ ]] || continue
    if [[ -z $m ]] || (( v > m )); then m=$v; fi
  done
  echo "${m:--}"
}
steal_pct() {
  paste -d' ' <(echo "$1") <(echo "$2") | awk '$1=="cpu"{ if ($7-$3>0) printf "%.1f", 100*($8-$4)/($7-$3); else print "-" }'
}
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); printf "%.3f", v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); printf "%.3f", v} else if (v ~ /s$/) {sub(/s$/,"",v); printf "%.3f", v*1000} else print "nan"}'; }

RAW="$OUT/raw.tsv"
printf 'rep\tscenario\ttarget\trps\tp50_ms\tp99_ms\trequests\tcpu_us_per_req\tproxy_cpu_pct\torigin_cpu_pct\tpeak_rss_kb\terrors\tlog_lines\tsteal_pct\tforeign_pct\ttries\n' >"$RAW"
{
  echo "date: $(date -Is)"; echo "host: $(uname -sr), $(nproc) CPUs, $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
  echo "placement: wrk, origin and proxies on cpu $CPU; watched idle cpus '${OTHER_CPUS:-none}'"
  echo "reps=$REPS duration=${DURATION}s warmup=${WARMUP}s conns=$CONNS scenarios='$SCENARIOS' targets='$TARGETS' max_steal=${MAX_STEAL}% max_foreign=${MAX_FOREIGN}% max_tries=$MAX_TRIES"
  echo "ports: origin $ORIGIN_PORT (+$REPLICA_PORT), nginx $NGINX_TLS_PORT, haproxy $HAPROXY_TLS_PORT, failway $FAILWAY_TLS_PORT"
  echo "certificate: self-signed EC P-256, CN=localhost, SAN localhost + 127.0.0.1, sha256 $CERT_SHA"
  echo "versions: $(nginx -v 2>&1 | tr -d '\n'); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(openssl version)"
  [[ -n ${FAILWAY_SHA:-} ]] && echo "failway: $FAILWAY (sha256 $FAILWAY_SHA...), $("$RUN/failway" --version 2>/dev/null | head -1)"
} >"$OUT/meta.txt"
cat "$OUT/meta.txt" >&2

run_one() {  # run_one REP SCENARIO TARGET
  local rep=$1 sc=$2 t=$3 pids out t0 t1 b0 b1 s0 s1 l0 l1 steal foreign try=0
  local url="https://127.0.0.1:${PORT[$t]}/$sc" logs
  read -r -a pids <<<"${TPIDS[$t]}"
  read -r -a logs <<<"${LOGS[$t]}"
  l0=$(log_lines "${logs[@]}")
  while :; do
    try=$((try + 1))
    if (( WARMUP > 0 )); then taskset -c "$CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$url" >/dev/null 2>&1 || true; fi
    clear_hwm "${pids[@]}"
    b0=$(sum_ticks $ORIGIN_PIDS); t0=$(sum_ticks "${pids[@]}"); s0=$(cpu_snap)
    out=$(taskset -c "$CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url" 2>&1) || true
    s1=$(cpu_snap); t1=$(sum_ticks "${pids[@]}"); b1=$(sum_ticks $ORIGIN_PIDS)
    steal=$(steal_pct "$s0" "$s1"); foreign=$(foreign_pct "$s0" "$s1")
    if (( try < MAX_TRIES )) && awk -v s="$steal" -v m="$MAX_STEAL" -v f="$foreign" -v mf="$MAX_FOREIGN" \
         'BEGIN{exit !(s+0 > m+0 || (f != "-" && f+0 > mf+0))}'; then
      echo "# redo rep=$rep $sc $t: steal ${steal}% (max ${MAX_STEAL}), foreign load ${foreign}% (max ${MAX_FOREIGN})" >&2; continue
    fi
    break
  done
  l1=$(log_lines "${logs[@]}")
  echo "$out" >"$OUT/wrk-$rep-$sc-$t.txt"
  local rps p50 p99 nreq errs secs hwm cpuus pcpu bcpu
  rps=$(awk '/^Requests\/sec:/{print $2}' <<<"$out")
  p50=$(awk '$1=="50%"{print $2}' <<<"$out" | to_ms)
  p99=$(awk '$1=="99%"{print $2}' <<<"$out" | to_ms)
  nreq=$(awk '/requests in/{print $1}' <<<"$out")
  errs=$(awk '/Socket errors/{gsub(",","");e=$4+$6+$8+$10} /Non-2xx/{e+=$NF} END{print e+0}' <<<"$out")
  secs=$(awk '/requests in/{v=$4; sub(/s,?$/,"",v); print v}' <<<"$out")
  hwm=$(sum_status VmHWM "${pids[@]}")
  cpuus=$(awk -v d=$((t1 - t0)) -v n="${nreq:-0}" -v hz="$CLK_TCK" 'BEGIN{ if (n>0) printf "%.2f", d*1e6/hz/n; else print "-" }')
  pcpu=$(awk -v d=$((t1 - t0)) -v s="${secs:-0}" -v hz="$CLK_TCK" 'BEGIN{ if (s>0) printf "%.0f", 100*d/hz/s; else print "-" }')
  bcpu=$(awk -v d=$((b1 - b0)) -v s="${secs:-0}" -v hz="$CLK_TCK" 'BEGIN{ if (s>0) printf "%.0f", 100*d/hz/s; else print "-" }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$sc" "$t" "${rps:-0}" "$p50" "$p99" "${nreq:-0}" \
    "$cpuus" "$pcpu" "$bcpu" "$hwm" "${errs:-0}" "$((l1 - l0))" "$steal" "$foreign" "$try" | tee -a "$RAW" >&2
}

# Interleaved order: rep -> scenario -> target, so slow drift hits all targets alike.
first=1
for rep in $(seq "$REPS"); do
  for sc in $SCENARIOS; do
    if (( first )); then first=0; else stop_proxies; start_proxies; fi
    for t in "${NAMES[@]}"; do run_one "$rep" "$sc" "$t"; done
  done
done
stop_proxies
cp "$RUN"/*.out "$RUN"/*.log "$OUT/logs/" 2>/dev/null || true

python3 "$BENCH_DIR/tls_summarize.py" "$OUT" | tee "$OUT/summary.md"
echo "results: $OUT" >&2
