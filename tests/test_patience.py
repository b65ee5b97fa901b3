"""Adaptive Self-MoA-Seq: stop drawing samples once the synthesis has settled (`patience`)."""

from __future__ import annotations

import asyncio
import json

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from selfmoa import AggregationError, SpecError, create_from_spec, create_self_moa_seq, model_providers
from selfmoa.cli import main
from selfmoa.nodes.schedule import window_calls
from selfmoa.testing import FakeCall, FakeChatModel

N, W, R = 12, 4, 2  # batches [0..3], [4, 5], [6, 7], [8, 9], [10, 11]: 5 window steps


def ask() -> dict:
    return {"messages": [("user", "What is 6*7?")]}


def model(synthesis=lambda call, step: "Answer: 42") -> FakeChatModel:
    """Samples say `sample i`; window step s (counted by the aggregator's calls) writes synthesis(call, s)."""
    steps: list[int] = []

    def reply(call: FakeCall) -> str:
        if call.role == "aggregator":
            steps.append(1)
            return synthesis(call, len(steps) - 1)
        return f"sample {call.sample}"

    return FakeChatModel(reply=reply)


def run(fake: FakeChatModel, **kwargs) -> tuple[dict, list[dict]]:
    graph = create_self_moa_seq(fake, samples=N, window=W, reserved=R, **kwargs).compile()
    events, final = [], {}
    for mode, part in graph.stream(ask(), stream_mode=["custom", "values"]):
        if mode == "custom" and part.get("selfmoa") == "stopped":
            events.append(part)
        elif mode == "values":
            final = part
    return final, events


def test_a_synthesis_that_never_changes_stops_after_patience_plus_one_steps():
    for patience in (1, 2, 3):
        fake = model()
        result, events = run(fake, patience=patience)
        steps = patience + 1
        assert len(result["aggregations"]) == steps and result["stopped"] == "settled"
        assert result["answer"] == "Answer: 42"
        # The batch drawn alongside the last step is recorded but not aggregated.
        aggregated = {i for a in result["aggregations"] for i in a["sample_ids"]}
        drawn = {p["sample"] for p in result["proposals"]}
        in_flight = drawn - aggregated
        assert in_flight == set(range(4 + 2 * (steps - 1), 4 + 2 * steps))
        total_steps = window_calls(N, W, R)
        assert result["saved"] == {"proposals": N - len(drawn), "aggregations": total_steps - steps}
        calls = len(fake.calls)
        assert calls == len(drawn) + steps == N + total_steps - sum(result["saved"].values())
        assert events == [{"selfmoa": "stopped", "stopped": "settled", "saved": result["saved"], "steps": steps,
                           "streak": patience}]


def test_a_synthesis_that_changes_at_every_step_runs_to_n():
    result, events = run(model(lambda call, step: f"Answer: {40 + step}"), patience=2)
    assert result["stopped"] == "samples" and result["saved"] == {"proposals": 0, "aggregations": 0}
    assert len(result["aggregations"]) == window_calls(N, W, R) and len(result["proposals"]) == N and events == []


def test_the_answer_extractor_decides_what_counts_as_the_same_answer():
    wording = ["So the answer is 42.", "Answer: 42", "It is 42!", "42", "42 it is"]
    # Normalised text: every step differs. The number: settled after 3 steps.
    result, _ = run(model(lambda call, step: wording[step]), patience=2)
    assert result["stopped"] == "samples"
    result, _ = run(model(lambda call, step: wording[step]), patience=2, answer_of="number")
    assert result["stopped"] == "settled" and len(result["aggregations"]) == 3
    # A streak is broken by a different answer and counted again from there.
    answers = ["Answer: 41", "Answer: 42", "Answer: 43", "Answer: 43", "Answer: 43"]
    result, events = run(model(lambda call, step: answers[step]), patience=2, answer_of="number")
    assert result["stopped"] == "samples" and len(result["aggregations"]) == 5  # held 2 only at the last step
    result, events = run(model(lambda call, step: answers[step]), patience=1, answer_of="number")
    assert result["stopped"] == "settled" and events[0]["steps"] == 4


def test_patience_with_keep_latest_select_and_ainvoke():
    result, _ = run(model(), patience=2, keep="latest")
    assert result["stopped"] == "settled" and len(result["aggregations"]) == 1
    assert result["saved"] == {"proposals": 2, "aggregations": 2}

    def choose(call: FakeCall, step: int) -> str:
        return "Response 1"  # select keeps the carried synthesis: settled at once

    fake = model(choose)
    result, _ = run(fake, patience=2, mode="select", order="given")
    assert result["stopped"] == "settled" and result["answer"] == "sample 0"
    graph = create_self_moa_seq(model(), samples=N, window=W, reserved=R, patience=2).compile()
    out = asyncio.run(graph.ainvoke(ask()))
    assert out["stopped"] == "settled" and len(out["aggregations"]) == 3


def test_a_resumed_run_stops_at_the_same_place_without_drawing_again():
    fake = model()
    graph = create_self_moa_seq(fake, samples=N, window=W, reserved=R, patience=2, max_attempts=1).compile(
        checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": "t"}}
    fake.fail_roles = frozenset({"aggregator"})
    with pytest.raises(AggregationError):
        graph.invoke(ask(), config)
    fake.fail_roles = frozenset()
    result = graph.invoke(None, config)
    assert result["stopped"] == "settled" and result["saved"] == {"proposals": 2, "aggregations": 2}
    # Nothing past the stop is drawn. (A proposal running beside the failed aggregator call
    # may be cancelled with it and drawn again on resume: LangGraph fails the superstep.)
    assert {c.sample for c in fake.calls if c.role == "proposer"} == set(range(10)) == {
        p["sample"] for p in result["proposals"]}
    calls = len(fake.calls)
    again = graph.invoke(None, config)  # a finished thread: nothing more to do
    assert again["answer"] == result["answer"] and len(fake.calls) == calls


def test_patience_from_specs_and_the_cli(capsys):
    spec = {"layers": [[{"model": model(), "samples": N}]],
            "aggregator": {"window": W, "reserved": R, "patience": 2, "answer_of": "number"}}
    assert create_from_spec(spec).compile().invoke(ask())["stopped"] == "settled"
    with pytest.raises(SpecError, match="patience stops a sliding window early; set a window"):
        create_from_spec({"layers": [["openai:m"]], "aggregator": {"patience": 2}})
    assert main(["run", "--patience", "2", "hi"]) == 2
    assert "--patience is not used by --method self-moa" in capsys.readouterr().err
    with model_providers({"patfake": lambda name, **kwargs: model()}):
        argv = ["run", "--model", "patfake:x", "--method", "seq", "--samples", str(N), "--window", str(W),
                "--reserved", str(R), "--patience", "2", "--answer-of", "number", "--json", "hi"]
        assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stopped"] == "settled" and report["saved"] == run(model(), patience=2)[0]["saved"]
    assert report["saved"]["aggregations"] > 0


@pytest.mark.parametrize("patience", [None, 3])
def test_a_last_batch_that_fails_whole_is_not_a_settled_stop(patience):
    # The synthesis changes at every step, so nothing settles; the last batch [10, 11] fails.
    fake = FakeChatModel(reply=model(lambda call, step: f"Answer: {40 + step}").reply, fail_samples={10, 11})
    result, events = run(fake, patience=patience)
    assert result["stopped"] == "samples" and result["saved"] == {"proposals": 0, "aggregations": 0}
    assert events == [] and {p["sample"] for p in result["proposals"] if not p["error"]} == set(range(10))
    assert len(result["aggregations"]) == window_calls(N, W, R) - 1, "no window step is left for the failed batch"
