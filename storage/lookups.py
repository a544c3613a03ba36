"""The connect-path lookups: one indexed join each, as lean as the drivers allow.

Core, not the ORM: an ORM session (identity map, unit of work, greenlet hand-offs) more than
doubled the latency in ``bench/store_bench.py``. The selected columns follow the record
fields by name, so a row turns straight into records.

On SQLite a lookup runs synchronously, on the event loop's thread, over a read-only sqlite3
connection of its own. That blocks the loop for the query itself, some 30 microseconds of an
indexed read that WAL mode never makes wait for a writer. The asynchronous way costs more
than it saves: aiosqlite runs each call in a worker thread, and the hand-offs there and back
took 0.5 ms of CPU per lookup and several milliseconds at p99 on a busy machine. Should the
read ever have to wait (SQLITE_BUSY, which WAL readers meet only in rare recovery cases), it
does not: it falls back to the pooled asynchronous connection, which waits its busy timeout
without blocking the loop. SQLAlchemy still compiles the SQL and converts the values with its
own result processors, so both ways return the same values.

On PostgreSQL a lookup runs on a small asyncpg pool of its own, for the same reason: the
SQLAlchemy connection round (checkout, greenlet switches, result wrapping) added about
0.4 ms of CPU to a 0.3 ms query and doubled the p99. asyncpg prepares each statement once
per connection. Any other database goes through SQLAlchemy.
"""

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

from sqlalchemy import Select, bindparam, null, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.engine import Timeouts
from storage.models import Base
from storage.records import Credential, CredentialMatch, Device

_DEVICES = Base.metadata.tables["devices"]
_CREDENTIALS = Base.metadata.tables["credentials"]
_DEVICE_COLUMNS = [_DEVICES.c[f.name] for f in fields(Device)]
# A record's ``token`` has no column (the store keeps its hash only): always NULL here.
_CREDENTIAL_COLUMNS = [
    _CREDENTIALS.c[f.name] if f.name in _CREDENTIALS.c else null().label(f.name)
    for f in fields(Credential)
]
_SPLIT = len(_DEVICE_COLUMNS)
_END = _SPLIT + len(_CREDENTIAL_COLUMNS)


def _match_query(column: str) -> Select[Any]:
    return (
        select(*_DEVICE_COLUMNS, *_CREDENTIAL_COLUMNS, _CREDENTIALS.c.password_hash)
        .join_from(_DEVICES, _CREDENTIALS, _CREDENTIALS.c.device_id == _DEVICES.c.id)
        .where(_CREDENTIALS.c[column] == bindparam("key"))
    )


# Built once: building a statement and its cache key per call cost more than running it.
# Each selects the device and credential whose unique lookup key equals :key; the password
# hash comes last, for check_basic, and never reaches a record.
BY_SPKI = _match_query("spki_sha256")
BY_TOKEN = _match_query("token_hash")  # the key is the token's digest (storage.secrets)
BY_USERNAME = _match_query("username")
_LAST_CHANGE_SEQ = "SELECT coalesce(max(seq), 0) FROM changes"

_Processor = Callable[[Any], Any] | None  # a SQLAlchemy result processor


class _WouldWait(Exception):
    """The local read cannot proceed at once; the pooled asynchronous path takes over."""


class Lookups:
    """Runs the prebuilt lookup statements; ``engine`` is a read engine (no BEGIN)."""

    def __init__(self, engine: AsyncEngine, timeouts: Timeouts | None = None) -> None:
        self._engine = engine
        self._local: _LocalSqlite | None = None
        self._asyncpg: _AsyncpgLookups | None = None
        database = engine.url.database or ""
        # A plain file path; URI or query options are left to the pooled connection.
        plain_file = database not in ("", ":memory:") and not database.startswith("file:")
        if engine.dialect.name == "sqlite" and plain_file and not engine.url.query:
            self._local = _LocalSqlite(database, engine.dialect)
        if engine.dialect.name == "postgresql" and engine.dialect.driver == "asyncpg":
            self._asyncpg = _AsyncpgLookups(engine, timeouts or Timeouts())

    async def first(self, query: Select[Any], key: str) -> Sequence[Any] | None:
        if self._local is not None:
            with contextlib.suppress(_WouldWait):
                return self._local.first(query, key)
        if self._asyncpg is not None:
            return await self._asyncpg.first(query, key)
        async with self._engine.connect() as connection:
            row = (await connection.execute(query, {"key": key})).first()
            return tuple(row) if row is not None else None

    async def change_marker(self) -> int | None:
        """A number that stays the same while the change feed cannot have grown, or None
        where no cheap check exists (then the feed itself must be read).

        It is the feed's highest seq, read with the lookups' own means (SQLite's local
        connection, some ten microseconds; PostgreSQL's lookup pool), where writers of the
        feed are serialised, so a commit of a change always raises it. A follower with nothing
        to do then costs next to nothing, instead of an ORM query four times a second, and
        other commits (auth events, session writes) do not make it read the feed.
        """
        if self._local is not None:
            with contextlib.suppress(_WouldWait):
                return self._local.last_change_seq()
        if self._asyncpg is not None:
            return await self._asyncpg.last_change_seq()
        return None

    async def close(self) -> None:
        if self._local is not None:
            self._local.close()
        if self._asyncpg is not None:
            await self._asyncpg.close()


class _AsyncpgLookups:
    """An asyncpg pool for the lookups, connected as the engine would connect."""

    def __init__(self, engine: AsyncEngine, timeouts: Timeouts) -> None:
        self._compiled = {q: _compile(q, engine.dialect) for q in (BY_SPKI, BY_TOKEN, BY_USERNAME)}
        _, options = engine.dialect.create_connect_args(engine.url)
        # Options of SQLAlchemy's asyncpg adapter, not of asyncpg.connect().
        for adapter_only in ("prepared_statement_cache_size", "prepared_statement_name_func"):
            options.pop(adapter_only, None)
        for name, value in timeouts.asyncpg_options().items():
            options.setdefault(name, value)
        self._options = options
        self._pool: Any = None
        self._starting = asyncio.Lock()

    async def first(self, query: Select[Any], key: str) -> Sequence[Any] | None:
        sql, processors = self._compiled[query]
        try:
            record = await self._fetchrow(sql, key)
        except _connection_errors():
            # A pooled connection the server has ended while idle (a restart, an admin's
            # pg_terminate_backend) fails only when next used. A lookup only reads, so one
            # retry on a fresh connection is safe; a second failure is reported.
            record = await self._fetchrow(sql, key)
        if record is None:
            return None
        return tuple(p(v) if p else v for p, v in zip(processors, record, strict=True))

    async def last_change_seq(self) -> int | None:
        try:
            record = await self._fetchrow(_LAST_CHANGE_SEQ)
        except Exception:  # the feed query that follows maps and reports it
            return None
        return int(record[0])

    async def _fetchrow(self, sql: str, *args: str) -> Any:
        pool = self._pool or await self._start()
        async with pool.acquire() as connection:
            try:
                return await connection.fetchrow(sql, *args)
            except BaseException:
                # Its state is unknown now (a terminated session, a cancelled query); with no
                # reset on release, only a closed connection is sure to be replaced.
                connection.terminate()
                raise

    async def _start(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        async with self._starting:  # one pool, even when the first lookups come together
            if self._pool is None:
                # min_size=0: connections are opened when lookups need them, not up front.
                # reset: these connections only ever run the lookups, so there is no session
                # state to clear; asyncpg's default reset is a round trip per lookup.
                self._pool = await asyncpg.create_pool(
                    min_size=0, max_size=5, reset=_keep_session, **self._options
                )
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


class _LocalSqlite:
    """A read-only sqlite3 connection used from the event loop's thread only."""

    def __init__(self, path: str, dialect: Dialect) -> None:
        self._path = path
        self._compiled = {q: _compile(q, dialect) for q in (BY_SPKI, BY_TOKEN, BY_USERNAME)}
        self._connection: sqlite3.Connection | None = None

    def first(self, query: Select[Any], key: str) -> Sequence[Any] | None:
        sql, processors = self._compiled[query]
        try:
            if self._connection is None:
                self._connection = _connect_read_only(self._path)
            # fetchall() runs the statement to its end, so no read snapshot stays open.
            rows = self._connection.execute(sql, (key,)).fetchall()
        except sqlite3.OperationalError as exc:  # busy, locked, gone: the pool waits or reports
            self.close()
            raise _WouldWait from exc
        except sqlite3.ProgrammingError as exc:  # used from another thread than it opened on
            raise _WouldWait from exc
        if not rows:
            return None
        return tuple(p(v) if p else v for p, v in zip(processors, rows[0], strict=True))

    def last_change_seq(self) -> int:
        try:
            if self._connection is None:
                self._connection = _connect_read_only(self._path)
            return int(self._connection.execute(_LAST_CHANGE_SEQ).fetchone()[0])
        except sqlite3.OperationalError as exc:
            self.close()
            raise _WouldWait from exc
        except sqlite3.ProgrammingError as exc:
            raise _WouldWait from exc

    def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            # From another thread it cannot be closed; it is freed with the object.
            with contextlib.suppress(sqlite3.ProgrammingError):
                connection.close()


def _connection_errors() -> tuple[type[Exception], ...]:
    import asyncpg

    return (
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,  # "another operation is in progress" after a FATAL
        asyncpg.PostgresConnectionError,
        asyncpg.exceptions.OperatorInterventionError,
        OSError,
    )


async def _keep_session(_connection: object) -> None:
    return None


def _connect_read_only(path: str) -> sqlite3.Connection:
    # timeout=0: never wait for a lock on the loop's thread. isolation_level=None: no
    # implicit transactions, each lookup reads the newest committed data.
    connection = sqlite3.connect(path, timeout=0, isolation_level=None)
    connection.execute("PRAGMA query_only=ON")
    # 2 MiB of page cache, not the pool's 64 MiB: every connect reads a device's own pages,
    # so a large cache grows with the devices that ever connected (RSS that looks like a
    # cost per connection). Pages it misses come from the OS page cache; at 100,000
    # devices the lookup's CPU was the same (0.066 ms) with either size.
    connection.execute("PRAGMA cache_size=-2048")
    return connection


def _compile(query: Select[Any], dialect: Dialect) -> tuple[str, list[_Processor]]:
    processors: list[_Processor] = []
    for column in query.selected_columns:
        processors.append(column.type.dialect_impl(dialect).result_processor(dialect, None))
    return str(query.compile(dialect=dialect)), processors


def to_match(row: Sequence[Any]) -> CredentialMatch:
    return CredentialMatch(Device(*row[:_SPLIT]), Credential(*row[_SPLIT:_END]))


def password_hash(row: Sequence[Any]) -> str | None:
    value = row[_END]
    return value if isinstance(value, str) else None
