"""Graph factories: each returns an uncompiled LangGraph `StateGraph`.

`spec` holds `MoASpec`, the one validated description of an ensemble; `plan` applies a
run's context to it; `builder` wires the nodes; `self_moa`, `self_moa_seq`, `moa` and
`hybrid` are the factories (the Self-MoA-Seq window arithmetic is `selfmoa.nodes.schedule`).
"""

from selfmoa.graphs.builder import build_graph
from selfmoa.graphs.hybrid import create_from_spec
from selfmoa.graphs.moa import create_moa
from selfmoa.graphs.self_moa import create_self_moa
from selfmoa.graphs.self_moa_seq import create_self_moa_seq
from selfmoa.graphs.spec import MoASpec, load_spec_file, map_models, parse_spec

__all__ = [
    "MoASpec",
    "build_graph",
    "create_from_spec",
    "create_moa",
    "create_self_moa",
    "create_self_moa_seq",
    "load_spec_file",
    "map_models",
    "parse_spec",
]
