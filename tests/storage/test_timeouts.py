"""The store's waits for the database are bounded by its ``Timeouts``.

SQLite: a write waits for another process's write lock (a backup, a CLI transaction) for the
statement timeout, then fails as unavailable, with the lock's holder a real process.
PostgreSQL: a node that stopped in the middle of a transaction (SIGSTOP, a paused VM) holds its
row locks only that long, not for as long as it stays stopped.
"""

import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from nanoiot.errors import StoreUnavailableError
from storage.engine import Timeouts, create_engine
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
    assert Timeouts(2, 5).asyncpg_options() == {
        "timeout": 2,
        "command_timeout": 5,
        "server_settings": {"idle_in_transaction_session_timeout": "5000"},
    }
    assert Timeouts(2).asyncpg_options() == {"timeout": 2}  # no statement bound: migrations
    assert Timeouts(2, 1.5).sqlite_busy_ms == 1500
    assert Timeouts().sqlite_busy_ms == 5000


@pytest.mark.postgres
async def test_a_transaction_left_idle_holds_its_row_locks_only_the_statement_timeout(
    pg_session_url: str,
) -> None:
    """The "frozen" engine (statement timeout 1 s) takes a row lock and its client goes
    quiet, as a node stopped mid-transaction does. Another node's write to the row goes
    through once PostgreSQL ends the idle transaction; without that bound it waits for as
    long as the first stays quiet (here: its own 5 s statement timeout, then fails)."""
    frozen = create_engine(pg_session_url, Timeouts(statement=1.0))
    other = create_engine(pg_session_url, Timeouts(statement=5.0))
    try:
        async with other.begin() as setup:
            await setup.execute(
                text("CREATE TABLE IF NOT EXISTS idle_probe (id int PRIMARY KEY, n int)")
            )
            await setup.execute(text("INSERT INTO idle_probe VALUES (1, 0) ON CONFLICT DO NOTHING"))
        held = await frozen.connect()
        await held.begin()
        await held.execute(text("UPDATE idle_probe SET n = n + 1 WHERE id = 1"))  # then quiet
        started = time.monotonic()
        async with other.begin() as writer:  # waits for the lock until the idle one ends
            await writer.execute(text("UPDATE idle_probe SET n = 10 WHERE id = 1"))
        waited = time.monotonic() - started
        assert waited < 3.0, f"the write waited {waited:.2f} s for a 1 s idle transaction"
        # Its session was ended: nothing committed. The driver says so as "connection is
        # closed", or, when it learns of the end while it sends, as an operation in progress.
        with pytest.raises(DBAPIError):
            await held.execute(text("SELECT 1"))
        await held.close()
        async with other.connect() as reader:
            assert (await reader.execute(text("SELECT n FROM idle_probe"))).scalar_one() == 10
    finally:
        async with other.begin() as cleanup:
            await cleanup.execute(text("DROP TABLE IF EXISTS idle_probe"))
        await frozen.dispose()
        await other.dispose()
