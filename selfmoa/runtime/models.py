"""Turning model names into chat models: the provider registry, resolution and usage.

A model is either a LangChain chat model instance or a string. Strings are resolved lazily,
on first use, so that building a graph creates no client and reads no API key: keys are
read by the client from the environment when it is created, and never enter graph state.
How a model is called (retries, time limit) is `selfmoa.runtime.policy`; how a failure is
described, `selfmoa.runtime.errors`; which key values are hidden, `selfmoa.runtime.secrets`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from langchain_core.language_models import BaseChatModel

from selfmoa.runtime.errors import ModelResolutionError, SelfMoAError
from selfmoa.runtime.secrets import SECRET_NAME, redact, remember_model_secrets, remember_secret

ModelLike = str | BaseChatModel
"""A chat model instance, or a string such as `"openai:gpt-4o-mini"` or `"local"`."""

_PROVIDERS: dict[str, _Provider] = {}
_CACHE: dict[tuple[str, int | None], BaseChatModel] = {}
# The built-in prefixes, imported on their first use rather than registered on import, so
# that importing selfmoa registers nothing; a registered provider of the same prefix wins.
_BUILTIN = {
    "local": ("selfmoa.local:local_provider", None),
    "openai": ("selfmoa.endpoints:openai_model", "selfmoa.endpoints:check_openai_model"),
}
_CACHE_LOCK = threading.RLock()  # a provider may register another while it is resolved


class _Provider(NamedTuple):
    factory: Callable[..., BaseChatModel]
    check: Callable[[str, str], None] | None


def register_model_provider(
    prefix: str, factory: Callable[..., BaseChatModel], *, check: Callable[[str, str], None] | None = None
) -> None:
    """Teach `resolve_model` and `create_model` a new model-string prefix.

    Args:
        prefix: The part before the first colon, for example `"local"`.
        factory: Called as `factory(rest, **kwargs)` with the rest of the string (empty
            when there is none) and any keyword arguments given to `create_model`.
        check: Called as `check(model_string, rest)` when a graph is built, to refuse an
            incomplete string there (raising `ModelResolutionError`) rather than at the
            first call; None: any rest is accepted.

    Example:
        >>> from selfmoa.testing import FakeChatModel
        >>> register_model_provider("fake", lambda name, **kw: FakeChatModel(model=name or "fake", **kw))
        >>> resolve_model("fake:demo").model
        'demo'
        >>> unregister_model_provider("fake")
    """
    with _CACHE_LOCK:
        _PROVIDERS[prefix] = _Provider(factory, check)
        _forget(prefix)


def unregister_model_provider(prefix: str) -> None:
    """Forget a registered prefix, and the models resolved through it; unknown prefixes are ignored."""
    with _CACHE_LOCK:
        _PROVIDERS.pop(prefix, None)
        _forget(prefix)


@contextlib.contextmanager
def model_providers(providers: dict[str, Callable[..., BaseChatModel]]) -> Iterator[None]:
    """Register providers for the duration of a `with` block, then restore the ones they replaced.

    Example:
        >>> from selfmoa.testing import FakeChatModel
        >>> with model_providers({"tmp": lambda name, **kw: FakeChatModel(model=name)}):
        ...     resolve_model("tmp:x").model
        'x'
        >>> "tmp" in _PROVIDERS
        False
    """
    with _CACHE_LOCK:
        before = {prefix: _PROVIDERS.get(prefix) for prefix in providers}
    for prefix, factory in providers.items():
        register_model_provider(prefix, factory)
    try:
        yield
    finally:
        for prefix, provider in before.items():
            if provider is None:
                unregister_model_provider(prefix)
            else:
                register_model_provider(prefix, provider.factory, check=provider.check)


def _provider(prefix: str) -> _Provider | None:
    """The provider of a prefix: a registered one, else a built-in one (imported now), else None."""
    if prefix in _PROVIDERS or prefix not in _BUILTIN:
        return _PROVIDERS.get(prefix)
    return _Provider(*(_load(path) if path else None for path in _BUILTIN[prefix]))  # type: ignore[arg-type]


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _forget(prefix: str) -> None:
    # Resolved models of a prefix whose provider changed would otherwise outlive it.
    for key in [k for k in _CACHE if k[0].partition(":")[0] == prefix]:
        del _CACHE[key]


def resolve_model(spec: ModelLike, *, max_tokens: int | None = None) -> BaseChatModel:
    """Return the chat model for a model instance or string, creating it once per process.

    See `create_model` for the string forms. Graphs call this lazily, on a model's first
    call, so that building a graph creates no client and reads no key.

    Args:
        spec: A chat model (returned as is) or a model string.
        max_tokens: Most tokens per reply of a client made from a string (one client per
            string and `max_tokens`); None: the model's default. An instance keeps its own.

    Raises:
        ModelResolutionError: One line saying what is wrong and how to fix it.

    Example:
        >>> from selfmoa.testing import FakeChatModel
        >>> m = FakeChatModel()
        >>> resolve_model(m) is m
        True
    """
    if isinstance(spec, BaseChatModel):
        return spec
    key = (check_model_string(spec), max_tokens)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = model_client(key[0], max_tokens=max_tokens)
        return _CACHE[key]


def model_client(
    spec: str, *, max_tokens: int | None = None, slots: int | None = None, threads: int | None = None
) -> BaseChatModel:
    """A new client for a model string with the settings a caller gives it: the one place that makes one.

    `max_tokens` applies to every model; `slots` (parallel requests) and `threads` (CPU
    threads) apply to the embedded `local` models only and are ignored for the others.

    Example:
        >>> from selfmoa.testing import FakeChatModel
        >>> with model_providers({"demo": lambda name, **kw: FakeChatModel(model=f"{name} {sorted(kw)}")}):
        ...     model_client("demo:m", max_tokens=7, slots=4).model  # slots: for embedded models only
        "m ['max_tokens']"
    """
    kwargs: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
    if spec.strip().partition(":")[0] == "local":
        kwargs.update({k: v for k, v in (("slots", slots), ("threads", threads)) if v is not None})
    return create_model(spec, **kwargs)


def create_model(spec: str, **kwargs: Any) -> BaseChatModel:
    """Create a new chat model from a model string.

    Forms:
        - a registered prefix: `"openai:MODEL"` and `"openai:MODEL@BASE_URL"` (see
          `selfmoa.endpoints`), `"local"` or `"local:qwen2.5-coder-1.5b"` (see `selfmoa.local`),
          or any prefix given to `register_model_provider`.
        - any other `"provider:model"`, through LangChain's `init_chat_model`.

    Args:
        spec: The model string.
        **kwargs: Passed to the model's constructor (e.g. `max_tokens`).

    Raises:
        ModelResolutionError: Unknown provider, missing package or missing key.

    Example:
        >>> from selfmoa.testing import FakeChatModel
        >>> with model_providers({"demo": lambda name, **kw: FakeChatModel(model=name, **kw)}):
        ...     create_model("demo:m", latency=0.5).latency
        0.5
    """
    spec = check_model_string(spec)
    for name, value in kwargs.items():
        if SECRET_NAME.search(name):
            remember_secret(value)  # an explicit api_key=... never shows in an error either
    prefix, _, rest = spec.partition(":")
    provider = _provider(prefix)
    try:
        if provider is not None:
            return provider.factory(rest, **kwargs)
    except ModelResolutionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the client's own error, made one line
        raise _resolution_error(spec, exc) from None
    try:
        from langchain.chat_models import init_chat_model
    except ImportError:
        raise ModelResolutionError(
            f"model {spec!r} needs LangChain's init_chat_model: run `pip install 'selfmoa[providers]'` and the "
            "provider's package (e.g. langchain-anthropic), or pass a chat model instance"
        ) from None
    try:
        return init_chat_model(spec, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the provider's own error, made one line
        raise _resolution_error(spec, exc) from None


def check_model_string(spec: Any) -> str:
    """Check that a model string is complete, without creating anything; return it stripped.

    Called when a graph is built, so that `"openai:"` or `"openai:@http://host/v1"` fail
    there, in one line naming the missing part, rather than at the first call.

    Raises:
        ModelResolutionError: The string is empty or misses a part.

    Example:
        >>> check_model_string(" openai:gpt-4o-mini ")
        'openai:gpt-4o-mini'
        >>> check_model_string("openai:")
        Traceback (most recent call last):
        ...
        selfmoa.runtime.errors.ModelResolutionError: model 'openai:' names no model after 'openai:'; write 'openai:MODEL', e.g. 'openai:gpt-4o-mini'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelResolutionError(
            f"model must be a LangChain chat model or a non-empty string like 'openai:gpt-4o-mini', got {spec!r}"
        )
    spec = spec.strip()
    prefix, colon, rest = spec.partition(":")
    if not colon:
        return spec  # a registered prefix alone ("local") or a name init_chat_model infers a provider for
    if not prefix.strip():
        raise ModelResolutionError(
            f"model {spec!r} names no provider before ':'; write 'provider:model', e.g. 'openai:gpt-4o-mini'"
        )
    if not rest.strip():
        example = "'local' or 'local:NAME'" if prefix == "local" else f"'{prefix}:MODEL', e.g. 'openai:gpt-4o-mini'"
        raise ModelResolutionError(f"model {spec!r} names no model after '{prefix}:'; write {example}")
    provider = _provider(prefix)
    if provider is not None and provider.check is not None:
        provider.check(spec, rest)
    return spec


def _resolution_error(spec: str, exc: Exception) -> ModelResolutionError:
    text = redact(" ".join(str(exc).split()))
    if "api_key" in text or "API key" in text or "api key" in text.lower():
        var = "OPENAI_API_KEY" if spec.startswith("openai:") else "the provider's API key variable"
        return ModelResolutionError(f"model {spec!r} needs an API key: set {var} (it is read at call time)")
    first = text[:200] or type(exc).__name__
    if isinstance(exc, SelfMoAError):  # a provider of selfmoa's own already says how to fix it
        return ModelResolutionError(f"cannot create model {spec!r}: {text}")
    return ModelResolutionError(
        f"cannot create model {spec!r}: {first} (use 'provider:model', e.g. 'openai:gpt-4o-mini', or 'local')"
    )


def model_label(model: ModelLike) -> str:
    """A short, readable name for a model, used in proposals and usage.

    Example:
        >>> model_label("openai:gpt-4o-mini")
        'openai:gpt-4o-mini'
    """
    if isinstance(model, str):
        return model.strip()
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return model.get_name()


class ModelTable:
    """The models of one graph, by label.

    Instances stay in this table (in the graph's closures), never in graph state or
    checkpoints; `Send` payloads and state carry only the labels.
    """

    def __init__(self) -> None:
        self._models: dict[str, ModelLike] = {}

    def add(self, model: ModelLike) -> str:
        """Register a model and return its label (distinct instances get distinct labels)."""
        if not isinstance(model, (str, BaseChatModel)):
            raise ModelResolutionError(
                f"model must be a LangChain chat model or a string like 'openai:gpt-4o-mini', got {type(model).__name__}"
            )
        if isinstance(model, str):
            check_model_string(model)  # at build time: an incomplete string fails here, not at the first call
        else:
            remember_model_secrets(model)
        base = model_label(model)
        label, n = base, 1
        while label in self._models and not _same(self._models[label], model):
            n += 1
            label = f"{base}#{n}"
        self._models[label] = model
        return label

    def get(self, label: str, max_tokens: int | None = None) -> BaseChatModel:
        """Return the chat model for a label, resolving model strings on first use (with `max_tokens`)."""
        return resolve_model(self._models.get(label, label), max_tokens=max_tokens)

    async def aget(self, label: str, max_tokens: int | None = None) -> BaseChatModel:
        """`get` for async code: a first resolution runs in a worker thread.

        Creating a model can block for long (the embedded model joins and hashes its
        weights and starts a server), which must not stall the event loop; async hosts
        such as `langgraph dev` even reject blocking calls on it.
        """
        spec = self._models.get(label, label)
        if isinstance(spec, BaseChatModel):
            return spec
        cached = _CACHE.get((spec.strip(), max_tokens))
        return cached if cached is not None else await asyncio.to_thread(resolve_model, spec, max_tokens=max_tokens)


def context_tokens(model: BaseChatModel) -> int | None:
    """The most input tokens a chat model takes, when known: its LangChain `profile`.

    The embedded model sets it to its llama.cpp slot size; LangChain fills it in for many
    hosted models. None when unknown.

    Example:
        >>> from selfmoa.testing import FakeChatModel
        >>> context_tokens(FakeChatModel(profile={"max_input_tokens": 4096}))
        4096
    """
    profile = getattr(model, "profile", None) or {}
    value = profile.get("max_input_tokens") if isinstance(profile, dict) else None
    return value if isinstance(value, int) and value > 0 else None


def _same(a: ModelLike, b: ModelLike) -> bool:
    return a == b if isinstance(a, str) and isinstance(b, str) else a is b
