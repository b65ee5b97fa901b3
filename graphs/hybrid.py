"""Hybrid ensembles declared as data: `create_from_spec`."""

from __future__ import annotations

from pathlib import Path

from langgraph.graph import StateGraph

from selfmoa.graphs.builder import build_graph
from selfmoa.graphs.spec import MoASpec, parse_spec


def create_from_spec(spec: MoASpec | dict | str | Path) -> StateGraph:
    """Build the graph of any ensemble declared as data.

    Args:
        spec: A `MoASpec`, a dict of the same shape, or a path to a YAML or JSON file.
            Per layer it lists the proposer models and samples of each; `aggregator` says
            which model aggregates, how (`mode`: synthesize, select or vote) and
            whether in one call or through a sliding window (`window`).

    Returns:
        An uncompiled `StateGraph`.

    Raises:
        SpecError: One line naming the bad key or value (unknown key, bad number,
            unreadable file).

    Example:
        >>> from selfmoa import create_from_spec
        >>> from selfmoa.testing import FakeChatModel
        >>> a, b = FakeChatModel(model="a"), FakeChatModel(model="b")
        >>> spec = {"layers": [[{"model": a, "samples": 3}, {"model": b, "samples": 3}]],
        ...         "aggregator": {"model": a, "window": 4, "reserved": 2}}
        >>> out = create_from_spec(spec).compile().invoke({"messages": "Hi"})
        >>> [p["model"] for p in out["proposals"]], len(out["aggregations"])
        (['a', 'a', 'a', 'b', 'b', 'b'], 2)
    """
    return build_graph(parse_spec(spec))
