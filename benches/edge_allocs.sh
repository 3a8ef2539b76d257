#!/usr/bin/env bash
# Heap allocations per pass-through request of one or more edge builds, counted exactly:
# uprobes on mimalloc's entry points (mi_malloc_aligned, mi_zalloc_aligned,
# mi_realloc_aligned, mi_free — what the mimalloc global allocator calls) counted by
# `perf stat` for exactly one wrk run (-c32 `load`, then -c1 `single`), divided by the
# requests the edge's own /metrics counter saw in between. Unlike CPU time it does not depend
# on what else the machine runs, so it shows small changes an A/B of CPU time cannot.
# Compression and latency simulation off; an object of SIZE bytes (1024) from an nginx origin;
# the cache off, or with CACHE=1 on (the origin says max-age=3600: every request after the
# first is a fresh L1 hit).
#
# Usage: benches/edge_allocs.sh TAG=BINARY [TAG=BINARY ...]   (tags: letters and digits)
# Knobs: DURATION (3s), WARMUP (1s), SIZE, CACHE, RECORD (a path prefix: also `perf record` the allocation
# probes with call graphs for 1 s of the loaded run, into RECORD.TAG, to see who allocates).
# Needs: perf with uprobe support (root), wrk, nginx. Prints one line per build and mode.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
DURATION=${DURATION:-3s}; WARMUP=${WARMUP:-1s}
try_install wrk wrk || { echo "wrk is required" >&2; exit 1; }
try_install nginx nginx || { echo "nginx is required" >&2; exit 1; }
command -v perf > /dev/null || { echo "perf is required" >&2; exit 1; }
WORK=$(mktemp -d /tmp/edgebox-allocs.XXXXXX)
PIDS=()
cleanup() { perf probe -q -d "edgeallocs:*" 2>/dev/null || true; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [ -f "$WORK/origin/nginx.pid" ] && kill "$(cat "$WORK/origin/nginx.pid")" 2>/dev/null; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
ORIGIN_PORT=$(free_port)
mkdir -p "$WORK/www" "$WORK/origin"; chmod 755 "$WORK" "$WORK/www"
head -c "${SIZE:-1024}" /dev/zero | tr '\0' 'e' > "$WORK/www/object.txt"; chmod 644 "$WORK/www/object.txt"
CACHE_HEADER=""
[ "${CACHE:-0}" = 1 ] && CACHE_HEADER="add_header Cache-Control \"max-age=3600\";"
nginx_conf "$WORK/origin" 1 "server { listen 127.0.0.1:$ORIGIN_PORT; root $WORK/www; keepalive_requests 1000000; $CACHE_HEADER }"
CACHE_ENABLED=false
[ "${CACHE:-0}" = 1 ] && CACHE_ENABLED=true
for spec in "$@"; do
  tag=${spec%%=*}; bin=${spec#*=}
  EP=$(free_port); AP=$(free_port); mkdir -p "$WORK/$tag"
  edge_config "$EP" "$AP" /object.txt "" "[edge.compression]
enabled = false
[cache]
enabled = $CACHE_ENABLED" > "$WORK/$tag/edgebox.toml"
  (cd "$WORK/$tag" && EDGEBOX_LOG=warn exec "$bin" edge --config edgebox.toml --node edge > edge.out 2> edge.err) &
  pid=$!; PIDS+=("$pid")
  wait_for_line "$WORK/$tag/edge.out" "service=admin" || { cat "$WORK/$tag/edge.err"; exit 1; }
  events=""
  for fn in mi_free mi_malloc_aligned mi_zalloc_aligned mi_realloc_aligned; do
    perf probe -q -x "$bin" --add "edgeallocs:${fn}_${tag}=$fn" 2>/dev/null || true
    events="$events,edgeallocs:${fn}_${tag}"
  done
  url="http://127.0.0.1:$EP/object.txt"
  for mode in load single; do
    if [ $mode = load ]; then c=32; t=2; else c=1; t=1; fi
    wrk -t$t -c$c -d"$WARMUP" "$url" > /dev/null
    if [ -n "${RECORD:-}" ] && [ $mode = load ]; then
      perf record -q -e "edgeallocs:mi_malloc_aligned_${tag},edgeallocs:mi_realloc_aligned_${tag}" --call-graph dwarf,16384 -p "$pid" -o "$RECORD.$tag" -- sleep 1 > /dev/null 2>&1 &
      rpid=$!
      wrk -t$t -c$c -d2s "$url" > /dev/null
      wait $rpid
    fi
    served() { curl -sf "http://127.0.0.1:$AP/metrics" | awk '/^edgebox_edge_requests_total/ {s += $NF} END {print s}'; }
    r0=$(served)
    # Counting runs exactly as long as wrk; requests from the edge's own counter around it.
    perf stat -x, -e "${events#,}" -p "$pid" -o "$WORK/stat" -- wrk -t$t -c$c -d"$DURATION" "$url" > /dev/null
    r1=$(served)
    req=$((r1 - r0))
    python3 - "$WORK/stat" "$req" "$tag" "$mode" <<'PY'
import sys
counts = {}
for line in open(sys.argv[1]):
    parts = line.strip().split(',')
    if len(parts) > 3 and parts[0].replace('.', '').isdigit():
        counts[parts[2].split(':')[1].rsplit('_', 1)[0] if ':' in parts[2] else parts[2]] = int(float(parts[0]))
req = int(sys.argv[2])
per = {k: v / req for k, v in counts.items()}
allocs = per.get('mi_malloc_aligned', 0) + per.get('mi_zalloc_aligned', 0) + per.get('mi_realloc_aligned', 0)
print(f"{sys.argv[3]} {sys.argv[4]}: {req} requests; allocations per request {allocs:.1f} ("
      + ", ".join(f"{k} {v:.1f}" for k, v in sorted(per.items())) + ")")
PY
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
perf probe -q -d "edgeallocs:*" 2>/dev/null || true
