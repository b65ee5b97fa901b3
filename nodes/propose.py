"""The `propose` node: one proposer call per `Send` (or one call asking for `n` choices)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.outputs import LLMResult
from langchain_core.runnables import Runnable, RunnableConfig

from selfmoa.nodes.calls import call_config, node, sampling_kwargs, with_references
from selfmoa.nodes.models import CallPolicy, ModelTable, describe_error, is_retryable, text_of, usage_of
from selfmoa.nodes.state import Proposal, ProposeTask, TokenUsage, add_usage, usage_delta, zero_tokens

CHARS_PER_TOKEN = 4
"""Rough size of a token, used only to notice usage reported for one choice of many."""


def make_propose(models: ModelTable, policy: CallPolicy) -> Runnable:
    """Build the `propose` node for one graph.

    The node answers the conversation (first layer) or refines the previous layer's
    answers given as references (later layers). A call that still fails after the
    policy's retries is recorded as a proposal with `error` set rather than raised, so
    one failing proposer does not cancel its siblings; `collect` then applies the quorum.

    A task with `n > 1` asks the endpoint for n choices in one request (`sampling="n"`).
    If fewer come back, or the endpoint refuses such a request, the missing samples are
    drawn with separate requests (with a warning), never padded with copies. Usage is taken once from the response (LangChain puts the whole
    request's usage on every choice), and a warning is recorded when it looks like one
    choice's worth, as some servers report.

    Args:
        models: The graph's models, looked up by the label in each task.
        policy: Retries and time limit of each call.

    Returns:
        A node that runs under both `invoke` and `ainvoke`.
    """

    def prepare(task: ProposeTask, config: RunnableConfig, offset: int) -> tuple[BaseChatModel, list, RunnableConfig]:
        messages: list[Any] = list(task["messages"])
        if task["references"]:
            messages = with_references(messages, task["references"], task["prompt"])
        sample = task["sample"] + offset
        cfg = call_config(config, role="proposer", layer=task["layer"], sample=sample, model=task["model"])
        return models.get(task["model"]), messages, cfg

    def kwargs_for(task: ProposeTask, offset: int) -> dict[str, Any]:
        seed = None if task["seed"] is None else task["seed"] + offset
        return sampling_kwargs(task["temperature"], seed)

    def record(task: ProposeTask, offset: int, started: float, message: Any = None, error: Any = None) -> Proposal:
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

    def propose_one(task: ProposeTask, config: RunnableConfig, offset: int = 0) -> Proposal:
        started = time.perf_counter()
        model, messages, cfg = prepare(task, config, offset)
        try:
            message = policy.invoke(model, messages, cfg, **kwargs_for(task, offset))
        except Exception as exc:  # noqa: BLE001 - recorded, judged by the quorum in collect
            return record(task, offset, started, error=exc)
        return record(task, offset, started, message)

    async def apropose_one(task: ProposeTask, config: RunnableConfig, offset: int = 0) -> Proposal:
        started = time.perf_counter()
        await models.aget(task["model"])  # resolves off the event loop; `prepare` then finds it ready
        model, messages, cfg = prepare(task, config, offset)
        try:
            message = await policy.ainvoke(model, messages, cfg, **kwargs_for(task, offset))
        except Exception as exc:  # noqa: BLE001 - recorded, judged by the quorum in collect
            return record(task, offset, started, error=exc)
        return record(task, offset, started, message)

    def split(task: ProposeTask, started: float, result: LLMResult) -> tuple[list[Proposal], list[str]]:
        messages = [getattr(g, "message") for g in result.generations[0][: task["n"]]]  # noqa: B009 - chat generations
        proposals = [record(task, j, started, m) for j, m in enumerate(messages)]
        usage = usage_of(messages[0]) if messages else zero_tokens()
        for p, share in zip(proposals, _shares(usage, len(proposals)), strict=True):
            p["usage"] = share
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

    def rejected(task: ProposeTask, exc: Exception) -> str:
        # A request the endpoint refuses (e.g. llama.cpp: n above its parallel slots) is
        # not worth repeating as is; the samples are drawn one request each instead.
        return (
            f"{task['model']} rejected n={task['n']} ({describe_error(exc)}); "
            "drew the samples with separate requests"
        )

    def start_n(task: ProposeTask, config: RunnableConfig) -> tuple[float, BaseChatModel, list, dict[str, Any]]:
        started = time.perf_counter()
        model, messages, cfg = prepare(task, config, 0)
        n_kwargs = {"n": task["n"], "stream": False, **_generate_args(cfg), **kwargs_for(task, 0)}
        return started, model, messages, n_kwargs

    def settle(task: ProposeTask, started: float, outcome: LLMResult | Exception) -> tuple[list[Proposal], list[str]]:
        """The proposals an n-choice request gave, and what to warn about; the rest are drawn one by one."""
        if not isinstance(outcome, Exception):
            return split(task, started, outcome)
        if is_retryable(outcome):  # the endpoint is failing, not refusing n: every sample failed
            return [record(task, j, started, error=outcome) for j in range(task["n"])], []
        return [], [rejected(task, outcome)]

    def propose(task: ProposeTask, config: RunnableConfig) -> dict:
        if task["n"] == 1:
            return _updates(task, [propose_one(task, config)])
        started, model, messages, n_kwargs = start_n(task, config)
        outcome: LLMResult | Exception
        try:
            outcome = policy.run(lambda: model.generate([messages], **n_kwargs))
        except Exception as exc:  # noqa: BLE001 - recorded, judged by the quorum in collect
            outcome = exc
        proposals, warnings = settle(task, started, outcome)
        missing = range(len(proposals), task["n"])
        if missing:
            with ThreadPoolExecutor(max_workers=len(missing)) as pool:
                proposals += pool.map(lambda j: propose_one(task, config, j), missing)
        return _updates(task, proposals, warnings)

    async def apropose(task: ProposeTask, config: RunnableConfig) -> dict:
        if task["n"] == 1:
            return _updates(task, [await apropose_one(task, config)])
        await models.aget(task["model"])
        started, model, messages, n_kwargs = start_n(task, config)
        outcome: LLMResult | Exception
        try:
            outcome = await policy.arun(lambda: model.agenerate([messages], **n_kwargs))
        except Exception as exc:  # noqa: BLE001 - recorded, judged by the quorum in collect
            outcome = exc
        proposals, warnings = settle(task, started, outcome)
        missing = range(len(proposals), task["n"])
        proposals += await asyncio.gather(*(apropose_one(task, config, j) for j in missing))
        return _updates(task, proposals, warnings)

    return node(propose, apropose, name="propose", trace=True)


def _updates(task: ProposeTask, proposals: list[Proposal], warnings: list[str] | None = None) -> dict:
    usage = None
    for p in proposals:
        usage = add_usage(usage, usage_delta(task["model"], p["usage"]))
    out: dict = {"pending": proposals, "proposals": proposals, "usage": usage}
    if warnings:
        out["warnings"] = warnings
    return out


def _generate_args(config: RunnableConfig) -> dict[str, Any]:
    # `generate` takes callbacks, tags and metadata as arguments rather than a config.
    return {k: config.get(k) for k in ("callbacks", "tags", "metadata", "run_name")}


def _shares(usage: TokenUsage, parts: int) -> list[TokenUsage]:
    """Split one call's usage over its choices so that the parts add up exactly."""
    shares = []
    for j in range(parts):
        share = zero_tokens()
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            base, extra = divmod(usage[key], parts)  # type: ignore[literal-required]
            share[key] = base + (extra if j == 0 else 0)  # type: ignore[literal-required]
        share["calls"] = 1 if j == 0 else 0
        shares.append(share)
    return shares
