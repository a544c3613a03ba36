"""Schema migrations: the only way the store's tables are made or changed.

Alembic is configured in code, with the migration scripts found in the installed package
(``storage/migrations``), so it works from any working directory and needs no alembic.ini.

Alembic itself (with Mako, some 8 MiB of a broker's memory) is imported only to migrate: a
store already at the newest schema, every start but the first, is checked without it (the
head from the scripts' ``revision``/``down_revision`` lines, the database's revision from
Alembic's ``alembic_version`` table).

Migrations run one at a time in a process (``_one_migration_at_a_time``): Alembic keeps the
running one in module globals.
"""

import ast
import asyncio
import functools
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from nanoiot.errors import StoreError
from storage.engine import create_engine, mapped_errors, write_engine

if TYPE_CHECKING:
    from alembic.config import Config

NOT_UP_TO_DATE = "database schema is not up to date: run `nanoiot db upgrade`"
_VERSIONS = Path(__file__).with_name("migrations") / "versions"
_VERSION_TABLE = "alembic_version"  # Alembic's default, which env.py keeps

# Alembic's ``context`` and ``op`` are process-wide proxies to the migration that runs. Two at
# once, from two threads or from two tasks of one event loop (their run_sync greenlets take
# turns at every statement), drive each other's: one fails (KeyError 'script', a table made
# twice) or runs on the other's connection and hangs. So a process migrates one database at a
# time: a thread lock, since stores may be opened on several loops (threads), taken by one
# task per loop (the loop's asyncio.Lock) so that waiting tasks hold no worker threads.
_MIGRATING = threading.Lock()
_LOOP_TURNS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]" = (
    weakref.WeakKeyDictionary()
)


def alembic_config(url: str = "") -> "Config":
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "storage:migrations")
    config.set_main_option("path_separator", "os")
    # ConfigParser interpolation would read a '%' in a password as a reference.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@functools.cache
def head_revision() -> str:
    """The one revision no script revises (tests check it is Alembic's head too)."""
    revises: dict[str, str | None] = {}
    for script in _VERSIONS.glob("*.py"):
        values = _assignments(script)
        if "revision" in values:
            revises[str(values["revision"])] = values.get("down_revision")
    heads = set(revises) - set(revises.values())
    assert len(heads) == 1, f"storage/migrations/versions has heads {sorted(heads)}, not one"
    return heads.pop()


def _assignments(script: Path) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for node in ast.parse(script.read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
            constant = value.value
            values[target.id] = constant if isinstance(constant, str) else None
    return values


async def upgrade(url: str, *, token_hash_key: bytes | None = None) -> str:
    """Upgrade the database at ``url`` to the newest schema; returns the revision it is at.

    ``token_hash_key`` (storage.secrets) is needed when stored access tokens are to be hashed.
    """
    engine = create_engine(url)
    try:
        return await upgrade_engine(engine, url, token_hash_key=token_hash_key)
    finally:
        await engine.dispose()


async def current_revision(url: str) -> str | None:
    """The schema revision of the database at ``url``; None for an empty database."""
    engine = create_engine(url)
    try:
        return await current_revision_engine(engine, url)
    finally:
        await engine.dispose()


async def upgrade_engine(
    engine: AsyncEngine, url: str, *, token_hash_key: bytes | None = None
) -> str:
    config = alembic_config(url)
    config.attributes["token_hash_key"] = token_hash_key
    with mapped_errors(url), _alembic_errors():
        # One transaction: on SQLite it holds the write lock, so two processes opening a new
        # database at once do not both create the tables.
        async with _one_migration_at_a_time(), write_engine(engine).begin() as connection:
            await connection.run_sync(_upgrade_sync, config)
    revision = await current_revision_engine(engine, url)
    assert revision is not None
    return revision


async def current_revision_engine(engine: AsyncEngine, url: str) -> str | None:
    with mapped_errors(url):
        async with engine.connect() as connection:
            return await connection.run_sync(_current_sync)


async def require_head(engine: AsyncEngine, url: str) -> None:
    """Raise StoreError unless the database's schema is the newest this code knows."""
    current = await current_revision_engine(engine, url)
    if current != head_revision():
        raise StoreError(f"{NOT_UP_TO_DATE} (it is at {current or 'no revision'})")


@asynccontextmanager
async def _one_migration_at_a_time() -> AsyncIterator[None]:
    """Hold the process's migration lock (see _MIGRATING) without blocking the event loop."""
    async with _LOOP_TURNS.setdefault(asyncio.get_running_loop(), asyncio.Lock()):
        if not _MIGRATING.acquire(blocking=False):
            # Held by another thread's loop: wait for it in a worker thread.
            waiter = _LockWaiter()
            try:
                await asyncio.to_thread(waiter.acquire)
            except BaseException:
                waiter.abandon()
                raise
        try:
            yield
        finally:
            _MIGRATING.release()


class _LockWaiter:
    """Takes _MIGRATING in a worker thread for a task, and gives it back if the task stopped
    waiting (cancelled, or its loop closed) before or after the thread got it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._abandoned = False
        self._holds = False

    def acquire(self) -> None:
        _MIGRATING.acquire()
        with self._guard:
            if self._abandoned:
                _MIGRATING.release()
            else:
                self._holds = True

    def abandon(self) -> None:
        with self._guard:
            self._abandoned = True
            if self._holds:
                _MIGRATING.release()


def _upgrade_sync(connection: Connection, config: "Config") -> None:
    from alembic import command

    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _current_sync(connection: Connection) -> str | None:
    if not inspect(connection).has_table(_VERSION_TABLE):
        return None
    rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    if len(rows) > 1:  # several branches: Alembic says what that means
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(connection).get_current_revision()
    return str(rows[0][0]) if rows else None


@contextmanager
def _alembic_errors() -> Iterator[None]:
    from alembic.util import CommandError

    # Alembic reports a revision it does not know (a newer schema) as CommandError.
    try:
        yield
    except CommandError as exc:
        raise StoreError(f"cannot migrate the database: {exc}") from exc
