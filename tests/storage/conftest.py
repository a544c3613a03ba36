"""Store fixtures: every store test runs on SQLite (a file in tmp_path) and on PostgreSQL.

On PostgreSQL (``tests.storage.pg``) each test session creates its own database, migrates it
once, empties it before every test and drops it at the end. On SQLite each test gets a copy of
a database migrated once per process (``tests.sqlite_template``).
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from storage.migrate import upgrade
from storage.records import Device
from storage.session_data import SaveSession
from storage.sql import SqlCredentialStore
from tests.sqlite_template import migrated_sqlite
from tests.storage.pg import fresh_database

_TABLES = (
    "devices, credentials, trusted_cas, auth_events, changes, "
    "mqtt_sessions, mqtt_subscriptions, mqtt_queued_messages, mqtt_awaiting_pubrel, "
    "mqtt_completed_messages"
)


async def _empty(url: str) -> None:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await connection.execute(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE")
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    """A migrated PostgreSQL database of this test session, dropped at the end."""
    with fresh_database() as url:
        asyncio.run(upgrade(url))
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty, migrated store (sync: it may run its own event loop)."""
    if request.param == "sqlite":
        return migrated_sqlite(tmp_path / "store.db")
    url: str = request.getfixturevalue("pg_session_url")
    asyncio.run(_empty(url))
    return url


@pytest.fixture
async def store(store_url: str, tmp_path: Path) -> AsyncIterator[SqlCredentialStore]:
    # tmp_path: the data directory, where the token hash key is made (storage.secrets).
    opened = await SqlCredentialStore.open(store_url, data_dir=tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def other_store(
    store: SqlCredentialStore, store_url: str, tmp_path: Path
) -> AsyncIterator[SqlCredentialStore]:
    """A second store on the same database with its own engine, like another process."""
    opened = await SqlCredentialStore.open(store_url, data_dir=tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def device(store: SqlCredentialStore) -> Device:
    """The device whose persistent sessions a test writes."""
    return await store.create_device("meter")


def saved_session(device: Device, client_id: str = "c1") -> SaveSession:
    """The write that makes ``device``'s persistent session of ``client_id``."""
    return SaveSession(f"{device.id}/{client_id}", device.id, device.name, client_id)
