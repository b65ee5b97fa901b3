"""Aggregation modes: synthesize (write), select (choose a candidate), vote (majority, no call)."""

from __future__ import annotations

import asyncio

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from selfmoa import (
    AggregationError,
    SpecError,
    create_from_spec,
    create_moa,
    create_self_moa,
    create_self_moa_seq,
    model_providers,
)
from selfmoa.nodes.aggregate import SELECT_REASKS
from selfmoa.testing import FakeCall, FakeChatModel


def ask(text: str = "What is 6*7?") -> dict:
    return {"messages": [("user", text)]}


def answers(*texts: str, select: str | list[str] = "Response 2") -> FakeChatModel:
    """Sample i replies texts[i]; the aggregator replies `select` (a list: one reply per call)."""
    replies = list(select) if isinstance(select, list) else None

    def reply(call: FakeCall) -> str:
        if call.role == "aggregator":
            return replies.pop(0) if replies is not None else select
        return texts[call.sample]

    return FakeChatModel(reply=reply)


# --- select -----------------------------------------------------------------------------------


def test_select_returns_the_chosen_candidate_verbatim_with_its_call_counted():
    model = answers("It is 41.", "6*7 = 42\nAnswer: 42", "Answer: 40")
    result = create_self_moa(model, samples=3, mode="select", order="given").compile().invoke(ask())
    assert result["answer"] == "6*7 = 42\nAnswer: 42"
    assert result["messages"][-1].content == result["answer"]
    record = result["aggregations"][0]
    assert record["mode"] == "select" and record["chosen"] == 1 and record["sample_ids"] == [0, 1, 2]
    assert result["usage"]["total"]["calls"] == 4 and record["usage"]["calls"] == 1
    aggregator_call = [c for c in model.calls if c.role == "aggregator"][0]
    assert '"Response N"' in aggregator_call.prompt and "[Response 3]\nAnswer: 40" in aggregator_call.prompt
    # The choice is asked for last: small models answer the last user message, not the system prompt.
    assert aggregator_call.messages[-1].type == "human"
    assert aggregator_call.messages[-1].content.startswith("Which of the 3 candidate responses above")
    assert not result["warnings"]


def test_select_retries_an_unusable_reply_with_a_reminder_then_falls_back_with_a_warning():
    model = answers("a", "b", "c", select=["I prefer the seventh", "Response 3"])
    result = create_self_moa(model, samples=3, mode="select", order="given").compile().invoke(ask())
    assert result["answer"] == "c" and result["aggregations"][0]["chosen"] == 2
    retry = [c for c in model.calls if c.role == "aggregator"][1]
    assert retry.messages[-2].content == "I prefer the seventh" and "from 1 to 3" in retry.messages[-1].content
    assert result["usage"]["total"]["calls"] == 5 and not result["warnings"]

    # The re-ask has its own count, apart from the retries of a failed call: one reminder
    # whatever max_attempts is (it used to be max_attempts asks, so 1 dropped the reminder).
    for attempts in (1, 3):
        out_of_range = answers("a", "b", "c", select="Response 9")
        result = create_self_moa(out_of_range, samples=3, mode="select", max_attempts=attempts, order="given").compile().invoke(ask())
        assert result["answer"] == "a" and result["aggregations"][0]["chosen"] == 0
        assert len([c for c in out_of_range.calls if c.role == "aggregator"]) == 1 + SELECT_REASKS == 2
        assert result["warnings"] == ["aggregation step 0: the select reply named no candidate ('Response 9'); kept candidate 1"]


def test_select_streams_the_answer_not_the_choice():
    model = answers("first", "second answer", "third")
    graph = create_self_moa(model, samples=3, mode="select", order="given").compile()
    chunks = [message.content for message, _ in graph.stream(ask(), stream_mode="messages")]
    assert chunks == ["second answer"]


def test_select_skips_failed_samples_and_names_the_real_sample_index():
    model = answers("zero", "one", "two", "three", select="Response 2")
    model.fail_samples = frozenset({1})
    result = create_self_moa(model, samples=4, mode="select", max_attempts=1, order="given").compile().invoke(ask())
    assert result["aggregations"][0]["sample_ids"] == [0, 2, 3]
    assert result["answer"] == "two" and result["aggregations"][0]["chosen"] == 2


# --- vote -------------------------------------------------------------------------------------


def test_vote_takes_the_majority_answer_with_no_model_call():
    model = answers("Answer: 41", "so 42", "6*7=42, Answer: 42", "It's 40")
    result = create_self_moa(model, samples=4, mode="vote", answer_of="number").compile().invoke(ask())
    assert result["answer"] == "so 42"  # the first sample with the winning answer, verbatim
    record = result["aggregations"][0]
    assert record["votes"] == {"41": 1, "42": 2, "40": 1} and record["chosen"] == 1 and record["mode"] == "vote"
    assert result["usage"]["total"]["calls"] == 4 and not [c for c in model.calls if c.role == "aggregator"]


def test_vote_ties_go_to_the_earliest_sample_and_counts_are_recorded():
    model = answers("Answer: 41", "so 42", "6*7=42, Answer: 42", "It's 41")
    record = create_self_moa(model, samples=4, mode="vote", answer_of="number").compile().invoke(ask())["aggregations"][0]
    assert record["votes"] == {"41": 2, "42": 2} and record["chosen"] == 0
    model = answers("B) no", "A", "Answer: (b)", "c")
    result = create_self_moa(model, samples=4, mode="vote", answer_of="letter").compile().invoke(ask())
    assert result["answer"] == "B) no" and result["aggregations"][0]["votes"] == {"B": 2, "A": 1, "C": 1}


def test_vote_with_a_callable_and_the_fallback_when_nothing_can_be_extracted():
    model = answers("yes!", "No.", "no")
    result = create_self_moa(model, samples=3, mode="vote", answer_of=lambda t: t.strip(" .!").lower()).compile().invoke(ask())
    assert result["answer"] == "No." and result["aggregations"][0]["votes"] == {"yes": 1, "no": 2}
    model = answers("none", "here", "either")
    result = create_self_moa(model, samples=3, mode="vote", answer_of="number").compile().invoke(ask())
    assert result["answer"] == "none" and result["aggregations"][0]["votes"] == {}
    assert result["warnings"] == ["aggregation step 0: no candidate had an answer to vote on; kept candidate 1"]


def test_vote_streams_the_answer_and_runs_under_ainvoke():
    model = answers("7", "Answer: 8", "8")
    graph = create_self_moa(model, samples=3, mode="vote", answer_of="number").compile()
    assert [m.content for m, _ in graph.stream(ask(), stream_mode="messages")] == ["Answer: 8"]
    assert asyncio.run(graph.ainvoke(ask()))["answer"] == "Answer: 8"
    select = create_self_moa(answers("7", "Answer: 8", "8"), samples=3, mode="select", order="given").compile()
    assert asyncio.run(select.ainvoke(ask()))["answer"] == "Answer: 8"


def test_vote_makes_no_aggregator_client():
    made: list[str] = []

    def judge(name: str, **kwargs) -> FakeChatModel:
        made.append(name)  # a hosted aggregator would need its key here
        return FakeChatModel(model=name)

    with model_providers({"votejudge": judge}):
        graph = create_self_moa(answers("7", "Answer: 8", "8"), samples=3, mode="vote", answer_of="number",
                                aggregator="votejudge:big").compile()
        assert graph.invoke(ask())["answer"] == "Answer: 8"
        assert asyncio.run(graph.ainvoke(ask()))["answer"] == "Answer: 8"
    assert made == []


# --- every entry point ------------------------------------------------------------------------


def test_mode_reaches_moa_hybrid_specs_and_yaml(tmp_path):
    a, b = answers("x", "Answer: 5", "Answer: 5"), answers("y", "z", "w")
    moa = create_moa([[a, b, a]], aggregator=a, mode="vote", answer_of="number").compile().invoke(ask())
    assert moa["answer"] == "Answer: 5" and moa["aggregations"][0]["mode"] == "vote"
    assert [p["model"] for p in moa["proposals"]] == ["fake", "fake#2", "fake"]
    spec = tmp_path / "s.yaml"
    spec.write_text("layers: [[{model: 'openai:m', samples: 3}]]\naggregator: {mode: select, window: 4, reserved: 2}\n")
    from selfmoa.graphs.spec import parse_spec

    parsed = parse_spec(spec)
    assert parsed.aggregator.mode == "select" and parsed.aggregator.window == 4
    with pytest.raises(SpecError, match="'aggregator.mode'"):  # the first release's spelling is gone (CHANGELOG)
        parse_spec({"layers": [["openai:m"]], "aggregator": {"mode": "window"}})


def test_vote_cannot_slide_a_window_and_bad_extractors_are_named():
    with pytest.raises(SpecError) as err:
        create_self_moa_seq(FakeChatModel(), samples=9, mode="vote")
    assert "mode 'vote' takes all samples at once" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SpecError, match="unknown answer extractor 'digits'; use one of number, letter, last_line"):
        create_from_spec({"layers": [["openai:m"]], "aggregator": {"mode": "vote", "answer_of": "digits"}})


def test_run_context_picks_the_mode_per_run():
    graph = create_self_moa(answers("7", "8", "8"), samples=3).compile()
    assert graph.invoke(ask(), context={"mode": "vote"})["answer"] == "8"
    with pytest.raises(SpecError, match="mode"):
        create_self_moa_seq(FakeChatModel(), samples=9).compile().invoke(ask(), context={"mode": "vote"})


# --- sliding window ---------------------------------------------------------------------------


def test_select_in_a_window_carries_the_chosen_candidate_as_the_synthesis():
    texts = [f"sample {i}" for i in range(8)]

    def reply(call: FakeCall) -> str:
        if call.role == "aggregator":  # step 0 picks sample 1; later steps keep the synthesis (copy 1)
            return "Response 2" if "sample 0" in call.prompt else "Response 1"
        return texts[call.sample]

    result = create_self_moa_seq(FakeChatModel(reply=reply), samples=8, window=4, reserved=2, mode="select", order="given").compile().invoke(ask())
    steps = result["aggregations"]
    assert [s["sample_ids"] for s in steps] == [[0, 1, 2, 3], [4, 5], [6, 7]]
    assert [s["chosen"] for s in steps] == [1, 1, 1] and result["answer"] == "sample 1"
    assert all(s["mode"] == "select" for s in steps)


def test_select_in_a_window_can_switch_to_a_new_sample():
    texts = [f"sample {i}" for i in range(6)]

    def reply(call: FakeCall) -> str:
        if call.role == "aggregator":  # step 1 sees [synthesis, synthesis, sample 4, sample 5]: picks sample 5
            return "Response 4" if "sample 4" in call.prompt else "Response 1"
        return texts[call.sample]

    model = FakeChatModel(reply=reply)
    graph = create_self_moa_seq(model, samples=6, window=4, reserved=2, mode="select", order="given").compile()
    result = graph.invoke(ask())
    assert [s["chosen"] for s in result["aggregations"]] == [0, 5] and result["answer"] == "sample 5"
    second = [c for c in model.calls if c.role == "aggregator"][1]
    assert second.prompt.count("sample 0") == 2  # the chosen sample, repeated in the reserved slots
    assert [m.content for m, _ in graph.stream(ask(), stream_mode="messages")] == ["sample 5"]


# --- checkpoints ------------------------------------------------------------------------------


def test_select_resumes_from_a_checkpoint_without_redrawing_samples():
    model = answers("a", "b", "c", select="Response 3")
    model.fail_roles = frozenset({"aggregator"})
    graph = create_self_moa(model, samples=3, mode="select", max_attempts=1, order="given").compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(AggregationError, match="invoke the same thread again to resume"):
        graph.invoke(ask(), config)
    model.fail_roles = frozenset()
    before = len([c for c in model.calls if c.role == "proposer"])
    result = graph.invoke(None, config)
    assert result["answer"] == "c" and result["aggregations"][0]["chosen"] == 2
    assert len([c for c in model.calls if c.role == "proposer"]) == before == 3


# --- the server's select preset ---------------------------------------------------------------


def test_the_server_offers_a_select_preset_that_returns_a_sample_verbatim(providers):
    from starlette.testclient import TestClient

    from selfmoa.server import ServerConfig, create_app

    made: dict[str, FakeChatModel] = {}

    def provider(name: str, **kwargs) -> FakeChatModel:
        return made.setdefault(name, FakeChatModel(model=name, reply=lambda c: "Response 3" if c.role == "aggregator"
                                                   else f"sample {c.sample} of 6"))

    providers(selfake=provider)
    app = create_app(ServerConfig(default_model="selfake:m", dynamic_models=["selfake:*"]))
    with TestClient(app) as client:
        assert "self-moa-select" in [m["id"] for m in client.get("/v1/models").json()["data"]]
        reply = client.post("/v1/chat/completions", json={"model": "self-moa-select", "messages": [
            {"role": "user", "content": "Pick one."}]}).json()
    assert reply["choices"][0]["message"]["content"] == "sample 2 of 6"
    assert reply["selfmoa"]["calls"] == 7 and reply["selfmoa"]["proposals"] == 6


def test_studio_and_cli_expose_the_mode(capsys):
    schema = create_self_moa(FakeChatModel(), samples=2).compile().get_context_jsonschema()
    assert "mode" in schema["properties"]  # Studio edits the context per run
    from selfmoa.cli import main

    assert main(["run", "--method", "seq", "--aggregate", "vote", "--show-graph", "hi"]) == 2
    assert "--aggregate vote takes all samples at once" in capsys.readouterr().err
    assert main(["run", "--aggregate", "select", "--show-graph", "hi"]) == 0
