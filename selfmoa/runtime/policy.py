"""How a node calls its model: attempts, the pause between them, a time limit, a shared cap.

A failed attempt is retried when `is_retryable` says it may pass next time (timeouts,
connection errors, 408/409/429/5xx); the last error is raised for the node to record.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs
from langchain_core.tracers._streaming import _StreamingCallbackHandler
from langgraph.constants import TAG_NOSTREAM

from selfmoa.runtime.errors import status_of
from selfmoa.runtime.limiter import CallLimiter

T = TypeVar("T")

MAX_BACKOFF = 60.0
"""Most seconds between two attempts of a call, however many failed before."""


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed call is worth another attempt (timeouts, connection errors, 408/429/5xx)."""
    status = status_of(exc)
    if status is not None:
        return status in (408, 409, 429) or status >= 500
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    # Anything else but a programming or input error may pass on a second attempt (the SDKs'
    # timeout and connection errors included, whatever their names).
    return not isinstance(exc, (ValueError, TypeError, LookupError, AttributeError, ImportError, NotImplementedError))


@dataclass(frozen=True, kw_only=True)
class CallPolicy:
    """How a node calls its model: attempts, pause between them and a per-call time limit.

    Args:
        max_attempts: Attempts per call (1 means no retry). Set 1 when the client already
            retries, so there is one retry layer.
        retry_delay: Seconds before the first retry, doubled each time (at most `MAX_BACKOFF`).
        timeout: Seconds one attempt may take, or None for no limit.
        limiter: A `CallLimiter` shared with other graphs, held around each attempt
            (waiting for it does not count against `timeout`), or None.
    """

    max_attempts: int = 2
    retry_delay: float = 0.5
    timeout: float | None = None
    limiter: CallLimiter | None = None

    def _attempt(self, call: Callable[[], T]) -> T:
        if self.timeout is None:
            with self.limiter or contextlib.nullcontext():
                return call()
        # The slot is held until the call's thread ends, not until the waiter gives up: an
        # abandoned call still loads the endpoint, so calls in flight never exceed the cap.
        if self.limiter is not None:
            self.limiter.acquire()
        try:
            return _start_daemon(call, self._release).result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"model call took longer than {self.timeout:g}s") from None

    async def _aattempt(self, call: Callable[[], Awaitable[T]]) -> T:
        # An awaitable call is cancelled at its time limit, which ends it: the slot goes back then.
        async with self.limiter or contextlib.nullcontext():
            return await self._atimed(call)

    async def _aattempt_blocking(self, call: Callable[[], T]) -> T:
        # A blocking call runs on in its thread when abandoned: its slot is held until it ends.
        if self.limiter is not None:
            await self.limiter.aacquire()
        return await self._atimed(lambda: asyncio.wrap_future(_start_daemon(call, self._release)))

    def _backoff(self, attempt: int) -> float:
        # Doubled after each failed attempt, but never past a minute: with many attempts an
        # uncapped doubling would wait hours before the last one.
        return min(self.retry_delay * 2 ** (attempt - 1), MAX_BACKOFF)

    def _release(self) -> None:
        if self.limiter is not None:
            self.limiter.release()

    async def _atimed(self, call: Callable[[], Awaitable[T]]) -> T:
        if self.timeout is None:
            return await call()
        try:
            return await asyncio.wait_for(call(), self.timeout)
        except TimeoutError:
            raise TimeoutError(f"model call took longer than {self.timeout:g}s") from None

    def run(self, call: Callable[[], T], streamed: _FirstToken | None = None) -> T:
        """Run a blocking call with retries and the time limit; raises the last error.

        A call whose tokens have begun to stream (`streamed`) is not retried: a streaming
        consumer would see two attempts joined. Its error ends the stream instead.
        """
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self._attempt(call)
            except Exception as exc:  # noqa: BLE001 - decided by is_retryable
                if attempt == self.max_attempts or not is_retryable(exc) or (streamed and streamed.seen):
                    raise
                time.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")

    async def arun(self, call: Callable[[], Awaitable[T]], streamed: _FirstToken | None = None) -> T:
        """Await a call with retries and the time limit; raises the last error (see `run`)."""
        return await self._aretry(lambda: self._aattempt(call), streamed)

    async def _aretry(self, attempt: Callable[[], Awaitable[T]], streamed: _FirstToken | None = None) -> T:
        for n in range(1, self.max_attempts + 1):
            try:
                return await attempt()
            except Exception as exc:  # noqa: BLE001 - decided by is_retryable
                if n == self.max_attempts or not is_retryable(exc) or (streamed and streamed.seen):
                    raise
                await asyncio.sleep(self._backoff(n))
        raise AssertionError("unreachable")

    def invoke(
        self, model: BaseChatModel, messages: Sequence[BaseMessage], config: RunnableConfig, **kwargs: Any
    ) -> AIMessage:
        """`model.invoke` under this policy (not retried once its answer has begun to stream)."""
        config, streamed = _watched(config)
        return self.run(lambda: model.invoke(list(messages), config, **kwargs), streamed)  # type: ignore[return-value]

    async def ainvoke(
        self, model: BaseChatModel, messages: Sequence[BaseMessage], config: RunnableConfig, **kwargs: Any
    ) -> AIMessage:
        """`model.ainvoke` under this policy.

        A model with only the blocking path (`_generate`, no `_agenerate` or `_astream`)
        is called in a daemon thread of its own: LangChain would run it in the event loop's
        default executor, which `asyncio.run` joins on exit, so a call abandoned at its
        timeout would hold the whole run until it returned.
        """
        config, streamed = _watched(config)
        if _blocking_only(model):
            call = lambda: model.invoke(list(messages), config, **kwargs)  # noqa: E731
            return await self._aretry(lambda: self._aattempt_blocking(call), streamed)  # type: ignore[return-value]
        return await self.arun(lambda: model.ainvoke(list(messages), config, **kwargs), streamed)  # type: ignore[return-value]


class _FirstToken(BaseCallbackHandler):
    """Notes that a call's tokens began to stream (to a consumer of `stream_mode="messages"`)."""

    run_inline = True  # called in the call's own thread or loop, before the token reaches anyone
    seen = False

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:  # type: ignore[override]  # every chunk form
        self.seen = self.seen or bool(token)


def _watched(config: RunnableConfig) -> tuple[RunnableConfig, _FirstToken | None]:
    # Only a call whose tokens reach a consumer is watched: one without LangGraph's nostream tag,
    # in a run someone streams (a streaming handler is attached); merging configs has a cost.
    callbacks = config.get("callbacks")
    handlers = callbacks if isinstance(callbacks, list) else getattr(callbacks, "handlers", None) or []
    if TAG_NOSTREAM in (config.get("tags") or []) or not any(isinstance(h, _StreamingCallbackHandler) for h in handlers):
        return config, None
    streamed = _FirstToken()
    return merge_configs(config, {"callbacks": [streamed]}), streamed


def _blocking_only(model: BaseChatModel) -> bool:
    cls = type(model)
    return cls._agenerate is BaseChatModel._agenerate and cls._astream is BaseChatModel._astream


def _start_daemon(call: Callable[[], T], on_end: Callable[[], None]) -> concurrent.futures.Future:
    """Start `call` in a daemon thread of its own; its outcome arrives in the returned future.

    A blocking call cannot be cancelled, so when it overruns its time limit the thread is
    abandoned (not killed), and cannot hold up interpreter exit. `on_end` runs when the
    call returns or raises, whoever still waits for it.

    The thread runs in a copy of the caller's context, so callbacks and streaming stay
    attached to the run; the future is marked running, so a waiter that gives up cannot
    cancel it under the thread's feet.
    """
    outcome: concurrent.futures.Future = concurrent.futures.Future()
    outcome.set_running_or_notify_cancel()
    ctx = contextvars.copy_context()

    def run() -> None:
        try:
            outcome.set_result(ctx.run(call))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            outcome.set_exception(exc)
        finally:
            on_end()

    threading.Thread(target=run, name="selfmoa-call", daemon=True).start()
    return outcome
