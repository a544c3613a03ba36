"""The store's waits for the database are bounded by its ``Timeouts``.

SQLite: a write waits for another process's write lock (a backup, a CLI transaction) for the
statement timeout, then fails as unavailable, with the lock's holder a real process.
"""

import time
from pathlib import Path

import pytest

from nanoiot.errors import StoreUnavailableError
from storage.engine import Timeouts
from storage.sql import SqlCredentialStore
from tests.reliability.store_faults import SqliteLock


async def test_a_sqlite_write_waits_for_a_lock_only_the_statement_timeout(tmp_path: Path) -> None:
    database = tmp_path / "store.db"
    store = await SqlCredentialStore.open(
        f"sqlite+aiosqlite:///{database}", timeouts=Timeouts(statement=0.5)
    )
    lock = SqliteLock(database)
    try:
        await store.create_device("before")
        lock.begin()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="database is locked"):
            await store.create_device("during")
        waited = time.monotonic() - started
        assert 0.4 < waited < 3.0, f"waited {waited:.2f} s for a 0.5 s busy timeout"
        lock.end()
        await store.create_device("after")  # the same store writes again by itself
    finally:
        lock.end()
        await store.close()


def test_timeouts_become_asyncpg_options_and_a_busy_timeout() -> None:
    assert Timeouts(2, 5).asyncpg_options() == {"timeout": 2, "command_timeout": 5}
    assert Timeouts(2).asyncpg_options() == {"timeout": 2}  # no statement bound: migrations
    assert Timeouts(2, 1.5).sqlite_busy_ms == 1500
    assert Timeouts().sqlite_busy_ms == 5000
