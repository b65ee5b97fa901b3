"""The shipped fake chat model: determinism, n, seeds, streaming usage, latency, failures."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from langchain_core.messages import HumanMessage

from selfmoa.testing import FakeChatModel, FakeModelError, count_tokens


def test_reply_is_a_pure_function_of_inputs():
    a, b = FakeChatModel(model="m"), FakeChatModel(model="m")
    assert a.invoke("hello there").content == b.invoke("hello there").content
    assert a.invoke("hello there").content != FakeChatModel(model="other").invoke("hello there").content
    assert a.invoke("hello", temperature=0.0, seed=1).content == a.invoke("hello", temperature=0.0, seed=2).content
    assert a.invoke("hello", temperature=0.5, seed=1).content != a.invoke("hello", temperature=0.5, seed=2).content
    assert a.invoke("hello", temperature=0.5, seed=1).content != a.invoke("hello", temperature=0.9, seed=1).content


def test_usage_counts_words_also_when_streamed():
    model = FakeChatModel(model="m")
    message = model.invoke("one two three")
    assert message.usage_metadata == {
        "input_tokens": 3,
        "output_tokens": count_tokens(message.content),
        "total_tokens": 3 + count_tokens(message.content),
    }
    chunks = list(model.stream("one two three"))
    assert len(chunks) > 2
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.content == message.content
    assert merged.usage_metadata == message.usage_metadata


def test_n_gives_n_distinct_choices_with_their_usage():
    model = FakeChatModel(model="m")
    result = model.generate([[HumanMessage("pick a number")]], n=4, temperature=1.0)
    texts = [g.text for g in result.generations[0]]
    assert len(texts) == 4 and len(set(texts)) == 4
    assert result.llm_output["token_usage"]["output_tokens"] == sum(count_tokens(t) for t in texts)
    assert model.calls[-1].n == 4


def test_latency_overlaps_in_parallel_and_peak_is_tracked():
    model = FakeChatModel(latency=0.2)
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(model.invoke, ["a", "b", "c", "d"]))
    assert time.perf_counter() - start < 0.6
    assert model.peak_concurrency == 4

    async def many():
        return await asyncio.gather(*(model.ainvoke(str(i)) for i in range(5)))

    model.reset()
    asyncio.run(many())
    assert model.peak_concurrency == 5 and len(model.calls) == 5


def test_injected_failures():
    with pytest.raises(FakeModelError, match="injected failure"):
        FakeChatModel(fail_rate=1.0).invoke("x")
    flaky = FakeChatModel(fail_first=2)
    for _ in range(2):
        with pytest.raises(FakeModelError):
            flaky.invoke("x")
    assert flaky.invoke("x").content
    half = FakeChatModel(fail_rate=0.5)
    outcomes = []
    for i in range(40):
        try:
            half.invoke(f"question {i}")
            outcomes.append(True)
        except FakeModelError:
            outcomes.append(False)
    assert 8 < outcomes.count(False) < 32
    # Deterministic: the same inputs fail the same way again.
    again = FakeChatModel(fail_rate=0.5)
    for i, ok in enumerate(outcomes[:10]):
        try:
            again.invoke(f"question {i}")
            assert ok
        except FakeModelError:
            assert not ok


def test_custom_reply_function_sees_the_call():
    model = FakeChatModel(reply=lambda call: f"echo {call.prompt.upper()} t={call.temperature}")
    assert model.invoke("hi", temperature=0.3).content == "echo HI t=0.3"
