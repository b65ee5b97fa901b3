"""The `aggregate` node: one aggregation step, one-shot or of a Self-MoA-Seq sliding window.

Each `Send(AggregateTask)` runs one `_Call`, which turns numbered candidates into one text
in the plan's mode:

- `synthesize`: the model writes a new answer from the candidates (one call, streamed when final);
- `select`: the model names the candidate most consistent with the others and the answer
  is that candidate verbatim (one call, retried with a reminder when the reply names none,
  then the first candidate with a warning);
- `vote`: a majority over the candidates' extracted answers, with no model call.

The text becomes the run's `synthesis`; `finish` makes the last one the answer.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Generator, Iterator
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig

from selfmoa.nodes.answers import AnswerOf, normalized, vote
from selfmoa.nodes.calls import call_config, node, sampling_kwargs, trim_references, with_references
from selfmoa.nodes.select import settle_picks, shown_orders
from selfmoa.nodes.state import AggregateTask, Aggregation, Synthesis
from selfmoa.prompts import SELECT_ASK, SELECT_PROMPT, SELECT_RETRY, parse_choice
from selfmoa.runtime.errors import AggregationError, describe_error
from selfmoa.runtime.models import ModelTable
from selfmoa.runtime.policy import CallPolicy
from selfmoa.runtime.usage import TokenUsage, add_tokens, text_of, usage_delta, usage_of, zero_tokens

SELECT_REASKS = 1
"""Reminders `select` sends when a reply names no candidate, before it keeps candidate 1.
Counted apart from the call's retries (`max_attempts`), which repeat a failed call."""

# A mode's steps: a generator that yields the messages of each model call it needs, is
# sent each reply, and returns (index of the chosen candidate or None, text, extra record
# fields, warning). One generator serves `invoke` and `ainvoke` alike.
_Steps = Generator[list[BaseMessage], AIMessage, tuple[int | None, str, dict[str, Any], str | None]]


class _Call:
    """One aggregation step: its candidates, its mode, and how to record it."""

    def __init__(
        self, models: ModelTable, policy: CallPolicy, config: RunnableConfig, task: AggregateTask, answer_of: AnswerOf
    ):
        self.task, self.policy, self.answer_of, self.started = task, policy, answer_of, time.perf_counter()
        self.label, self.mode, self.responses = task["model"], task["mode"], list(task["responses"])
        # Which sample each candidate is: the reserved copies are the carried synthesis's.
        self.sources = [task["carried"]] * task["reserved"] + list(task["sample_ids"])
        names = [f"synthesis copy {j + 1}" for j in range(task["reserved"])] + [f"sample {i}" for i in task["sample_ids"]]
        voting = self.mode == "vote"
        self.model = None if voting else models.get(self.label, task["max_tokens"])
        limit = task["max_reference_chars"]
        self.warning: str | None = None
        self.trimmed = self.responses
        if not voting:
            self.trimmed, self.warning = trim_references(self.responses, names, limit)
        # Only a synthesis is asked with the aggregation prompt; select builds one message list per shown order.
        self.messages = with_references(task["messages"], self.trimmed, task["prompt"]) if self.mode == "synthesize" else []
        # Only a synthesis streams: a select reply is a number, not the answer.
        final = task["final"] and self.mode == "synthesize"
        self.config = call_config(config, role="aggregator", final=final, model=self.label, step=task["step"])
        self.kwargs = sampling_kwargs(task["temperature"], task["seed"])
        self.usage: TokenUsage = zero_tokens()
        self.message: AIMessage | None = None
        self.said = ""  # the last judge reply that named no candidate

    def steps(self) -> _Steps:
        if self.mode == "vote":
            chosen, votes = vote(self.responses, self.answer_of)
            if chosen is None:
                return 0, self.responses[0], {"votes": {}}, "no candidate had an answer to vote on; kept candidate 1"
            return chosen, self.responses[chosen], {"votes": votes}, None
        if self.mode == "select":
            return (yield from self._select())
        reply = yield self.messages
        self.message = reply
        return None, text_of(reply), {}, None

    def _select(self) -> _Steps:
        """Ask the judge in each shown order (one, or two with order "both"), then settle its picks."""
        task = self.task
        key = f"{task['seed']}|{task['step']}|{task['messages'][-1].text if task['messages'] else ''}"
        orders = shown_orders(len(self.responses), task["order"], key)
        picks: list[int | None] = []
        for shown in orders:
            picks.append((yield from self._judge(shown)))
        extra = {"order": [[self.sources[i] for i in shown] for shown in orders],
                 "picks": [None if p is None else self.sources[p] for p in picks]}
        named = [p for p in picks if p is not None]
        if not named:
            return 0, self.responses[0], extra, f"the select reply named no candidate ({self.said!r}); kept candidate 1"
        chosen = settle_picks(named, self.responses, self.answer_of)
        return chosen, self.responses[chosen], extra, None

    def _judge(self, shown: list[int]) -> Generator[list[BaseMessage], AIMessage, int | None]:
        """One judge call over the candidates in the order `shown`, re-asked once if it names none."""
        count = len(shown)
        messages = with_references(self.task["messages"], [self.trimmed[i] for i in shown], SELECT_PROMPT)
        messages.append(HumanMessage(SELECT_ASK.format(count=count)))  # last, so that it chooses, not answers
        for _ in range(1 + SELECT_REASKS):
            reply = yield messages
            choice = parse_choice(text_of(reply), count)
            if choice is not None:
                return shown[choice]
            messages += [AIMessage(text_of(reply)), HumanMessage(SELECT_RETRY.format(count=count))]
        self.said = " ".join(text_of(reply).split())[:80]
        return None

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
        with self._counted():
            self.reply = self.policy.invoke(self.model, messages, self.config, **self.kwargs)  # type: ignore[arg-type]
        return self.reply

    async def _aask(self, messages: list[BaseMessage]) -> AIMessage:
        with self._counted():
            self.reply = await self.policy.ainvoke(self.model, messages, self.config, **self.kwargs)  # type: ignore[arg-type]
        return self.reply

    @contextlib.contextmanager
    def _counted(self) -> Iterator[None]:
        """Count the reply's tokens; a failure after the retries says how to resume."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - re-raised with the way to resume
            raise AggregationError(
                f"aggregator {self.label!r} failed in at most {self.policy.max_attempts} attempt(s) (an answer that "
                f"began to stream is not tried again): {describe_error(exc)}; "
                "the proposals are kept in the checkpoint, fix the aggregator and invoke the same thread again to resume"
            ) from exc
        add_tokens(self.usage, usage_of(self.reply))

    def _result(self, index: int | None, text: str, extra: dict[str, Any], warning: str | None) -> dict:
        """The step's state updates: the new synthesis, its record, usage and warnings."""
        if not text.strip():
            raise AggregationError(
                f"aggregator {self.label!r} returned an empty response; check the model or raise its max_tokens"
            )
        task, message = self.task, self.message
        if message is None:  # select and vote: the answer is a candidate, as a new message
            counts = {k: self.usage[k] for k in ("input_tokens", "output_tokens", "total_tokens")}  # type: ignore[literal-required]
            message = AIMessage(text, id=f"selfmoa-{uuid.uuid4()}", usage_metadata=counts if self.usage["calls"] else None)  # type: ignore[arg-type]
        if index is not None:
            extra = {**extra, "chosen": self.sources[index]}
        record = Aggregation(
            kind=task["kind"],
            step=task["step"],
            model=self.label,
            sample_ids=list(task["sample_ids"]),
            reserved=task["reserved"],
            text=text,
            usage=self.usage.copy(),
            latency=round(time.perf_counter() - self.started, 6),
            mode=self.mode,
        )
        record.update(extra)  # type: ignore[typeddict-item]  # chosen, votes, order, picks
        synthesis = Synthesis(
            text=text,
            id=message.id,
            usage_metadata=message.usage_metadata,  # type: ignore[typeddict-item]
            step=task["step"],
            response_metadata=dict(message.response_metadata),
        )
        if "chosen" in record:
            synthesis["chosen"] = record["chosen"]
        updates: dict[str, Any] = {"synthesis": synthesis, "aggregations": [record]}
        if self.usage["calls"]:
            updates["usage"] = usage_delta(self.label, self.usage)
        warnings = [f"aggregation step {task['step']}: {w}" for w in (self.warning, warning) if w]
        if warnings:
            updates["warnings"] = warnings
        return updates


def make_aggregate(models: ModelTable, policy: CallPolicy, answer_of: AnswerOf = normalized) -> Runnable:
    """Build the `aggregate` node: one aggregation step per `Send(AggregateTask)`.

    A one-shot aggregation is a single final step over the last layer's proposals; a
    Self-MoA-Seq step sees the current synthesis repeated `reserved` times, then the new
    samples. Either way the result (`synthesize`: the reply; `select` and `vote`: the
    chosen candidate) becomes the new `synthesis`, and a failure after the policy's
    retries raises `AggregationError`.

    Args:
        models: The graph's models, looked up by the task's label.
        policy: Retries and time limit of the call.
        answer_of: What `vote` compares.

    Returns:
        A node that runs under both `invoke` and `ainvoke`.
    """

    def aggregate(task: AggregateTask, config: RunnableConfig) -> dict:
        return _Call(models, policy, config, task, answer_of).invoke()

    async def aaggregate(task: AggregateTask, config: RunnableConfig) -> dict:
        if task["mode"] != "vote":
            await models.aget(task["model"], task["max_tokens"])  # a first resolution runs off the event loop
        return await _Call(models, policy, config, task, answer_of).ainvoke()

    return node(aggregate, aaggregate, name="aggregate", trace=True)
