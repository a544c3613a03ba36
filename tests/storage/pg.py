"""PostgreSQL for tests: the server on 127.0.0.1:5432 (trust auth, user postgres).

Each test database is created fresh (``nanoiot_t_<random>``) and dropped afterwards. When the
server cannot be reached, tests that need it are skipped locally but fail under CI (``CI``
set), so a broken CI database cannot pass unnoticed.
"""

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import asyncpg  # type: ignore[import-untyped]
import pytest

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_DSN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"


def pg_url(database: str) -> str:
    return f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{database}"


@cache
def _postgres_problem() -> str | None:
    async def probe() -> None:
        connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        await connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"PostgreSQL at {PG_ADMIN_DSN} is not reachable: {exc}"
    return None


def require_postgres() -> None:
    problem = _postgres_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem} (CI is set, so PostgreSQL tests must run)", pytrace=False)
    pytest.skip(f"{problem} (set CI=1 to make this a failure)")


async def create_pg_database() -> str:
    name = f"nanoiot_t_{secrets.token_hex(6)}"
    connection = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return name


async def drop_pg_database(name: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database, dropped afterwards whatever happened."""
    require_postgres()
    name = asyncio.run(create_pg_database())
    try:
        yield pg_url(name)
    finally:
        asyncio.run(drop_pg_database(name))
