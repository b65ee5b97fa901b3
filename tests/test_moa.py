"""MoA layers: layer i+1 sees exactly layer i; the aggregator sees exactly the last layer."""

from __future__ import annotations

import re

from helpers import QUESTION, ask, by_role, system_text
from langgraph.checkpoint.memory import InMemorySaver

from selfmoa import create_moa
from selfmoa.testing import FakeChatModel


def references_in(call) -> list[str]:
    """The numbered references of a call's system message, in order."""
    return [m.strip() for m in re.split(r"\[Response \d+\]\n", system_text(call))[1:]]


def test_each_layer_sees_exactly_the_previous_layer():
    a, b, c = FakeChatModel(model="a"), FakeChatModel(model="b"), FakeChatModel(model="c")
    out = create_moa([[a, b, c], [a, b], [c]], aggregator=a).compile().invoke(ask())
    by_layer = {n: [p for p in out["proposals"] if p["layer"] == n] for n in (1, 2, 3)}
    assert [len(v) for v in by_layer.values()] == [3, 2, 1]
    assert [p["model"] for p in by_layer[1]] == ["a", "b", "c"]

    calls = [call for m in (a, b, c) for call in by_role(m, "proposer")]
    for call in calls:
        layer = call.metadata["selfmoa_layer"]
        if layer == 1:
            assert call.prompt == QUESTION and system_text(call) == ""
        else:
            assert references_in(call) == [p["text"] for p in by_layer[layer - 1]]
            assert call.messages[-1].text == QUESTION
    aggregator = by_role(a, "aggregator")
    assert len(aggregator) == 1
    assert references_in(aggregator[0]) == [p["text"] for p in by_layer[3]]


def test_layer_outputs_are_reset_between_layers():
    a = FakeChatModel(model="a")
    graph = create_moa([[a] * 4, [a] * 4, [a] * 4], aggregator=a).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke(ask(), config)
    # In every checkpoint, the per-layer lists hold one layer at most (no quadratic growth).
    history = list(graph.get_state_history(config))
    assert len(history) > 6
    assert max(len(s.values.get("references", [])) for s in history) == 4
    assert max(len(s.values.get("pending", [])) for s in history) == 4
    assert len(history[0].values["proposals"]) == 12
    later = [c for c in by_role(a, "proposer") if c.metadata["selfmoa_layer"] > 1]
    assert len(later) == 8 and all(len(references_in(c)) == 4 for c in later)


def test_moa_calls_count_and_parallel_layers():
    models = [FakeChatModel(model=f"m{i}", latency=0.05) for i in range(3)]
    out = create_moa([models, models], aggregator=models[0]).compile().invoke(ask())
    assert out["usage"]["total"]["calls"] == 3 + 3 + 1
    assert sorted(out["usage"]["by_model"]) == ["m0", "m1", "m2"]
    assert out["usage"]["by_model"]["m0"]["calls"] == 3
    assert all(m.peak_concurrency == 1 for m in models)  # one call per model per layer...
    assert len({c.metadata["langgraph_step"] for m in models for c in by_role(m, "proposer")}) == 2


def test_same_model_repeated_in_a_layer_gets_one_label():
    a = FakeChatModel(model="a")
    out = create_moa([[a, a]], aggregator=a).compile().invoke(ask())
    assert [p["model"] for p in out["proposals"]] == ["a", "a"]


def test_distinct_instances_with_one_name_get_distinct_labels():
    a1, a2 = FakeChatModel(model="a"), FakeChatModel(model="a")
    out = create_moa([[a1, a2]], aggregator=a1).compile().invoke(ask())
    assert [p["model"] for p in out["proposals"]] == ["a", "a#2"]
    assert len(a1.calls) == 2 and len(a2.calls) == 1


def test_n_sampling_short_of_choices_in_a_later_layer_draws_the_rest_with_the_references():
    from selfmoa import create_from_spec

    model = FakeChatModel(max_n=1)
    spec = {"layers": [[{"model": model, "samples": 3}], [{"model": model, "samples": 2}]], "sampling": "n", "seed": 3}
    out = create_from_spec(spec).compile().invoke(ask())
    assert [(p["layer"], p["sample"], p["error"]) for p in out["proposals"]] == [
        (1, 0, None), (1, 1, None), (1, 2, None), (2, 0, None), (2, 1, None)
    ]
    layer2 = [c for c in by_role(model, "proposer") if c.metadata["selfmoa_layer"] == 2]
    assert sorted(c.seed for c in layer2) == [6, 7]
    assert all(system_text(c).count("[Response ") == 3 for c in layer2), "the late sample sees layer 1's answers too"
