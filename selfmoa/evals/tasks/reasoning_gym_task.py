"""reasoning-gym `basic_arithmetic`: seeded procedural items scored by the package's verifier.

Two tasks: `rg-basic-arithmetic` (the package's default difficulty: 2-6 terms of 1-4
digits) and `rg-arithmetic` (2-3 terms of 1-2 digits), the task of the aggregation
comparison. Its difficulty was chosen by measuring, not guessed: on 40 items of another
seed (7), Qwen2.5-Coder-0.5B's greedy accuracy was 3/40 at the default difficulty, 9/40 at
2-4 terms of 1-2 digits and 15/40 (0.38) at 2-3 terms of 1-2 digits, the only one in the
30-70% band where aggregation can both help and hurt (`python benchmarks/rg_difficulty.py`,
2026-11-30; scored with the first version of `extract`, which read LaTeX-wrapped and worked
answers such as "\\boxed{34}" or "Answer: -3 + 6 = 3" as wrong, so those counts are low). The
reported items use seed 42.
"""

from __future__ import annotations

from selfmoa.evals.tasks._extract import stated_answer
from selfmoa.evals.tasks.base import Item

SEED = 42
SIZE = 200
INSTRUCTION = "Work it out, then end with a last line of the form 'Answer: <number>'."


def extract(answer: str) -> str | None:
    """The answer a reply states (`selfmoa.evals.tasks._extract.stated_answer`): what the verifier compares.

    Example:
        >>> extract("Answer: 25 - (-43) = 25 + 43 = 68."), extract("Answer: -4 - 0 * -7"), extract("it is -2")
        ('68', '-4 - 0 * -7', None)
    """
    return stated_answer(answer)


class ReasoningGymArithmetic:
    """Items from `reasoning_gym.create_dataset("basic_arithmetic", seed=42, **config)`, verified by its `score_answer`."""

    max_tokens = 160

    def __init__(self, name: str = "rg-basic-arithmetic", size: int = SIZE, **config: int) -> None:
        self.name, self.size, self.config = name, size, config
        self._dataset = None

    def _data(self):
        if self._dataset is None:
            import reasoning_gym

            self._dataset = reasoning_gym.create_dataset("basic_arithmetic", size=self.size, seed=SEED, **self.config)
        return self._dataset

    def load(self, limit: int | None = None) -> list[Item]:
        """The first `limit` items (all by default), always in the same order."""
        ds = self._data()
        n = self.size if limit is None else min(limit, self.size)
        prefix = "rg-basic_arithmetic" if not self.config else self.name
        return [Item(f"{prefix}-{SEED}-{i}", f"{ds[i]['question']}\n\n{INSTRUCTION}", i) for i in range(n)]

    @staticmethod
    def answer_of(text: str) -> str | None:
        """The final answer of a reply: what `vote` counts."""
        return extract(text)

    def score(self, item: Item, answer: str) -> bool:
        """Whether `answer` is right for `item`."""
        ds = self._data()
        return ds.score_answer(answer=extract(answer), entry=ds[item.target]) >= 1.0


TASK = ReasoningGymArithmetic()
EASY = ReasoningGymArithmetic("rg-arithmetic", size=500, min_terms=2, max_terms=3, min_digits=1, max_digits=2)
