"""Shared fixtures for the offline tests."""

from __future__ import annotations

import pytest

from selfmoa.testing import FakeChatModel


@pytest.fixture
def fake() -> FakeChatModel:
    return FakeChatModel(model="fake")
