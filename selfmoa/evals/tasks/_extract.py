"""Answer extraction shared by the tasks."""

from __future__ import annotations

import re

_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"


def final_number(text: str) -> str | None:
    """The final numeric answer: after the last 'Answer:' / '####' / 'answer is', else the last number.

    Example:
        >>> final_number("3 + 4 = 7 apples. Answer: $1,200.50"), final_number("so 18 left"), final_number("none")
        ('1200.50', '18', None)
    """
    text = text.replace("**", "")
    marked = re.findall(rf"(?:answer\s*(?:is|:)|####|=\s*\\boxed\{{)\s*\**\s*({_NUMBER})", text, re.IGNORECASE)
    found = marked or re.findall(_NUMBER, text)
    if not found:
        return None
    return found[-1].replace("$", "").replace(",", "").rstrip(".")


def same_number(a: str | None, b: str) -> bool:
    """Numeric equality of two answers ('18', '18.0' and '18.00' are equal)."""
    if a is None:
        return False
    try:
        return abs(float(a) - float(b.replace(",", ""))) < 1e-6
    except ValueError:
        return a.strip() == b.strip()
