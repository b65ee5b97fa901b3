"""MoA: layers of different proposer models refining each other, then an aggregator."""

from __future__ import annotations

from collections.abc import Sequence

from langgraph.graph import StateGraph
from typing_extensions import Unpack

from selfmoa.graphs.builder import build_graph
from selfmoa.graphs.spec import TEMPERATURE
from selfmoa.runtime.errors import SpecError
from selfmoa.runtime.models import ModelLike

# Relative, unlike the project's other imports, so that a type checker run over the
# source folders sees the TypedDict that `Unpack` needs.
from .options import RunOptions, make_spec


def create_moa(
    layers: Sequence[Sequence[ModelLike]],
    *,
    aggregator: ModelLike,
    temperature: float | None = TEMPERATURE,
    seed: int | None = None,
    **options: Unpack[RunOptions],
) -> StateGraph:
    """Build a Mixture-of-Agents graph (Wang et al. 2024).

    Layer 1's proposers answer the conversation; each proposer of layer i+1 sees the
    answers of layer i as numbered references and writes an improved answer; the
    aggregator synthesizes the last layer's answers. Proposers of a layer run in
    parallel, one `Send` task each.

    Args:
        layers: One list of models per layer; a model may repeat within a layer.
        aggregator: The final aggregator model.
        temperature: Proposer sampling temperature (None: each model's default).
        seed: Base seed; proposer i of the run uses seed + i.
        **options: Any of `RunOptions`: the `MoASpec` fields such as `mode`, `answer_of`,
            `min_proposals`, `max_attempts`, `timeout`, `max_tokens`, `prompt`, `limiter`.

    Returns:
        An uncompiled `StateGraph`.

    Example:
        >>> from selfmoa import create_moa
        >>> from selfmoa.testing import FakeChatModel
        >>> a, b = FakeChatModel(model="a"), FakeChatModel(model="b")
        >>> graph = create_moa([[a, b], [a, b]], aggregator=a).compile()
        >>> [p["layer"] for p in graph.invoke({"messages": "Hi"})["proposals"]]
        [1, 1, 2, 2]
    """
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
        raise SpecError("create_moa(): layers must be a non-empty list of lists of models, e.g. [[model_a, model_b]]")
    for i, layer in enumerate(layers, 1):
        if isinstance(layer, (str, bytes)) or not isinstance(layer, Sequence) or not layer:
            raise SpecError(f"create_moa(): layer {i} must be a non-empty list of models, got {layer!r}")
    if aggregator is None:
        raise SpecError("create_moa(): aggregator is required, e.g. aggregator=layers[-1][0]")
    spec_layers = [[{"model": m} for m in layer] for layer in layers]
    spec = make_spec("create_moa", spec_layers, {"model": aggregator}, temperature, seed, options)
    return build_graph(spec)
