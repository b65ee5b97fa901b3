"""Pieces shared by the nodes that call a model: message building and call configs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AnyMessage, BaseMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs
from langgraph.constants import TAG_NOSTREAM

from selfmoa.prompts import format_references

FINAL_TAG = "selfmoa:final"
"""Tag of the call that writes the final answer; its tokens are what `stream_mode="messages"` shows."""


def with_references(messages: Sequence[AnyMessage], references: Sequence[str], prompt: str) -> list[BaseMessage]:
    """The conversation with the aggregation prompt and numbered references as system message.

    A leading system message of the caller is kept and the aggregation prompt appended to
    it, since several providers accept only one system message.
    """
    system = prompt.format(references=format_references(references))
    msgs = list(messages)
    if msgs and isinstance(msgs[0], SystemMessage):
        return [SystemMessage(f"{msgs[0].text}\n\n{system}"), *msgs[1:]]
    return [SystemMessage(system), *msgs]


def call_config(config: RunnableConfig, *, role: str, final: bool = False, **metadata: Any) -> RunnableConfig:
    """Config for one model call: selfmoa metadata for traces, and streaming only if final.

    Proposer and intermediate-window calls carry LangGraph's `nostream` tag so that
    `stream_mode="messages"` yields the final answer's tokens only.
    """
    tags = [f"selfmoa:{role}", FINAL_TAG if final else TAG_NOSTREAM]
    meta = {"selfmoa_role": role, **{f"selfmoa_{k}": v for k, v in metadata.items()}}
    return merge_configs(config, {"tags": tags, "metadata": meta, "run_name": role})


def sampling_kwargs(temperature: float | None, seed: int | None) -> dict[str, Any]:
    """Invocation keyword arguments; left out when unset so any chat model accepts them."""
    kwargs: dict[str, Any] = {}
    if temperature is not None:
        kwargs["temperature"] = temperature
    if seed is not None:
        kwargs["seed"] = seed
    return kwargs
