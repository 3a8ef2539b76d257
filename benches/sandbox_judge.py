#!/usr/bin/env python3
"""Judging benchmark (issue 14's line): a hello-world-sized Python program judged on 20
test cases in one job, end to end (POST /v1/run), against one plain job of the same
program, same daemon, same run, in turn; with `max_parallel_cases` = 1 (the cases one
after the other in the job's slot) and = 2 (the job's slot plus one free one). Writes
its section of benches/results/sandbox.md (replacing the previous one) and prints it.

Usage: benches/sandbox_judge.py [path/to/edgebox]   (default: target/release/edgebox)
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
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "edgebox")
RUNTIMES = os.environ.get("EDGEBOX_RUNTIME_DIR", os.path.join(ROOT, "target", "edgebox-runtimes"))
SOURCE = "print('hello', input())\n"
RUNS = int(os.environ.get("JUDGE_RUNS", "21"))
SLOTS = 2
HEADING = "## Test cases judged in one job (`benches/sandbox_judge.py`)"


def start(tmp, parallel):
    cfg = os.path.join(tmp, f"bench-{parallel}.toml")
    data = os.path.join(tmp, f"data-{parallel}")
    with open(cfg, "w") as f:
        f.write(f"""[deployment]
name = "bench"
data_dir = "{data}"
[regions.local]
[latency]
enabled = false
[[nodes]]
name = "sandbox"
role = "sandbox"
region = "local"
listen = "127.0.0.1:0"
[sandbox]
max_concurrent_jobs = {SLOTS}
max_parallel_cases = {parallel}
queue_length = 64
""")
    env = dict(os.environ, EDGEBOX_RUNTIME_DIR=RUNTIMES, EDGEBOX_LOG="warn")
    proc = subprocess.Popen([BIN, "sandbox", "--config", cfg, "--node", "sandbox"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    for line in proc.stdout:
        if line.startswith("edgebox-listening"):
            base = "http://" + line.strip().split("addr=")[1]
            credential = open(os.path.join(data, "nodes", "sandbox", "credential")).read().strip()
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


def measure(tmp, parallel):
    """Medians (ms) of one job and of the 20-case job, and the cases' own runtime_ms."""
    proc, base, credential = start(tmp, parallel)
    try:
        one = {"language": "python", "source": SOURCE, "stdin": "world\n"}
        cases = [{"stdin": f"case {i}\n", "expected_stdout": f"hello case {i}\n"} for i in range(20)]
        judged = {"language": "python", "source": SOURCE, "tests": cases}
        for _ in range(5):  # warm: runtime loaded, pool slots resident
            run(base, credential, one)
            run(base, credential, judged)
        single, twenty, case_ms, job_ms = [], [], [], []
        for _ in range(RUNS):
            ms, result = timed(lambda: run(base, credential, one))
            assert result["state"] == "succeeded", result
            single.append(ms)
            job_ms.append(result["runtime_ms"])
            ms, result = timed(lambda: run(base, credential, judged))
            assert result["tests"]["passed"] == 20, result["tests"]
            twenty.append(ms)
            case_ms.extend(case["runtime_ms"] for case in result["tests"]["cases"])
    finally:
        proc.terminate()
        proc.wait()
    return (statistics.median(single), statistics.median(twenty),
            statistics.median(job_ms), statistics.median(case_ms))


def main():
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for parallel in (1, 2):
            rows.append((parallel, *measure(tmp, parallel)))
    load_after = os.getloadavg()[0]
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    table = "\n".join(
        f"| {p} | {a:.1f} | {b:.1f} | **{b / a:.1f}x** | {jm:.0f} | {cm:.0f} |"
        for p, a, b, jm, cm in rows)
    best = min(b / a for _, a, b, _, _ in rows)
    section = f"""{HEADING}

{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores (1-minute load average
{load_before:.1f} at the start, {load_after:.1f} at the end), `{os.path.relpath(BIN, ROOT)}` at {commit},
daemon with `max_concurrent_jobs = {SLOTS}`. `{SOURCE.strip()}`: one job (stdin `world`) and the
same program judged on 20 cases in one job, in turn, {RUNS} times each, end to end through
`POST /v1/run` (a new connection per request); medians. Target: 20 cases <= 3x one job.

| max_parallel_cases | one job ms | 20 cases ms | ratio | one job's runtime_ms | a case's runtime_ms |
|---|---|---|---|---|---|
{table}

Best ratio this run: **{best:.1f}x** ({'met' if best <= 3 else 'not met'}).
"""
    path = os.path.join(ROOT, "benches", "results", "sandbox.md")
    text = open(path).read()
    if HEADING in text:
        head, rest = text.split(HEADING, 1)
        # The section runs to the next heading of the same level.
        tail = rest.split("\n## ", 1)
        text = head + section + ("\n## " + tail[1] if len(tail) > 1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)
    print(section)


if __name__ == "__main__":
    main()
