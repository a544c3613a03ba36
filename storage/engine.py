"""Engines for the store, and the one place where database driver errors become ours.

SQLite (``sqlite+aiosqlite:///path``) is set up so that a CLI process and a running server can
share the file: WAL journal (readers never block the writer), a busy timeout (a writer waits
for the other instead of failing at once) and foreign keys on (off by default in SQLite, and
the credentials' ON DELETE CASCADE needs them). PostgreSQL is ``postgresql+asyncpg://``.

``Timeouts`` bound how long the store waits for the database, so that a hung server (stopped,
paused, behind a dead network path) fails a call instead of holding it: opening a connection
(PostgreSQL) and one statement (PostgreSQL: asyncpg's client-side command timeout, which
cancels the query; SQLite: the busy timeout, how long a statement waits for another
process's lock). Either becomes ``StoreUnavailableError`` saying the database is not
answering. On PostgreSQL the statement timeout also bounds how long one of the store's
transactions may stay idle (``idle_in_transaction_session_timeout``): a node that stops
mid-transaction does not hold its locks for as long as it stays stopped.
"""

import functools
import re
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from nanoiot.errors import ConflictError, StoreError, StoreUnavailableError

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    # 64 MiB of page cache (the default is 2 MiB): the lookup indexes of 10^5..10^6 devices
    # stay in memory. It is allocated as pages are read, not up front.
    "PRAGMA cache_size=-65536",
)
_BEGIN_OPTION = "nanoiot_sqlite_begin"


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# Query parameters that hold a secret: SQLAlchemy hands every query parameter to the driver
# as a connect argument, so ``?password=...`` is as much the password as ``user:...@``.
_SECRET_PARAMETER = re.compile(r"pass|secret|token", re.IGNORECASE)
_HIDDEN = "NANOIOT-HIDDEN"


def masked(url: str | URL) -> str:
    """The URL as safe to show: the password, and any query parameter holding one, as ***."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "<unparsable database URL>"
    secret = {key: _HIDDEN for key in parsed.query if _SECRET_PARAMETER.search(key)}
    shown = parsed.update_query_dict(secret) if secret else parsed
    return shown.render_as_string(hide_password=True).replace(_HIDDEN, "***")


@dataclass(frozen=True)
class Timeouts:
    """Seconds the store waits for the database (the settings database_connect_timeout and
    database_statement_timeout); ``statement`` None: no bound on PostgreSQL (migrations),
    5 s of busy timeout on SQLite."""

    connect: float = 5.0  # asyncpg's own default is 60 s; a CLI should fail faster
    statement: float | None = None

    @property
    def sqlite_busy_ms(self) -> int:
        return int((self.statement if self.statement is not None else 5.0) * 1000)

    def asyncpg_options(self) -> dict[str, object]:
        options: dict[str, object] = {"timeout": self.connect}
        if self.statement is not None:
            options["command_timeout"] = self.statement
            # A transaction of ours waits for its client only between two statements. One
            # idle longer than a statement may take is a client that stopped (a process
            # paused, a VM frozen): PostgreSQL ends it, so that its row locks do not hold
            # the other nodes' writes to the same sessions for as long as it stays stopped.
            idle_ms = str(max(int(self.statement * 1000), 1))
            options["server_settings"] = {"idle_in_transaction_session_timeout": idle_ms}
        return options


def create_engine(url: str, timeouts: Timeouts | None = None) -> AsyncEngine:
    """An async engine for ``url`` with our per-connection settings applied."""
    timeouts = timeouts or Timeouts()
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"not a database URL: {masked(url)}") from None
    if parsed.get_backend_name() != "sqlite":
        is_asyncpg = parsed.get_driver_name() == "asyncpg"
        connect_args = timeouts.asyncpg_options() if is_asyncpg else {}
        # pool_pre_ping: after a server restart the first write gets a fresh connection
        # instead of an error (the connect-path lookups use their own pool, storage.lookups).
        # skip_autocommit_rollback: no ROLLBACK round when a read connection is returned.
        return create_async_engine(
            parsed,
            connect_args=connect_args,
            pool_pre_ping=True,
            skip_autocommit_rollback=True,
        )
    # No rollback when a connection goes back to the pool: with the driver's implicit BEGIN
    # off (below), a connection is only in a transaction that SQLAlchemy began, and a
    # Connection ends its own transaction when closed. The rollback is one more thread
    # hand-off into aiosqlite on every use, a third of a single-row read's CPU time.
    engine = create_async_engine(parsed, pool_reset_on_return=None)
    on_connect = functools.partial(_sqlite_on_connect, busy_ms=timeouts.sqlite_busy_ms)
    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
    return engine


def read_engine(engine: AsyncEngine) -> AsyncEngine:
    """For single-statement reads (the connect-path lookups): no transaction round trips."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_BEGIN_OPTION: None})
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def write_engine(engine: AsyncEngine) -> AsyncEngine:
    """For read-then-write transactions.

    SQLite: BEGIN IMMEDIATE takes the write lock up front. A deferred transaction that reads
    first fails with SQLITE_BUSY when another process wrote meanwhile, busy timeout or not.
    """
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: object, *, busy_ms: int) -> None:
    # The driver's own implicit BEGIN would come too late for IMMEDIATE; _sqlite_on_begin
    # emits BEGIN instead (the recipe of SQLAlchemy's SQLite dialect documentation).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    options: Mapping[str, Any] = connection.get_execution_options()
    mode = options.get(_BEGIN_OPTION, "DEFERRED")
    if mode:
        connection.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def mapped_errors(url: str, conflict: str = "already registered") -> Iterator[None]:
    """Turn driver and SQLAlchemy errors into StoreError subclasses with one-line messages.

    ``conflict`` is the message for a unique-constraint violation that slipped past the
    method's own checks (two writers racing for the same name or key).
    """
    try:
        yield
    except IntegrityError:
        raise ConflictError(conflict) from None
    except (OperationalError, InterfaceError, DisconnectionError, TimeoutError) as exc:
        raise StoreUnavailableError(_unavailable(url, exc)) from exc
    except SQLAlchemyError as exc:
        if _is_connection_problem(exc):
            raise StoreUnavailableError(_unavailable(url, exc)) from exc
        raise StoreError(f"database error: {_one_line(url, exc)}") from exc
    except (OSError, sqlite3.OperationalError) as exc:
        raise StoreUnavailableError(_unavailable(url, exc)) from exc
    except sqlite3.Error as exc:  # raised directly by the lookups' aiosqlite fast path
        raise StoreError(f"database error: {_one_line(url, exc)}") from exc
    except Exception as exc:
        if _is_connection_problem(exc):
            raise StoreUnavailableError(_unavailable(url, exc)) from exc
        if _is_asyncpg_error(exc):  # raised directly by the lookups' asyncpg pool
            raise StoreError(f"database error: {_one_line(url, exc)}") from exc
        raise


def _unavailable(url: str, exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    if any(isinstance(e, TimeoutError) for e in (exc, orig, getattr(orig, "__cause__", None))):
        # A connect or statement timeout: the server is there but does not answer.
        return f"the database {masked(url)} is not answering (no reply within its timeout)"
    return f"cannot use the database {masked(url)}: {_one_line(url, exc)}"


def _one_line(url: str, exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    text = lines[0][:300]
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def _secrets(url: str) -> list[str]:
    """The URL's password and its secret query parameters' values (see ``masked``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return []
    found = [str(parsed.password)] if parsed.password else []
    for key, value in parsed.query.items():
        if _SECRET_PARAMETER.search(key):
            found += [value] if isinstance(value, str) else list(value)
    return [secret for secret in found if secret]


def _is_connection_problem(exc: Exception) -> bool:
    """A lost connection, or asyncpg refusing to connect (no such database, no such role)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - only PostgreSQL needs it
        return False
    refusals = (
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,  # a session the server ended mid-use
        asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, server starting
        asyncpg.InvalidCatalogNameError,
        # 55000 at connect: the database is closed to connections (ALLOW_CONNECTIONS false).
        asyncpg.exceptions.ObjectNotInPrerequisiteStateError,
        asyncpg.InvalidAuthorizationSpecificationError,
        asyncpg.InvalidPasswordError,
    )
    # SQLAlchemy's asyncpg adapter wraps the driver's error; the original is its cause.
    orig = getattr(exc, "orig", None)
    candidates = (exc, orig, getattr(orig, "__cause__", None))
    return any(isinstance(candidate, refusals) for candidate in candidates)


def _is_asyncpg_error(exc: Exception) -> bool:
    try:
        import asyncpg
    except ImportError:  # pragma: no cover - only PostgreSQL needs it
        return False
    return isinstance(exc, asyncpg.PostgresError)
