"""Answer comparison shared by the tasks (extraction is `selfmoa.nodes.answers`, which `vote` uses too)."""

from __future__ import annotations


def same_number(a: str | None, b: str) -> bool:
    """Numeric equality of two answers ('18', '18.0' and '18.00' are equal)."""
    if a is None:
        return False
    try:
        return abs(float(a) - float(b.replace(",", ""))) < 1e-6
    except ValueError:
        return a.strip() == b.strip()
