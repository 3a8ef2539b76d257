#!/usr/bin/env bash
# Load benchmark of the origin's static serving, with nginx serving the same directory
# on loopback as the reference, both driven by the same wrk run settings.
#
#   benches/origin_load.sh            # writes benches/results/origin.md
#
# Environment: DURATION (default 8s per run), ROUNDS (3: every row is measured this many
# times, interleaved, and the median round is reported), CONNECTIONS (32), THREADS (2: wrk
# threads), REPORT (output file). Installs wrk and nginx-light with apt-get when missing (needs
# root); builds target/release/edgebox when missing.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
REPORT=${REPORT:-benches/results/origin.md}
BIN=target/release/edgebox

log() { printf 'origin_load: %s\n' "$*" >&2; }

need_packages=()
command -v wrk >/dev/null || need_packages+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_packages+=(nginx-light)
if [ ${#need_packages[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing ${need_packages[*]} with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
    else
        log "missing ${need_packages[*]}: install them (e.g. apt-get install ${need_packages[*]}) and rerun"
        exit 1
    fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ ! -x "$BIN" ]; then
    log "building $BIN (release)"
    cargo build --release --bin edgebox
fi

WORK=$(mktemp -d -t edgebox-origin-bench-XXXXXX)
ORIGIN_PID=
NGINX_PID=
cleanup() {
    [ -n "$ORIGIN_PID" ] && kill -TERM "$ORIGIN_PID" 2>/dev/null && wait "$ORIGIN_PID" 2>/dev/null
    [ -n "$NGINX_PID" ] && kill -QUIT "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# The served directory: the bundled sample site plus a 1 MiB file.
mkdir -p "$WORK/site"
cp -r origin/sample/. "$WORK/site/"
head -c 1048576 /dev/urandom >"$WORK/site/1mib.bin"
SMALL=/index.html
LARGE=/1mib.bin
SMALL_SIZE=$(stat -c %s "$WORK/site$SMALL")

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- origin -----------------------------------------------------------------------------
start_origin() { # $1: EDGEBOX_LOG filter
    cat >"$WORK/edgebox.toml" <<EOF
[deployment]
name = "bench"
data_dir = "data"

[regions.local]

[latency]
enabled = false

[[nodes]]
name = "bench-origin"
role = "origin"
region = "local"
listen = "127.0.0.1:0"
root = "site"

[[origin.rules]]
pattern = "/**"
cache_control = "public, max-age=60"
EOF
    EDGEBOX_LOG=$1 "$BIN" origin --config "$WORK/edgebox.toml" --node bench-origin \
        >"$WORK/origin.out" 2>"$WORK/origin.err" &
    ORIGIN_PID=$!
    for _ in $(seq 1 300); do
        ORIGIN_ADDR=$(sed -n 's/^edgebox-listening node=bench-origin service=http addr=//p' "$WORK/origin.out")
        [ -n "$ORIGIN_ADDR" ] && return 0
        kill -0 "$ORIGIN_PID" 2>/dev/null || { cat "$WORK/origin.err" >&2; exit 1; }
        sleep 0.1
    done
    log "origin did not announce its address"; exit 1
}
stop_origin() {
    kill -TERM "$ORIGIN_PID"
    wait "$ORIGIN_PID" || { log "origin exited with $?"; exit 1; }
    ORIGIN_PID=
}

# --- nginx ------------------------------------------------------------------------------
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
user root;
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/site;
        location / { add_header Cache-Control "public, max-age=60"; }
    }
}
EOF
"$NGINX" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' 2>"$WORK/nginx/stderr" &
NGINX_PID=$!
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT$SMALL" 2>/dev/null && break
    sleep 0.1
done

# --- runs -------------------------------------------------------------------------------
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# wrk prints latency with units (us, ms, s); normalise to milliseconds.
to_ms() {
    awk '{ v = $1; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }; printf "%.3f", v }'
}

run_wrk() { # $1 label, $2 url, $3 file label, $4 round
    local out="$WORK/wrk.txt"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$2" >/dev/null # warm-up
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$2" >"$out"
    local rps p50 p99 transfer errors
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    transfer=$(awk '/^Transfer\/sec:/ { print $2 }' "$out")
    p50=$(awk '$1 == "50%" { print $2 }' "$out" | to_ms)
    p99=$(awk '$1 == "99%" { print $2 }' "$out" | to_ms)
    errors=$(awk '/Non-2xx|Socket errors/ { $1 = $1; print }' "$out" | paste -sd ';' -)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$3" "$rps" "$p50" "$p99" "$transfer" "${errors:-none}" "$4" >>"$RESULTS"
    log "round $4: $1 $3: $rps req/s, p50 $p50 ms, p99 $p99 ms, $transfer/s, errors: ${errors:-none}"
}

check_same() { # both servers send the same bytes
    for path in "$SMALL" "$LARGE"; do
        cmp -s <(curl -fsS "http://$ORIGIN_ADDR$path") <(curl -fsS "http://127.0.0.1:$NGINX_PORT$path") \
            || { log "origin and nginx differ on $path"; exit 1; }
    done
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$ROUNDS"); do
    start_origin warn
    [ "$round" = 1 ] && check_same
    for file in "$SMALL" "$LARGE"; do
        # Alternate who goes first, so that drift in background load hits both alike.
        if [ $((round % 2)) = 1 ]; then
            run_wrk "edgebox origin" "http://$ORIGIN_ADDR$file" "$file" "$round"
            run_wrk "nginx" "http://127.0.0.1:$NGINX_PORT$file" "$file" "$round"
        else
            run_wrk "nginx" "http://127.0.0.1:$NGINX_PORT$file" "$file" "$round"
            run_wrk "edgebox origin" "http://$ORIGIN_ADDR$file" "$file" "$round"
        fi
    done
    stop_origin

    # The same origin with its per-request info log on (written to a file), as deployed.
    start_origin info
    run_wrk "edgebox origin, request log on" "http://$ORIGIN_ADDR$SMALL" "$SMALL" "$round"
    stop_origin
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report -----------------------------------------------------------------------------
{
    echo "# Origin static serving: edgebox origin vs nginx"
    echo
    echo "Written by \`benches/origin_load.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
    echo
    echo "Each row is the median (by requests/s) of $ROUNDS interleaved rounds; the last column lists every round."
    echo
    python3 - "$RESULTS" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    server, file, rps, p50, p99, transfer, errors, round_ = line.rstrip("\n").split("\t")
    rows.setdefault((file, server), []).append((int(rps), p50, p99, transfer, errors))
print("| file | server | requests/s | p50 ms | p99 ms | transfer/s | errors | requests/s per round |")
print("|---|---|---:|---:|---:|---:|---|---|")
for (file, server), runs in rows.items():
    ordered = sorted(runs)
    rps, p50, p99, transfer, errors = ordered[len(ordered) // 2]
    errors = sorted({run[4] for run in runs})
    print(f"| `{file}` | {server} | {rps} | {p50} | {p99} | {transfer} | {'; '.join(errors)} | {', '.join(str(run[0]) for run in runs)} |")
PY
    echo
    echo "## Setup"
    echo
    echo "- Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr). The load generator and the server share these CPUs, and other work was running on the machine (load average $LOAD_BEFORE before, $LOAD_AFTER after): compare rows of one run, not absolute numbers across runs."
    echo "- Load: \`wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency\` (HTTP/1.1 keep-alive) after a 2 s warm-up per row; $(wrk -v 2>&1 | head -1)."
    echo "- Files: \`$SMALL\` ($SMALL_SIZE bytes, the sample site's start page) and \`$LARGE\` (1 MiB of random bytes), in one directory served by both."
    echo "- edgebox origin: \`target/release/edgebox origin\` (release build), multi-threaded tokio runtime, hyper 1 via hyper-util's auto (HTTP/1.1 + h2c) server, \`EDGEBOX_LOG=warn\` except the row marked \"request log on\" (\`info\`: one log line per request to a file). Files are opened per request through cap-std; files up to 64 KiB are read in the same blocking-pool call, larger ones are streamed in 128 KiB positional reads."
    echo "- Reference: $("$NGINX" -v 2>&1 | sed 's/^nginx version: //') with \`worker_processes 2\`, \`sendfile on\`, \`access_log off\`, \`keepalive_requests 1000000\`, no open-file cache; the same \`Cache-Control\` header added."
} >"$REPORT"
log "report written to $REPORT"
cat "$REPORT"
