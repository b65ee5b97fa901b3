"""Per-run settings through LangGraph's run context (what Studio edits per run)."""

from __future__ import annotations

import pytest
from helpers import ask, by_role, system_text

from selfmoa import EnsembleContext, SpecError, create_self_moa, create_self_moa_seq, model_providers
from selfmoa.testing import FakeChatModel

OTHER: dict[str, FakeChatModel] = {}


@pytest.fixture(autouse=True, scope="module")
def _ctxfake_provider():
    with model_providers({"ctxfake": lambda name, **kw: OTHER.setdefault(name, FakeChatModel(model=name))}):
        yield


def test_samples_temperature_and_seed_per_run(fake):
    graph = create_self_moa(fake, samples=6).compile()
    out = graph.invoke(ask(), context={"samples": 3, "temperature": 0.2, "seed": 40})
    assert len(out["proposals"]) == 3
    calls = by_role(fake, "proposer")
    assert {c.temperature for c in calls} == {0.2} and sorted(c.seed for c in calls) == [40, 41, 42]
    fake.reset()
    assert len(graph.invoke(ask())["proposals"]) == 6, "the next run without context uses the graph's own settings"


def test_model_and_aggregator_per_run(fake):
    graph = create_self_moa(fake, samples=2).compile()
    out = graph.invoke(ask(), context=EnsembleContext(model="ctxfake:p", aggregator="ctxfake:q"))
    assert fake.calls == []
    assert [p["model"] for p in out["proposals"]] == ["ctxfake:p"] * 2
    assert out["aggregations"][0]["model"] == "ctxfake:q" and len(OTHER["q"].calls) == 1
    out = graph.invoke(ask(), context={"model": "ctxfake:r"})
    assert out["aggregations"][0]["model"] == "ctxfake:r", "a replaced model also aggregates (Self-MoA)"


def test_window_per_run(fake):
    graph = create_self_moa_seq(fake, samples=10).compile()
    out = graph.invoke(ask(), context={"window": 4, "reserved": 1})
    assert [s["sample_ids"] for s in out["aggregations"]] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_prompt_per_run(fake):
    graph = create_self_moa(fake, samples=2).compile()
    graph.invoke(ask(), context={"prompt": "Merge these drafts:\n{references}"})
    assert system_text(by_role(fake, "aggregator")[0]).startswith("Merge these drafts:\n[Response 1]")


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"samples": 0}, "greater than or equal to 1"),
        ({"window": 3, "reserved": 3}, "reserved must be smaller than window"),
        ({"prompt": "no placeholder"}, "{references} placeholder"),
    ],
)
def test_bad_context_fails_the_run_at_its_start(fake, context, message):
    graph = create_self_moa_seq(fake, samples=4).compile()
    with pytest.raises(SpecError, match="run context") as err:
        graph.invoke(ask(), context=context)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert fake.calls == []


def test_a_misspelt_or_misplaced_context_key_is_one_line(fake):
    one_shot = create_self_moa(fake, samples=2).compile()
    with pytest.raises(SpecError, match=r"^unknown run context key 'sample'; the keys are model, aggregator, samples"):
        one_shot.invoke(ask(), context={"sample": 2})
    with pytest.raises(SpecError, match="this graph aggregates in one call; drop them"):
        one_shot.invoke(ask(), context={"window": 2})
    assert fake.calls == []


def test_context_schema_is_published(fake):
    schema = create_self_moa(fake).compile().get_context_jsonschema()
    assert {"model", "aggregator", "samples", "temperature", "window", "reserved", "seed", "prompt"} <= set(
        schema["properties"]
    )
