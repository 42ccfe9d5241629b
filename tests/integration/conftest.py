"""Integration fixtures: real stores, on SQLite and on PostgreSQL alike.

`store` gives each test a freshly migrated store of each kind; `blank_store` an empty,
unmigrated one. PostgreSQL is a required service: when it is unreachable the PostgreSQL
tests fail, saying how to start it; they are never skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from switch.store.base import Store, open_store
from switch.store.testing import ensure_test_database, reset_database

STORES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the PostgreSQL test database (created if missing)."""
    try:
        return asyncio.run(ensure_test_database())
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    pytest.fail(
        f"PostgreSQL is unreachable ({problem}); the integration tests need it. Start it "
        "(e.g. pg_ctlcluster --skip-systemctl-redirect 15 main start) or point "
        "RTPSWITCH_TEST_PG at a test database.",
        pytrace=False,
    )


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database of each kind (the PostgreSQL one has its schema reset)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'switch.db'}"
    url: str = request.getfixturevalue("pg_url")
    asyncio.run(reset_database(url))
    return url


@pytest.fixture
async def blank_store(store_url: str) -> AsyncIterator[Store]:
    """An empty, unmigrated store."""
    s = open_store(store_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def store(blank_store: Store) -> Store:
    """A freshly migrated, empty store."""
    await blank_store.migrate()
    return blank_store
