"""From a spec (and a run's context) to the plan a run follows: the spec's own dump."""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

from selfmoa.graphs.spec import MoASpec, map_models, parse_spec
from selfmoa.nodes import EnsembleContext
from selfmoa.nodes.state import CONTEXT_FIELDS, Plan
from selfmoa.runtime.errors import SpecError
from selfmoa.runtime.models import ModelTable

_TABLE_LOCK = threading.Lock()


def make_plan(spec: MoASpec, models: ModelTable) -> Plan:
    """The plan of a spec: its validated dump, each model as its label registered in `models`.

    The aggregator defaults to the last layer's first model (Self-MoA), filled in here.

    Example:
        >>> spec = MoASpec(layers=[[{"model": "openai:m", "samples": 2}, {"model": "openai:n"}]], seed=5)
        >>> plan = make_plan(spec, ModelTable())
        >>> [(p["model"], p["samples"]) for p in plan["layers"][0]["proposers"]], plan["aggregator"]["model"]
        ([('openai:m', 2), ('openai:n', 1)], 'openai:m')
    """
    with _TABLE_LOCK:
        labelled = map_models(spec, models.add)
    # The escalation ensemble is the graph's own `escalate` node, not part of the run's plan.
    plan = labelled.model_dump(exclude={"low_agreement": {"escalate"}})
    if plan["aggregator"]["model"] is None:
        plan["aggregator"]["model"] = plan["layers"][-1]["proposers"][0]["model"]
    return plan


def apply_context(spec: MoASpec, context: EnsembleContext | dict | None) -> MoASpec:
    """The spec with a run's context overrides applied (see `CONTEXT_FIELDS`) and validated again.

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
    if spec.aggregator.window is None and {"window", "reserved"} & set(overrides):
        raise SpecError(f"run context {str(overrides)[:200]}: window and reserved resize a sliding window, and this "
                        "graph aggregates in one call; drop them, or run a Self-MoA-Seq graph (create_self_moa_seq)")
    data = _as_dict(spec)
    for key, value in overrides.items():
        _set(data, CONTEXT_FIELDS[key].split("."), value)
    if "model" in overrides and "aggregator" not in overrides and spec.aggregator.model is None:
        data["aggregator"]["model"] = None  # Self-MoA: the new proposer model aggregates too
    try:
        return parse_spec(data)
    except SpecError as exc:
        raise SpecError(f"run context {str(overrides)[:200]}: {exc}") from None


def _set(data: Any, path: list[str], value: Any) -> None:
    """Set `value` at a dotted path of a spec dict, where `*` means every item of a list."""
    head, *rest = path
    targets = data if head == "*" else [data]
    for target in targets:
        if not rest:
            target[head] = value
        else:
            _set(target if head == "*" else target[head], rest, value)


def _as_dict(value: Any) -> Any:
    # Like model_dump, but chat model instances stay instances rather than becoming dicts.
    if isinstance(value, BaseChatModel):
        return value
    if isinstance(value, BaseModel):
        return {name: _as_dict(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, list):
        return [_as_dict(v) for v in value]
    return value
