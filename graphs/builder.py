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

from langchain_core.messages import AIMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, Send

from selfmoa.graphs.plan import apply_context, make_plan
from selfmoa.graphs.schedule import window_schedule
from selfmoa.graphs.spec import MoASpec
from selfmoa.nodes import (
    CallPolicy,
    EnsembleContext,
    InputError,
    InputState,
    ModelTable,
    MoAState,
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
from selfmoa.nodes.calls import node, trim_references
from selfmoa.nodes.state import Plan, PlanGroup, Tally, new_run


def build_graph(spec: MoASpec) -> StateGraph:
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
    default_plan = make_plan(spec, models)  # validates the models now, at build time
    policy = CallPolicy(
        max_attempts=spec.max_attempts, retry_delay=spec.retry_delay, timeout=spec.timeout, limiter=spec.limiter
    )

    def prepare(state: MoAState, runtime: Runtime[EnsembleContext]) -> dict:
        if not state.get("messages"):
            raise InputError("input has no messages; invoke the graph with {'messages': [('user', 'your question')]}")
        context = runtime.context if runtime is not None else None
        plan = default_plan if context is None else make_plan(apply_context(spec, context), models)
        return {**new_run(), "plan": plan}

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
        if batch < len(batches):
            writer({"selfmoa": "window", "batch": batch, "succeeded": len(ok), "failed": len(pending) - len(ok)})
            update["batch"] = batch + 1
            if ok or batch + 1 < len(batches):
                return update
        return {**update, **_finish(state, plan, tally)}

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
    graph.add_node("prepare", node(prepare, name="prepare"))
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
        graph.add_node("aggregate", make_aggregate(models, policy))
        if spec.review:
            graph.add_node("review", review)
            graph.add_edge("review", "aggregate")
        after = "review" if spec.review else "aggregate"
        edge = node(route_collect, name="route_collect", trace=True)
        graph.add_conditional_edges("collect", edge, ["propose", after])
        graph.add_edge("aggregate", END)
    return graph


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


def _finish(state: MoAState, plan: Plan, tally: Tally) -> dict:
    synthesis = state.get("synthesis")
    if tally["succeeded"] < plan["min_proposals"] or synthesis is None:
        last = [p for p in state.get("proposals", []) if p["layer"] == len(plan["layers"])]
        raise _quorum_error(last, len(plan["layers"]), tally["succeeded"], tally["failed"], plan["min_proposals"])
    message = AIMessage(synthesis["text"], id=synthesis["id"], usage_metadata=synthesis["usage_metadata"])
    return {"answer": synthesis["text"], "messages": [message]}


def _quorum_error(proposals: list[Proposal], layer: int, ok: int, failed: int, needed: int) -> ProposalsFailedError:
    examples = [p for p in proposals if p["error"] is not None]
    shown = "; ".join(f"{p['model']}[{p['sample']}]: {p['error']}" for p in examples[:3])
    more = f"; and {failed - 3} more" if failed > 3 else ""
    return ProposalsFailedError(
        f"only {ok} of {ok + failed} proposals of layer {layer} succeeded, {needed} needed (min_proposals): "
        f"{shown}{more}; fix the model or endpoint, or lower min_proposals"
    )
