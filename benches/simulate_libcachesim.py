"""Miss ratios of libCacheSim (PyPI `libcachesim`) on an oracleGeneral trace, for the
comparison in benches/results/simulate.md.

    python benches/simulate_libcachesim.py TRACE SIZE...   (sizes in bytes)

Prints one tab-separated line per policy and size: the same columns as
`cargo run --release -p edgebox-simulate --example model_bench`.
"""

import sys
import time

import libcachesim as lcs


def main() -> None:
    trace, sizes = sys.argv[1], [int(size) for size in sys.argv[2:]]
    policies = {
        "lru": lambda size: lcs.LRU(cache_size=size),
        # libCacheSim's default moves an object to main after 2 hits in the small FIFO;
        # edgebox-cache-model moves it after 1, so both settings are shown.
        "s3fifo": lambda size: lcs.S3FIFO(cache_size=size, move_to_main_threshold=1),
        "s3fifo(t=2)": lambda size: lcs.S3FIFO(cache_size=size),
        "sieve": lambda size: lcs.Sieve(cache_size=size),
        "wtinylfu": lambda size: lcs.WTinyLFU(cache_size=size),
    }
    print("kind\tpolicy\tsize\tmiss_ratio\tbyte_miss_ratio\tseconds")
    for name, make in policies.items():
        for size in sizes:
            reader = lcs.TraceReader(trace=trace, trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE)
            cache = make(size)
            started = time.perf_counter()
            miss_ratio, byte_miss_ratio = cache.process_trace(reader)
            seconds = time.perf_counter() - started
            print(f"libcachesim\t{name}\t{size}\t{miss_ratio:.4f}\t{byte_miss_ratio:.4f}\t{seconds:.2f}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
