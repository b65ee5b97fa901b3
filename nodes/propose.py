"""The `propose` node: one proposer call, run once per `Send`."""

from __future__ import annotations

import time
from typing import Any

from langchain_core.runnables import RunnableConfig, RunnableLambda

from selfmoa.nodes.calls import call_config, sampling_kwargs, with_references
from selfmoa.nodes.models import CallPolicy, ModelTable, describe_error, text_of, usage_of
from selfmoa.nodes.state import Proposal, ProposeTask, usage_delta, zero_tokens


def make_propose(models: ModelTable, policy: CallPolicy, prompt: str) -> RunnableLambda:
    """Build the `propose` node for one graph.

    The node answers the conversation (first layer) or refines the previous layer's
    answers given as references (later layers). A call that still fails after the
    policy's retries is recorded as a proposal with `error` set rather than raised, so
    one failing proposer does not cancel its siblings; `collect` then applies the quorum.

    Args:
        models: The graph's models, looked up by the label in each task.
        policy: Retries and time limit of each call.
        prompt: The aggregation prompt used for layers after the first.

    Returns:
        A node that runs under both `invoke` and `ainvoke`.
    """

    def prepare(task: ProposeTask, config: RunnableConfig) -> tuple[Any, list, RunnableConfig, dict]:
        model = models.get(task["model"])
        messages = task["messages"]
        if task["references"]:
            messages = with_references(messages, task["references"], prompt)
        cfg = call_config(config, role="proposer", layer=task["layer"], sample=task["sample"], model=task["model"])
        return model, messages, cfg, sampling_kwargs(task["temperature"], task["seed"])

    def record(task: ProposeTask, started: float, message: Any = None, error: BaseException | None = None) -> dict:
        text = "" if message is None else text_of(message)
        reason = describe_error(error) if error is not None else (None if text else "empty response")
        usage = usage_of(message) if message is not None else zero_tokens()
        proposal = Proposal(
            layer=task["layer"],
            model=task["model"],
            sample=task["sample"],
            text=text if reason is None else "",
            usage=usage,
            latency=round(time.perf_counter() - started, 6),
            error=reason,
        )
        return {"pending": [proposal], "proposals": [proposal], "usage": usage_delta(task["model"], usage)}

    def propose(task: ProposeTask, config: RunnableConfig) -> dict:
        started = time.perf_counter()
        model, messages, cfg, kwargs = prepare(task, config)
        try:
            message = policy.invoke(model, messages, cfg, **kwargs)
        except Exception as exc:  # noqa: BLE001 - recorded, judged by the quorum in collect
            return record(task, started, error=exc)
        return record(task, started, message)

    async def apropose(task: ProposeTask, config: RunnableConfig) -> dict:
        started = time.perf_counter()
        model, messages, cfg, kwargs = prepare(task, config)
        try:
            message = await policy.ainvoke(model, messages, cfg, **kwargs)
        except Exception as exc:  # noqa: BLE001 - recorded, judged by the quorum in collect
            return record(task, started, error=exc)
        return record(task, started, message)

    return RunnableLambda(propose, afunc=apropose, name="propose")
