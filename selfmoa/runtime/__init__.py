"""The call runtime beneath the graph core: how a model string becomes a client, and how it is called.

One module per concern: `models` (the provider registry, resolution, `ModelTable`),
`policy` (attempts, time limits), `limiter` (a cap on calls in flight), `errors` (the
error classes and how a failure is described), `secrets` (keys kept out of every text),
`usage` (token counts), `inputs` (checks of a conversation before any call). Nothing
here imports the graph core (`selfmoa.graphs`, `selfmoa.nodes`, `selfmoa.prompts`).
"""

from selfmoa.runtime.errors import (
    AggregationError,
    InputError,
    ModelResolutionError,
    ProposalsFailedError,
    SelfMoAError,
    SpecError,
)
from selfmoa.runtime.limiter import CallLimiter
from selfmoa.runtime.models import (
    ModelLike,
    ModelTable,
    create_model,
    model_providers,
    register_model_provider,
    resolve_model,
    unregister_model_provider,
)
from selfmoa.runtime.policy import CallPolicy

__all__ = [
    "AggregationError",
    "CallLimiter",
    "CallPolicy",
    "InputError",
    "ModelLike",
    "ModelResolutionError",
    "ModelTable",
    "ProposalsFailedError",
    "SelfMoAError",
    "SpecError",
    "create_model",
    "model_providers",
    "register_model_provider",
    "resolve_model",
    "unregister_model_provider",
]
