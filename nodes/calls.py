"""Pieces shared by the nodes that call a model: message building and call configs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import AnyMessage, BaseMessage, SystemMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.constants import TAG_NOSTREAM

try:  # LangGraph's own node wrapper: inspects the function once, not on every call
    from langgraph._internal._runnable import RunnableCallable
except ImportError:  # pragma: no cover - a LangGraph that moved it: same behaviour, a little slower
    RunnableCallable = None  # type: ignore[assignment,misc]

from selfmoa.prompts import format_references

TRIM_MARK = "\n[…trimmed]"
"""Appended to a reference cut to fit the aggregator's budget (see `trim_references`)."""



def with_references(messages: Sequence[AnyMessage], references: Sequence[str], prompt: str) -> list[BaseMessage]:
    """The conversation with the aggregation prompt and numbered references as system message.

    A leading system message of the caller is kept and the aggregation prompt appended to
    it, since several providers accept only one system message.
    """
    # Substituted, not formatted: a format spec in a user's prompt ("{references:>2500000000}",
    # "{references.__class__}") is text here, never a way to exhaust memory or reach attributes.
    system = prompt.replace("{references}", format_references(references))
    msgs = list(messages)
    if msgs and isinstance(msgs[0], SystemMessage):
        return [SystemMessage(f"{msgs[0].text}\n\n{system}"), *msgs[1:]]
    return [SystemMessage(system), *msgs]


def trim_references(
    references: Sequence[str], names: Sequence[str], max_chars: int | None
) -> tuple[list[str], str | None]:
    """Fit references into `max_chars` characters in all, and say what was cut.

    When the references are longer together than `max_chars`, the longest are cut to an
    equal share (the shorter ones stay whole), each keeping its start and ending in
    `TRIM_MARK`; nothing is dropped. Returns the references and a warning naming each
    trimmed reference and its size before and after, or None when nothing was cut.

    Example:
        >>> refs, warning = trim_references(["a" * 10, "b" * 100], ["sample 0", "sample 1"], 60)
        >>> [len(r) for r in refs], "sample 1 from 100 to 50 chars" in warning
        ([10, 50], True)
    """
    total = sum(len(r) for r in references)
    if max_chars is None or total <= max_chars or not references:
        return list(references), None
    cap = _fair_cap([len(r) for r in references], max_chars)
    out, cuts = [], []
    for name, ref in zip(names, references, strict=True):
        if len(ref) <= cap:
            out.append(ref)
            continue
        keep = max(0, cap - len(TRIM_MARK))
        out.append(ref[:keep] + TRIM_MARK)
        cuts.append(f"{name} from {len(ref)} to {cap} chars")
    warning = (
        f"references of {total} chars exceed the aggregator's budget of {max_chars} (max_reference_chars), "
        f"trimmed: {'; '.join(cuts)}; the full texts stay in proposals"
    )
    return out, warning


def _fair_cap(lengths: list[int], budget: int) -> int:
    # The largest cap c with sum(min(len, c)) <= budget: short references stay whole.
    remaining, left = budget, len(lengths)
    for length in sorted(lengths):
        share = remaining // left
        if length > share:
            return share
        remaining -= length
        left -= 1
    return max(lengths)


def call_config(config: RunnableConfig, *, role: str, final: bool = False, **metadata: Any) -> RunnableConfig:
    """Config for one model call: selfmoa metadata for traces, and streaming only if final.

    Proposer and intermediate-window calls carry LangGraph's `nostream` tag so that
    `stream_mode="messages"` yields the final answer's tokens only.
    """
    tags = [f"selfmoa:{role}", *([] if final else [TAG_NOSTREAM])]
    meta = {"selfmoa_role": role, **{f"selfmoa_{k}": v for k, v in metadata.items()}}
    # A plain merge (what langchain's merge_configs does for tags, metadata and run_name,
    # at a fraction of its cost, which showed in the zero-latency overhead benchmark).
    return {
        **config,
        "tags": [*(t for t in config.get("tags", []) if t not in tags), *tags],
        "metadata": {**config.get("metadata", {}), **meta},
        "run_name": role,
    }


def node(func: Callable[..., Any], afunc: Callable[..., Any] | None = None, *, name: str, trace: bool = False):
    """`func` as a LangGraph node or router that runs under `invoke` and `ainvoke` alike.

    LangGraph runs a plain sync function in a worker thread under `ainvoke`; for the
    bookkeeping nodes (microseconds of work, no I/O) that thread hop costs more than the
    work, so without `afunc` they run inline on the event loop.
    """
    if RunnableCallable is None:  # tested in tests/test_node_wrapper.py
        return func if afunc is None else RunnableLambda(func, afunc=afunc, name=name)
    if afunc is None:

        @functools.wraps(func)
        async def afunc(*args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

    return RunnableCallable(func, afunc, name=name, trace=trace)


def sampling_kwargs(temperature: float | None, seed: int | None) -> dict[str, Any]:
    """Invocation keyword arguments; left out when unset so any chat model accepts them."""
    kwargs: dict[str, Any] = {}
    if temperature is not None:
        kwargs["temperature"] = temperature
    if seed is not None:
        kwargs["seed"] = seed
    return kwargs
