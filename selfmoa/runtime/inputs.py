"""Checks of a run's conversation, made before any model call: there is a question, and it fits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, SystemMessage

from selfmoa.runtime.errors import InputError

CHARS_PER_TOKEN = 4
"""Characters per token of the cheap estimate (English text and code; fewer for some scripts)."""

NO_INPUT = (
    "input has no messages; invoke the graph with {'messages': [('user', 'your question')]} "
    "(messages with empty content do not count)"
)
"""The one error for a run with nothing to answer, from the library and the server alike."""


def _text(message: Any) -> str:
    if isinstance(message, BaseMessage):
        return message.text
    return str(message)


def input_chars(messages: Sequence[Any]) -> int:
    """Characters of text in a conversation.

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> input_chars([HumanMessage("What is 17*3?")])
        13
    """
    return sum(len(_text(m)) for m in messages)


def check_input(
    messages: Sequence[Any] | None,
    *,
    max_chars: int | None = None,
    contexts: Iterable[tuple[str, int | None]] = (),
) -> None:
    """Refuse a conversation with no question, or one longer than a limit or a model's context.

    Args:
        messages: The run's messages.
        max_chars: Most characters the conversation may hold (`max_input_chars`), or None.
        contexts: (model label, most input tokens it takes, or None) for each model that
            sees the conversation; tokens are estimated at `CHARS_PER_TOKEN` characters each.

    Raises:
        InputError: One line giving the size against the limit, and how to fix it.

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> check_input([HumanMessage("x" * 40_000)], contexts=[("local", 4096)])
        Traceback (most recent call last):
        ...
        selfmoa.runtime.errors.InputError: input is too long: about 10,000 tokens against a context of 4,096 tokens of model 'local'; shorten the conversation or use a model with a larger context
    """
    messages = list(messages or [])
    if not any(_text(m).strip() for m in messages if not isinstance(m, SystemMessage)):
        raise InputError(NO_INPUT)
    chars = input_chars(messages)
    if max_chars is not None and chars > max_chars:
        raise InputError(
            f"input is too long: {chars:,} chars against max_input_chars={max_chars:,}; "
            "shorten the conversation or raise max_input_chars"
        )
    tokens = -(-chars // CHARS_PER_TOKEN)
    for label, context in contexts:
        if context is not None and tokens > context:
            raise InputError(
                f"input is too long: about {tokens:,} tokens against a context of {context:,} tokens of model "
                f"{label!r}; shorten the conversation or use a model with a larger context"
            )
