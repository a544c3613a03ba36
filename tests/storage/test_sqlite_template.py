"""The migrated SQLite database the test fixtures copy (tests.sqlite_template) is exactly what
opening a new store makes: the same schema, revision, journal mode and rows."""

import sqlite3
import stat
from contextlib import closing
from pathlib import Path

from storage.sql import SqlCredentialStore
from tests.sqlite_template import migrated_sqlite, sqlite_url


def _clauses(sql: str | None) -> list[str]:
    """A statement's lines, sorted: a migration that rebuilds a table on SQLite (Alembic's
    batch mode) writes its constraints in an order that varies from one process to the next,
    so two fresh databases differ in that order alone."""
    return sorted(line.strip().rstrip(",") for line in (sql or "").splitlines())


def _contents(database: Path) -> dict[str, object]:
    """Everything a database holds that a test could see: its schema (tables, indexes,
    triggers, views with their SQL), its settings in the file header and every row."""
    with closing(sqlite3.connect(database)) as connection:
        schema = sorted(
            (kind, name, table, _clauses(sql))
            for kind, name, table, sql in connection.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master"
            )
        )
        tables = [name for kind, name, _, _ in schema if kind == "table"]
        return {
            "schema": schema,
            "rows": {t: sorted(connection.execute(f'SELECT * FROM "{t}"')) for t in tables},  # noqa: S608
            **{
                pragma: connection.execute(f"PRAGMA {pragma}").fetchall()
                for pragma in ("journal_mode", "user_version", "application_id", "auto_vacuum")
            },
        }


async def test_a_copied_template_is_what_opening_a_new_store_makes(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh" / "nanoiot.db"
    store = await SqlCredentialStore.open(sqlite_url(fresh), data_dir=tmp_path / "fresh")
    await store.close()
    copied = tmp_path / "copied" / "nanoiot.db"
    migrated_sqlite(copied)
    made = _contents(fresh)
    assert made["schema"], "the fresh store has no tables"
    assert _contents(copied) == made
    for path in (copied.parent, copied):
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(
            (fresh.parent if path.is_dir() else fresh).stat().st_mode
        )


async def test_a_copy_opens_as_a_store_of_its_own(tmp_path: Path) -> None:
    """Two copies share nothing: a device made in one is not in the other."""
    first, second = tmp_path / "one.db", tmp_path / "two.db"
    stores = [
        await SqlCredentialStore.open(migrated_sqlite(path), data_dir=tmp_path)
        for path in (first, second)
    ]
    try:
        await stores[0].create_device("meter")
        assert (await stores[1].list_devices()).total == 0
        assert (await stores[0].list_devices()).total == 1
    finally:
        for store in stores:
            await store.close()
