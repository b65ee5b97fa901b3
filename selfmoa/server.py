"""`selfmoa serve`: any ensemble behind an OpenAI-compatible chat completions endpoint.

Routes: `POST /v1/chat/completions` (plain and SSE streaming), `GET /v1/models` and
`GET /health`. The request's `model` picks the ensemble:

- the built-in presets `self-moa`, `self-moa-select`, `moa` and `self-moa-seq`, on the default model
  (`"local"`, the embedded llama.cpp model, unless the config says otherwise);
- `<preset>:<model string>` for a built-in preset on another model, such as
  `self-moa:openai:gpt-4o-mini` (only model strings the config allows, and never custom
  endpoints or file paths: those are for named presets);
- any named spec of the config file (see `load_config`).

`usage` in a response is the total of every model call of the ensemble; the
`selfmoa` field adds the breakdown (proposals, per-model usage, timings), and plain
OpenAI clients ignore it. Errors are OpenAI-shaped:
`{"error": {"message", "type", "param", "code"}}`, one line, without tracebacks or keys.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import fnmatch
import hmac
import json
import logging
import math
import os
import re
import time
import unicodedata
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from selfmoa.endpoints import is_loopback_host
from selfmoa.graphs import MoASpec, create_from_spec, map_models, parse_spec
from selfmoa.graphs.spec import one_line
from selfmoa.local import LocalModelError
from selfmoa.runtime import (
    AggregationError,
    InputError,
    ModelResolutionError,
    ProposalsFailedError,
    SpecError,
    create_model,
)
from selfmoa.runtime.errors import describe_error
from selfmoa.runtime.inputs import check_input
from selfmoa.runtime.secrets import redact

__all__ = ["BUILTIN_PRESETS", "ServerConfig", "create_app", "load_config", "serve"]

logger = logging.getLogger("selfmoa.server")
T = TypeVar("T")

BUILTIN_PRESETS: dict[str, Callable[[str], dict[str, Any]]] = {
    # Self-MoA as in the paper: 6 samples of one model, one aggregation call (7 calls).
    "self-moa": lambda model: {"layers": [[{"model": model, "samples": 6}]]},
    # MoA-Lite shape: 2 layers of 3 proposers refining each other, then the aggregator.
    "moa": lambda model: {"layers": [[model] * 3, [model] * 3]},
    # Self-MoA-Seq with the paper's window (6 slots, 3 repeating the synthesis): 2 steps.
    "self-moa-seq": lambda model: {
        "layers": [[{"model": model, "samples": 9}]],
        "aggregator": {"window": 6, "reserved": 3},
    },
    # Self-MoA whose aggregator picks the most consistent sample and returns it verbatim
    # (universal self-consistency): the better choice for small models (see the README).
    "self-moa-select": lambda model: {"layers": [[{"model": model, "samples": 6}]], "aggregator": {"mode": "select"}},
}
"""Built-in ensembles by name: each maps a model string to a spec dict (`MoASpec` format)."""

_MAX_GRAPHS = 64  # compiled graph variants kept (name x max_tokens), least recently used dropped
_DRAIN_FACTOR = 8  # an oversized body is read (and dropped) up to this many limits, so the client sees the 413
_MAX_DEPTH = 32  # nesting levels a request body may have; a chat request needs 4
_SECRETS: set[str] = set()  # API keys of the apps in this process, kept out of responses and logs


# --- configuration ------------------------------------------------------------------------


class ServerConfig(BaseModel):
    """Settings of the server and its named ensembles.

    In a config file, the `server:` key holds the settings below (all optional) and every
    other top-level key is a preset name mapped to a spec in the `MoASpec` format (see
    `load_config`). The API key is never read from a file: it comes from `api_key` or the
    `SELFMOA_API_KEY` environment variable.

    Example:
        >>> config = ServerConfig(presets={"pair": {"layers": [["openai:gpt-4o-mini", "openai:gpt-4.1-mini"]]}})
        >>> config.presets["pair"].layers[0].size, config.max_concurrency
        (2, 4)
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    presets: dict[str, MoASpec] = Field(default_factory=dict)
    """Named ensembles; a name equal to a built-in preset replaces it."""
    default_model: str = "local"
    """Model string of the built-in presets."""
    dynamic_models: list[str] = Field(default_factory=lambda: ["local", "local:*", "openai:*"])
    """Shell-style patterns of the model strings allowed in `<preset>:<model>` names ([] disables them)."""
    max_concurrency: int = Field(default=4, ge=1)
    """Ensembles running at once."""
    queue: int = Field(default=32, ge=0)
    """Requests that may wait for a running slot; past that, 429 with Retry-After."""
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    """Largest request body; larger ones get 413."""
    timeout: float | None = Field(default=600.0, gt=0)
    """Seconds one ensemble run may take before 504 (None: no limit)."""
    max_tokens: int | None = Field(default=512, ge=1)
    """Tokens per model call when the request sets no `max_tokens` (None: each model's default)."""
    max_input_chars: int | None = Field(default=None, ge=1)
    """Most characters of a request's messages; longer ones get 400 before any model call
    (None: only `max_body_bytes` and the models' known contexts bound them)."""
    local_slots: int = Field(default=6, ge=1)
    """Parallel slots of the embedded llama.cpp server; one server is shared by every preset."""
    api_key: SecretStr | None = None
    """Bearer token clients must send; None reads `SELFMOA_API_KEY`, and no key means no check."""

    @field_validator("presets")
    @classmethod
    def _no_review(cls, presets: dict[str, MoASpec]) -> dict[str, MoASpec]:
        # A request cannot answer the review pause, so such a preset would reply with nothing.
        paused = [name for name, spec in presets.items() if spec.review]
        if paused:
            raise ValueError(f"preset {paused[0]!r} sets review, which the server cannot answer; set review to false")
        return presets


def load_config(path: str | Path) -> ServerConfig:
    """Read a YAML (or JSON) config file: named ensembles plus optional server settings.

    The file is a mapping; `server` holds settings, every other key names an ensemble::

        server:
          max_concurrency: 2
          dynamic_models: ["local", "local:*", "openai:gpt-4o*"]
        my-hybrid:
          layers:
            - - {model: "openai:gpt-4o-mini", samples: 3}
              - {model: "local", samples: 3}
          aggregator: {model: "openai:gpt-4o-mini", window: 4, reserved: 2}

    Raises:
        SpecError: One line naming the file and the bad key or value.

    Example:
        >>> load_config("presets.yaml").presets["my-hybrid"].layers[0].size  # doctest: +SKIP
        6
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}; check the path") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"config file {str(path)!r} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(
            f"config file {str(path)!r} must hold a mapping of preset names to specs, got {type(data).__name__}"
        )
    settings = data.pop("server", None) or {}
    if not isinstance(settings, dict):
        raise SpecError(f"config file {str(path)!r}: 'server' must be a mapping of settings")
    if "api_key" in settings:
        raise SpecError(f"config file {str(path)!r}: set the API key in SELFMOA_API_KEY, not in a file")
    presets = {}
    for name, spec in data.items():
        if not isinstance(name, str) or not name.strip():
            raise SpecError(f"config file {str(path)!r}: preset names must be non-empty strings, got {name!r}")
        try:
            presets[name] = parse_spec(spec)
        except SpecError as exc:
            raise SpecError(f"config file {str(path)!r}, preset {name!r}: {exc}") from None
    try:
        return ServerConfig(presets=presets, **settings)
    except ValidationError as exc:
        raise SpecError(f"config file {str(path)!r}: {one_line(exc, 'server settings')}") from None


# --- request body -------------------------------------------------------------------------


_MAX_INT32 = 2**31 - 1


class ChatMessage(BaseModel):
    """One message of a chat completion request; text content only."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    """`stream_options` of a request."""

    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields of an OpenAI chat completion request that an ensemble uses.

    Other fields (`user`, `metadata`, `top_p`, ...) are accepted and ignored, as OpenAI
    clients send many.
    """

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1, le=_MAX_INT32)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=_MAX_INT32)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)  # what OpenAI-compatible servers take
    n: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    tools: list[Any] | None = None


def to_messages(messages: list[ChatMessage]) -> list[BaseMessage]:
    """Map request messages to LangChain messages (`developer` counts as `system`).

    Raises:
        _ApiError: 400 for non-text content parts.

    Example:
        >>> to_messages([ChatMessage(role="user", content=[{"type": "text", "text": "Hi"}])])[0].content
        'Hi'
    """
    out: list[BaseMessage] = []
    kinds = {"system": SystemMessage, "developer": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    for i, message in enumerate(messages):
        content = message.content
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise _ApiError(
                        400,
                        f"messages[{i}]: only text content parts are supported, got type {part.get('type')!r}",
                        code="unsupported_content",
                        param=f"messages[{i}].content",
                    )
                texts.append(part["text"])
            content = "\n".join(texts)
        out.append(kinds[message.role](content or ""))
    return out


# --- errors -------------------------------------------------------------------------------


class _ApiError(Exception):
    """An error response in OpenAI's shape."""

    TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
             413: "invalid_request_error", 429: "rate_limit_error", 502: "upstream_error",
             503: "server_error", 504: "timeout_error", 500: "server_error"}  # fmt: skip

    def __init__(self, status: int, message: str, *, code: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        kind = self.TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _redact(text: str) -> str:
    """One line, without keys (the core's `redact`, plus this server's own) or server file paths."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return _hide_paths(redact(" ".join(text.split())))[:1000]


_path_pattern: re.Pattern | None = None


def _hide_paths(text: str) -> str:
    """`text` with absolute paths of this machine replaced by `<server path>`.

    A path is anything starting with a directory that exists at the file system's root
    (`/home/...`, `/tmp/...`) or a drive (`C:\\...`), so URL paths such as `/v1/models`
    stay. Clients learn nothing of the server's layout from an error.

    Example:
        >>> _hide_paths("cannot start 'local:/tmp/m/x.gguf' (bad magic); GET /v1/models of http://h:1/tmp/v1")
        "cannot start 'local:<server path>' (bad magic); GET /v1/models of http://h:1/tmp/v1"
    """
    global _path_pattern
    if _path_pattern is None:
        try:
            roots = sorted((d for d in os.listdir("/") if d), key=len, reverse=True)
        except OSError:
            roots = []
        tops = "|".join(map(re.escape, roots)) or "(?!)"
        _path_pattern = re.compile(rf"(?<![\w/.~-])(?:/(?:{tops})(?=[/\s'\")]|$)|[A-Za-z]:\\|~/)[^\s'\",;)]*")
    return _path_pattern.sub("<server path>", text)


def _classify(exc: BaseException, *, dynamic: bool) -> _ApiError:
    """The HTTP error for an exception of a run (or of building its graph)."""
    if isinstance(exc, _ApiError):
        return exc
    message = " ".join(str(exc).split())
    if isinstance(exc, ProposalsFailedError):
        return _ApiError(502, message, code="proposals_failed")
    if isinstance(exc, AggregationError):
        if isinstance(exc.__cause__, TimeoutError):
            return _ApiError(504, message, code="aggregator_timeout")
        return _ApiError(502, message, code="aggregation_failed")
    if isinstance(exc, ModelResolutionError):
        # A model named in the request that cannot be made is "no such model here"; one
        # from the server's own presets is a server-side problem.
        if dynamic:
            return _ApiError(404, message, code="model_not_found", param="model")
        return _ApiError(503, message, code="model_unavailable")
    if isinstance(exc, InputError):
        return _ApiError(400, message, code="invalid_input", param="messages")
    if isinstance(exc, SpecError):
        return _ApiError(400, message, code="invalid_ensemble_options")
    if isinstance(exc, TimeoutError):
        return _ApiError(504, "the ensemble did not finish within the server's time limit", code="timeout")
    if isinstance(exc, LocalModelError):  # the embedded model is missing or failed to start
        return _ApiError(503, message, code="model_unavailable")
    logger.error("unexpected error: %s", _redact(describe_error(exc)))  # one line, no traceback
    return _ApiError(500, f"internal error ({type(exc).__name__}); see the server log", code="internal_error")


# --- admission: bounded concurrency with a bounded queue ------------------------------------


class _Admission:
    """At most `running` ensembles at once and `queue` waiting; past that, 429."""

    def __init__(self, running: int, queue: int):
        self.limit, self.queue = running, queue
        self.admitted = 0  # running + waiting
        self.running = 0
        self._semaphore = asyncio.Semaphore(running)
        self._average: float | None = None  # seconds per run, moving average of observed runs
        self._leases: set[_Lease] = set()  # the running ones, whose elapsed time bounds the average from below
        self._returning: list[float] = []  # when the clients turned away are due back (sorted)

    async def enter(self) -> _Lease:
        if self.admitted >= self.limit + self.queue:
            raise _ApiError(
                429,
                f"server busy: {self.running} ensembles running and {self.admitted - self.running} waiting; "
                "retry after the time in the Retry-After header",
                code="server_busy",
                headers={"Retry-After": str(self.retry_after())},
            )
        self.admitted += 1
        try:
            await self._semaphore.acquire()
        except BaseException:
            self.admitted -= 1
            raise
        self.running += 1
        lease = _Lease(self)
        self._leases.add(lease)
        return lease

    def retry_after(self) -> int:
        """Whole seconds a turned-away request should wait: what it would have waited in the queue.

        Its position is the requests waiting, plus those turned away before it and not yet
        due back (they retry first), plus itself; `max_concurrency` of them start per run
        duration, the moving average of observed runs (or the longest still running, if
        longer). Each answer moves the next one back, so a burst spreads its retries.
        """
        now = time.monotonic()
        self._returning = [t for t in self._returning if t > now]
        position = (self.admitted - self.running) + len(self._returning) + 1
        longest = max((now - lease.started for lease in self._leases), default=0.0)
        run = max(self._average if self._average is not None else 1.0, longest)
        seconds = min(3600, max(1, math.ceil(run * position / self.limit)))
        bisect.insort(self._returning, now + seconds)
        return seconds

    def _leave(self, lease: _Lease, seconds: float) -> None:
        self._leases.discard(lease)
        self.running -= 1
        self.admitted -= 1
        self._average = seconds if self._average is None else 0.8 * self._average + 0.2 * seconds
        self._semaphore.release()


class _Lease:
    def __init__(self, admission: _Admission):
        self._admission, self.started, self._open = admission, time.monotonic(), True

    def release(self) -> None:
        if self._open:  # idempotent: both the stream and its response may release it
            self._open = False
            self._admission._leave(self, time.monotonic() - self.started)


# --- ensembles: names to specs to cached compiled graphs ------------------------------------


class _Ensembles:
    """Resolves model names to specs and keeps one compiled graph per (name, max_tokens)."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.builtins = {name: parse_spec(make(config.default_model)) for name, make in BUILTIN_PRESETS.items()}
        self._graphs: OrderedDict[tuple[str, int | None], asyncio.Future] = OrderedDict()

    def names(self) -> list[str]:
        return list(dict.fromkeys([*self.builtins, *self.config.presets]))

    def lookup(self, name: str) -> tuple[MoASpec, bool]:
        """(spec, dynamic) of a model name (normalised, see `normalise_name`); 404 when it names no ensemble."""
        if name in self.config.presets:
            return self.config.presets[name], False
        if name in self.builtins:
            return self.builtins[name], False
        kind, sep, model = name.partition(":")
        if sep and kind in BUILTIN_PRESETS and model:
            problem = self._dynamic_problem(model)
            if problem:
                raise _ApiError(
                    404, f"model {name!r} is not available: {problem}", code="model_not_found", param="model"
                )
            try:
                return parse_spec(BUILTIN_PRESETS[kind](model)), True
            except SpecError as exc:
                raise _ApiError(404, f"model {name!r}: {exc}", code="model_not_found", param="model") from None
        known = ", ".join(self.names())
        raise _ApiError(
            404,
            f"model {name!r} does not exist; use one of {known}, or '<preset>:<model>' such as 'self-moa:local'",
            code="model_not_found",
            param="model",
        )

    def _dynamic_problem(self, model: str) -> str | None:
        # A client-chosen base URL or file would let it point the server's keys or file
        # system anywhere (an "@endpoint?key_env=" suffix sends any variable as a key).
        if any(c in model for c in "@?/\\~") or model.lower().endswith(".gguf") or os.sep in model:
            return "custom endpoints and file paths are served only as named presets of the server's config file"
        if not any(fnmatch.fnmatchcase(model, pattern) for pattern in self.config.dynamic_models):
            allowed = ", ".join(self.config.dynamic_models) or "none"
            return f"this server allows these models after '<preset>:': {allowed}"
        return None

    async def graph(self, name: str, spec: MoASpec, max_tokens: int | None) -> Any:
        """The compiled graph of an ensemble for one `max_tokens`, built once (off the event loop)."""
        key = (name, max_tokens)
        future = self._graphs.get(key)
        if future is None:
            future = asyncio.ensure_future(asyncio.to_thread(self._build, spec, max_tokens))
            self._graphs[key] = future

            def forget_failure(done: asyncio.Future) -> None:
                if (done.cancelled() or done.exception() is not None) and self._graphs.get(key) is done:
                    del self._graphs[key]  # a failed build is retried by the next request

            future.add_done_callback(forget_failure)
            while len(self._graphs) > _MAX_GRAPHS:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        # Shielded: one caller going away must not cancel a build that others wait for.
        return await asyncio.shield(future)

    def _build(self, spec: MoASpec, max_tokens: int | None) -> Any:
        # max_tokens has no run-context field, so each variant gets its own model clients,
        # made with create_model(..., max_tokens=...). One instance per model string keeps
        # the ensemble's labels (and per-model usage) as in the spec.
        made: dict[str, BaseChatModel] = {}

        def make(model: Any) -> Any:
            if not isinstance(model, str):
                return model  # a chat model instance from a programmatic config: used as is
            if model not in made:
                kwargs: dict[str, Any] = {}
                if max_tokens is not None:
                    kwargs["max_tokens"] = max_tokens
                if model == "local" or model.startswith("local:"):
                    # Same slot count everywhere, so all presets share one llama.cpp server.
                    kwargs["slots"] = self.config.local_slots
                made[model] = create_model(model, **kwargs)
            return made[model]

        return create_from_spec(map_models(spec, make)).compile()


# --- the app --------------------------------------------------------------------------------


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
        ['self-moa', 'moa', 'self-moa-seq', 'self-moa-select']
    """
    config = config or ServerConfig()
    env_key = os.environ.get("SELFMOA_API_KEY") or None
    api_key = config.api_key.get_secret_value() if config.api_key is not None else env_key
    if api_key:
        _SECRETS.add(api_key)
    ensembles = _Ensembles(config)
    admission = _Admission(config.max_concurrency, config.queue)
    created = int(time.time())

    app = FastAPI(title="selfmoa", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ensembles = ensembles

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Unknown routes and methods get the same error shape as everything else.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code).response()

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise _ApiError(
                401,
                "missing or wrong API key: send the server's key as 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def guarded(request: Request, handler: Callable[[], Awaitable[Response]]) -> Response:
        try:
            check_key(request)
            return await handler()
        except (ClientDisconnect, _Disconnected):
            return Response(status_code=499)  # nobody reads it; the run was cancelled
        except Exception as exc:  # noqa: BLE001 - one line in the log, no traceback anywhere
            err = _classify(exc, dynamic=False)
            err.message = _redact(err.message)
            if err.status >= 500:
                logger.warning("%s %s: %d %s", request.method, request.url.path, err.status, err.message)
            return err.response()

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

        return await guarded(request, handler)

    # The body is read by hand (limits, depth, one-line errors); the schema is declared for
    # `app.openapi()`, which the fuzz tests generate requests from.
    body_schema = {"content": {"application/json": {"schema": _request_schema()}}, "required": True}

    @app.post("/v1/chat/completions", openapi_extra={"requestBody": body_schema})
    async def chat_completions(request: Request) -> Response:
        return await guarded(request, lambda: _chat(request, config, ensembles, admission))

    return app


def _request_schema() -> dict:
    """The JSON schema of a request, with its definitions inlined (an OpenAPI document has no `$defs`)."""
    schema = ChatCompletionRequest.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


class _Disconnected(Exception):
    """The client went away while its ensemble was running."""


async def _read_json(request: Request, limit: int) -> dict:
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


def normalise_name(name: str) -> str:
    """The one form of a requested model name that every check, and then the build, sees.

    Unicode compatibility forms are folded (a full-width solidus is a slash) and outer
    whitespace stripped; control and invisible characters are refused. Checking one string
    and building another is how a name like `"self-moa:local:x.gguf\\n"` slipped past the
    file-path filter.

    Raises:
        _ApiError: 404 for a name with control or invisible characters.

    Example:
        >>> normalise_name(" self-moa:local:x\uff0egguf\t")
        'self-moa:local:x.gguf'
    """
    folded = unicodedata.normalize("NFKC", name).strip()
    bad = next((c for c in folded if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")), None)
    if bad is not None:
        raise _ApiError(
            404, f"model names may not contain control or invisible characters, got {bad!r}", code="model_not_found",
            param="model",
        )
    return folded


async def _chat(request: Request, config: ServerConfig, ensembles: _Ensembles, admission: _Admission) -> Response:
    req = _parse(await _read_json(request, config.max_body_bytes))
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

        async def invoke() -> dict:
            async with _time_limit(config.timeout):
                return await graph.ainvoke(payload, context=context or None)

        try:
            result = await _race_disconnect(request, invoke())
        except _Disconnected:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a status
            raise _classify(exc, dynamic=dynamic) from None
        return JSONResponse(run.completion(result))
    finally:
        if lease is not None:
            lease.release()


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


# --- running it -------------------------------------------------------------------------------


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    config_path: str | Path | None = None,
    *,
    max_concurrency: int | None = None,
    queue: int | None = None,
) -> None:
    """Serve the ensembles with uvicorn until interrupted.

    Args:
        host: Interface to bind; loopback by default. On any other interface set
            `SELFMOA_API_KEY`, or anyone who can reach it can spend your model calls.
        port: TCP port.
        config_path: YAML config file with named ensembles and server settings.
        max_concurrency: Ensembles running at once (overrides the config file).
        queue: Requests waiting for a slot before 429 (overrides the config file).

    Raises:
        SpecError: A bad config file or setting, in one line.

    Example:
        >>> serve(port=8000, config_path="presets.yaml")  # doctest: +SKIP
    """
    import uvicorn

    config = load_config(config_path) if config_path else ServerConfig()
    try:
        if max_concurrency is not None:
            config.max_concurrency = max_concurrency
        if queue is not None:
            config.queue = queue
    except ValidationError as exc:
        raise SpecError(one_line(exc, "server settings")) from None
    # Our own lines at INFO; other libraries (httpx logs every model request) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s:     %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    has_key = config.api_key is not None or bool(os.environ.get("SELFMOA_API_KEY"))
    if not is_loopback_host(host) and not has_key:
        logger.warning("serving on %s without SELFMOA_API_KEY: anyone who can reach it can run the ensembles", host)
    app = create_app(config)
    names = ", ".join(app.state.ensembles.names())
    logger.info("ensembles: %s; also '<preset>:<model>' for %s", names, ", ".join(config.dynamic_models) or "none")
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False, log_config=log_config())


class ScrubAccessLog(logging.Filter):
    """Takes query strings out of uvicorn's access log lines, and any key left in the path.

    A client may send its key as `?api_key=...`; uvicorn would write it to the log.

    Example:
        >>> record = logging.LogRecord("uvicorn.access", 20, "", 0, '%s - "%s %s HTTP/%s" %d',
        ...                            ("127.0.0.1:5", "GET", "/health?api_key=abc", "1.1", 200), None)
        >>> ScrubAccessLog().filter(record), record.getMessage()
        (True, '127.0.0.1:5 - "GET /health HTTP/1.1" 200')
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], _redact(args[2].partition("?")[0]), *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging config with `ScrubAccessLog` on the access logger and its handler.

    Example:
        >>> log_config()["loggers"]["uvicorn.access"]["filters"]
        ['scrub']
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["scrub"] = {"()": ScrubAccessLog}
    config["handlers"]["access"]["filters"] = ["scrub"]
    config["loggers"]["uvicorn.access"]["filters"] = ["scrub"]
    return config
