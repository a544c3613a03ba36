"""Driver errors become ours at the store's edge, with one line and no password."""

import socket
from pathlib import Path

import pytest

from nanoiot.errors import ConflictError, StoreError, StoreUnavailableError
from storage import credentials, sql
from storage.sql import SqlCredentialStore
from tests.storage.helpers import x509


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: nothing listens there now


async def test_unreachable_postgres_is_unavailable_without_the_password() -> None:
    url = f"postgresql+asyncpg://nanoiot:hunter2-secret@127.0.0.1:{_closed_port()}/nanoiot"
    with pytest.raises(StoreUnavailableError) as caught:
        await SqlCredentialStore.open(url)
    message = str(caught.value)
    assert "hunter2-secret" not in message
    assert "nanoiot:***@127.0.0.1" in message
    assert "\n" not in message


async def test_a_password_given_as_a_query_parameter_is_masked_too() -> None:
    # asyncpg takes ?password= as the password (SQLAlchemy passes query parameters on).
    url = f"postgresql+asyncpg://nanoiot@127.0.0.1:{_closed_port()}/nanoiot?password=hunter2-q"
    with pytest.raises(StoreUnavailableError) as caught:
        await SqlCredentialStore.open(url)
    message = str(caught.value)
    assert "hunter2-q" not in message
    assert "nanoiot@127.0.0.1" in message
    assert "password=***" in message


async def test_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    directory = tmp_path / "is-a-directory.db"
    directory.mkdir()
    with pytest.raises(StoreUnavailableError, match="unable to open database"):
        await SqlCredentialStore.open(f"sqlite+aiosqlite:///{directory}")


async def test_data_directory_that_cannot_be_made_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailableError, match="cannot create the data directory"):
        await SqlCredentialStore.open(f"sqlite+aiosqlite:///{blocker / 'db' / 'x.db'}")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a database URL"),
        ("sqlite+aiosqlite://", "in-memory SQLite is not supported"),
        ("sqlite+aiosqlite:///:memory:", "in-memory SQLite is not supported"),
    ],
)
async def test_unusable_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        await SqlCredentialStore.open(url)


async def test_unique_index_decides_a_race(
    store: SqlCredentialStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer may insert between our check and our insert: the index still refuses."""
    first = await store.create_device("first")
    parsed = x509()
    await store.add_x509_credential(first.id, parsed)

    async def no_check(*_args: object) -> None:
        return None

    monkeypatch.setattr(credentials, "_check_key_free", no_check)
    monkeypatch.setattr(sql, "_check_name_free", no_check)
    with pytest.raises(ConflictError, match="Specified credentials are already registered!"):
        await store.add_x509_credential(first.id, parsed)
    with pytest.raises(ConflictError, match="Device with name 'first' already exists!"):
        await store.create_device("first")
    assert [d.name for d in (await store.list_devices()).items] == ["first"]


async def test_a_failed_write_leaves_no_lock_behind(
    store: SqlCredentialStore, other_store: SqlCredentialStore
) -> None:
    await store.create_device("taken")
    with pytest.raises(ConflictError):
        await store.create_device("taken")
    # Another process writes at once; a lingering SQLite write lock would make it wait out
    # the busy timeout and fail.
    await other_store.create_device("free")
    assert (await store.list_devices()).total == 2
