"""Nodes, state and model plumbing of the selfmoa graphs."""

from selfmoa.nodes.aggregate import make_aggregate, make_aggregate_window
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
    register_model_provider,
    resolve_model,
)
from selfmoa.nodes.propose import make_propose
from selfmoa.nodes.review import apply_review, review
from selfmoa.nodes.state import (
    Aggregation,
    EnsembleContext,
    InputState,
    MoAState,
    OutputState,
    Proposal,
    ProposeTask,
    TokenUsage,
    UsageSummary,
    WindowTask,
)

__all__ = [
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
    "WindowTask",
    "apply_review",
    "create_model",
    "make_aggregate",
    "make_aggregate_window",
    "make_propose",
    "register_model_provider",
    "resolve_model",
    "review",
]
