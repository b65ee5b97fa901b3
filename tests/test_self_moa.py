"""Self-MoA end to end on the fake model: semantics, usage, every way of running a graph."""

from __future__ import annotations

import asyncio

import pytest
from helpers import QUESTION, ask, by_role, system_text
from langchain_core.messages import AIMessage, HumanMessage

from selfmoa import create_self_moa
from selfmoa.testing import FakeChatModel, count_tokens


def test_samples_then_one_aggregation(fake):
    out = create_self_moa(fake, samples=6).compile().invoke(ask())
    proposers, aggregators = by_role(fake, "proposer"), by_role(fake, "aggregator")
    assert len(proposers) == 6 and len(aggregators) == 1
    assert sorted(c.sample for c in proposers) == list(range(6))
    assert {c.temperature for c in proposers} == {0.7}
    assert aggregators[0].temperature == 0.0
    # Proposers see the plain conversation; only the aggregator gets references.
    assert all(c.prompt == QUESTION for c in proposers)
    assert [p["sample"] for p in out["proposals"]] == list(range(6))
    assert len({p["text"] for p in out["proposals"]}) == 6, "samples at T=0.7 must differ"
    assert out["answer"] == aggregators[0].replies[0]


def test_aggregator_prompt_holds_every_proposal_in_order(fake):
    out = create_self_moa(fake, samples=5).compile().invoke(ask())
    system = system_text(by_role(fake, "aggregator")[0])
    positions = [system.index(f"[Response {i}]\n{p['text']}") for i, p in enumerate(out["proposals"], 1)]
    assert positions == sorted(positions)
    assert "[Response 6]" not in system


def test_output_messages_end_with_the_answer(fake):
    out = create_self_moa(fake, samples=2).compile().invoke(ask())
    assert [type(m) for m in out["messages"]] == [HumanMessage, AIMessage]
    assert out["messages"][-1].text == out["answer"]
    assert set(out) == {"messages", "answer", "proposals", "aggregations", "usage", "warnings", "agreement",
                        "abstained", "escalated"}
    # Two samples, each its own whole reply: they agree with the synthesis on nothing.
    assert out["agreement"] == {"share": None, "answer": " ".join(out["answer"].split()).casefold(),
                                "counts": {" ".join(p["text"].split()).casefold(): 1 for p in out["proposals"]},
                                "samples": 2}


def test_usage_is_the_sum_of_each_call(fake):
    out = create_self_moa(fake, samples=4).compile().invoke(ask())
    calls = fake.calls
    expected_in = sum(sum(count_tokens(m.text) for m in c.messages) for c in calls)
    expected_out = sum(count_tokens(c.replies[0]) for c in calls)
    total = out["usage"]["total"]
    assert (total["input_tokens"], total["output_tokens"], total["calls"]) == (expected_in, expected_out, 5)
    assert total["total_tokens"] == expected_in + expected_out
    assert out["usage"]["by_model"] == {"fake": total}
    assert sum(p["usage"]["output_tokens"] for p in out["proposals"]) + out["aggregations"][0]["usage"][
        "output_tokens"
    ] == expected_out


def test_separate_aggregator_model_and_usage_per_model():
    worker, judge = FakeChatModel(model="worker"), FakeChatModel(model="judge")
    out = create_self_moa(worker, samples=3, aggregator=judge).compile().invoke(ask())
    assert len(worker.calls) == 3 and len(judge.calls) == 1
    assert out["usage"]["by_model"]["worker"]["calls"] == 3
    assert out["usage"]["by_model"]["judge"]["calls"] == 1
    assert out["aggregations"][0]["model"] == "judge"


def test_seed_makes_runs_reproducible_and_distinct():
    def run(seed):
        return create_self_moa(FakeChatModel(), samples=3, seed=seed).compile().invoke(ask())

    a, b, c = run(7), run(7), run(8)
    assert [p["text"] for p in a["proposals"]] == [p["text"] for p in b["proposals"]]
    assert [p["text"] for p in a["proposals"]] != [p["text"] for p in c["proposals"]]


def test_temperature_zero_gives_identical_samples_not_padding(fake):
    out = create_self_moa(fake, samples=3, temperature=0.0).compile().invoke(ask())
    # Three real calls were made (no copies), and greedy decoding makes them agree.
    assert len(by_role(fake, "proposer")) == 3
    assert len({p["text"] for p in out["proposals"]}) == 1


@pytest.mark.parametrize("runner", ["invoke", "ainvoke", "stream", "astream", "batch", "abatch"])
def test_every_way_of_running_gives_the_same_answer_in_parallel(runner):
    # Long enough that all six calls overlap even on a busy 2-core machine.
    model = FakeChatModel(latency=0.3)
    graph = create_self_moa(model, samples=6).compile()
    expected = create_self_moa(FakeChatModel(), samples=6).compile().invoke(ask())["answer"]

    if runner == "invoke":
        answer = graph.invoke(ask())["answer"]
    elif runner == "ainvoke":
        answer = asyncio.run(graph.ainvoke(ask()))["answer"]
    elif runner == "stream":
        answer = [c for c in graph.stream(ask(), stream_mode="values")][-1]["answer"]
    elif runner == "astream":

        async def last():
            return [c async for c in graph.astream(ask(), stream_mode="values")][-1]

        answer = asyncio.run(last())["answer"]
    elif runner == "batch":
        answers = [o["answer"] for o in graph.batch([ask(), ask()])]
        assert answers[0] == answers[1]
        answer = answers[0]
    else:
        answers = [o["answer"] for o in asyncio.run(graph.abatch([ask(), ask()]))]
        assert answers[0] == answers[1]
        answer = answers[0]
    assert answer == expected
    assert model.peak_concurrency >= 6, "the six proposals must run at the same time"


def test_max_concurrency_caps_parallel_calls():
    model = FakeChatModel(latency=0.02)
    create_self_moa(model, samples=6).compile().invoke(ask(), {"max_concurrency": 2})
    assert model.peak_concurrency == 2


def test_updates_stream_shows_each_proposal_as_it_lands(fake):
    graph = create_self_moa(fake, samples=4).compile()
    updates = list(graph.stream(ask(), stream_mode="updates"))
    proposal_updates = [u["propose"]["proposals"][0] for u in updates if "propose" in u]
    assert sorted(p["sample"] for p in proposal_updates) == [0, 1, 2, 3]
    nodes = [next(iter(u)) for u in updates]
    assert nodes.index("aggregate") > max(i for i, n in enumerate(nodes) if n == "propose")


def test_messages_stream_yields_only_the_final_answer_tokens(fake):
    graph = create_self_moa(fake, samples=3).compile()
    chunks, final = [], None
    for mode, part in graph.stream(ask(), stream_mode=["messages", "values"]):
        if mode == "messages":
            chunks.append(part)
        else:
            final = part
    assert chunks, "the aggregator's tokens must stream"
    assert {meta["langgraph_node"] for _, meta in chunks} == {"aggregate"}
    streamed = "".join(msg.content for msg, _ in chunks if msg.content and msg.id == final["messages"][-1].id)
    assert streamed == final["answer"]
    assert final["usage"]["total"]["calls"] == 4


def test_custom_events_mark_layer_boundaries():
    model = FakeChatModel(fail_samples={1})
    events = [
        e for e in create_self_moa(model, samples=3, retry_delay=0).compile().stream(ask(), stream_mode="custom")
    ]
    assert events[0] == {"selfmoa": "layer", "layer": 1, "succeeded": 2, "failed": 1}
    assert [e["selfmoa"] for e in events] == ["layer", "agreement"] and events[1]["samples"] == 2


def test_model_string_is_resolved_lazily_via_registered_provider(providers):
    made = []

    def factory(name):
        made.append(name)
        return FakeChatModel(model=name or "fake")

    providers(fakeprov=factory)
    graph = create_self_moa("fakeprov:alpha", samples=2).compile()
    assert made == [], "building a graph must not create a client"
    out = graph.invoke(ask())
    assert made == ["alpha"]
    assert {p["model"] for p in out["proposals"]} == {"fakeprov:alpha"}
    assert out["answer"].startswith("alpha answer")


def test_model_providers_are_scoped_and_restore_what_they_replaced():
    from selfmoa import ModelResolutionError, model_providers, register_model_provider, unregister_model_provider
    from selfmoa.runtime.models import resolve_model

    with model_providers({"scoped": lambda name, **kw: FakeChatModel(model="outer")}):
        assert resolve_model("scoped:x").model == "outer"
        with model_providers({"scoped": lambda name, **kw: FakeChatModel(model="inner")}):
            assert resolve_model("scoped:x").model == "inner", "a model resolved by the replaced provider is not reused"
        assert resolve_model("scoped:x").model == "outer"
    with pytest.raises(ModelResolutionError, match="'scoped:x'"):
        resolve_model("scoped:x")  # no provider any more: LangChain's init_chat_model does not know it
    register_model_provider("gone", lambda name, **kw: FakeChatModel(model="gone"))
    assert resolve_model("gone:x").model == "gone"
    unregister_model_provider("gone")
    with pytest.raises(ModelResolutionError, match="'gone:x'"):
        resolve_model("gone:x")
