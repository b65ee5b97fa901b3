"""Spec files and run contexts, fuzzed: each is a graph (or a run), or a one-line `SelfMoAError`.

Specs come from `MoASpec`'s own JSON schema (hypothesis-jsonschema; models drawn as strings,
the escalation spec one level deep), valid ones and nearly valid ones (a field replaced by
any JSON value, a huge number, NaN or infinity, deep nesting, an unknown key); they go
through `parse_spec`, `create_from_spec`, and YAML and JSON files (`load_spec_file`),
whose text is mutated too (invalid UTF-8, YAML tags, duplicate keys, empty files, alias
bombs). Run contexts come from the graph's context schema and run a graph of fakes.

Every outcome must be a value or a `SelfMoAError` whose message is one line, under 600
characters, naming no pydantic internals; each example runs under a time limit, and the
whole file may not grow the process's peak memory by more than 200 MB. Examples are
derandomized, so CI sees the same ones each run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import resource
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from pydantic.json_schema import GenerateJsonSchema

from selfmoa import MoASpec, SelfMoAError, create_from_spec, create_self_moa, create_self_moa_seq, model_providers
from selfmoa.graphs.spec import load_spec_file, parse_spec
from selfmoa.testing import FakeChatModel

PEAK_KB: list[int] = []
INTERNALS = ("pydantic", "For further information", "type=", "input_value=", "errors.pydantic.dev", "function-")


@pytest.fixture(autouse=True, scope="module")
def _specfake_provider():
    PEAK_KB.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    with model_providers({"specfake": lambda name, **kw: FakeChatModel(model=name or "specfake")}):
        yield


def fuzz(examples: int) -> settings:
    # derandomize: the same examples every run, so the suite stays quick and repeatable.
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail an example that takes longer than `seconds` (a hang) instead of waiting for it."""

    def hang(signum, frame):
        raise TimeoutError(f"example still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(fn, *args, **kwargs) -> Any:
    """`fn(*args)`'s value, or its `SelfMoAError` once checked to be one clean line; anything else fails."""
    with time_limit(10):
        try:
            return fn(*args, **kwargs)
        except SelfMoAError as exc:
            message = str(exc)
            assert message and "\n" not in message and "\r" not in message, repr(message)
            assert len(message) < 600, f"{len(message)} characters: {message[:300]}..."
            assert not [word for word in INTERNALS if word in message], message
            return exc


# --- Specs drawn from MoASpec's JSON schema -------------------------------------------------------


class _Schema(GenerateJsonSchema):
    # The `limiter` and callable `answer_of` have no JSON form: nothing is drawn for them.
    def is_instance_schema(self, schema):
        return {"not": {}}

    def callable_schema(self, schema):
        return {"not": {}}


def spec_schema() -> dict:
    """`MoASpec`'s schema, models as strings only, with a non-recursive escalation spec."""
    schema = MoASpec.model_json_schema(schema_generator=_Schema)
    schema["$defs"].pop("BaseChatModel", None)

    def strings_for_models(node: Any) -> Any:
        if isinstance(node, dict):
            if "anyOf" in node:
                node["anyOf"] = [s for s in node["anyOf"] if s != {"$ref": "#/$defs/BaseChatModel"}]
            # Without descriptions and titles, which hypothesis-jsonschema would encode at every draw.
            return {k: strings_for_models(v) for k, v in node.items() if k not in ("description", "title")}
        return [strings_for_models(v) for v in node] if isinstance(node, list) else node

    schema = strings_for_models(schema)
    defs = schema["$defs"]
    defs["MoASpec"]["properties"].pop("limiter")
    inner = copy.deepcopy(defs["MoASpec"])
    inner["properties"].pop("low_agreement")  # one level of escalation: the schema is recursive
    defs["LowAgreementSpec"]["properties"]["escalate"] = {"anyOf": [inner, {"type": "null"}]}
    return schema


SPEC_SCHEMA = spec_schema()
DRAWN_SPECS = from_schema(SPEC_SCHEMA)  # built once: hypothesis-jsonschema resolves the schema here
MODELS = ["specfake:a", "specfake:b", "openai:gpt-4o-mini", "local", "openai:", ":x", " ", ""]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
HUGE = st.sampled_from([10**30, 2**63, -(2**63), 2**31, 1e308, -1e308, 1e-320, float("nan"), float("inf"),
                        float("-inf"), -0.0, 10**4000])


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a nested dict/list value (the value itself is `()`)."""
    out = [prefix]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in items:
        out += paths(item, (*prefix, key))
    return out


def put(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    value[head] = put(value[head], tuple(rest), new)
    return value


def nested(depth: int) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


@st.composite
def specs(draw, valid_only: bool = False) -> dict:
    """A spec dict from the schema: mostly valid, else with one value replaced or one key added."""
    spec = _models_of(draw(DRAWN_SPECS), draw, valid_only)
    if isinstance(spec, dict) and draw(st.booleans()):
        # Fewer of the cross-field rules broken (reserved < window, quorum, one-shot options): more valid specs.
        for key in ("min_proposals", "review", "adaptive", "low_agreement"):
            spec.pop(key, None)
        if isinstance(spec.get("aggregator"), dict):
            spec["aggregator"] = {k: v for k, v in spec["aggregator"].items() if k in ("model", "mode", "window")}
            if spec["aggregator"].get("window") is not None:
                spec["aggregator"].update(mode="synthesize", reserved=1)
    if valid_only or draw(st.integers(0, 3)) == 0:
        return spec
    where = draw(st.sampled_from(paths(spec)))
    kind = draw(st.sampled_from(["value", "huge", "nested", "key"]))
    if kind == "key":
        targets = [p for p in paths(spec) if isinstance(_at(spec, p), dict)]
        target = _at(spec, draw(st.sampled_from(targets)))
        target[draw(st.text(max_size=30))] = draw(JSON)
        return spec
    new = {"value": JSON, "huge": HUGE, "nested": st.integers(1, 200).map(nested)}[kind]
    return put(spec, where, draw(new))


def _at(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


def _models_of(spec: Any, draw, valid_only: bool) -> Any:
    # Mostly model strings that build (the schema draws any text, which is fuzzed too).
    for path in paths(spec):
        if path and path[-1] == "model" and isinstance(_at(spec, path), str) and (valid_only or draw(st.booleans())):
            put(spec, path, draw(st.sampled_from(MODELS[:3]) if valid_only else st.sampled_from(MODELS)))
    return spec


@fuzz(150)
@given(spec=specs())
@example(spec={"layers": [[{"model": "specfake:a", "samples": 10**4000}]]})
@example(spec={"layers": [[{"model": ["specfake:a"]}]], "aggregator": {"model": 5}})  # was: pydantic's union tags
@example(spec={"layers": [["specfake:a"]], "k" * 1000: 1})  # was: a 1,000-character message
def test_specs_drawn_from_the_schema_build_or_fail_in_one_line(spec):
    parsed = outcome(parse_spec, copy.deepcopy(spec))
    built = outcome(create_from_spec, spec)
    if isinstance(parsed, MoASpec) and isinstance(built, SelfMoAError):
        assert "model" in str(built), f"a valid spec fails to build: {built}"  # only a model can fail now
    if isinstance(parsed, SelfMoAError):
        assert str(built) == str(parsed)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("specs")


@fuzz(80)
@given(spec=specs())
def test_spec_files_written_from_drawn_specs_load_like_the_dicts(folder, spec):
    parsed = outcome(parse_spec, copy.deepcopy(spec))
    for suffix, text in ((".json", json.dumps(spec)), (".yaml", yaml.safe_dump(spec))):
        path = folder / f"spec{suffix}"
        path.write_text(text, encoding="utf-8")
        assert isinstance(outcome(load_spec_file, path), dict) == isinstance(spec, dict)
        from_file = outcome(create_from_spec, path)
        assert isinstance(from_file, SelfMoAError) == isinstance(outcome(create_from_spec, spec), SelfMoAError)
        if isinstance(parsed, SelfMoAError) and isinstance(spec, dict):
            assert str(outcome(parse_spec, path)) == str(parsed), suffix


# --- Spec files mutated as text --------------------------------------------------------------------

VALID = {"name": "fuzz", "layers": [[{"model": "specfake:a", "samples": 2}, "specfake:b"]],
         "aggregator": {"model": "specfake:a", "window": 3, "reserved": 1}, "seed": 7}
YAML_TEXT = yaml.safe_dump(VALID, sort_keys=False)


def alias_bomb(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nlayers: [[{{model: *l{levels - 1}}}]]\n"


PATHOLOGICAL_FILES: dict[str, tuple[str, bytes]] = {
    "empty yaml": (".yaml", b""),
    "empty json": (".json", b""),
    "only a comment": (".yaml", b"# nothing\n"),
    "a yaml scalar": (".yaml", b"layers\n"),
    "a json list": (".json", b"[1, 2]"),
    "invalid utf-8": (".yaml", YAML_TEXT.encode() + b"\nname: \xff\xfe\xc3(\n"),
    "utf-16": (".yaml", YAML_TEXT.encode("utf-16")),
    "bom then yaml": (".yaml", b"\xef\xbb\xbf" + YAML_TEXT.encode()),
    "python tag": (".yaml", b'layers: !!python/object/apply:os.system ["echo hi"]\n'),
    "python name tag": (".yaml", b"layers: [[{model: !!python/name:os.system ''}]]\n"),
    "custom tag": (".yaml", b"layers: !fuzz [[specfake:a]]\n"),
    "binary tag": (".yaml", b"layers: [[{model: !!binary aGVsbG8=}]]\n"),
    "set tag": (".yaml", b"layers: [!!set {specfake:a}]\n"),
    "timestamp": (".yaml", b"layers: [[specfake:a]]\nname: 2001-12-14t21:59:43.10-05:00\n"),
    "timestamp model": (".yaml", b"layers: [[{model: 2001-12-14}]]\n"),
    "timestamp tag on a number": (".yaml", b"layers: [[specfake:a]]\nseed: !!timestamp 1\n"),
    "float nan": (".yaml", b"layers: [[specfake:a]]\ntemperature: .nan\n"),
    "float inf": (".yaml", b"layers: [[specfake:a]]\ntimeout: .inf\n"),
    "json NaN": (".json", b'{"layers": [["specfake:a"]], "retry_delay": NaN}'),
    "json Infinity": (".json", b'{"layers": [["specfake:a"]], "seed": Infinity}'),
    "json number of 5000 digits": (".json", b'{"layers": [["specfake:a"]], "seed": ' + b"9" * 5000 + b"}"),
    "yaml number of 5000 digits": (".yaml", b"layers: [[specfake:a]]\nseed: " + b"9" * 5000 + b"\n"),
    "yaml 1e999": (".yaml", b"layers: [[specfake:a]]\nmax_tokens: 1e999\n"),
    "yaml octal and hex": (".yaml", b"layers: [[{model: specfake:a, samples: 0x10}]]\nseed: 0o17\n"),
    "yaml nested 10000 deep": (".yaml", b"layers: " + b"[" * 10000 + b"]" * 10000 + b"\n"),
    "json nested 100000 deep": (".json", b'{"layers": ' + b"[" * 100000 + b"]" * 100000 + b"}"),
    "yaml mapping nested 3000 deep": (".yaml", b"a: " + b"{a: " * 3000 + b"1" + b"}" * 3000 + b"\n"),
    "duplicate top-level key": (".yaml", b"layers: [[specfake:a]]\nseed: 1\nseed: 2\n"),
    "duplicate nested key": (".yaml", b"layers: [[{model: specfake:a, samples: 2, samples: 3}]]\n"),
    "duplicate json key": (".json", b'{"layers": [["specfake:a"]], "seed": 1, "seed": 2}'),
    "merge key": (".yaml", b"base: &b {model: specfake:a}\nlayers: [[{<<: *b, samples: 2}]]\n"),
    "alias bomb": (".yaml", alias_bomb().encode()),
    "two documents": (".yaml", YAML_TEXT.encode() + b"---\n" + YAML_TEXT.encode()),
    "tab indentation": (".yaml", b"layers:\n\t- [specfake:a]\n"),
    "NUL byte": (".yaml", b"layers: [[specfake:a]]\nname: a\x00b\n"),
    "lone surrogate escape": (".json", b'{"layers": [["\\ud800"]]}'),
    "key of 100 KB": (".yaml", b"layers: [[specfake:a]]\n" + b"k" * 100_000 + b": 1\n"),
    "model of 100 KB": (".yaml", b"layers: [[" + b"m" * 100_000 + b"]]\n"),
    "complex key": (".yaml", b"layers: [[specfake:a]]\n? [a, b]\n: 1\n"),
    "null key": (".yaml", b"layers: [[specfake:a]]\n~: 1\n"),
    "integer keys": (".yaml", b"layers: [[specfake:a]]\n1: 1\n"),
    "directory": (".yaml", b""),
}


@pytest.mark.parametrize("name", list(PATHOLOGICAL_FILES))
def test_pathological_spec_files_fail_in_one_line_or_build(folder, name):
    suffix, data = PATHOLOGICAL_FILES[name]
    path = folder / f"pathological{suffix}"
    if name == "directory":
        path = folder / "a-directory.yaml"
        path.mkdir(exist_ok=True)
    else:
        path.write_bytes(data)
    outcome(create_from_spec, path)
    outcome(create_from_spec, str(path))


def test_duplicate_keys_are_refused_by_name(folder):
    for suffix, data in ((".yaml", PATHOLOGICAL_FILES["duplicate nested key"][1]),
                         (".json", PATHOLOGICAL_FILES["duplicate json key"][1])):
        path = folder / f"duplicate{suffix}"
        path.write_bytes(data)
        with pytest.raises(SelfMoAError, match="duplicate key '(samples|seed)'"):
            load_spec_file(path)


MUTATIONS = st.sampled_from(["insert", "delete", "replace", "duplicate line", "tag", "bytes", "truncate"])
TAGS = st.sampled_from(["!!python/object:os.system ", "!!binary ", "!!set ", "!!str ", "!!int ", "!!float ",
                        "!fuzz ", "&a ", "*a ", "!!omap ", "!!timestamp "])


@fuzz(250)
@given(suffix=st.sampled_from([".yaml", ".json"]), data=st.data())
def test_mutated_spec_files_fail_in_one_line_or_build(folder, suffix, data):
    base = data.draw(specs(valid_only=True)) if data.draw(st.integers(0, 3)) == 0 else VALID
    text = (json.dumps(base, indent=1) if suffix == ".json" else yaml.safe_dump(base)).encode()
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        kind = data.draw(MUTATIONS)
        if kind == "insert":
            text = text[:at] + data.draw(st.sampled_from([b"{", b"[", b":", b",", b"- ", b"\n", b'"', b"#", b"\t"])) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + data.draw(st.integers(1, 5)):]
        elif kind == "replace":
            text = text[:at] + data.draw(st.text(max_size=8)).encode("utf-8", "surrogatepass") + text[at + 1:]
        elif kind == "duplicate line":
            lines = text.splitlines(keepends=True) or [b""]
            i = data.draw(st.integers(0, len(lines) - 1))
            text = b"".join([*lines[: i + 1], lines[i], *lines[i + 1:]])
        elif kind == "tag":
            text = text[:at] + data.draw(TAGS).encode() + text[at:]
        elif kind == "bytes":
            text = text[:at] + data.draw(st.binary(min_size=1, max_size=4)) + text[at:]
        else:
            text = text[:at]
    path = folder / f"mutated{suffix}"
    path.write_bytes(text)
    outcome(create_from_spec, path)


# --- Run contexts -------------------------------------------------------------------------------

GRAPHS = {
    "self-moa": create_self_moa(FakeChatModel(model="one"), samples=3).compile(),
    "self-moa-seq": create_self_moa_seq(FakeChatModel(model="seq"), samples=5, window=3, reserved=1).compile(),
    "vote": create_from_spec({"layers": [[{"model": FakeChatModel(model="v"), "samples": 3}]],
                              "aggregator": {"mode": "vote", "answer_of": "number"}}).compile(),
}
CONTEXT_SCHEMA = GRAPHS["self-moa"].get_context_jsonschema()
DRAWN_CONTEXTS = from_schema(CONTEXT_SCHEMA)
SMALL = st.integers(-2, 6) | HUGE  # a run stays small; larger numbers must be refused, not drawn


@st.composite
def contexts(draw) -> dict:
    """A run context from the graph's context schema, its counts small or out of range, models fakes."""
    context = draw(DRAWN_CONTEXTS)
    for key in ("samples", "window", "reserved"):
        if context.get(key) is not None:
            context[key] = draw(SMALL)
    if isinstance(context.get("adaptive"), dict):
        context["adaptive"] = {k: draw(SMALL) if isinstance(v, int) else v for k, v in context["adaptive"].items()}
    for key in ("model", "aggregator"):  # never a real endpoint or the embedded model: no network, no download
        if context.get(key) is not None:
            context[key] = draw(st.sampled_from(["specfake:c", "specfake:d", "", " ", "specfake:", ":x", "x:"]))
    if draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from([*CONTEXT_SCHEMA["properties"], "unknown"]))
        context[key] = draw(JSON | HUGE)
    return context


@fuzz(250)
@given(graph=st.sampled_from(list(GRAPHS)), context=contexts())
@example(graph="self-moa", context={"prompt": "no placeholder " * 100})
@example(graph="self-moa", context={"k" * 1000: 1})
def test_runs_with_drawn_contexts_answer_or_fail_in_one_line(graph, context):
    out = outcome(GRAPHS[graph].invoke, {"messages": "What is 17*3?"}, context=context)
    assert isinstance(out, SelfMoAError) or out["answer"] or out.get("abstained")


def test_peak_memory_stayed_within_200_mb():
    # Last in the file: the whole fuzz run, alias bombs and 5000-digit numbers included.
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - PEAK_KB[0]) / 1024
    assert grown_mb < 200, f"peak memory grew by {grown_mb:.0f} MB"
