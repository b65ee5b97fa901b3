"""The in-process llama.cpp server: starting, sharing, stopping and reviving it.

The model is served by llama.cpp's own HTTP server, run inside this process
through the prebuilt ``xllamacpp`` wheel, on a free loopback port. Servers alive
in this process are closed at exit.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from typing import Any

from selfmoa.local.catalog import DEFAULT_LOCAL_MODEL, LocalModel, LocalModelError, resolve_local_model
from selfmoa.local.connections import _client_waiting, _drain_and_cut, _healthy_within, _leak
from selfmoa.local.llamacpp import (
    DEFAULT_CTX_PER_SLOT,
    DEFAULT_SLOTS,
    _import_xllamacpp,
    _resolve_threads,
    _server_params,
    _start_server,
)
from selfmoa.local.progress import _mb, _say, _say_more
from selfmoa.local.weights import model_path

# How long to wait for /health after the server object exists. Loading is
# synchronous in xllamacpp, so this is a safety net, not the normal path.
_HEALTH_TIMEOUT_S = 120.0


class LocalServer:
    """A llama.cpp OpenAI-compatible server running inside this process.

    Use :func:`local_server` (shared, started once per process) or
    :func:`start_local_server` (private); do not construct directly.

    Attributes:
        model_name: The name the server answers to (``"model"`` in requests).
        model_path: The GGUF file it serves.
        base_url: OpenAI base URL, ``http://127.0.0.1:<port>/v1``.
        port: The loopback port the OS picked.
        slots: Parallel decoding slots (requests served as one batch).
        threads: CPU threads for decoding and prompt processing.
        ctx_per_slot: Context tokens per slot (total context = slots × this).

    Example:
        >>> with start_local_server("smollm2-135m", slots=2) as srv:  # doctest: +SKIP
        ...     print(srv.base_url)
        http://127.0.0.1:40731/v1
    """

    def __init__(self, name: str, *, slots: int, threads: int | None, ctx_per_slot: int) -> None:
        if slots < 1:
            raise LocalModelError(f"slots must be >= 1, got {slots}")
        if ctx_per_slot < 256:
            raise LocalModelError(f"ctx_per_slot must be >= 256, got {ctx_per_slot}")
        resolved = resolve_local_model(name)
        self.model_path = model_path(name)
        self.model_name = resolved.name if isinstance(resolved, LocalModel) else resolved.stem
        self.slots = slots
        self.threads = _resolve_threads(threads)
        self.ctx_per_slot = ctx_per_slot
        self._lock = threading.Lock()
        self._server: Any = None
        # Held while stopping or starting again, so a restart never races a stop for the port.
        self._life = threading.RLock()
        self._final = False  # close() ran: never started again
        self.restarts = 0

        xl = _import_xllamacpp()
        # Kept to start the server again on the same port (see revive).
        self._params = _server_params(
            xl, self.model_path, self.model_name, slots=slots, threads=self.threads, ctx_per_slot=ctx_per_slot
        )
        self._launch(xl)

    def _launch(self, xl: Any) -> None:
        """Start serving on a port the OS picks, wait until healthy, and say so with the settings and time."""
        t0 = time.perf_counter()
        _say(
            f"starting llama.cpp with {self.model_name} ({_mb(self.model_path.stat().st_size)}), {self.slots} slot"
            f"{'s' * (self.slots > 1)} × {self.ctx_per_slot} tokens, {self.threads} thread{'s' * (self.threads > 1)}...",
            end="",
        )
        failure = f"llama.cpp could not start {self.model_name!r} from {self.model_path}"
        self._server = _start_server(xl, self._params, failure)
        address = self._server.listening_address  # e.g. "http://127.0.0.1:40731"
        self.port = int(address.rsplit(":", 1)[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        try:
            self._wait_healthy()
        except LocalModelError:
            _say_more(" failed")
            raise
        self.start_seconds = time.perf_counter() - t0
        _say_more(f" ready in {self.start_seconds:.1f} s")
        _register_for_exit(self)

    def _wait_healthy(self) -> None:
        if not _healthy_within(self.port, _HEALTH_TIMEOUT_S):
            self.close()
            raise LocalModelError(
                f"llama.cpp server for {self.model_name!r} did not become healthy"
                f" within {_HEALTH_TIMEOUT_S:.0f} s"
            )

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._server is None

    def close(self, timeout: float = 5.0) -> None:
        """Stop the server and free the model. Idempotent and thread-safe.

        Requests in flight get up to ``timeout`` seconds to finish; then their
        connections are cut and the clients get connection errors.

        Args:
            timeout: Seconds to let in-flight requests finish before cutting them.

        Raises:
            LocalModelError: Requests were still being processed after their
                connections were cut; the server is then left running (stopping
                it would hang the process, see ``_stop_safely``).
        """
        self._final = True
        _forget(self)
        self._stop(timeout)

    def _stop(self, timeout: float) -> None:
        with self._life:
            with self._lock:
                server, self._server = self._server, None
            if server is None:
                return
            try:
                self._stop_safely(server, timeout)
            finally:
                del server

    def kill(self) -> None:
        """Stop the server at once, as a crash would: in-flight connections are cut.

        Unlike :meth:`close`, the server stays registered, and the next request of a
        client made by :func:`local_chat_model` starts it again on the same port (see
        :meth:`revive`). For chaos tests, and to see how a run copes with a dead model.
        """
        self._stop(0.0)

    def revive(self) -> bool:
        """Start a killed server again on its port, so that existing clients work again.

        Returns:
            True if it was started; False if it is running, or was closed for good.

        Raises:
            LocalModelError: It could not be started again.
        """
        with self._life:
            if self._server is not None or self._final:
                return False
            xl = _import_xllamacpp()
            self._params.port = self.port  # the clients of the dead server know only this port
            _say(f"llama.cpp server for {self.model_name} on port {self.port} was down; starting it again...", end="")
            failure = f"llama.cpp could not restart {self.model_name!r} on port {self.port}"
            self._server = _start_server(xl, self._params, failure)
            self._wait_healthy()
            self.restarts += 1
            _say_more(" ready")
            return True

    def _busy(self) -> bool:
        """Whether a client may still be waiting on a generation."""
        return _client_waiting(self.port)

    def _stop_safely(self, server: Any, timeout: float) -> None:
        # xllamacpp has no stop(): the C++ destructor stops the loop and joins
        # the HTTP threads while holding the GIL. A handler still waiting for a
        # generation then waits forever and the whole process freezes (seen
        # with xllamacpp 2026.10.11549). So: let requests finish, then shut
        # down the server's accepted sockets (they are in this process) so
        # every handler returns, and destroy only once they have all closed.
        if not _drain_and_cut(self.port, timeout):
            _leak(server)  # never destroyed: a leak beats a frozen process
            raise LocalModelError(
                f"llama.cpp server for {self.model_name!r} on port {self.port} is still"
                " serving requests; left running until the process exits"
            )

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.base_url
        return (
            f"LocalServer({self.model_name!r}, slots={self.slots}, threads={self.threads},"
            f" ctx_per_slot={self.ctx_per_slot}, {state})"
        )


# All servers alive in this process (closed at exit) and the shared ones.
_servers_lock = threading.RLock()
_alive: list[LocalServer] = []
_shared: dict[str, list[LocalServer]] = {}
_atexit_registered = False


def _register_for_exit(server: LocalServer) -> None:
    global _atexit_registered
    with _servers_lock:
        _alive.append(server)
        if not _atexit_registered:
            atexit.register(_close_all)
            _atexit_registered = True


def _forget(server: LocalServer) -> None:
    with _servers_lock:
        if server in _alive:
            _alive.remove(server)
        for servers in _shared.values():
            if server in servers:
                servers.remove(server)


def _close_all() -> None:
    with _servers_lock:
        servers = list(_alive)
    for server in servers:
        try:
            server.close()
        except LocalModelError as e:  # at exit: say so, but let the exit go on
            print(f"selfmoa: {e}", file=sys.stderr)


def start_local_server(
    name: str = DEFAULT_LOCAL_MODEL,
    *,
    slots: int = DEFAULT_SLOTS,
    threads: int | None = None,
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
) -> LocalServer:
    """Start a new, unshared server; the caller closes it (or exit does).

    Example:
        >>> srv = start_local_server("smollm2-135m", slots=2)  # doctest: +SKIP
        >>> srv.close()  # doctest: +SKIP
    """
    return LocalServer(name, slots=slots, threads=threads, ctx_per_slot=ctx_per_slot)


def local_server(
    name: str = DEFAULT_LOCAL_MODEL,
    *,
    slots: int = DEFAULT_SLOTS,
    threads: int | None = None,
    ctx_per_slot: int = DEFAULT_CTX_PER_SLOT,
) -> LocalServer:
    """Return this process's shared server for ``name``, starting it on first use.

    A running shared server of the same model is reused when it has at least
    ``slots`` slots, at least ``ctx_per_slot`` context per slot and the same
    thread count; otherwise another one is started. Shared servers close at
    process exit, or earlier through ``.close()``.

    Args:
        name: Registry name, ``"local"``, ``"local:<name>"`` or a ``.gguf`` path.
        slots: Parallel slots; at least the largest sample count in use.
        threads: CPU threads; default ``$SELFMOA_THREADS`` or 2.
        ctx_per_slot: Context tokens per slot; size it for the aggregation prompt.

    Example:
        >>> srv = local_server("local")  # doctest: +SKIP
        >>> srv.base_url, srv.model_name  # doctest: +SKIP
        ('http://127.0.0.1:40731/v1', 'qwen2.5-coder-0.5b')

    Raises:
        LocalModelError: The model cannot be found, verified or started.
    """
    want_threads = _resolve_threads(threads)
    resolved = resolve_local_model(name)
    key = resolved.name if isinstance(resolved, LocalModel) else str(resolved.resolve())
    # One lock around lookup and start: concurrent first calls (e.g. k proposer
    # nodes starting together) must end up sharing one server.
    with _servers_lock:
        for server in _shared.get(key, []):
            if server.closed:
                server.revive()  # killed (closed ones are no longer listed): restarted rather than doubled
            if (
                not server.closed
                and server.slots >= slots
                and server.ctx_per_slot >= ctx_per_slot
                and server.threads == want_threads
            ):
                return server
        server = LocalServer(name, slots=slots, threads=want_threads, ctx_per_slot=ctx_per_slot)
        _shared.setdefault(key, []).append(server)
        return server
