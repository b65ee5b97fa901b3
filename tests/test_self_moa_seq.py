"""Self-MoA-Seq: exact window contents, call counts, and pipelining."""

from __future__ import annotations

import pytest
from helpers import ask, by_role, system_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfmoa import create_self_moa_seq
from selfmoa.nodes.schedule import window_calls, window_schedule
from selfmoa.testing import FakeChatModel

W, R = 6, 3


@pytest.mark.parametrize("n", [1, W, W + 1, 30])
def test_window_contents_and_call_count(n):
    model = FakeChatModel()
    out = create_self_moa_seq(model, samples=n, window=W, reserved=R).compile().invoke(ask())
    steps = out["aggregations"]
    assert len(steps) == window_calls(n, W, R) == 1 + -(-max(0, n - W) // (W - R))
    assert len(by_role(model, "aggregator")) == len(steps)
    seen = [i for s in steps for i in s["sample_ids"]]
    assert seen == list(range(n)), "every sample is aggregated exactly once, in order"
    texts = {p["sample"]: p["text"] for p in out["proposals"]}

    calls = sorted(by_role(model, "aggregator"), key=lambda c: c.metadata["selfmoa_step"])
    for k, (step, call) in enumerate(zip(steps, calls, strict=True)):
        system = system_text(call)
        refs = [texts[i] for i in step["sample_ids"]]
        if k == 0:
            assert step["sample_ids"] == list(range(min(n, W))) and step["reserved"] == 0
            expected = refs
        else:
            assert step["reserved"] == R and len(step["sample_ids"]) <= W - R
            expected = [steps[k - 1]["text"]] * R + refs
        assert len(expected) <= W, "the aggregator context stays bounded by the window"
        for i, text in enumerate(expected, 1):
            assert f"[Response {i}]\n{text}" in system
        assert f"[Response {len(expected) + 1}]" not in system
    assert out["answer"] == steps[-1]["text"] == out["messages"][-1].text


def test_windows_are_pipelined_with_sampling():
    model = FakeChatModel()
    create_self_moa_seq(model, samples=15, window=W, reserved=R).compile().invoke(ask())
    step_of = lambda c: c.metadata["langgraph_step"]  # noqa: E731
    batches = window_schedule(15, W, R)
    proposals = by_role(model, "proposer")
    aggregations = sorted(by_role(model, "aggregator"), key=lambda c: c.metadata["selfmoa_step"])
    for k, agg in enumerate(aggregations[:-1]):
        # Window k is aggregated in the same superstep that samples the batch of window k+1.
        next_batch = [c for c in proposals if c.sample in batches[k + 1]]
        assert {step_of(c) for c in next_batch} == {step_of(agg)}
    # Every proposal superstep except the first also runs an aggregation.
    proposal_steps = sorted({step_of(c) for c in proposals})
    assert len(proposal_steps) == len(batches)


def test_failed_samples_are_skipped_not_padded():
    model = FakeChatModel(fail_samples={1, 7})
    out = create_self_moa_seq(model, samples=9, window=W, reserved=R, retry_delay=0).compile().invoke(ask())
    steps = out["aggregations"]
    assert [s["sample_ids"] for s in steps] == [[0, 2, 3, 4, 5], [6, 8]]
    assert [p["sample"] for p in out["proposals"] if p["error"]] == [1, 7]


def test_a_window_with_no_new_sample_is_skipped_and_the_synthesis_kept():
    model = FakeChatModel(fail_samples={6, 7, 8})
    out = create_self_moa_seq(model, samples=9, window=W, reserved=R, retry_delay=0).compile().invoke(ask())
    assert [s["sample_ids"] for s in out["aggregations"]] == [list(range(6))]
    assert out["answer"] == out["aggregations"][0]["text"]


def test_window_events_and_only_the_last_window_streams():
    model = FakeChatModel()
    graph = create_self_moa_seq(model, samples=12, window=W, reserved=R).compile()
    events, tokens = [], []
    for mode, part in graph.stream(ask(), stream_mode=["custom", "messages"]):
        (events if mode == "custom" else tokens).append(part)
    assert [e["batch"] for e in events if e["selfmoa"] == "window"] == [0, 1, 2]
    streamed = "".join(m.content for m, meta in tokens if meta["langgraph_node"] == "aggregate")
    last = sorted(by_role(model, "aggregator"), key=lambda c: c.metadata["selfmoa_step"])[-1]
    assert streamed == last.replies[0]


def test_schedule_examples():
    assert [list(r) for r in window_schedule(10, 6, 3)] == [[0, 1, 2, 3, 4, 5], [6, 7, 8], [9]]
    assert [list(r) for r in window_schedule(3, 6, 3)] == [[0, 1, 2]]
    assert [list(r) for r in window_schedule(7, 4, 1)] == [[0, 1, 2, 3], [4, 5, 6]]


def test_keep_latest_gives_the_same_run_with_bounded_records():
    full_model, bounded_model = FakeChatModel(), FakeChatModel()
    full = create_self_moa_seq(full_model, samples=20, window=W, reserved=R, seed=3).compile().invoke(ask())
    graph = create_self_moa_seq(bounded_model, samples=20, window=W, reserved=R, seed=3, keep="latest").compile()
    bounded = graph.invoke(ask())
    assert bounded["answer"] == full["answer"]
    assert bounded["usage"] == full["usage"]
    assert sorted(c.prompt for c in bounded_model.calls) == sorted(c.prompt for c in full_model.calls)
    last = window_schedule(20, W, R)[-1]
    assert [p["sample"] for p in bounded["proposals"]] == list(last)
    timeless = lambda records: [{k: v for k, v in r.items() if k != "latency"} for r in records]  # noqa: E731
    assert timeless(bounded["proposals"]) == timeless(p for p in full["proposals"] if p["sample"] in last)
    assert timeless(bounded["aggregations"]) == timeless(full["aggregations"][-1:])

    # Every record still goes through the "updates" stream.
    streamed, steps = [], []
    for update in graph.stream(ask(), stream_mode="updates"):
        streamed += (update.get("propose") or {}).get("proposals", [])
        steps += (update.get("aggregate") or {}).get("aggregations", [])
    assert sorted(p["sample"] for p in streamed) == list(range(20))
    assert timeless(steps) == timeless(full["aggregations"])


def test_keep_latest_checkpoints_stay_the_same_size_whatever_n():
    from langgraph.checkpoint.memory import InMemorySaver

    def largest_checkpoint(n: int, keep: str) -> tuple[int, int]:
        graph = create_self_moa_seq(FakeChatModel(), samples=n, window=W, reserved=R, keep=keep)
        graph = graph.compile(checkpointer=InMemorySaver())
        config = {"configurable": {"thread_id": "t"}}
        graph.invoke(ask(), config)
        history = list(graph.get_state_history(config))
        values = [h.values for h in history]
        return max(len(v.get("proposals", [])) for v in values), max(len(repr(v.get("plan"))) for v in values)

    assert largest_checkpoint(12, "latest") == largest_checkpoint(90, "latest")
    most, _ = largest_checkpoint(90, "latest")
    assert most <= 2 * W, "at most the batch being collected and the next one"
    assert largest_checkpoint(90, "all")[0] == 90


def test_keep_latest_counts_every_failure_for_the_quorum():
    from selfmoa import ProposalsFailedError

    model = FakeChatModel(fail_samples=set(range(15)))
    graph = create_self_moa_seq(model, samples=15, window=W, reserved=R, retry_delay=0, max_attempts=1, keep="latest")
    with pytest.raises(ProposalsFailedError, match=r"only 0 of 15 proposals of layer 1 succeeded.*and 12 more"):
        graph.compile().invoke(ask())


def test_keep_latest_needs_window_mode():
    from selfmoa import SpecError, create_from_spec

    with pytest.raises(SpecError, match="keep='latest' applies to window mode only"):
        create_from_spec({"layers": [[{"model": FakeChatModel()}]], "aggregator": {"keep": "latest"}})


# --- the Self-MoA-Seq schedule, on real graph runs ---------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(2, 7).flatmap(lambda w: st.tuples(st.integers(1, 25), st.just(w), st.integers(1, w - 1))))
def test_seq_graph_sees_every_sample_in_exactly_one_step(args):
    n, window, reserved = args
    model = FakeChatModel()
    result = create_self_moa_seq(model, samples=n, window=window, reserved=reserved).compile().invoke(ask())
    seen = [i for step in result["aggregations"] for i in step["sample_ids"]]
    assert sorted(seen) == list(range(n)) and len(seen) == n
    assert len(result["aggregations"]) == window_calls(n, window, reserved)
    assert len(by_role(model, "aggregator")) == window_calls(n, window, reserved)
    assert len(by_role(model, "proposer")) == n
    for step in result["aggregations"][1:]:
        assert step["reserved"] == reserved and 1 <= len(step["sample_ids"]) <= window - reserved


def test_n_sampling_short_of_choices_fills_each_window_before_aggregating_it():
    model = FakeChatModel(max_n=2)
    graph = create_self_moa_seq(model, samples=7, window=4, reserved=2, sampling="n", seed=1).compile()
    out = graph.invoke(ask())
    assert [p["sample"] for p in out["proposals"]] == list(range(7))
    assert len({p["text"] for p in out["proposals"]}) == 7, "no padded copies"
    assert [a["sample_ids"] for a in out["aggregations"]] == [[0, 1, 2, 3], [4, 5], [6]]
    assert sum("returned 2 of 4 choices" in w for w in out["warnings"]) == 1
