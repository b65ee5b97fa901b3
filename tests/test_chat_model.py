"""`MoAChatModel`: an ensemble as the LLM of any LangChain or LangGraph code."""

from __future__ import annotations

import asyncio

import pytest
from helpers import by_role
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph

from selfmoa import MoAChatModel, create_self_moa, create_self_moa_seq
from selfmoa.testing import FakeChatModel, count_tokens


def ensemble(model: FakeChatModel, samples: int = 3) -> MoAChatModel:
    return MoAChatModel(graph=create_self_moa(model, samples=samples))


def test_invoke_returns_the_answer_with_usage(fake):
    reply = ensemble(fake).invoke("What is 17*3?")
    aggregator = by_role(fake, "aggregator")[0]
    assert isinstance(reply, AIMessage) and reply.content == aggregator.replies[0]
    expected_out = sum(count_tokens(c.replies[0]) for c in fake.calls)
    assert reply.usage_metadata["output_tokens"] == expected_out
    assert reply.response_metadata["selfmoa"]["proposals"] == 3


def test_ainvoke_batch_and_call_options(fake):
    llm = ensemble(fake, samples=2)
    reply = asyncio.run(llm.ainvoke("Hi", temperature=0.3, seed=9))
    assert {c.temperature for c in by_role(fake, "proposer")} == {0.3}
    assert sorted(c.seed for c in by_role(fake, "proposer")) == [9, 10]
    assert reply.content
    replies = llm.batch(["one question", "another question"])
    assert len(replies) == 2 and replies[0].content != replies[1].content


def test_stream_yields_the_final_tokens_and_usage_last(fake):
    llm = MoAChatModel(graph=create_self_moa_seq(fake, samples=8))
    chunks = list(llm.stream("Hi"))
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    last_window = sorted(by_role(fake, "aggregator"), key=lambda c: c.metadata["selfmoa_step"])[-1]
    assert merged.content == last_window.replies[0]
    with_usage = [c for c in chunks if c.usage_metadata]
    assert len(chunks) > 3 and len(with_usage) == 1, "usage is reported once, after the tokens"
    assert chunks.index(with_usage[0]) > max(i for i, c in enumerate(chunks) if c.content)
    assert merged.usage_metadata["output_tokens"] == sum(count_tokens(c.replies[0]) for c in fake.calls)

    async def collect():
        return [c async for c in llm.astream("Hi")]

    assert "".join(c.content for c in asyncio.run(collect())) == merged.content


def test_in_a_chain_and_as_an_agent_llm_without_duplicated_tokens(fake):
    llm = ensemble(fake)
    chain = ChatPromptTemplate.from_messages([("system", "Be brief."), ("user", "{q}")]) | llm
    assert chain.invoke({"q": "What is 17*3?"}).content

    def respond(state: MessagesState):
        return {"messages": [llm.invoke(state["messages"])]}

    agent = StateGraph(MessagesState)
    agent.add_node("respond", respond)
    agent.add_edge(START, "respond")
    app = agent.compile()
    tokens, final = [], None
    for mode, part in app.stream({"messages": [("user", "Hi")]}, stream_mode=["messages", "values"]):
        if mode == "messages":
            tokens.append(part[0].content)
        else:
            final = part
    assert "".join(tokens) == final["messages"][-1].content, "each token streamed once"


def test_tools_are_refused_clearly(fake):
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    with pytest.raises(NotImplementedError, match="does not support tools"):
        ensemble(fake).bind_tools([add])


def test_bad_options(fake):
    with pytest.raises(ValueError, match="does not support stop sequences"):
        ensemble(fake).invoke("Hi", stop=["\n"])
    with pytest.raises(ValueError, match=r"unsupported call option\(s\) \['top_k'\]"):
        ensemble(fake).invoke("Hi", top_k=3)


def test_graphs_it_cannot_run_are_refused_and_the_name_is_reported(fake):
    from langgraph.checkpoint.memory import InMemorySaver

    from selfmoa import SelfMoAError

    with pytest.raises(SelfMoAError, match="runs the graph without a thread"):
        MoAChatModel(graph=create_self_moa(fake, samples=2).compile(checkpointer=InMemorySaver()))
    paused = MoAChatModel(graph=create_self_moa(fake, samples=2, review=True))
    with pytest.raises(SelfMoAError, match="paused for review"):
        paused.invoke("Hi")
    with pytest.raises(SelfMoAError, match="paused for review"):
        list(paused.stream("Hi"))
    named = MoAChatModel(graph=create_self_moa(fake, samples=2), name="my-ensemble")
    assert named.invoke("Hi").response_metadata["model_name"] == "my-ensemble"
    assert {c.response_metadata.get("model_name") for c in named.stream("Hi")} - {None} == {"my-ensemble"}
