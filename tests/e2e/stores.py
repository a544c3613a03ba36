"""What a broker left in its store (``stored_sessions``), for end-to-end tests that run on
SQLite and on PostgreSQL alike (the ``database_url`` fixture of this folder's conftest)."""

import asyncio
from pathlib import Path

from storage.session_data import StoredSession
from storage.sql import SqlCredentialStore


def stored_sessions(url: str, data_dir: Path) -> list[StoredSession]:
    async def load() -> list[StoredSession]:
        store = await SqlCredentialStore.open(url, data_dir=data_dir)
        try:
            return await store.load_sessions()
        finally:
            await store.close()

    return asyncio.run(load())
