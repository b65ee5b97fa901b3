"""From a spec (and a run's context) to the plan a run follows."""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

from selfmoa.graphs.spec import MoASpec, parse_spec
from selfmoa.nodes import EnsembleContext, ModelTable, SpecError
from selfmoa.nodes.state import Plan, PlanGroup

_TABLE_LOCK = threading.Lock()


def make_plan(spec: MoASpec, models: ModelTable) -> Plan:
    """The plan of a spec: one group per proposer entry, labels registered in `models`.

    Example:
        >>> spec = MoASpec(layers=[[{"model": "openai:m", "samples": 2}, {"model": "openai:n"}]], seed=5)
        >>> plan = make_plan(spec, ModelTable())
        >>> [(g["model"], g["samples"], g["seed"]) for g in plan["layers"][0]], plan["aggregator"]
        ([('openai:m', 2, 5), ('openai:n', 1, 7)], 'openai:m')
    """
    layers: list[list[PlanGroup]] = []
    offset = 0
    with _TABLE_LOCK:
        for layer in spec.layers:
            groups = []
            for proposer in layer.proposers:
                label = models.add(proposer.model)
                temperature = spec.temperature if proposer.temperature is None else proposer.temperature
                seed = None if spec.seed is None else spec.seed + offset
                groups.append(PlanGroup(model=label, temperature=temperature, seed=seed, samples=proposer.samples))
                offset += proposer.samples
            layers.append(groups)
        aggregator = models.add(spec.aggregator.model or spec.layers[-1].proposers[0].model)
    return Plan(
        layers=layers,
        aggregator=aggregator,
        aggregator_temperature=spec.aggregator.temperature,
        seed=spec.seed,
        mode=spec.aggregator.mode,
        windowed=spec.aggregator.window is not None,
        window=spec.aggregator.window or 0,
        reserved=spec.aggregator.reserved,
        min_proposals=spec.min_proposals,
        batched=spec.sampling == "n",
        prompt=spec.prompt,
        max_reference_chars=spec.max_reference_chars,
        keep_all=spec.aggregator.keep == "all",
        patience=spec.aggregator.patience,
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
