"""Request bodies: declared JSON, read within the size and time limits, checked for depth and valid text,
validated as a request.

The body is read by hand rather than by FastAPI, so that every limit answers with its own
status (415 for another type, 413 for size, 408 for a body too slow to arrive) and a one-line
OpenAI-shaped error.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import Request
from pydantic import ValidationError

from selfmoa.graphs.spec import one_line
from selfmoa.server.errors import _ApiError
from selfmoa.server.guards import _check_json_type
from selfmoa.server.schemas import ChatCompletionRequest

_DRAIN_FACTOR = 8  # an oversized body is read (and dropped) up to this many limits, so the client sees the 413
_MAX_DEPTH = 32  # nesting levels a request body may have; a chat request needs 4


async def _read_json(request: Request, limit: int, seconds: float) -> dict:
    """The request's body as a JSON object, within `limit` bytes and `seconds` of reading.

    Raises:
        _ApiError: 415, 413, 408 or 400, in one line.
    """
    _check_json_type(request)
    try:
        # A client that sends half a body and then nothing would otherwise hold its
        # connection, and this request, for as long as it likes.
        async with asyncio.timeout(seconds):
            body = await _read_body(request, limit)
    except TimeoutError:
        raise _ApiError(
            408, f"the request body did not arrive within the server's read_timeout of {seconds:g} s; send it "
            "whole and at once, or raise server.read_timeout", code="request_timeout", headers={"Connection": "close"},
        ) from None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:  # also invalid UTF-8, and numbers of over 4,300 digits
        raise _ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # the JSON reader recurses once per level
        raise _too_deep() from None
    _check_tree(data)
    if not isinstance(data, dict):
        raise _ApiError(400, f"request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    return data


async def _read_body(request: Request, limit: int) -> bytearray:
    declared = request.headers.get("content-length", "")
    too_big = declared.isdigit() and int(declared) > limit
    body, seen = bytearray(), 0
    async for chunk in request.stream():
        seen += len(chunk)
        if too_big or seen > limit:
            too_big = True
            body.clear()
            # Read on (up to a cap) rather than answer mid-upload: a client still sending
            # would get a broken connection instead of the 413.
            if seen > limit * _DRAIN_FACTOR:
                break
            continue
        body += chunk
    if too_big:
        raise _ApiError(413, f"request body larger than the server's limit of {limit} bytes", code="request_too_large")
    return body


def _too_deep() -> _ApiError:
    return _ApiError(
        400, f"request body nests deeper than {_MAX_DEPTH} levels; a chat request needs 4", code="invalid_json"
    )


def _check_tree(data: Any) -> None:
    """Refuse what `json.loads` accepts but nothing after it should see: deep nesting, lone surrogates.

    Walked without recursion, so that no depth reaches Python's recursion limit here or in
    any later step (validation, logging, the response); a string holding half of a UTF-16
    pair ("\\ud800") cannot be encoded into a response or an upstream request.
    """
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            items = [*value.keys(), *value.values()]
        elif isinstance(value, list):
            items = value
        else:
            if isinstance(value, str):
                _check_text(value)
            continue
        if depth > _MAX_DEPTH:
            raise _too_deep()
        stack.extend((item, depth + 1) for item in items)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _ApiError(
            400, "request body holds a lone UTF-16 surrogate (such as \\ud800); send valid Unicode text",
            code="invalid_json",
        ) from None


def _parse(data: dict) -> ChatCompletionRequest:
    try:
        req = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise _ApiError(400, one_line(exc, "request"), code="invalid_request", param=param) from None
    if req.n is not None and req.n > 1:
        raise _ApiError(
            400,
            f"n={req.n} is not supported: an ensemble returns one synthesized answer; send {req.n} requests instead",
            code="unsupported_parameter",
            param="n",
        )
    if req.tools:
        raise _ApiError(
            400, "tools are not supported by selfmoa ensembles", code="unsupported_parameter", param="tools"
        )
    return req
