"""The connect-path lookups' own connections: SQLite's local reads, PostgreSQL's pool."""

import sqlite3
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from storage import lookups
from storage.migrate import upgrade
from storage.records import CredentialMatch
from storage.sql import SqlCredentialStore
from tests.storage.helpers import x509


class _LockedConnection:
    """Stands in for a sqlite3 connection that meets a lock (SQLITE_BUSY)."""

    attempts = 0

    def execute(self, *_args: object) -> None:
        _LockedConnection.attempts += 1
        raise sqlite3.OperationalError("database is locked")

    def close(self) -> None:
        return None


async def test_a_busy_local_read_falls_back_to_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await SqlCredentialStore.open(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        device = await store.create_device("d")
        parsed = x509()
        credential = await store.add_x509_credential(device.id, parsed)
        # Writes do not open the local connection; the first lookup does, and meets a lock.
        monkeypatch.setattr(lookups, "_connect_read_only", lambda _path: _LockedConnection())
        found = await store.find_x509(parsed.spki_sha256)
        assert found == CredentialMatch(device, credential)
        assert _LockedConnection.attempts == 1
        assert await store.find_x509("00" * 32) is None
    finally:
        await store.close()


async def test_the_local_connection_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = await SqlCredentialStore.open(f"sqlite+aiosqlite:///{path}")
    try:
        connection = lookups._connect_read_only(str(path))
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            connection.execute("DELETE FROM devices")
        connection.close()
    finally:
        await store.close()


@pytest.mark.postgres
async def test_the_store_recovers_from_terminated_connections(postgres_url: str) -> None:
    await upgrade(postgres_url)
    store = await SqlCredentialStore.open(postgres_url)
    try:
        device = await store.create_device("d")
        parsed = x509()
        await store.add_x509_credential(device.id, parsed)
        assert await store.find_x509(parsed.spki_sha256) is not None
        await _terminate_other_sessions(postgres_url)
        # The pooled connections are dead: a lookup retries once on a fresh one, and a write
        # finds out before using one (pool pre-ping).
        for _ in range(3):
            assert await store.find_x509(parsed.spki_sha256) is not None
        await store.create_device("after-restart")
    finally:
        await store.close()


async def _terminate_other_sessions(url: str) -> None:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()
