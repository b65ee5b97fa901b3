"""Shared fixtures for the offline tests."""

from __future__ import annotations

import contextlib

import pytest

from selfmoa import model_providers
from selfmoa.testing import FakeChatModel


@pytest.fixture
def providers():
    """Register model providers for one test, as `providers(prefix=factory, ...)`; gone after it."""
    with contextlib.ExitStack() as stack:
        yield lambda **factories: stack.enter_context(model_providers(factories))


@pytest.fixture
def fake() -> FakeChatModel:
    return FakeChatModel(model="fake")


@pytest.fixture(scope="session")
def postgres_url():
    """Connection string of a real throwaway PostgreSQL server, started once per session.

    Skips when the PostgreSQL binaries are missing, except under CI (`CI` set), where
    that fails: CI must never pass without running the Postgres tests.
    """
    from helpers import missing
    from postgres_server import INSTALL_HINT, PostgresServer, find_bindir

    if find_bindir() is None:
        missing(INSTALL_HINT)
    server = PostgresServer.start()
    try:
        yield server.url
    finally:
        server.stop()
