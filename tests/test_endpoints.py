"""OpenAI-compatible endpoints: the real ChatOpenAI client against a loopback stub server."""

from __future__ import annotations

import asyncio

import pytest
from helpers import ask
from openai_stub import OpenAIStub

from selfmoa import ModelResolutionError, ProposalsFailedError, create_model, create_self_moa


def model(stub: OpenAIStub) -> str:
    return f"openai:stub-model@{stub.base_url}"


def test_parallel_sampling_is_the_default():
    with OpenAIStub() as stub:
        out = create_self_moa(model(stub), samples=4, seed=3).compile().invoke(ask())
    proposer_requests = [r for r in stub.requests if len(r["messages"]) == 1]
    assert len(proposer_requests) == 4 and all(r.get("n", 1) == 1 for r in proposer_requests)
    assert sorted(r["seed"] for r in proposer_requests) == [3, 4, 5, 6]
    assert len({p["text"] for p in out["proposals"]}) == 4
    assert out["usage"]["total"]["calls"] == 5


def test_n_sampling_is_one_request_with_usage_counted_once():
    with OpenAIStub() as stub:
        graph = create_self_moa(model(stub), samples=5, sampling="n", seed=1).compile()
        out = graph.invoke(ask())
    assert [r.get("n", 1) for r in stub.requests] == [5, 1]
    texts = [p["text"] for p in out["proposals"]]
    assert len(texts) == 5 and len(set(texts)) == 5, "five distinct choices, no copies"
    prompt = len("What is 17*3?".split())
    completions = sum(len(t.split()) for t in texts)
    proposer_usage = [p["usage"] for p in out["proposals"]]
    assert sum(u["input_tokens"] for u in proposer_usage) == prompt, "the prompt is counted once"
    assert sum(u["output_tokens"] for u in proposer_usage) == completions
    assert sum(u["calls"] for u in proposer_usage) == 1
    assert out["usage"]["total"]["calls"] == 2
    assert out["warnings"] == []


def test_fewer_choices_than_asked_are_detected_and_drawn_separately():
    with OpenAIStub(max_choices=2) as stub:
        out = asyncio.run(create_self_moa(model(stub), samples=6, sampling="n").compile().ainvoke(ask()))
    proposer_requests = [r for r in stub.requests if len(r["messages"]) == 1]
    assert [r.get("n", 1) for r in proposer_requests].count(6) == 1
    assert len(proposer_requests) == 1 + 4
    assert [p["sample"] for p in out["proposals"]] == list(range(6))
    assert len({p["text"] for p in out["proposals"]}) == 6
    assert any("returned 2 of 6 choices" in w for w in out["warnings"])
    assert out["usage"]["total"]["calls"] == 1 + 4 + 1


def test_endpoint_refusing_n_gets_separate_requests():
    with OpenAIStub(max_n=2) as stub:
        out = create_self_moa(model(stub), samples=4, sampling="n", seed=1).compile().invoke(ask())
    proposer_requests = [r for r in stub.requests if len(r["messages"]) == 1]
    assert [r.get("n", 1) for r in proposer_requests] == [4, 1, 1, 1, 1]
    assert sorted(r["seed"] for r in proposer_requests[1:]) == [1, 2, 3, 4]
    assert [p["error"] for p in out["proposals"]] == [None] * 4
    assert any("rejected n=4" in w for w in out["warnings"])
    assert out["usage"]["total"]["calls"] == 5


def test_usage_reported_for_one_choice_is_flagged():
    with OpenAIStub(usage="first") as stub:
        out = create_self_moa(model(stub), samples=6, sampling="n").compile().invoke(ask())
    assert any("looks like one choice's worth" in w for w in out["warnings"])


def test_streamed_run_keeps_token_counts():
    with OpenAIStub() as stub:
        graph = create_self_moa(model(stub), samples=2).compile()
        tokens, final = [], None
        for mode, part in graph.stream(ask(), stream_mode=["messages", "values"]):
            if mode == "messages":
                tokens.append(part[0].content)
            else:
                final = part
    assert stub.requests[-1]["stream"] is True, "the final aggregation streamed"
    assert stub.requests[-1]["stream_options"] == {"include_usage": True}
    assert "".join(tokens) == final["answer"]
    agg_usage = final["aggregations"][0]["usage"]
    assert agg_usage["output_tokens"] == len(final["answer"].split()) and agg_usage["input_tokens"] > 0


def test_key_from_a_named_environment_variable_and_never_in_state(monkeypatch):
    secret = "sk-stub-secret-123"
    monkeypatch.setenv("STUB_KEY", secret)
    with OpenAIStub(api_key=secret) as stub:
        graph = create_self_moa(f"{model(stub)}?key_env=STUB_KEY", samples=2).compile()
        out = graph.invoke(ask())
    assert set(stub.auth_headers) == {f"Bearer {secret}"}
    assert secret not in repr(out)


def test_rejected_key_and_unreachable_endpoint_name_the_fix(monkeypatch):
    monkeypatch.setenv("STUB_KEY", "wrong")
    with OpenAIStub(api_key="right") as stub:
        graph = create_self_moa(f"{model(stub)}?key_env=STUB_KEY", samples=2, max_attempts=1).compile()
        with pytest.raises(ProposalsFailedError, match="rejected the API key") as err:
            graph.invoke(ask())
        assert "\n" not in str(err.value)
        port = stub.base_url
    graph = create_self_moa(f"openai:m@{port}", samples=1, max_attempts=1).compile()
    with pytest.raises(ProposalsFailedError, match="cannot reach the endpoint"):
        graph.invoke(ask())


def test_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("REMOTE_KEY", raising=False)
    with pytest.raises(ModelResolutionError, match="needs an API key: set OPENAI_API_KEY"):
        create_model("openai:gpt-4o-mini")
    with pytest.raises(ModelResolutionError, match="set the REMOTE_KEY environment variable"):
        create_model("openai:m@https://api.example.invalid/v1?key_env=REMOTE_KEY")
    graph = create_self_moa("openai:gpt-4o-mini", samples=1).compile()
    with pytest.raises(ModelResolutionError, match="needs an API key"):
        graph.invoke(ask())


def test_a_loopback_endpoint_works_across_event_loops():
    # langchain-openai caches one async HTTP client per base URL for the whole process;
    # with pooled keep-alive connections, a second asyncio.run (CLI, tests, threads) used
    # to fail with "Event loop is closed" on connections of the first loop.
    import asyncio

    with OpenAIStub(keep_alive=True) as stub:
        replies = []
        for _ in range(3):
            model = create_model(f"openai:m@{stub.base_url}")
            replies.append(asyncio.run(model.ainvoke("Hi")).text)
            replies.append(model.invoke("Hi").text)
        assert len(stub.requests) == 6 and all(replies)


def test_missing_choices_are_propose_tasks_of_their_own():
    # Each late sample is a `Send` of its own: it shows in traces and streams, and a
    # checkpointer does not redo it on resume.
    with OpenAIStub(max_choices=2) as stub:
        graph = create_self_moa(model(stub), samples=4, sampling="n").compile()
        updates = list(graph.stream(ask(), stream_mode="updates"))
    drawn = [[p["sample"] for p in u["propose"]["proposals"]] for u in updates if "propose" in u]
    assert drawn[0] == [0, 1] and sorted(drawn[1:]) == [[2], [3]]
