"""The clients of the embedded model: ``ChatOpenAI`` talking to the shared in-process server.

Callers talk to the server through ``ChatOpenAI(base_url=...)`` exactly as they
would to any remote OpenAI-compatible endpoint, so local and remote share one
code path. A client starts its server again when it finds it killed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from selfmoa.local.catalog import DEFAULT_LOCAL_MODEL, LocalModelError
from selfmoa.local.llamacpp import DEFAULT_CTX_PER_SLOT, DEFAULT_SLOTS
from selfmoa.local.process import LocalServer, local_server

if TYPE_CHECKING:  # only for annotations; importing it is not free
    from langchain_openai import ChatOpenAI


def local_chat_model(
    name: str = DEFAULT_LOCAL_MODEL,
    *,
    slots: int = DEFAULT_SLOTS,
    threads: int | None = None,
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
    **chat_kwargs: Any,
) -> ChatOpenAI:
    """A ``ChatOpenAI`` talking to the shared embedded server for ``name``.

    The same client class as for any remote OpenAI-compatible endpoint, so the
    graph has one code path. ``stream_usage=True`` keeps token counts in
    streamed runs; the API key is a dummy, as the server is loopback-only.

    Args:
        name: See :func:`local_server`.
        slots, threads, ctx_per_slot: Server settings, see :func:`local_server`.
        **chat_kwargs: Passed to ``ChatOpenAI`` (``temperature``, ``max_tokens``,
            ``seed``...); they override the defaults above.

    Example:
        >>> chat = local_chat_model("local", temperature=0, max_tokens=64)  # doctest: +SKIP
        >>> chat.invoke("What is 17*3?").usage_metadata["output_tokens"] > 0  # doctest: +SKIP
        True

    Raises:
        LocalModelError: The model cannot be found, verified or started.
    """
    try:
        from langchain_openai import ChatOpenAI
    except ImportError:
        raise LocalModelError(
            "the embedded model needs langchain-openai; install it with: pip install 'selfmoa[local]'"
        ) from None
    from selfmoa.endpoints import loopback_http_clients

    server = local_server(name, slots=slots, threads=threads, ctx_per_slot=ctx_per_slot)
    params: dict[str, Any] = {
        "base_url": server.base_url,
        "api_key": "not-needed",
        "model": server.model_name,
        "stream_usage": True,
        # One retry layer: selfmoa's CallPolicy (as for `openai:` models); a killed server is
        # started again by the transport below, not by a client retry.
        "max_retries": 0,
    }
    params.update(loopback_http_clients(ChatOpenAI))
    params.update(_reviving_clients(server))
    # LangChain's standard place for a context size: selfmoa refuses longer input before any call.
    params["profile"] = {"max_input_tokens": server.ctx_per_slot}
    params.update(chat_kwargs)
    return ChatOpenAI(**params)


def local_provider(name: str, **kwargs: Any) -> ChatOpenAI:
    """The `local` model-string provider: `"local"` is the default model, `"local:NAME"` another."""
    return local_chat_model(name or DEFAULT_LOCAL_MODEL, **kwargs)


def _reviving_clients(server: LocalServer) -> dict[str, Any]:
    """HTTP clients for ``server`` that start it again when it was killed (see :meth:`LocalServer.revive`).

    A refused connection to a killed server starts it again on its port, then the
    request is sent once more; any other failure is left to the caller's retries.
    """
    import asyncio

    import openai

    # The SDK's own HTTP library (httpx for openai<3, httpx2 after), as in loopback_http_clients.
    hx = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.partition(".")[0])
    no_keepalive = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=1000, max_keepalive_connections=0)

    class Reviving(hx.HTTPTransport):  # type: ignore[name-defined]  # the SDK's httpx, found at run time
        def handle_request(self, request: Any) -> Any:
            try:
                return super().handle_request(request)
            except hx.ConnectError:
                # False and still open: another request has just started it again; resend too.
                if not server.revive() and server.closed:
                    raise
                return super().handle_request(request)

    class AsyncReviving(hx.AsyncHTTPTransport):  # type: ignore[name-defined]  # as above
        async def handle_async_request(self, request: Any) -> Any:
            try:
                return await super().handle_async_request(request)
            except hx.ConnectError:
                # As above; loading the model blocks for seconds, hence the thread.
                if not await asyncio.to_thread(server.revive) and server.closed:
                    raise
                return await super().handle_async_request(request)

    return {
        "http_client": openai.DefaultHttpxClient(transport=Reviving(trust_env=False), trust_env=False),
        "http_async_client": openai.DefaultAsyncHttpxClient(
            transport=AsyncReviving(limits=no_keepalive, trust_env=False), trust_env=False
        ),
    }
