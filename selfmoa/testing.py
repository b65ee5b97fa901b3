"""A deterministic fake chat model for tests, yours and ours.

`FakeChatModel` stands in for a real model the way httpx's `MockTransport` stands in for a
network: replies are a pure function of the prompt, the model name, the temperature and the
sample (or seed), so a parallel run gives the same result every time. It reports token
usage (also when streamed), honours `n`, simulates latency and injects failures, and it
records every call for assertions.

The fakes in `langchain_core` do not fit here: they ignore temperature and `n`, lose usage
when streamed, and hand parallel branches replies in arrival order.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from pydantic import Field, PrivateAttr

__all__ = ["FakeCall", "FakeChatModel", "FakeModelError", "count_tokens"]


_CALL_METADATA: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("fake_call_metadata", default={})  # noqa: B039 - never mutated: set() replaces it


class FakeModelError(ConnectionError):
    """An injected failure; a `ConnectionError`, so callers treat it as transient."""


@dataclass
class FakeCall:
    """One call of a `FakeChatModel`, as recorded in `FakeChatModel.calls`."""

    model: str
    messages: list[BaseMessage]
    temperature: float | None
    seed: int | None
    sample: int
    role: str | None
    n: int
    metadata: dict[str, Any] = field(default_factory=dict)
    """Run metadata of the call (LangGraph adds `langgraph_node`, `langgraph_step`, ...)."""
    replies: list[str] = field(default_factory=list)
    failed: bool = False

    @property
    def prompt(self) -> str:
        """All message texts of the call, joined by newlines."""
        return "\n".join(m.text for m in self.messages)


def count_tokens(text: str) -> int:
    """The fake's token count: whitespace-separated words."""
    return len(text.split())


class FakeChatModel(BaseChatModel):
    """Deterministic chat model with usage, latency, `n`, streaming and injected failures.

    The reply to a call depends only on the model name, the prompt, the temperature and
    a variant: the `seed` if one is passed, else (when the temperature is above 0) the
    sample index that selfmoa puts in the call's metadata. At temperature 0 every sample
    is the same, as with greedy decoding.

    Example:
        >>> fake = FakeChatModel(model="m", latency=0.0)
        >>> fake.invoke("What is 17*3?").usage_metadata["input_tokens"]
        3
        >>> fake.invoke("What is 17*3?", temperature=0.7, seed=1).content != fake.invoke(
        ...     "What is 17*3?", temperature=0.7, seed=2).content
        True
    """

    model: str = "fake"
    """Model name; part of every reply and used as the label in selfmoa."""
    temperature: float | None = None
    """Default temperature when a call passes none."""
    latency: float = Field(default=0.0, ge=0)
    """Seconds each call takes (slept, so parallel calls overlap)."""
    fail_rate: float = Field(default=0.0, ge=0, le=1)
    """Fraction of calls that fail, picked deterministically from the call's inputs."""
    fail_samples: frozenset[int] = frozenset()
    """Sample indices whose calls always fail."""
    fail_roles: frozenset[str] = frozenset()
    """selfmoa roles (`"proposer"`, `"aggregator"`) whose calls always fail."""
    fail_first: int = Field(default=0, ge=0)
    """The first this many calls fail, then calls succeed (for retry tests)."""
    fail_mid_stream: int = Field(default=0, ge=0)
    """The first this many streamed calls fail after their first chunk (a connection lost mid-answer)."""
    reply: Callable[[FakeCall], str] | None = None
    """Custom reply function; the default reply names the model and a digest of the input."""
    max_n: int | None = None
    """Most choices one call returns; asking for more returns this many (like some servers)."""
    n_usage: Literal["all", "first"] = "all"
    """Usage of an `n>1` call: all choices (OpenAI), or the first choice's only (some servers)."""

    _calls: list[FakeCall] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _in_flight: int = PrivateAttr(default=0)
    _peak: int = PrivateAttr(default=0)
    _streamed: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "selfmoa-fake"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "temperature": self.temperature}

    def _combine_llm_outputs(self, llm_outputs: list[dict | None]) -> dict:
        totals: dict[str, int] = {}
        for output in llm_outputs:
            for key, value in ((output or {}).get("token_usage") or {}).items():
                totals[key] = totals.get(key, 0) + value
        return {"model_name": self.model, "token_usage": totals}

    @property
    def calls(self) -> list[FakeCall]:
        """A copy of the calls made so far, in the order they started."""
        with self._lock:
            return list(self._calls)

    @property
    def peak_concurrency(self) -> int:
        """The largest number of calls that were in progress at the same time."""
        return self._peak

    def reset(self) -> None:
        """Forget the recorded calls and the peak concurrency."""
        with self._lock:
            self._calls.clear()
            self._peak = 0

    def default_reply(self, call: FakeCall, variant: int) -> str:
        """The reply used when no `reply` function is set."""
        temperature = call.temperature or 0.0
        key = f"{self.model}|{temperature:g}|{variant if temperature > 0 else 0}|{call.prompt}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        candidates = call.prompt.count("[Response ")
        if candidates and '"Response N"' in call.prompt:
            # Asked to choose among numbered candidates (selfmoa's select mode), it names
            # one, as an instruction-following model would: a pure function of the prompt.
            return f"Response {1 + int(digest, 16) % candidates}"
        question = next((m.text for m in reversed(call.messages) if isinstance(m, HumanMessage)), "")
        topic = " ".join(question.split()[:8])
        return f"{self.model} answer {digest}: {topic}".strip()

    # LangChain calls `_stream` without its run manager, so the run metadata (where selfmoa
    # puts the sample index) is captured at the public entry points instead.
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AIMessage:
        """`BaseChatModel.invoke`, noting the call's run metadata for the reply."""
        token = _CALL_METADATA.set(dict((config or {}).get("metadata") or {}))
        try:
            return super().invoke(input, config, **kwargs)
        finally:
            _CALL_METADATA.reset(token)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> AIMessage:
        """`BaseChatModel.ainvoke`, noting the call's run metadata for the reply."""
        token = _CALL_METADATA.set(dict((config or {}).get("metadata") or {}))
        try:
            return await super().ainvoke(input, config, **kwargs)
        finally:
            _CALL_METADATA.reset(token)

    # --- internals -------------------------------------------------------------------

    def _start(self, messages: list[BaseMessage], run_manager: Any, kwargs: dict) -> FakeCall:
        meta = {**_CALL_METADATA.get(), **(getattr(run_manager, "metadata", None) or {})}
        call = FakeCall(
            model=self.model,
            messages=list(messages),
            temperature=kwargs.get("temperature", self.temperature),
            seed=kwargs.get("seed"),
            sample=int(meta.get("selfmoa_sample", 0)),
            role=meta.get("selfmoa_role"),
            n=min(int(kwargs.get("n") or 1), self.max_n or 1 << 30),
            metadata=dict(meta),
        )
        with self._lock:
            self._calls.append(call)
            index = len(self._calls)
            self._in_flight += 1
            self._peak = max(self._peak, self._in_flight)
        call.failed = self._should_fail(call, index)
        return call

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _should_fail(self, call: FakeCall, index: int) -> bool:
        if index <= self.fail_first or call.sample in self.fail_samples or call.role in self.fail_roles:
            return True
        if self.fail_rate <= 0:
            return False
        key = f"fail|{self.model}|{call.sample}|{call.seed}|{call.prompt}"
        draw = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return draw < self.fail_rate

    def _finish(self, call: FakeCall) -> ChatResult:
        if call.failed:
            raise FakeModelError(f"injected failure of fake model {self.model!r} (sample {call.sample})")
        base = call.seed if call.seed is not None else call.sample
        call.replies = [
            self.reply(call) if self.reply else self.default_reply(call, base + i) for i in range(call.n)
        ]
        input_tokens = sum(count_tokens(m.text) for m in call.messages)
        replies = call.replies if self.n_usage == "all" else call.replies[:1]
        total_out = sum(count_tokens(t) for t in replies)
        # Like LangChain's OpenAI integration, every choice carries the usage of the whole
        # response (prompt counted once, all choices' completions), not its own share.
        usage = _usage(input_tokens, total_out)
        generations = [ChatGeneration(message=AIMessage(content=t, usage_metadata=usage)) for t in call.replies]
        return ChatResult(generations=generations, llm_output={"model_name": self.model, "token_usage": usage})

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._start(messages, run_manager, kwargs)
        try:
            time.sleep(self.latency)
            return self._finish(call)
        finally:
            self._end()

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._start(messages, run_manager, kwargs)
        try:
            await asyncio.sleep(self.latency)
            return self._finish(call)
        finally:
            self._end()

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._start(messages, run_manager, kwargs)
        try:
            time.sleep(self.latency)
            result = self._finish(call)
        finally:
            self._end()
        yield from self._cut(_chunks(result))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._start(messages, run_manager, kwargs)
        try:
            await asyncio.sleep(self.latency)
            result = self._finish(call)
        finally:
            self._end()
        for chunk in self._cut(_chunks(result)):
            yield chunk

    def _cut(self, chunks: Sequence[ChatGenerationChunk]) -> Iterator[ChatGenerationChunk]:
        """The chunks of a streamed reply, or its first chunk and then a failure (`fail_mid_stream`)."""
        with self._lock:
            self._streamed += 1
            fails = self._streamed <= self.fail_mid_stream
        if not fails:
            yield from chunks
            return
        yield chunks[0]
        raise FakeModelError(f"injected failure of fake model {self.model!r} in the middle of a streamed reply")


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens}


def _chunks(result: ChatResult) -> Sequence[ChatGenerationChunk]:
    # Stream the first choice word by word; usage rides on the last chunk, as OpenAI's
    # stream_options.include_usage does, so streamed runs keep their token counts.
    message = result.generations[0].message
    words = message.text.split(" ")
    chunks = [
        ChatGenerationChunk(message=AIMessageChunk(content=w if i == 0 else " " + w)) for i, w in enumerate(words)
    ]
    usage = getattr(message, "usage_metadata", None)
    chunks.append(ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage)))
    return chunks
