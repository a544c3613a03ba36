"""create_devices_with_x509: a batch of devices in one transaction (SQLite and PostgreSQL).

Each device must be refused or created as ``create_device_with_credential`` would have done
it one row after the other; the tests compare the two on the same sequence of devices.
"""

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from nanoiot.errors import AlreadyImportedError, NanoIoTError, StoreError, ValidationError
from storage.bulk import MAX_BATCH, NewDevice
from storage.records import ChangeKind
from storage.sql import SqlCredentialStore
from tests.storage.helpers import x509


async def one_by_one(store: SqlCredentialStore, devices: list[NewDevice]) -> list[str]:
    """What each device gives through create_device_with_credential: 'created' or the error."""
    outcomes = []
    for device in devices:
        try:
            await store.create_device_with_credential(
                device.name, type=device.type, label=device.label, x509=device.x509
            )
        except NanoIoTError as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
        else:
            outcomes.append("created")
    return outcomes


def described(outcomes: list[object]) -> list[str]:
    return [
        f"{type(o).__name__}: {o}" if isinstance(o, NanoIoTError) else "created" for o in outcomes
    ]


async def test_refuses_and_creates_as_one_by_one_would(
    store: SqlCredentialStore, tmp_path: Path
) -> None:
    kept, fresh, other, late = x509("kept"), x509("fresh"), x509("other"), x509("late")
    batch = [
        NewDevice("bad/name", x509("bad")),  # refused before the store is asked
        NewDevice("kept", x509("kept-2")),  # name taken in the store
        NewDevice("thief", kept),  # key taken in the store
        NewDevice("fresh", fresh, type="meter", label="hall"),
        NewDevice("fresh", other),  # name taken by an earlier device of the batch
        NewDevice("copy", fresh),  # key taken by an earlier device of the batch
        NewDevice("thief", late),  # free again: the first 'thief' was refused
        NewDevice("label", other, label="x" * 256),
    ]
    reference = await SqlCredentialStore.open(f"sqlite+aiosqlite:///{tmp_path / 'ref.db'}")
    try:
        for each in (store, reference):
            await each.create_device_with_credential("kept", x509=kept)
        expected = await one_by_one(reference, batch)
    finally:
        await reference.close()

    outcomes = await store.create_devices_with_x509(batch)

    assert described(list(outcomes)) == expected
    assert expected[:4] == [
        "ValidationError: invalid device name 'bad/name': it must not contain '/' (an MQTT "
        "topic separator or wildcard)",
        "ConflictError: Device with name 'kept' already exists!",
        "ConflictError: Device credentials are already assigned to another device! (device 'kept')",
        "created",
    ]
    assert [d.name for d in (await store.list_devices()).items] == ["fresh", "kept", "thief"]


async def test_records_are_those_the_store_reads_back(store: SqlCredentialStore) -> None:
    credentials = [x509(f"d{i}") for i in range(3)]
    since = await store.last_change_seq()

    outcomes = await store.create_devices_with_x509(
        [NewDevice(f"d{i}", c, type="meter", label=f"#{i}") for i, c in enumerate(credentials)]
    )

    changes = await store.changes_since(since)
    expected_changes = []
    for outcome, credential in zip(outcomes, credentials, strict=True):
        assert isinstance(outcome, tuple)
        device, stored = outcome
        assert await store.get_device_by_name(device.name) == device
        assert await store.list_credentials(device.id) == [stored]
        match = await store.find_x509(credential.spki_sha256)
        assert match is not None
        assert (match.device, match.credential) == (device, stored)
        expected_changes += [
            (ChangeKind.DEVICE_CREATED, device.id, None),
            (ChangeKind.CREDENTIAL_ADDED, device.id, stored.id),
        ]
    assert [(c.kind, c.device_id, c.credential_id) for c in changes] == expected_changes


async def test_the_same_device_again_is_already_imported(store: SqlCredentialStore) -> None:
    credential = x509("again")
    await store.create_devices_with_x509([NewDevice("again", credential)])

    (outcome,) = await store.create_devices_with_x509([NewDevice("again", credential)])

    assert isinstance(outcome, AlreadyImportedError)
    assert str(outcome) == (
        "Device with name 'again' already exists! (with this certificate: imported before)"
    )


async def test_a_failure_inside_the_transaction_leaves_none_of_the_batch(
    store: SqlCredentialStore, store_url: str
) -> None:
    """The database refuses the change-feed rows, after the devices and credentials went in:
    the whole batch is rolled back."""
    await store.create_devices_with_x509([NewDevice("before", x509("before"))])
    async with _refusing_change_rows(store_url):
        with pytest.raises(StoreError):
            await store.create_devices_with_x509(
                [NewDevice(f"lost-{i}", x509(f"lost-{i}")) for i in range(3)]
            )
    assert [d.name for d in (await store.list_devices()).items] == ["before"]
    assert (await store.changes_since(0))[-1].device_id == (
        await store.get_device_by_name("before")
    ).id


async def test_a_batch_is_bounded(store: SqlCredentialStore) -> None:
    same = x509("same")
    with pytest.raises(ValidationError, match="at most 10,000 devices per batch"):
        await store.create_devices_with_x509([NewDevice("x", same)] * (MAX_BATCH + 1))


@asynccontextmanager
async def _refusing_change_rows(url: str) -> AsyncIterator[None]:
    """A trigger that makes the database refuse every INSERT into ``changes``, meanwhile."""
    postgres = "postgresql" in url
    await _execute(url, *(_PG_TRIGGER if postgres else _SQLITE_TRIGGER))
    try:
        yield
    finally:
        await _execute(url, "DROP TRIGGER refuse_changes" + (" ON changes" if postgres else ""))


async def _execute(url: str, *statements: str) -> None:
    if "postgresql" in url:
        connection = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()
        return
    with sqlite3.connect(url.split("///", 1)[1]) as connection:
        for statement in statements:
            connection.execute(statement)


_SQLITE_TRIGGER = (
    "CREATE TRIGGER refuse_changes BEFORE INSERT ON changes "
    "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END",
)
_PG_TRIGGER = (
    "CREATE OR REPLACE FUNCTION refuse_changes() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$",
    "CREATE TRIGGER refuse_changes BEFORE INSERT ON changes "
    "FOR EACH ROW EXECUTE FUNCTION refuse_changes()",
)
