"""nanoiot.cli.import_batch on a real SQLite store: a batch is imported as if row by row."""

from collections.abc import Sequence
from pathlib import Path

from nanoiot.cli.import_batch import Row, RowOutcome, import_batch
from nanoiot.errors import ConflictError, NanoIoTError
from storage.bulk import NewDevice, Outcome
from storage.sql import SqlCredentialStore
from tests.certgen import issue


def described(outcomes: list[tuple[int, RowOutcome]]) -> list[tuple[int, str]]:
    return [
        (line, str(o) if isinstance(o, NanoIoTError) else f"created {o[0].name}")
        for line, o in outcomes
    ]


async def test_rows_are_taken_in_file_order_whatever_their_kind(
    sqlite_store: SqlCredentialStore,
) -> None:
    one, two = issue("one").cert_pem, issue("two").cert_pem
    rows: list[tuple[int, Row]] = [
        (2, {"name": "a", "token": "tok-a"}),
        (3, {"name": "a", "pem": one}),  # after the token row: its name is taken
        (5, {"name": "b", "pem": one}),
        (6, {"name": "b", "token": "tok-b"}),  # after the certificate row
        (7, "not valid JSON: Expecting value"),
        (9, {"name": "c", "pem": one}),
        (10, {"name": "d", "pem": two, "token": "tok-d"}),
        (11, {"name": "d", "pem": two, "type": "meter"}),
    ]

    outcomes = await import_batch(sqlite_store, rows, allow_expired=False)

    assert described(outcomes) == [
        (2, "created a"),
        (3, "Device with name 'a' already exists!"),
        (5, "created b"),
        (6, "Device with name 'b' already exists!"),
        (7, "not valid JSON: Expecting value"),
        (9, "Device credentials are already assigned to another device! (device 'b')"),
        (10, "'d': give exactly one of pem, pem_file or token"),
        (11, "created d"),
    ]
    assert (await sqlite_store.get_device_by_name("d")).type == "meter"


class RacedStore(SqlCredentialStore):
    """The store as PostgreSQL may answer a batch: another writer took a name between the
    batch's checks and its inserts, so the whole batch is refused (rolled back)."""

    async def create_devices_with_x509(self, devices: Sequence[NewDevice]) -> list[Outcome]:
        raise ConflictError("a device name or key was taken meanwhile")


async def test_a_batch_refused_whole_is_retried_row_by_row(tmp_path: Path) -> None:
    raced = await RacedStore.open(f"sqlite+aiosqlite:///{tmp_path / 'raced.db'}")
    try:
        await raced.create_device("taken")
        rows: list[tuple[int, Row]] = [
            (1, {"name": "taken", "pem": issue("x").cert_pem}),
            (2, {"name": "free", "pem": issue("y").cert_pem}),
        ]
        outcomes = await import_batch(raced, rows, allow_expired=False)
    finally:
        await raced.close()
    assert described(outcomes) == [
        (1, "Device with name 'taken' already exists!"),
        (2, "created free"),
    ]
