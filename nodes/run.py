"""The run's state machine: `prepare`, `collect`, `finish` and `route`, the steps between the model calls.

One run, whatever the method::

    prepare -> route -> propose (x k, Send) -> collect -> route -> ...
            ... -> aggregate (Send) -> finish -> END                         (one-shot)
            ... -> aggregate (Send) -> collect -> route -> ... -> finish -> END   (sliding window)

Each node that comes before the router sets the run's `phase`, and `route` reads nothing
else to decide what is sent next: "propose" (the next layer's or batch's proposers),
"aggregate" (an aggregation step; a sliding window draws its next batch meanwhile),
"review" or "finish". `prepare` fixes the run's plan. `collect` is the barrier after each
superstep: it takes in the proposals just made, applies the quorum and sets the phase.
`finish` writes the answer, in one place for every method. A one-shot aggregation is a
single window (every proposal, no reserved slots, one final step); a sliding window
(Self-MoA-Seq) sends each step together with the next batch of samples, so new samples
are drawn while the previous window is aggregated.

The graph's build-time pieces (its models, how a run's context becomes a plan) reach
these nodes as one `Setup`, bound with `functools.partial`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from langgraph.config import get_stream_writer
from langgraph.runtime import get_runtime
from langgraph.types import Overwrite, Send

from selfmoa.nodes.agreement import adaptive_batches, count_answers, lead
from selfmoa.nodes.answers import AnswerOf
from selfmoa.nodes.calls import trim_references
from selfmoa.nodes.schedule import window_schedule
from selfmoa.nodes.state import (
    AggregateTask,
    EnsembleContext,
    MoAState,
    Phase,
    Plan,
    Proposal,
    ProposeTask,
    Settle,
    Synthesis,
    Tally,
    new_run,
)
from selfmoa.runtime.errors import ProposalsFailedError, group_failures
from selfmoa.runtime.inputs import check_input
from selfmoa.runtime.models import ModelTable, context_tokens


@dataclass(frozen=True)
class Setup:
    """What a graph fixes when it is built, handed to its `prepare`, `collect` and `finish` nodes."""

    models: ModelTable
    plan_of: Callable[[EnsembleContext | None], Plan]
    """The plan of a run with a given context (None: the graph's own plan)."""
    max_input_chars: int | None
    answer_of: AnswerOf
    """What "the same answer" means for `patience`."""
    review: bool = False
    """Whether the one-shot aggregation waits for the `review` node."""


def prepare(state: MoAState, *, setup: Setup) -> dict:
    """Fix the run's plan, check the input against it, and clear what a previous run left."""
    return _checked(state, setup, _plan(state, setup))


async def aprepare(state: MoAState, *, setup: Setup) -> dict:
    """`prepare` for async runs: a first model resolution (starting a model) runs off the event loop."""
    plan = _plan(state, setup)
    for label in _labels(plan):
        await setup.models.aget(label, plan["max_tokens"])
    return _checked(state, setup, plan)


def _plan(state: MoAState, setup: Setup) -> Plan:
    check_input(state.get("messages"))  # nothing to answer: said before anything else
    # Read through the public accessor rather than an injected `runtime` argument, so
    # the node works whichever wrapper runs it (see `selfmoa.nodes.calls.node`).
    return setup.plan_of(get_runtime(EnsembleContext).context)


def _checked(state: MoAState, setup: Setup, plan: Plan) -> dict:
    # Before any call: a conversation over max_input_chars, or over a model's known
    # context (the embedded model's slot), is refused here rather than by k failed calls.
    contexts = [(label, context_tokens(setup.models.get(label, plan["max_tokens"]))) for label in _labels(plan)]
    check_input(state["messages"], max_chars=setup.max_input_chars, contexts=contexts)
    return {**new_run(), "plan": plan}


def _labels(plan: Plan) -> list[str]:
    """Every model of a plan that sees the conversation, once each (a vote calls no aggregator)."""
    proposers = [p["model"] for layer in plan["layers"] for p in layer["proposers"]]
    aggregator = [] if plan["aggregator"]["mode"] == "vote" else [plan["aggregator"]["model"]]
    return list(dict.fromkeys([*proposers, *aggregator]))


def collect(state: MoAState, *, setup: Setup) -> dict:
    """The barrier after each superstep: take in the proposals just made, then set the next phase."""
    plan, layer = state["plan"], state.get("layer", 1)
    pending = sorted(state.get("pending", []), key=lambda p: (p["sample"], p["model"]))
    if plan["sampling"] == "n":
        missing = _missing(plan, layer, state.get("batch", 0), pending)
        if missing:  # an n-request returned fewer choices: draw the rest, one task each
            return {"missing": missing, "phase": "propose"}
    ok = [p for p in pending if p["error"] is None]
    update = _take_in(state, pending, ok)
    if layer < len(plan["layers"]):
        return {**update, **_next_layer(plan, layer, pending, ok)}
    # The last layer's samples are counted as they come, whatever `proposals` keeps: the
    # quorum of a window, the adaptive rule and the run's agreement read this tally.
    before = state.get("tally") or Tally(succeeded=0, failed=0, answers={})
    update["tally"] = Tally(
        succeeded=before["succeeded"] + len(ok),
        failed=before["failed"] + len(pending) - len(ok),
        answers=count_answers(before["answers"], [p["text"] for p in ok], setup.answer_of),
    )
    if plan["aggregator"]["window"] is None:
        return {**update, **_next_batch(state, setup, update["tally"])}
    return {**update, **_next_window(state, setup, pending, ok)}


def _take_in(state: MoAState, pending: list[Proposal], ok: list[Proposal]) -> dict:
    """The proposals just made become the references; the records keep their order (and size)."""
    update: dict = {
        "pending": Overwrite([]),
        "references": [p["text"] for p in ok],
        "reference_ids": [p["sample"] for p in ok],
    }
    if state.get("missing"):  # the samples drawn late go back to their place in the records
        update["missing"] = []
        update["proposals"] = Overwrite(sorted(state["proposals"], key=lambda p: (p["layer"], p["sample"])))
    if state["plan"]["aggregator"]["keep"] == "latest":
        # The nodes append their records (so "updates" streams show each one as a list);
        # with keep="latest" only the latest batch and window step stay in the state.
        if pending:
            update["proposals"] = Overwrite(pending)
        if len(state.get("aggregations", [])) > 1:
            update["aggregations"] = Overwrite(state["aggregations"][-1:])
    return update


def _layer_done(plan: Plan, layer: int, records: list[Proposal], succeeded: int, failed: int) -> None:
    get_stream_writer()({"selfmoa": "layer", "layer": layer, "succeeded": succeeded, "failed": failed})
    if succeeded < plan["min_proposals"]:
        raise quorum_error(records, layer, succeeded, failed, plan["min_proposals"])


def _next_layer(plan: Plan, layer: int, pending: list[Proposal], ok: list[Proposal]) -> dict:
    _layer_done(plan, layer, pending, len(ok), len(pending) - len(ok))
    # The next layer's proposers all see these references; the aggregators trim their own.
    names = [f"layer {layer} sample {p['sample']}" for p in ok]
    references, warning = trim_references([p["text"] for p in ok], names, plan["max_reference_chars"])
    update = {"references": references, "layer": layer + 1, "phase": "propose"}
    return {**update, **({"warnings": [warning]} if warning else {})}


def _next_batch(state: MoAState, setup: Setup, tally: Tally) -> dict:
    """After a batch of the last layer (one-shot): draw the next one, or aggregate every sample drawn.

    Without adaptive sampling there is one batch. With it, drawing stops once the leading
    short answer is `margin` ahead of the second (`selfmoa.nodes.agreement`).
    """
    plan, layer, drawn = state["plan"], len(state["plan"]["layers"]), state.get("batch", 0) + 1
    batches, adaptive = plan_batches(plan), plan["adaptive"]
    if drawn < len(batches) and not (adaptive and lead(tally["answers"]) >= adaptive["margin"]):
        get_stream_writer()({"selfmoa": "batch", "drawn": tally["succeeded"] + tally["failed"], "answers": tally["answers"]})
        # The previous layer's answers stay the references of the next batch's proposers.
        return {"batch": drawn, "phase": "propose", "references": state.get("references", []) if layer > 1 else []}
    last = sorted((p for p in state["proposals"] if p["layer"] == layer), key=lambda p: p["sample"])
    _layer_done(plan, layer, last, tally["succeeded"], tally["failed"])
    ok = [p for p in last if p["error"] is None]
    return {"batch": len(batches), "references": [p["text"] for p in ok], "reference_ids": [p["sample"] for p in ok],
            "phase": "review" if setup.review else "aggregate"}


def _next_window(state: MoAState, setup: Setup, pending: list[Proposal], ok: list[Proposal]) -> dict:
    """After a sliding-window superstep: an aggregation step with the next batch, or the end."""
    batch, batches = state.get("batch", 0), plan_batches(state["plan"])
    settle = _settle(state.get("settle"), state.get("synthesis"), setup.answer_of)
    if batch < len(batches) and not is_settled(state["plan"], settle):
        get_stream_writer()({"selfmoa": "window", "batch": batch, "succeeded": len(ok), "failed": len(pending) - len(ok)})
        # The last batch failed whole: nothing is left to aggregate, and every sample was drawn.
        if ok or batch + 1 < len(batches):
            return {"settle": settle, "batch": batch + 1, "phase": "aggregate"}
    return {"settle": settle, "phase": "finish"}


def is_settled(plan: Plan, settle: Settle) -> bool:
    """Whether the answer held `patience` window steps in a row."""
    patience = plan["aggregator"]["patience"]
    return patience is not None and settle["streak"] >= patience


def route(state: MoAState) -> list[Send] | str:
    """What runs next, as the run's `phase` says: proposals, an aggregation step, `review` or `finish`."""
    phase: Phase = state["phase"]
    if phase in ("review", "finish"):
        return phase
    plan, layer, batch = state["plan"], state.get("layer", 1), state.get("batch", 0)
    if state.get("missing"):
        return [send for i in state["missing"] for send in _proposals(state, plan, layer, range(i, i + 1))]
    batches = _layer_batches(plan, layer)
    if phase == "propose":
        return _proposals(state, plan, layer, batches[batch])
    sends = [_aggregate(state, plan, batch, len(batches))] if state.get("references") else []
    if batch < len(batches):
        sends += _proposals(state, plan, layer, batches[batch])
    return sends


def _aggregate(state: MoAState, plan: Plan, batch: int, batches: int) -> Send:
    """The aggregation step over the batch just collected; a window step carries the synthesis too."""
    aggregator, synthesis = plan["aggregator"], state.get("synthesis")
    windowed = aggregator["window"] is not None
    copies = [synthesis["text"]] * aggregator["reserved"] if windowed and synthesis is not None else []
    task = AggregateTask(
        kind="window" if windowed else "aggregate",
        **{key: aggregator[key] for key in ("model", "mode", "temperature", "order")},  # type: ignore[typeddict-item]
        **{key: plan[key] for key in ("seed", "prompt", "max_reference_chars", "max_tokens")},  # type: ignore[typeddict-item]
        step=batch - 1 if windowed else 0,
        sample_ids=state["reference_ids"],
        reserved=len(copies),
        responses=copies + state["references"],
        carried=synthesis.get("chosen") if copies and synthesis is not None else None,
        messages=state["messages"],
        final=not windowed or batch == batches,
    )
    return Send("aggregate", task)


def _missing(plan: Plan, layer: int, batch: int, pending: list[Proposal]) -> list[int]:
    """Samples of the batch in flight that no proposal answers yet."""
    batches = _layer_batches(plan, layer)
    got = {p["sample"] for p in pending}
    return [i for i in batches[batch] if i not in got] if batch < len(batches) else []


def _layer_batches(plan: Plan, layer: int) -> list[range]:
    """Sample indices of a layer, per batch: the last layer's may slide through a window."""
    return plan_batches(plan) if layer == len(plan["layers"]) else [range(_size(plan["layers"][layer - 1]))]


def plan_batches(plan: Plan) -> list[range]:
    """Sample indices of the last layer, per batch: one batch unless a window slides or sampling adapts."""
    size, aggregator = _size(plan["layers"][-1]), plan["aggregator"]
    if plan["adaptive"]:
        return adaptive_batches(size, plan["adaptive"]["batch"])
    if aggregator["window"] is None:
        return [range(size)]
    return window_schedule(size, aggregator["window"], aggregator["reserved"])


def _size(layer: dict) -> int:
    return sum(p["samples"] for p in layer["proposers"])


def _proposals(state: MoAState, plan: Plan, layer: int, indices: range) -> list[Send]:
    references = state.get("references", []) if layer > 1 else []
    prompt, messages, max_tokens = plan["prompt"] if references else "", state["messages"], plan["max_tokens"]
    return [Send("propose", ProposeTask(layer=layer, sample=first, model=model, temperature=temperature, seed=seed,
                                        max_tokens=max_tokens, n=n, messages=messages, references=references,
                                        prompt=prompt))
            for first, n, model, temperature, seed in _requests(plan, layer, indices)]


def _requests(plan: Plan, layer: int, indices: range) -> list[tuple[int, int, str, float | None, int | None]]:
    """(first sample, choices, model, temperature, seed) per request: one per sample, or one per
    proposer entry's run of samples (`sampling="n"`).

    Proposer i of a run (counted over every layer) gets the seed `plan["seed"] + i`; with
    adaptive sampling's greedy anchor, sample 0 of the last layer gets temperature 0.
    `indices` is a contiguous range, so walking the entries once finds every request.
    """
    in_one, base = plan["sampling"] == "n", plan["seed"]
    offset = sum(_size(earlier) for earlier in plan["layers"][: layer - 1])
    anchored = layer == len(plan["layers"]) and bool(plan["adaptive"] and plan["adaptive"]["anchor"])
    requests: list[tuple[int, int, str, float | None, int | None]] = []
    start = 0
    for proposer in plan["layers"][layer - 1]["proposers"]:
        stop = start + proposer["samples"]
        lo, hi = max(start, indices.start), min(stop, indices.stop)
        runs = [(lo, hi - lo)] if in_one else [(i, 1) for i in range(lo, hi)]
        temperature = plan["temperature"] if proposer["temperature"] is None else proposer["temperature"]
        requests += [(i, n, proposer["model"], 0.0 if anchored and i == 0 and n == 1 else temperature,
                      None if base is None else base + offset + i) for i, n in runs if n > 0]
        start = stop
    return requests


def _settle(before: Settle | None, synthesis: Synthesis | None, answer_of: AnswerOf) -> Settle:
    """How many window steps in a row have kept the synthesis's answer, after the latest step.

    Example:
        >>> from selfmoa.nodes.answers import number
        >>> s = _settle(None, {"text": "It is 4", "id": None, "usage_metadata": None, "step": 0}, number)
        >>> s = _settle(s, {"text": "So, 4.", "id": None, "usage_metadata": None, "step": 1}, number)
        >>> s["streak"], _settle(s, {"text": "It's 5", "id": None, "usage_metadata": None, "step": 2}, number)["streak"]
        (1, 0)
    """
    before = before or Settle(step=-1, answer=None, streak=0)
    if synthesis is None or synthesis.get("step", before["step"]) == before["step"]:
        return before  # no new window step in this superstep
    answer = answer_of(synthesis["text"])
    same = before["step"] >= 0 and answer is not None and answer == before["answer"]
    return Settle(step=synthesis["step"], answer=answer, streak=before["streak"] + 1 if same else 0)


def quorum_error(proposals: list[Proposal], layer: int, ok: int, failed: int, needed: int) -> ProposalsFailedError:
    """The one-line error of a layer whose successful proposals fell short of `min_proposals`."""
    return ProposalsFailedError(
        f"only {ok} of {ok + failed} proposals of layer {layer} succeeded, {needed} needed (min_proposals): "
        f"{group_failures(proposals, ok + failed, failed)}; fix the model or endpoint, or lower min_proposals"
    )
