"""Test databases for the store: create one on the local PostgreSQL, and reset it.

Tests and the CI run against a real PostgreSQL. `ensure_test_database` creates the test
database when missing, through the administrative URL (`RTPSWITCH_TEST_PG_ADMIN`,
default the local server's `postgres` database), and returns the test database's URL;
`RTPSWITCH_TEST_PG`, when set, names the test database directly instead.
`reset_database` drops and recreates the `public` schema, so that each test starts from
an empty, unmigrated database.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg

__all__ = ["DEFAULT_ADMIN_URL", "ensure_test_database", "reset_database"]

DEFAULT_ADMIN_URL: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_CONNECT_TIMEOUT: Final = 5.0


async def ensure_test_database(name: str = "rtpswitch_test") -> str:
    """The URL of test database `name`, created if missing (idempotent)."""
    override = os.environ.get("RTPSWITCH_TEST_PG")
    if override:
        conn = await asyncpg.connect(override, timeout=_CONNECT_TIMEOUT)
        await conn.close()
        return override
    if not _NAME.fullmatch(name):
        raise ValueError(f"test database name must be a plain identifier: {name!r}")
    admin = os.environ.get("RTPSWITCH_TEST_PG_ADMIN", DEFAULT_ADMIN_URL)
    conn = await asyncpg.connect(admin, timeout=_CONNECT_TIMEOUT)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            # another test run may create it meanwhile
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(admin)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def reset_database(url: str) -> None:
    """Drop and recreate the `public` schema of the database at `url`."""
    conn = await asyncpg.connect(url, timeout=_CONNECT_TIMEOUT)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()
