"""The shared call limiter: a cap on model calls in flight across graphs and runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time

import pytest
from helpers import ask
from langgraph.checkpoint.memory import InMemorySaver

from selfmoa import (
    CallLimiter,
    MoASpec,
    create_moa,
    create_self_moa,
    create_self_moa_seq,
)
from selfmoa.testing import FakeChatModel

# --- the shared call limiter -------------------------------------------------------------------


def test_limiter_caps_calls_across_concurrent_sync_runs_of_several_graphs():
    model = FakeChatModel(latency=0.03)
    limiter = CallLimiter(3)
    graphs = [
        create_self_moa(model, samples=5, limiter=limiter).compile(),
        create_self_moa_seq(model, samples=7, window=4, reserved=2, limiter=limiter).compile(),
        create_moa([[model, model, model]] * 2, aggregator=model, limiter=limiter).compile(),
    ]
    results: list = []
    threads = [threading.Thread(target=lambda g=g: results.extend(g.batch([ask(), ask("Other?")]))) for g in graphs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and all(r["answer"] for r in results)
    assert model.peak_concurrency == 3
    assert limiter.in_flight == 0


async def test_limiter_caps_calls_across_concurrent_async_runs():
    model = FakeChatModel(latency=0.02)
    limiter = CallLimiter(4)
    one = create_self_moa(model, samples=6, limiter=limiter).compile()
    two = create_self_moa_seq(model, samples=9, window=4, reserved=2, limiter=limiter).compile()
    results = await asyncio.gather(one.abatch([ask()] * 5), two.abatch([ask()] * 3))
    assert sum(len(r) for r in results) == 8
    assert model.peak_concurrency == 4 and limiter.in_flight == 0


async def test_limiter_is_shared_between_event_loops_and_threads():
    model = FakeChatModel(latency=0.02)
    limiter = CallLimiter(2)
    graph = create_self_moa(model, samples=4, limiter=limiter).compile()
    thread = threading.Thread(target=lambda: asyncio.run(graph.ainvoke(ask())))
    thread.start()
    await asyncio.gather(graph.ainvoke(ask()), asyncio.to_thread(graph.invoke, ask()))
    thread.join()
    assert model.peak_concurrency == 2 and limiter.in_flight == 0


def test_limiter_slots_come_back_after_failures_retries_and_timeouts():
    limiter = CallLimiter(2)
    flaky = FakeChatModel(fail_rate=0.5)
    graph = create_self_moa(flaky, samples=6, aggregator=FakeChatModel(), retry_delay=0, limiter=limiter).compile()
    graph.invoke(ask())
    hanging = FakeChatModel(latency=0.5)
    graph = create_self_moa(hanging, samples=2, max_attempts=1, timeout=0.05, limiter=limiter).compile()
    with pytest.raises(Exception, match="took longer than"):
        graph.invoke(ask())
    # An abandoned call holds its slot until its thread ends, then gives it back.
    deadline = time.monotonic() + 5
    while limiter.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert limiter.in_flight == 0


@pytest.mark.parametrize("run", ["invoke", "ainvoke"])
async def test_calls_in_flight_never_exceed_the_cap_when_calls_time_out(run):
    # Each attempt times out and is retried; the abandoned calls keep loading the endpoint,
    # so a retry may start only once one of them has ended: the cap counts them too.
    slow = FakeChatModel(latency=0.3)
    limiter = CallLimiter(2)
    graph = create_self_moa(slow, samples=4, max_attempts=3, retry_delay=0, timeout=0.05, limiter=limiter,
                            min_proposals=1).compile()
    with pytest.raises(Exception, match="took longer than"):
        if run == "invoke":
            await asyncio.to_thread(graph.invoke, ask())
        else:
            await graph.ainvoke(ask())
    assert len(slow.calls) >= 3 and slow.peak_concurrency <= limiter.limit


async def test_a_cancelled_waiter_gives_no_slot_away():
    limiter = CallLimiter(1)
    await limiter.aacquire()
    waiter = asyncio.ensure_future(limiter.aacquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    limiter.release()  # hands the slot to the cancelled waiter, which must pass it on
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.01)
    assert limiter.in_flight == 0
    await asyncio.wait_for(limiter.aacquire(), 1)
    limiter.release()


async def test_a_waiter_cancelled_after_its_grant_gives_the_slot_back():
    limiter = CallLimiter(1)
    await limiter.aacquire()
    waiter = asyncio.ensure_future(limiter.aacquire())
    await asyncio.sleep(0.01)
    limiter.release()  # on the waiter's own loop the slot is handed over at once
    assert limiter.in_flight == 1
    waiter.cancel()  # before the waiter ran again: the slot it was given must come back
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    assert limiter.in_flight == 0
    await asyncio.wait_for(limiter.aacquire(), 1)
    limiter.release()


def test_limiter_stays_out_of_dumps_state_and_checkpoints():
    limiter = CallLimiter(2)
    spec = MoASpec(layers=[[{"model": "openai:m", "samples": 2}]], limiter=limiter)
    assert "limiter" not in spec.model_dump() and "limiter" not in json.loads(spec.model_dump_json())
    saver = InMemorySaver()
    graph = create_self_moa(FakeChatModel(), samples=2, limiter=limiter).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke(ask(), config)
    assert "CallLimiter" not in repr(graph.get_state(config).values)
    assert b"CallLimiter" not in b"".join(blob for _, blob in saver.blobs.values() if isinstance(blob, bytes))


