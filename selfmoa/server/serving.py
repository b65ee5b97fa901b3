"""Running the server: `serve` with uvicorn, and uvicorn's access log without keys or query strings."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from selfmoa.endpoints import is_loopback_host
from selfmoa.graphs.spec import one_line
from selfmoa.runtime.errors import SpecError
from selfmoa.server.app import create_app
from selfmoa.server.config import ServerConfig, load_config
from selfmoa.server.errors import _redact

__all__ = ["ScrubAccessLog", "log_config", "serve"]

logger = logging.getLogger("selfmoa.server")


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
    logger.info("ensembles: %s; also '<preset>:<model>' for %s", names, ", ".join(config.dynamic_models) or "none")
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False, log_config=log_config())


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
