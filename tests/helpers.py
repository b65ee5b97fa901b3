"""Small helpers shared by the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from selfmoa.testing import FakeCall, FakeChatModel

QUESTION = "What is 17*3?"
URL = "/v1/chat/completions"
"""The chat completions route of `selfmoa serve`."""


def missing(reason: str) -> None:
    """Skip a test whose requirement is missing, except under CI (`CI` set), where that fails.

    CI installs everything the README's test command needs, so a skip there would hide a
    whole part of the suite (the real model, Studio) behind a green run.
    """
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def require(module: str, reason: str):
    """`pytest.importorskip`, failing under CI as `missing` does."""
    try:
        return importlib.import_module(module)
    except ImportError:
        missing(reason)


def ask(text: str = QUESTION) -> dict:
    """Graph input with one user message."""
    return {"messages": [("user", text)]}


def by_role(model: FakeChatModel, role: str) -> list[FakeCall]:
    """The calls of a fake model made in one selfmoa role."""
    return [c for c in model.calls if c.role == role]


def system_text(call: FakeCall) -> str:
    """The system message of a call (where the references go)."""
    return call.messages[0].text if call.messages and call.messages[0].type == "system" else ""


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    """Whether something accepts connections on a loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int) -> str:
    """The last lines of a server's log file, for failure messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def server_tests():
    """tests/test_server.py, the module pytest collected if it did (importing it a second time
    would register its fake model provider again, bound to the new module's dicts)."""
    for module in list(sys.modules.values()):
        if str(getattr(module, "__file__", "") or "").endswith(str(Path("tests", "test_server.py"))):
            return module
    import test_server

    return test_server


@contextlib.contextmanager
def app_client(**settings) -> Iterator:
    """The server app in-process (Starlette's TestClient, server exceptions as 500 responses), with a
    `team` preset and the default model on `relfake:` fakes, registered while the client is open;
    `settings` are further `ServerConfig` fields."""
    from starlette.testclient import TestClient

    from selfmoa import model_providers
    from selfmoa.server import ServerConfig, create_app

    with model_providers({"relfake": lambda name, **kw: FakeChatModel(model=name or "relfake", latency=0.01)}):
        config = ServerConfig(
            presets={"team": {"layers": [[{"model": "relfake:team", "samples": 2}]]}},
            default_model="relfake:base",
            **settings,
        )
        with TestClient(create_app(config), raise_server_exceptions=False) as client:
            yield client


def wait_for_health(url: str, proc: subprocess.Popen, log: Path, seconds: float = 60) -> None:
    """Wait until a `selfmoa serve` process answers `GET /health` with 200; fail with its log if it
    exits or is not ready in time (then it is killed)."""
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            pytest.fail(f"selfmoa serve exited with {proc.returncode}:\n{log_tail(log, 20)}")
        try:
            if httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"selfmoa serve not ready in {seconds:g} s:\n{log_tail(log, 20)}")
        time.sleep(0.2)
