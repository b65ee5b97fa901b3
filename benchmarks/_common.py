"""Helpers shared by the benchmarks: timing, medians and the final verdict line."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Awaitable, Callable


def median(values: list[float]) -> float:
    return statistics.median(values)


async def atime(call: Callable[[], Awaitable[object]]) -> float:
    """Seconds one awaited call takes."""
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


def verdict(name: str, ratio: float, target: float, *, at_most: bool = True, what: str = "ratio") -> int:
    """Print the benchmark's ratio last and return its exit status (0 when it meets the target)."""
    ok = ratio <= target if at_most else ratio >= target
    sign = "<=" if at_most else ">="
    print(f"{name}: {what} {ratio:.3f} (target {sign} {target:g}) {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def finish(statuses: list[int]) -> None:
    sys.exit(1 if any(statuses) else 0)
