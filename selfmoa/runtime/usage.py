"""Token usage: what each model call reports, summed per run and per model.

Usage comes from each call's own response (`usage_of`); a run sums it with the
`add_usage` reducer. Careful: LangChain reports an `n>1` call's usage once for all its
choices, so the proposer splits it (see `selfmoa.nodes.propose`).
"""

from __future__ import annotations

from langchain_core.messages import BaseMessage
from typing_extensions import TypedDict


class TokenUsage(TypedDict):
    """Token counts of one or more model calls, as reported by the calls themselves."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    calls: int


class UsageSummary(TypedDict):
    """Token usage of a run: the total and a breakdown per model label."""

    total: TokenUsage
    by_model: dict[str, TokenUsage]


def zero_tokens() -> TokenUsage:
    """A `TokenUsage` with every count at zero."""
    return TokenUsage(input_tokens=0, output_tokens=0, total_tokens=0, calls=0)


def empty_usage() -> UsageSummary:
    """A `UsageSummary` with no calls."""
    return UsageSummary(total=zero_tokens(), by_model={})


def add_tokens(into: TokenUsage, counts: TokenUsage) -> None:
    """Add `counts` into `into`, in place."""
    into["input_tokens"] += counts.get("input_tokens", 0)
    into["output_tokens"] += counts.get("output_tokens", 0)
    into["total_tokens"] += counts.get("total_tokens", 0)
    into["calls"] += counts.get("calls", 0)


def add_usage(left: UsageSummary | None, right: UsageSummary | None) -> UsageSummary:
    """Reducer that sums two usage summaries.

    Example:
        >>> one = usage_delta("m", TokenUsage(input_tokens=3, output_tokens=2, total_tokens=5, calls=1))
        >>> both = add_usage(one, one)
        >>> both["total"]["calls"], both["by_model"]["m"]["total_tokens"]
        (2, 10)
    """
    out = empty_usage()
    for part in (left, right):
        if not part:
            continue
        add_tokens(out["total"], part["total"])
        for label, counts in part["by_model"].items():
            add_tokens(out["by_model"].setdefault(label, zero_tokens()), counts)
    return out


def usage_delta(label: str, counts: TokenUsage) -> UsageSummary:
    """The usage summary of calls by one model, ready for the `add_usage` reducer."""
    return UsageSummary(total=counts.copy(), by_model={label: counts.copy()})


def usage_of(message: BaseMessage) -> TokenUsage:
    """Token usage of one call, read from the message the model returned."""
    meta = getattr(message, "usage_metadata", None) or {}
    inp, out = int(meta.get("input_tokens", 0)), int(meta.get("output_tokens", 0))
    return TokenUsage(
        input_tokens=inp, output_tokens=out, total_tokens=int(meta.get("total_tokens", inp + out)), calls=1
    )


def text_of(message: BaseMessage) -> str:
    """The text of a model's reply (content blocks joined), as the model wrote it."""
    return message.text if hasattr(message, "text") else str(message.content)
