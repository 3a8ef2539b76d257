#!/usr/bin/env bash
# Pass-through benchmark of the edge (cache and latency simulation off): requests per second
# and p50/p99 latency of
#   1. the origin directly,
#   2. edgebox edge in front of it,
#   3. nginx as a reverse proxy in front of the same origin (2 workers, upstream keep-alive 64),
# all measured with the same load tool (wrk) in the same run, in ROUNDS interleaved rounds,
# first under load (wrk -c CONNS), then one request at a time (wrk -c1) so that the latency a
# proxy adds is seen without queueing. The origin is nginx serving a static file (so the origin
# is never the bottleneck of the comparison), with `stub_status`: how many connections each
# proxy opened to it during its runs is read from its accept counter (upstream keep-alive
# working means a bounded number, not one per request). Every server runs on the same CPU set
# (SERVER_CPUS), wrk on LOAD_CPUS (both default to every core). Results go to
# benches/results/edge.md.
#
# Knobs: DURATION (8s), WARMUP (2s), CONNS (32), THREADS (2), ROUNDS (2), SIZE (bytes, 1024),
# SERVER_CPUS, LOAD_CPUS, EDGE_THREADS, EDGEBOX_BIN, RELEASE (1 = release build, the default),
# PROFILE (a file: `perf record` the edge during round 1's loaded run), RESULTS,
# EDGEBOX_BIN_B (a second prebuilt edge binary, measured as `edge-b` in the same rounds with
# the same config and origin, before `edge` in even rounds: an interleaved A/B of two builds).
# Needs: wrk, nginx (installed with apt-get when missing and possible).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
ROUNDS=${ROUNDS:-2}
SIZE=${SIZE:-1024}
RESULTS=${RESULTS:-benches/results/edge.md}

try_install wrk wrk || { echo "wrk is required" >&2; exit 1; }
try_install nginx nginx || { echo "nginx is required" >&2; exit 1; }

WORK=$(mktemp -d /tmp/edgebox-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/origin/nginx.pid" ] && kill "$(cat "$WORK/origin/nginx.pid")" 2>/dev/null || true
  [ -f "$WORK/proxy/nginx.pid" ] && kill "$(cat "$WORK/proxy/nginx.pid")" 2>/dev/null || true
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

build_edgebox "$WORK/edgebox"

ORIGIN_PORT=$(free_port); STATUS_PORT=$(free_port); PROXY_PORT=$(free_port)
EDGE_PORT=$(free_port); ADMIN_PORT=$(free_port)
mkdir -p "$WORK/www" "$WORK/origin" "$WORK/proxy"
# nginx workers may run as an unprivileged user: let them read the object.
chmod 755 "$WORK" "$WORK/www"
head -c "$SIZE" /dev/zero | tr '\0' 'e' > "$WORK/www/object.txt"
chmod 644 "$WORK/www/object.txt"

nginx_conf "$WORK/origin" 1 "server { listen 127.0.0.1:$ORIGIN_PORT; root $WORK/www; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$STATUS_PORT; location / { stub_status; } }"
nginx_conf "$WORK/proxy" 2 "upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
  server { listen 127.0.0.1:$PROXY_PORT; keepalive_requests 1000000;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"

EDGE_WORKERS=""
[ -n "${EDGE_THREADS:-}" ] && EDGE_WORKERS="worker_threads = $EDGE_THREADS"
edge_config "$EDGE_PORT" "$ADMIN_PORT" /object.txt "" "[edge]
$EDGE_WORKERS
[edge.compression]
enabled = false
[cache]
enabled = false" > "$WORK/edgebox.toml"
start_edge() { # DIR EDGE_PORT ADMIN_PORT -> EDGE_PID
  sed -e "s/127.0.0.1:$EDGE_PORT/127.0.0.1:$2/" -e "s/127.0.0.1:$ADMIN_PORT/127.0.0.1:$3/" \
    "$WORK/edgebox.toml" > "$1/edgebox.toml"
  (cd "$1" && EDGEBOX_LOG=warn exec taskset -c "$SERVER_CPUS" ./edgebox edge --config edgebox.toml --node edge > edge.out 2> edge.err) &
  EDGE_PID=$!
  PIDS+=("$EDGE_PID")
  wait_for_line "$1/edge.out" "service=admin" || { cat "$1/edge.err"; exit 1; }
}
mkdir -p "$WORK/a"
mv "$WORK/edgebox" "$WORK/a/edgebox"
start_edge "$WORK/a" "$EDGE_PORT" "$ADMIN_PORT"
EDGE_A_PID=$EDGE_PID
TARGETS_AB=(edge)
if [ -n "${EDGEBOX_BIN_B:-}" ]; then
  mkdir -p "$WORK/b"
  cp "$EDGEBOX_BIN_B" "$WORK/b/edgebox"
  EDGE_B_PORT=$(free_port); ADMIN_B_PORT=$(free_port)
  start_edge "$WORK/b" "$EDGE_B_PORT" "$ADMIN_B_PORT"
  EDGE_B_PID=$EDGE_PID
  TARGETS_AB=(edge edge-b)
fi
EDGE_PID=$EDGE_A_PID

# The origin's count of accepted connections (nginx stub_status, third number of line 3).
origin_accepts() { curl -sf "http://127.0.0.1:$STATUS_PORT/" | awk 'NR==3 {print $1}'; }

LOAD_BEFORE=$(uptime | sed 's/.*load average: //')
# Whose CPU time a target's requests cost (the origin's own is the same for both proxies).
server_pids() { # TARGET
  case $1 in
    edge) echo "$EDGE_A_PID" ;;
    edge-b) echo "$EDGE_B_PID" ;;
    nginx) pgrep -P "$(cat "$WORK/proxy/nginx.pid")" | tr '\n' ' ' ;;
    origin) pgrep -P "$(cat "$WORK/origin/nginx.pid")" | tr '\n' ' ' ;;
  esac
}
declare -A CPU USER
declare -A RPS P99 P50 P50US P99US CONNS_OPENED PORT=([origin]=$ORIGIN_PORT [edge]=$EDGE_PORT [nginx]=$PROXY_PORT [edge-b]=${EDGE_B_PORT:-})
run() { # ROUND TARGET MODE(load|single)
  local url="http://127.0.0.1:${PORT[$2]}/object.txt" key="$1 $2 $3"
  curl -sf "$url" -o /dev/null || { echo "$2 does not answer $url" >&2; exit 1; }
  local before; before=$(origin_accepts)
  local perf_pid=""
  if [ -n "${PROFILE:-}" ] && [ "$1" = 1 ] && [ "$2" = edge ] && [ "$3" = load ]; then
    (sleep "${WARMUP%s}"; exec perf record -e cpu-clock -F 2000 ${PROFILE_ARGS:-} -p "$EDGE_PID" -o "$PROFILE" -- sleep "${DURATION%s}") \
      > "$WORK/perf.log" 2>&1 &
    perf_pid=$!
  fi
  if [ "$3" = load ]; then CPU_PIDS=$(server_pids "$2") measure "$url"; else CPU_PIDS=$(server_pids "$2") measure "$url" 1 1; fi
  CPU[$key]=$M_CPU_US; USER[$key]=$M_USER_US
  [ -n "$perf_pid" ] && wait "$perf_pid"
  local after; after=$(origin_accepts)
  # The status request itself is one accepted connection.
  CONNS_OPENED[$key]=$((after - before - 1))
  [ "$2" = origin ] && CONNS_OPENED[$key]="—"
  RPS[$key]=$M_RPS; P50[$key]=$M_P50; P99[$key]=$M_P99; P50US[$key]=$M_P50_US; P99US[$key]=$M_P99_US
  echo "round $1, $2 ($3): $M_RPS req/s, p50 $M_P50, p99 $M_P99, origin connections opened ${CONNS_OPENED[$key]}"
}
for round in $(seq "$ROUNDS"); do
  for mode in load single; do
    # With an edge-b, the two edges alternate which goes first.
    if [ $((round % 2)) = 0 ] && [ ${#TARGETS_AB[@]} = 2 ]; then ab="edge-b edge"; else ab="${TARGETS_AB[*]}"; fi
    for target in origin $ab nginx; do run "$round" "$target" "$mode"; done
  done
done

{
  echo "# Edge pass-through benchmark"
  echo
  echo "Generated by \`benches/edge_passthrough.sh\` on $(date -u +%Y-%m-%dT%H:%MZ)."
  echo
  echo "Setup: $(nproc) CPU cores shared by the load generator, the proxies and the origin"
  echo "(and, on the build machine, by other work: numbers are noisy). Every server runs on CPUs"
  echo "$SERVER_CPUS, wrk on CPUs $LOAD_CPUS. Load: HTTP/1.1 keep-alive GET of a $SIZE-byte static file,"
  echo "\`load\` = wrk -t$THREADS -c$CONNS -d$DURATION, \`single\` = wrk -t1 -c1 -d$DURATION (one request at a time:"
  echo "latency without queueing), each after a $WARMUP warm-up, $ROUNDS interleaved rounds."
  echo "Origin: nginx (1 worker) serving the file. nginx proxy: $(nginx -v 2>&1 | sed 's/.*: //'), 2 workers,"
  echo "upstream keep-alive 64. Edge: \`edgebox edge\`, $BUILD_NOTE; worker threads"
  [ -n "${EDGEBOX_BIN_B:-}" ] && echo "edge-b: prebuilt binary \`$EDGEBOX_BIN_B\`, same config (an A/B of two builds; it runs before \`edge\` in even rounds)."
  echo "${EDGE_THREADS:-one per core}; cache, compression and latency simulation off, logs at warn."
  echo "\"origin conns\" = connections the origin accepted during that run (warm-up included)."
  echo
  echo "Machine load (uptime) at the start: $LOAD_BEFORE; at the end: $(uptime | sed 's/.*load average: //')."
  echo "\"CPU µs/request\" = CPU time (user + system) of the target's own processes per request during"
  echo "the measurement (edge process; nginx proxy workers; origin workers), from /proc; \"of which"
  echo "user\" = its user-mode part: the processes' own code (the kernel's part is also charged with the"
  echo "loopback peer's packet processing, which makes it the noisier part)."
  echo
  echo "| round | mode | target | requests/s | p50 | p99 | origin conns | CPU µs/request | of which user |"
  echo "|---|---|---|---:|---:|---:|---:|---:|---:|"
  for round in $(seq "$ROUNDS"); do
    for mode in load single; do
      for name in origin "${TARGETS_AB[@]}" nginx; do
        key="$round $name $mode"
        echo "| $round | $mode | $name | ${RPS[$key]} | ${P50[$key]} | ${P99[$key]} | ${CONNS_OPENED[$key]} | ${CPU[$key]} | ${USER[$key]} |"
      done
    done
  done
  echo
  echo "Issue 12 asks for edge ≥ 1.2× the nginx proxy's throughput and ≤ 100 µs added p50 over the origin:"
  echo
  echo "| round | mode | edge / nginx (requests/s) | edge added p50 | nginx added p50 |"
  echo "|---|---|---:|---:|---:|"
  declare -A R_RPS R_ADDED
  for round in $(seq "$ROUNDS"); do
    for mode in load single; do
      o=${P50US[$round origin $mode]}
      r=$(ratio "${RPS[$round edge $mode]}" "${RPS[$round nginx $mode]}")
      R_RPS[$mode]="${R_RPS[$mode]:-} $r"; R_ADDED[$mode]="${R_ADDED[$mode]:-} $((${P50US[$round edge $mode]} - o))"
      echo "| $round | $mode | $r | $((${P50US[$round edge $mode]} - o)) µs | $((${P50US[$round nginx $mode]} - o)) µs |"
    done
  done
  echo
  echo "Medians over the rounds: load edge / nginx $(median ${R_RPS[load]}), added p50 $(median ${R_ADDED[load]}) µs;"
  echo "single edge / nginx $(median ${R_RPS[single]}), added p50 $(median ${R_ADDED[single]}) µs."
  if [ ${#TARGETS_AB[@]} = 2 ]; then
    echo
    echo "A/B, edge-b against edge (medians over the rounds):"
    echo
    echo "| mode | edge CPU µs/request (user) | edge-b CPU µs/request (user) | edge-b / edge requests/s | edge added p50 | edge-b added p50 |"
    echo "|---|---:|---:|---:|---:|---:|"
    for mode in load single; do
      ca=""; cb=""; ua=""; ub=""; rr=""; pa=""; pb=""
      for round in $(seq "$ROUNDS"); do
        o=${P50US[$round origin $mode]}
        ca="$ca ${CPU[$round edge $mode]}"; cb="$cb ${CPU[$round edge-b $mode]}"
        ua="$ua ${USER[$round edge $mode]}"; ub="$ub ${USER[$round edge-b $mode]}"
        rr="$rr $(ratio "${RPS[$round edge-b $mode]}" "${RPS[$round edge $mode]}")"
        pa="$pa $((${P50US[$round edge $mode]} - o))"; pb="$pb $((${P50US[$round edge-b $mode]} - o))"
      done
      echo "| $mode | $(median $ca) ($(median $ua)) | $(median $cb) ($(median $ub)) | $(median $rr) | $(median $pa) µs | $(median $pb) µs |"
    done
  fi
} > "$RESULTS"
echo "wrote $RESULTS"
