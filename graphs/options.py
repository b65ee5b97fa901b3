"""Options shared by every factory, and how a factory's arguments become a `MoASpec`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from pydantic import ValidationError
from typing_extensions import TypedDict

from selfmoa.graphs.spec import AggregatorSpec, MoASpec, ProposerSpec, one_line
from selfmoa.runtime import CallLimiter, SpecError


class RunOptions(TypedDict, total=False):
    """Keyword options accepted by every factory (see `MoASpec` for their meaning).

    Attributes:
        aggregator_temperature: Aggregator temperature, default 0.0 (None: the model's default).
        min_proposals: Successful proposals needed per layer to go on, default 1.
        max_attempts: Attempts per model call, retries included, default 2.
        retry_delay: Seconds before the first retry, doubled after each, default 0.5.
        timeout: Seconds one model call may take, default no limit.
        prompt: Aggregation prompt with a `{references}` placeholder.
        review: Pause before the final aggregation so a caller can inspect, edit or drop
            proposals (needs a checkpointer; see `selfmoa.nodes.review`).
        max_reference_chars: Most characters of references one call sees in all, default
            24,000; longer references are trimmed to fit, with a warning (None: no limit).
        max_input_chars: Most characters the conversation may hold; longer input is
            refused before any call with an `InputError` (None, the default: no limit
            besides the models' known contexts).
        limiter: A `selfmoa.CallLimiter` shared by several graphs: a cap on model calls
            in flight across all their runs.
        mode: How the aggregator combines the candidates: "synthesize" (write a new
            answer, the default), "select" (name the most consistent candidate and return
            it verbatim) or "vote" (majority over extracted answers, no model call; not
            with a sliding window).
        answer_of: What "vote" compares: "number", "letter", "last_line" or a callable
            from a reply to its short answer (default: the whole reply, normalised).
        sampling: "parallel" (one request per sample, the default) or "n" (one request
            asking for all of a model's samples as `n` choices, where the endpoint
            supports it).
    """

    aggregator_temperature: float | None
    mode: Literal["synthesize", "select", "vote"]
    answer_of: str | Callable[[str], str | None] | None
    min_proposals: int
    max_attempts: int
    retry_delay: float
    timeout: float | None
    prompt: str
    sampling: Literal["parallel", "n"]
    review: bool
    max_reference_chars: int | None
    max_input_chars: int | None
    limiter: CallLimiter | None


def make_spec(
    factory: str,
    layers: list,
    aggregator: dict,
    temperature: float | None,
    seed: int | None,
    options: Mapping[str, object],
) -> MoASpec:
    """Validate a factory's arguments into a `MoASpec`, with errors that name the factory.

    The spec's own validation is the only one; an error about one of the factory's own
    arguments (`samples`, `window`, `reserved`) names it as the caller wrote it.
    """
    unknown = sorted(set(options) - set(RunOptions.__annotations__))
    if unknown:
        valid = ", ".join(sorted(RunOptions.__annotations__))
        raise SpecError(f"{factory}() got unknown option {unknown[0]!r}; valid options: {valid}")
    options = dict(options)
    for option, field in (("aggregator_temperature", "temperature"), ("mode", "mode"), ("answer_of", "answer_of")):
        if option in options:  # aggregator settings, given flat to the factories
            aggregator = {**aggregator, field: options.pop(option)}
    if aggregator.get("model") is None:
        aggregator = {k: v for k, v in aggregator.items() if k != "model"}
    data = {"layers": layers, "aggregator": aggregator, "temperature": temperature, "seed": seed, **options}
    try:
        return MoASpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{factory}(): {_argument_error(exc) or one_line(exc, 'spec')}") from None


# Where the factories' own count arguments sit in a spec.
_ARGUMENTS = {
    ("layers", 0, "proposers", 0, "samples"): ("samples", ProposerSpec),
    ("aggregator", "window"): ("window", AggregatorSpec),
    ("aggregator", "reserved"): ("reserved", AggregatorSpec),
}


def _argument_error(exc: ValidationError) -> str | None:
    for error in exc.errors(include_url=False):
        if tuple(error["loc"]) in _ARGUMENTS:
            name, owner = _ARGUMENTS[tuple(error["loc"])]
            fields = owner.model_fields  # type: ignore[attr-defined]  # a pydantic model class
            minimum = next(m.ge for m in fields[name].metadata if hasattr(m, "ge"))
            return f"{name} must be an integer of at least {minimum}, got {error['input']!r}"
    return None
