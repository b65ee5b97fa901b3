"""Running the server: `serve` with uvicorn, its limits on slow clients, and its access log without keys or query strings."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from uvicorn.protocols.http.h11_impl import H11Protocol

from selfmoa.endpoints import is_loopback_host
from selfmoa.graphs.spec import one_line
from selfmoa.runtime.errors import SpecError
from selfmoa.server.app import create_app
from selfmoa.server.config import ServerConfig, load_config
from selfmoa.server.errors import _redact

__all__ = ["ScrubAccessLog", "log_config", "serve", "uvicorn_options"]

logger = logging.getLogger("selfmoa.server")

_KEEP_ALIVE = 5  # seconds an idle connection stays open between requests (uvicorn's default, said aloud)
_MAX_HEADER_BYTES = 16 * 1024  # request line and headers; a chat request needs a few hundred


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    config_path: str | Path | None = None,
    *,
    max_concurrency: int | None = None,
    queue: int | None = None,
) -> None:
    """Serve the ensembles with uvicorn until interrupted.

    Args:
        host: Interface to bind; loopback by default. On any other interface set
            `SELFMOA_API_KEY`, or anyone who can reach it can spend your model calls.
        port: TCP port.
        config_path: YAML config file with named ensembles and server settings.
        max_concurrency: Ensembles running at once (overrides the config file).
        queue: Requests waiting for a slot before 429 (overrides the config file).

    Raises:
        SpecError: A bad config file or setting, in one line.

    Example:
        >>> serve(port=8000, config_path="presets.yaml")  # doctest: +SKIP
    """
    import uvicorn

    config = load_config(config_path) if config_path else ServerConfig()
    try:
        if max_concurrency is not None:
            config.max_concurrency = max_concurrency
        if queue is not None:
            config.queue = queue
    except ValidationError as exc:
        raise SpecError(one_line(exc, "server settings")) from None
    # Our own lines at INFO; other libraries (httpx logs every model request) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s:     %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    has_key = config.api_key is not None or bool(os.environ.get("SELFMOA_API_KEY"))
    if not is_loopback_host(host) and not has_key:
        logger.warning("serving on %s without SELFMOA_API_KEY: anyone who can reach it can run the ensembles", host)
    app = create_app(config)
    names = ", ".join(app.state.ensembles.names())
    local_only = "" if app.state.ensembles.remote_allowed else " (local models only: no SELFMOA_API_KEY)"
    logger.info("ensembles: %s; also '<preset>:<model>' for %s%s", names, ", ".join(config.dynamic_models) or "none",
                local_only)
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False, log_config=log_config(),
                **uvicorn_options(config))


def uvicorn_options(config: ServerConfig) -> dict[str, Any]:
    """uvicorn settings that bound what a slow or idle client holds: header time and size, keep-alive.

    The body's time limit is the app's (`read_timeout`, a 408); this protocol cuts off a
    connection whose request headers take longer than `read_timeout`.

    Example:
        >>> options = uvicorn_options(ServerConfig(read_timeout=10))
        >>> options["http"].header_timeout, options["timeout_keep_alive"]
        (10.0, 5)
    """
    protocol = type("SelfMoAH11Protocol", (_TimedH11Protocol,), {"header_timeout": config.read_timeout})
    return {"http": protocol, "timeout_keep_alive": _KEEP_ALIVE, "h11_max_incomplete_event_size": _MAX_HEADER_BYTES}


class _TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers do not arrive in `header_timeout`.

    uvicorn times a connection out only while it is idle after a response, and stops that
    timer at the next request's first byte, so a client that connects and then sends its
    headers a byte a minute, or never, would hold the connection (and a file descriptor) for good.
    """

    header_timeout = 30.0
    _timer: asyncio.TimerHandle | None = None
    _waiting: object = None  # the request cycle that was current when the timer started

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        """Start the clock for the first request's headers."""
        super().connection_made(transport)  # type: ignore[arg-type]
        self._start_timer()

    def data_received(self, data: bytes) -> None:
        """Stop the clock once the bytes so far complete a request's headers (a new cycle began)."""
        super().data_received(data)
        if self._timer is not None and self.cycle is not self._waiting:
            self._stop_timer()

    def on_response_complete(self) -> None:
        """Start the clock for the next request's headers on this kept-alive connection."""
        self._start_timer()  # before the parent, which may start a pipelined request at once
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock."""
        self._stop_timer()
        super().connection_lost(exc)

    def _start_timer(self) -> None:
        self._stop_timer()
        self._waiting = self.cycle
        self._timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if self.cycle is self._waiting and not self.transport.is_closing():
            self.transport.close()


class ScrubAccessLog(logging.Filter):
    """Takes query strings out of uvicorn's access log lines, and any key left in the path.

    A client may send its key as `?api_key=...`; uvicorn would write it to the log.

    Example:
        >>> record = logging.LogRecord("uvicorn.access", 20, "", 0, '%s - "%s %s HTTP/%s" %d',
        ...                            ("127.0.0.1:5", "GET", "/health?api_key=abc", "1.1", 200), None)
        >>> ScrubAccessLog().filter(record), record.getMessage()
        (True, '127.0.0.1:5 - "GET /health HTTP/1.1" 200')
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record, its path without query string or keys."""
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], _redact(args[2].partition("?")[0]), *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging config with `ScrubAccessLog` on the access logger and its handler.

    Example:
        >>> log_config()["loggers"]["uvicorn.access"]["filters"]
        ['scrub']
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["scrub"] = {"()": ScrubAccessLog}
    config["handlers"]["access"]["filters"] = ["scrub"]
    config["loggers"]["uvicorn.access"]["filters"] = ["scrub"]
    return config
