"""One builder for every method: it turns a `MoASpec` into a LangGraph `StateGraph`.

Shape of every graph::

    START -> prepare -> propose (x k, Send) -> collect -> ... -> aggregate (Send) -> finish -> END
                                                 Self-MoA-Seq:  aggregate (Send) -> collect -> ...

The nodes between the model calls (`prepare`, `collect`, `finish` and the `route` edges)
are the run's state machine in `selfmoa.nodes.run`; this module only wires them, with the
graph's models and plan bound in. A one-shot aggregation is one `aggregate` step over
every proposal (optionally after `review`); a sliding window (Self-MoA-Seq) sends one
`aggregate` step per batch of samples, each together with the next batch's proposals, and
`collect` sets the phase after each step. Every run ends in `finish`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from langgraph.graph import END, START, StateGraph

from selfmoa.graphs.plan import apply_context, make_plan
from selfmoa.graphs.spec import MoASpec
from selfmoa.nodes import EnsembleContext, InputState, MoAState, OutputState, review
from selfmoa.nodes.aggregate import make_aggregate
from selfmoa.nodes.answers import answer_extractor
from selfmoa.nodes.calls import node
from selfmoa.nodes.finish import finish, make_escalate, route_finished
from selfmoa.nodes.propose import make_propose
from selfmoa.nodes.run import Setup, aprepare, collect, prepare, route
from selfmoa.nodes.state import Plan
from selfmoa.runtime.models import ModelTable
from selfmoa.runtime.policy import CallPolicy

__all__ = ["build_graph"]


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
    default = make_plan(spec, models)  # validates the models now, at build time

    def plan_of(context: EnsembleContext | None) -> Plan:
        return default if context is None else make_plan(apply_context(spec, context), models)

    answer_of = answer_extractor(spec.aggregator.answer_of)
    setup = Setup(models, plan_of, spec.max_input_chars, answer_of, review=spec.review)
    policy = CallPolicy(
        max_attempts=spec.max_attempts, retry_delay=spec.retry_delay, timeout=spec.timeout, limiter=spec.limiter
    )
    graph = StateGraph(MoAState, context_schema=EnsembleContext, input_schema=InputState, output_schema=OutputState)
    graph.add_node("prepare", node(partial(prepare, setup=setup), partial(aprepare, setup=setup), name="prepare"))
    graph.add_node("propose", make_propose(models, policy))
    graph.add_node("collect", node(partial(collect, setup=setup), name="collect"))
    graph.add_node("aggregate", make_aggregate(models, policy, answer_of))
    graph.add_node("finish", node(partial(finish, setup=setup), name="finish"))
    router = node(route, name="route", trace=True)
    graph.add_edge(START, "prepare")
    graph.add_conditional_edges("prepare", router, ["propose"])
    graph.add_edge("propose", "collect")
    # A window step goes back to `collect`, which sets the phase: another step, or the end.
    graph.add_edge("aggregate", "collect" if spec.aggregator.window is not None else "finish")
    graph.add_conditional_edges("collect", router, ["propose", "aggregate", *(["review"] * spec.review), "finish"])
    low = spec.low_agreement
    if low is not None and low.escalate is not None:
        # Escalation is a hybrid declared as data: its own ensemble, drawn as the `escalate` node.
        graph.add_node("escalate", make_escalate(build_graph(low.escalate).compile(name="escalate")))
        graph.add_conditional_edges("finish", node(route_finished, name="route_finished"), ["escalate", END])
        graph.add_edge("escalate", END)
    else:
        graph.add_edge("finish", END)
    if spec.review:
        graph.add_node("review", review)
        graph.add_conditional_edges("review", router, ["aggregate"])
    return graph
