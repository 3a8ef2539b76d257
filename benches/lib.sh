# Shared helpers of the load benchmarks (`cache_hit.sh`, `edge_passthrough.sh`): sourced, not run.
#
# What they share, so that every target of a run is treated the same way:
# - one build of edgebox, recorded (`BUILD_NOTE`): the release profile by default;
# - one CPU set for every server (`SERVER_CPUS`) and one for the load generator
#   (`LOAD_CPUS`), applied with `taskset` to each process alike (default: every core
#   for everyone, which pins nothing);
# - one wrk invocation (`measure`), parsed the same way for every target.
#
# Knobs read here: EDGEBOX_BIN (a prebuilt binary instead of building), RELEASE (1 =
# `cargo build --release`, the default; 0 = the dev profile with our crates at opt-level 3),
# SERVER_CPUS, LOAD_CPUS, DURATION, WARMUP, CONNS, THREADS.

DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
ALL_CPUS="0-$(($(nproc) - 1))"
SERVER_CPUS=${SERVER_CPUS:-$ALL_CPUS}
LOAD_CPUS=${LOAD_CPUS:-$ALL_CPUS}
export PATH="$PATH:/usr/sbin"

try_install() { # COMMAND PACKAGE -> 0 when COMMAND is available afterwards
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $2 from Debian packages"
  if apt-get install -y "$2" >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y "$2" >/dev/null 2>&1; }; then
    command -v "$1" >/dev/null 2>&1 && return 0
  fi
  echo "cannot install $2 (not root, no network or no package): $1 is skipped" >&2
  return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Runs a server command on the servers' CPU set.
on_server_cpus() { taskset -c "$SERVER_CPUS" "$@"; }

# Builds (or copies) edgebox into $1 and sets BUILD_NOTE to what was measured.
build_edgebox() { # DEST
  local commit; commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  git diff --quiet HEAD 2>/dev/null || commit="$commit+uncommitted changes"
  local rustc; rustc=$(rustc -V 2>/dev/null || echo "rustc unknown")
  if [ -n "${EDGEBOX_BIN:-}" ]; then
    cp "$EDGEBOX_BIN" "$1"
    BUILD_NOTE="prebuilt binary \`$EDGEBOX_BIN\` (the caller says how it was built; tree at $commit)"
  elif [ "${RELEASE:-1}" = 1 ]; then
    echo "building edgebox (cargo build --release --bin edgebox)"
    cargo build --quiet --release --bin edgebox
    cp target/release/edgebox "$1"
    local profile; profile=$(awk '/^\[profile.release\]/{p=1;next} /^\[/{p=0} p && NF && !/^#/' Cargo.toml | paste -sd ';' -)
    BUILD_NOTE="\`cargo build --release\` (release profile: opt-level 3${profile:+; $profile}), $rustc, commit $commit"
  else
    echo "building edgebox (dev profile, workspace crates at opt-level 3)"
    cargo build --quiet --bin edgebox --config 'profile.dev.opt-level=3'
    cp target/debug/edgebox "$1"
    BUILD_NOTE="dev profile with workspace crates at opt-level 3 (dependencies at opt-level 2) — not a release build, $rustc, commit $commit"
  fi
}

# Prints the config of one edge (node "edge") in front of the origin on $ORIGIN_PORT, with
# the latency simulation off; NODE_LINES go into the node's table, TABLES (the [edge],
# [edge.compression] and [cache] settings a bench wants) after the origin group.
edge_config() { # EDGE_PORT ADMIN_PORT HEALTH_PATH NODE_LINES TABLES
  cat <<TOML
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
listen = "127.0.0.1:$1"
admin = "127.0.0.1:$2"
origin_group = "g"
$4
[origin_groups.g]
policy = "round_robin"
members = [{ host = "127.0.0.1", port = $ORIGIN_PORT }]
health = { path = "$3", interval = "5s" }
$5
TOML
}

# Writes DIR/nginx.conf and starts nginx on the servers' CPU set.
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
  on_server_cpus nginx -c "$1/nginx.conf" -p "$1"
}

# A self-signed ECDSA P-256 certificate for localhost (the key type the edge's local CA
# issues), for nginx's HTTPS listener.
self_signed() { # DIR
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$1/key.pem" -out "$1/cert.pem" >/dev/null 2>&1
}

# The TLS version a server negotiates with a default client, e.g. "TLSv1.3".
tls_version() { # HOST:PORT
  openssl s_client -connect "$1" -servername localhost </dev/null 2>/dev/null \
    | awk -F': *' '/^ *Protocol *:/ {print $2; exit} /^New, TLS/ {print $2; exit}' | sed 's/,.*//'
}

# Waits until FILE contains PATTERN (a daemon's announcement line), up to 10 s.
wait_for_line() { # FILE PATTERN
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

# Clock ticks the processes PIDS... have used so far, summed over the awk expression EXPR
# of fields of /proc/PID/stat (14: user mode, 15: kernel).
stat_ticks() { # EXPR PIDS...
  local expr=$1 total=0 pid
  shift
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] && total=$((total + $(awk "{print $expr}" "/proc/$pid/stat")))
  done
  echo "$total"
}

# CPU time (user + system, in clock ticks) the processes PIDS... have used so far.
cpu_ticks() { stat_ticks '$14 + $15' "$@"; }

# User-mode CPU time (clock ticks) of PIDS...: the server's own code, without the kernel's
# send/receive work (on loopback the kernel also charges the peer's packet processing to
# whoever sends, which makes system time the noisier part).
user_ticks() { stat_ticks '$14' "$@"; }

# wrk against URL: a warm-up, then the measurement. Sets M_RPS, M_P50, M_P99 (as wrk prints
# them) and M_P50_US, M_P99_US (microseconds). With CPU_PIDS set (a list of server pids),
# also M_CPU_US: the CPU time those processes used during the measurement per request
# served, in microseconds — a figure much less sensitive than requests/s to what else the
# machine runs, since it does not count the time the server waited for a core — and
# M_USER_US, the user-mode part of it.
measure() { # URL [CONNS] [THREADS]
  local conns=${2:-$CONNS} threads=${3:-$THREADS}
  taskset -c "$LOAD_CPUS" wrk -t"$threads" -c"$conns" -d"$WARMUP" "$1" > /dev/null
  local ticks0; ticks0=$(cpu_ticks ${CPU_PIDS:-})
  local user0; user0=$(user_ticks ${CPU_PIDS:-})
  local out; out=$(taskset -c "$LOAD_CPUS" wrk -t"$threads" -c"$conns" -d"$DURATION" --latency "$1")
  local ticks1; ticks1=$(cpu_ticks ${CPU_PIDS:-})
  local user1; user1=$(user_ticks ${CPU_PIDS:-})
  local requests; requests=$(awk '/requests in/ {print $1}' <<<"$out")
  M_CPU_US="—"; M_USER_US="—"
  if [ -n "${CPU_PIDS:-}" ] && [ "${requests:-0}" -gt 0 ]; then
    M_CPU_US=$(python3 -c "print(f'{($ticks1 - $ticks0) * 1e6 / $(getconf CLK_TCK) / $requests:.1f}')")
    M_USER_US=$(python3 -c "print(f'{($user1 - $user0) * 1e6 / $(getconf CLK_TCK) / $requests:.1f}')")
  fi
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
    echo "wrk saw errors against $1:" >&2
    grep "Non-2xx\|Socket errors" <<<"$out" >&2
  fi
  M_RPS=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  M_P50=$(awk '$1=="50%" {print $2}' <<<"$out")
  M_P99=$(awk '$1=="99%" {print $2}' <<<"$out")
  M_P50_US=$(to_us "$M_P50")
  M_P99_US=$(to_us "$M_P99")
}

# wrk's "310.00us" / "1.20ms" / "2.00s" in microseconds.
to_us() {
  python3 - "$1" <<'PY'
import re, sys
m = re.fullmatch(r"([0-9.]+)(us|ms|s)", sys.argv[1])
if not m:
    print("nan")
else:
    v, unit = float(m[1]), m[2]
    print(f"{v * {'us': 1, 'ms': 1e3, 's': 1e6}[unit]:.0f}")
PY
}

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

# The median of the numbers given (to two decimals).
median() { python3 -c "import statistics,sys; print(f'{statistics.median(float(v) for v in sys.argv[1:]):.2f}')" "$@"; }

# GET an edge admin route with the node's credential (every admin route but /healthz and
# /metrics needs it): the edge wrote it under its data dir.
admin_get() { # DATA_DIR NODE ADMIN_PORT PATH
  curl -sf -H "Authorization: Bearer $(cat "$1/nodes/$2/credential")" "http://127.0.0.1:$3$4"
}
