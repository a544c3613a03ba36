"""Alembic migrations: the only way the schema is made; models and migrations agree."""

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from nanoiot.errors import StoreError
from storage.engine import create_engine
from storage.migrate import alembic_config, current_revision, head_revision, upgrade
from storage.models import Base, UtcDateTime
from storage.sql import SqlCredentialStore


@pytest.fixture
async def engine(store: SqlCredentialStore, store_url: str) -> AsyncIterator[AsyncEngine]:
    """A raw engine on the store's (migrated) database."""
    raw = create_engine(store_url)
    try:
        yield raw
    finally:
        await raw.dispose()


async def test_open_creates_and_upgrades_a_fresh_sqlite_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    url = f"sqlite+aiosqlite:///{data_dir / 'sub' / 'nanoiot.db'}"
    store = await SqlCredentialStore.open(url, data_dir=data_dir)
    try:
        await store.ping()
        assert await current_revision(url) == head_revision()
    finally:
        await store.close()
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    # Opening again finds it at head and keeps the data.
    again = await SqlCredentialStore.open(url)
    try:
        assert await again.list_devices() is not None
    finally:
        await again.close()


def test_head_revision_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_current_revision_is_alembics_reading(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        alembic_says = await connection.run_sync(
            lambda c: MigrationContext.configure(c).get_current_revision()
        )
    assert alembic_says == head_revision()
    assert await current_revision(engine.url.render_as_string(hide_password=False)) == alembic_says


def test_opening_a_store_at_head_does_not_import_alembic(tmp_path: Path) -> None:
    # Alembic and Mako are megabytes of a broker's memory that only a migration needs.
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    program = (
        "import asyncio, sys\n"
        "from storage.sql import SqlCredentialStore\n"
        "async def main():\n"
        f"    store = await SqlCredentialStore.open({url!r})\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    first = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "alembic" in first.stdout  # the first open creates the tables
    again = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "[]"


async def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    assert await current_revision(url) is None
    assert await upgrade(url) == head_revision()
    assert await upgrade(url) == head_revision()


@pytest.mark.postgres
async def test_postgres_is_not_upgraded_implicitly(postgres_url: str) -> None:
    with pytest.raises(
        StoreError, match=r"database schema is not up to date: run `nanoiot db upgrade`"
    ):
        await SqlCredentialStore.open(postgres_url)
    assert await current_revision(postgres_url) is None
    assert await upgrade(postgres_url) == head_revision()
    assert await current_revision(postgres_url) == head_revision()
    store = await SqlCredentialStore.open(postgres_url)
    await store.close()


def _differences(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


async def test_models_match_the_migrations(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        assert await connection.run_sync(_differences) == []


async def test_sqlite_connections_are_set_up_for_sharing(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            pragmas = [
                (await connection.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys")
            ]
    finally:
        await engine.dispose()
    assert pragmas == ["wal", 5000, 1]


async def _upgrade_to(url: str, revision: str) -> None:
    """Alembic's upgrade to an older ``revision``, as storage.migrate runs it to head."""

    def run(connection: Connection) -> None:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


async def _upgrade_0001_with_a_credential(url: str) -> None:
    """A database at 0001 holding a device and its certificate, upgraded to head: the
    credential survives, as provisioned by an operator (no issuing CA)."""
    await _upgrade_to(url, "0001")
    assert await current_revision(url) == "0001"
    engine = create_engine(url)
    device_id, credential_id = uuid.uuid4(), uuid.uuid4()
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO devices (id, name, type, label, created_at, enabled) "
                    "VALUES (:id, 'old', 'default', '', :now, :yes)"
                ).bindparams(bindparam("id", type_=Uuid()), bindparam("now", type_=UtcDateTime)),
                {"id": device_id, "now": datetime.now(UTC), "yes": True},
            )
            await connection.execute(
                text(
                    "INSERT INTO credentials (id, device_id, type, status, created_at, "
                    "spki_sha256, application) "
                    "VALUES (:id, :device, 'X509_CERTIFICATE', 'active', :now, :spki, :no)"
                ).bindparams(
                    bindparam("id", type_=Uuid()),
                    bindparam("device", type_=Uuid()),
                    bindparam("now", type_=UtcDateTime),
                ),
                {
                    "id": credential_id,
                    "device": device_id,
                    "now": datetime.now(UTC),
                    "spki": "ab" * 32,
                    "no": False,
                },
            )
    finally:
        await engine.dispose()
    assert await upgrade(url) == head_revision()
    store = await SqlCredentialStore.open(url)
    try:
        found = await store.find_x509("ab" * 32)
        assert found is not None
        assert found.credential.id == credential_id
        assert found.credential.issuer_ca_id is None
        [credential] = await store.list_credentials(device_id)
        assert credential.issuer_ca_id is None
    finally:
        await store.close()


async def test_0002_upgrades_a_0001_sqlite_database(tmp_path: Path) -> None:
    await _upgrade_0001_with_a_credential(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")


@pytest.mark.postgres
async def test_0002_upgrades_a_0001_postgres_database(postgres_url: str) -> None:
    await _upgrade_0001_with_a_credential(postgres_url)
