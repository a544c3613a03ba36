"""Migrated SQLite databases for tests, copied from one template a test process migrates.

Opening a new SQLite store runs every migration (storage.migrate): some 0.1 to 0.35 s, paid
again by each of several hundred tests. The first call here migrates an empty database once
(in a temporary folder removed when the process ends); each call then copies that file, which
takes about a millisecond. The copy is the migrations' own output
(tests/storage/test_sqlite_template.py compares it with a freshly migrated database). Tests of
what opening a new file does (creating folders, their modes, migrating) use their own paths.
"""

import asyncio
import atexit
import shutil
import tempfile
import threading
from pathlib import Path

from storage.migrate import upgrade

_made = threading.Lock()
_template: Path | None = None


def sqlite_url(database: Path) -> str:
    return f"sqlite+aiosqlite:///{database}"


def migrated_sqlite(database: Path) -> str:
    """A migrated, empty SQLite database at ``database`` (its folder made 0700, the file
    0600, as the store makes them); its URL."""
    database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copyfile(_template_file(), database)
    database.chmod(0o600)
    return sqlite_url(database)


def _template_file() -> Path:
    global _template
    with _made:
        if _template is None:
            folder = Path(tempfile.mkdtemp(prefix="nanoiot-template-"))
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            _template = _migrate(folder / "template.db")
        return _template


def _migrate(database: Path) -> Path:
    """``database`` upgraded to the newest schema, in a thread of its own: the caller may be
    inside a running event loop (an async fixture), where asyncio.run cannot be called."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(upgrade(sqlite_url(database)))
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=run, name="sqlite-template")
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return database
