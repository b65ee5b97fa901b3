"""The aggregator nodes: `aggregate` (one-shot) and `aggregate_window` (one Self-MoA-Seq step)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import Runnable, RunnableConfig

from selfmoa.nodes.calls import call_config, node, sampling_kwargs, trim_references, with_references
from selfmoa.nodes.errors import AggregationError
from selfmoa.nodes.models import CallPolicy, ModelTable, describe_error, text_of, usage_of
from selfmoa.nodes.state import Aggregation, MoAState, Synthesis, WindowTask, usage_delta


class _Call:
    """One aggregator call: its model, messages and config, and how to record it."""

    def __init__(
        self,
        models: ModelTable,
        policy: CallPolicy,
        config: RunnableConfig,
        *,
        model: str,
        temperature: float | None,
        seed: int | None,
        prompt: str,
        conversation: Sequence[AnyMessage],
        responses: Sequence[str],
        final: bool,
        step: int,
        names: Sequence[str],
        max_chars: int | None,
    ):
        self.label, self.policy, self.started = model, policy, time.perf_counter()
        self.model = models.get(model)
        responses, self.warning = trim_references(responses, names, max_chars)
        self.messages = with_references(conversation, responses, prompt)
        self.config = call_config(config, role="aggregator", final=final, model=model, step=step)
        self.step = step
        self.kwargs = sampling_kwargs(temperature, seed)

    def invoke(self) -> AIMessage:
        try:
            return self.policy.invoke(self.model, self.messages, self.config, **self.kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised with the way to resume
            raise self._error(exc) from exc

    async def ainvoke(self) -> AIMessage:
        try:
            return await self.policy.ainvoke(self.model, self.messages, self.config, **self.kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised with the way to resume
            raise self._error(exc) from exc

    def _error(self, exc: BaseException) -> AggregationError:
        return AggregationError(
            f"aggregator {self.label!r} failed after {self.policy.max_attempts} attempt(s): {describe_error(exc)}; "
            "the proposals are kept in the checkpoint, fix the aggregator and invoke the same thread again to resume"
        )

    def record(self, message: AIMessage, kind: str, step: int, samples: list[int], reserved: int) -> tuple:
        text = text_of(message)
        if not text.strip():
            raise AggregationError(
                f"aggregator {self.label!r} returned an empty response; check the model or raise its max_tokens"
            )
        usage = usage_of(message)
        agg = Aggregation(
            kind=kind,  # type: ignore[typeddict-item]
            step=step,
            model=self.label,
            samples=samples,
            reserved=reserved,
            text=text,
            usage=usage,
            latency=round(time.perf_counter() - self.started, 6),
        )
        return text, agg, usage_delta(self.label, usage)

    def warnings(self) -> dict:
        """The `warnings` update of this call: what trimming its references cut, if anything."""
        return {"warnings": [f"aggregation step {self.step}: {self.warning}"]} if self.warning else {}


def make_aggregate(models: ModelTable, policy: CallPolicy) -> Runnable:
    """Build the one-shot `aggregate` node.

    It synthesizes `state["references"]` (the last layer's successful proposals) into the
    final answer, appended to `messages` as an `AIMessage`. The aggregator model,
    temperature and prompt come from the run's plan.

    Args:
        models: The graph's models.
        policy: Retries and time limit of the call.
    """

    def start(state: MoAState, config: RunnableConfig) -> _Call:
        plan = state["plan"]
        return _Call(
            models,
            policy,
            config,
            model=plan["aggregator"],
            temperature=plan["aggregator_temperature"],
            seed=plan["seed"],
            prompt=plan["prompt"],
            conversation=state["messages"],
            responses=state["references"],
            final=True,
            step=0,
            names=[f"sample {i}" for i in state.get("reference_ids", [])],
            max_chars=plan.get("max_reference_chars"),
        )

    def updates(call: _Call, state: MoAState, message: AIMessage) -> dict:
        text, record, usage = call.record(message, "aggregate", 0, state.get("reference_ids", []), 0)
        return {"answer": text, "messages": [message], "aggregations": [record], "usage": usage, **call.warnings()}

    def aggregate(state: MoAState, config: RunnableConfig) -> dict:
        call = start(state, config)
        return updates(call, state, call.invoke())

    async def aaggregate(state: MoAState, config: RunnableConfig) -> dict:
        await models.aget(state["plan"]["aggregator"])  # resolves off the event loop
        call = start(state, config)
        return updates(call, state, await call.ainvoke())

    return node(aggregate, aaggregate, name="aggregate", trace=True)


def make_aggregate_window(models: ModelTable, policy: CallPolicy) -> Runnable:
    """Build the `aggregate_window` node: one step of the Self-MoA-Seq sliding window.

    Each task holds the window's responses (the current synthesis repeated `reserved`
    times, then the new samples); the reply becomes the new synthesis.
    """

    def start(task: WindowTask, config: RunnableConfig) -> _Call:
        return _Call(
            models,
            policy,
            config,
            model=task["model"],
            temperature=task["temperature"],
            seed=task["seed"],
            prompt=task["prompt"],
            conversation=task["messages"],
            responses=task["responses"],
            final=task["final"],
            step=task["step"],
            names=[f"synthesis copy {j + 1}" for j in range(task["reserved"])]
            + [f"sample {i}" for i in task["samples"]],
            max_chars=task.get("max_reference_chars"),
        )

    def updates(call: _Call, task: WindowTask, message: AIMessage) -> dict:
        text, record, usage = call.record(message, "window", task["step"], task["samples"], task["reserved"])
        synthesis = Synthesis(text=text, id=message.id, usage_metadata=message.usage_metadata)
        return {"synthesis": synthesis, "aggregations": [record], "usage": usage, **call.warnings()}

    def aggregate_window(task: WindowTask, config: RunnableConfig) -> dict:
        call = start(task, config)
        return updates(call, task, call.invoke())

    async def aaggregate_window(task: WindowTask, config: RunnableConfig) -> dict:
        await models.aget(task["model"])  # resolves off the event loop
        call = start(task, config)
        return updates(call, task, await call.ainvoke())

    return node(aggregate_window, aaggregate_window, name="aggregate_window", trace=True)
