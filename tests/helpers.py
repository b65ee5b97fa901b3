"""Small helpers shared by the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

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
