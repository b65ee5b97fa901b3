"""The task plug-in interface: load items, build the prompt, score an answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Item:
    """One benchmark item: a stable id, the prompt text, and what the scorer needs."""

    id: str
    prompt: str
    target: Any
    meta: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    """A benchmark task. Adding one is one module in `selfmoa.evals.tasks` with a `TASK`."""

    name: str
    max_tokens: int
    """Default reply budget for this task (short for multiple choice)."""

    def load(self, limit: int | None = None) -> list[Item]:
        """The first `limit` items, always in the same order."""
        ...

    def score(self, item: Item, answer: str) -> bool:
        """Whether `answer` is correct for `item`."""
        ...
