"""Running an ensemble for one request: a whole completion, or SSE chunks as the answer streams.

A run is cancelled when its client goes away, and limited to the server's timeout. The
bodies are OpenAI-shaped; the `selfmoa` field adds the ensemble's breakdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from langchain_core.messages import AIMessage

from selfmoa.server.admission import _Lease
from selfmoa.server.errors import _classify, _Disconnected, _redact
from selfmoa.server.schemas import ChatCompletionRequest

logger = logging.getLogger("selfmoa.server")
T = TypeVar("T")


def _time_limit(seconds: float | None) -> contextlib.AbstractAsyncContextManager:
    return asyncio.timeout(seconds) if seconds else contextlib.nullcontext()  # type: ignore[return-value]


async def _race_disconnect(request: Request, awaitable: Awaitable[T]) -> T:
    """Await `awaitable`, cancelling it if the client disconnects first."""
    task = asyncio.ensure_future(awaitable)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            await asyncio.sleep(0.1)  # the body was read already; never spin on a stray message

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task.cancelled():
        raise _Disconnected()
    return task.result()


class _Run:
    """One request's response metadata and its OpenAI-shaped bodies."""

    def __init__(self, req: ChatCompletionRequest, arrived: float):
        self.req, self.arrived = req, arrived
        self.started = time.perf_counter()
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def usage(self, result: dict) -> dict:
        total = result["usage"]["total"]
        return {
            "prompt_tokens": total["input_tokens"],
            "completion_tokens": total["output_tokens"],
            "total_tokens": total["total_tokens"],
        }

    def extension(self, result: dict) -> dict:
        proposals = result.get("proposals", [])
        return {
            "ensemble": self.req.model,
            "proposals": len(proposals),
            "failed_proposals": sum(1 for p in proposals if p["error"]),
            "aggregations": len(result.get("aggregations", [])),
            "calls": result["usage"]["total"]["calls"],
            # The labels are model strings: no keys or server paths reach the client.
            "usage_by_model": {_redact(label): usage for label, usage in result["usage"]["by_model"].items()},
            "latency_s": round(time.perf_counter() - self.started, 3),
            "queue_s": round(self.started - self.arrived, 3),
            "warnings": result.get("warnings", []),
            # How far the samples agree with the answer: a confidence (its calibration depends on the model and task).
            **{key: result.get(key) for key in ("agreement", "stopped", "saved", "abstained")},
        }

    @staticmethod
    def finish_reason(result: dict) -> str:
        messages = result.get("messages") or []
        last = messages[-1] if messages else None
        reason = (getattr(last, "response_metadata", None) or {}).get("finish_reason")
        return "length" if reason == "length" else "stop"

    def completion(self, result: dict) -> dict:
        message = {"role": "assistant", "content": result["answer"], "refusal": None}
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.req.model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": self.finish_reason(result), "logprobs": None}
            ],
            "usage": self.usage(result),
            "selfmoa": self.extension(result),
        }

    def chunk(self, delta: dict | None, finish: str | None = None, **extra: Any) -> str:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.req.model,
        }
        body["choices"] = (
            [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        )
        if self.include_usage:
            body["usage"] = None
        body.update(extra)
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    @property
    def include_usage(self) -> bool:
        return bool(self.req.stream_options and self.req.stream_options.include_usage)


# --- the whole answer at once ---------------------------------------------------------------


async def _complete(
    request: Request, graph: Any, payload: dict, context: dict, timeout: float | None, run: _Run, *, dynamic: bool
) -> Response:
    """Run the graph to its end and answer with one chat completion."""

    async def invoke() -> dict:
        async with _time_limit(timeout):
            return await graph.ainvoke(payload, context=context or None)

    try:
        result = await _race_disconnect(request, invoke())
    except _Disconnected:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to a status
        raise _classify(exc, dynamic=dynamic) from None
    return JSONResponse(run.completion(result))


# --- streaming ------------------------------------------------------------------------------


async def _produce(graph: Any, payload: dict, context: dict, timeout: float | None, queue: asyncio.Queue) -> None:
    """Run the graph, putting ("token", text), ("finish", reason), then ("done", state) or ("error", exc)."""
    try:
        final: dict = {}
        async with _time_limit(timeout):
            modes = ["messages", "values"]
            async for mode, part in graph.astream(payload, context=context or None, stream_mode=modes):
                if mode == "values":
                    final = part
                    continue
                message = part[0]
                if not isinstance(message, AIMessage):
                    continue
                if message.text:
                    queue.put_nowait(("token", message.text))
                reason = (message.response_metadata or {}).get("finish_reason")
                if reason:
                    queue.put_nowait(("finish", reason))
        queue.put_nowait(("done", final))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - handed to the response
        queue.put_nowait(("error", exc))


class _SSEResponse(StreamingResponse):
    """A streaming response that always runs `on_close`, even if the client vanished before the first byte."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], Awaitable[None]]):
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


async def _stream(
    request: Request, graph: Any, payload: dict, context: dict, timeout: float | None, run: _Run, lease: _Lease
) -> Response:
    queue: asyncio.Queue = asyncio.Queue()
    producer = asyncio.ensure_future(_produce(graph, payload, context, timeout, queue))

    async def close() -> None:
        producer.cancel()
        with contextlib.suppress(BaseException):
            await producer
        lease.release()

    # The status line waits for the first token: almost every failure (proposals, the
    # aggregator's first attempt, timeouts) happens before it, and then gets its real
    # HTTP status instead of an error inside a 200 stream.
    try:
        first = await _race_disconnect(request, queue.get())
    except BaseException:
        await close()
        raise
    if first[0] == "error":
        await close()
        raise _classify(first[1], dynamic=False)
    return _SSEResponse(_events(first, queue, run), close)


async def _events(first: tuple[str, Any], queue: asyncio.Queue, run: _Run) -> AsyncIterator[str]:
    yield run.chunk({"role": "assistant", "content": ""})
    streamed: list[str] = []
    finish = None
    event = first
    while True:
        kind, value = event
        if kind == "token":
            streamed.append(value)
            yield run.chunk({"content": value})
        elif kind == "finish":
            finish = value
        elif kind == "error":
            err = _classify(value, dynamic=False)
            err.message = _redact(err.message)
            logger.warning("stream of %s failed after it started: %s", run.req.model, err.message)
            yield f"data: {json.dumps(err.body())}\n\n"
            return
        else:  # done
            text, answer = "".join(streamed), value.get("answer", "")
            if not text.strip() and answer:
                # The final answer was not produced by a streamed call (e.g. a sliding
                # window whose last batch failed keeps the previous synthesis): send it whole.
                yield run.chunk({"content": answer})
            elif text.strip() != answer:
                logger.warning(
                    "streamed text of %s differs from its final answer (a retried aggregator call?)", run.req.model
                )
            reason = "length" if finish == "length" else "stop"
            if run.include_usage:
                yield run.chunk({}, reason)
                yield run.chunk(None, usage=run.usage(value), selfmoa=run.extension(value))
            else:
                yield run.chunk({}, reason, selfmoa=run.extension(value))
            yield "data: [DONE]\n\n"
            return
        event = await queue.get()
