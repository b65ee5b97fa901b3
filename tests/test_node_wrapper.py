"""The node wrapper's fallback onto LangGraph's public API, for a LangGraph that moves its private helper."""

from __future__ import annotations

import asyncio

import pytest

import selfmoa.nodes.calls as calls
from selfmoa import create_self_moa, create_self_moa_seq
from selfmoa.testing import FakeChatModel


@pytest.mark.parametrize("factory", [lambda m: create_self_moa(m, samples=3), lambda m: create_self_moa_seq(m, samples=7)])
def test_graphs_built_on_the_public_fallback_give_the_same_runs(monkeypatch, factory):
    ask = {"messages": [("user", "What is 17*3?")]}
    private = factory(FakeChatModel()).compile()
    monkeypatch.setattr(calls, "RunnableCallable", None)
    public = factory(FakeChatModel()).compile()
    assert type(public.builder.nodes["propose"].runnable).__name__ == "RunnableLambda"
    assert type(private.builder.nodes["collect"].runnable).__name__ == "RunnableCallable"
    for graph in (private, public):
        sync, async_ = graph.invoke(ask), asyncio.run(graph.ainvoke(ask))
        assert sync["answer"] == async_["answer"] and sync["usage"]["total"] == async_["usage"]["total"]
    assert public.invoke(ask)["answer"] == private.invoke(ask)["answer"]
    texts = [[a["text"] for a in g.invoke(ask)["aggregations"]] for g in (private, public)]
    assert texts[0] == texts[1] and len(texts[0]) >= 1
