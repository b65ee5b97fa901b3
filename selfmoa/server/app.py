"""The FastAPI app: its routes, the API key check, and the chat route from request body to response."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect

from selfmoa.runtime.inputs import check_input
from selfmoa.server.admission import _Admission, _Lease
from selfmoa.server.body import _parse, _read_json
from selfmoa.server.config import ServerConfig
from selfmoa.server.ensembles import _Ensembles
from selfmoa.server.errors import _SECRETS, _ApiError, _classify, _Disconnected, _redact
from selfmoa.server.guards import _check_key, _key_problem, _OriginGuard
from selfmoa.server.schemas import _request_schema, normalise_name, to_messages
from selfmoa.server.streaming import _complete, _race_disconnect, _Run, _stream

__all__ = ["create_app"]

logger = logging.getLogger("selfmoa.server")


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """Build the FastAPI app serving the configured ensembles.

    Nothing is started and no model client is made here: each ensemble graph is built on
    its first request and then reused.

    Args:
        config: Server settings and named ensembles; None uses the defaults (the
            built-in presets on the embedded model).

    Returns:
        An ASGI app; run it with `serve`, or with any ASGI server.

    Example:
        >>> from starlette.testclient import TestClient
        >>> client = TestClient(create_app())
        >>> client.get("/health").json()["status"]
        'ok'
        >>> [m["id"] for m in client.get("/v1/models").json()["data"]]
        ['self-moa', 'moa', 'self-moa-seq', 'self-moa-select', 'self-moa-adaptive']
    """
    config = config or ServerConfig()
    api_key = _api_key(config)
    ensembles = _Ensembles(config, keyed=api_key is not None)
    admission = _Admission(config.max_concurrency, config.queue)
    created = int(time.time())

    app = FastAPI(title="selfmoa", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ensembles = ensembles
    app.exception_handler(StarletteHTTPException)(_http_error)
    if config.allowed_origins:  # the listed pages get CORS answers, preflights included, so browsers let them in
        app.add_middleware(CORSMiddleware, allow_origins=config.allowed_origins, allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type"])
    app.add_middleware(_OriginGuard, allowed=config.allowed_origins)  # added last: runs first

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "running": admission.running,
            "waiting": admission.admitted - admission.running,
            "max_concurrency": config.max_concurrency,
            "queue": config.queue,
        }

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        async def handler() -> Response:
            data = [{"id": n, "object": "model", "created": created, "owned_by": "selfmoa"} for n in ensembles.names()]
            return JSONResponse({"object": "list", "data": data})

        return await _guarded(request, api_key, handler)

    # The body is read by hand (limits, depth, one-line errors); the schema is declared for
    # `app.openapi()`, which the fuzz tests generate requests from.
    body_schema = {"content": {"application/json": {"schema": _request_schema()}}, "required": True}

    @app.post("/v1/chat/completions", openapi_extra={"requestBody": body_schema})
    async def chat_completions(request: Request) -> Response:
        return await _guarded(request, api_key, lambda: _chat(request, config, ensembles, admission))

    return app


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    # Unknown routes and methods get the same error shape as everything else.
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code).response()


def _api_key(config: ServerConfig) -> bytes | None:
    """The key clients must send, as the UTF-8 bytes compared with theirs; None: no check."""
    source = "the server's api_key" if config.api_key is not None else "SELFMOA_API_KEY"
    key = config.api_key.get_secret_value() if config.api_key is not None else os.environ.get("SELFMOA_API_KEY")
    if not key:
        return None
    _SECRETS.add(key)
    problem = _key_problem(key)
    if problem:
        logger.warning("%s %s", source, problem)
    return key.encode("utf-8")


async def _guarded(request: Request, api_key: bytes | None, handler: Callable[[], Awaitable[Response]]) -> Response:
    try:
        _check_key(request, api_key)
        return await handler()
    except (ClientDisconnect, _Disconnected):
        return Response(status_code=499)  # nobody reads it; the run was cancelled
    except Exception as exc:  # noqa: BLE001 - one line in the log, no traceback anywhere
        err = _classify(exc, dynamic=False)
        err.message = _redact(err.message)
        if err.status >= 500:
            logger.warning("%s %s: %d %s", request.method, request.url.path, err.status, err.message)
        return err.response()


async def _chat(request: Request, config: ServerConfig, ensembles: _Ensembles, admission: _Admission) -> Response:
    req = _parse(await _read_json(request, config.max_body_bytes, config.read_timeout))
    name = normalise_name(req.model)
    spec, dynamic = ensembles.lookup(name)
    messages = to_messages(req.messages)
    # The library's own input checks, before a queue place is taken: an empty conversation
    # (content null or "") and one over max_input_chars are a 400 in the library's words.
    check_input(messages, max_chars=config.max_input_chars)
    payload = {"messages": messages}
    context = {k: v for k, v in (("temperature", req.temperature), ("seed", req.seed)) if v is not None}
    max_tokens = req.max_completion_tokens or req.max_tokens or config.max_tokens
    arrived = time.perf_counter()
    held: _Lease = await _race_disconnect(request, admission.enter())
    lease: _Lease | None = held
    run = _Run(req, arrived)
    try:
        try:
            graph = await _race_disconnect(request, ensembles.graph(name, spec, max_tokens))
        except (_ApiError, _Disconnected):
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a status
            raise _classify(exc, dynamic=dynamic) from None
        if req.stream:
            response = await _stream(request, graph, payload, context, config.timeout, run, held)
            lease = None  # the response releases it when the stream ends
            return response
        return await _complete(request, graph, payload, context, config.timeout, run, dynamic=dynamic)
    finally:
        if lease is not None:
            lease.release()
