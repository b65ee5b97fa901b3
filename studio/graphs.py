"""The graphs served to LangGraph Studio by `langgraph dev` (see `langgraph.json`).

One compiled graph per method, without a checkpointer (the server brings its own):

- `self_moa`: one model, 4 samples at temperature 0.7, one aggregation call.
- `moa`: 2 layers of 2 proposers, then an aggregator.
- `self_moa_seq`: 8 samples aggregated through a sliding window of 4 references,
  2 of them the running synthesis (3 aggregator calls).
- `hybrid`: built from `hybrid.yaml` next to this file (3 samples of the default local
  model + 3 of SmolLM2-135M, sliding-window aggregation).

This is the only module of the project that compiles graphs at import time. It creates no
model client: graphs hold model *strings*, resolved on a run's first call, so the server
starts (and shows schemas and drawings) without loading any model.

Environment (read once, when the server imports this module):

- `SELFMOA_STUDIO_MODEL`: a model string that replaces every model of every graph here
  (proposers and aggregators, the hybrid spec's too), e.g. `local:smollm2-135m` for fast
  runs or `openai:qwen2.5@http://127.0.0.1:8000/v1`. Default: `local` (the embedded
  Qwen2.5-Coder-0.5B).
- `SELFMOA_STUDIO_MAX_TOKENS`: cap on the tokens each model call generates (default 256;
  0 means no cap): the graphs' `max_tokens`, which applies to every model string they
  resolve, including those a run passes in its context, and registers no provider.

Per-run settings (samples, window, reserved, temperature, model, aggregator, prompt,
seed, max_tokens) are the graphs' context schema (`selfmoa.EnsembleContext`): Studio shows them as
the assistant's context, and `client.runs.wait(..., context={"samples": 2})` sets them.
"""

from __future__ import annotations

import os
from pathlib import Path

from selfmoa import create_from_spec, create_moa, create_self_moa, create_self_moa_seq
from selfmoa.graphs.spec import MoASpec, load_spec_file, map_models, parse_spec

__all__ = ["MAX_TOKENS", "MODEL", "hybrid", "moa", "self_moa", "self_moa_seq"]

HERE = Path(__file__).resolve().parent
DEFAULT_MAX_TOKENS = 256


def _studio_model() -> str | None:
    value = os.environ.get("SELFMOA_STUDIO_MODEL", "").strip()
    return value or None


def _max_tokens() -> int | None:
    raw = os.environ.get("SELFMOA_STUDIO_MAX_TOKENS", "").strip()
    if not raw:
        return DEFAULT_MAX_TOKENS
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"SELFMOA_STUDIO_MAX_TOKENS must be an integer (0: no cap), got {raw!r}") from None
    if value < 0:
        raise ValueError(f"SELFMOA_STUDIO_MAX_TOKENS must be >= 0 (0: no cap), got {value}")
    return value or None


OVERRIDE = _studio_model()
MODEL = OVERRIDE or "local"
"""The model string of the method graphs."""
MAX_TOKENS = _max_tokens()
"""Cap on generated tokens per embedded-model call, or None."""


def _hybrid_spec(path: Path) -> MoASpec:
    spec = parse_spec(load_spec_file(path)).model_copy(update={"max_tokens": MAX_TOKENS})
    return spec if OVERRIDE is None else map_models(spec, lambda _: OVERRIDE)


# Small settings, so that a run on the embedded model finishes in Studio within a minute or two.
self_moa = create_self_moa(MODEL, samples=4, max_tokens=MAX_TOKENS).compile(name="self_moa")
moa = create_moa([[MODEL, MODEL], [MODEL, MODEL]], aggregator=MODEL, max_tokens=MAX_TOKENS).compile(name="moa")
self_moa_seq = create_self_moa_seq(MODEL, samples=8, window=4, reserved=2, max_tokens=MAX_TOKENS).compile(
    name="self_moa_seq"
)
hybrid = create_from_spec(_hybrid_spec(HERE / "hybrid.yaml")).compile(name="hybrid")
