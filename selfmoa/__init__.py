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
from selfmoa.graphs.hybrid import create_from_spec
from selfmoa.graphs.moa import create_moa
from selfmoa.graphs.self_moa import create_self_moa
from selfmoa.graphs.self_moa_seq import create_self_moa_seq
from selfmoa.graphs.spec import MoASpec
from selfmoa.nodes import EnsembleContext, OutputState
from selfmoa.prompts import AGGREGATE_PROMPT
from selfmoa.runtime.errors import (
    AggregationError,
    InputError,
    ModelResolutionError,
    ProposalsFailedError,
    SelfMoAError,
    SpecError,
)
from selfmoa.runtime.limiter import CallLimiter
from selfmoa.runtime.models import create_model, model_providers, register_model_provider, unregister_model_provider

__version__ = "0.1.0"


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
