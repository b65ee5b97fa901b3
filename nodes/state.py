"""Typed state shared by every selfmoa graph.

The graph's input is `InputState` (just `messages`, so it drops into any `MessagesState`
agent as a subgraph) and its output is `OutputState`. `MoAState` adds the bookkeeping of a
run in progress. Lists that gather the results of parallel `Send` tasks use reducers and
are reset with `Overwrite` between layers, so state grows with the number of proposals,
not with the square of it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from langgraph.types import Overwrite
from typing_extensions import TypedDict

from selfmoa.runtime.errors import SpecError
from selfmoa.runtime.usage import TokenUsage, UsageSummary, add_usage, empty_usage


class Proposal(TypedDict):
    """One proposer call and its result."""

    layer: int
    """1-based layer number."""
    model: str
    """Label of the model that wrote it."""
    sample: int
    """0-based index of this proposal within its layer."""
    text: str
    """The proposal; empty when the call failed."""
    usage: TokenUsage
    latency: float
    """Seconds spent in the call, retries included."""
    error: str | None
    """Why the call failed after its retries, or None."""


class Aggregation(TypedDict):
    """One aggregator call: the final one-shot call or one sliding-window step."""

    kind: Literal["aggregate", "window"]
    step: int
    """0-based step number (always 0 for a one-shot aggregation)."""
    model: str
    sample_ids: list[int]
    """Indices of the new proposals in this call's references (last layer)."""
    reserved: int
    """How many references were copies of the current synthesis."""
    text: str
    usage: TokenUsage
    latency: float
    mode: NotRequired[Literal["synthesize", "select", "vote"]]
    chosen: NotRequired[int | None]
    """`select` and `vote`: the sample whose text became this step's result (None: the
    running synthesis was kept)."""
    votes: NotRequired[dict[str, int]]
    """`vote`: how many samples gave each extracted answer, in first-seen order."""
    order: NotRequired[list[list[int | None]]]
    """`select`: the candidates' samples in the order each judge call saw them (None: a
    copy of the carried synthesis), so a run is reproducible and positions can be counted."""
    picks: NotRequired[list[int | None]]
    """`select`: the sample each judge call named (two with order "both")."""


Plan = dict[str, Any]
"""What a run will do: the graph's `MoASpec` with the run's context applied, as its validated
dump (`MoASpec.model_dump()`), each model replaced by its label in the graph's `ModelTable`
and the aggregator's model filled in. Fixed by `prepare`; the same field names as the spec,
and `MoASpec.model_validate(plan)` gives the spec back (tests/test_schema.py)."""

Phase = Literal["propose", "aggregate", "review", "finish", "escalate", "done"]
"""What the run does next, set by the node before each router: draw proposals; an aggregation
step (a sliding window draws its next batch meanwhile); the optional review; write the answer;
hand the run to the escalation (`low_agreement`); nothing (the run has ended)."""


class Tally(TypedDict):
    """Proposals of the last layer so far, whatever `proposals` keeps (a window may keep the latest)."""

    succeeded: int
    failed: int
    answers: dict[str, int]
    """How many successful samples gave each short answer (`answer_of`), in first-seen order."""


class Agreement(TypedDict):
    """How far the samples agree with the answer: a confidence whose calibration depends on the
    model and task (the eval measures it)."""

    share: float | None
    """Fraction of the successful samples whose short answer is the answer's (None: it matches none)."""
    answer: str | None
    """The answer's short answer (`answer_of`): for `synthesize` the synthesis's own."""
    counts: dict[str, int]
    """Successful samples per short answer, most first."""
    samples: int
    """Successful samples it rests on."""


@dataclass(init=False)
class EnsembleContext:
    """Per-run settings that override the graph's own (LangGraph's run context).

    Pass them as `graph.invoke(input, context={"samples": 3})`, or edit them per run in
    LangGraph Studio. Unset fields keep the graph's values; a bad value fails the run at
    its start with a one-line error. Each field sets the `MoASpec` field that
    `CONTEXT_FIELDS` names, with that field's meaning and checks: `model` every
    proposer's model, `samples` every proposer entry's samples, `aggregator` and
    `aggregator_temperature` the aggregator's model and temperature, `mode`, `window`
    and `reserved` the aggregator's (a window only resizes a Self-MoA-Seq graph), and
    `temperature`, `seed`, `prompt`, `max_tokens`, `adaptive` (a dict of `AdaptiveSpec`'s
    fields, or true) the spec's own.
    """

    model: str | None = None
    aggregator: str | None = None
    samples: int | None = None
    temperature: float | None = None
    aggregator_temperature: float | None = None
    mode: str | None = None
    window: int | None = None
    reserved: int | None = None
    seed: int | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    adaptive: dict[str, Any] | bool | None = None

    def __init__(self, **settings: Any) -> None:
        # Written out rather than generated, so that a misspelt key (LangGraph builds the
        # context from the run's dict) is a one-line error that names the keys.
        # CONTEXT_FIELDS names every field (tests/test_schema.py checks it).
        unknown = [key for key in settings if key not in CONTEXT_FIELDS]
        if unknown:
            raise SpecError(f"unknown run context key {unknown[0]!r:.60}; the keys are {', '.join(f.name for f in fields(self))}")
        for name in CONTEXT_FIELDS:
            setattr(self, name, settings.get(name))


CONTEXT_FIELDS: dict[str, str] = {
    **{name: name for name in ("temperature", "seed", "prompt", "max_tokens", "adaptive")},
    **{name: f"aggregator.{name}" for name in ("mode", "window", "reserved")},
    "model": "layers.*.proposers.*.model", "samples": "layers.*.proposers.*.samples",
    "aggregator": "aggregator.model", "aggregator_temperature": "aggregator.temperature",
}
"""The `MoASpec` field each `EnsembleContext` field sets (`*`: every item of a list)."""


class ProposeTask(TypedDict):
    """Payload of one `Send` to the `propose` node."""

    layer: int
    sample: int
    model: str
    temperature: float | None
    seed: int | None
    max_tokens: int | None
    n: int
    """Choices to ask for in this one call (1 unless sampling is "n")."""
    messages: list[AnyMessage]
    references: list[str]
    prompt: str
    """Aggregation prompt wrapping the references (empty in the first layer)."""


class Synthesis(TypedDict):
    """The result of the latest aggregation step: the running synthesis, and finally the answer.

    Kept as data, not as a message, so that intermediate syntheses do not show up in
    `stream_mode="messages"`; the last one becomes the answer's `AIMessage`, with the id of
    the call that streamed it.
    """

    text: str
    id: str | None
    usage_metadata: dict[str, int] | None
    chosen: NotRequired[int | None]
    """`select` mode: the sample this synthesis is a copy of."""
    step: NotRequired[int]
    """The window step that wrote it."""
    response_metadata: NotRequired[dict[str, Any]]
    """The reply's metadata (finish reason, model name), kept for the answer's message."""


class Settle(TypedDict):
    """Whether the running synthesis has settled (Self-MoA-Seq with `patience`)."""

    step: int
    """The latest window step seen (-1: none yet)."""
    answer: str | None
    """Its synthesis's answer, as `answer_of` extracts it."""
    streak: int
    """Window steps in a row whose answer equalled the step before's."""


class AggregateTask(TypedDict):
    """Payload of one `Send` to the `aggregate` node: one aggregation step.

    A one-shot aggregation is a single step over every proposal, with no reserved slots;
    a Self-MoA-Seq step holds the current synthesis repeated `reserved` times, then the
    new samples. The aggregator's settings are the plan's, under the plan's names.
    """

    kind: Literal["aggregate", "window"]
    """What the call's record says: "aggregate" (one-shot) or "window" (a sliding-window step)."""
    model: str
    mode: Literal["synthesize", "select", "vote"]
    temperature: float | None
    seed: int | None
    prompt: str
    max_reference_chars: int | None
    max_tokens: int | None
    order: Literal["shuffled", "both", "given"]
    step: int
    sample_ids: list[int]
    """Sample indices of the new responses (those after the reserved copies)."""
    reserved: int
    responses: list[str]
    carried: int | None
    """`select` mode: the sample the carried synthesis is a copy of."""
    messages: list[AnyMessage]
    final: bool
    """Whether this step writes the answer (its tokens stream)."""


class InputState(TypedDict):
    """What a caller passes in: the conversation so far."""

    messages: Annotated[list[AnyMessage], add_messages]


class OutputState(TypedDict):
    """What a run returns."""

    messages: Annotated[list[AnyMessage], add_messages]
    """The conversation with the aggregated answer appended as an `AIMessage`."""
    answer: str
    proposals: Annotated[list[Proposal], operator.add]
    """Every proposer call of the run, failed ones included, in layer then sample order
    (with `keep="latest"`: the latest batch only)."""
    aggregations: Annotated[list[Aggregation], operator.add]
    """Every aggregator call (with `keep="latest"`: the latest window step only)."""
    agreement: NotRequired[Agreement | None]
    """Runs that drew two samples or more: how far they agree with the answer."""
    stopped: NotRequired[Literal["settled", "agreed", "samples"] | None]
    """Sliding-window and adaptive runs: "settled" when `patience` stopped a window early,
    "agreed" when adaptive sampling stopped drawing, "samples" when every sample was drawn."""
    saved: NotRequired[dict[str, int] | None]
    """Sliding-window and adaptive runs: the `proposals` and `aggregations` (calls) not made
    because the run stopped early."""
    abstained: NotRequired[str | None]
    """Why the run gave no answer (`low_agreement` with action "abstain"), or None."""
    escalated: NotRequired[dict[str, Any] | None]
    """`low_agreement` with action "escalate": the agreement that escalated and the escalation's
    own proposals and aggregations (its usage is in `usage`), or None."""
    usage: Annotated[UsageSummary, add_usage]
    warnings: Annotated[list[str], operator.add]


class MoAState(OutputState):
    """Full state of a run in progress."""

    plan: NotRequired[Plan]
    """The run's plan, fixed by `prepare`."""
    phase: NotRequired[Phase]
    """What the run does next; the routers read nothing else to decide."""
    layer: NotRequired[int]
    """The layer whose proposals are in flight, numbered from 1 as in the records."""
    batch: NotRequired[int]
    """Batches of the last layer drawn so far (one-shot aggregation: one batch of every sample)."""
    pending: NotRequired[Annotated[list[Proposal], operator.add]]
    """Results of the proposals in flight; moved to `references` by `collect`."""
    missing: NotRequired[list[int]]
    """Samples an n-choice request did not return (`sampling="n"`), drawn next one task each."""
    references: NotRequired[list[str]]
    """Texts of the successful proposals just collected, seen by the next layer or the aggregator."""
    reference_ids: NotRequired[list[int]]
    """Sample indices of `references`, in the same order."""
    synthesis: NotRequired[Synthesis | None]
    """The result of the latest aggregation step."""
    tally: NotRequired[Tally]
    """Counts of the last layer's proposals so far."""
    settle: NotRequired[Settle | None]
    """Whether the synthesis has settled (sliding-window mode)."""


def new_run() -> dict[str, Any]:
    """State updates that clear what a previous run on the same thread left behind."""
    return {
        **{key: Overwrite([]) for key in ("proposals", "aggregations", "warnings", "pending")},
        **dict.fromkeys(("missing", "references", "reference_ids"), []),
        **dict.fromkeys(("synthesis", "settle", "agreement", "abstained", "escalated"), None),
        "answer": "", "usage": Overwrite(empty_usage()), "tally": Tally(succeeded=0, failed=0, answers={}),
        "layer": 1, "batch": 0, "phase": "propose",
    }
