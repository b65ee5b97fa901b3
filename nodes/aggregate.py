"""The aggregator nodes: `aggregate` (one-shot) and `aggregate_window` (one Self-MoA-Seq step)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda

from selfmoa.nodes.calls import call_config, sampling_kwargs, with_references
from selfmoa.nodes.errors import AggregationError
from selfmoa.nodes.models import CallPolicy, ModelTable, describe_error, text_of, usage_of
from selfmoa.nodes.state import Aggregation, MoAState, Synthesis, WindowTask, usage_delta


class _Aggregator:
    """One aggregator model with its settings; shared by both aggregator nodes."""

    def __init__(
        self, models: ModelTable, label: str, policy: CallPolicy, prompt: str, temperature: float | None, seed: int | None
    ):
        self.models, self.label, self.policy, self.prompt = models, label, policy, prompt
        self.kwargs = sampling_kwargs(temperature, seed)

    def prepare(
        self, conversation: Sequence[AnyMessage], responses: Sequence[str], config: RunnableConfig, *, final: bool, **meta
    ):
        messages = with_references(conversation, responses, self.prompt)
        cfg = call_config(config, role="aggregator", final=final, model=self.label, **meta)
        return self.models.get(self.label), messages, cfg

    def fail(self, exc: BaseException) -> AggregationError:
        return AggregationError(
            f"aggregator {self.label!r} failed after {self.policy.max_attempts} attempt(s): {describe_error(exc)}; "
            "the proposals are kept in the checkpoint, fix the aggregator and invoke the same thread again to resume"
        )

    def record(self, kind, step, samples, reserved, message, started) -> tuple[str, Aggregation, dict]:
        text = text_of(message)
        if not text:
            raise AggregationError(
                f"aggregator {self.label!r} returned an empty response; check the model or raise its max_tokens"
            )
        usage = usage_of(message)
        agg = Aggregation(
            kind=kind,
            step=step,
            model=self.label,
            samples=list(samples),
            reserved=reserved,
            text=text,
            usage=usage,
            latency=round(time.perf_counter() - started, 6),
        )
        return text, agg, usage_delta(self.label, usage)

    def call(self, model, messages, config) -> AIMessage:
        try:
            return self.policy.invoke(model, messages, config, **self.kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised with the way to resume
            raise self.fail(exc) from exc

    async def acall(self, model, messages, config) -> AIMessage:
        try:
            return await self.policy.ainvoke(model, messages, config, **self.kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised with the way to resume
            raise self.fail(exc) from exc


def make_aggregate(
    models: ModelTable,
    label: str,
    policy: CallPolicy,
    prompt: str,
    *,
    temperature: float | None,
    seed: int | None = None,
) -> RunnableLambda:
    """Build the one-shot `aggregate` node.

    It synthesizes `state["references"]` (the last layer's successful proposals) into the
    final answer, appended to `messages` as an `AIMessage`.

    Args:
        models: The graph's models.
        label: Label of the aggregator model.
        policy: Retries and time limit of the call.
        prompt: Aggregation prompt with a `{references}` placeholder.
        temperature: Sampling temperature of the aggregator (None: the model's default).
        seed: Sampling seed, if any.
    """
    agg = _Aggregator(models, label, policy, prompt, temperature, seed)

    def updates(state: MoAState, message: AIMessage, started: float) -> dict:
        ids = state.get("reference_ids", [])
        text, record, usage = agg.record("aggregate", 0, ids, 0, message, started)
        return {"answer": text, "messages": [message], "aggregations": [record], "usage": usage}

    def aggregate(state: MoAState, config: RunnableConfig) -> dict:
        started = time.perf_counter()
        model, messages, cfg = agg.prepare(state["messages"], state["references"], config, final=True)
        return updates(state, agg.call(model, messages, cfg), started)

    async def aaggregate(state: MoAState, config: RunnableConfig) -> dict:
        started = time.perf_counter()
        model, messages, cfg = agg.prepare(state["messages"], state["references"], config, final=True)
        return updates(state, await agg.acall(model, messages, cfg), started)

    return RunnableLambda(aggregate, afunc=aaggregate, name="aggregate")


def make_aggregate_window(
    models: ModelTable, label: str, policy: CallPolicy, prompt: str, *, temperature: float | None, seed: int | None = None
) -> RunnableLambda:
    """Build the `aggregate_window` node: one step of the Self-MoA-Seq sliding window.

    Each task holds the window's responses (the current synthesis repeated `reserved`
    times, then the new samples); the reply becomes the new synthesis.
    """
    agg = _Aggregator(models, label, policy, prompt, temperature, seed)

    def prepare(task: WindowTask, config: RunnableConfig):
        return agg.prepare(task["messages"], task["responses"], config, final=task["final"], step=task["step"])

    def updates(task: WindowTask, message: AIMessage, started: float) -> dict:
        text, record, usage = agg.record("window", task["step"], task["samples"], task["reserved"], message, started)
        synthesis = Synthesis(text=text, id=message.id, usage_metadata=message.usage_metadata)
        return {"synthesis": synthesis, "aggregations": [record], "usage": usage}

    def aggregate_window(task: WindowTask, config: RunnableConfig) -> dict:
        started = time.perf_counter()
        model, messages, cfg = prepare(task, config)
        return updates(task, agg.call(model, messages, cfg), started)

    async def aaggregate_window(task: WindowTask, config: RunnableConfig) -> dict:
        started = time.perf_counter()
        model, messages, cfg = prepare(task, config)
        return updates(task, await agg.acall(model, messages, cfg), started)

    return RunnableLambda(aggregate_window, afunc=aaggregate_window, name="aggregate_window")

