"""Self-MoA-Seq: Self-MoA with a sliding-window aggregator of bounded context."""

from __future__ import annotations

from typing import Literal

from langgraph.graph import StateGraph
from typing_extensions import Unpack

from selfmoa.graphs.builder import build_graph
from selfmoa.graphs.spec import RESERVED, TEMPERATURE, WINDOW
from selfmoa.runtime.models import ModelLike

# Relative, unlike the project's other imports, so that a type checker run over the
# source folders sees the TypedDict that `Unpack` needs.
from .options import RunOptions, make_spec


def create_self_moa_seq(
    model: ModelLike,
    *,
    samples: int,
    window: int = WINDOW,
    reserved: int = RESERVED,
    aggregator: ModelLike | None = None,
    temperature: float | None = TEMPERATURE,
    seed: int | None = None,
    keep: Literal["all", "latest"] = "all",
    patience: int | None = None,
    **options: Unpack[RunOptions],
) -> StateGraph:
    """Build a Self-MoA-Seq graph (Li et al. 2025, arXiv 2502.00674, §5).

    Step 1 aggregates samples 1..W; each later step aggregates the current synthesis,
    repeated R times, with the next W-R samples; the last synthesis is the answer. That is
    `1 + ceil(max(0, N-W) / (W-R))` aggregator calls, each with at most W references. The
    next samples are generated while the previous window is aggregated, so the critical
    path is one proposer latency plus one aggregator latency per step.

    Args:
        model: A chat model or a model string.
        samples: Number of samples N.
        window: References per aggregator call W (paper: 6).
        reserved: Window slots repeating the current synthesis R, 0 < R < W (paper: 3).
        aggregator: Aggregator model; None means `model`.
        temperature: Proposer sampling temperature.
        seed: Base seed; sample i uses seed + i.
        keep: "all" keeps every proposal and window step in the run's state and result;
            "latest" keeps only the latest batch and step, so the state and each
            checkpoint stay the same size for any N (checkpoint bytes linear in N rather
            than quadratic; read every record from `stream_mode="updates"` instead).
        patience: Stop drawing samples once P window steps in a row kept the answer of
            the step before (as `answer_of` extracts it; default: the whole synthesis,
            whitespace and case normalised). The result's `stopped` says "settled" or
            "samples", and `saved` counts the proposer and aggregator calls not made;
            samples already in flight are recorded in `proposals` but not aggregated.
        **options: Any of `RunOptions` (`mode="select"` keeps the chosen sample as the
            synthesis; `answer_of` decides what `patience` compares).

    Returns:
        An uncompiled `StateGraph`.

    Example:
        >>> from selfmoa import create_self_moa_seq
        >>> from selfmoa.testing import FakeChatModel
        >>> graph = create_self_moa_seq(FakeChatModel(), samples=12).compile()
        >>> [a["sample_ids"] for a in graph.invoke({"messages": "Hi"})["aggregations"]]
        [[0, 1, 2, 3, 4, 5], [6, 7, 8], [9, 10, 11]]
    """
    layers = [[{"model": model, "samples": samples}]]
    agg = {"model": aggregator, "window": window, "reserved": reserved, "keep": keep, "patience": patience}
    spec = make_spec("create_self_moa_seq", layers, agg, temperature, seed, options)
    return build_graph(spec)
