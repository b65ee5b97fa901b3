"""Errors of the server: OpenAI-shaped error responses, what a run's failure maps to, and redaction.

Every error a client sees is `{"error": {"message", "type", "param", "code"}}`, one line,
without tracebacks, keys or the server's file paths.
"""

from __future__ import annotations

import logging
import os
import re

from fastapi.responses import JSONResponse

from selfmoa.local import LocalModelError
from selfmoa.runtime.errors import (
    AggregationError,
    InputError,
    ModelResolutionError,
    ProposalsFailedError,
    SpecError,
    describe_error,
)
from selfmoa.runtime.secrets import redact

logger = logging.getLogger("selfmoa.server")

_MISSING_KEY = "needs an API key"  # how selfmoa.runtime's ModelResolutionError says a key variable is unset
_SECRETS: set[str] = set()  # API keys of the apps in this process, kept out of responses and logs


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


class _Disconnected(Exception):
    """The client went away while its ensemble was running."""


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
        if _MISSING_KEY in message:
            # The client asked for a model the server offers; the server lacks its key. The
            # runtime's message names the variable (never its value) and says to set it.
            return _ApiError(503, f"server configuration error, not the request's: {message}", code="configuration_error")
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
