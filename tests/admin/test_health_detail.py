"""``/healthz`` tells anyone whether the database answers, and only the operator why not.

``/healthz`` needs no token (a container's health check has none), and answered a database
it could not use with the driver's own text: the database URL (user, host, port, database
name; the password masked) and the address the driver tried. Anyone who reached the admin
port learnt where the database is and who the broker is to it. Now the details need the
admin token, checked and counted as on every other route; the status stays 503 for all.
"""

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from admin.app import create_app
from admin.context import AdminContext
from admin.server import HttpServer
from storage.migrate import upgrade
from storage.sql import SqlCredentialStore
from tests.admin.conftest import TOKEN, FakeBroker
from tests.storage.pg import PG_ADMIN_DSN

pytestmark = pytest.mark.postgres


async def _allow_connections(database: str, *, allowed: bool) -> None:
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:  # and the pool's connections are ended: the next ping connects
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                database,
            )
    finally:
        await admin.close()


@pytest.fixture
async def refusing(postgres_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """The admin HTTP server's URL over a store whose database refuses connections now."""
    await upgrade(postgres_url)
    store = await SqlCredentialStore.open(postgres_url, data_dir=tmp_path)
    server = await HttpServer.start(
        create_app(AdminContext(store=store, admin_token=TOKEN)), "127.0.0.1", 0
    )
    database = postgres_url.rsplit("/", 1)[1]
    await _allow_connections(database, allowed=False)
    try:
        yield f"http://127.0.0.1:{server.port}", postgres_url
    finally:
        await _allow_connections(database, allowed=True)
        await server.stop()
        await store.close()


async def test_anyone_learns_that_the_database_fails_not_where_it_is(
    refusing: tuple[str, str],
) -> None:
    base, url = refusing
    parts = urlsplit(url)
    internals = [parts.hostname or "", str(parts.port), parts.username or "", parts.path[1:]]
    async with httpx.AsyncClient(base_url=base) as client:
        anonymous = await client.get("/healthz")
        guessed = await client.get("/healthz", headers={"Authorization": "Bearer " + "x" * 40})
        operator = await client.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    for answer in (anonymous, guessed):
        assert answer.status_code == 503
        assert answer.json()["status"] == "unavailable"
        assert answer.json()["database"] == "cannot be used (the admin token shows why)"
        assert [part for part in internals if part in answer.text] == []
    assert operator.status_code == 503
    shown = operator.json()["database"]
    assert all(part in shown for part in internals), shown
    assert parts.password is None or parts.password not in shown  # masked, as in the log


async def test_why_session_changes_wait_is_for_the_operator(
    anonymous: httpx.AsyncClient, api: httpx.AsyncClient, fake_broker: FakeBroker
) -> None:
    fake_broker.store_problem = (
        "3 changes unsaved for 4 s, acknowledgements wait: database error: (sqlite3."
        "OperationalError) unable to open database file /var/lib/nanoiot/nanoiot.db"
    )
    told = (await anonymous.get("/healthz")).json()
    assert told["sessions"] == (
        "acknowledgements wait: session changes cannot be saved (the admin token shows why)"
    )
    assert (await api.get("/healthz")).json()["sessions"] == fake_broker.store_problem
