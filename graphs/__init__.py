"""Graph factories: each returns an uncompiled LangGraph `StateGraph`."""

from selfmoa.graphs.builder import build_graph
from selfmoa.graphs.hybrid import create_from_spec
from selfmoa.graphs.moa import create_moa
from selfmoa.graphs.options import RunOptions
from selfmoa.graphs.schedule import window_calls, window_schedule
from selfmoa.graphs.self_moa import create_self_moa
from selfmoa.graphs.self_moa_seq import create_self_moa_seq
from selfmoa.graphs.spec import (
    AggregatorSpec,
    LayerSpec,
    MoASpec,
    ProposerSpec,
    load_spec_file,
    map_models,
    parse_spec,
)

__all__ = [
    "AggregatorSpec",
    "LayerSpec",
    "MoASpec",
    "ProposerSpec",
    "RunOptions",
    "build_graph",
    "create_from_spec",
    "create_moa",
    "create_self_moa",
    "create_self_moa_seq",
    "load_spec_file",
    "map_models",
    "parse_spec",
    "window_calls",
    "window_schedule",
]
