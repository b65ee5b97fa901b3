"""`MoASpec`: an ensemble declared as data (a dict, a YAML or JSON file, or Python).

Every method is a spec: Self-MoA is one layer of k samples of one model; MoA is several
layers of different models; Self-MoA-Seq is Self-MoA with sliding-window aggregation; and
hybrids mix them freely, for example 3 samples of model A plus 3 of model B, aggregated
through a sliding window.

A YAML spec::

    name: two-model-hybrid
    temperature: 0.7
    layers:
      - - {model: "openai:gpt-4o-mini", samples: 3}
        - {model: "anthropic:claude-3-5-haiku-latest", samples: 3}
    aggregator:
      model: "openai:gpt-4o-mini"
      mode: synthesize      # or select, or vote
      window: 6             # leave out for one call over every proposal
      reserved: 3
"""

from __future__ import annotations

import json
import reprlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from langchain_core.language_models import BaseChatModel
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from selfmoa.nodes.answers import answer_extractor
from selfmoa.prompts import AGGREGATE_PROMPT
from selfmoa.runtime.errors import SpecError
from selfmoa.runtime.limiter import CallLimiter

Model = str | InstanceOf[BaseChatModel]

# The paper's settings (Li et al. 2025, arXiv 2502.00674): k = 6 samples at temperature 0.7,
# and Self-MoA-Seq's window of 6 references, 3 of them the repeated synthesis. Every
# default of the factories, the CLI, the server's presets and Studio is one of these.
SAMPLES = 6
TEMPERATURE = 0.7
WINDOW = 6
RESERVED = 3

# Every number a spec takes has a stated range, refused at validation in one line wherever it
# enters (factory, spec file, CLI, server request, run context): a count large enough to
# exhaust memory, an infinite delay or temperature, a seed past what endpoints take are errors.
MAX_SAMPLES = 1024
"""Most samples per proposer entry and proposers per layer (also bounds window, batch, margin, patience)."""
MAX_LAYERS = 16
MAX_SEED = 2**31 - 1 - 16 * MAX_SAMPLES * MAX_SAMPLES
"""Largest base seed: with every sample's offset added, seeds stay within a signed 32-bit integer."""

_MODEL_HINT = "a model must be a model string like 'openai:gpt-4o-mini' or 'local', or a LangChain chat model"


def _check_model(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{_MODEL_HINT}, got an empty string")
    return value


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProposerSpec(_Spec):
    """One model of a layer and how many samples to draw from it.

    A bare string is read as `{"model": <string>}`.
    """

    model: Model
    samples: StrictInt = Field(default=1, ge=1, le=MAX_SAMPLES)
    temperature: float | None = Field(default=None, ge=0, le=2)
    """Overrides the spec's `temperature` for this proposer."""

    _non_empty_model = field_validator("model")(_check_model)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"model": value} if isinstance(value, (str, BaseChatModel)) else value


class LayerSpec(_Spec):
    """One layer of proposers; all of them see the previous layer's answers as references.

    A bare list is read as `{"proposers": <list>}`.
    """

    proposers: list[ProposerSpec] = Field(min_length=1, max_length=MAX_SAMPLES)

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        return {"proposers": value} if isinstance(value, (list, tuple)) else value

    @property
    def size(self) -> int:
        """Number of proposer calls in this layer."""
        return sum(p.samples for p in self.proposers)


class AggregatorSpec(_Spec):
    """How the last layer's proposals become the answer.

    `mode` says how: `synthesize` writes a new answer from the candidates (the paper's
    aggregate-and-synthesize), `select` has the model name the candidate most consistent
    with the others and returns it verbatim (universal self-consistency), `vote` takes a
    majority over the candidates' extracted answers with no model call.

    `window` says over what: None (the default) aggregates every proposal in one call; a
    number W slides a window of W references over the samples (Self-MoA-Seq), R of them
    (`reserved`) repeating the running synthesis.
    """

    model: Model | None = None
    """Aggregator model; None means the first proposer model of the last layer (Self-MoA)."""
    mode: Literal["synthesize", "select", "vote"] = "synthesize"
    window: StrictInt | None = Field(default=None, ge=2, le=MAX_SAMPLES)
    """References per aggregation call (W) for Self-MoA-Seq; None: one call over all proposals."""
    reserved: StrictInt = Field(default=RESERVED, ge=1, le=MAX_SAMPLES)
    """Window slots that repeat the current synthesis (R, 0 < R < W)."""
    temperature: float | None = Field(default=0.0, ge=0, le=2)
    answer_of: str | Callable[[str], str | None] | None = Field(default=None, exclude=True)
    """What `vote` (and `patience`) compares: the name of a built-in extractor (`number`, `letter`,
    `last_line`) or, in Python, any callable from a reply to its short answer. None: the
    whole reply with whitespace and case normalised."""
    patience: StrictInt | None = Field(default=None, ge=1, le=MAX_SAMPLES)
    """Window mode: stop drawing samples once P window steps in a row kept the answer of
    the step before (compared through `answer_of`); the answer is the latest synthesis.
    None: aggregate every sample."""
    order: Literal["shuffled", "both", "given"] = "shuffled"
    """`select`: how the candidates are shown to the judge, which tends to name the first one
    whatever it says: in an order shuffled by the run's seed ("shuffled", recorded in the
    aggregation's `order`), in two such orders keeping the candidate both name ("both"; when
    they differ, the one whose short answer more samples share), or as drawn ("given")."""
    keep: Literal["all", "latest"] = "all"
    """What a run's `proposals` and `aggregations` hold in window mode: every call ("all"),
    or the latest batch and window step only ("latest"), so that the state and each
    checkpoint stay the same size for any number of samples. Every record still goes
    through `stream_mode="updates"` and into the checkpointer's history."""

    _non_empty_model = field_validator("model")(_check_model)

    @field_validator("answer_of")
    @classmethod
    def _check_answer_of(cls, value: Any) -> Any:
        answer_extractor(value)  # raises ValueError naming the known extractors
        return value

    @model_validator(mode="after")
    def _check_window(self) -> AggregatorSpec:
        if self.window is not None and self.reserved >= self.window:
            raise ValueError(f"reserved must be smaller than window (0 < reserved < window), got window={self.window}, "
                             f"reserved={self.reserved}; e.g. window=6, reserved=3 as in the paper")
        if self.keep == "latest" and self.window is None:
            raise ValueError("keep='latest' applies to window mode only; set a window or keep to 'all'")
        if self.patience is not None and self.window is None:
            raise ValueError("patience stops a sliding window early; set a window (Self-MoA-Seq) or drop patience")
        if self.mode == "vote" and self.window is not None:
            raise ValueError("mode 'vote' takes all samples at once and cannot slide a window; "
                             "use mode 'synthesize' or 'select' with a window, or drop the window")
        return self


class AdaptiveSpec(_Spec):
    """Draw the last layer's samples a batch at a time, and stop once they agree.

    After each batch, the short answers of the samples drawn so far (`aggregator.answer_of`)
    are counted; drawing stops when the leading answer is `margin` ahead of the second, or
    when every sample is drawn. The aggregation then runs in its mode over the samples
    drawn. The rule equalled 6-sample voting with 21% and 41% fewer samples when replayed
    on this project's eval records (rg-arithmetic 0.5B, GSM8K 1.5B); see docs/eval. In
    YAML, `adaptive: true` takes the defaults.
    """

    batch: StrictInt = Field(default=2, ge=1, le=MAX_SAMPLES)
    """Samples drawn at a time, in parallel."""
    margin: StrictInt = Field(default=2, ge=1, le=MAX_SAMPLES)
    """Stop once the leading short answer has this many more samples than the second."""
    anchor: bool = False
    """Draw the first sample greedily (temperature 0); it votes like any other."""


class LowAgreementSpec(_Spec):
    """What a run does when its samples agree less than `below` (see the run's `agreement`)."""

    below: float = Field(ge=0, le=1)
    """Act when the agreement's share is under this (a share of None, no sample agreeing, counts as 0)."""
    action: Literal["answer", "abstain", "escalate"] = "answer"
    """`answer` anyway; `abstain`: no answer, the reason in `abstained`, the samples kept;
    `escalate`: run the `escalate` ensemble on the same conversation and answer with it."""
    escalate: MoASpec | None = None
    """The ensemble to escalate to (a stronger model, more samples, another mode)."""

    @model_validator(mode="after")
    def _check_escalate(self) -> LowAgreementSpec:
        if (self.action == "escalate") != (self.escalate is not None):
            raise ValueError("low_agreement: action 'escalate' needs an 'escalate' spec, and only it takes one")
        return self


class MoASpec(_Spec):
    """A whole ensemble.

    Example:
        >>> spec = MoASpec.model_validate({"layers": [[{"model": "openai:gpt-4o-mini", "samples": 6}]]})
        >>> spec.layers[0].size
        6
    """

    name: str | None = None
    layers: list[LayerSpec] = Field(min_length=1, max_length=MAX_LAYERS)
    aggregator: AggregatorSpec = AggregatorSpec()
    temperature: float | None = Field(default=TEMPERATURE, ge=0, le=2)
    """Sampling temperature of the proposers (None: each model's default)."""
    max_tokens: StrictInt | None = Field(default=None, ge=1, le=1_000_000)
    """Most tokens per reply of every model given as a string (None: each model's default).
    A chat model instance keeps its own setting."""
    seed: StrictInt | None = Field(default=None, ge=0, le=MAX_SEED)
    """Base seed: proposer i of a run gets seed + i, the aggregator gets seed."""
    sampling: Literal["parallel", "n"] = "parallel"
    """How the samples of one proposer are drawn: one request each, in parallel (the
    default; right for llama.cpp, vLLM and unknown endpoints), or one request asking for
    `n` choices (for endpoints known to return them with correct usage, faster there)."""
    min_proposals: StrictInt = Field(default=1, ge=1, le=MAX_SAMPLES)
    """Successful proposals needed per layer to go on; failures below it stop the run."""
    max_attempts: StrictInt = Field(default=2, ge=1, le=10)
    """Attempts per model call (1 = no retry)."""
    retry_delay: float = Field(default=0.5, ge=0, le=60)
    timeout: float | None = Field(default=None, gt=0, le=86_400)
    """Seconds one model call may take."""
    prompt: str = AGGREGATE_PROMPT
    """Aggregation prompt; `{references}` is replaced by the numbered responses (the only
    placeholder: other braces are text, nothing is formatted)."""
    max_reference_chars: StrictInt | None = Field(default=24_000, ge=100, le=100_000_000)
    """Most characters of references (proposals, or synthesis and samples in a window)
    one call sees in all; longer references are trimmed to fit, with a warning in the
    run's `warnings` (None: no limit)."""
    max_input_chars: StrictInt | None = Field(default=None, ge=1, le=100_000_000)
    """Most characters the conversation may hold; a longer one is refused before any call
    with an `InputError` (None: no limit besides the models' known contexts, which are
    always checked, e.g. the embedded model's)."""
    limiter: InstanceOf[CallLimiter] | None = Field(default=None, exclude=True)
    """A `CallLimiter` capping model calls in flight across every graph that shares it;
    not part of dumps, state or checkpoints."""
    review: bool = False
    """Pause before the final aggregation (LangGraph `interrupt`) so a caller can inspect,
    edit or drop proposals, then resume with `Command(resume=...)`. Needs a checkpointer
    and one-shot aggregation."""
    adaptive: AdaptiveSpec | None = None
    """Stop drawing samples once they agree (see `AdaptiveSpec`); None: draw every sample.
    One-shot aggregation only (Self-MoA-Seq stops early with `patience`)."""
    low_agreement: LowAgreementSpec | None = None
    """Answer, abstain or escalate when the samples agree less than a threshold; None: answer."""

    @field_validator("adaptive", mode="before")
    @classmethod
    def _adaptive_flag(cls, value: Any) -> Any:
        return {} if value is True else (None if value is False else value)

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value: str) -> str:
        if "{references}" not in value:
            raise ValueError("prompt must contain the {references} placeholder where the numbered responses go")
        return value

    @model_validator(mode="after")
    def _check_one_shot(self) -> MoASpec:
        if self.aggregator.window is not None and (self.review or self.adaptive):
            option = "review" if self.review else "adaptive"
            hint = " (a sliding window stops early with aggregator.patience)" if option == "adaptive" else ""
            raise ValueError(f"{option} works with one-shot aggregation only; remove aggregator.window or drop "
                             f"{option}{hint}")
        return self

    @model_validator(mode="after")
    def _check_quorum(self) -> MoASpec:
        for i, layer in enumerate(self.layers, 1):
            if self.min_proposals > layer.size:
                raise ValueError(f"min_proposals={self.min_proposals} exceeds the {layer.size} proposals of layer {i}; "
                                 "lower min_proposals or add samples")
        return self


def parse_spec(spec: MoASpec | dict | str | Path) -> MoASpec:
    """Validate a spec given as a `MoASpec`, a dict, or a path to a YAML or JSON file.

    Raises:
        SpecError: One line naming the bad key or value and how to fix it.

    Example:
        >>> parse_spec({"layers": [["openai:gpt-4o-mini"]]}).layers[0].proposers[0].model
        'openai:gpt-4o-mini'
    """
    if isinstance(spec, MoASpec):
        return spec
    if isinstance(spec, (str, Path)):
        spec = load_spec_file(spec)
    if not isinstance(spec, dict):
        raise SpecError(f"spec must be a MoASpec, a dict or a path to a YAML/JSON file, got {type(spec).__name__}")
    try:
        return MoASpec.model_validate(spec)
    except ValidationError as exc:
        raise SpecError(one_line(exc, "spec")) from None


def load_spec_file(path: str | Path) -> dict:
    """Read a spec file (`.yaml`, `.yml` or `.json`) into a dict."""
    path = Path(path)
    json_file = path.suffix.lower() == ".json"
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text, object_pairs_hook=_unique) if json_file else yaml.load(text, _UniqueKeyLoader)
    except (OSError, UnicodeDecodeError) as exc:  # before ValueError: a UnicodeDecodeError is one
        reason = getattr(exc, "strerror", None) or exc
        raise SpecError(f"cannot read spec file {str(path)!r}: {reason}; check the path (a UTF-8 text file)") from None
    # RecursionError: nested too deep; AttributeError, TypeError: PyYAML reading a tagged value it cannot
    # (`!!timestamp 1` raises AttributeError from its constructor, not a YAMLError).
    except (ValueError, yaml.YAMLError, RecursionError, AttributeError, TypeError) as exc:
        where = " ".join(str(exc).split())[:300]
        raise SpecError(f"spec file {str(path)!r} is not valid {'json' if json_file else 'YAML'}: {where}") from None
    if not isinstance(data, dict):
        raise SpecError(f"spec file {str(path)!r} must hold a mapping with a 'layers' key, got {type(data).__name__}")
    return data


def _unique(pairs: list[tuple[Any, Any]]) -> dict:
    # A key given twice would silently keep its last value (json and PyYAML's default): refused by name.
    if duplicates := [key for key, n in Counter(key for key, _ in pairs).items() if n > 1]:
        raise ValueError(f"duplicate key {duplicates[0]!r:.80}; give each key once")
    return dict(pairs)


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        _unique([(k.value, None) for k, _ in node.value if isinstance(k, yaml.ScalarNode)])
        return super().construct_mapping(node, deep=deep)


def one_line(exc: ValidationError, what: str, *, limit: int = 3) -> str:
    """Turn a pydantic error into one actionable line naming its first `limit` problems.

    Example:
        >>> try:
        ...     MoASpec.model_validate({"layers": [[{"model": "m", "samples": 0}]], "temprature": 1, "seed": "x"})
        ... except ValidationError as exc:
        ...     print(one_line(exc, "spec"))  # doctest: +ELLIPSIS
        3 problems in spec: (1) invalid spec at 'layers.0.proposers.0.samples': ...; (2) ...; (3) unknown key 'temprature'...
    """
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        problem = _problem(error, what)
        if problem not in problems:  # a bad model fails both arms of `str | chat model`: one problem
            problems.append(problem)
    if len(problems) == 1:
        return problems[0]
    more = len(problems) - limit
    listed = "; ".join(f"({i}) {problem}" for i, problem in enumerate(problems[:limit], 1))
    return f"{len(problems)} problems in {what}: {listed}" + (f" (and {more} more)" if more > 0 else "")


def _problem(error: Any, what: str) -> str:
    parts = [str(part) for part in error["loc"]]
    if "model" in parts[:-1]:  # past a model's name comes the arm of `str | chat model`: pydantic's own tag
        loc = ".".join(parts[: parts.index("model") + 1])
        return f"invalid {what} at {loc!r}: {_MODEL_HINT}, got {reprlib.repr(error.get('input'))[:60]}"
    loc = (".".join(parts) or what)[:100]  # a key may be any length
    if error["type"] == "extra_forbidden":
        return f"unknown key {loc!r} in {what}; remove it or check its spelling"
    if error["type"] == "missing":
        return f"{what} is missing the required key {loc!r}"
    return f"invalid {what} at {loc!r}: {error['msg'].removeprefix('Value error, ')}"


def map_models(spec: MoASpec, fn: Callable[[Any], Any]) -> MoASpec:
    """The spec with each model replaced by `fn(model)`: every proposer's, and the aggregator's when set.

    The one walk over a spec's models, for whoever turns model strings into clients
    (the CLI, the server, Studio) or into labels (a run's plan). Proposers come first,
    in layer order, then the aggregator.

    Example:
        >>> spec = parse_spec({"layers": [["openai:a", "openai:b"]], "aggregator": {"model": "openai:a"}})
        >>> mapped = map_models(spec, str.upper)
        >>> [p.model for p in mapped.layers[0].proposers], mapped.aggregator.model
        (['OPENAI:A', 'OPENAI:B'], 'OPENAI:A')
    """
    layers = [
        layer.model_copy(update={"proposers": [p.model_copy(update={"model": fn(p.model)}) for p in layer.proposers]})
        for layer in spec.layers
    ]
    aggregator = spec.aggregator
    if aggregator.model is not None:
        aggregator = aggregator.model_copy(update={"model": fn(aggregator.model)})
    return spec.model_copy(update={"layers": layers, "aggregator": aggregator})


LowAgreementSpec.model_rebuild()
