"""Errors raised by selfmoa, and how a failed model call is described.

Each message is one line that says how to fix the input.
"""

from __future__ import annotations

from selfmoa.runtime.secrets import redact


class SelfMoAError(Exception):
    """Base class of every error selfmoa raises on purpose."""


class SpecError(SelfMoAError, ValueError):
    """An ensemble was declared wrongly (bad option, bad spec file); raised at build time."""


class InputError(SelfMoAError, ValueError):
    """The graph was invoked with unusable input (for example no messages)."""


class ModelResolutionError(SelfMoAError, ValueError):
    """A model string could not be turned into a chat model."""


class ProposalsFailedError(SelfMoAError, RuntimeError):
    """Fewer proposals than `min_proposals` succeeded, so there is nothing to aggregate."""


class AggregationError(SelfMoAError, RuntimeError):
    """The aggregator failed after its retries; the proposals stay in the checkpoint."""


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a failed call, as the SDKs put it on their errors (None: no response).

    Example:
        >>> class Rejected(Exception):
        ...     status_code = 401
        >>> status_of(Rejected()), status_of(ValueError())
        (401, None)
    """
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


_STATUS_HINTS = {
    401: "the endpoint rejected the API key; check the key's environment variable",
    403: "the API key may not use this model",
    404: "the endpoint does not know this model name; check it",
    429: "rate limited by the endpoint; lower the samples or max_concurrency",
}


def _hint(exc: BaseException, text: str) -> str | None:
    # Read from the HTTP status and the chain of causes, not from class names: the SDKs
    # wrap the socket's ConnectionError (openai: APIConnectionError from httpx from OSError).
    status = status_of(exc)
    if status == 400 and "context" in text.lower():
        return "the prompt is longer than the model's context; shorten it, use fewer samples or a larger context"
    if status in _STATUS_HINTS:
        return _STATUS_HINTS[status]
    cause: BaseException | None = exc
    for _ in range(8):  # a bounded walk: a cause chain can loop
        if cause is None:
            return None
        if isinstance(cause, ConnectionError):
            return "cannot reach the endpoint; is the server running and the base URL right?"
        cause = cause.__cause__ or cause.__context__
    return None


def describe_error(exc: BaseException) -> str:
    """One line naming the error type, its message and, for known API errors, the fix.

    Every error text that selfmoa keeps (a proposal's `error`, exception messages, hence
    checkpoints, the CLI's output and the server's responses) comes from here, so API keys
    are removed here (see `redact`).

    Example:
        >>> describe_error(PermissionError("Incorrect API key provided: sk-proj-0123456789abcdef"))
        'PermissionError: Incorrect API key provided: ***'
        >>> describe_error(ConnectionRefusedError("[Errno 111] Connection refused"))  # doctest: +ELLIPSIS
        'ConnectionRefusedError: [Errno 111] Connection refused - cannot reach the endpoint; ...'
    """
    name = type(exc).__name__
    # Redacted before cutting, so that a key split by the cut cannot survive in part.
    text = redact(" ".join(str(exc).split()))[:300]
    hint = _hint(exc, text)
    return " - ".join([f"{name}: {text}" if text else name, *([hint] if hint else [])])
