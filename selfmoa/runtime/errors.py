"""Errors raised by selfmoa, and how failed model calls are described (one, or a run's many).

Each message is one line that says how to fix the input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


def group_failures(proposals: Sequence[Mapping[str, Any]], total: int, failed: int | None = None) -> str:
    """The failed proposals' errors, each distinct error once: with its count when shared.

    `failed` counts failures no longer in `proposals` too (a window run keeping the latest
    batch only); those show as "and N more".

    Example:
        >>> p = lambda s, e: {"model": "openai:m", "sample": s, "error": e}
        >>> group_failures([p(0, "ConnectionError"), p(1, "ConnectionError"), p(2, "Timeout")], 4)
        '2 of 4 proposals failed: ConnectionError (openai:m[0-1]); openai:m[2]: Timeout'
    """
    groups: dict[str, dict[str, list[int]]] = {}
    for p in proposals:
        if p["error"] is not None:
            groups.setdefault(p["error"], {}).setdefault(p["model"], []).append(p["sample"])
    parts, shown = [], 0
    for error, by_model in list(groups.items())[:3]:
        count = sum(len(samples) for samples in by_model.values())
        where = ", ".join(f"{model}[{_ranges(samples)}]" for model, samples in by_model.items())
        parts.append(f"{count} of {total} proposals failed: {error} ({where})" if count > 1 else f"{where}: {error}")
        shown += count
    failed = sum(len(s) for m in groups.values() for s in m.values()) if failed is None else failed
    if failed > shown:
        parts.append(f"and {failed - shown} more")
    return "; ".join(parts) or f"0 of {total} proposals returned"


def _ranges(samples: list[int]) -> str:
    # 0,1,2,5 -> "0-2,5": six failures of one endpoint read as one short label.
    out: list[str] = []
    ordered = sorted(samples)
    start = prev = ordered[0]
    for s in [*ordered[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if s is not None:
            start = prev = s
    return ",".join(out)
