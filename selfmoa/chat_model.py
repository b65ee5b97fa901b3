"""`MoAChatModel`: any selfmoa graph as a LangChain chat model.

Wrap an ensemble so that anything that takes a chat model (a chain, an agent's LLM node,
`with_structured_output`-free prompt pipelines) can use it: `invoke`, `ainvoke`, `stream`
(the final answer's tokens), `batch`, and token usage on the returned message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langgraph.graph import StateGraph
from pydantic import ConfigDict, Field, model_validator

from selfmoa.runtime.errors import SelfMoAError

__all__ = ["MoAChatModel"]

_PASSED_AS_CONTEXT = ("temperature", "seed")


class MoAChatModel(BaseChatModel):
    """A chat model whose every reply is an ensemble's aggregated answer.

    Args:
        graph: A selfmoa graph, compiled or not (an uncompiled `StateGraph` is compiled
            without a checkpointer).
        name: The model name reported in responses and traces.

    Call-time `temperature` and `seed` reach the proposers through the run context. The
    ensemble runs on its own callbacks (it is traced as a run of its own): sharing the
    caller's would hand a streaming caller every token twice, the aggregator's and this
    model's.
    Tools are out of scope: proposers answer in text, so `bind_tools` raises rather than
    silently dropping the tools.

    Example:
        >>> from selfmoa import MoAChatModel, create_self_moa
        >>> from selfmoa.testing import FakeChatModel
        >>> llm = MoAChatModel(graph=create_self_moa(FakeChatModel(), samples=3))
        >>> reply = llm.invoke("What is 17*3?")
        >>> reply.usage_metadata["total_tokens"] > 0, reply.response_metadata["selfmoa"]["proposals"]
        (True, 3)
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    graph: Any = Field(exclude=True)
    model_name: str = Field(default="selfmoa", alias="name")

    @model_validator(mode="after")
    def _compile(self) -> MoAChatModel:
        if isinstance(self.graph, StateGraph):
            self.graph = self.graph.compile()
        if not hasattr(self.graph, "invoke") or not hasattr(self.graph, "astream"):
            raise SelfMoAError("MoAChatModel needs a selfmoa graph, e.g. graph=create_self_moa(model)")
        if getattr(self.graph, "checkpointer", None) not in (None, False):
            # A chat model call carries no thread, and a checkpointed graph needs one.
            raise SelfMoAError("MoAChatModel runs the graph without a thread; pass the graph uncompiled, or compiled "
                               "without a checkpointer")
        return self

    @property
    def _llm_type(self) -> str:
        return "selfmoa"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        """Not supported: raises, since proposers answer in text and tools would be dropped."""
        raise NotImplementedError(
            "MoAChatModel does not support tools: its proposers answer in plain text and would drop them; "
            "call tools in your agent and pass the ensemble only the text steps"
        )

    # --- calls ---------------------------------------------------------------------------

    def _inputs(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict) -> tuple[dict, dict]:
        if stop:
            raise ValueError("MoAChatModel does not support stop sequences; leave `stop` unset")
        unknown = sorted(set(kwargs) - set(_PASSED_AS_CONTEXT) - {"stream"})
        if unknown:
            raise ValueError(
                f"MoAChatModel got unsupported call option(s) {unknown}; it accepts {list(_PASSED_AS_CONTEXT)}"
            )
        context = {k: kwargs[k] for k in _PASSED_AS_CONTEXT if kwargs.get(k) is not None}
        return {"messages": list(messages)}, context

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        inputs, context = self._inputs(messages, stop, kwargs)
        return _result(self.graph.invoke(inputs, context=context or None), self.model_name)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        inputs, context = self._inputs(messages, stop, kwargs)
        return _result(await self.graph.ainvoke(inputs, context=context or None), self.model_name)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        inputs, context = self._inputs(messages, stop, kwargs)
        final: dict = {}
        async for mode, part in self.graph.astream(
            inputs, stream_mode=["messages", "values"], context=context or None
        ):
            if mode == "values":
                final = part
            elif part[0].content:
                yield ChatGenerationChunk(message=AIMessageChunk(content=part[0].content))
        yield _last_chunk(final, self.model_name)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        inputs, context = self._inputs(messages, stop, kwargs)
        final: dict = {}
        for mode, part in self.graph.stream(inputs, stream_mode=["messages", "values"], context=context or None):
            if mode == "values":
                final = part
            elif part[0].content:
                yield ChatGenerationChunk(message=AIMessageChunk(content=part[0].content))
        yield _last_chunk(final, self.model_name)


def _metadata(state: dict) -> dict[str, Any]:
    return {
        "proposals": len(state.get("proposals", [])),
        "failed": sum(1 for p in state.get("proposals", []) if p["error"]),
        "aggregations": len(state.get("aggregations", [])),
        "usage_by_model": state.get("usage", {}).get("by_model", {}),
        "warnings": state.get("warnings", []),
        # How far the samples agree with the answer, why drawing stopped, and whether the run abstained.
        **{key: state.get(key) for key in ("agreement", "stopped", "abstained")},
    }


def _usage(state: dict) -> dict[str, int]:
    total = state.get("usage", {}).get("total", {})
    return {k: int(total.get(k, 0)) for k in ("input_tokens", "output_tokens", "total_tokens")}


def _finished(state: dict) -> dict:
    if "__interrupt__" in state:  # a review pause: there is no answer to give yet
        raise SelfMoAError("the graph paused for review, which a chat model call cannot answer; build it without "
                           "review=True, or run it directly with a checkpointer")
    return state


def _result(state: dict, name: str) -> ChatResult:
    message = AIMessage(
        content=_finished(state)["answer"],
        usage_metadata=_usage(state),
        response_metadata={"model_name": name, "selfmoa": _metadata(state)},
    )
    return ChatResult(generations=[ChatGeneration(message=message)])


def _last_chunk(state: dict, name: str) -> ChatGenerationChunk:
    # Usage and the ensemble's summary ride on the last chunk, as OpenAI's include_usage does.
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            usage_metadata=_usage(_finished(state)),  # type: ignore[arg-type]  # the three counts UsageMetadata needs
            response_metadata={"model_name": name, "selfmoa": _metadata(state)},
        )
    )
