"""Fixtures shared by every test package."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storage.sql import SqlCredentialStore
from tests.sqlite_template import migrated_sqlite
from tests.storage.pg import fresh_database


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """An empty, un-migrated PostgreSQL database of its own, dropped afterwards."""
    with fresh_database() as url:
        yield url


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqlCredentialStore]:
    """A real SQLite credential store of its own (a migrated copy), closed afterwards."""
    store = await SqlCredentialStore.open(migrated_sqlite(tmp_path / "store.db"))
    try:
        yield store
    finally:
        await store.close()
