"""P1 critical path: the graphs add (almost) nothing to the unavoidable model latencies.

With every call taking L seconds (the fake model sleeps), the shortest possible run is:
Self-MoA k=6: 2 L (samples in parallel, then the aggregator); MoA 3 layers x 6: 4 L;
Self-MoA-Seq N=30, W=6, R=3, pipelined: (rounds + 1) L, rounds = number of sample batches
(the window step over a batch runs while the next batch is drawn). Also shown: a sequential
implementation (proposers one after another, as the reference MoA evaluation script) on
the same setting.

Run: python -m benchmarks.p1_critical_path [--latency 0.2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio

from langchain_core.messages import HumanMessage, SystemMessage

from benchmarks._common import atime, finish, median, verdict
from selfmoa import create_moa, create_self_moa, create_self_moa_seq
from selfmoa.nodes.schedule import window_calls
from selfmoa.testing import FakeChatModel

QUESTION = {"messages": [("user", "What is 17*3?")]}


async def sequential(model: FakeChatModel, layers: list[int], windows: int | None = None) -> None:
    """The reference-script way: every proposer call awaited before the next one starts."""
    refs: list[str] = []
    for size in layers:
        out = []
        for _ in range(size):
            prompt = [SystemMessage("\n".join(refs))] if refs else []
            out.append((await model.ainvoke([*prompt, HumanMessage("What is 17*3?")])).text)
        refs = out
    for _ in range(windows or 1):
        await model.ainvoke([SystemMessage("\n".join(refs)), HumanMessage("What is 17*3?")])


async def main(latency: float, repeats: int) -> list[int]:
    model = FakeChatModel(latency=latency)
    rounds = window_calls(30, 6, 3)
    cases = [
        ("Self-MoA k=6", create_self_moa(model, samples=6), 2, ([6], None), 1.05),
        ("MoA 3x6", create_moa([[model] * 6] * 3, aggregator=model), 4, ([6, 6, 6], None), 1.05),
        (
            f"Self-MoA-Seq N=30 W=6 R=3 ({rounds} rounds)",
            create_self_moa_seq(model, samples=30, window=6, reserved=3),
            rounds + 1,
            ([30], rounds),
            1.10,
        ),
    ]
    statuses = []
    for name, graph, latencies, (layers, windows), target in cases:
        app = graph.compile()
        await app.ainvoke(QUESTION)  # warm up
        runs = [await atime(lambda app=app: app.ainvoke(QUESTION)) for _ in range(repeats)]
        seq = await atime(lambda layers=layers, windows=windows: sequential(model, layers, windows))
        ideal = latencies * latency
        wall = median(runs)
        print(
            f"{name}: graph {wall:.3f}s (median of {repeats}), ideal {latencies} L = {ideal:.3f}s, "
            f"overhead {(wall - ideal) * 1000:.0f} ms, "
            f"sequential implementation {seq:.3f}s = {seq / latency:.1f} L ({seq / wall:.1f}x slower than the graph)"
        )
        statuses.append(verdict(f"P1 {name}", wall / ideal, target, what="graph / ideal"))
    return statuses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    finish(asyncio.run(main(args.latency, args.repeats)))
