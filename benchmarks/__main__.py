"""Run the benchmarks: `python -m benchmarks [--only P1,P2,...]` from the repository root.

Each benchmark runs in its own process (python -m benchmarks.<module>), prints its figures
and its ratio last, and exits non-zero when it misses its target; this command exits
non-zero when any of them does. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

BENCHMARKS = {
    "P1": ("p1_critical_path", "critical path vs model latencies (fake model, L = 0.2 s)"),
    "P2": ("p2_overhead", "overhead vs a bare LangGraph graph and asyncio.gather (zero latency)"),
    "P3": ("p3_batch", "500 prompts x Self-MoA(6), 64 calls in flight: (a) 100 ms vs a bare graph, (b) 1 s vs ideal"),
    "P4": ("p4_seq_scale", "Self-MoA-Seq N = 10, 100, 1000: prompt size, checkpoint bytes, wall time"),
    "P5": ("p5_local_model", "embedded model: 6 concurrent vs 6 sequential requests"),
    "P6": ("p6_adaptive", "adaptive sampling: run vs (batches drawn + 1) model latencies (fake model, L = 0.2 s)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Run the selfmoa benchmarks.")
    parser.add_argument("--only", help="comma-separated subset, e.g. P1,P3 (default: all)")
    args = parser.parse_args(argv)
    chosen = [b.strip().upper() for b in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = [b for b in chosen if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]}; choose from {', '.join(BENCHMARKS)}")
    results = {}
    for name in chosen:
        module, what = BENCHMARKS[name]
        print(f"== {name}: {what}", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{module}"])
        results[name] = code
        print(f"== {name}: {'PASS' if code == 0 else 'FAIL'} ({time.perf_counter() - started:.0f}s)\n", flush=True)
    print("summary: " + ", ".join(f"{n} {'PASS' if c == 0 else 'FAIL'}" for n, c in results.items()))
    return 1 if any(results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
