"""One builder for every method: it turns a `MoASpec` into a LangGraph `StateGraph`.

Shape of every graph::

    START -> prepare -> propose (x k, Send) -> collect -> ... -> aggregate -> END

`prepare` fixes the run's plan (the spec, with any overrides from the run's context).
`collect` is the barrier after each batch of parallel proposals. After an intermediate
layer it sends the next layer's proposers; after the last layer it goes to `aggregate`
(one-shot), or, in sliding-window mode, it sends one `aggregate_window` task *and* the
next batch of proposals together, so new samples are generated while the previous window
is being aggregated (Self-MoA-Seq, pipelined).
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import get_runtime
from langgraph.types import Overwrite, Send

from selfmoa.graphs.plan import apply_context, make_plan
from selfmoa.graphs.schedule import window_schedule
from selfmoa.graphs.spec import MoASpec
from selfmoa.nodes import (
    CallPolicy,
    EnsembleContext,
    InputState,
    MoAState,
    ModelTable,
    OutputState,
    Proposal,
    ProposalsFailedError,
    ProposeTask,
    WindowTask,
    make_aggregate,
    make_aggregate_window,
    make_propose,
    review,
)
from selfmoa.nodes.answers import AnswerOf, answer_extractor
from selfmoa.nodes.calls import node, trim_references
from selfmoa.nodes.inputs import check_input
from selfmoa.nodes.models import context_tokens
from selfmoa.nodes.state import Plan, PlanGroup, Settle, Synthesis, Tally, new_run


def build_graph(spec: MoASpec) -> StateGraph[Any, Any, Any, Any]:
    """Build the uncompiled graph of an ensemble spec.

    Args:
        spec: A validated spec (see `selfmoa.graphs.spec.parse_spec`).

    Returns:
        A `StateGraph` with input `InputState`, output `OutputState` and context
        `EnsembleContext`; compile it with any checkpointer.

    Example:
        >>> from selfmoa.testing import FakeChatModel
        >>> spec = MoASpec(layers=[[{"model": FakeChatModel(), "samples": 3}]])
        >>> build_graph(spec).compile().invoke({"messages": "Hi"})["answer"] != ""
        True
    """
    models = ModelTable()
    settled_answer = answer_extractor(spec.aggregator.answer_of)  # what "the same answer" means for patience
    default_plan = make_plan(spec, models)  # validates the models now, at build time
    policy = CallPolicy(
        max_attempts=spec.max_attempts, retry_delay=spec.retry_delay, timeout=spec.timeout, limiter=spec.limiter
    )

    def plan_of(state: MoAState) -> Plan:
        check_input(state.get("messages"))  # nothing to answer: said before anything else
        # Read through the public accessor rather than an injected `runtime` argument, so
        # the node works whichever wrapper runs it (see `selfmoa.nodes.calls.node`).
        context = get_runtime(EnsembleContext).context
        return default_plan if context is None else make_plan(apply_context(spec, context), models)

    def checked(state: MoAState, plan: Plan) -> dict:
        # Before any call: a conversation over max_input_chars, or over a model's known
        # context (the embedded model's slot), is refused here rather than by k failed calls.
        contexts = [(label, context_tokens(models.get(label))) for label in _labels(plan)]
        check_input(state["messages"], max_chars=spec.max_input_chars, contexts=contexts)
        return {**new_run(), "plan": plan}

    def prepare(state: MoAState) -> dict:
        return checked(state, plan_of(state))

    async def aprepare(state: MoAState) -> dict:
        plan = plan_of(state)
        for label in _labels(plan):
            await models.aget(label)  # a first resolution (starting a model) runs off the event loop
        return checked(state, plan)

    def route_start(state: MoAState) -> list[Send]:
        return _first_batch(state, state["plan"], 0)

    def collect(state: MoAState) -> dict:
        plan = state["plan"]
        last = len(plan["layers"]) - 1
        layer = state.get("layer", 0)
        pending = sorted(state.get("pending", []), key=lambda p: (p["sample"], p["model"]))
        ok = [p for p in pending if p["error"] is None]
        update: dict = {
            "pending": Overwrite([]),
            "references": [p["text"] for p in ok],
            "reference_ids": [p["sample"] for p in ok],
        }
        if not plan.get("keep_all", True):
            # The nodes append their records (so "updates" streams show each one as a list);
            # with keep="latest" only the latest batch and window step stay in the state.
            if pending:
                update["proposals"] = Overwrite(pending)
            if len(state.get("aggregations", [])) > 1:
                update["aggregations"] = Overwrite(state["aggregations"][-1:])
        writer = get_stream_writer()
        if not plan["windowed"] or layer < last:
            writer({"selfmoa": "layer", "layer": layer + 1, "succeeded": len(ok), "failed": len(pending) - len(ok)})
            if len(ok) < plan["min_proposals"]:
                raise _quorum_error(pending, layer + 1, len(ok), len(pending) - len(ok), plan["min_proposals"])
            if layer < last:  # the next layer's proposers all see these; the aggregators trim their own
                names = [f"layer {layer + 1} sample {p['sample']}" for p in ok]
                update["references"], warning = trim_references(
                    update["references"], names, plan.get("max_reference_chars")
                )
                if warning:
                    update["warnings"] = [warning]
            return {**update, "layer": layer + 1}
        before = state.get("tally") or Tally(succeeded=0, failed=0)
        tally = Tally(succeeded=before["succeeded"] + len(ok), failed=before["failed"] + len(pending) - len(ok))
        update["tally"] = tally
        batches = _batches(plan)
        batch = state.get("batch", 0)
        settle = _settle(state.get("settle"), state.get("synthesis"), settled_answer)
        update["settle"] = settle
        if batch < len(batches) and settle["streak"] < (plan.get("patience") or len(batches) + 1):
            writer({"selfmoa": "window", "batch": batch, "succeeded": len(ok), "failed": len(pending) - len(ok)})
            update["batch"] = batch + 1
            if ok or batch + 1 < len(batches):
                return update
        stop = _stop(plan, batches, batch)
        if stop.get("stopped") == "settled":
            writer({"selfmoa": "stopped", **stop, "steps": settle["step"] + 1, "streak": settle["streak"]})
        return {**update, **stop, **_finish(state, plan, tally)}

    def route_collect(state: MoAState) -> list[Send] | str:
        if state.get("answer"):
            return END
        plan = state["plan"]
        last = len(plan["layers"]) - 1
        layer = state["layer"]
        if not plan["windowed"]:
            if layer <= last:
                return _first_batch(state, plan, layer)
            return "review" if spec.review else "aggregate"
        batch = state.get("batch", 0)
        if layer < last or batch == 0:
            return _first_batch(state, plan, layer)
        batches = _batches(plan)
        sends = []
        if state.get("references"):
            synthesis = state.get("synthesis")
            carried = [synthesis["text"]] * plan["reserved"] if synthesis is not None else []
            task = WindowTask(
                model=plan["aggregator"],
                mode=plan.get("mode", "synthesize"),  # type: ignore[typeddict-item]
                carried=synthesis.get("chosen") if synthesis is not None else None,
                temperature=plan["aggregator_temperature"],
                seed=plan["seed"],
                prompt=plan["prompt"],
                step=batch - 1,
                samples=state["reference_ids"],
                reserved=len(carried),
                responses=carried + state["references"],
                messages=state["messages"],
                final=batch == len(batches),
                max_reference_chars=plan.get("max_reference_chars"),
            )
            sends.append(Send("aggregate_window", task))
        if batch < len(batches):
            sends += _proposals(state, plan, last, batches[batch])
        return sends

    graph = StateGraph(MoAState, context_schema=EnsembleContext, input_schema=InputState, output_schema=OutputState)
    graph.add_node("prepare", node(prepare, aprepare, name="prepare"))
    graph.add_node("propose", make_propose(models, policy))
    graph.add_node("collect", node(collect, name="collect"))
    graph.add_edge(START, "prepare")
    graph.add_conditional_edges("prepare", node(route_start, name="route_start", trace=True), ["propose"])
    graph.add_edge("propose", "collect")
    if default_plan["windowed"]:
        graph.add_node("aggregate_window", make_aggregate_window(models, policy))
        graph.add_edge("aggregate_window", "collect")
        graph.add_conditional_edges(
            "collect", node(route_collect, name="route_collect", trace=True), ["propose", "aggregate_window", END]
        )
    else:
        graph.add_node("aggregate", make_aggregate(models, policy, answer_extractor(spec.aggregator.answer_of)))
        if spec.review:
            graph.add_node("review", review)
            graph.add_edge("review", "aggregate")
        after = "review" if spec.review else "aggregate"
        edge = node(route_collect, name="route_collect", trace=True)
        graph.add_conditional_edges("collect", edge, ["propose", after])
        graph.add_edge("aggregate", END)
    return graph


def _labels(plan: Plan) -> list[str]:
    """Every model of a plan that sees the conversation, once each."""
    return list(dict.fromkeys([g["model"] for layer in plan["layers"] for g in layer] + [plan["aggregator"]]))


def _batches(plan: Plan) -> list[range]:
    """Sample indices of the last layer, per batch (one batch unless windowed)."""
    size = _size(plan["layers"][-1])
    return window_schedule(size, plan["window"], plan["reserved"]) if plan["windowed"] else [range(size)]


def _size(groups: list[PlanGroup]) -> int:
    return sum(g["samples"] for g in groups)


def _first_batch(state: MoAState, plan: Plan, layer: int) -> list[Send]:
    last = len(plan["layers"]) - 1
    indices = _batches(plan)[0] if layer == last else range(_size(plan["layers"][layer]))
    return _proposals(state, plan, layer, indices)


def _proposals(state: MoAState, plan: Plan, layer: int, indices: range) -> list[Send]:
    references = state.get("references", []) if layer > 0 else []
    sends = []
    for first, n, group, offset in _requests(plan["layers"][layer], indices, plan["batched"]):
        task = ProposeTask(
            layer=layer + 1,
            sample=first,
            model=group["model"],
            temperature=group["temperature"],
            seed=None if group["seed"] is None else group["seed"] + offset,
            n=n,
            messages=state["messages"],
            references=references,
            prompt=plan["prompt"] if references else "",
        )
        sends.append(Send("propose", task))
    return sends


def _requests(groups: list[PlanGroup], indices: range, batched: bool) -> list[tuple[int, int, PlanGroup, int]]:
    """(first sample, choices, its group, its index within the group) per request: one per
    sample, or one per group's run of samples.

    `indices` is a contiguous range, so walking the groups once finds every request.
    """
    requests: list[tuple[int, int, PlanGroup, int]] = []
    start = 0
    for group in groups:
        stop = start + group["samples"]
        lo, hi = max(start, indices.start), min(stop, indices.stop)
        if lo < hi:
            if batched:
                requests.append((lo, hi - lo, group, lo - start))
            else:
                requests += [(i, 1, group, i - start) for i in range(lo, hi)]
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


def _stop(plan: Plan, batches: list[range], batch: int) -> dict:
    """Why a sliding-window run ends here, and the calls it did not make.

    The batch in flight (`batches[batch]`) was drawn but is not aggregated when the run
    stops early; every later batch, and each window step it would have needed, is saved.
    """
    if not plan["windowed"]:
        return {}
    early = batch < len(batches)
    drawn = sum(len(b) for b in batches[: batch + 1])
    saved = {"proposals": sum(len(b) for b in batches) - drawn, "aggregations": len(batches) - batch} if early else {
        "proposals": 0, "aggregations": 0}
    return {"stopped": "settled" if early else "samples", "saved": saved}


def _finish(state: MoAState, plan: Plan, tally: Tally) -> dict:
    synthesis = state.get("synthesis")
    if tally["succeeded"] < plan["min_proposals"] or synthesis is None:
        last = [p for p in state.get("proposals", []) if p["layer"] == len(plan["layers"])]
        raise _quorum_error(last, len(plan["layers"]), tally["succeeded"], tally["failed"], plan["min_proposals"])
    message = AIMessage(synthesis["text"], id=synthesis["id"], usage_metadata=synthesis["usage_metadata"])
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
