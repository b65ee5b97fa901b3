"""Nodes, state and model plumbing of the selfmoa graphs.

One module per concern: `state` (typed state, plan and task payloads), `run` (the run's
state machine: prepare, collect, route), `propose` and `aggregate` (the model-calling
nodes), `review` (the optional human check), `models` (the provider registry, model
resolution and usage), `policy` (retries and time limits of each call), `errors` (the
errors and how a failed call is described), `secrets` (keys kept out of every text),
`answers`, `inputs`, `calls`, `limiter`.
The names below are those the graphs and the rest of the package use.
"""

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
    ModelLike,
    ModelTable,
    create_model,
    model_providers,
    register_model_provider,
    resolve_model,
    unregister_model_provider,
)
from selfmoa.nodes.policy import CallPolicy
from selfmoa.nodes.review import review
from selfmoa.nodes.state import EnsembleContext, InputState, MoAState, OutputState

__all__ = [
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
    "ProposalsFailedError",
    "SelfMoAError",
    "SpecError",
    "create_model",
    "model_providers",
    "register_model_provider",
    "resolve_model",
    "review",
    "unregister_model_provider",
]
