"""Small statistics for paired accuracy comparisons and for agreement as a signal (no scipy needed).

Every configuration of an eval answers the same items from the same samples, so two
configurations are compared item by item: only the items where exactly one of them is
right carry information, and the exact McNemar test is a two-sided binomial test on
those (McNemar 1947; exact form as in Fagerland, Lydersen & Laake 2013). A report makes many
such tests, so `holm` adjusts their p-values for multiple comparisons; `auroc` and
`bootstrap_interval` measure how well a score (the samples' agreement) predicts correctness.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def wilson(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (Wilson 1927); (0, 1) for n = 0.

    Example:
        >>> [round(x, 3) for x in wilson(12, 20)]
        [0.387, 0.781]
    """
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict[str, float | int]:
    """Exact two-sided McNemar test of paired outcomes `a` and `b` (same items, same order).

    Returns the discordant counts (`a_only`: items only `a` got right, `b_only`: only `b`)
    and the p-value: twice the smaller binomial tail of Binomial(a_only + b_only, 1/2),
    capped at 1. No discordant item gives p = 1.

    Example:
        >>> mcnemar_exact([True] * 9 + [False], [False] * 8 + [True, True])
        {'a_only': 8, 'b_only': 1, 'p': 0.0390625}
    """
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same items, got {len(a)} and {len(b)}")
    a_only = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    b_only = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n = a_only + b_only
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2**n if n else 0.5
    return {"a_only": a_only, "b_only": b_only, "p": min(1.0, 2 * tail)}


def paired_difference(a_only: int, b_only: int, n: int, z: float = 1.959963984540054) -> list[float]:
    """Accuracy of a minus accuracy of b on the same n items, with its 95% interval: [d, lo, hi].

    The Wald interval for paired proportions, d ± z·sqrt(a_only + b_only − n·d²)/n, where d is
    (a_only − b_only)/n; it is what "the accuracy difference lies within ±0.05" is checked on.

    Example:
        >>> [round(x, 3) for x in paired_difference(12, 4, 100)]  # 0.08 ± 1.96·sqrt(16 − 0.64)/100
        [0.08, 0.003, 0.157]
    """
    if n == 0:
        return [0.0, 0.0, 0.0]
    d = (a_only - b_only) / n
    half = z * math.sqrt(max(a_only + b_only - n * d * d, 0.0)) / n
    return [d, d - half, d + half]


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (Holm 1979), in the order given.

    The i-th smallest of m p-values is multiplied by m - i + 1, the products are made
    non-decreasing in that order and capped at 1. Calling significant every test whose
    adjusted p is below alpha keeps the chance of any false positive in the family at most
    alpha, whatever the dependence between the tests.

    Example:
        >>> holm([0.01, 0.04, 0.03, 0.005])
        [0.03, 0.06, 0.06, 0.02]
        >>> holm([0.5, 0.9]), holm([])
        ([1.0, 1.0], [])
    """
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: pvalues[j])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve of `scores` as a predictor of `labels`; None without both classes.

    The probability that a random positive scores higher than a random negative, a tie
    counting one half (the Mann–Whitney U over positives × negatives): 1 ranks every
    positive first, 0.5 is chance.

    Example:
        >>> auroc([0.9, 0.8, 0.5, 0.5, 0.2], [True, True, False, True, False])  # 5.5 of 6 pairs
        0.9166666666666666
        >>> auroc([1, 1], [True, False]), auroc([1, 0], [True, True])
        (0.5, None)
    """
    if len(scores) != len(labels):
        raise ValueError(f"auroc needs one label per score, got {len(scores)} and {len(labels)}")
    positives = Counter(s for s, y in zip(scores, labels, strict=True) if y)
    negatives = Counter(s for s, y in zip(scores, labels, strict=True) if not y)
    n_pos, n_neg = sum(positives.values()), sum(negatives.values())
    if not n_pos or not n_neg:
        return None
    wins, below = 0.0, 0
    for s in sorted(set(positives) | set(negatives)):
        wins += positives[s] * (below + negatives[s] / 2)
        below += negatives[s]
    return wins / (n_pos * n_neg)


def bootstrap_interval(
    statistic: Callable[[list[T]], float | None], items: Sequence[T], *, reps: int = 2000, seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `statistic` over resamples of `items` (with replacement).

    Each resample draws len(items) items, so paired figures (a score and its label) stay
    together. Resamples on which the statistic is undefined (None) are left out; None when
    more than half are. Fixed `seed`: the same items give the same interval.

    Example:
        >>> lo, hi = bootstrap_interval(lambda xs: sum(xs) / len(xs), [0, 1] * 50)
        >>> 0.38 < lo < 0.45 < 0.55 < hi < 0.62
        True
        >>> bootstrap_interval(lambda xs: None, [1, 2]) is None
        True
    """
    if not items:
        return None
    rng = random.Random(seed)
    values = sorted(v for _ in range(reps) if (v := statistic(rng.choices(items, k=len(items)))) is not None)
    if 2 * len(values) < reps:
        return None
    tail = (1 - level) / 2
    return values[round(tail * (len(values) - 1))], values[round((1 - tail) * (len(values) - 1))]
