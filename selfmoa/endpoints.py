"""OpenAI-compatible endpoints: the `openai:` model strings and the clients for local servers.

Registered as the `openai` model provider when `selfmoa` is imported (see
`selfmoa.runtime.models.register_model_provider`), so the core knows no endpoint grammar:

- `"openai:MODEL"`: OpenAI through `langchain-openai`; the key is read from
  `OPENAI_API_KEY` by the client.
- `"openai:MODEL@BASE_URL"`: any OpenAI-compatible endpoint (vLLM, llama.cpp server,
  Ollama, Together, ...), e.g. `"openai:qwen2.5@http://localhost:8000/v1"`. The key comes
  from `OPENAI_API_KEY`, or from the variable named by a `?key_env=NAME` suffix; a
  loopback endpoint needs none.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any
from urllib.parse import urlparse

from langchain_core.language_models import BaseChatModel

from selfmoa.runtime.errors import ModelResolutionError
from selfmoa.runtime.secrets import remember_secret

__all__ = ["check_openai_model", "is_loopback_host", "loopback_http_clients", "openai_model"]

_FORM = "write 'openai:MODEL@BASE_URL', e.g. 'openai:qwen2.5@http://localhost:8000/v1'"


def check_openai_model(spec: str, rest: str) -> None:
    """Check an `openai:` model string's parts, at build time, without creating anything.

    Raises:
        ModelResolutionError: One line naming the missing or wrong part.

    Example:
        >>> check_openai_model("openai:m@ftp://host", "m@ftp://host")
        Traceback (most recent call last):
        ...
        selfmoa.runtime.errors.ModelResolutionError: model 'openai:m@ftp://host': the base URL must start with http:// or https://; write 'openai:MODEL@BASE_URL', e.g. 'openai:qwen2.5@http://localhost:8000/v1'
    """
    model, at, endpoint = rest.partition("@")
    if not model.strip():
        raise ModelResolutionError(f"model {spec!r} names no model before '@'; {_FORM}")
    if not at:
        return
    base_url, _, query = endpoint.partition("?")
    if not base_url.strip():
        raise ModelResolutionError(f"model {spec!r} names no base URL after '@'; {_FORM}")
    if not base_url.startswith(("http://", "https://")):
        raise ModelResolutionError(f"model {spec!r}: the base URL must start with http:// or https://; {_FORM}")
    if urlparse(base_url).username is not None:  # also set when only a password is given
        # The model string is the model's label in graph state, checkpoints and responses,
        # so neither it nor this message may hold the credentials.
        raise ModelResolutionError(
            f"model 'openai:{model}@...': the base URL holds a user name or password, which would be stored with "
            "the run; put the key in an environment variable and name it with ?key_env=VARIABLE"
        )
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        if name != "key_env":
            # Anything else (a key itself, say) would sit in graph state as part of the label.
            raise ModelResolutionError(  # the value is left out: it may be the key itself
                f"model 'openai:{model}@{base_url}': unknown option {name!r} after '?'; the only one is key_env=VARIABLE "
                "(the name of the environment variable holding the key)"
            )
        if not value:
            raise ModelResolutionError(f"model {spec!r} names no variable after 'key_env='; write key_env=MY_KEY_VAR")


def openai_model(rest: str, **kwargs: Any) -> BaseChatModel:
    """The chat model of an `openai:` model string (the part after `openai:`).

    Example:
        >>> openai_model("qwen2.5@http://127.0.0.1:8000/v1").openai_api_base
        'http://127.0.0.1:8000/v1'
    """
    from langchain_openai import ChatOpenAI

    model, _, endpoint = rest.partition("@")
    # Retries happen in selfmoa's own call layer (CallPolicy), hence max_retries=0 here.
    # stream_usage keeps token counts when a run is streamed through a custom base URL.
    options: dict[str, Any] = {"model": model, "max_retries": 0, "stream_usage": True, **kwargs}
    if endpoint:
        base_url, _, query = endpoint.partition("?")
        options["base_url"] = base_url
        key_env = dict(p.partition("=")[::2] for p in query.split("&") if p).get("key_env")
        key = os.environ.get(key_env) if key_env else os.environ.get("OPENAI_API_KEY")
        if key_env and not key:
            raise ModelResolutionError(f"model 'openai:{rest}' needs an API key: set the {key_env} environment variable")
        remember_secret(key)
        loopback = _is_loopback(base_url)
        if not key and loopback:
            key = "unused"  # local servers accept any key, the client insists on one
        if key:
            options.setdefault("api_key", key)
        if loopback:
            options = {**loopback_http_clients(ChatOpenAI), **options}
    return ChatOpenAI(**options)


def loopback_http_clients(chat_openai: type[BaseChatModel]) -> dict[str, Any]:
    """`ChatOpenAI` options for a server on this machine: no proxy, no idle async connections.

    `trust_env=False`: an HTTP(S)_PROXY from the environment would otherwise receive the
    requests meant for 127.0.0.1 and fail.

    No keep-alive for the async client: langchain-openai shares one cached async client per
    base URL across the process, and pooled connections belong to the event loop that
    opened them, so a second `asyncio.run` (the CLI, tests, threads) fails with "Event loop
    is closed" (langchain-ai/langchain#35783). On loopback a fresh connection per request
    costs microseconds.
    """
    import openai

    # Built from the SDK's own Limits type: httpx for openai<3, httpx2 after.
    no_keepalive = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=1000, max_keepalive_connections=0)
    options: dict[str, Any] = {
        "http_client": openai.DefaultHttpxClient(trust_env=False),
        "http_async_client": openai.DefaultAsyncHttpxClient(limits=no_keepalive, trust_env=False),
    }
    if "http_socket_options" in chat_openai.model_fields:
        # The clients above are used as given; this only silences langchain-openai's
        # warning that proxies from the environment are bypassed.
        options["http_socket_options"] = ()
    return options


def is_loopback_host(host: str) -> bool:
    """Whether a host name or address is this machine (a name such as 127.example.com is not).

    Example:
        >>> [is_loopback_host(h) for h in ("localhost", "127.0.0.2", "::1", "127.example.com", "10.0.0.1")]
        [True, True, True, False, False]
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_loopback(url: str) -> bool:
    return is_loopback_host(urlparse(url).hostname or "")
