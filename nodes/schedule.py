"""The Self-MoA-Seq sliding-window schedule.

Self-MoA-Seq (Li et al. 2025, arXiv 2502.00674, §5) aggregates any number of samples with
a bounded context: the first step aggregates the first `window` samples; every later step
aggregates the current synthesis, repeated `reserved` times to bias the aggregator towards
it, followed by the next `window - reserved` samples. The last synthesis is the answer.
"""

from __future__ import annotations

import math


def window_schedule(samples: int, window: int, reserved: int) -> list[range]:
    """Which sample indices each aggregation step adds.

    Args:
        samples: Number of samples N (at least 1).
        window: References per aggregation call W.
        reserved: Slots of each later window that repeat the synthesis R, 0 < R < W.

    Returns:
        One range of 0-based sample indices per aggregation step. Their count is
        `1 + ceil(max(0, N - W) / (W - R))`, and every sample is in exactly one range.

    Example:
        >>> [list(r) for r in window_schedule(10, 6, 3)]
        [[0, 1, 2, 3, 4, 5], [6, 7, 8], [9]]
    """
    if samples < 1 or not 0 < reserved < window:  # `AggregatorSpec` says how to fix a spec; this guards the loop
        raise ValueError(f"window_schedule needs samples >= 1 and 0 < reserved < window, got {samples, window, reserved}")
    steps = [range(0, min(samples, window))]
    while steps[-1].stop < samples:
        start = steps[-1].stop
        steps.append(range(start, min(samples, start + window - reserved)))
    return steps


def window_calls(samples: int, window: int, reserved: int) -> int:
    """Number of aggregator calls of Self-MoA-Seq: `1 + ceil(max(0, N - W) / (W - R))`.

    Example:
        >>> window_calls(30, 6, 3)
        9
    """
    return 1 + math.ceil(max(0, samples - window) / (window - reserved))
