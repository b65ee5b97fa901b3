"""Runs checkpointed with InMemorySaver and SQLite, read back through the state history."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from helpers import ask
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from selfmoa import create_self_moa, create_self_moa_seq
from selfmoa.testing import FakeChatModel


def check_history(graph, config, samples):
    history = list(graph.get_state_history(config))
    latest = history[0].values
    assert len(latest["proposals"]) == samples and latest["answer"]
    assert latest["messages"][-1].text == latest["answer"]
    # Oldest first: proposals only ever accumulate, one superstep at a time.
    counts = [len(s.values.get("proposals", [])) for s in reversed(history)]
    assert counts == sorted(counts) and counts[-1] == samples
    nodes = [n for s in reversed(history) for n in s.next]
    assert nodes.count("propose") >= 1 and "aggregate" in nodes
    return history


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_self_moa_checkpointed_and_read_back(kind, tmp_path):
    saver = InMemorySaver() if kind == "memory" else SqliteSaver(sqlite3.connect(tmp_path / "c.db", check_same_thread=False))
    graph = create_self_moa(FakeChatModel(), samples=5).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t1"}}
    out = graph.invoke(ask(), config)
    history = check_history(graph, config, 5)
    assert history[0].values["answer"] == out["answer"]


def test_seq_checkpointed_in_sqlite_async(tmp_path):
    async def run():
        async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "a.db")) as saver:
            graph = create_self_moa_seq(FakeChatModel(), samples=12).compile(checkpointer=saver)
            config = {"configurable": {"thread_id": "seq"}}
            out = await graph.ainvoke(ask(), config)
            history = [s async for s in graph.aget_state_history(config)]
            return out, history

    out, history = asyncio.run(run())
    assert [a["sample_ids"] for a in history[0].values["aggregations"]] == [list(range(6)), [6, 7, 8], [9, 10, 11]]
    assert history[0].values["answer"] == out["answer"]
    assert len(history) > 8


def test_second_turn_on_a_thread_starts_a_fresh_run():
    model = FakeChatModel()
    graph = create_self_moa(model, samples=3).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "chat"}}
    first = graph.invoke(ask("First question?"), config)
    second = graph.invoke(ask("Second question?"), config)
    assert len(second["proposals"]) == 3, "proposals of the first turn are not carried over"
    assert second["usage"]["total"]["calls"] == 4
    assert [m.type for m in second["messages"]] == ["human", "ai", "human", "ai"]
    assert second["answer"] != first["answer"]
    # The second turn's proposers see the whole conversation.
    last_call = [c for c in model.calls if c.role == "proposer"][-1]
    assert [m.text for m in last_call.messages][:2] == ["First question?", first["answer"]]


def test_checkpoint_holds_labels_not_model_clients(tmp_path):
    saver = SqliteSaver(sqlite3.connect(tmp_path / "c.db", check_same_thread=False))
    secret = "sk-test-should-never-be-stored"
    model = FakeChatModel(model="worker", metadata={"api_key": secret})
    graph = create_self_moa(model, samples=2).compile(checkpointer=saver)
    graph.invoke(ask(), {"configurable": {"thread_id": "s"}})
    raw = b"".join(
        bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode()
        for table in ("checkpoints", "writes")
        for row in saver.conn.execute(f"select * from {table}")
        for v in row
        if v is not None
    )
    assert b"worker" in raw and secret.encode() not in raw and b"FakeChatModel" not in raw
