"""The run's state machine: `prepare`, `collect` and `route`, the steps between the model calls.

One run, whatever the method::

    prepare -> route -> propose (x k, Send) -> collect -> route -> ...
            ... -> aggregate (Send) -> END                   (one-shot)
            ... -> aggregate (Send) -> collect -> route -> ... -> END   (sliding window)

`prepare` fixes the run's plan. `collect` is the barrier after each superstep: it moves
the proposals just made into `references` and applies the quorum; in a sliding window it
also decides, after each step, whether another follows, and finishes the run with the
last synthesis. `route` sends what comes next: the next layer's proposers; or, after the
last layer, an aggregation step. A one-shot aggregation is a single window (every
proposal, no reserved slots, one final step) whose result is the answer; a sliding window
(Self-MoA-Seq) sends each step together with the next batch of samples, so new samples
are drawn while the previous window is aggregated.

The graph's build-time pieces (its models, how a run's context becomes a plan) reach
these nodes as one `Setup`, bound with `functools.partial`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from langchain_core.messages import AIMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END
from langgraph.runtime import get_runtime
from langgraph.types import Overwrite, Send

from selfmoa.nodes.answers import AnswerOf
from selfmoa.nodes.calls import trim_references
from selfmoa.nodes.schedule import window_schedule
from selfmoa.nodes.state import (
    AggregateTask,
    EnsembleContext,
    MoAState,
    Plan,
    PlanProposer,
    Proposal,
    ProposeTask,
    Settle,
    Synthesis,
    Tally,
    new_run,
)
from selfmoa.runtime.errors import ProposalsFailedError
from selfmoa.runtime.inputs import check_input
from selfmoa.runtime.models import ModelTable, context_tokens


@dataclass(frozen=True)
class Setup:
    """What a graph fixes when it is built, handed to its `prepare` and `collect` nodes."""

    models: ModelTable
    plan_of: Callable[[EnsembleContext | None], Plan]
    """The plan of a run with a given context (None: the graph's own plan)."""
    max_input_chars: int | None
    answer_of: AnswerOf
    """What "the same answer" means for `patience`."""


def prepare(state: MoAState, *, setup: Setup) -> dict:
    """Fix the run's plan, check the input against it, and clear what a previous run left."""
    return _checked(state, setup, _plan(state, setup))


async def aprepare(state: MoAState, *, setup: Setup) -> dict:
    """`prepare` for async runs: a first model resolution (starting a model) runs off the event loop."""
    plan = _plan(state, setup)
    for label in _labels(plan):
        await setup.models.aget(label)
    return _checked(state, setup, plan)


def _plan(state: MoAState, setup: Setup) -> Plan:
    check_input(state.get("messages"))  # nothing to answer: said before anything else
    # Read through the public accessor rather than an injected `runtime` argument, so
    # the node works whichever wrapper runs it (see `selfmoa.nodes.calls.node`).
    return setup.plan_of(get_runtime(EnsembleContext).context)


def _checked(state: MoAState, setup: Setup, plan: Plan) -> dict:
    # Before any call: a conversation over max_input_chars, or over a model's known
    # context (the embedded model's slot), is refused here rather than by k failed calls.
    contexts = [(label, context_tokens(setup.models.get(label))) for label in _labels(plan)]
    check_input(state["messages"], max_chars=setup.max_input_chars, contexts=contexts)
    return {**new_run(), "plan": plan}


def _labels(plan: Plan) -> list[str]:
    """Every model of a plan that sees the conversation, once each (a vote calls no aggregator)."""
    proposers = [p["model"] for layer in plan["layers"] for p in layer]
    aggregator = [] if plan["aggregator"]["mode"] == "vote" else [plan["aggregator"]["model"]]
    return list(dict.fromkeys([*proposers, *aggregator]))


def collect(state: MoAState, *, setup: Setup) -> dict:
    """The barrier after each superstep: take in the proposals just made, go on or finish."""
    plan, layer = state["plan"], state.get("layer", 1)
    pending = sorted(state.get("pending", []), key=lambda p: (p["sample"], p["model"]))
    if plan["sampling"] == "n":
        missing = _missing(plan, layer, state.get("batch", 0), pending)
        if missing:  # an n-request returned fewer choices: `route` draws the rest, one task each
            return {"missing": missing}
    ok = [p for p in pending if p["error"] is None]
    update: dict = {
        "pending": Overwrite([]),
        "references": [p["text"] for p in ok],
        "reference_ids": [p["sample"] for p in ok],
    }
    if state.get("missing"):  # the samples drawn late go back to their place in the records
        update["missing"] = []
        update["proposals"] = Overwrite(sorted(state["proposals"], key=lambda p: (p["layer"], p["sample"])))
    if plan["aggregator"]["keep"] == "latest":
        # The nodes append their records (so "updates" streams show each one as a list);
        # with keep="latest" only the latest batch and window step stay in the state.
        if pending:
            update["proposals"] = Overwrite(pending)
        if len(state.get("aggregations", [])) > 1:
            update["aggregations"] = Overwrite(state["aggregations"][-1:])
    if layer < len(plan["layers"]):
        return {**update, **_next_layer(plan, layer, pending, ok)}
    if plan["aggregator"]["window"] is None:
        # The proposals are in and the quorum holds: the one aggregation step writes the answer.
        _layer_done(plan, layer, pending, ok)
        return {**update, "batch": 1}
    # A window's quorum counts every batch, whatever `proposals` keeps: a running tally.
    before = state.get("tally") or Tally(succeeded=0, failed=0)
    update["tally"] = Tally(succeeded=before["succeeded"] + len(ok), failed=before["failed"] + len(pending) - len(ok))
    return {**update, **_window_done(state, setup, pending, ok, update["tally"])}


def _layer_done(plan: Plan, layer: int, pending: list[Proposal], ok: list[Proposal]) -> None:
    get_stream_writer()(
        {"selfmoa": "layer", "layer": layer, "succeeded": len(ok), "failed": len(pending) - len(ok)}
    )
    if len(ok) < plan["min_proposals"]:
        raise _quorum_error(pending, layer, len(ok), len(pending) - len(ok), plan["min_proposals"])


def _next_layer(plan: Plan, layer: int, pending: list[Proposal], ok: list[Proposal]) -> dict:
    _layer_done(plan, layer, pending, ok)
    # The next layer's proposers all see these references; the aggregators trim their own.
    names = [f"layer {layer} sample {p['sample']}" for p in ok]
    references, warning = trim_references([p["text"] for p in ok], names, plan["max_reference_chars"])
    return {"references": references, "layer": layer + 1, **({"warnings": [warning]} if warning else {})}


def _window_done(state: MoAState, setup: Setup, pending: list[Proposal], ok: list[Proposal], tally: Tally) -> dict:
    """After a sliding-window superstep: draw the next batch, or stop (every sample in, or settled)."""
    plan, batch = state["plan"], state.get("batch", 0)
    batches = _batches(plan)
    settle = _settle(state.get("settle"), state.get("synthesis"), setup.answer_of)
    update: dict = {"settle": settle}
    writer = get_stream_writer()
    patience = plan["aggregator"]["patience"]
    # Settled: the answer held `patience` steps in a row with samples still to come.
    settled = batch < len(batches) and patience is not None and settle["streak"] >= patience
    if batch < len(batches) and not settled:
        writer({"selfmoa": "window", "batch": batch, "succeeded": len(ok), "failed": len(pending) - len(ok)})
        update["batch"] = batch + 1
        if ok or batch + 1 < len(batches):
            return update
        # The last batch failed whole: nothing is left to aggregate, and every sample was drawn.
    stop = _stop(batches, batch if settled else len(batches))
    answer = _finish(state, tally)  # a failed quorum raises before any "stopped" event
    if settled:
        writer({"selfmoa": "stopped", **stop, "steps": settle["step"] + 1, "streak": settle["streak"]})
    return {**update, **stop, **answer}


def route(state: MoAState, *, review: bool = False) -> list[Send] | str:
    """What runs next: proposals, an aggregation step (with the next batch), `review`, or the end.

    Args:
        state: The run's state after `prepare`, `collect` or `review`.
        review: Whether the one-shot aggregation waits for the `review` node first.
    """
    if state.get("answer"):
        return END
    plan, layer, batch = state["plan"], state.get("layer", 1), state.get("batch", 0)
    if state.get("missing"):
        return [send for i in state["missing"] for send in _proposals(state, plan, layer, range(i, i + 1))]
    batches = _layer_batches(plan, layer)
    if batch == 0:
        return _proposals(state, plan, layer, batches[0])
    if review:
        return "review"
    sends = [_aggregate(state, plan, batch, len(batches))] if state.get("references") else []
    if batch < len(batches):
        sends += _proposals(state, plan, layer, batches[batch])
    return sends


def route_via_review(state: MoAState) -> list[Send] | str:
    """`route` for graphs whose one-shot aggregation waits for the `review` node."""
    return route(state, review=True)


def _aggregate(state: MoAState, plan: Plan, batch: int, batches: int) -> Send:
    """The aggregation step over the batch just collected; a window step carries the synthesis too."""
    aggregator, synthesis = plan["aggregator"], state.get("synthesis")
    windowed = aggregator["window"] is not None
    copies = [synthesis["text"]] * aggregator["reserved"] if windowed and synthesis is not None else []
    task = AggregateTask(
        kind="window" if windowed else "aggregate",
        model=aggregator["model"],
        mode=aggregator["mode"],
        temperature=aggregator["temperature"],
        seed=plan["seed"],
        prompt=plan["prompt"],
        max_reference_chars=plan["max_reference_chars"],
        step=batch - 1,
        samples=state["reference_ids"],
        reserved=len(copies),
        responses=copies + state["references"],
        carried=synthesis.get("chosen") if copies and synthesis is not None else None,
        messages=state["messages"],
        final=batch == batches,
    )
    return Send("aggregate", task)


def _missing(plan: Plan, layer: int, batch: int, pending: list[Proposal]) -> list[int]:
    """Samples of the batch in flight that no proposal answers yet."""
    batches = _layer_batches(plan, layer)
    got = {p["sample"] for p in pending}
    return [i for i in batches[batch] if i not in got] if batch < len(batches) else []


def _layer_batches(plan: Plan, layer: int) -> list[range]:
    """Sample indices of a layer, per batch: the last layer's may slide through a window."""
    return _batches(plan) if layer == len(plan["layers"]) else [range(_size(plan["layers"][layer - 1]))]


def _batches(plan: Plan) -> list[range]:
    """Sample indices of the last layer, per batch: one batch unless a window slides."""
    size, aggregator = _size(plan["layers"][-1]), plan["aggregator"]
    if aggregator["window"] is None:
        return [range(size)]
    return window_schedule(size, aggregator["window"], aggregator["reserved"])


def _size(proposers: list[PlanProposer]) -> int:
    return sum(p["samples"] for p in proposers)


def _proposals(state: MoAState, plan: Plan, layer: int, indices: range) -> list[Send]:
    references = state.get("references", []) if layer > 1 else []
    sends = []
    for first, n, proposer, offset in _requests(plan["layers"][layer - 1], indices, plan["sampling"] == "n"):
        task = ProposeTask(
            layer=layer,
            sample=first,
            model=proposer["model"],
            temperature=proposer["temperature"],
            seed=None if proposer["seed"] is None else proposer["seed"] + offset,
            n=n,
            messages=state["messages"],
            references=references,
            prompt=plan["prompt"] if references else "",
        )
        sends.append(Send("propose", task))
    return sends


def _requests(
    proposers: list[PlanProposer], indices: range, in_one: bool
) -> list[tuple[int, int, PlanProposer, int]]:
    """(first sample, choices, its proposer entry, its index within the entry) per request:
    one per sample, or one per entry's run of samples (`sampling="n"`).

    `indices` is a contiguous range, so walking the entries once finds every request.
    """
    requests: list[tuple[int, int, PlanProposer, int]] = []
    start = 0
    for proposer in proposers:
        stop = start + proposer["samples"]
        lo, hi = max(start, indices.start), min(stop, indices.stop)
        if lo < hi:
            if in_one:
                requests.append((lo, hi - lo, proposer, lo - start))
            else:
                requests += [(i, 1, proposer, i - start) for i in range(lo, hi)]
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


def _stop(batches: list[range], batch: int) -> dict:
    """Why a sliding-window run ends here, and the calls it did not make.

    The batch in flight (`batches[batch]`) was drawn but is not aggregated when the run
    stops early; every later batch, and each window step it would have needed, is saved.
    """
    early = batch < len(batches)
    drawn = sum(len(b) for b in batches[: batch + 1])
    saved = {"proposals": sum(len(b) for b in batches) - drawn, "aggregations": len(batches) - batch}
    return {"stopped": "settled" if early else "samples", "saved": saved if early else dict.fromkeys(saved, 0)}


def _finish(state: MoAState, tally: Tally) -> dict:
    """The answer: the last synthesis, as the conversation's next message, once the quorum holds."""
    plan, synthesis = state["plan"], state.get("synthesis")
    if tally["succeeded"] < plan["min_proposals"] or synthesis is None:
        last = [p for p in state.get("proposals", []) if p["layer"] == len(plan["layers"])]
        raise _quorum_error(last, len(plan["layers"]), tally["succeeded"], tally["failed"], plan["min_proposals"])
    return answer_of_run(synthesis)


def answer_of_run(synthesis: Synthesis) -> dict:
    """The run's answer from its last synthesis: `answer`, and the conversation's next message.

    The message keeps the id of the call that streamed it, so `stream_mode="messages"`
    does not show the answer twice.
    """
    message = AIMessage(
        synthesis["text"],
        id=synthesis["id"],
        usage_metadata=synthesis["usage_metadata"],  # type: ignore[arg-type]
        response_metadata=synthesis.get("response_metadata", {}),
    )
    return {"answer": synthesis["text"], "messages": [message]}


def _quorum_error(proposals: list[Proposal], layer: int, ok: int, failed: int, needed: int) -> ProposalsFailedError:
    return ProposalsFailedError(
        f"only {ok} of {ok + failed} proposals of layer {layer} succeeded, {needed} needed (min_proposals): "
        f"{group_failures(proposals, ok + failed, failed)}; fix the model or endpoint, or lower min_proposals"
    )


def group_failures(proposals: list[Proposal], total: int, failed: int | None = None) -> str:
    """The failed proposals' errors, each distinct error once: with its count when shared.

    `failed` counts failures no longer in `proposals` too (a window run keeping the latest
    batch only); those show as "and N more".

    Example:
        >>> p = lambda s, e: {"model": "openai:m", "sample": s, "error": e}
        >>> group_failures([p(0, "ConnectionError"), p(1, "ConnectionError"), p(2, "Timeout")], 4)
        '2 of 4 proposals failed: ConnectionError (openai:m[0-1]); openai:m[2]: Timeout'
    """
    groups: dict[str, dict[str, list[int]]] = {}
    for p in proposals:
        if p["error"] is not None:
            groups.setdefault(p["error"], {}).setdefault(p["model"], []).append(p["sample"])
    parts, shown = [], 0
    for error, by_model in list(groups.items())[:3]:
        count = sum(len(samples) for samples in by_model.values())
        where = ", ".join(f"{model}[{_ranges(samples)}]" for model, samples in by_model.items())
        parts.append(f"{count} of {total} proposals failed: {error} ({where})" if count > 1 else f"{where}: {error}")
        shown += count
    failed = sum(len(s) for m in groups.values() for s in m.values()) if failed is None else failed
    if failed > shown:
        parts.append(f"and {failed - shown} more")
    return "; ".join(parts) or f"0 of {total} proposals returned"


def _ranges(samples: list[int]) -> str:
    # 0,1,2,5 -> "0-2,5": six failures of one endpoint read as one short label.
    out: list[str] = []
    ordered = sorted(samples)
    start = prev = ordered[0]
    for s in [*ordered[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if s is not None:
            start = prev = s
    return ",".join(out)
