"""The graphs on the real embedded models (llama.cpp in-process): marked `local_model`."""

from __future__ import annotations

import asyncio
import json

import pytest

from selfmoa import create_model, create_self_moa, create_self_moa_seq
from selfmoa.cli import main
from selfmoa.local import local_chat_model, start_local_server

pytestmark = pytest.mark.local_model

QUESTION = {"messages": [("user", "Name one primary color. Answer in one short sentence.")]}


@pytest.fixture(scope="module")
def smol():
    return local_chat_model("smollm2-135m", slots=6, max_tokens=32)


def test_self_moa_on_smollm2_sync_and_async(smol):
    graph = create_self_moa(smol, samples=3, seed=7).compile()
    for out in (graph.invoke(QUESTION), asyncio.run(graph.ainvoke(QUESTION))):
        assert [p["error"] for p in out["proposals"]] == [None, None, None]
        assert all(p["usage"]["output_tokens"] > 0 and p["usage"]["input_tokens"] > 0 for p in out["proposals"])
        assert out["answer"].strip() and out["messages"][-1].content == out["answer"]
        total = out["usage"]["total"]
        assert total["calls"] == 4
        assert total["output_tokens"] == sum(p["usage"]["output_tokens"] for p in out["proposals"]) + out[
            "aggregations"
        ][0]["usage"]["output_tokens"]


def test_self_moa_seq_on_smollm2(smol):
    out = create_self_moa_seq(smol, samples=7, window=4, reserved=2).compile().invoke(QUESTION)
    assert [a["sample_ids"] for a in out["aggregations"]] == [[0, 1, 2, 3], [4, 5], [6]]
    assert out["answer"].strip()


def test_n_choices_in_one_request_are_distinct_and_usage_is_checked(smol):
    out = create_self_moa(smol, samples=4, sampling="n", seed=3, temperature=1.0).compile().invoke(QUESTION)
    texts = [p["text"] for p in out["proposals"]]
    assert len(texts) == 4 and len(set(texts)) == 4, "four distinct choices, no copies"
    assert out["usage"]["total"]["calls"] == 2, "one request for the samples, one to aggregate"
    # llama.cpp reports one choice's completion tokens for n>1; the run says so.
    assert any("looks like one choice's worth" in w for w in out["warnings"])


def test_endpoint_refusing_n_falls_back_to_separate_requests():
    # A private two-slot llama.cpp server, reached as any OpenAI-compatible endpoint: it
    # refuses n above its slot count with HTTP 400.
    with start_local_server("smollm2-135m", slots=2) as server:
        model = create_model(f"openai:{server.model_name}@{server.base_url}", max_tokens=24)
        out = create_self_moa(model, samples=4, sampling="n", temperature=1.0).compile().invoke(QUESTION)
    assert any("rejected n=4" in w and "separate requests" in w for w in out["warnings"])
    assert [p["error"] for p in out["proposals"]] == [None] * 4
    assert out["usage"]["total"]["calls"] == 4 + 1


def test_readme_main_job_on_the_default_model(capsys):
    assert main(["run", "--samples", "3", "--max-tokens", "64", "--seed", "1", "--json", "What is 17*3?"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["proposals"]) == 3 and report["usage"]["total"]["calls"] == 4
    assert {p["model"] for p in report["proposals"]} == {"qwen2.5-coder-0.5b"}
    assert "51" in report["answer"]
