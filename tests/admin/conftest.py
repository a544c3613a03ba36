"""Admin API fixtures: the real application over a real store, called in-process by httpx.

``api`` carries the admin token; ``anonymous`` does not. Both talk to the same app, whose
store is a migrated SQLite file in tmp_path (the API tests are about HTTP; the store has its
own suite on both backends).
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from admin.app import create_app
from admin.context import AdminContext
from storage.sql import SqlCredentialStore
from tests.sqlite_template import migrated_sqlite

TOKEN = "test-admin-token-0123456789abcdef"


@dataclass
class FakeBroker:
    """Stands in for the broker's view in API-only tests (the e2e tests use the real one)."""

    connected: set[str]
    changes: int = 0
    listening: bool = True
    store_problem: str = ""

    def connected_device_ids(self) -> set[str]:
        return set(self.connected)

    def is_listening(self) -> bool:
        return self.listening

    def session_store_problem(self) -> str:
        return self.store_problem

    def changed(self) -> None:
        self.changes += 1


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlCredentialStore]:
    opened = await SqlCredentialStore.open(
        migrated_sqlite(tmp_path / "admin.db"), data_dir=tmp_path
    )
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def fake_broker() -> FakeBroker:
    return FakeBroker(connected=set())


@pytest.fixture
def context(store: SqlCredentialStore, fake_broker: FakeBroker) -> AdminContext:
    return AdminContext(store=store, admin_token=TOKEN, broker=fake_broker)


@pytest.fixture
async def api(context: AdminContext) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(context))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://nanoiot.test", headers=headers
    ) as client:
        yield client


@pytest.fixture
async def anonymous(context: AdminContext) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(context))
    async with httpx.AsyncClient(transport=transport, base_url="http://nanoiot.test") as client:
        yield client
