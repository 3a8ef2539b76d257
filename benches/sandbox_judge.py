#!/usr/bin/env python3
"""Judging benchmark: a hello-world-sized Python program judged on 20 test cases in one
job, end to end (POST /v1/run), against one plain job of the same program, same daemon,
same run. Appends its line to benches/results/sandbox.md.

Usage: benches/sandbox_judge.py [path/to/edgebox]   (default: target/debug/edgebox)
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "edgebox")
RUNTIMES = os.environ.get("EDGEBOX_RUNTIME_DIR", os.path.join(ROOT, "target", "edgebox-runtimes"))
SOURCE = "print('hello', input())\n"
RUNS = 15


def start(tmp, concurrent):
    cfg = os.path.join(tmp, "bench.toml")
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
max_concurrent_jobs = {concurrent}
queue_length = 64
""")
    env = dict(os.environ, EDGEBOX_RUNTIME_DIR=RUNTIMES, EDGEBOX_LOG="warn")
    proc = subprocess.Popen([BIN, "sandbox", "--config", cfg, "--node", "sandbox"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    for line in proc.stdout:
        if line.startswith("edgebox-listening"):
            base = "http://" + line.strip().split("addr=")[1]
            credential = open(os.path.join(tmp, "data", "nodes", "sandbox", "credential")).read().strip()
            return proc, base, credential
    raise SystemExit("daemon did not start")


def run(base, credential, body):
    req = urllib.request.Request(f"{base}/v1/run", json.dumps(body).encode(), {
        "content-type": "application/json", "authorization": f"Bearer {credential}"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        return json.load(resp)


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return (time.perf_counter() - t) * 1000, result


def main():
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        proc, base, credential = start(tmp, 2)
        try:
            one = {"language": "python", "source": SOURCE, "stdin": "world\n"}
            cases = [{"stdin": f"case {i}\n", "expected_stdout": f"hello case {i}\n"} for i in range(20)]
            judged = {"language": "python", "source": SOURCE, "tests": cases}
            for _ in range(3):  # warm: runtimes loaded, pool filled
                run(base, credential, one)
                run(base, credential, judged)
            single, twenty = [], []
            for _ in range(RUNS):
                ms, result = timed(lambda: run(base, credential, one))
                assert result["state"] == "succeeded", result
                single.append(ms)
                ms, result = timed(lambda: run(base, credential, judged))
                assert result["tests"]["passed"] == 20, result["tests"]
                twenty.append(ms)
        finally:
            proc.terminate()
            proc.wait()
    a, b = statistics.median(single), statistics.median(twenty)
    line = (f"\n## Test cases judged in one job\n\n"
            f"`benches/sandbox_judge.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {cores} cores "
            f"(shared; load average {os.getloadavg()[0]:.1f}), `max_concurrent_jobs = 2`, median of {RUNS}: one "
            f"hello-world Python job end to end **{a:.0f} ms**; the same program judged on 20 cases in one job "
            f"**{b:.0f} ms**: **{b / a:.1f}x** (target <= 3x). Each case is a fresh CPython instance: the cases "
            f"run one after the other, each taking a pre-started instance (the pool refills in the background), "
            f"so a case costs about one interpreter start-up; a pre-initialised snapshot would remove that.\n")
    path = os.path.join(ROOT, "benches", "results", "sandbox.md")
    with open(path, "a") as f:
        f.write(line)
    print(line)


if __name__ == "__main__":
    main()
