"""Secrets at rest: access tokens stored as keyed hashes, the key kept in the data directory,
the data directory and database files private (storage.secrets, storage.token_key)."""

import asyncio
import hashlib
import hmac
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from nanoiot.errors import StoreError
from storage.engine import create_engine
from storage.migrate import alembic_config, upgrade
from storage.secrets import KEY_FILE, permission_warnings
from storage.sql import SqlCredentialStore

TOKEN = "plain-token-7f3a9c2e51"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_token_is_kept_as_its_keyed_hash_only(
    store: SqlCredentialStore, store_url: str, tmp_path: Path
) -> None:
    """The attack: whoever reads the database file (a backup, a copy left in /tmp) used to
    read every access token and connect as its device."""
    device = await store.create_device("gateway")
    created = await store.add_token_credential(device.id, TOKEN)
    assert created.token == TOKEN  # shown once, in the answer that made it
    key = bytes.fromhex((tmp_path / KEY_FILE).read_text())
    engine = create_engine(store_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT * FROM credentials"))).mappings().all()
    finally:
        await engine.dispose()
    [row] = rows
    assert TOKEN not in {str(value) for value in row.values()}
    assert row["token_hash"] == hmac.new(key, TOKEN.encode(), hashlib.sha256).hexdigest()
    assert (await store.list_credentials(device.id))[0].token is None
    match = await store.find_token(TOKEN)
    assert match is not None
    assert match.device.id == device.id
    assert mode(tmp_path / KEY_FILE) == 0o600


async def test_sqlite_files_hold_no_token_and_are_private(tmp_path: Path) -> None:
    os.umask(0o022)  # the usual umask: files would be 0644, folders 0755
    data = tmp_path / "data"
    url = f"sqlite+aiosqlite:///{data / 'nanoiot.db'}"
    store = await SqlCredentialStore.open(url, data_dir=data)
    try:
        device = await store.create_device("gateway")
        await store.add_token_credential(device.id, TOKEN)
        wal = data / "nanoiot.db-wal"
        assert wal.exists()
        assert (mode(data), mode(data / "nanoiot.db"), mode(wal)) == (0o700, 0o600, 0o600)
    finally:
        await store.close()
    for path in data.iterdir():
        assert TOKEN.encode() not in path.read_bytes(), path
    assert permission_warnings(data, list(data.iterdir())) == []
    data.chmod(0o755)
    (data / "nanoiot.db").chmod(0o644)
    warnings = permission_warnings(data, list(data.iterdir()))
    assert warnings == [
        f"{data} is mode 0755: other users may read secrets in it (chmod 700 {data})",
        f"{data / 'nanoiot.db'} is mode 0644: other users may read secrets in it "
        f"(chmod 600 {data / 'nanoiot.db'})",
    ]


def _database_at_0005_with_a_plain_token(url: str) -> None:
    """What a store made before tokens were hashed holds: a token in plain text."""
    command.upgrade(alembic_config(url), "0005")
    device, credential = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
    connection = sqlite3.connect(url.split("///", 1)[1])
    with connection:
        connection.execute(
            "INSERT INTO devices (id, name, type, label, created_at, enabled) "
            "VALUES (?, 'gw', 'default', '', '2026-01-01 00:00:00', 1)",
            (device,),
        )
        connection.execute(
            "INSERT INTO credentials (id, device_id, type, status, created_at, token, "
            "application) VALUES (?, ?, 'ACCESS_TOKEN', 'active', '2026-01-01 00:00:00', ?, 0)",
            (credential, device, TOKEN),
        )
    connection.close()


async def test_existing_tokens_are_hashed_by_the_migration(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await asyncio.to_thread(_database_at_0005_with_a_plain_token, url)
    with pytest.raises(StoreError, match="needs the token hash key: run `nanoiot db upgrade`"):
        await upgrade(url)  # no key: refused, the token kept as it was
    store = await SqlCredentialStore.open(url)  # the key is made next to the file
    try:
        match = await store.find_token(TOKEN)
        assert match is not None
        assert match.device.name == "gw"
    finally:
        await store.close()
    assert TOKEN.encode() not in (tmp_path / "old.db").read_bytes()


async def test_a_lost_key_is_not_silently_replaced(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    store = await SqlCredentialStore.open(url)
    try:
        await store.add_token_credential((await store.create_device("gw")).id, TOKEN)
    finally:
        await store.close()
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(StoreError, match=r"holds access-token hashes but .* is missing"):
        await SqlCredentialStore.open(url)
    assert not (tmp_path / KEY_FILE).exists()  # the next start refuses again
