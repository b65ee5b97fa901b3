"""Hybrid ensembles declared as data: spec files, round trips, validation messages."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import ask, by_role

from selfmoa import MoASpec, SpecError, create_from_spec
from selfmoa.testing import FakeChatModel

MODELS: dict[str, FakeChatModel] = {}


def fake_provider(name: str) -> FakeChatModel:
    return MODELS.setdefault(name, FakeChatModel(model=name))



HYBRID_YAML = """
name: hybrid-3a-3b
temperature: 0.9
seed: 11
layers:
  - - {model: "specfake:A", samples: 3}
    - {model: "specfake:B", samples: 3, temperature: 0.5}
aggregator:
  model: "specfake:A"
  window: 4
  reserved: 2
"""


@pytest.fixture(autouse=True)
def fresh_models(providers):
    MODELS.clear()
    providers(specfake=fake_provider)  # registered afresh: no model resolved by an earlier test is reused


def test_hybrid_yaml_file_to_graph_to_run(tmp_path):
    path = tmp_path / "hybrid.yaml"
    path.write_text(HYBRID_YAML)
    out = create_from_spec(path).compile().invoke(ask())
    a, b = MODELS["A"], MODELS["B"]
    assert [p["model"] for p in out["proposals"]] == ["specfake:A"] * 3 + ["specfake:B"] * 3
    assert [c.temperature for c in sorted(by_role(a, "proposer"), key=lambda c: c.sample)] == [0.9] * 3
    assert {c.temperature for c in by_role(b, "proposer")} == {0.5}
    assert sorted(c.seed for c in by_role(a, "proposer") + by_role(b, "proposer")) == list(range(11, 17))
    # 6 samples, W=4, R=2: windows [0..3], then [4, 5] with the synthesis twice.
    assert [s["sample_ids"] for s in out["aggregations"]] == [[0, 1, 2, 3], [4, 5]]
    assert [s["reserved"] for s in out["aggregations"]] == [0, 2]
    assert len(by_role(a, "aggregator")) == 2 and not by_role(b, "aggregator")


def test_spec_round_trips_through_json_and_yaml(tmp_path):
    spec = MoASpec.model_validate(yaml.safe_load(HYBRID_YAML))
    (tmp_path / "s.json").write_text(spec.model_dump_json())
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec.model_dump()))
    again_json = create_from_spec(tmp_path / "s.json").compile().invoke(ask())
    again_yaml = create_from_spec(str(tmp_path / "s.yaml")).compile().invoke(ask())
    direct = create_from_spec(spec).compile().invoke(ask())
    assert again_json["answer"] == again_yaml["answer"] == direct["answer"]
    assert MoASpec.model_validate(json.loads(spec.model_dump_json())) == spec


def test_multi_layer_hybrid_with_oneshot_aggregation():
    spec = {
        "layers": [["specfake:A", "specfake:B"], [{"model": "specfake:A", "samples": 2}]],
        "aggregator": {"model": "specfake:B"},
    }
    out = create_from_spec(spec).compile().invoke(ask())
    assert [(p["layer"], p["model"]) for p in out["proposals"]] == [
        (1, "specfake:A"),
        (1, "specfake:B"),
        (2, "specfake:A"),
        (2, "specfake:A"),
    ]
    assert out["aggregations"][0]["model"] == "specfake:B"


def test_multi_layer_then_sliding_window():
    spec = {
        "layers": [["specfake:A", "specfake:B"], [{"model": "specfake:A", "samples": 5}]],
        "aggregator": {"window": 3, "reserved": 1},
    }
    out = create_from_spec(spec).compile().invoke(ask())
    assert [s["sample_ids"] for s in out["aggregations"]] == [[0, 1, 2], [3, 4]]
    layer2 = [c for c in by_role(MODELS["A"], "proposer") if c.metadata["selfmoa_layer"] == 2]
    assert len(layer2) == 5 and all("[Response 2]" in c.messages[0].text for c in layer2)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"layers": [["specfake:A"]], "agregator": {}}, "unknown key 'agregator'"),
        ({"layers": [[{"model": "specfake:A", "sample": 2}]]}, "unknown key 'layers.0.proposers.0.sample'"),
        ({"layers": []}, "invalid spec at 'layers'"),
        ({"layers": [[]]}, "invalid spec at 'layers.0.proposers'"),
        ({}, "spec is missing the required key 'layers'"),
        ({"layers": [[{"model": "specfake:A", "samples": 0}]]}, "greater than or equal to 1"),
        ({"layers": [["specfake:A"]], "aggregator": {"window": 3, "reserved": 3}}, "reserved"),
        ({"layers": [["specfake:A"]], "aggregator": {"mode": "sequential"}}, "'synthesize', 'select' or 'vote'"),
        ({"layers": [["specfake:A"]], "min_proposals": 2}, "exceeds the 1 proposals of layer 1"),
        ({"layers": [["specfake:A"]], "prompt": "no placeholder"}, "{references} placeholder"),
        ({"layers": [["specfake:A"]], "temperature": -1}, "temperature"),
        (["specfake:A"], "spec must be a MoASpec, a dict or a path"),
    ],
)
def test_bad_specs_get_one_line_errors(spec, message):
    with pytest.raises(SpecError) as err:
        create_from_spec(spec)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_spec_file_errors(tmp_path):
    with pytest.raises(SpecError, match=r"cannot read spec file .*missing.yaml.*check the path"):
        create_from_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers: [[\n")
    with pytest.raises(SpecError, match="is not valid YAML") as err:
        create_from_spec(bad)
    assert "\n" not in str(err.value)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{'layers': 1}")
    with pytest.raises(SpecError, match="is not valid json"):
        create_from_spec(bad_json)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text")
    with pytest.raises(SpecError, match="must hold a mapping with a 'layers' key"):
        create_from_spec(scalar)
