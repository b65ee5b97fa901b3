"""What the embedded model says on stderr while it joins, checks and starts: lines and a byte bar.

Turned on or off for the whole process by :func:`set_progress`.
"""

from __future__ import annotations

import sys
from typing import Any

_progress_enabled = True


def set_progress(enabled: bool) -> None:
    """Turn the stderr lines about joining, checking and starting a model on or off (default on).

    A first run spends seconds joining and hashing hundreds of megabytes and then loading the
    model: without a word it looks hung, so this module says what it is doing, with sizes.
    """
    global _progress_enabled
    _progress_enabled = enabled


def _say(text: str, end: str = "\n") -> None:
    if _progress_enabled:
        print(f"selfmoa: {text}", end=end, file=sys.stderr, flush=True)


def _say_more(text: str) -> None:
    """The end of a line `_say(..., end="")` began."""
    if _progress_enabled:
        print(text, file=sys.stderr, flush=True)


def _mb(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


class _Bar:
    """A byte progress bar on stderr (tqdm, when installed and stderr is a terminal), else nothing."""

    def __init__(self, total: int, desc: str) -> None:
        self._bar: Any = None
        if not _progress_enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        # disable=None: no bar when stderr is not a terminal (logs, CI), where it would be noise.
        self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr, disable=None, leave=False)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
