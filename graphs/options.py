"""Options shared by every factory, and how a factory's arguments become a `MoASpec`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from pydantic import ValidationError
from typing_extensions import TypedDict

from selfmoa.graphs.spec import AdaptiveSpec, LowAgreementSpec, MoASpec, one_line
from selfmoa.runtime.errors import SpecError
from selfmoa.runtime.limiter import CallLimiter


class RunOptions(TypedDict, total=False):
    """Keyword options accepted by every factory: `MoASpec` fields, under their spec names.

    Their meaning, default and checks are the spec's (see `MoASpec` and `AggregatorSpec`);
    `aggregator_temperature`, `mode`, `order` and `answer_of` are the aggregator's
    `temperature`, `mode`, `order` and `answer_of`, given flat. tests/test_schema.py checks that every key here is
    a spec field of the same type, so the two cannot drift apart.
    """

    aggregator_temperature: float | None
    mode: Literal["synthesize", "select", "vote"]
    order: Literal["shuffled", "both", "given"]
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
    max_tokens: int | None
    limiter: CallLimiter | None
    adaptive: AdaptiveSpec | None
    low_agreement: LowAgreementSpec | None


FLAT_AGGREGATOR = {"aggregator_temperature": "temperature", "mode": "mode", "order": "order", "answer_of": "answer_of"}
"""Factory options that set a field of the spec's `aggregator`, and that field's name."""


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
    for option, field in FLAT_AGGREGATOR.items():
        if option in options:  # aggregator settings, given flat to the factories
            aggregator = {**aggregator, field: options.pop(option)}
    if aggregator.get("model") is None:
        aggregator = {k: v for k, v in aggregator.items() if k != "model"}
    data = {"layers": layers, "aggregator": aggregator, "temperature": temperature, "seed": seed, **options}
    try:
        return MoASpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{factory}(): {_argument_error(exc) or one_line(exc, 'spec')}") from None


# Where the factories' own arguments sit in a spec, for errors that name them as the caller wrote them.
_ARGUMENTS = {"layers.0.proposers.0.samples": "samples", "aggregator.window": "window", "aggregator.reserved": "reserved"}


def _argument_error(exc: ValidationError) -> str | None:
    for error in exc.errors(include_url=False):
        name = _ARGUMENTS.get(".".join(map(str, error["loc"])))
        if name is not None:
            minimum = 2 if name == "window" else 1
            return f"{name} must be an integer of at least {minimum}, got {error['input']!r}"
    return None
