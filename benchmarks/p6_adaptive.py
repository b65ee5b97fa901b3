"""P6 adaptive sampling: drawing in batches until the samples agree keeps the critical path short.

With every call taking L seconds (the fake model sleeps), an adaptive Self-MoA run that draws
B batches and then aggregates in one call cannot finish before (B + 1) L: the batches are drawn
one after another (each decides whether the next is needed) and the aggregation follows. The
run's own bookkeeping (collect after each batch, the rule, finish) should add almost nothing.
Two cases: samples that agree at once (1 batch of 2, then `synthesize`: 2 L) and samples that
agree only after 3 batches (6 samples, then `synthesize`: 4 L).

Run: python -m benchmarks.p6_adaptive [--latency 0.2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio

from benchmarks._common import atime, finish, median, verdict
from selfmoa import create_self_moa
from selfmoa.testing import FakeCall, FakeChatModel

QUESTION = {"messages": [("user", "What is 17*3?")]}


def late_agreement(call: FakeCall) -> str:
    # Samples 0-3 split 2:2 (no lead); samples 4-5 side with 51: the lead reaches 2 after batch 3.
    return "Answer: 51" if call.sample in (0, 2, 4, 5) else "Answer: 50"


async def main(latency: float, repeats: int) -> list[int]:
    cases = [
        ("agree at once", FakeChatModel(latency=latency, reply=lambda call: "Answer: 51"), 1),
        ("agree after 3 batches", FakeChatModel(latency=latency, reply=late_agreement), 3),
    ]
    statuses = []
    for name, model, batches in cases:
        app = create_self_moa(model, samples=8, answer_of="number", adaptive={"batch": 2, "margin": 2}).compile()
        first = await app.ainvoke(QUESTION)  # warm up, and check the case draws what it says
        drawn = len(first["proposals"])
        assert drawn == 2 * batches and first["stopped"] == "agreed", (name, drawn, first["stopped"])
        wall = median([await atime(lambda app=app: app.ainvoke(QUESTION)) for _ in range(repeats)])
        ideal = (batches + 1) * latency
        print(f"adaptive Self-MoA, {name}: {drawn} of 8 samples in {batches} batches, then one synthesis: "
              f"{wall:.3f}s (median of {repeats}), ideal ({batches} + 1) L = {ideal:.3f}s, "
              f"overhead {(wall - ideal) * 1000:.0f} ms")
        statuses.append(verdict(f"P6 {name}", wall / ideal, 1.05, what="run / (batches + 1) L"))
    return statuses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    finish(asyncio.run(main(args.latency, args.repeats)))
