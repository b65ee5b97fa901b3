"""One builder for every method: it turns a `MoASpec` into a LangGraph `StateGraph`.

Shape of every graph::

    START -> prepare -> propose (x k, Send) -> collect -> ... -> aggregate -> END

`collect` is the barrier after each batch of parallel proposals. After an intermediate
layer it sends the next layer's proposers; after the last layer it goes to `aggregate`
(one-shot), or, in sliding-window mode, it sends one `aggregate_window` task *and* the
next batch of proposals together, so new samples are generated while the previous window
is being aggregated (Self-MoA-Seq, pipelined).
"""

from __future__ import annotations

from dataclasses import dataclass

from langchain_core.messages import AIMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.types import Overwrite, Send

from selfmoa.graphs.schedule import window_schedule
from selfmoa.graphs.spec import MoASpec
from selfmoa.nodes import (
    CallPolicy,
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
)
from selfmoa.nodes.state import new_run


@dataclass(frozen=True)
class _Slot:
    model: str
    temperature: float | None
    seed: int | None
    group: int
    """Index of the proposer entry this sample comes from (samples of one entry may share a request)."""


def build_graph(spec: MoASpec) -> StateGraph:
    """Build the uncompiled graph of an ensemble spec.

    Args:
        spec: A validated spec (see `selfmoa.graphs.spec.parse_spec`).

    Returns:
        A `StateGraph` with input `InputState` and output `OutputState`; compile it with
        any checkpointer.

    Example:
        >>> from selfmoa.testing import FakeChatModel
        >>> spec = MoASpec(layers=[[{"model": FakeChatModel(), "samples": 3}]])
        >>> build_graph(spec).compile().invoke({"messages": "Hi"})["answer"] != ""
        True
    """
    models = ModelTable()
    layers: list[list[_Slot]] = []
    offset = 0
    for layer in spec.layers:
        slots = []
        for group, proposer in enumerate(layer.proposers):
            label = models.add(proposer.model)
            temperature = spec.temperature if proposer.temperature is None else proposer.temperature
            for _ in range(proposer.samples):
                slots.append(_Slot(label, temperature, None if spec.seed is None else spec.seed + offset, group))
                offset += 1
        layers.append(slots)
    aggregator = models.add(spec.aggregator.model or spec.layers[-1].proposers[0].model)
    policy = CallPolicy(max_attempts=spec.max_attempts, retry_delay=spec.retry_delay, timeout=spec.timeout)
    last = len(layers) - 1
    windowed = spec.aggregator.mode == "window"
    window, reserved = spec.aggregator.window, spec.aggregator.reserved
    batches = window_schedule(len(layers[last]), window, reserved) if windowed else [range(len(layers[last]))]

    def proposals_for(state: MoAState, layer: int, indices: range) -> list[Send]:
        references = state.get("references", []) if layer > 0 else []
        sends = []
        for first, n in _requests(layers[layer], indices, spec.sampling == "n"):
            slot = layers[layer][first]
            task = ProposeTask(
                layer=layer + 1,
                sample=first,
                model=slot.model,
                temperature=slot.temperature,
                seed=slot.seed,
                n=n,
                messages=state["messages"],
                references=references,
            )
            sends.append(Send("propose", task))
        return sends

    def first_batch(state: MoAState, layer: int) -> list[Send]:
        return proposals_for(state, layer, batches[0] if layer == last else range(len(layers[layer])))

    def prepare(state: MoAState) -> dict:
        if not state.get("messages"):
            raise InputError(
                "input has no messages; invoke the graph with {'messages': [('user', 'your question')]}"
            )
        return new_run()

    def route_start(state: MoAState) -> list[Send]:
        return first_batch(state, 0)

    def collect(state: MoAState) -> dict:
        layer = state.get("layer", 0)
        pending = sorted(state.get("pending", []), key=lambda p: p["sample"])
        ok = [p for p in pending if p["error"] is None]
        update: dict = {
            "pending": Overwrite([]),
            "references": [p["text"] for p in ok],
            "reference_ids": [p["sample"] for p in ok],
        }
        writer = get_stream_writer()
        if not windowed or layer < last:
            writer({"selfmoa": "layer", "layer": layer + 1, "succeeded": len(ok), "failed": len(pending) - len(ok)})
            if len(ok) < spec.min_proposals:
                raise _quorum_error(pending, layer + 1, spec.min_proposals)
            return {**update, "layer": layer + 1}
        batch = state.get("batch", 0)
        if batch < len(batches):
            writer({"selfmoa": "window", "batch": batch, "succeeded": len(ok), "failed": len(pending) - len(ok)})
            update["batch"] = batch + 1
            if ok or batch + 1 < len(batches):
                return update
        return {**update, **_finish(state)}

    def _finish(state: MoAState) -> dict:
        last_layer = [p for p in state.get("proposals", []) if p["layer"] == last + 1]
        succeeded = [p for p in last_layer if p["error"] is None]
        synthesis = state.get("synthesis")
        if len(succeeded) < spec.min_proposals or synthesis is None:
            raise _quorum_error(last_layer, last + 1, spec.min_proposals)
        message = AIMessage(synthesis["text"], id=synthesis["id"], usage_metadata=synthesis["usage_metadata"])
        return {"answer": synthesis["text"], "messages": [message]}

    def route_collect(state: MoAState) -> list[Send] | str:
        if state.get("answer"):
            return END
        layer = state["layer"]
        if not windowed:
            return "aggregate" if layer > last else first_batch(state, layer)
        batch = state.get("batch", 0)
        if layer < last or batch == 0:
            return first_batch(state, layer)
        sends = []
        if state.get("references"):
            synthesis = state.get("synthesis")
            carried = [synthesis["text"]] * reserved if synthesis is not None else []
            task = WindowTask(
                step=batch - 1,
                samples=state["reference_ids"],
                reserved=len(carried),
                responses=carried + state["references"],
                messages=state["messages"],
                final=batch == len(batches),
            )
            sends.append(Send("aggregate_window", task))
        if batch < len(batches):
            sends += proposals_for(state, last, batches[batch])
        return sends

    graph = StateGraph(MoAState, input_schema=InputState, output_schema=OutputState)
    graph.add_node("prepare", prepare)
    graph.add_node("propose", make_propose(models, policy, spec.prompt))
    graph.add_node("collect", collect)
    graph.add_edge(START, "prepare")
    graph.add_conditional_edges("prepare", route_start, ["propose"])
    graph.add_edge("propose", "collect")
    agg_args = dict(temperature=spec.aggregator.temperature, seed=spec.seed)
    if windowed:
        graph.add_node("aggregate_window", make_aggregate_window(models, aggregator, policy, spec.prompt, **agg_args))
        graph.add_edge("aggregate_window", "collect")
        graph.add_conditional_edges("collect", route_collect, ["propose", "aggregate_window", END])
    else:
        graph.add_node("aggregate", make_aggregate(models, aggregator, policy, spec.prompt, **agg_args))
        graph.add_conditional_edges("collect", route_collect, ["propose", "aggregate"])
        graph.add_edge("aggregate", END)
    return graph


def _requests(slots: list[_Slot], indices: range, batched: bool) -> list[tuple[int, int]]:
    """(first sample, choices) per request: one per sample, or one per proposer entry."""
    if not batched:
        return [(i, 1) for i in indices]
    requests: list[tuple[int, int]] = []
    for i in indices:
        if requests and slots[requests[-1][0]].group == slots[i].group:
            requests[-1] = (requests[-1][0], requests[-1][1] + 1)
        else:
            requests.append((i, 1))
    return requests


def _quorum_error(proposals: list[Proposal], layer: int, needed: int) -> ProposalsFailedError:
    failed = [p for p in proposals if p["error"] is not None]
    shown = "; ".join(f"{p['model']}[{p['sample']}]: {p['error']}" for p in failed[:3])
    more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
    ok = len(proposals) - len(failed)
    return ProposalsFailedError(
        f"only {ok} of {len(proposals)} proposals of layer {layer} succeeded, {needed} needed (min_proposals): "
        f"{shown}{more}; fix the model or endpoint, or lower min_proposals"
    )
