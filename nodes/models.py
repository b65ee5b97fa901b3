"""Turning model names into chat models, and calling them with retries and a time limit.

A model is either a LangChain chat model instance or a string. Strings are resolved lazily,
on first use, so that building a graph creates no client and reads no API key: keys are
read by the client from the environment when it is created, and never enter graph state.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig
from pydantic import SecretStr

from selfmoa.nodes.errors import ModelResolutionError, SelfMoAError
from selfmoa.nodes.limiter import CallLimiter
from selfmoa.nodes.state import TokenUsage

T = TypeVar("T")

ModelLike = str | BaseChatModel
"""A chat model instance, or a string such as `"openai:gpt-4o-mini"` or `"local"`."""

_PROVIDERS: dict[str, _Provider] = {}
_CACHE: dict[str, BaseChatModel] = {}
_CACHE_LOCK = threading.RLock()  # a provider may register another while it is resolved

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL", re.I)
# Key shapes redacted even when their value is unknown: OpenAI-style keys, bearer tokens,
# and keys in URL query strings (some providers take them there).
_KEY_SHAPES = re.compile(
    r"(?P<keep>\bBearer\s+|[?&](?:key|api_key|apikey|api-key|token|access_token)=)[^&\s\"',;]{8,}"
    r"|\bsk-[A-Za-z0-9_\-]{8,}",
    re.I,
)
_DUMMY_KEYS = frozenset({"unused", "not-needed", "EMPTY", "none", "sk-no-key-required"})
_KNOWN_SECRETS: set[str] = set()  # key values the resolver handed to a client in this process
_MIN_SECRET = 8  # shorter values would redact ordinary words


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
        >>> "tmp" in registered_model_providers()
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


def registered_model_providers() -> list[str]:
    """The registered model-string prefixes."""
    return sorted(_PROVIDERS)


def _forget(prefix: str) -> None:
    # Resolved models of a prefix whose provider changed would otherwise outlive it.
    for spec in [s for s in _CACHE if s.partition(":")[0] == prefix]:
        del _CACHE[spec]


def resolve_model(spec: ModelLike) -> BaseChatModel:
    """Return the chat model for a model instance or string, creating it once per process.

    See `create_model` for the string forms. Graphs call this lazily, on a model's first
    call, so that building a graph creates no client and reads no key.

    Args:
        spec: A chat model (returned as is) or a model string.

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
    check_model_string(spec)
    with _CACHE_LOCK:
        if spec not in _CACHE:
            _CACHE[spec] = create_model(spec)
        return _CACHE[spec]


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
        if _SECRET_NAME.search(name):
            remember_secret(value)  # an explicit api_key=... never shows in an error either
    prefix, _, rest = spec.partition(":")
    try:
        if prefix in _PROVIDERS:
            return _PROVIDERS[prefix].factory(rest, **kwargs)
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
        selfmoa.nodes.errors.ModelResolutionError: model 'openai:' names no model after 'openai:'; write 'openai:MODEL', e.g. 'openai:gpt-4o-mini'
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
    provider = _PROVIDERS.get(prefix)
    if provider is not None and provider.check is not None:
        provider.check(spec, rest)
    return spec


def remember_secret(value: Any) -> None:
    """Add a key value to those that `redact` removes from every error text.

    The resolver calls it for each key it hands to a client; call it for keys your own
    code gives to chat models that selfmoa does not create.

    Example:
        >>> remember_secret("my-secret-value-123")
        >>> redact("rejected key my-secret-value-123")
        'rejected key ***'
    """
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, str) and len(value) >= _MIN_SECRET and value not in _DUMMY_KEYS:
        _KNOWN_SECRETS.add(value)


def redact(text: str) -> str:
    """`text` without API keys: known key values, secret-named environment variables, key shapes.

    Known values are the keys the resolver handed to clients (`OPENAI_API_KEY`, `?key_env=`
    variables, an explicit `api_key`) and those of chat model instances given to a graph;
    the environment is read each time, so a key set after import is covered too. Shapes
    are `sk-...` keys, bearer tokens and `key=`/`token=` query values.

    Example:
        >>> redact("Incorrect API key provided: sk-abcdef0123456789; header Bearer abc.def.ghi.jkl")
        'Incorrect API key provided: ***; header Bearer ***'
    """
    values = set(_KNOWN_SECRETS)
    values.update(v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET)
    for value in sorted(values - _DUMMY_KEYS, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "***")
    return _KEY_SHAPES.sub(lambda m: (m.group("keep") or "") + "***", text)


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
            _remember_model_secrets(model)
        base = model_label(model)
        label, n = base, 1
        while label in self._models and not _same(self._models[label], model):
            n += 1
            label = f"{base}#{n}"
        self._models[label] = model
        return label

    def get(self, label: str) -> BaseChatModel:
        """Return the chat model for a label, resolving model strings on first use."""
        return resolve_model(self._models.get(label, label))

    async def aget(self, label: str) -> BaseChatModel:
        """`get` for async code: a first resolution runs in a worker thread.

        Creating a model can block for long (the embedded model joins and hashes its
        weights and starts a server), which must not stall the event loop; async hosts
        such as `langgraph dev` even reject blocking calls on it.
        """
        spec = self._models.get(label, label)
        if isinstance(spec, BaseChatModel):
            return spec
        cached = _CACHE.get(spec)
        return cached if cached is not None else await asyncio.to_thread(resolve_model, spec)


def _remember_model_secrets(model: BaseChatModel) -> None:
    # A client made by the caller (ChatOpenAI(api_key=...)) holds its key as a SecretStr field.
    for name in type(model).model_fields:
        value = getattr(model, name, None)
        if isinstance(value, SecretStr):
            remember_secret(value)


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


def usage_of(message: BaseMessage) -> TokenUsage:
    """Token usage of one call, read from the message the model returned."""
    meta = getattr(message, "usage_metadata", None) or {}
    inp, out = int(meta.get("input_tokens", 0)), int(meta.get("output_tokens", 0))
    return TokenUsage(
        input_tokens=inp, output_tokens=out, total_tokens=int(meta.get("total_tokens", inp + out)), calls=1
    )


def text_of(message: BaseMessage) -> str:
    """The text of a model's reply (content blocks joined), as the model wrote it."""
    return message.text if hasattr(message, "text") else str(message.content)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a failed call, as the SDKs put it on their errors (None: no response).

    Example:
        >>> class Rejected(Exception):
        ...     status_code = 401
        >>> status_of(Rejected()), status_of(ValueError())
        (401, None)
    """
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed call is worth another attempt (timeouts, connection errors, 408/429/5xx)."""
    status = status_of(exc)
    if status is not None:
        return status in (408, 409, 429) or status >= 500
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    # Anything else but a programming or input error may pass on a second attempt (the SDKs'
    # timeout and connection errors included, whatever their names).
    return not isinstance(exc, (ValueError, TypeError, LookupError, AttributeError, ImportError, NotImplementedError))


_STATUS_HINTS = {
    401: "the endpoint rejected the API key; check the key's environment variable",
    403: "the API key may not use this model",
    404: "the endpoint does not know this model name; check it",
    429: "rate limited by the endpoint; lower the samples or max_concurrency",
}


def _hint(exc: BaseException, text: str) -> str | None:
    # Read from the HTTP status and the chain of causes, not from class names: the SDKs
    # wrap the socket's ConnectionError (openai: APIConnectionError from httpx from OSError).
    status = status_of(exc)
    if status == 400 and "context" in text.lower():
        return "the prompt is longer than the model's context; shorten it, use fewer samples or a larger context"
    if status in _STATUS_HINTS:
        return _STATUS_HINTS[status]
    cause: BaseException | None = exc
    for _ in range(8):  # a bounded walk: a cause chain can loop
        if cause is None:
            return None
        if isinstance(cause, ConnectionError):
            return "cannot reach the endpoint; is the server running and the base URL right?"
        cause = cause.__cause__ or cause.__context__
    return None


def describe_error(exc: BaseException) -> str:
    """One line naming the error type, its message and, for known API errors, the fix.

    Every error text that selfmoa keeps (a proposal's `error`, exception messages, hence
    checkpoints, the CLI's output and the server's responses) comes from here, so API keys
    are removed here (see `redact`).

    Example:
        >>> describe_error(PermissionError("Incorrect API key provided: sk-proj-0123456789abcdef"))
        'PermissionError: Incorrect API key provided: ***'
        >>> describe_error(ConnectionRefusedError("[Errno 111] Connection refused"))  # doctest: +ELLIPSIS
        'ConnectionRefusedError: [Errno 111] Connection refused - cannot reach the endpoint; ...'
    """
    name = type(exc).__name__
    # Redacted before cutting, so that a key split by the cut cannot survive in part.
    text = redact(" ".join(str(exc).split()))[:300]
    hint = _hint(exc, text)
    return " - ".join([f"{name}: {text}" if text else name, *([hint] if hint else [])])


class CallPolicy:
    """How a node calls its model: attempts, pause between them and a per-call time limit.

    Args:
        max_attempts: Attempts per call (1 means no retry). Set 1 when the client already
            retries, so there is one retry layer.
        retry_delay: Seconds before the first retry, doubled each time.
        timeout: Seconds one attempt may take, or None for no limit.
        limiter: A `CallLimiter` shared with other graphs, held around each attempt
            (waiting for it does not count against `timeout`), or None.
    """

    def __init__(
        self,
        *,
        max_attempts: int = 2,
        retry_delay: float = 0.5,
        timeout: float | None = None,
        limiter: CallLimiter | None = None,
    ):
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.limiter = limiter

    def _attempt(self, call: Callable[[], T]) -> T:
        with self.limiter or contextlib.nullcontext():
            return call() if self.timeout is None else _with_timeout(call, self.timeout)

    async def _aattempt(self, call: Callable[[], Awaitable[T]]) -> T:
        async with self.limiter or contextlib.nullcontext():
            return await self._atimed(call)

    async def _atimed(self, call: Callable[[], Awaitable[T]]) -> T:
        if self.timeout is None:
            return await call()
        try:
            return await asyncio.wait_for(call(), self.timeout)
        except TimeoutError:
            raise TimeoutError(f"model call took longer than {self.timeout:g}s") from None

    def run(self, call: Callable[[], T]) -> T:
        """Run a blocking call with retries and the time limit; raises the last error."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self._attempt(call)
            except Exception as exc:  # noqa: BLE001 - decided by is_retryable
                if attempt == self.max_attempts or not is_retryable(exc):
                    raise
                time.sleep(self.retry_delay * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def arun(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await a call with retries and the time limit; raises the last error."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await self._aattempt(call)
            except Exception as exc:  # noqa: BLE001 - decided by is_retryable
                if attempt == self.max_attempts or not is_retryable(exc):
                    raise
                await asyncio.sleep(self.retry_delay * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def invoke(
        self, model: BaseChatModel, messages: Sequence[BaseMessage], config: RunnableConfig, **kwargs: Any
    ) -> AIMessage:
        """`model.invoke` under this policy."""
        return self.run(lambda: model.invoke(list(messages), config, **kwargs))  # type: ignore[return-value]

    async def ainvoke(
        self, model: BaseChatModel, messages: Sequence[BaseMessage], config: RunnableConfig, **kwargs: Any
    ) -> AIMessage:
        """`model.ainvoke` under this policy.

        A model with only the blocking path (`_generate`, no `_agenerate` or `_astream`)
        is called in a daemon thread of its own: LangChain would run it in the event loop's
        default executor, which `asyncio.run` joins on exit, so a call abandoned at its
        timeout would hold the whole run until it returned.
        """
        if _blocking_only(model):
            call = lambda: model.invoke(list(messages), config, **kwargs)  # noqa: E731
            return await self.arun(lambda: _in_daemon_thread(call))  # type: ignore[return-value]
        return await self.arun(lambda: model.ainvoke(list(messages), config, **kwargs))  # type: ignore[return-value]


def _blocking_only(model: BaseChatModel) -> bool:
    cls = type(model)
    return cls._agenerate is BaseChatModel._agenerate and cls._astream is BaseChatModel._astream


async def _in_daemon_thread(call: Callable[[], T]) -> T:
    """Await a blocking call run in a new daemon thread, which nobody joins if it is abandoned."""
    return await asyncio.wrap_future(_start_daemon(call))


def _with_timeout(call: Callable[[], T], timeout: float) -> T:
    # A blocking call cannot be cancelled, so it runs in a daemon thread that is abandoned
    # (not killed) when it overruns and cannot hold up interpreter exit.
    try:
        return _start_daemon(call).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"model call took longer than {timeout:g}s") from None


def _start_daemon(call: Callable[[], T]) -> concurrent.futures.Future:
    """Start `call` in a daemon thread of its own; its outcome arrives in the returned future.

    The thread runs in a copy of the caller's context, so callbacks and streaming stay
    attached to the run; the future is marked running, so a waiter that gives up cannot
    cancel it under the thread's feet.
    """
    outcome: concurrent.futures.Future = concurrent.futures.Future()
    outcome.set_running_or_notify_cancel()
    ctx = contextvars.copy_context()

    def run() -> None:
        try:
            outcome.set_result(ctx.run(call))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            outcome.set_exception(exc)

    threading.Thread(target=run, name="selfmoa-call", daemon=True).start()
    return outcome
