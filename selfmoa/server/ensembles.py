"""Ensembles: requested model names to specs, and specs to cached compiled graphs."""

from __future__ import annotations

import asyncio
import fnmatch
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from langchain_core.language_models import BaseChatModel

from selfmoa.endpoints import is_loopback_host
from selfmoa.graphs.hybrid import create_from_spec
from selfmoa.graphs.spec import MoASpec, map_models, parse_spec
from selfmoa.runtime.errors import SpecError
from selfmoa.runtime.models import model_client
from selfmoa.server.config import ServerConfig
from selfmoa.server.errors import _ApiError

__all__ = ["BUILTIN_PRESETS"]

BUILTIN_PRESETS: dict[str, Callable[[str], dict[str, Any]]] = {
    # Self-MoA as in the paper: 6 samples of one model, one aggregation call (7 calls).
    "self-moa": lambda model: {"layers": [[{"model": model, "samples": 6}]]},
    # MoA-Lite shape: 2 layers of 3 proposers refining each other, then the aggregator.
    "moa": lambda model: {"layers": [[model] * 3, [model] * 3]},
    # Self-MoA-Seq with the paper's window (6 slots, 3 repeating the synthesis): 2 steps.
    "self-moa-seq": lambda model: {
        "layers": [[{"model": model, "samples": 9}]],
        "aggregator": {"window": 6, "reserved": 3},
    },
    # Self-MoA whose aggregator picks the most consistent sample and returns it verbatim
    # (universal self-consistency): the better choice for small models (see the README).
    "self-moa-select": lambda model: {"layers": [[{"model": model, "samples": 6}]], "aggregator": {"mode": "select"}},
    # Self-MoA that stops drawing once two more samples end on the same number than on any
    # other, then votes: the cheapest for questions with a short answer (see docs/eval).
    "self-moa-adaptive": lambda model: {
        "layers": [[{"model": model, "samples": 6}]],
        "aggregator": {"mode": "vote", "answer_of": "number"},
        "adaptive": {"batch": 2, "margin": 2},
    },
}
"""Built-in ensembles by name: each maps a model string to a spec dict (`MoASpec` format)."""

_MAX_GRAPHS = 64  # compiled graph variants kept (name x max_tokens), least recently used dropped


class _Ensembles:
    """Resolves model names to specs and keeps one compiled graph per (name, max_tokens)."""

    def __init__(self, config: ServerConfig, *, keyed: bool = False):
        self.config = config
        self.remote_allowed = keyed or config.dynamic_remote_without_key
        self.builtins = {name: parse_spec(make(config.default_model)) for name, make in BUILTIN_PRESETS.items()}
        self._graphs: OrderedDict[tuple[str, int | None], asyncio.Future] = OrderedDict()

    def names(self) -> list[str]:
        return list(dict.fromkeys([*self.builtins, *self.config.presets]))

    def lookup(self, name: str) -> tuple[MoASpec, bool]:
        """(spec, dynamic) of a model name (normalised, see `normalise_name`); 404 when it names no ensemble."""
        if name in self.config.presets:
            return self.config.presets[name], False
        if name in self.builtins:
            return self.builtins[name], False
        kind, sep, model = name.partition(":")
        if sep and kind in BUILTIN_PRESETS and model:
            problem = self._dynamic_problem(model)
            if problem:
                raise _ApiError(
                    404, f"model {name!r} is not available: {problem}", code="model_not_found", param="model"
                )
            try:
                return parse_spec(BUILTIN_PRESETS[kind](model)), True
            except SpecError as exc:
                raise _ApiError(404, f"model {name!r}: {exc}", code="model_not_found", param="model") from None
        known = ", ".join(self.names())
        raise _ApiError(
            404,
            f"model {name!r} does not exist; use one of {known}, or '<preset>:<model>' such as 'self-moa:local'",
            code="model_not_found",
            param="model",
        )

    def _dynamic_problem(self, model: str) -> str | None:
        # A client-chosen base URL or file would let it point the server's keys or file
        # system anywhere (an "@endpoint?key_env=" suffix sends any variable as a key).
        if any(c in model for c in "@?/\\~") or model.lower().endswith(".gguf") or os.sep in model:
            return "custom endpoints and file paths are served only as named presets of the server's config file"
        if not any(fnmatch.fnmatchcase(model, pattern) for pattern in self.config.dynamic_models):
            allowed = ", ".join(self.config.dynamic_models) or "none"
            return f"this server allows these models after '<preset>:': {allowed}"
        if not self.remote_allowed and not _is_local(model):
            # Without a key, anyone (or any web page) that reaches the server could spend a
            # paid endpoint's credit through these names; local models cost nothing.
            return (
                "this server has no SELFMOA_API_KEY, so '<preset>:<model>' names run local models only; set "
                "SELFMOA_API_KEY, or server.dynamic_remote_without_key: true in the config file, to allow other endpoints"
            )
        return None

    async def graph(self, name: str, spec: MoASpec, max_tokens: int | None) -> Any:
        """The compiled graph of an ensemble for one `max_tokens`, built once (off the event loop)."""
        key = (name, max_tokens)
        future = self._graphs.get(key)
        if future is None:
            future = asyncio.ensure_future(asyncio.to_thread(self._build, spec, max_tokens))
            self._graphs[key] = future

            def forget_failure(done: asyncio.Future) -> None:
                if (done.cancelled() or done.exception() is not None) and self._graphs.get(key) is done:
                    del self._graphs[key]  # a failed build is retried by the next request

            future.add_done_callback(forget_failure)
            while len(self._graphs) > _MAX_GRAPHS:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        # Shielded: one caller going away must not cancel a build that others wait for.
        return await asyncio.shield(future)

    def _build(self, spec: MoASpec, max_tokens: int | None) -> Any:
        # max_tokens has no run-context field, so each variant gets its own model clients,
        # made with model_client(..., max_tokens=...). One instance per model string keeps
        # the ensemble's labels (and per-model usage) as in the spec.
        made: dict[str, BaseChatModel] = {}

        def make(model: Any) -> Any:
            if not isinstance(model, str):
                return model  # a chat model instance from a programmatic config: used as is
            if model not in made:
                # Same slot count everywhere, so all presets share one llama.cpp server
                # (model_client gives slots to the embedded `local` models only).
                made[model] = model_client(model, max_tokens=max_tokens, slots=self.config.local_slots)
            return made[model]

        return create_from_spec(map_models(spec, make)).compile()


def _is_local(model: str) -> bool:
    """Whether a model string runs on this machine: the embedded models, or an endpoint on loopback.

    Example:
        >>> [_is_local(m) for m in ("local", "local:smollm2-135m", "openai:m@http://127.0.0.1:8080/v1", "openai:gpt-4o")]
        [True, True, True, False]
    """
    prefix, _, rest = model.partition(":")
    if prefix == "local":
        return True
    if prefix == "openai" and "@" in rest:
        return is_loopback_host(urlsplit(rest.partition("@")[2]).hostname or "")
    return False
