"""selfmoa: Mixture-of-Agents, Self-MoA and Self-MoA-Seq as LangGraph graphs.

Each factory returns an uncompiled LangGraph `StateGraph`: compile it with any
checkpointer, run it with `invoke`/`ainvoke`/`stream`/`astream`/`batch`, or add it as a
subgraph node of another agent.

Example:
    >>> from selfmoa import create_self_moa
    >>> from selfmoa.testing import FakeChatModel
    >>> graph = create_self_moa(FakeChatModel(), samples=3).compile()
    >>> graph.invoke({"messages": [("user", "Name a prime.")]})["answer"].startswith("fake")
    True
"""

from selfmoa.chat_model import MoAChatModel
from selfmoa.endpoints import check_openai_model, openai_model
from selfmoa.graphs import MoASpec, create_from_spec, create_moa, create_self_moa, create_self_moa_seq
from selfmoa.nodes import (
    AggregationError,
    CallLimiter,
    EnsembleContext,
    InputError,
    ModelResolutionError,
    OutputState,
    ProposalsFailedError,
    SelfMoAError,
    SpecError,
    create_model,
    model_providers,
    register_model_provider,
    unregister_model_provider,
)
from selfmoa.prompts import AGGREGATE_PROMPT

__version__ = "0.1.0"


def _local_provider(name: str, **kwargs):
    # "local" and "local:NAME" resolve to the embedded llama.cpp model; imported lazily
    # so that importing selfmoa starts nothing.
    from selfmoa.local import DEFAULT_LOCAL_MODEL, local_chat_model

    return local_chat_model(name or DEFAULT_LOCAL_MODEL, **kwargs)


register_model_provider("local", _local_provider)
register_model_provider("openai", openai_model, check=check_openai_model)

__all__ = [
    # Graph factories, and the spec they all build from
    "create_self_moa",
    "create_self_moa_seq",
    "create_moa",
    "create_from_spec",
    "MoASpec",
    # Running: per-run settings, a shared call cap, the result's type, a LangChain chat model
    "EnsembleContext",
    "CallLimiter",
    "OutputState",
    "MoAChatModel",
    "AGGREGATE_PROMPT",
    # Models
    "create_model",
    "register_model_provider",
    "unregister_model_provider",
    "model_providers",
    # Errors
    "SelfMoAError",
    "SpecError",
    "InputError",
    "ModelResolutionError",
    "ProposalsFailedError",
    "AggregationError",
]

# Names that left the top-level API; each stays importable from its own module (given
# here), and from `selfmoa` for code written against the earlier, larger surface.
_MOVED = {
    "Aggregation": "selfmoa.nodes.state",
    "AggregatorSpec": "selfmoa.graphs.spec",
    "InputState": "selfmoa.nodes.state",
    "LayerSpec": "selfmoa.graphs.spec",
    "MoAState": "selfmoa.nodes.state",
    "Proposal": "selfmoa.nodes.state",
    "ProposerSpec": "selfmoa.graphs.spec",
    "RunOptions": "selfmoa.graphs.options",
    "TokenUsage": "selfmoa.nodes.state",
    "UsageSummary": "selfmoa.nodes.state",
    "resolve_model": "selfmoa.nodes.models",
    "window_calls": "selfmoa.graphs.schedule",
    "window_schedule": "selfmoa.graphs.schedule",
}


def __getattr__(name: str) -> object:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'selfmoa' has no attribute {name!r}")
