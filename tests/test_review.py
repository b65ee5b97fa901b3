"""Human-in-the-loop: pause before the final aggregation, edit or drop proposals, resume."""

from __future__ import annotations

import pytest
from helpers import ask, by_role, system_text
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from selfmoa import SpecError, create_from_spec, create_self_moa


def paused_graph(model, samples=4):
    graph = create_self_moa(model, samples=samples, review=True).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "review"}}
    paused = graph.invoke(ask(), config)
    return graph, config, paused


def test_run_pauses_with_the_proposals_and_no_aggregation(fake):
    graph, config, paused = paused_graph(fake)
    value = paused["__interrupt__"][0].value
    assert value["selfmoa"] == "review"
    assert [p["sample"] for p in value["proposals"]] == [0, 1, 2, 3]
    assert [p["text"] for p in value["proposals"]] == [p["text"] for p in paused["proposals"]]
    assert by_role(fake, "aggregator") == [] and graph.get_state(config).next == ("review",)


def test_edit_and_drop_reach_the_aggregator(fake):
    graph, config, paused = paused_graph(fake)
    out = graph.invoke(Command(resume={"drop": [0, 3], "edit": {"2": "An edited proposal."}}), config)
    system = system_text(by_role(fake, "aggregator")[0])
    texts = {p["sample"]: p["text"] for p in paused["proposals"]}
    assert f"[Response 1]\n{texts[1]}" in system and "[Response 2]\nAn edited proposal." in system
    assert "[Response 3]" not in system and texts[0] not in system
    assert out["aggregations"][0]["sample_ids"] == [1, 2]
    assert len(by_role(fake, "proposer")) == 4, "resuming does not call the proposers again"


def test_resume_without_changes_keeps_all(fake):
    graph, config, _ = paused_graph(fake, samples=3)
    out = graph.invoke(Command(resume=True), config)
    assert out["aggregations"][0]["sample_ids"] == [0, 1, 2] and out["answer"]


@pytest.mark.parametrize(
    ("decision", "message"),
    [
        ({"drop": [0, 1, 2]}, "dropped every proposal"),
        ({"drop": [7]}, "samples [7] that are not under review"),
        ({"keep": [1]}, "must be True or a dict with 'drop' and/or 'edit'"),
        ({"edit": {0: ""}}, "edits must be non-empty strings"),
        ({"drop": 1}, "'drop' must be a list of sample numbers"),
        ({"drop": ["first"]}, "'drop' must be a list of sample numbers"),
        ({"edit": {"first": "x"}}, "'edit' must map sample numbers to texts"),
        ({"edit": ["x"]}, "'edit' must map sample numbers to texts"),
    ],
)
def test_bad_decisions_pause_again_with_the_error_and_lose_nothing(fake, decision, message):
    graph, config, _ = paused_graph(fake, samples=3)
    again = graph.invoke(Command(resume=decision), config)
    error = again["__interrupt__"][0].value["error"]
    assert message in error and "\n" not in error
    assert by_role(fake, "aggregator") == []
    out = graph.invoke(Command(resume={"drop": [1]}), config)
    assert out["aggregations"][0]["sample_ids"] == [0, 2]
    assert len(by_role(fake, "proposer")) == 3


def test_review_needs_one_shot_aggregation(fake):
    with pytest.raises(SpecError, match="review works with one-shot aggregation only"):
        create_from_spec({"layers": [[fake]], "aggregator": {"window": 6}, "review": True})
