"""The nodes of the selfmoa graphs and the state they share.

One module per concern: `state` (typed state, plan and task payloads), `run` (the run's
state machine: prepare, collect and the routers), `propose` and `aggregate` (the
model-calling nodes), `review` (the optional human check), `answers` (short answers for
voting), `calls` (messages and call configs), `schedule` (the sliding window). How a
model is resolved and called lives beneath, in `selfmoa.runtime`.
"""

from selfmoa.nodes.review import review
from selfmoa.nodes.state import EnsembleContext, InputState, MoAState, OutputState

__all__ = ["EnsembleContext", "InputState", "MoAState", "OutputState", "review"]
