"""Graph factories: each returns an uncompiled LangGraph `StateGraph`.

One module per concept, each imported by its own name: `spec` holds `MoASpec`, the one
validated description of an ensemble (with the paper's defaults); `plan` applies a run's
context to it; `builder` wires the nodes; `self_moa`, `self_moa_seq`, `moa` and `hybrid`
are the factories (the public ones are also `selfmoa.create_self_moa` and so on).
"""
