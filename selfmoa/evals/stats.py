"""Small exact statistics for paired accuracy comparisons (no scipy needed).

Every configuration of an eval answers the same items from the same samples, so two
configurations are compared item by item: only the items where exactly one of them is
right carry information, and the exact McNemar test is a two-sided binomial test on
those (McNemar 1947; exact form as in Fagerland, Lydersen & Laake 2013).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


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
