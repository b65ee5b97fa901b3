"""P2 overhead: with zero-latency calls, what selfmoa's graph costs over a bare LangGraph graph.

Three implementations of Self-MoA k=6 make the same 7 calls of the same fake model (zero
latency), so the difference is framework overhead only:
- selfmoa: `create_self_moa(model, samples=6)` (plan, records, usage, retries, quorum);
- bare LangGraph: `Send` fan-out to a node that calls the model, then one aggregate node;
- plain asyncio.gather of the 6 calls, then the aggregate call.
Runs are interleaved and the medians compared. Target: selfmoa <= 1.5x the bare graph.

Run: python -m benchmarks.p2_overhead [--iterations 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import operator
from typing import Annotated

from langchain_core.messages import AnyMessage, HumanMessage, SystemMessage
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Send
from typing_extensions import TypedDict

from benchmarks._common import atime, finish, median, verdict
from selfmoa import CallLimiter, create_self_moa
from selfmoa.testing import FakeChatModel

K = 6


class BareState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    answers: Annotated[list[str], operator.add]
    answer: str


def bare_graph(model: FakeChatModel, limiter: CallLimiter | None = None):
    """The same Self-MoA shape in plain LangGraph (P3 reuses it, with the shared limiter)."""
    gate = limiter if limiter is not None else contextlib.nullcontext()

    async def propose(task: dict) -> dict:
        async with gate:
            reply = await model.ainvoke(task["messages"], temperature=0.7, seed=task["sample"])
        return {"answers": [reply.text]}

    async def aggregate(state: BareState) -> dict:
        system = SystemMessage("Synthesize:\n" + "\n".join(state["answers"]))
        async with gate:
            reply = await model.ainvoke([system, *state["messages"]], temperature=0.0)
        return {"answer": reply.text}

    def fan_out(state: BareState) -> list[Send]:
        return [Send("propose", {"messages": state["messages"], "sample": i}) for i in range(K)]

    graph = StateGraph(BareState)
    graph.add_node("propose", propose)
    graph.add_node("aggregate", aggregate)
    graph.add_conditional_edges(START, fan_out, ["propose"])
    graph.add_edge("propose", "aggregate")
    return graph.compile()


async def gathered(model: FakeChatModel, messages: list) -> str:
    replies = await asyncio.gather(*(model.ainvoke(messages, temperature=0.7, seed=i) for i in range(K)))
    system = SystemMessage("Synthesize:\n" + "\n".join(r.text for r in replies))
    return (await model.ainvoke([system, *messages], temperature=0.0)).text


def public_wrapper_graph(model: FakeChatModel):
    """The same Self-MoA graph with its nodes wrapped by LangGraph's public API only (the fallback of
    `selfmoa.nodes.calls.node` for a LangGraph without its private `RunnableCallable`)."""
    import selfmoa.nodes.calls as calls

    private, calls.RunnableCallable = calls.RunnableCallable, None
    try:
        return create_self_moa(model, samples=K).compile()
    finally:
        calls.RunnableCallable = private


async def main(iterations: int) -> list[int]:
    model = FakeChatModel(latency=0.0)
    selfmoa = create_self_moa(model, samples=K).compile()
    public = public_wrapper_graph(model)
    bare = bare_graph(model)
    question = [HumanMessage("What is 17*3?")]
    impls = {
        "selfmoa graph": lambda: selfmoa.ainvoke({"messages": question}),
        "selfmoa graph, public node wrappers": lambda: public.ainvoke({"messages": question}),
        "bare LangGraph graph": lambda: bare.ainvoke({"messages": question}),
        "asyncio.gather": lambda: gathered(model, question),
    }
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(20):  # warm up
        for call in impls.values():
            await call()
    for _ in range(iterations):
        for name, call in impls.items():
            times[name].append(await atime(call))
    medians = {name: median(t) for name, t in times.items()}
    for name, m in medians.items():
        print(f"{name}: median {m * 1000:.2f} ms per run of 7 calls ({iterations} runs)")
    base = medians["asyncio.gather"]
    print(f"bare graph / asyncio.gather: {medians['bare LangGraph graph'] / base:.2f}x; "
          f"selfmoa / asyncio.gather: {medians['selfmoa graph'] / base:.2f}x")
    public_ratio = medians["selfmoa graph, public node wrappers"] / medians["bare LangGraph graph"]
    print(f"with the public node wrappers only (LangGraph's private RunnableCallable not used): "
          f"{public_ratio:.3f} of the bare graph")
    ratio = medians["selfmoa graph"] / medians["bare LangGraph graph"]
    return [verdict("P2 selfmoa / bare LangGraph graph", ratio, 1.5)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    finish(asyncio.run(main(args.iterations)))
