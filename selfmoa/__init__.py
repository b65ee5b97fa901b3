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

from selfmoa.graphs import (
    AggregatorSpec,
    LayerSpec,
    MoASpec,
    ProposerSpec,
    RunOptions,
    create_from_spec,
    create_moa,
    create_self_moa,
    create_self_moa_seq,
    window_calls,
    window_schedule,
)
from selfmoa.nodes import (
    Aggregation,
    CallLimiter,
    EnsembleContext,
    AggregationError,
    InputError,
    InputState,
    ModelResolutionError,
    MoAState,
    OutputState,
    Proposal,
    ProposalsFailedError,
    SelfMoAError,
    SpecError,
    TokenUsage,
    UsageSummary,
    create_model,
    model_providers,
    register_model_provider,
    resolve_model,
    unregister_model_provider,
)
from selfmoa.chat_model import MoAChatModel
from selfmoa.endpoints import check_openai_model, openai_model
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
    "AGGREGATE_PROMPT",
    "Aggregation",
    "AggregationError",
    "AggregatorSpec",
    "CallLimiter",
    "EnsembleContext",
    "InputError",
    "InputState",
    "LayerSpec",
    "MoAChatModel",
    "MoASpec",
    "ModelResolutionError",
    "MoAState",
    "OutputState",
    "Proposal",
    "ProposalsFailedError",
    "ProposerSpec",
    "RunOptions",
    "SelfMoAError",
    "SpecError",
    "TokenUsage",
    "UsageSummary",
    "create_from_spec",
    "create_model",
    "create_moa",
    "create_self_moa",
    "create_self_moa_seq",
    "model_providers",
    "register_model_provider",
    "resolve_model",
    "unregister_model_provider",
    "window_calls",
    "window_schedule",
]
