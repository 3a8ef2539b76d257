#!/usr/bin/env bash
# Cache-hit benchmark: requests per second and p50/p99 latency of cache HITS for a 1 KiB and a
# 100 KiB object, served by
#   1. edgebox edge (L1 memory hit),
#   2. nginx with proxy_cache,
#   3. Varnish (malloc storage),
# each in front of the same origin (nginx serving static files with max-age=3600), all
# measured with the same load tool (wrk) in the same run. Every target is warmed and checked
# to answer from its cache before it is measured. Results go to benches/results/cache.md.
#
# Knobs: DURATION (10s), CONNS (32), THREADS (2), EDGEBOX_BIN (a prebuilt edgebox),
# RELEASE=1 (build with `cargo build --release`; default: workspace crates at opt-level 3).
# Needs: wrk, nginx, varnishd (installed with apt-get when missing and possible; a target
# that cannot be installed is reported as skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
RESULTS=benches/results/cache.md

try_install() { # COMMAND PACKAGE -> 0 when COMMAND is available afterwards
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $2 from Debian packages"
  if apt-get install -y "$2" >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y "$2" >/dev/null 2>&1; }; then
    command -v "$1" >/dev/null 2>&1 && return 0
  fi
  echo "cannot install $2 (not root, no network or no package): $1 is skipped" >&2
  return 1
}
try_install wrk wrk || { echo "wrk is required" >&2; exit 1; }
try_install nginx nginx || { echo "nginx is required (it is the origin)" >&2; exit 1; }
HAVE_VARNISH=1
export PATH="$PATH:/usr/sbin"
try_install varnishd varnish || HAVE_VARNISH=0

WORK=$(mktemp -d /tmp/edgebox-cache-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for dir in origin proxy; do
    [ -f "$WORK/$dir/nginx.pid" ] && kill "$(cat "$WORK/$dir/nginx.pid")" 2>/dev/null || true
  done
  [ -f "$WORK/varnish.pid" ] && kill "$(cat "$WORK/varnish.pid")" 2>/dev/null || true
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ -n "${EDGEBOX_BIN:-}" ]; then
  BUILD="prebuilt binary $EDGEBOX_BIN"
  cp "$EDGEBOX_BIN" "$WORK/edgebox"
elif [ "${RELEASE:-0}" = 1 ]; then
  echo "building edgebox (cargo build --release --bin edgebox)"
  cargo build --quiet --release --bin edgebox
  BUILD="cargo build --release"
  cp target/release/edgebox "$WORK/edgebox"
else
  # As benches/edge_passthrough.sh: our crates at opt-level 3, the dependencies at the
  # opt-level 2 they are already built with (a full release build of wasmtime and pingora
  # takes far longer on a small machine). RELEASE=1 uses the release profile instead.
  echo "building edgebox (workspace crates at opt-level 3; RELEASE=1 for a release build)"
  cargo build --quiet --bin edgebox --config 'profile.dev.opt-level=3'
  BUILD="workspace crates at opt-level 3, dependencies at opt-level 2"
  cp target/debug/edgebox "$WORK/edgebox"
fi

ORIGIN_PORT=$(free_port); NGINX_PORT=$(free_port); EDGE_PORT=$(free_port); ADMIN_PORT=$(free_port)
VARNISH_PORT=$(free_port)
mkdir -p "$WORK/www" "$WORK/origin" "$WORK/proxy" "$WORK/proxy/cache"
# nginx workers and Varnish's child may run as unprivileged users.
chmod 755 "$WORK" "$WORK/www"
head -c 1024 /dev/urandom > "$WORK/www/1k.bin"
head -c 102400 /dev/urandom > "$WORK/www/100k.bin"
chmod 644 "$WORK/www/"*.bin
chmod 777 "$WORK/proxy/cache"

nginx_conf() { # DIR WORKERS BODY
  cat > "$1/nginx.conf" <<CONF
worker_processes $2;
pid $1/nginx.pid;
error_log $1/error.log warn;
daemon on;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1; uwsgi_temp_path $1; scgi_temp_path $1;
  $3
}
CONF
  nginx -c "$1/nginx.conf" -p "$1"
}
nginx_conf "$WORK/origin" 1 "server { listen 127.0.0.1:$ORIGIN_PORT; root $WORK/www; keepalive_requests 1000000;
    add_header Cache-Control \"max-age=3600\"; }"
nginx_conf "$WORK/proxy" 2 "proxy_cache_path $WORK/proxy/cache levels=1:2 keys_zone=bench:16m max_size=1g inactive=1h use_temp_path=off;
  upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_PORT; keepalive_requests 1000000;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\";
      proxy_cache bench; proxy_cache_lock on; add_header X-Cache \$upstream_cache_status; } }"

if [ "$HAVE_VARNISH" = 1 ]; then
  mkdir -p "$WORK/varnish"
  chmod 755 "$WORK/varnish"
  varnishd -n "$WORK/varnish" -a "127.0.0.1:$VARNISH_PORT" -b "127.0.0.1:$ORIGIN_PORT" \
    -s malloc,256m -P "$WORK/varnish.pid" > "$WORK/varnish.log" 2>&1 \
    || { echo "varnishd did not start:"; cat "$WORK/varnish.log"; HAVE_VARNISH=0; }
fi

cat > "$WORK/edgebox.toml" <<TOML
[deployment]
name = "bench"
data_dir = "data"
[regions.local]
[latency]
enabled = false
[[nodes]]
name = "edge"
role = "edge"
region = "local"
listen = "127.0.0.1:$EDGE_PORT"
admin = "127.0.0.1:$ADMIN_PORT"
origin_group = "g"
[origin_groups.g]
policy = "round_robin"
members = [{ host = "127.0.0.1", port = $ORIGIN_PORT }]
health = { path = "/1k.bin", interval = "5s" }
[edge.compression]
enabled = false
[cache]
enabled = true
l1_capacity = "64MiB"
TOML
(cd "$WORK" && EDGEBOX_LOG=warn ./edgebox edge --config edgebox.toml --node edge > edge.out 2> edge.err) &
PIDS+=($!)
for _ in $(seq 100); do grep -q "service=admin" "$WORK/edge.out" 2>/dev/null && break; sleep 0.1; done
grep -q "service=admin" "$WORK/edge.out" || { cat "$WORK/edge.err"; exit 1; }

# Proof that a target answers from its cache: the second request of a warm object.
is_hit() { # NAME URL
  local headers; headers=$(curl -sf -D - -o /dev/null "$2")
  case $1 in
    edge) grep -qi '^x-cache: HIT' <<<"$headers" ;;
    nginx) grep -qi '^x-cache: HIT' <<<"$headers" ;;
    varnish) grep -qiE '^x-varnish: [0-9]+ [0-9]+' <<<"$headers" ;;
  esac
}

declare -A RPS P99 P50
run() { # NAME PORT OBJECT
  local url="http://127.0.0.1:$2/$3" key="$1 $3"
  curl -sf "$url" -o /dev/null || { echo "$1 does not answer $url" >&2; exit 1; }
  is_hit "$1" "$url" || { echo "$1 does not answer $url from its cache" >&2; exit 1; }
  wrk -t"$THREADS" -c"$CONNS" -d2s "$url" > /dev/null # warm-up
  local out; out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$url")
  RPS[$key]=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  P50[$key]=$(awk '$1=="50%" {print $2}' <<<"$out")
  P99[$key]=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "$key: ${RPS[$key]} req/s, p50 ${P50[$key]}, p99 ${P99[$key]}"
}
TARGETS=(edge nginx)
[ "$HAVE_VARNISH" = 1 ] && TARGETS+=(varnish)
declare -A PORT=([edge]=$EDGE_PORT [nginx]=$NGINX_PORT [varnish]=$VARNISH_PORT)
for object in 1k.bin 100k.bin; do
  for target in "${TARGETS[@]}"; do
    run "$target" "${PORT[$target]}" "$object"
  done
done
EDGE_STATS=$(curl -sf "http://127.0.0.1:$ADMIN_PORT/stats" | python3 -c 'import json,sys; c=json.load(sys.stdin)["cache"]; print("L1 hits %d, L2 hits %d, misses %d" % (c["l1"]["hits"], c["l2"]["hits"], c["misses"]))')

{
  echo "# Cache-hit benchmark"
  echo
  echo "Generated by \`benches/cache_hit.sh\` on $(date -u +%Y-%m-%dT%H:%MZ)."
  echo
  echo "Setup: $(nproc) CPU cores shared by the load generator, the caches and the origin"
  echo "(and, on the build machine, by other work: numbers are noisy). Load: wrk -t$THREADS -c$CONNS -d$DURATION"
  echo "after a 2 s warm-up, HTTP/1.1 keep-alive, GET of one object that every target already"
  echo "holds (checked before measuring: edge \`X-Cache: HIT\`, nginx \`\$upstream_cache_status\` HIT,"
  echo "Varnish \`X-Varnish\` with two ids). Origin: nginx (1 worker) serving random bytes with"
  echo "\`Cache-Control: max-age=3600\`."
  echo
  echo "- edge: \`edgebox edge\` ($BUILD), L1 64 MiB + L2 on disk, compression and latency"
  echo "  simulation off, logs at warn. Hits come from L1. Edge cache counters after the run: $EDGE_STATS."
  echo "- nginx: $(nginx -v 2>&1 | sed 's/.*: //'), 2 workers, \`proxy_cache\` (disk, page cache), \`proxy_cache_lock on\`."
  if [ "$HAVE_VARNISH" = 1 ]; then
    echo "- Varnish: $(varnishd -V 2>&1 | head -1), \`-s malloc,256m\`, default VCL and thread pools."
  else
    echo "- Varnish: skipped (could not be installed here)."
  fi
  echo
  echo "| object | target | requests/s | p50 | p99 |"
  echo "|---|---|---:|---:|---:|"
  for object in 1k.bin 100k.bin; do
    for target in "${TARGETS[@]}"; do
      key="$target $object"
      echo "| ${object%k.bin} KiB | $target | ${RPS[$key]} | ${P50[$key]} | ${P99[$key]} |"
    done
  done
} > "$RESULTS"
echo "wrote $RESULTS"
