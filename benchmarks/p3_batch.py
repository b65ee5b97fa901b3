"""P3 batch: 500 prompts x Self-MoA(6) with 100 ms calls under one cap of 64 calls in flight.

All 500 graph runs share one `selfmoa.CallLimiter(64)`, so at most 64 model calls are in
flight at any time across all of them (as against an endpoint's rate limit). The ideal
throughput is 64 calls per 100 ms: 500 x 7 calls take at least 3500 x 0.1 / 64 s.
Target: >= 90 % of the ideal throughput, and the cap never exceeded.

Run: python -m benchmarks.p3_batch [--prompts 500] [--cap 64] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from benchmarks._common import finish, verdict
from benchmarks.p2_overhead import bare_graph
from selfmoa import CallLimiter, create_self_moa
from selfmoa.testing import FakeChatModel

K = 6


async def cpu_floor(prompts: int) -> float:
    """Seconds the same batch takes with instant calls and no cap: the CPU cost of the runs."""
    graph = create_self_moa(FakeChatModel(), samples=K).compile()
    started = time.perf_counter()
    await graph.abatch([{"messages": [("user", f"Question number {i}?")]} for i in range(prompts)])
    return time.perf_counter() - started


async def bare_ratio(prompts: int, cap: int, latency: float) -> float:
    """Throughput / ideal of the same batch on a bare LangGraph graph of the same shape (P2's)."""
    model = FakeChatModel(latency=latency)
    graph = bare_graph(model, CallLimiter(cap))
    started = time.perf_counter()
    await graph.abatch([{"messages": [("user", f"Question number {i}?")]} for i in range(prompts)])
    return len(model.calls) * latency / cap / (time.perf_counter() - started)


async def main(prompts: int, cap: int, latency: float) -> list[int]:
    floor = await cpu_floor(prompts)
    bare = await bare_ratio(prompts, cap, latency)
    model = FakeChatModel(latency=latency)
    limiter = CallLimiter(cap)
    graph = create_self_moa(model, samples=K, limiter=limiter).compile()
    inputs = [{"messages": [("user", f"Question number {i}?")]} for i in range(prompts)]
    started = time.perf_counter()
    results = await graph.abatch(inputs)
    wall = time.perf_counter() - started
    calls = len(model.calls)
    assert calls == prompts * (K + 1), calls
    assert all(r["answer"] for r in results)
    ideal = calls * latency / cap
    print(
        f"{prompts} prompts x Self-MoA({K}) = {calls} calls of {latency * 1000:g} ms, cap {cap} in flight: "
        f"{wall:.2f}s, ideal {ideal:.2f}s; {calls / wall:.0f} calls/s of an ideal {cap / latency:.0f}; "
        f"peak in flight {model.peak_concurrency}"
    )
    print(
        f"CPU floor: the same {prompts} runs with instant calls and no cap take {floor:.2f}s on one event loop "
        f"({floor / prompts * 1000:.1f} ms of LangGraph + selfmoa + fake-model work per run); the wall time "
        f"cannot go below max(ideal, CPU floor) = {max(ideal, floor):.2f}s"
    )
    print(
        f"The same batch on a bare LangGraph graph of the same shape (Send fan-out + aggregate node, the same "
        f"fake model and CallLimiter, no selfmoa): {bare:.3f} of the ideal, the ceiling of a LangGraph graph "
        "on this machine's event loop"
    )
    status = 0 if model.peak_concurrency <= cap else 1
    if status:
        print(f"P3: the cap was exceeded: {model.peak_concurrency} > {cap} calls in flight")
    return [status, verdict("P3 throughput / ideal", ideal / wall, 0.90, at_most=False)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--cap", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    finish(asyncio.run(main(args.prompts, args.cap, args.latency)))
