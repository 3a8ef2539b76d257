#!/usr/bin/env python3
"""Two sandbox nodes against one, through the control plane: jobs/s on a CPU-bound mix
(Python, JavaScript and WAT loops), submitted with POST /v1/run by concurrent clients.

Each configuration is a real deployment (control plane + 1 or 2 sandbox nodes). Two
layouts:
  pinned  - each sandbox node is pinned to a core of its own (taskset) with one job slot,
            emulating nodes that each have their own core: what the >= 1.7x target is
            about (the single node takes core 0 and core 1 in alternate rounds);
  machine - one node with a slot per core of this machine against two nodes with one
            slot each, all unpinned: what a second node adds on the same machine.
Configurations alternate (1, 2, 1, 2, ...) so that load changes hit both; the figure is
the ratio of the medians. Prints a markdown section to stdout.

Usage: benches/sandbox_fleet.py [path/to/edgebox] [rounds]   (default: target/debug/edgebox, 3)
"""
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "edgebox")
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
RUNTIMES = os.environ.get("EDGEBOX_RUNTIME_DIR", os.path.join(ROOT, "target", "edgebox-runtimes"))
TOKEN = "bench-submitter-0123456789"
OPERATOR = "bench-operator-0123456789"
JOBS = 24
CLIENTS = 6

MIX = [
    {"language": "python", "source": "n = 0\nfor i in range(400_000):\n    n += i\nprint(n)\n"},
    {"language": "javascript", "source": "let n = 0;\nfor (let i = 0; i < 3_000_000; i++) n += i;\nconsole.log(n);\n"},
    {"language": "wat", "source": """(module (memory (export "memory") 1)
  (func (export "_start") (local $i i32)
    (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 400000000))))))"""},
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, path, body=None, token=TOKEN, timeout=300):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}{path}", data, {
        "content-type": "application/json", "authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.load(resp)


class Deployment:
    def __init__(self, tmp, nodes, pinned, slots, first_core=0):
        # A fresh directory each time: a control plane keeps its config history there.
        tmp = tempfile.mkdtemp(dir=tmp)
        port = free_port()
        text = f"""[deployment]
name = "bench"
data_dir = "data"
[regions.local]
[latency]
enabled = false
[[nodes]]
name = "control"
role = "control-plane"
region = "local"
listen = "127.0.0.1:{port}"
"""
        for i in range(nodes):
            text += f"""[[nodes]]
name = "sandbox-{i}"
role = "sandbox"
region = "local"
listen = "127.0.0.1:0"
"""
        text += f"""[sandbox]
max_concurrent_jobs = {slots}
queue_length = 64
defaults = {{ wall = "60s", cpu = "60s", memory = "256MiB", output = "1MiB" }}
[[control_plane.tokens]]
name = "jobs"
role = "submitter"
token = "{TOKEN}"
[[control_plane.tokens]]
name = "ops"
role = "operator"
token = "{OPERATOR}"
"""
        cfg = os.path.join(tmp, f"fleet-{nodes}-{pinned}.toml")
        with open(cfg, "w") as f:
            f.write(text)
        env = dict(os.environ, EDGEBOX_RUNTIME_DIR=RUNTIMES, EDGEBOX_LOG="warn")
        self.procs = [subprocess.Popen([BIN, "control-plane", "--config", cfg, "--node", "control"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
        for i in range(nodes):
            command = [BIN, "sandbox", "--config", cfg, "--node", f"sandbox-{i}"]
            if pinned:
                command = ["taskset", "-c", str((first_core + i) % os.cpu_count())] + command
            self.procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL, env=env))
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                stats = call(self.base, "/v1/stats", token=OPERATOR, timeout=5)
                sandboxes = stats.get("sandboxes", {})
                if len(sandboxes) == nodes and all(s["up"] and s["jobs"] for s in sandboxes.values()):
                    break
            except Exception:
                pass
            if time.time() > deadline:
                self.stop()
                raise SystemExit("deployment did not come up")
            time.sleep(0.2)

    def stop(self):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def one_round(base):
    jobs = [MIX[i % len(MIX)] for i in range(JOBS)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(lambda job: call(base, "/v1/run", job), jobs))
    elapsed = time.perf_counter() - started
    bad = [r for r in results if r.get("state") != "succeeded"]
    assert not bad, bad[:1]
    return JOBS / elapsed


def measure(tmp, nodes, pinned, round_):
    slots = 1 if pinned or nodes == 2 else os.cpu_count()
    # One pinned node takes each core in turn, so that a busier core (other work on the
    # machine) does not count against one configuration only.
    deployment = Deployment(tmp, nodes, pinned, slots, first_core=round_)
    try:
        for job in MIX:  # warm: runtimes loaded, pools filled, modules compiled once
            call(deployment.base, "/v1/run", job)
        runtimes = {job["language"]: call(deployment.base, "/v1/run", job)["runtime_ms"] for job in MIX}
        rate = one_round(deployment.base)
        placed = {name: s["placed"] for name, s in call(deployment.base, "/v1/stats", token=OPERATOR)["sandboxes"].items()}
        return rate, runtimes, placed
    finally:
        deployment.stop()


def main():
    load_before = os.getloadavg()[0]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for pinned in (True, False):
            rates = {1: [], 2: []}
            detail = {}
            for round_ in range(ROUNDS):
                for nodes in (1, 2):
                    rate, runtimes, placed = measure(tmp, nodes, pinned, round_)
                    rates[nodes].append(rate)
                    detail[nodes] = (runtimes, placed)
                    print(f"pinned={pinned} nodes={nodes} {rate:.2f} jobs/s {runtimes} {placed}", file=sys.stderr)
            one, two = statistics.median(rates[1]), statistics.median(rates[2])
            out.append((pinned, one, two, rates, detail))
    load_after = os.getloadavg()[0]
    print(f"`benches/sandbox_fleet.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} cores shared with other work (load average {load_before:.1f} before, "
          f"{load_after:.1f} after), binary `{os.path.relpath(BIN, ROOT)}`. {JOBS} jobs per round "
          f"(Python, JavaScript and WAT loops in turn) through the control plane's `POST /v1/run` "
          f"from {CLIENTS} concurrent clients; "
          f"{ROUNDS} rounds per configuration, alternating, median.\n")
    print("| layout | 1 node jobs/s | 2 nodes jobs/s | ratio | rounds (1 / 2) |")
    print("|---|---|---|---|---|")
    for pinned, one, two, rates, _ in out:
        layout = ("pinned: each node on its own core, 1 slot" if pinned
                  else f"same machine: 1 node x {os.cpu_count()} slots vs 2 nodes x 1 slot, unpinned")
        fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)
        print(f"| {layout} | {one:.2f} | {two:.2f} | **{two / one:.2f}x** | {fmt(rates[1])} / {fmt(rates[2])} |")
    runtimes, placed = out[0][4][2]
    print(f"\nOne job alone (runtime_ms, 2-node pinned run): {runtimes}; jobs placed per node in the "
          f"last 2-node round: {placed}.")


if __name__ == "__main__":
    main()
