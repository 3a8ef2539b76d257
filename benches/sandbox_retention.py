#!/usr/bin/env python3
"""Retention bench for the sandbox daemon; writes benches/results/sandbox_retention.md.

Issue 11's bar: the sandbox's RSS stays under 2x its idle size plus the configured
retention budget (`max_finished_bytes`) after 1,000 jobs that each print the maximum
output. Each job here is a WASI command that writes `maximums.output` bytes to stdout
*and* to stderr (the worst case per job), run through `POST /v1/run` by a few
concurrent clients that read and discard the (streamed) view. Idle RSS is measured
after warm-up jobs that print nothing (engine, pooling allocator and compiled
runtimes in place); the bound is then checked on the RSS after the run, and the
peak (VmHWM) and the daemon's own retained-bytes figure are reported beside it.

Usage: benches/sandbox_retention.py [path/to/edgebox] [jobs] [budgets in MiB, comma-separated]
(default target/debug/edgebox, 1000 jobs, budgets 64,256 — 256 MiB is the default
`max_finished_bytes`; each budget gets a fresh daemon; dependencies such as wasmtime
are optimised even in the dev profile, the sandbox crate itself is not)
"""
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "edgebox")
JOBS = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
BUDGETS_MIB = [int(b) for b in (sys.argv[3] if len(sys.argv) > 3 else "64,256").split(",")]
OUTPUT_MIB = 1
CLIENTS = 4
MIB = 1 << 20


def printer(per_stream):
    """WAT writing `per_stream` bytes of 'x' to stdout and to stderr, 64 KiB a write."""
    chunk = 64 * 1024
    writes = per_stream // chunk
    return f"""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start") (local $i i32)
    (memory.fill (i32.const 64) (i32.const 120) (i32.const {chunk}))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {chunk}))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (i32.const {writes})))
      (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (drop (call $w (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))))"""


QUIET = """(module (memory (export "memory") 1) (func (export "_start")))"""


def start(tmp, budget_mib):
    cfg = os.path.join(tmp, f"sandbox-{budget_mib}.toml")
    with open(cfg, "w") as f:
        f.write(f"""[deployment]
name = "bench"
data_dir = "data"
[regions.local]
[latency]
enabled = false
[[nodes]]
name = "sandbox"
role = "sandbox"
region = "local"
listen = "127.0.0.1:0"
[sandbox]
max_concurrent_jobs = 2
queue_length = 64
keep_finished = "1h"
max_finished_jobs = 1000
max_finished_bytes = "{budget_mib}MiB"
defaults = {{ wall = "10s", cpu = "10s", memory = "64MiB", output = "{OUTPUT_MIB}MiB" }}
maximums = {{ wall = "60s", cpu = "60s", memory = "256MiB", output = "{OUTPUT_MIB}MiB" }}
""")
    env = dict(os.environ, EDGEBOX_LOG="warn")
    proc = subprocess.Popen([BIN, "sandbox", "--config", cfg, "--node", "sandbox"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    for line in proc.stdout:
        if line.startswith("edgebox-listening"):
            return proc, "http://" + line.strip().split("addr=")[1]
    raise SystemExit("daemon did not start")


def post(base, path, body):
    req = urllib.request.Request(f"{base}{path}", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.load(resp)


def get(base, path):
    with urllib.request.urlopen(f"{base}{path}", timeout=30) as resp:
        return json.load(resp)


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def measure(tmp, budget_mib):
    proc, base = start(tmp, budget_mib)
    try:
        for _ in range(20):
            post(base, "/v1/run", {"language": "wat", "source": QUIET})
        time.sleep(1)
        idle = status(proc.pid, "VmRSS")
        source = printer(OUTPUT_MIB * MIB)
        started = time.time()

        def one(_):
            view = post(base, "/v1/run", {"language": "wat", "source": source})
            assert view["state"] == "succeeded", view["state"]
            assert len(view["stdout"]) == OUTPUT_MIB * MIB
            return True

        peak_sampled = idle
        with cf.ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(one, i) for i in range(JOBS)]
            for n, future in enumerate(cf.as_completed(futures)):
                future.result()
                if n % 50 == 0:
                    peak_sampled = max(peak_sampled, status(proc.pid, "VmRSS"))
        elapsed = time.time() - started
        time.sleep(1)
        after = status(proc.pid, "VmRSS")
        hwm = status(proc.pid, "VmHWM")
        stats = get(base, "/v1/stats")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    budget = budget_mib * MIB
    return {
        "budget": budget, "idle": idle, "after": after, "hwm": hwm, "peak": peak_sampled,
        "bound": 2 * idle + budget, "elapsed": elapsed, "retained": stats["retained"],
    }


def main():
    tmp = tempfile.mkdtemp(prefix="edgebox-retention-")
    runs = [measure(tmp, budget) for budget in BUDGETS_MIB]
    mib = lambda b: f"{b / MIB:.1f} MiB"
    load = os.getloadavg()[0]
    rows = [
        ("idle RSS (after 20 quiet warm-up jobs)", lambda r: mib(r["idle"])),
        ("retention budget (`max_finished_bytes`)", lambda r: mib(r["budget"])),
        ("bound: 2 x idle + budget", lambda r: mib(r["bound"])),
        (f"RSS after the {JOBS} jobs", lambda r: f"**{mib(r['after'])}**"),
        ("after / bound", lambda r: f"{r['after'] / r['bound'] * 100:.0f} %"),
        ("highest RSS sampled during the run", lambda r: mib(r["peak"])),
        ("peak RSS (VmHWM)", lambda r: mib(r["hwm"])),
        ("retained jobs / bytes the daemon accounts",
         lambda r: f"{r['retained']['jobs']} / {mib(r['retained']['bytes'])}"),
        ("jobs forgotten early (oldest first)", lambda r: str(r["retained"]["evicted_total"])),
        ("run time", lambda r: f"{r['elapsed']:.1f} s ({JOBS / r['elapsed']:.1f} jobs/s)"),
    ]
    table = "| figure | " + " | ".join(f"budget {r['budget'] // MIB} MiB" for r in runs) + " |\n"
    table += "|---|" + "---|" * len(runs) + "\n"
    for name, cell in rows:
        table += f"| {name} | " + " | ".join(cell(r) for r in runs) + " |\n"
    ok = all(r["after"] <= r["bound"] for r in runs)
    debug = " (debug build: our crates at opt-level 0, dependencies such as wasmtime at opt-level 2; a release build of the whole binary did not fit the time on this shared 2-core machine. What is measured is memory held, which the opt level does not change much; run time would)" if "debug" in BIN else ""
    text = f"""# Sandbox retention bench

Generated by `benches/sandbox_retention.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, \
{os.cpu_count()} cores (shared with other builds; load average {load:.1f} at the end), binary \
`{os.path.relpath(BIN, ROOT)}`{debug}.

{JOBS} WAT jobs per budget, each writing the maximum output (`maximums.output` = {OUTPUT_MIB} MiB) on \
stdout **and** stderr, through `POST /v1/run` with {CLIENTS} concurrent clients that read the streamed \
view; a fresh daemon per budget, `max_finished_jobs` = 1000, `keep_finished` = 1h (so only the count \
and byte bounds forget jobs).

{table}
Result: RSS after the run is **{'within' if ok else 'OVER'}** 2 x idle + budget for every budget. \
For reference (computed, not measured): under the count bound alone the same run would keep \
{JOBS} x {2 * OUTPUT_MIB} MiB = {JOBS * 2 * OUTPUT_MIB} MiB of output.

The retained-bytes bound itself is asserted by tests, not by this timing-dependent run:
`jobs::table::tests::retained_bytes_stay_within_the_budget` (2,000 jobs through the table)
and `tests/it/sandbox/bounds.rs` `finished_jobs_are_bounded_by_count_and_bytes` (through the daemon).
"""
    out = os.path.join(ROOT, "benches", "results", "sandbox_retention.md")
    with open(out, "w") as f:
        f.write(text)
    print(text)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
