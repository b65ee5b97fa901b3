"""Nodes, state and model plumbing of the selfmoa graphs."""

from selfmoa.nodes.aggregate import make_aggregate
from selfmoa.nodes.errors import (
    AggregationError,
    InputError,
    ModelResolutionError,
    ProposalsFailedError,
    SelfMoAError,
    SpecError,
)
from selfmoa.nodes.limiter import CallLimiter
from selfmoa.nodes.models import (
    CallPolicy,
    ModelLike,
    ModelTable,
    create_model,
    model_providers,
    register_model_provider,
    resolve_model,
    unregister_model_provider,
)
from selfmoa.nodes.propose import make_propose
from selfmoa.nodes.review import apply_review, review
from selfmoa.nodes.state import (
    AggregateTask,
    Aggregation,
    EnsembleContext,
    InputState,
    MoAState,
    OutputState,
    Proposal,
    ProposeTask,
    TokenUsage,
    UsageSummary,
)

__all__ = [
    "AggregateTask",
    "Aggregation",
    "AggregationError",
    "CallLimiter",
    "CallPolicy",
    "EnsembleContext",
    "InputError",
    "InputState",
    "ModelLike",
    "ModelResolutionError",
    "ModelTable",
    "MoAState",
    "OutputState",
    "Proposal",
    "ProposalsFailedError",
    "ProposeTask",
    "SelfMoAError",
    "SpecError",
    "TokenUsage",
    "UsageSummary",
    "apply_review",
    "create_model",
    "make_aggregate",
    "make_propose",
    "model_providers",
    "register_model_provider",
    "resolve_model",
    "review",
    "unregister_model_provider",
]
