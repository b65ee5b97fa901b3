"""One schema: `MoASpec` is the one description of an ensemble, and nothing re-declares it.

The plan in a run's state is the spec's own dump; the factories' options, the run
context's fields and the factories' defaults are checked here against the spec's fields,
so they cannot drift apart. And the layers import one way: the call runtime never
imports the graph core.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from selfmoa import EnsembleContext, MoASpec, create_moa, create_self_moa, create_self_moa_seq
from selfmoa.graphs.options import FLAT_AGGREGATOR, RunOptions
from selfmoa.graphs.plan import apply_context, make_plan
from selfmoa.graphs.spec import RESERVED, SAMPLES, TEMPERATURE, WINDOW, AggregatorSpec, map_models
from selfmoa.nodes.state import CONTEXT_FIELDS
from selfmoa.runtime.models import ModelTable
from selfmoa.testing import FakeChatModel

ROOT = Path(__file__).resolve().parent.parent

SPECS = [
    {"layers": [[{"model": "openai:a", "samples": 4}]], "seed": 3},
    {"layers": [["openai:a", "openai:b"], [{"model": "openai:a", "samples": 2, "temperature": 0.1}]],
     "aggregator": {"model": "openai:c", "mode": "select"}, "max_tokens": 64},
    {"layers": [[{"model": FakeChatModel(model="x"), "samples": 9}]], "aggregator": {"window": 4, "reserved": 2,
                                                                                     "keep": "latest", "patience": 2}},
]


@pytest.mark.parametrize("data", SPECS)
def test_the_plan_is_the_specs_own_dump_and_validates_back(data):
    spec = MoASpec.model_validate(data)
    models = ModelTable()
    plan = make_plan(spec, models)
    again = MoASpec.model_validate(plan)  # the plan is a valid spec: same fields, same names
    labelled = map_models(spec, models.add)
    expected = labelled.aggregator.model or labelled.layers[-1].proposers[0].model
    assert again.model_dump() == {**labelled.model_dump(), "aggregator": {**labelled.aggregator.model_dump(),
                                                                          "model": expected}}


def _field(model: type, path: list[str]):
    head, *rest = [p for p in path if p != "*"]
    info = model.model_fields[head]
    if not rest:
        return info
    inner = typing.get_args(info.annotation)[0] if typing.get_origin(info.annotation) is list else info.annotation
    return _field(inner, rest)


def _members(annotation) -> frozenset:
    """A type as the set of plain types it admits: `Annotated`, `StrictInt` and `InstanceOf`
    unwrapped, unions flattened, a Literal of strings read as `str`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _members(args[0])
    if origin in (typing.Union, types.UnionType):
        return frozenset().union(*(_members(a) for a in args))
    if origin is typing.Literal:
        return frozenset({str}) if all(isinstance(a, str) for a in args) else frozenset({annotation})
    return frozenset({annotation})


def test_every_run_context_field_sets_a_spec_field_of_its_type():
    names = [f.name for f in dataclasses.fields(EnsembleContext)]
    assert sorted(names) == sorted(CONTEXT_FIELDS)
    hints = typing.get_type_hints(EnsembleContext)
    for name, path in CONTEXT_FIELDS.items():
        spec_types = _members(_field(MoASpec, path.split(".")).annotation)
        # A context field is the spec field's type, unset (None) when the graph's value stays;
        # a field that is a spec model of its own comes as its data (a dict, or true for its defaults).
        if any(isinstance(t, type) and issubclass(t, BaseModel) for t in spec_types):
            spec_types |= {dict, bool}
        context_types = {typing.get_origin(t) or t for t in _members(hints[name])}
        assert context_types - {type(None)} <= spec_types, (name, spec_types)


def test_every_context_field_reaches_the_spec():
    spec = MoASpec.model_validate({"layers": [[{"model": "openai:a", "samples": 2}]], "aggregator": {"window": 4}})
    values = {"model": "openai:z", "samples": 5, "temperature": 0.3, "seed": 9, "prompt": "Refs: {references}",
              "max_tokens": 11, "aggregator": "openai:y", "aggregator_temperature": 0.2, "mode": "select",
              "window": 5, "reserved": 1}
    assert sorted([*values, "adaptive"]) == sorted(CONTEXT_FIELDS)  # adaptive: one-shot graphs only, below
    out = apply_context(spec, EnsembleContext(**values)).model_dump()
    for name, value in values.items():
        node = out
        for part in CONTEXT_FIELDS[name].split("."):
            node = node[0] if part == "*" else node[part]
        assert node == value, name
    one_shot = apply_context(MoASpec(layers=[["openai:a"]]), {"adaptive": {"batch": 3, "anchor": True}})
    assert one_shot.adaptive is not None and (one_shot.adaptive.batch, one_shot.adaptive.anchor) == (3, True)


def test_factory_options_are_spec_fields_of_the_same_type():
    spec_hints = typing.get_type_hints(MoASpec, include_extras=True)
    aggregator_hints = typing.get_type_hints(AggregatorSpec, include_extras=True)
    for name, annotation in typing.get_type_hints(RunOptions).items():
        expected = aggregator_hints[FLAT_AGGREGATOR[name]] if name in FLAT_AGGREGATOR else spec_hints[name]
        if name == "answer_of":  # a callable's parameters are compared as written
            assert str(annotation) == str(expected)
            continue
        assert _members(annotation) == _members(expected), name


def test_the_papers_defaults_are_written_once():
    assert inspect.signature(create_self_moa).parameters["samples"].default == SAMPLES == 6
    seq = inspect.signature(create_self_moa_seq).parameters
    assert (seq["window"].default, seq["reserved"].default) == (WINDOW, RESERVED) == (6, 3)
    for factory in (create_self_moa, create_self_moa_seq, create_moa):
        assert inspect.signature(factory).parameters["temperature"].default == TEMPERATURE == 0.7
    assert MoASpec.model_fields["temperature"].default == TEMPERATURE
    assert AggregatorSpec.model_fields["reserved"].default == RESERVED


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


LAYERS = {  # folder: the selfmoa packages it must never import (also lazily, inside functions)
    "selfmoa/runtime": ("selfmoa.graphs", "selfmoa.nodes", "selfmoa.prompts", "selfmoa.server", "selfmoa.cli"),
    "prompts": ("selfmoa.nodes", "selfmoa.graphs", "selfmoa.runtime"),
    "nodes": ("selfmoa.graphs",),
}


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_imports_flow_one_way(folder):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files
    for path in files:
        bad = [m for m in _imports(path) if m.startswith(LAYERS[folder])]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_importing_selfmoa_registers_no_provider():
    code = ("import selfmoa, selfmoa.runtime.models as m; "
            "print(len(m._PROVIDERS), m._provider('local') is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "True"]
