"""edgebox's model against libCacheSim (PyPI `libcachesim`) on one oracleGeneral trace, in
one run: both tools' miss ratios side by side, and edgebox's speed, as Markdown tables for
benches/results/simulate.md.

    python benches/simulate_compare.py MODEL_BENCH TRACE SIZE...   (sizes in bytes)

MODEL_BENCH is the release build of `simulate/examples/model_bench.rs`
(`cargo build --release -p edgebox-simulate --example model_bench`). Needs `libcachesim`
(pip) in the running interpreter.
"""

import subprocess
import sys
import time

import libcachesim as lcs

# edgebox policy -> (libCacheSim name, constructor). S3-FIFO: edgebox moves an object to
# main after one hit in the small FIFO; libCacheSim's default asks for two, so it is given
# the same threshold. TinyUFO (pingora's crate) is compared with libCacheSim's W-TinyLFU,
# the nearest policy it has: not the same algorithm.
PAIRS = {
    "lru": ("LRU", lambda size: lcs.LRU(cache_size=size)),
    "s3fifo": ("S3FIFO(move_to_main_threshold=1)",
               lambda size: lcs.S3FIFO(cache_size=size, move_to_main_threshold=1)),
    "sieve": ("Sieve", lambda size: lcs.Sieve(cache_size=size)),
    "tinyufo": ("WTinyLFU", lambda size: lcs.WTinyLFU(cache_size=size)),
}


def human(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


def main() -> None:
    model_bench, trace, sizes = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]]
    started = time.perf_counter()
    output = subprocess.run(
        [model_bench, trace, *map(str, sizes)], check=True, capture_output=True, text=True
    ).stdout
    edgebox_seconds = time.perf_counter() - started
    ours, model = {}, []
    for line in output.splitlines()[1:]:
        kind, policy, size, requests, miss, byte_miss, wall, cpu, rate = line.split("\t")
        row = (float(miss), float(byte_miss), float(cpu), float(rate))
        if kind == "policy":
            ours[(policy, int(size))] = row
        else:
            model.append((policy, int(size), row))
    theirs = {}
    for policy, (_, make) in PAIRS.items():
        for size in sizes:
            reader = lcs.TraceReader(trace=trace, trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE)
            cache = make(size)
            begun = time.perf_counter()
            miss, byte_miss = cache.process_trace(reader)
            theirs[(policy, size)] = (miss, byte_miss, time.perf_counter() - begun)
            print(f"libcachesim {policy} {human(size)}: {miss:.4f}", file=sys.stderr, flush=True)

    print("## Miss ratios, edgebox vs libCacheSim (request miss ratio / byte miss ratio)\n")
    print("| edgebox policy | libCacheSim policy | L1 size | edgebox | libCacheSim | difference |")
    print("|---|---|---:|---:|---:|---:|")
    for policy, (their_name, _) in PAIRS.items():
        for size in sizes:
            if (policy, size) not in ours:
                continue
            miss, byte_miss, _, _ = ours[(policy, size)]
            their_miss, their_byte_miss, _ = theirs[(policy, size)]
            print(
                f"| {policy} | {their_name} | {human(size)} | {miss:.4f} / {byte_miss:.4f} "
                f"| {their_miss:.4f} / {their_byte_miss:.4f} "
                f"| {abs(miss - their_miss) * 100:.2f} pp |"
            )
    print("\n## Speed (requests per CPU-second of the replaying thread)\n")
    print("| run | L1 size | " + " | ".join(PAIRS) + " |")
    print("|---|---:|" + "---:|" * len(PAIRS))
    for size in sizes:
        cells = [
            f"{ours[(p, size)][3] / 1e6:.2f} M" if (p, size) in ours else "" for p in PAIRS
        ]
        print(f"| policy alone | {human(size)} | " + " | ".join(cells) + " |")
    for size in sorted({size for _, size, _ in model}):
        cells = []
        for p in PAIRS:
            found = [row for policy, s, row in model if policy == p and s == size]
            cells.append(f"**{found[0][3] / 1e6:.2f} M**" if found else "")
        print(f"| **model mode**, single tier | {human(size)} | " + " | ".join(cells) + " |")
    print("\n| libCacheSim wall seconds | L1 size | " + " | ".join(PAIRS) + " |")
    print("|---|---:|" + "---:|" * len(PAIRS))
    for size in sizes:
        cells = [f"{theirs[(p, size)][2]:.1f}" for p in PAIRS]
        print(f"| process_trace | {human(size)} | " + " | ".join(cells) + " |")
    print(f"\nedgebox model_bench wall: {edgebox_seconds:.0f} s")


if __name__ == "__main__":
    main()
