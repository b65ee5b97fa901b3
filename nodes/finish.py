"""The end of every run: `finish` writes the answer with its agreement, and `escalate` answers
instead when the samples agree too little (`low_agreement`).

`finish` is the one place a run ends. It checks a sliding window's quorum over every batch,
says why a window or adaptive run stopped (`stopped`, `saved`), reports how far the samples
agree with the answer (`agreement`, also as a stream event), and applies `low_agreement`:
answer anyway, abstain (no answer, the reason in `abstained`, the samples kept), or hand the
conversation to the `escalate` node, which runs the escalation ensemble and answers with it.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.config import get_stream_writer

from selfmoa.nodes.agreement import agreement
from selfmoa.nodes.calls import node
from selfmoa.nodes.run import Setup, is_settled, plan_batches, quorum_error
from selfmoa.nodes.state import Agreement, MoAState, Settle, Synthesis, Tally


def finish(state: MoAState, *, setup: Setup) -> dict:
    """Write the run's answer: the last synthesis, as the conversation's next message (or abstain, or escalate)."""
    plan, synthesis = state["plan"], state.get("synthesis")
    tally = state.get("tally") or Tally(succeeded=0, failed=0, answers={})
    update: dict[str, Any] = {"phase": "done"}
    if plan["aggregator"]["window"] is not None:
        if tally["succeeded"] < plan["min_proposals"] or synthesis is None:
            last = [p for p in state.get("proposals", []) if p["layer"] == len(plan["layers"])]
            raise quorum_error(last, len(plan["layers"]), tally["succeeded"], tally["failed"], plan["min_proposals"])
        update.update(_window_stop(state))
    elif plan["adaptive"]:
        update.update(_adaptive_stop(state, tally))
    assert synthesis is not None  # every path to `finish` went through an aggregation step
    agreed = agreement(tally["answers"], tally["succeeded"], synthesis["text"], setup.answer_of)
    if agreed is not None:
        get_stream_writer()({"selfmoa": "agreement", **agreed})
    update["agreement"] = agreed
    low = plan["low_agreement"]
    if low is not None and agreed is not None and (agreed["share"] or 0.0) < low["below"]:
        if low["action"] == "escalate":
            return {**update, "phase": "escalate", "escalated": {"agreement": agreed}}
        if low["action"] == "abstain":
            return {**update, **_abstain(agreed, low["below"])}
    return {**update, **_answer(synthesis)}


def _answer(synthesis: Synthesis) -> dict:
    message = AIMessage(
        synthesis["text"],
        id=synthesis["id"],  # the id of the call that streamed it: `stream_mode="messages"` shows it once
        usage_metadata=synthesis["usage_metadata"],  # type: ignore[arg-type]
        response_metadata=synthesis.get("response_metadata", {}),
    )
    return {"answer": synthesis["text"], "messages": [message]}


def _abstain(agreed: Agreement, below: float) -> dict:
    share = "no sample" if agreed["share"] is None else f"{agreed['share']:.2f} of {agreed['samples']} samples"
    reason = (f"the samples agree too little to answer: {share} agree with the answer, below "
              f"low_agreement.below={below:g}; the samples are in the run's proposals")
    # The conversation gets the reason as the reply, so an agent sees why; `answer` stays empty.
    message = AIMessage(f"I cannot answer this reliably: {reason}.", response_metadata={"selfmoa_abstained": True})
    return {"answer": "", "abstained": reason, "messages": [message]}


def _window_stop(state: MoAState) -> dict:
    """Why a sliding-window run ends here, and the calls it did not make.

    The batch in flight was drawn but is not aggregated when the run stops early; every
    later batch, and each window step it would have needed, is saved.
    """
    batches, batch = plan_batches(state["plan"]), state.get("batch", 0)
    settle = state.get("settle") or Settle(step=-1, answer=None, streak=0)
    if batch >= len(batches) or not is_settled(state["plan"], settle):
        return {"stopped": "samples", "saved": {"proposals": 0, "aggregations": 0}}
    drawn = sum(len(b) for b in batches[: batch + 1])
    saved = {"proposals": sum(len(b) for b in batches) - drawn, "aggregations": len(batches) - batch}
    get_stream_writer()({"selfmoa": "stopped", "stopped": "settled", "saved": saved,
                         "steps": settle["step"] + 1, "streak": settle["streak"]})
    return {"stopped": "settled", "saved": saved}


def _adaptive_stop(state: MoAState, tally: Tally) -> dict:
    """Why adaptive sampling stopped drawing, and the samples it did not draw."""
    drawn, size = tally["succeeded"] + tally["failed"], sum(len(b) for b in plan_batches(state["plan"]))
    saved = {"proposals": size - drawn, "aggregations": 0}
    stopped = "agreed" if drawn < size else "samples"
    get_stream_writer()({"selfmoa": "stopped", "stopped": stopped, "saved": saved, "drawn": drawn})
    return {"stopped": stopped, "saved": saved}


def route_finished(state: MoAState) -> str:
    """After `finish`: the end, or the escalation when the samples agreed too little."""
    return "escalate" if state.get("phase") == "escalate" else "__end__"


def make_escalate(graph: Any) -> Runnable:
    """Build the `escalate` node: run the compiled escalation graph on the conversation, answer with it.

    Its answer becomes the run's; its proposals and aggregations go to `escalated`, its
    usage into the run's `usage`.
    """

    def result(out: dict, state: MoAState) -> dict:
        escalated = {**(state.get("escalated") or {}), "proposals": out["proposals"],
                     "aggregations": out["aggregations"], "answer_agreement": out.get("agreement")}
        return {"answer": out["answer"], "messages": out["messages"][-1:], "usage": out["usage"],
                "escalated": escalated, "phase": "done"}

    def escalate(state: MoAState, config: RunnableConfig) -> dict:
        return result(graph.invoke({"messages": state["messages"]}, config), state)

    async def aescalate(state: MoAState, config: RunnableConfig) -> dict:
        return result(await graph.ainvoke({"messages": state["messages"]}, config), state)

    return node(escalate, aescalate, name="escalate", trace=True)
