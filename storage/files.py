"""Where the store's files live: the data directory and the SQLite database file.

Both are created private (0700 and 0600: the database holds password hashes and the CA
configuration), and a database file that cannot be used is refused with a clear error before
any connection is made.
"""

import os
from pathlib import Path

from sqlalchemy.engine import make_url

from nanoiot.errors import StoreError, StoreUnavailableError
from storage.engine import is_sqlite, masked
from storage.secrets import create_private_file


def prepare_files(url: str, data_dir: Path | None) -> None:
    """Create the data directory and the SQLite file's directory; check the file is usable.

    The check runs before connecting because aiosqlite, when its connect fails, leaves a
    worker thread that reports "Event loop is closed" once asyncio.run() has returned.
    """
    try:
        # 0o700: the database holds password hashes and the CA configuration.
        if data_dir is not None:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not is_sqlite(url):
            return
        database = make_url(url).database
        if not database or database == ":memory:":
            # Every pooled connection would get its own empty database.
            raise StoreError("in-memory SQLite is not supported: give a file path")
        if database.startswith("file:"):
            return
        path = Path(database)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists() and path.parent.is_dir():
            create_private_file(path)  # 0600; SQLite gives -wal and -shm the same mode
    except OSError as exc:
        raise StoreUnavailableError(
            f"cannot create the data directory for {masked(url)}: {exc.strerror}"
        ) from exc
    if path.exists() and not path.is_file():
        raise StoreUnavailableError(f"unable to open database file {path}: not a regular file")
    if not os.access(path if path.exists() else path.parent, os.R_OK | os.W_OK):
        raise StoreUnavailableError(f"unable to open database file {path}: permission denied")
