"""How far the samples agree: the counts of their short answers, the share behind the answer,
and the adaptive-sampling rule that stops drawing once one answer leads.

Majority agreement as a confidence and a stopping rule comes from self-consistency's
successors: Adaptive-Consistency (arXiv 2305.11860) and Early-Stopping Self-Consistency
(arXiv 2401.10480) stop sampling once the votes settle; SLM-MUX (arXiv 2510.05077) uses the
vote share as confidence. Short answers come from the spec's `answer_of`
(`selfmoa.nodes.answers`). Pure functions, property-tested in tests/test_agreement.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from selfmoa.nodes.answers import AnswerOf
from selfmoa.nodes.state import Agreement


def count_answers(counts: dict[str, int], texts: Sequence[str], answer_of: AnswerOf) -> dict[str, int]:
    """`counts` with the short answers of `texts` added (texts without one are not counted).

    Example:
        >>> from selfmoa.nodes.answers import number
        >>> count_answers({"4": 1}, ["so 5", "it is 4", "no idea"], number)
        {'4': 2, '5': 1}
    """
    out = dict(counts)
    for text in texts:
        answer = answer_of(text)
        if answer is not None:
            out[answer] = out.get(answer, 0) + 1
    return out


def lead(counts: dict[str, int]) -> int:
    """How many more samples the leading short answer has than the second (its count if alone).

    Example:
        >>> lead({"4": 3, "5": 1}), lead({"4": 2}), lead({})
        (2, 2, 0)
    """
    top = sorted(counts.values(), reverse=True)[:2] + [0, 0]
    return top[0] - top[1]


def adaptive_batches(samples: int, batch: int) -> list[range]:
    """The sample indices drawn together, batch by batch, for adaptive sampling.

    Example:
        >>> [list(r) for r in adaptive_batches(5, 2)]
        [[0, 1], [2, 3], [4]]
    """
    return [range(i, min(i + batch, samples)) for i in range(0, samples, batch)]


def agreement(counts: dict[str, int], samples: int, answer: str, answer_of: AnswerOf) -> Agreement | None:
    """How far `samples` successful samples agree with `answer`: the share whose short answer is its.

    `counts` are the short answers of those samples (`count_answers`); a sample without a
    short answer counts in `samples` but agrees with nothing. None when there is nothing to
    compare (fewer than two samples).

    Example:
        >>> from selfmoa.nodes.answers import number
        >>> agreement({"5": 2, "4": 1}, 4, "Answer: 5", number)
        {'share': 0.5, 'answer': '5', 'counts': {'5': 2, '4': 1}, 'samples': 4}
        >>> agreement({"5": 2, "4": 1}, 3, "It is 7", number)["share"] is None
        True
    """
    if samples < 2:
        return None
    short = answer_of(answer)
    share = counts[short] / samples if short in counts else None
    ordered = dict(sorted(counts.items(), key=lambda item: -item[1]))
    return Agreement(share=share, answer=short, counts=ordered, samples=samples)
