"""The `propose` node: one proposer call per `Send` (or one call asking for `n` choices)."""

from __future__ import annotations

import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig

from selfmoa.nodes.calls import call_config, node, sampling_kwargs, with_references
from selfmoa.nodes.state import Proposal, ProposeTask
from selfmoa.runtime.errors import describe_error
from selfmoa.runtime.inputs import CHARS_PER_TOKEN
from selfmoa.runtime.models import ModelTable
from selfmoa.runtime.policy import CallPolicy, is_retryable
from selfmoa.runtime.usage import add_usage, text_of, usage_delta, usage_of, zero_tokens

_Call = tuple[BaseChatModel, list[BaseMessage], RunnableConfig, dict[str, Any]]


def make_propose(models: ModelTable, policy: CallPolicy) -> Runnable:
    """Build the `propose` node for one graph.

    The node answers the conversation (first layer) or refines the previous layer's
    answers given as references (later layers). A call that still fails after the
    policy's retries is recorded as a proposal with `error` set rather than raised, so
    one failing proposer does not cancel its siblings; `collect` then applies the quorum.

    A task with `n > 1` asks the endpoint for n choices in one request (`sampling="n"`)
    and records the choices that came back. If fewer came back, or the endpoint refuses
    such a request, `collect` sends the missing samples as tasks of their own (with a
    warning), never padding with copies. Usage is taken once from the response
    (LangChain puts the whole request's usage on every choice), and a warning is recorded
    when it looks like one choice's worth, as some servers report.

    Args:
        models: The graph's models, looked up by the label in each task.
        policy: Retries and time limit of each call.

    Returns:
        A node that runs under both `invoke` and `ainvoke`.
    """

    def start(task: ProposeTask, config: RunnableConfig) -> _Call:
        messages: list[Any] = list(task["messages"])
        if task["references"]:
            messages = with_references(messages, task["references"], task["prompt"])
        cfg = call_config(config, role="proposer", layer=task["layer"], sample=task["sample"], model=task["model"])
        kwargs = sampling_kwargs(task["temperature"], task["seed"])
        if task["n"] > 1:  # `generate` takes callbacks, tags and metadata as arguments rather than a config
            kwargs.update(n=task["n"], stream=False, **{k: cfg.get(k) for k in ("callbacks", "tags", "metadata", "run_name")})
        return models.get(task["model"], task["max_tokens"]), list(messages), cfg, kwargs

    def propose(task: ProposeTask, config: RunnableConfig) -> dict:
        started = time.perf_counter()
        model, messages, cfg, kwargs = start(task, config)
        one = task["n"] == 1
        try:
            outcome = policy.invoke(model, messages, cfg, **kwargs) if one else policy.run(
                lambda: model.generate([messages], **kwargs))
        except Exception as exc:  # noqa: BLE001 - recorded, judged by the quorum in collect
            outcome = exc  # type: ignore[assignment]  # `_proposals` takes a reply, a result or an error
        return _updates(task, *_proposals(task, started, outcome))

    async def apropose(task: ProposeTask, config: RunnableConfig) -> dict:
        started = time.perf_counter()
        await models.aget(task["model"], task["max_tokens"])  # resolves off the event loop; `start` then finds it ready
        model, messages, cfg, kwargs = start(task, config)
        one = task["n"] == 1
        try:
            outcome = await (policy.ainvoke(model, messages, cfg, **kwargs) if one else policy.arun(
                lambda: model.agenerate([messages], **kwargs)))
        except Exception as exc:  # noqa: BLE001 - recorded, judged by the quorum in collect
            outcome = exc  # type: ignore[assignment]  # `_proposals` takes a reply, a result or an error
        return _updates(task, *_proposals(task, started, outcome))

    return node(propose, apropose, name="propose", trace=True)


def _proposals(task: ProposeTask, started: float, outcome: Any) -> tuple[list[Proposal], list[str]]:
    """The proposals a call gave, and what to warn about; `collect` draws any missing sample."""
    if isinstance(outcome, LLMResult):
        return _split(task, started, outcome)
    if not isinstance(outcome, Exception):
        return [_record(task, 0, started, outcome)], []
    if task["n"] > 1 and not is_retryable(outcome):
        # A request the endpoint refuses (e.g. llama.cpp: n above its parallel slots) is
        # not worth repeating as is; the samples are drawn one request each instead.
        return [], [f"{task['model']} rejected n={task['n']} ({describe_error(outcome)}); drew the samples with separate requests"]
    # A failing endpoint (not one refusing n): every sample of the request failed.
    return [_record(task, j, started, error=outcome) for j in range(task["n"])], []


def _record(task: ProposeTask, offset: int, started: float, message: Any = None, error: Any = None) -> Proposal:
    text = "" if message is None else text_of(message)
    reason = describe_error(error) if error is not None else (None if text.strip() else "empty response")
    return Proposal(
        layer=task["layer"],
        model=task["model"],
        sample=task["sample"] + offset,
        text=text if reason is None else "",
        usage=usage_of(message) if message is not None else zero_tokens(),
        latency=round(time.perf_counter() - started, 6),
        error=reason,
    )


def _split(task: ProposeTask, started: float, result: LLMResult) -> tuple[list[Proposal], list[str]]:
    messages = [g.message for g in result.generations[0][: task["n"]] if isinstance(g, ChatGeneration)]
    proposals = [_record(task, j, started, m) for j, m in enumerate(messages)]
    usage = usage_of(messages[0]) if messages else zero_tokens()
    for p in proposals[1:]:  # one call, one usage: the first choice carries it, so the run's total is right
        p["usage"] = zero_tokens()
    warnings, wanted = [], task["n"]
    if len(messages) < wanted:
        warnings.append(
            f"{task['model']} returned {len(messages)} of {wanted} choices for n={wanted}; "
            f"drew the other {wanted - len(messages)} with separate requests"
        )
    estimate = sum(len(m.text) for m in messages) / CHARS_PER_TOKEN
    if len(messages) > 1 and usage["output_tokens"] < 0.5 * estimate:
        warnings.append(
            f"{task['model']} reported {usage['output_tokens']} output tokens for {len(messages)} choices "
            f"(about {int(estimate)} expected): its n>1 usage looks like one choice's worth"
        )
    return proposals, warnings


def _updates(task: ProposeTask, proposals: list[Proposal], warnings: list[str]) -> dict:
    usage = None
    for p in proposals:
        usage = add_usage(usage, usage_delta(task["model"], p["usage"]))
    out: dict = {"pending": proposals, "proposals": proposals}
    if usage is not None:
        out["usage"] = usage
    if warnings:
        out["warnings"] = warnings
    return out
