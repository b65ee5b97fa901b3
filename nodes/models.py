"""Turning model names into chat models, and calling them with retries and a time limit.

A model is either a LangChain chat model instance or a string. Strings are resolved lazily,
on first use, so that building a graph creates no client and reads no API key: keys are
read by the client from the environment when it is created, and never enter graph state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig

from selfmoa.nodes.errors import ModelResolutionError
from selfmoa.nodes.state import TokenUsage

ModelLike = str | BaseChatModel
"""A chat model instance, or a string such as `"openai:gpt-4o-mini"` or `"local"`."""

_PROVIDERS: dict[str, Callable[[str], BaseChatModel]] = {}
_CACHE: dict[str, BaseChatModel] = {}
_CACHE_LOCK = threading.Lock()


def register_model_provider(prefix: str, factory: Callable[[str], BaseChatModel]) -> None:
    """Teach `resolve_model` a new model-string prefix.

    Args:
        prefix: The part before the first colon, for example `"local"`.
        factory: Called with the rest of the string (empty when there is none) and
            returns a chat model. Called once per distinct string per process.

    Example:
        >>> from selfmoa.testing import FakeChatModel
        >>> register_model_provider("fake", lambda name: FakeChatModel(model=name or "fake"))
        >>> resolve_model("fake:demo").model
        'demo'
    """
    _PROVIDERS[prefix] = factory


def resolve_model(spec: ModelLike) -> BaseChatModel:
    """Return the chat model for a model instance or string.

    Strings are `"provider:model"` (for example `"openai:gpt-4o-mini"`, which uses
    `langchain-openai`; other providers go through LangChain's `init_chat_model` and need
    `pip install langchain` plus the provider's package), or a prefix registered with
    `register_model_provider` (such as `"local"`). The same string gives the same instance
    for the life of the process.

    Args:
        spec: A chat model (returned as is) or a model string.

    Returns:
        The chat model.

    Raises:
        ModelResolutionError: The string names no known provider or its package is missing.

    Example:
        >>> from selfmoa.testing import FakeChatModel
        >>> m = FakeChatModel()
        >>> resolve_model(m) is m
        True
    """
    if isinstance(spec, BaseChatModel):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ModelResolutionError(
            f"model must be a LangChain chat model or a non-empty string like 'openai:gpt-4o-mini', got {spec!r}"
        )
    with _CACHE_LOCK:
        if spec not in _CACHE:
            _CACHE[spec] = _create(spec.strip())
        return _CACHE[spec]


def _create(spec: str) -> BaseChatModel:
    prefix, _, rest = spec.partition(":")
    if prefix in _PROVIDERS:
        return _PROVIDERS[prefix](rest)
    if prefix == "openai" and rest:
        from langchain_openai import ChatOpenAI

        # Retries happen in selfmoa's own call layer; a second layer in the client would
        # multiply attempts. stream_usage keeps token counts when a run is streamed.
        return ChatOpenAI(model=rest, max_retries=0, stream_usage=True)
    try:
        from langchain.chat_models import init_chat_model
    except ImportError:
        raise ModelResolutionError(
            f"model {spec!r} needs LangChain's init_chat_model: run `pip install langchain` and the "
            "provider's package (e.g. langchain-anthropic), or pass a chat model instance"
        ) from None
    try:
        return init_chat_model(spec)
    except (ValueError, ImportError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelResolutionError(
            f"cannot create model {spec!r}: {first_line} (use 'provider:model', e.g. 'openai:gpt-4o-mini')"
        ) from None


def model_label(model: ModelLike) -> str:
    """A short, readable name for a model, used in proposals and usage.

    Example:
        >>> model_label("openai:gpt-4o-mini")
        'openai:gpt-4o-mini'
    """
    if isinstance(model, str):
        return model.strip()
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return model.get_name()


class ModelTable:
    """The models of one graph, by label.

    Instances stay in this table (in the graph's closures), never in graph state or
    checkpoints; `Send` payloads and state carry only the labels.
    """

    def __init__(self) -> None:
        self._models: dict[str, ModelLike] = {}

    def add(self, model: ModelLike) -> str:
        """Register a model and return its label (distinct instances get distinct labels)."""
        if not isinstance(model, (str, BaseChatModel)):
            raise ModelResolutionError(
                f"model must be a LangChain chat model or a string like 'openai:gpt-4o-mini', got {type(model).__name__}"
            )
        base = model_label(model)
        label, n = base, 1
        while label in self._models and not _same(self._models[label], model):
            n += 1
            label = f"{base}#{n}"
        self._models[label] = model
        return label

    def get(self, label: str) -> BaseChatModel:
        """Return the chat model for a label, resolving model strings on first use."""
        return resolve_model(self._models.get(label, label))


def _same(a: ModelLike, b: ModelLike) -> bool:
    return a == b if isinstance(a, str) and isinstance(b, str) else a is b


def usage_of(message: BaseMessage) -> TokenUsage:
    """Token usage of one call, read from the message the model returned."""
    meta = getattr(message, "usage_metadata", None) or {}
    inp, out = int(meta.get("input_tokens", 0)), int(meta.get("output_tokens", 0))
    return TokenUsage(
        input_tokens=inp, output_tokens=out, total_tokens=int(meta.get("total_tokens", inp + out)), calls=1
    )


def text_of(message: BaseMessage) -> str:
    """The plain text of a model's reply (content blocks joined)."""
    return message.text.strip() if hasattr(message, "text") else str(message.content).strip()


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed call is worth another attempt (timeouts, connection errors, 408/429/5xx)."""
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return status in (408, 409, 429) or status >= 500
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    name = type(exc).__name__
    if "Timeout" in name or "Connection" in name:
        return True
    return not isinstance(exc, (ValueError, TypeError, LookupError, AttributeError, ImportError, NotImplementedError))


def describe_error(exc: BaseException) -> str:
    """One line naming the error type and its message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class CallPolicy:
    """How a node calls its model: attempts, pause between them and a per-call time limit.

    Args:
        max_attempts: Attempts per call (1 means no retry). Set 1 when the client already
            retries, so there is one retry layer.
        retry_delay: Seconds before the first retry, doubled each time.
        timeout: Seconds one attempt may take, or None for no limit.
    """

    def __init__(self, *, max_attempts: int = 2, retry_delay: float = 0.5, timeout: float | None = None):
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.timeout = timeout

    def invoke(
        self, model: BaseChatModel, messages: Sequence[BaseMessage], config: RunnableConfig, **kwargs: Any
    ) -> AIMessage:
        """Call `model.invoke` with retries; raises the last error."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                if self.timeout is None:
                    return model.invoke(list(messages), config, **kwargs)  # type: ignore[return-value]
                return _invoke_with_timeout(model, messages, config, self.timeout, kwargs)
            except Exception as exc:  # noqa: BLE001 - decided by is_retryable
                if attempt == self.max_attempts or not is_retryable(exc):
                    raise
                time.sleep(self.retry_delay * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def ainvoke(
        self, model: BaseChatModel, messages: Sequence[BaseMessage], config: RunnableConfig, **kwargs: Any
    ) -> AIMessage:
        """Call `model.ainvoke` with retries; raises the last error."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                call = model.ainvoke(list(messages), config, **kwargs)
                if self.timeout is None:
                    return await call  # type: ignore[return-value]
                try:
                    return await asyncio.wait_for(call, self.timeout)  # type: ignore[return-value]
                except asyncio.TimeoutError:
                    raise TimeoutError(f"model call took longer than {self.timeout:g}s") from None
            except Exception as exc:  # noqa: BLE001 - decided by is_retryable
                if attempt == self.max_attempts or not is_retryable(exc):
                    raise
                await asyncio.sleep(self.retry_delay * 2 ** (attempt - 1))
        raise AssertionError("unreachable")


def _invoke_with_timeout(
    model: BaseChatModel, messages: Sequence[BaseMessage], config: RunnableConfig, timeout: float, kwargs: dict
) -> AIMessage:
    # A blocking call cannot be cancelled, so it runs in a daemon thread that is abandoned
    # (not killed) when it overruns and cannot hold up interpreter exit; copying the
    # context keeps callbacks and streaming attached to the run.
    outcome: concurrent.futures.Future = concurrent.futures.Future()
    ctx = contextvars.copy_context()

    def run() -> None:
        try:
            outcome.set_result(ctx.run(model.invoke, list(messages), config, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            outcome.set_exception(exc)

    threading.Thread(target=run, name="selfmoa-call", daemon=True).start()
    try:
        return outcome.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"model call took longer than {timeout:g}s") from None
