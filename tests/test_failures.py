"""Failures and bad input: quorum, retries, aggregator errors, timeouts, one-line messages that say
each failure once."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from helpers import ask, by_role, free_port
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver

from selfmoa import (
    AggregationError,
    InputError,
    ProposalsFailedError,
    SpecError,
    create_moa,
    create_self_moa,
    create_self_moa_seq,
)
from selfmoa.cli import main as cli_main
from selfmoa.testing import FakeChatModel

FAST = {"retry_delay": 0.0}


def test_failed_proposer_is_recorded_and_aggregation_goes_on():
    model = FakeChatModel(fail_samples={2, 4})
    out = create_self_moa(model, samples=6, **FAST).compile().invoke(ask())
    failed = [p for p in out["proposals"] if p["error"]]
    assert [p["sample"] for p in failed] == [2, 4]
    assert all("FakeModelError" in p["error"] and p["text"] == "" for p in failed)
    agg = out["aggregations"][0]
    assert agg["sample_ids"] == [0, 1, 3, 5]
    system = by_role(model, "aggregator")[0].messages[0].text
    assert "[Response 4]" in system and "[Response 5]" not in system, "no padding with copies"
    # Each failed sample was tried twice (max_attempts=2), the others once.
    attempts = [c.sample for c in by_role(model, "proposer")]
    assert sorted(attempts) == [0, 1, 2, 2, 3, 4, 4, 5]


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5])
def test_failure_rates_with_quorum(rate):
    model = FakeChatModel(fail_rate=rate)
    out = create_self_moa(model, samples=10, aggregator=FakeChatModel(model="judge"), **FAST).compile().invoke(ask())
    failed = sum(1 for p in out["proposals"] if p["error"])
    assert len(out["proposals"]) == 10 and out["answer"]
    assert out["aggregations"][0]["sample_ids"] == [p["sample"] for p in out["proposals"] if not p["error"]]
    if rate == 0.0:
        assert failed == 0
    else:
        assert 0 < failed < 10


def test_quorum_not_met_is_one_clear_error():
    model = FakeChatModel(fail_samples={0, 1, 2})
    graph = create_self_moa(model, samples=4, min_proposals=2, **FAST).compile()
    with pytest.raises(ProposalsFailedError) as err:
        graph.invoke(ask())
    msg = str(err.value)
    assert "only 1 of 4 proposals of layer 1 succeeded, 2 needed" in msg
    assert "fake[0]: FakeModelError" in msg and "lower min_proposals" in msg and "\n" not in msg


def test_all_proposers_failing_is_one_clear_error():
    graph = create_self_moa(FakeChatModel(fail_rate=1.0), samples=3, **FAST).compile()
    with pytest.raises(ProposalsFailedError, match="only 0 of 3 proposals"):
        asyncio.run(graph.ainvoke(ask()))


def test_all_seq_samples_failing_is_one_clear_error():
    graph = create_self_moa_seq(FakeChatModel(fail_rate=1.0), samples=8, **FAST).compile()
    with pytest.raises(ProposalsFailedError, match="only 0 of 8 proposals"):
        graph.invoke(ask())


def test_moa_middle_layer_quorum():
    good, bad = FakeChatModel(model="good"), FakeChatModel(model="bad", fail_rate=1.0)
    graph = create_moa([[good, good], [bad, bad], [good]], aggregator=good, **FAST).compile()
    with pytest.raises(ProposalsFailedError, match="layer 2"):
        graph.invoke(ask())
    assert not [c for c in good.calls if c.metadata.get("selfmoa_layer") == 3]


def test_retry_recovers_a_transient_failure():
    model = FakeChatModel(fail_first=1, latency=0)
    out = create_self_moa(model, samples=1, **FAST).compile().invoke(ask())
    assert out["proposals"][0]["error"] is None
    assert len(model.calls) == 3  # failed attempt, retry, aggregation


def test_aggregator_failure_is_retried_then_clear_and_proposals_are_kept():
    worker = FakeChatModel(model="worker")
    judge = FakeChatModel(model="judge", fail_rate=1.0)
    graph = create_self_moa(worker, samples=3, aggregator=judge, **FAST).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "agg-fails"}}
    with pytest.raises(AggregationError) as err:
        graph.invoke(ask(), config)
    assert len(judge.calls) == 2, "retried once"
    assert "aggregator 'judge' failed in at most 2 attempt(s)" in str(err.value)
    assert "invoke the same thread again to resume" in str(err.value)
    kept = graph.get_state(config).values["proposals"]
    assert len(kept) == 3 and all(p["text"] for p in kept)


def test_hanging_proposer_is_cut_by_the_timeout_sync_and_async():
    slow = FakeChatModel(latency=5.0)
    graph = create_self_moa(slow, samples=2, aggregator=FakeChatModel(), timeout=0.2, max_attempts=1).compile()
    with pytest.raises(ProposalsFailedError, match="TimeoutError: model call took longer than 0.2s"):
        asyncio.run(graph.ainvoke(ask()))
    with pytest.raises(ProposalsFailedError, match="TimeoutError"):
        graph.invoke(ask())


def test_empty_proposal_counts_as_failed_not_padded():
    model = FakeChatModel(reply=lambda call: "" if call.sample == 1 and call.role == "proposer" else "ok text")
    out = create_self_moa(model, samples=3, **FAST).compile().invoke(ask())
    assert [p["error"] for p in out["proposals"]] == [None, "empty response", None]
    assert out["aggregations"][0]["sample_ids"] == [0, 2]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda m: create_self_moa(m, samples=0), "create_self_moa(): samples must be an integer of at least 1, got 0"),
        (lambda m: create_self_moa(m, samples=2.5), "samples must be an integer"),
        (lambda m: create_self_moa(m, samples=True), "samples must be an integer"),
        (lambda m: create_self_moa(m, temperature=-0.1), "temperature"),
        (lambda m: create_self_moa(m, max_attempts=0), "max_attempts"),
        (lambda m: create_self_moa(m, timeout=0), "timeout"),
        (lambda m: create_self_moa(m, samples=2, min_proposals=3), "min_proposals=3 exceeds the 2 proposals"),
        (lambda m: create_self_moa(m, bogus=1), "create_self_moa() got unknown option 'bogus'"),
        (lambda m: create_self_moa(42), "model"),
        (lambda m: create_self_moa(m, prompt="Synthesize these."), "{references} placeholder"),
        (lambda m: create_moa([], aggregator=m), "layers must be a non-empty list of lists"),
        (lambda m: create_moa([[m], []], aggregator=m), "layer 2 must be a non-empty list of models"),
        (lambda m: create_moa([m, m], aggregator=m), "layer 1 must be a non-empty list of models"),
        (lambda m: create_moa([[m]], aggregator=None), "aggregator is required"),
        (lambda m: create_self_moa_seq(m, samples=10, window=6, reserved=6), "0 < reserved < window"),
        (lambda m: create_self_moa_seq(m, samples=10, window=4, reserved=5), "0 < reserved < window"),
        (lambda m: create_self_moa_seq(m, samples=10, reserved=0), "reserved must be an integer of at least 1"),
        (lambda m: create_self_moa_seq(m, samples=10, window=1), "window must be an integer of at least 2"),
        (lambda m: create_self_moa_seq(m, samples=-3), "samples must be an integer of at least 1"),
    ],
)
def test_bad_arguments_fail_at_build_time_with_one_line(build, message):
    with pytest.raises(SpecError) as err:
        build(FakeChatModel())
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("payload", [{"messages": []}, {}])
def test_no_messages_is_a_clear_error(payload):
    graph = create_self_moa(FakeChatModel(), samples=2).compile()
    with pytest.raises(InputError, match=r"input has no messages; invoke the graph with \{'messages'"):
        graph.invoke(payload)


# --- more faults: failure rates on MoA and Self-MoA-Seq ------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5])
@pytest.mark.parametrize("method", ["moa", "seq"])
def test_failure_rates_on_moa_and_seq_produce_answers_and_record_failures(rate, method):
    proposer, aggregator = FakeChatModel(model="p", fail_rate=rate), FakeChatModel(model="agg")
    if method == "moa":
        graph = create_moa([[proposer] * 6] * 2, aggregator=aggregator, max_attempts=1)
    else:
        graph = create_self_moa_seq(proposer, samples=12, window=6, reserved=3, aggregator=aggregator, max_attempts=1)
    result = graph.compile().invoke(ask())
    failed = [p for p in result["proposals"] if p["error"]]
    assert result["answer"]
    assert all("FakeModelError" in p["error"] and p["text"] == "" for p in failed)
    assert bool(failed) == (rate > 0), "injected failures are recorded, and only those"
    steps = [i for a in result["aggregations"] for i in a["sample_ids"]] if method == "seq" else []
    assert not set(steps) & {p["sample"] for p in failed}, "failed samples are never aggregated"


# --- timeouts: a model that only blocks is cut on time under ainvoke too ------------------------


class BlockingModel(BaseChatModel):
    """Implements only the blocking `_generate`, and hangs in it."""

    seconds: float = 10.0

    @property
    def _llm_type(self) -> str:
        return "blocking"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        time.sleep(self.seconds)
        return ChatResult(generations=[ChatGeneration(message=AIMessage("late"))])


def test_a_timed_out_blocking_model_does_not_hold_up_asyncio_run():
    graph = create_self_moa(BlockingModel(), samples=3, timeout=0.5, max_attempts=1).compile()
    started = time.perf_counter()
    with pytest.raises(ProposalsFailedError) as err:
        asyncio.run(graph.ainvoke(ask()))
    elapsed = time.perf_counter() - started
    assert elapsed < 3, f"the run ended after {elapsed:.1f}s; the timeout was 0.5s"
    assert "3 of 3 proposals failed: TimeoutError: model call took longer than 0.5s" in str(err.value)


def test_a_blocking_model_still_answers_under_ainvoke():
    graph = create_self_moa(BlockingModel(seconds=0.01), samples=2, timeout=5).compile()
    assert asyncio.run(graph.ainvoke(ask()))["answer"] == "late"


# --- a failure is said once: grouped in the quorum error and in the CLI's output ------------------


def test_the_cli_says_an_unreachable_endpoint_once(capsys):
    model = f"openai:m@http://127.0.0.1:{free_port()}/v1"
    assert cli_main(["run", "--model", model, "--samples", "6", "--timeout", "5", "What is 17*3?"]) == 2
    err = capsys.readouterr().err
    assert err.count("Connection error") == 1, err
    assert "6 of 6 proposals failed: OpenAIConnectionError: Connection error." in err and "(m[0-5])" in err
    assert err.splitlines()[-1].startswith("selfmoa: error: only 0 of 6 proposals of layer 1 succeeded")


def test_the_cli_summarises_failures_of_a_run_that_goes_on(capsys, providers):
    providers(flaky=lambda name, **kw: FakeChatModel(model="flaky", fail_samples={1, 3, 5}))
    spec = Path(os.environ.get("TMPDIR", "/tmp")) / f"flaky-{os.getpid()}.yaml"
    spec.write_text("layers: [[{model: 'flaky:x', samples: 6}]]\nmax_attempts: 1\nmin_proposals: 2\n")
    try:
        assert cli_main(["run", "--spec", str(spec), "What is 17*3?"]) == 0
    finally:
        spec.unlink()
    err = capsys.readouterr().err
    assert "layer 1: 3 ok, 3 failed" in err
    # The fake names the sample in its error, so there are three distinct errors, each said once.
    for sample in (1, 3, 5):
        assert err.count(f"(sample {sample})") == 1, err


def _refused(call) -> str:
    raise ConnectionRefusedError("connection refused by 127.0.0.1:9")


def test_the_quorum_error_groups_identical_failures():
    graph = create_self_moa(FakeChatModel(model="m", reply=_refused), samples=6, max_attempts=1).compile()
    with pytest.raises(ProposalsFailedError) as err:
        graph.invoke(ask())
    assert str(err.value) == (
        "only 0 of 6 proposals of layer 1 succeeded, 1 needed (min_proposals): 6 of 6 proposals failed: "
        "ConnectionRefusedError: connection refused by 127.0.0.1:9 - cannot reach the endpoint; is the server "
        "running and the base URL right? (m[0-5]); fix the model or endpoint, or lower min_proposals"
    )


# --- a failure in the middle of a streamed answer ----------------------------------------------


def _streaming_pair():
    proposer = FakeChatModel(model="p")
    aggregator = FakeChatModel(model="agg", fail_mid_stream=1)  # its first streamed reply breaks after one word
    return proposer, aggregator


def test_a_streamed_answer_that_fails_midway_ends_with_an_error_not_a_second_attempt():
    from selfmoa import AggregationError, MoAChatModel

    proposer, aggregator = _streaming_pair()
    graph = create_self_moa(proposer, samples=2, aggregator=aggregator, retry_delay=0).compile()
    chunks: list[str] = []
    with pytest.raises(AggregationError, match="an answer that began to stream is not tried again"):
        for message, _ in graph.stream({"messages": [("user", "Hi")]}, stream_mode="messages"):
            chunks.append(message.content)
    # One word of the one attempt reached the consumer, and no retry joined a second answer to it.
    assert len(aggregator.calls) == 1 and len(chunks) == 1 and " " not in chunks[0]

    proposer, aggregator = _streaming_pair()
    chat = MoAChatModel(graph=create_self_moa(proposer, samples=2, aggregator=aggregator, retry_delay=0).compile())
    with pytest.raises(AggregationError):
        list(chat.stream("Hi"))
    assert len(aggregator.calls) == 1


def test_without_streaming_the_same_failure_is_retried():
    proposer, aggregator = _streaming_pair()
    aggregator.fail_first = 1  # fails before any token: retried, as any call
    out = create_self_moa(proposer, samples=2, aggregator=aggregator, retry_delay=0).compile().invoke(
        {"messages": [("user", "Hi")]})
    assert out["answer"] and len(aggregator.calls) == 2
