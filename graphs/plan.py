"""From a spec (and a run's context) to the plan a run follows."""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

from selfmoa.graphs.spec import MoASpec, map_models, parse_spec
from selfmoa.nodes import EnsembleContext
from selfmoa.nodes.state import Plan, PlanAggregator, PlanProposer
from selfmoa.runtime import ModelTable, SpecError

_TABLE_LOCK = threading.Lock()


def make_plan(spec: MoASpec, models: ModelTable) -> Plan:
    """The plan of a spec: its fields under their own names, models as labels registered in `models`.

    Each proposer entry gets its temperature (the spec's unless its own) and the seed of
    its first sample; the aggregator defaults to the last layer's first model (Self-MoA).

    Example:
        >>> spec = MoASpec(layers=[[{"model": "openai:m", "samples": 2}, {"model": "openai:n"}]], seed=5)
        >>> plan = make_plan(spec, ModelTable())
        >>> [(p["model"], p["samples"], p["seed"]) for p in plan["layers"][0]], plan["aggregator"]["model"]
        ([('openai:m', 2, 5), ('openai:n', 1, 7)], 'openai:m')
    """
    with _TABLE_LOCK:
        labelled = map_models(spec, models.add)
    layers: list[list[PlanProposer]] = []
    offset = 0
    for layer in labelled.layers:
        layers.append([])
        for p in layer.proposers:
            temperature = spec.temperature if p.temperature is None else p.temperature
            seed = None if spec.seed is None else spec.seed + offset
            # map_models put each model's label (a string) in its place.
            layers[-1].append(PlanProposer(model=str(p.model), samples=p.samples, temperature=temperature, seed=seed))
            offset += p.samples
    aggregator = labelled.aggregator
    return Plan(
        layers=layers,
        aggregator=PlanAggregator(
            model=str(aggregator.model) if aggregator.model is not None else layers[-1][0]["model"],
            mode=aggregator.mode,
            window=aggregator.window,
            reserved=aggregator.reserved,
            temperature=aggregator.temperature,
            patience=aggregator.patience,
            keep=aggregator.keep,
        ),
        seed=spec.seed,
        sampling=spec.sampling,
        min_proposals=spec.min_proposals,
        prompt=spec.prompt,
        max_reference_chars=spec.max_reference_chars,
    )


def apply_context(spec: MoASpec, context: EnsembleContext | dict | None) -> MoASpec:
    """The spec with a run's context overrides applied and validated again.

    Raises:
        SpecError: One line naming the bad override.

    Example:
        >>> spec = MoASpec(layers=[[{"model": "openai:m", "samples": 6}]])
        >>> apply_context(spec, EnsembleContext(samples=3, model="openai:n")).layers[0].proposers[0].samples
        3
    """
    if context is None:
        return spec
    if isinstance(context, dict):
        context = EnsembleContext(**context)
    overrides = {k: v for k, v in vars(context).items() if v is not None}
    if not overrides:
        return spec
    data = _as_dict(spec)
    for layer in data["layers"]:
        for proposer in layer["proposers"]:
            if "model" in overrides:
                proposer["model"] = overrides["model"]
            if "samples" in overrides:
                proposer["samples"] = overrides["samples"]
    for key in ("temperature", "seed", "prompt"):
        if key in overrides:
            data[key] = overrides[key]
    aggregator_keys = {"aggregator": "model", "aggregator_temperature": "temperature", "mode": "mode"}
    if spec.aggregator.window is not None:  # the graph's shape is fixed: a window only resizes
        aggregator_keys.update(window="window", reserved="reserved")
    elif {"window", "reserved"} & set(overrides):
        raise SpecError(
            f"run context {overrides}: window and reserved resize a sliding window, and this graph aggregates "
            "in one call; drop them, or run a Self-MoA-Seq graph (create_self_moa_seq)"
        )
    for key, field in aggregator_keys.items():
        if key in overrides:
            data["aggregator"][field] = overrides[key]
    if "model" in overrides and "aggregator" not in overrides and spec.aggregator.model is None:
        data["aggregator"]["model"] = None
    try:
        return parse_spec(data)
    except SpecError as exc:
        raise SpecError(f"run context {overrides}: {exc}") from None


def _as_dict(value: Any) -> Any:
    # Like model_dump, but chat model instances stay instances rather than becoming dicts.
    if isinstance(value, BaseChatModel):
        return value
    if isinstance(value, BaseModel):
        return {name: _as_dict(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, list):
        return [_as_dict(v) for v in value]
    return value
