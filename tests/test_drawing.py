"""Mermaid drawings of each graph, compared with committed snapshots.

Set SELFMOA_UPDATE_SNAPSHOTS=1 to rewrite the snapshots after a deliberate change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from selfmoa import create_from_spec, create_moa, create_self_moa, create_self_moa_seq
from selfmoa.testing import FakeChatModel

SNAPSHOTS = Path(__file__).parent / "snapshots"
A, B = FakeChatModel(model="a"), FakeChatModel(model="b")

GRAPHS = {
    "self_moa": lambda: create_self_moa(A, samples=6),
    "moa": lambda: create_moa([[A, B], [A, B]], aggregator=A),
    "self_moa_seq": lambda: create_self_moa_seq(A, samples=30),
    "hybrid_window": lambda: create_from_spec(
        {"layers": [[A, B], [{"model": A, "samples": 3}]], "aggregator": {"window": 6}}
    ),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_mermaid_drawing_matches_snapshot(name):
    drawing = GRAPHS[name]().compile().get_graph().draw_mermaid()
    path = SNAPSHOTS / f"{name}.mmd"
    if os.environ.get("SELFMOA_UPDATE_SNAPSHOTS") == "1":
        path.write_text(drawing)
    assert path.exists(), f"missing snapshot {path.name}; run with SELFMOA_UPDATE_SNAPSHOTS=1 once"
    assert drawing == path.read_text()


def test_drawings_name_the_nodes_of_each_method():
    self_moa = GRAPHS["self_moa"]().compile().get_graph()
    seq = GRAPHS["self_moa_seq"]().compile().get_graph()
    # One-shot and sliding-window aggregation are the same node: one step, which goes to
    # `finish`, or one per window, each followed by `collect`; every run ends in `finish`.
    for graph, after in ((self_moa, "finish"), (seq, "collect")):
        assert set(graph.nodes) == {"__start__", "prepare", "propose", "collect", "aggregate", "finish", "__end__"}
        edges = {(e.source, e.target) for e in graph.edges}
        assert {("collect", "aggregate"), ("aggregate", after), ("collect", "propose"), ("finish", "__end__")} <= edges
        assert ("aggregate", "finish" if after == "collect" else "collect") not in edges
        assert {source for source, target in edges if target == "__end__"} == {"finish"}
