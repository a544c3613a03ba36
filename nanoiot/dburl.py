"""Database URLs as people write them, turned into the async drivers NanoIoT runs on.

NanoIoT's store is asyncio all the way down, so SQLAlchemy needs an async driver: asyncpg for
PostgreSQL, aiosqlite for SQLite. People copy URLs from elsewhere (``postgresql://``,
Heroku-style ``postgres://``, ``sqlite:///file.db``); those name no driver, and we add ours.
A URL that names a synchronous driver, or another database, gets one line saying what to
write instead. Messages never repeat the URL: it may hold a password.

Pure string work; no SQLAlchemy import (the settings model uses this).
"""

from typing import Final

__all__ = ["normalise_database_url"]

_ASYNC_DRIVER: Final = {"postgresql": "asyncpg", "sqlite": "aiosqlite"}
# Spellings of the dialect names that people use.
_DIALECT_ALIASES: Final = {"postgres": "postgresql", "pgsql": "postgresql", "sqlite3": "sqlite"}
_EXAMPLES: Final = (
    "postgresql://user:password@host:5432/nanoiot or sqlite:////absolute/path/nanoiot.db"
)


def normalise_database_url(url: str) -> str:
    """``url`` with the async driver of its database named (``postgresql+asyncpg://``,
    ``sqlite+aiosqlite://``); ``ValueError`` with a one-line message when it cannot work."""
    scheme, separator, rest = url.strip().partition("://")
    if not separator or not scheme:
        raise ValueError(f"not a database URL (write {_EXAMPLES})")
    dialect, _, driver = scheme.lower().partition("+")
    dialect = _DIALECT_ALIASES.get(dialect, dialect)
    wanted = _ASYNC_DRIVER.get(dialect)
    if wanted is None:
        raise ValueError(
            f"'{scheme}://' is not supported: NanoIoT stores its data in PostgreSQL or SQLite "
            f"(write {_EXAMPLES})"
        )
    if driver and driver != wanted:
        raise ValueError(
            f"the driver '{driver}' is not asyncio-capable: write {dialect}+{wanted}:// "
            f"or just {dialect}://"
        )
    return f"{dialect}+{wanted}://{rest}"
