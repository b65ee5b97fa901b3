"""Self-MoA: one model sampled k times, then one aggregation call."""

from __future__ import annotations

from langgraph.graph import StateGraph
from typing_extensions import Unpack

from selfmoa.graphs.builder import build_graph
from selfmoa.graphs.spec import SAMPLES, TEMPERATURE
from selfmoa.runtime.models import ModelLike

# Relative, unlike the project's other imports, so that a type checker run over the
# source folders sees the TypedDict that `Unpack` needs.
from .options import RunOptions, make_spec


def create_self_moa(
    model: ModelLike,
    *,
    samples: int = SAMPLES,
    aggregator: ModelLike | None = None,
    temperature: float | None = TEMPERATURE,
    seed: int | None = None,
    **options: Unpack[RunOptions],
) -> StateGraph:
    """Build a Self-MoA graph (Li et al. 2025, arXiv 2502.00674).

    `samples` proposals are drawn in parallel from one model at `temperature` (one `Send`
    task each), then one aggregator call synthesizes them. The paper finds this usually
    beats mixing different models, because aggregate quality follows the average quality
    of the proposals more than their diversity.

    Args:
        model: A chat model or a model string (e.g. `"openai:gpt-4o-mini"`, `"local"`).
        samples: Number of proposals k.
        aggregator: Aggregator model; None means `model` aggregates its own samples.
        temperature: Proposer sampling temperature (None: the model's default).
        seed: Base seed; sample i uses seed + i, for reproducible runs.
        **options: Any of `RunOptions`: the `MoASpec` fields such as `mode`, `answer_of`,
            `min_proposals`, `max_attempts`, `timeout`, `max_tokens`, `prompt`, `limiter`.

    Returns:
        An uncompiled `StateGraph`; compile it, optionally with a checkpointer.

    Example:
        >>> from selfmoa import create_self_moa
        >>> from selfmoa.testing import FakeChatModel
        >>> graph = create_self_moa(FakeChatModel(), samples=4).compile()
        >>> result = graph.invoke({"messages": [("user", "What is 17*3?")]})
        >>> len(result["proposals"]), result["usage"]["total"]["calls"]
        (4, 5)
    """
    layers = [[{"model": model, "samples": samples}]]
    spec = make_spec("create_self_moa", layers, {"model": aggregator}, temperature, seed, options)
    return build_graph(spec)
