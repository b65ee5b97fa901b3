"""reasoning-gym `basic_arithmetic`: seeded procedural items scored by the package's verifier."""

from __future__ import annotations

import re

from selfmoa.evals.tasks.base import Item

SEED = 42
SIZE = 200
INSTRUCTION = "Work it out, then end with a last line of the form 'Answer: <number>'."


def extract(answer: str) -> str | None:
    """The text after the last 'Answer:', else the last number.

    Example:
        >>> extract("-5 * -6 = 30\\nAnswer: 30"), extract("it is -2")
        ('30', '-2')
    """
    text = (answer or "").replace("**", "")
    marked = re.findall(r"answer\s*(?:is|:)\s*([^\n]+)", text, re.IGNORECASE)
    if marked:
        return marked[-1].strip().rstrip(".").strip("$ ")
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text)
    return numbers[-1] if numbers else None


class ReasoningGymArithmetic:
    """Items from `reasoning_gym.create_dataset("basic_arithmetic", seed=42)`, verified by its `score_answer`."""

    name = "rg-basic-arithmetic"
    max_tokens = 160

    def __init__(self) -> None:
        self._dataset = None

    def _data(self):
        if self._dataset is None:
            import reasoning_gym

            self._dataset = reasoning_gym.create_dataset("basic_arithmetic", size=SIZE, seed=SEED)
        return self._dataset

    def load(self, limit: int | None = None) -> list[Item]:
        ds = self._data()
        n = SIZE if limit is None else min(limit, SIZE)
        return [Item(f"rg-basic_arithmetic-{SEED}-{i}", f"{ds[i]['question']}\n\n{INSTRUCTION}", i) for i in range(n)]

    def score(self, item: Item, answer: str) -> bool:
        ds = self._data()
        return ds.score_answer(answer=extract(answer), entry=ds[item.target]) >= 1.0


TASK = ReasoningGymArithmetic()
