"""Small helpers shared by the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from selfmoa.testing import FakeCall, FakeChatModel

QUESTION = "What is 17*3?"


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
