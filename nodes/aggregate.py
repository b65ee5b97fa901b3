"""The aggregator nodes: `aggregate` (one-shot) and `aggregate_window` (one Self-MoA-Seq step).

Both run one `_Call`, which turns numbered candidates into one text in the plan's mode:

- `synthesize`: the model writes a new answer from the candidates (one call, streamed);
- `select`: the model names the candidate most consistent with the others and the answer
  is that candidate verbatim (one call, retried with a reminder when the reply names none,
  then the first candidate with a warning);
- `vote`: a majority over the candidates' extracted answers, with no model call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Generator, Sequence
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig

from selfmoa.nodes.answers import AnswerOf, normalized, vote
from selfmoa.nodes.calls import call_config, node, sampling_kwargs, trim_references, with_references
from selfmoa.nodes.errors import AggregationError
from selfmoa.nodes.models import CallPolicy, ModelTable, describe_error, text_of, usage_of
from selfmoa.nodes.state import Aggregation, MoAState, Synthesis, TokenUsage, WindowTask, usage_delta, zero_tokens
from selfmoa.prompts import SELECT_ASK, SELECT_PROMPT, SELECT_RETRY, parse_choice

# A mode's steps: a generator that yields the messages of each model call it needs, is
# sent each reply, and returns (index of the chosen candidate or None, text, extra record
# fields, warning). One generator serves `invoke` and `ainvoke` alike.
_Steps = Generator[list[BaseMessage], AIMessage, tuple[int | None, str, dict[str, Any], str | None]]


class _Call:
    """One aggregation: its candidates, its mode, and how to record it."""

    def __init__(
        self,
        models: ModelTable,
        policy: CallPolicy,
        config: RunnableConfig,
        *,
        model: str,
        mode: str,
        answer_of: AnswerOf,
        temperature: float | None,
        seed: int | None,
        prompt: str,
        conversation: Sequence[AnyMessage],
        responses: Sequence[str],
        sources: Sequence[int | None],
        final: bool,
        step: int,
        names: Sequence[str],
        max_chars: int | None,
    ):
        self.label, self.policy, self.started = model, policy, time.perf_counter()
        self.mode, self.answer_of, self.step = mode, answer_of, step
        self.responses, self.sources = list(responses), list(sources)
        self.model = models.get(model) if mode != "vote" else None
        self.warning: str | None = None
        trimmed = list(responses)
        if mode != "vote":  # a vote reads no prompt: nothing to trim
            trimmed, self.warning = trim_references(responses, names, max_chars)
        self.messages = with_references(conversation, trimmed, SELECT_PROMPT if mode == "select" else prompt)
        if mode == "select":  # asked last, so that the model chooses rather than answers the question
            self.messages.append(HumanMessage(SELECT_ASK.format(count=len(self.responses))))
        # Only a synthesis streams: a select reply is a number, not the answer.
        self.config = call_config(config, role="aggregator", final=final and mode == "synthesize", model=model, step=step)
        self.kwargs = sampling_kwargs(temperature, seed)
        self.usage: TokenUsage = zero_tokens()
        self.message: AIMessage | None = None

    def steps(self) -> _Steps:
        if self.mode == "vote":
            chosen, votes = vote(self.responses, self.answer_of)
            if chosen is None:
                return 0, self.responses[0], {"votes": {}}, "no candidate had an answer to vote on; kept candidate 1"
            return chosen, self.responses[chosen], {"votes": votes}, None
        if self.mode == "select":
            messages, count = list(self.messages), len(self.responses)
            for _ in range(self.policy.max_attempts):
                reply = yield messages
                chosen = parse_choice(text_of(reply), count)
                if chosen is not None:
                    return chosen, self.responses[chosen], {}, None
                messages += [AIMessage(text_of(reply)), HumanMessage(SELECT_RETRY.format(count=count))]
            said = " ".join(text_of(reply).split())[:80]
            return 0, self.responses[0], {}, f"the select reply named no candidate ({said!r}); kept candidate 1"
        reply = yield self.messages
        self.message = reply
        return None, text_of(reply), {}, None

    def invoke(self) -> dict:
        steps = self.steps()
        try:
            messages = next(steps)
            while True:
                messages = steps.send(self._ask(messages))
        except StopIteration as done:
            return self._result(*done.value)

    async def ainvoke(self) -> dict:
        steps = self.steps()
        try:
            messages = next(steps)
            while True:
                messages = steps.send(await self._aask(messages))
        except StopIteration as done:
            return self._result(*done.value)

    def _ask(self, messages: list[BaseMessage]) -> AIMessage:
        try:
            reply = self.policy.invoke(self.model, messages, self.config, **self.kwargs)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - re-raised with the way to resume
            raise self._error(exc) from exc
        return self._count(reply)

    async def _aask(self, messages: list[BaseMessage]) -> AIMessage:
        call: Awaitable[AIMessage] = self.policy.ainvoke(self.model, messages, self.config, **self.kwargs)  # type: ignore[arg-type]
        try:
            reply = await call
        except Exception as exc:  # noqa: BLE001 - re-raised with the way to resume
            raise self._error(exc) from exc
        return self._count(reply)

    def _count(self, reply: AIMessage) -> AIMessage:
        for key, value in usage_of(reply).items():
            self.usage[key] += value  # type: ignore[literal-required]
        return reply

    def _error(self, exc: BaseException) -> AggregationError:
        return AggregationError(
            f"aggregator {self.label!r} failed after {self.policy.max_attempts} attempt(s): {describe_error(exc)}; "
            "the proposals are kept in the checkpoint, fix the aggregator and invoke the same thread again to resume"
        )

    def _result(self, index: int | None, text: str, extra: dict[str, Any], warning: str | None) -> dict:
        """The call's outcome: its text, answer message, record and state updates."""
        if not text.strip():
            raise AggregationError(
                f"aggregator {self.label!r} returned an empty response; check the model or raise its max_tokens"
            )
        if self.message is None:  # select and vote: the answer is a candidate, as a new message
            usage = {k: self.usage[k] for k in ("input_tokens", "output_tokens", "total_tokens")}  # type: ignore[literal-required]
            self.message = AIMessage(text, id=f"selfmoa-{uuid.uuid4()}", usage_metadata=usage if self.usage["calls"] else None)  # type: ignore[arg-type]
        if index is not None:
            extra = {**extra, "chosen": self.sources[index]}
        record = Aggregation(
            kind="aggregate",
            step=self.step,
            model=self.label,
            samples=[],
            reserved=0,
            text=text,
            usage=self.usage.copy(),
            latency=round(time.perf_counter() - self.started, 6),
            mode=self.mode,  # type: ignore[typeddict-item]
        )
        record.update(extra)  # type: ignore[typeddict-item]  # chosen, votes
        warnings = [f"aggregation step {self.step}: {w}" for w in (self.warning, warning) if w]
        updates: dict[str, Any] = {"aggregations": [record]}
        if self.usage["calls"]:
            updates["usage"] = usage_delta(self.label, self.usage)
        if warnings:
            updates["warnings"] = warnings
        return {"text": text, "message": self.message, "record": record, "updates": updates}


def make_aggregate(models: ModelTable, policy: CallPolicy, answer_of: AnswerOf = normalized) -> Runnable:
    """Build the one-shot `aggregate` node.

    It turns `state["references"]` (the last layer's successful proposals) into the final
    answer, appended to `messages` as an `AIMessage`, in the plan's mode. The aggregator
    model, temperature and prompt come from the run's plan.

    Args:
        models: The graph's models.
        policy: Retries and time limit of the call.
        answer_of: What `vote` compares.
    """

    def start(state: MoAState, config: RunnableConfig) -> _Call:
        plan = state["plan"]
        ids = state.get("reference_ids", [])
        return _Call(
            models,
            policy,
            config,
            model=plan["aggregator"],
            mode=plan.get("mode", "synthesize"),
            answer_of=answer_of,
            temperature=plan["aggregator_temperature"],
            seed=plan["seed"],
            prompt=plan["prompt"],
            conversation=state["messages"],
            responses=state["references"],
            sources=ids,
            final=True,
            step=0,
            names=[f"sample {i}" for i in ids],
            max_chars=plan.get("max_reference_chars"),
        )

    def updates(state: MoAState, result: dict) -> dict:
        result["record"]["samples"] = list(state.get("reference_ids", []))
        return {"answer": result["text"], "messages": [result["message"]], **result["updates"]}

    def aggregate(state: MoAState, config: RunnableConfig) -> dict:
        return updates(state, start(state, config).invoke())

    async def aaggregate(state: MoAState, config: RunnableConfig) -> dict:
        if state["plan"].get("mode") != "vote":
            await models.aget(state["plan"]["aggregator"])  # resolves off the event loop
        return updates(state, await start(state, config).ainvoke())

    return node(aggregate, aaggregate, name="aggregate", trace=True)


def make_aggregate_window(models: ModelTable, policy: CallPolicy) -> Runnable:
    """Build the `aggregate_window` node: one step of the Self-MoA-Seq sliding window.

    Each task holds the window's responses (the current synthesis repeated `reserved`
    times, then the new samples); the result (`synthesize`: the reply; `select`: the chosen
    response) becomes the new synthesis.
    """

    def start(task: WindowTask, config: RunnableConfig) -> _Call:
        carried = [task.get("carried")] * task["reserved"]
        return _Call(
            models,
            policy,
            config,
            model=task["model"],
            mode=task.get("mode", "synthesize"),
            answer_of=normalized,
            temperature=task["temperature"],
            seed=task["seed"],
            prompt=task["prompt"],
            conversation=task["messages"],
            responses=task["responses"],
            sources=carried + list(task["samples"]),
            final=task["final"],
            step=task["step"],
            names=[f"synthesis copy {j + 1}" for j in range(task["reserved"])]
            + [f"sample {i}" for i in task["samples"]],
            max_chars=task.get("max_reference_chars"),
        )

    def updates(task: WindowTask, result: dict) -> dict:
        record, message = result["record"], result["message"]
        record.update(kind="window", samples=list(task["samples"]), reserved=task["reserved"])
        synthesis = Synthesis(text=result["text"], id=message.id, usage_metadata=message.usage_metadata, step=task["step"])
        if "chosen" in record:
            synthesis["chosen"] = record["chosen"]
        return {"synthesis": synthesis, **result["updates"]}

    def aggregate_window(task: WindowTask, config: RunnableConfig) -> dict:
        return updates(task, start(task, config).invoke())

    async def aaggregate_window(task: WindowTask, config: RunnableConfig) -> dict:
        await models.aget(task["model"])  # resolves off the event loop
        return updates(task, await start(task, config).ainvoke())

    return node(aggregate_window, aaggregate_window, name="aggregate_window", trace=True)
