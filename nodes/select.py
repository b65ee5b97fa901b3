"""`select` without position bias: the orders a judge sees the candidates in, and what its picks mean.

LLM judges favour a position: they change their verdict when candidates swap places in
46-82% of cases (arXiv 2305.17926), and here the 0.5B model named candidate 1 on 81% of
items at k=6. So the candidates are shown in an order shuffled by the run's seed, the step
and the question (recorded, so a run is reproducible and picks map back to samples), and
optionally in two orders (the second reversed), keeping the candidate both name; when the two
differ, the pick whose short answer more candidates share wins (the first pick on a tie).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Literal

from selfmoa.nodes.answers import AnswerOf

Order = Literal["shuffled", "both", "given"]


def shown_orders(count: int, order: Order, key: str) -> list[list[int]]:
    """The candidate indices in the order each judge call shows them.

    Args:
        count: Number of candidates.
        order: "given" (as drawn), "shuffled" (one call) or "both" (two calls, the second reversed).
        key: What the shuffle is seeded with (the run's seed, the step and the question).

    Example:
        >>> shown_orders(3, "given", "k"), sorted(shown_orders(5, "shuffled", "k")[0])
        ([[0, 1, 2]], [0, 1, 2, 3, 4])
        >>> first, second = shown_orders(4, "both", "k"); second == first[::-1]
        True
    """
    given = list(range(count))
    if order == "given":
        return [given]
    rng = random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
    rng.shuffle(given)
    return [given] if order == "shuffled" else [given, given[::-1]]


def settle_picks(picks: Sequence[int], candidates: Sequence[str], answer_of: AnswerOf) -> int:
    """The candidate the judge calls chose: the one they all named, else the pick whose short
    answer most candidates share (the first pick on a tie).

    Example:
        >>> from selfmoa.nodes.answers import number
        >>> settle_picks([2, 2], ["a", "b", "c"], number)
        2
        >>> settle_picks([0, 2], ["x = 4", "so 5", "it is 5"], number)  # 5 has two candidates behind it
        2
    """
    if len(set(picks)) == 1:
        return picks[0]
    answers = [answer_of(text) for text in candidates]
    support = [sum(a is not None and a == answers[p] for a in answers) for p in picks]
    return picks[support.index(max(support))]
