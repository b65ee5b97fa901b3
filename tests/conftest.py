"""Shared fixtures for the offline tests."""

from __future__ import annotations

import pytest

from selfmoa.testing import FakeChatModel


@pytest.fixture
def fake() -> FakeChatModel:
    return FakeChatModel(model="fake")


@pytest.fixture(scope="session")
def postgres_url():
    """Connection string of a real throwaway PostgreSQL server, started once per session.

    Skips when the PostgreSQL binaries are missing, except under CI (`CI` set), where
    that fails: CI must never pass without running the Postgres tests.
    """
    import os

    from postgres_server import INSTALL_HINT, PostgresServer, find_bindir

    if find_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail(f"{INSTALL_HINT} (CI is set, so this fails instead of skipping)", pytrace=False)
        pytest.skip(INSTALL_HINT)
    server = PostgresServer.start()
    try:
        yield server.url
    finally:
        server.stop()
