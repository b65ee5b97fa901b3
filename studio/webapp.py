"""The HTTP app that `langgraph dev` mounts beside its own API (`"http": {"app": ...}` in langgraph.json).

It adds no route. Its two middlewares make the server's MCP and A2A endpoints useful to a calling agent:
the answer as MCP's result, and a failed run's one-line fix instead of its error's class name.

The LangGraph server (langgraph-api 0.16) serves every graph as an MCP tool at `POST /mcp`, but it
answers `tools/call` with `{"type": "text", "text": repr(output)}`: the Python repr of the graph's
whole output state (messages, every proposal, usage...), which an agent cannot parse as JSON and
which buries the answer. No output schema fixes that: even a graph whose output were the answer
string alone would come back quoted and escaped by `repr`. So this middleware rewrites the
result of a successful `tools/call` whose output has an `answer`:

- `content`: one text block, the answer itself: what an LLM-driven caller reads;
- `structuredContent`: the rest of the output as JSON (`answer`, `proposals`, `aggregations`,
  `usage`, `warnings`; not `messages`, which repeat the question and the answer).

Anything else (other methods, errors, outputs without an `answer`, streamed responses) passes
through unchanged. The repr is read back with `ast.literal_eval`, which evaluates literals only:
the server made it from JSON-decoded values (dicts, lists, strings, numbers, booleans, None).

A failed run: MCP's `tools/call` and A2A's `message/send` fetch the run's result through the
server's in-process client (root path `/noauth`) and report only `__error__["error"]`, the
exception's class name (`ProposalsFailedError`), dropping the message that says what to fix.
`RunErrorMiddleware` rewrites those in-process results (`.../wait`, `.../join`) so that `error`
reads `ClassName: one-line message`, with keys redacted; requests from outside keep the
server's shape.

The same `http.app` entry works in any `langgraph.json`, e.g. a deployment on LangGraph's server.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from selfmoa.runtime.secrets import redact

__all__ = ["MCPAnswerMiddleware", "RunErrorMiddleware", "app", "mcp_result", "run_error"]

_DROPPED = ("messages",)


def mcp_result(result: Any) -> Any:
    """A `tools/call` result with the answer as its text and the rest as `structuredContent`.

    Example:
        >>> out = mcp_result({"content": [{"type": "text", "text": repr({"answer": "51", "usage": {"calls": 7},
        ...                   "messages": []})}]})
        >>> out["content"], out["structuredContent"]
        ([{'type': 'text', 'text': '51'}], {'answer': '51', 'usage': {'calls': 7}})
        >>> mcp_result({"isError": True, "content": [{"type": "text", "text": "boom"}]})["content"][0]["text"]
        'boom'
    """
    if not isinstance(result, dict) or result.get("isError") or "structuredContent" in result:
        return result
    content = result.get("content")
    if not (isinstance(content, list) and len(content) == 1 and isinstance(content[0], dict)):
        return result
    if content[0].get("type") != "text" or not isinstance(content[0].get("text"), str):
        return result
    try:
        output = ast.literal_eval(content[0]["text"])
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return result  # not the repr of an output state: leave it as it is
    if not isinstance(output, dict) or not isinstance(output.get("answer"), str):
        return result
    structured = {key: value for key, value in output.items() if key not in _DROPPED}
    return {**result, "content": [{"type": "text", "text": output["answer"]}], "structuredContent": structured}


def run_error(result: Any) -> Any:
    """A run's result whose `__error__` names the class only, with the error's message added in one line.

    Example:
        >>> run_error({"__error__": {"error": "InputError", "message": "no user message;\\n send one"}})
        {'__error__': {'error': 'InputError: no user message; send one', 'message': 'no user message; send one'}}
        >>> run_error({"answer": "51"})
        {'answer': '51'}
    """
    error = result.get("__error__") if isinstance(result, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("error"), str) or not isinstance(error.get("message"), str):
        return result
    line = " ".join(redact(error["message"]).split())[:1000]
    if not line or error["error"].endswith(f": {line}"):
        return result
    return {**result, "__error__": {**error, "error": f"{error['error']}: {line}", "message": line}}


def _rewrite(body: bytes) -> bytes:
    try:
        message = json.loads(body)
    except ValueError:
        return body
    messages = message if isinstance(message, list) else [message]
    changed = False
    for item in messages:
        if isinstance(item, dict) and "result" in item:
            new = mcp_result(item["result"])
            if new is not item["result"]:
                item["result"] = new
                changed = True
    return json.dumps(message, ensure_ascii=False).encode() if changed else body


def _rewrite_run(body: bytes) -> bytes:
    try:
        result = json.loads(body)  # the heartbeats before a waited result are whitespace, which JSON skips
    except ValueError:
        return body
    new = run_error(result)
    return body if new is result else json.dumps(new, ensure_ascii=False).encode()


class _JSONRewriter:
    """Pure ASGI middleware: passes every request on, and rewrites the JSON responses of those it `wants`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def wants(self, scope: dict) -> bool:
        """Whether to rewrite the response to this request."""
        raise NotImplementedError

    def rewrite(self, body: bytes) -> bytes:
        """The new body of a whole JSON response."""
        raise NotImplementedError

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Pass every request through; rewrite the JSON response of one it wants."""
        if scope["type"] != "http" or not self.wants(scope):
            await self.app(scope, receive, send)
            return
        start: dict | None = None
        chunks: list[bytes] = []
        passthrough = False

        async def capture(message: dict) -> None:
            nonlocal start, passthrough
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if not content_type.startswith(b"application/json"):
                    passthrough = True  # e.g. an event stream: sent on as it comes
                    await send(message)
                else:
                    start = message
                return
            if passthrough or message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = self.rewrite(b"".join(chunks))
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


class MCPAnswerMiddleware(_JSONRewriter):
    """Rewrites the JSON responses of `POST <path>` with `mcp_result`."""

    def __init__(self, app: Any, path: str = "/mcp") -> None:
        super().__init__(app)
        self.path = path.rstrip("/")

    def wants(self, scope: dict) -> bool:
        """`POST /mcp`."""
        return scope["method"] == "POST" and scope["path"].rstrip("/") == self.path

    def rewrite(self, body: bytes) -> bytes:
        """The results of a successful `tools/call`, with the answer as text."""
        return _rewrite(body)


class RunErrorMiddleware(_JSONRewriter):
    """Rewrites the run results the server fetches for itself (MCP, A2A) with `run_error`."""

    def wants(self, scope: dict) -> bool:
        """A run's result (`.../wait`, `.../join`) asked for by the server's in-process client."""
        loopback = scope.get("root_path", "").startswith("/noauth") or scope["path"].startswith("/noauth/")
        return loopback and scope["path"].rstrip("/").endswith(("/wait", "/join"))

    def rewrite(self, body: bytes) -> bytes:
        """The result, a failed run's error with its one-line message."""
        return _rewrite_run(body)


app = Starlette(middleware=[Middleware(MCPAnswerMiddleware), Middleware(RunErrorMiddleware)])
"""Mounted by `langgraph dev` through `"http": {"app": "./webapp.py:app"}`."""
