"""Agreement: a confidence on every answer, sampling that stops when the samples agree,
`select` without position bias, and what a run does when its samples disagree (issue 23)."""

from __future__ import annotations

import asyncio
import json

import pytest
from helpers import ask
from hypothesis import given
from hypothesis import strategies as st

from selfmoa import SpecError, create_from_spec, create_self_moa, create_self_moa_seq
from selfmoa.nodes.agreement import adaptive_batches, agreement, count_answers, lead
from selfmoa.nodes.answers import number
from selfmoa.nodes.select import settle_picks, shown_orders
from selfmoa.testing import FakeCall, FakeChatModel


def replies(*texts: str, judge: str = "Response 1") -> FakeChatModel:
    """Sample i replies texts[i] (the greedy call replies texts[0]); the aggregator replies `judge`."""

    def reply(call: FakeCall) -> str:
        return judge if call.role == "aggregator" else texts[call.sample]

    return FakeChatModel(reply=reply)


def proposer_calls(model: FakeChatModel) -> list[FakeCall]:
    return [c for c in model.calls if c.role == "proposer"]


# --- the pure rules ----------------------------------------------------------------------------


@given(st.lists(st.sampled_from(["1", "2", "3", "none"]), max_size=12))
def test_counts_lead_and_share_are_consistent(answers):
    texts = [f"Answer: {a}" if a != "none" else "no idea" for a in answers]
    counts = count_answers({}, texts, number)
    assert sum(counts.values()) == sum(a != "none" for a in answers)
    assert 0 <= lead(counts) <= max(counts.values(), default=0)
    agreed = agreement(counts, len(texts), "Answer: 2", number)
    if len(texts) < 2:
        assert agreed is None
    else:
        assert agreed is not None and agreed["samples"] == len(texts)
        assert agreed["share"] == (answers.count("2") / len(texts) if "2" in answers else None)


@given(st.integers(1, 40), st.integers(1, 7))
def test_adaptive_batches_cover_every_sample_once_in_order(samples, batch):
    ranges = adaptive_batches(samples, batch)
    assert [i for r in ranges for i in r] == list(range(samples))
    assert all(1 <= len(r) <= batch for r in ranges)


@given(st.integers(1, 12), st.sampled_from(["shuffled", "both", "given"]), st.text(max_size=20))
def test_shown_orders_are_permutations_and_reproducible(count, order, key):
    orders = shown_orders(count, order, key)
    assert all(sorted(o) == list(range(count)) for o in orders)
    assert orders == shown_orders(count, order, key)
    assert len(orders) == (2 if order == "both" else 1)


def test_the_shuffle_depends_on_the_question():
    firsts = {shown_orders(6, "shuffled", f"0|0|question {i}")[0][0] for i in range(40)}
    assert len(firsts) >= 4  # position 1 goes to many different samples across questions


def test_two_differing_picks_are_settled_by_the_samples_answers():
    candidates = ["Answer: 4", "Answer: 5", "Answer: 5", "Answer: 4", "Answer: 5"]
    assert settle_picks([0, 1], candidates, number) == 1 and settle_picks([3, 3], candidates, number) == 3
    assert settle_picks([0, 3], candidates, number) == 0  # a tie keeps the first pick


# --- agreement on every run --------------------------------------------------------------------


@pytest.mark.parametrize("mode, share", [("vote", 0.5), ("select", None), ("synthesize", None)])
def test_every_run_reports_agreement(mode, share):
    model = replies("Answer: 42", "It is 41", "so 42", "no number here", judge="Response 1")
    out = create_self_moa(model, samples=4, mode=mode, answer_of="number", order="given").compile().invoke(ask())
    agreed = out["agreement"]
    assert agreed["counts"] == {"42": 2, "41": 1} and agreed["samples"] == 4
    if mode == "select":  # the judge named candidate 1, "Answer: 42": two of four samples agree
        assert agreed["answer"] == "42" and agreed["share"] == 0.5
    elif mode == "vote":
        assert out["answer"] == "Answer: 42" and agreed["share"] == share
    else:  # the fake's synthesis has no number of the samples': it agrees with none
        assert agreed["share"] is share


def test_agreement_is_a_stream_event_and_absent_with_one_sample():
    model = replies("Answer: 1", "Answer: 1", "Answer: 2")
    graph = create_self_moa(model, samples=3, mode="vote", answer_of="number").compile()
    events = [e for e in graph.stream(ask(), stream_mode="custom") if e["selfmoa"] == "agreement"]
    assert events == [{"selfmoa": "agreement", "share": 2 / 3, "answer": "1", "counts": {"1": 2, "2": 1}, "samples": 3}]
    assert create_self_moa(model, samples=1).compile().invoke(ask())["agreement"] is None


def test_a_window_run_counts_every_batch_even_keeping_the_latest():
    model = replies(*["Answer: 7"] * 7 + ["Answer: 8"])
    graph = create_self_moa_seq(model, samples=8, window=4, reserved=2, keep="latest", answer_of="number").compile()
    agreed = graph.invoke(ask())["agreement"]
    assert agreed["counts"] == {"7": 7, "8": 1} and agreed["samples"] == 8


# --- adaptive sampling -------------------------------------------------------------------------


def test_adaptive_sampling_stops_once_the_leader_is_margin_ahead():
    model = replies(*["Answer: 42"] * 6)
    graph = create_self_moa(model, samples=6, mode="vote", answer_of="number", adaptive={"batch": 2, "margin": 2})
    out = graph.compile().invoke(ask())
    assert len(proposer_calls(model)) == 2 and out["usage"]["total"]["calls"] == 2  # vote: no aggregator call
    assert out["stopped"] == "agreed" and out["saved"] == {"proposals": 4, "aggregations": 0}
    assert out["agreement"]["samples"] == 2 and out["agreement"]["share"] == 1.0


def test_adaptive_sampling_draws_on_while_the_samples_disagree():
    model = replies("Answer: 1", "Answer: 2", "Answer: 1", "Answer: 3", "Answer: 1", "Answer: 1", "Answer: 9")
    graph = create_self_moa(model, samples=7, answer_of="number", adaptive=True).compile()
    out = graph.invoke(ask())
    # After 2 samples: 1 vs 1 (lead 0); after 4: 2 vs 1; after 6: 4 vs 1, so 6 drawn, then one synthesis.
    assert [p["sample"] for p in out["proposals"]] == [0, 1, 2, 3, 4, 5]
    assert out["usage"]["total"]["calls"] == 7 and out["aggregations"][0]["sample_ids"] == [0, 1, 2, 3, 4, 5]
    assert out["stopped"] == "agreed" and out["saved"]["proposals"] == 1


def test_adaptive_sampling_that_never_agrees_draws_every_sample():
    model = replies(*[f"Answer: {i}" for i in range(5)])
    out = create_self_moa(model, samples=5, mode="vote", answer_of="number", adaptive=True).compile().invoke(ask())
    assert len(proposer_calls(model)) == 5 and out["stopped"] == "samples" and out["saved"]["proposals"] == 0


def test_the_greedy_anchor_draws_the_first_sample_at_temperature_zero():
    model = replies(*["Answer: 5"] * 6)
    graph = create_self_moa(model, samples=6, temperature=0.7, mode="vote", answer_of="number",
                            adaptive={"batch": 2, "margin": 2, "anchor": True})
    out = asyncio.run(graph.compile().ainvoke(ask()))
    temperatures = sorted((c.sample, c.temperature) for c in proposer_calls(model))
    assert temperatures == [(0, 0.0), (1, 0.7)] and out["stopped"] == "agreed"


def test_adaptive_runs_stream_a_stopped_event_and_keep_the_quorum_over_all_batches():
    model = replies(*["Answer: 3"] * 6)
    graph = create_self_moa(model, samples=6, mode="vote", answer_of="number", adaptive=True).compile()
    kinds = [e["selfmoa"] for e in graph.stream(ask(), stream_mode="custom")]
    assert kinds == ["layer", "stopped", "agreement"]
    failing = FakeChatModel(fail_samples=frozenset({0, 1, 2, 3}))
    with pytest.raises(Exception, match="only 2 of 6 proposals of layer 1 succeeded, 3 needed"):
        create_self_moa(failing, samples=6, min_proposals=3, adaptive=True, retry_delay=0).compile().invoke(ask())


def test_adaptive_is_refused_with_a_window_in_one_line():
    with pytest.raises(SpecError, match="adaptive works with one-shot aggregation only"):
        create_from_spec({"layers": [[{"model": "openai:m", "samples": 8}]], "aggregator": {"window": 4},
                          "adaptive": True})


# --- select without position bias ---------------------------------------------------------------


def test_select_shows_a_shuffled_order_and_maps_the_pick_back():
    texts = [f"Answer: {i}" for i in range(6)]
    firsts = set()
    for question in range(8):
        model = replies(*texts, judge="Response 1")  # a judge that always names the first it sees
        out = create_self_moa(model, samples=6, mode="select").compile().invoke(ask(f"Question {question}?"))
        record = out["aggregations"][0]
        (shown,) = record["order"]
        assert sorted(shown) == list(range(6)) and record["chosen"] == shown[0] == record["picks"][0]
        assert out["answer"] == texts[shown[0]]
        firsts.add(shown[0])
    assert len(firsts) >= 3  # the judge's favourite position lands on different samples


def test_select_in_both_orders_keeps_a_common_pick_or_asks_the_samples():
    texts = ["Answer: 5", "Answer: 4", "Answer: 5", "Answer: 5", "Answer: 4", "Answer: 4", "Answer: 5"]
    model = replies(*texts, judge="Response 1")  # names the first shown: a different sample each time
    out = create_self_moa(model, samples=7, mode="select", order="both", answer_of="number").compile().invoke(ask())
    record = out["aggregations"][0]
    first, second = record["order"]
    assert second == first[::-1] and record["picks"] == [first[0], first[-1]]
    # The picks differ; the one whose answer more samples share wins (4 of 7 say 5).
    winner = first[0] if texts[first[0]] == "Answer: 5" or texts[first[0]] == texts[first[-1]] else first[-1]
    assert record["chosen"] == winner and record["usage"]["calls"] == 2


# --- low agreement -----------------------------------------------------------------------------


def test_low_agreement_can_abstain_keeping_the_samples():
    model = replies("Answer: 1", "Answer: 2", "Answer: 3")
    graph = create_self_moa(model, samples=3, mode="vote", answer_of="number",
                            low_agreement={"below": 0.5, "action": "abstain"}).compile()
    out = graph.invoke(ask())
    assert out["answer"] == "" and "below low_agreement.below=0.5" in out["abstained"]
    assert len(out["proposals"]) == 3 and out["messages"][-1].text.startswith("I cannot answer this reliably")
    agreeing = create_self_moa(replies(*["Answer: 1"] * 3), samples=3, mode="vote", answer_of="number",
                               low_agreement={"below": 0.5, "action": "abstain"}).compile().invoke(ask())
    assert agreeing["answer"] == "Answer: 1" and agreeing["abstained"] is None


def test_low_agreement_escalates_to_another_ensemble_declared_as_data():
    weak = replies("Answer: 1", "Answer: 2", "Answer: 3")
    strong = FakeChatModel(model="strong", reply=lambda call: "Answer: 6")
    spec = {"layers": [[{"model": weak, "samples": 3}]], "aggregator": {"mode": "vote", "answer_of": "number"},
            "low_agreement": {"below": 0.5, "action": "escalate",
                              "escalate": {"layers": [[{"model": strong, "samples": 2}]]}}}
    graph = create_from_spec(spec).compile()
    assert "escalate" in graph.get_graph().nodes
    out = graph.invoke(ask())
    assert out["answer"] == "Answer: 6" and out["messages"][-1].text == "Answer: 6"
    assert out["escalated"]["agreement"]["share"] == pytest.approx(1 / 3)
    assert len(out["escalated"]["proposals"]) == 2 and len(out["proposals"]) == 3
    assert out["usage"]["total"]["calls"] == 3 + 3 and out["usage"]["by_model"]["strong"]["calls"] == 3
    with pytest.raises(SpecError, match="action 'escalate' needs an 'escalate' spec"):
        create_from_spec({**spec, "low_agreement": {"below": 0.5, "action": "escalate"}})


# --- every surface -----------------------------------------------------------------------------


def _numbers(name: str, **kwargs) -> FakeChatModel:
    """A provider's fake whose samples end on numbers: 8 on samples 2, 5, 8, ..., 7 on the others."""
    return FakeChatModel(model=name or "agreefake", reply=lambda c: "Answer: 8" if c.sample % 3 == 2 else "Answer: 7")


@pytest.fixture()
def agreefake():
    from selfmoa import model_providers

    with model_providers({"agreefake": _numbers}):
        yield


def test_the_cli_reports_agreement_in_its_summary_and_json(agreefake, capsys):
    from selfmoa.cli import main

    args = ["run", "--model", "agreefake:m", "--samples", "5", "--aggregate", "vote", "--answer-of", "number"]
    assert main([*args, "Hi"]) == 0
    assert "; 4 of 5 samples agree ('7', 0.80)" in capsys.readouterr().err
    assert main([*args, "--adaptive", "--json", "Hi"]) == 0
    report = json.loads(capsys.readouterr().out)
    # The first batch of 2 (7, 7) leads by 2, the default margin: stopped after 2 of 5.
    assert report["agreement"]["counts"] == {"7": 2} and report["stopped"] == "agreed"
    assert report["saved"] == {"proposals": 3, "aggregations": 0} and len(report["proposals"]) == 2
    assert main([*args, "--abstain-below", "0.9", "Hi"]) == 3
    out, err = capsys.readouterr()
    assert out.strip() == "" and "abstained: the samples agree too little" in err


def test_the_cli_refuses_adaptive_flags_without_adaptive(agreefake, capsys):
    from selfmoa.cli import main

    assert main(["run", "--model", "agreefake:m", "--margin", "3", "Hi"]) == 2
    assert "add --adaptive" in capsys.readouterr().err


def test_the_chat_model_and_the_server_carry_the_agreement(agreefake):
    from helpers import URL, app_client

    from selfmoa import MoAChatModel

    graph = create_self_moa("agreefake:m", samples=4, mode="vote", answer_of="number")
    reply = MoAChatModel(graph=graph.compile()).invoke("Hi")
    assert reply.response_metadata["selfmoa"]["agreement"]["counts"] == {"7": 3, "8": 1}
    with app_client(dynamic_models=["agreefake:*"], dynamic_remote_without_key=True) as client:
        response = client.post(URL, json={"model": "self-moa-adaptive:agreefake:x", "messages": [
            {"role": "user", "content": "Hi"}]})
    assert response.status_code == 200, response.text
    ext = response.json()["selfmoa"]
    assert ext["agreement"]["samples"] == 2 and ext["stopped"] == "agreed" and ext["abstained"] is None
    assert ext["calls"] == 2  # the preset votes: two samples, no aggregator call
