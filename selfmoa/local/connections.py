"""The in-process server's connections: loopback HTTP probes, its accepted sockets, a safe stop.

llama.cpp's server runs inside this process, so the sockets it accepted are among our own
file descriptors (seen through /proc, Linux only): they can be listed and shut down, which
lets a server be stopped without freezing the process (see ``LocalServer._stop_safely``).
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Our own loopback calls must never go through an HTTP(S)_PROXY from the
# environment: a proxy cannot reach this process's 127.0.0.1.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

_HAVE_PROC_NET = os.path.exists("/proc/net/tcp") and os.path.isdir("/proc/self/fd")


def _wait_until(done: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
    return True


def _accepted_sockets(port: int, *, established_only: bool = False) -> list[int]:
    """File descriptors of connections the server accepted on loopback ``port``.

    The server runs in this process, so its accepted sockets are among our own
    descriptors. Linux only (/proc); elsewhere the list is empty.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            # f[1] local "ADDR:PORT" (hex), f[3] state (01 ESTABLISHED, 0A LISTEN), f[9] inode
            if len(f) < 10 or int(f[1].rsplit(":", 1)[1], 16) != port or f[3] == "0A":
                continue
            if established_only and f[3] != "01":
                continue
            inodes.add(f[9])
    if not inodes:
        return []
    fds = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    for fd in names:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            fds.append(int(fd))
    return fds


def _shutdown_accepted_sockets(port: int) -> int:
    """Shut down the server's accepted connections; return how many remain open.

    ``shutdown`` acts on the socket, not the descriptor, so a dup suffices and
    llama.cpp still closes its own descriptor when its handler returns.
    """
    fds = _accepted_sockets(port)
    for fd in fds:
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already shut down: waiting for its handler to close it
        finally:
            sock.close()
    return len(fds)


def _healthy_within(port: int, timeout: float) -> bool:
    """Poll the server's /health on loopback ``port``; whether it answered 200 within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with _NO_PROXY_OPENER.open(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _client_waiting(port: int) -> bool:
    """Whether a client may still be waiting on a generation of the server on loopback ``port``."""
    if _HAVE_PROC_NET and not _accepted_sockets(port, established_only=True):
        return False  # a generation nobody waits for can be dropped
    try:
        with _NO_PROXY_OPENER.open(f"http://127.0.0.1:{port}/slots", timeout=5) as r:
            return any(slot.get("is_processing") for slot in json.load(r))
    except (urllib.error.URLError, OSError, ValueError):
        return False  # not answering: nothing left to wait for


def _drain_and_cut(port: int, timeout: float) -> bool:
    """Let requests finish for up to ``timeout`` s, then cut the rest; whether no connection is left.

    Without /proc no connection can be cut: only a server drained in time counts as safe.
    """
    drained = _wait_until(lambda: not _client_waiting(port), timeout)
    if _HAVE_PROC_NET:
        _wait_until(lambda: _shutdown_accepted_sockets(port) == 0, 10.0, step=0.05)
        return not _accepted_sockets(port)
    return drained


def _leak(obj: Any) -> None:
    """Keep ``obj`` alive for good, so that no finalizer ever destroys it."""
    import ctypes

    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
