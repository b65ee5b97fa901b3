"""A selfmoa graph as a subgraph node of a MessagesState agent, and chained after another agent."""

from __future__ import annotations

from langchain_core.messages import AIMessage
from langgraph.graph import START, MessagesState, StateGraph

from selfmoa import create_self_moa
from selfmoa.testing import FakeChatModel


def test_self_moa_as_a_node_of_a_messages_state_agent():
    ensemble = create_self_moa(FakeChatModel(model="ens"), samples=3).compile()

    def draft(state: MessagesState):
        return {"messages": [AIMessage("draft: 51")]}

    parent = StateGraph(MessagesState)
    parent.add_node("draft", draft)
    parent.add_node("refine", ensemble)
    parent.add_edge(START, "draft")
    parent.add_edge("draft", "refine")
    out = parent.compile().invoke({"messages": [("user", "What is 17*3?")]})
    assert [m.type for m in out["messages"]] == ["human", "ai", "ai"]
    assert out["messages"][1].content == "draft: 51"
    assert out["messages"][-1].content.startswith("ens answer")
    assert set(out) == {"messages"}, "the ensemble's bookkeeping stays inside the subgraph"
