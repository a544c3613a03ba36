"""``nanoiot db wait``: block until the configured database answers, within a bound.

A container starts next to its database, which may still be starting or not yet resolvable by
name. Start-up scripts (``scripts/entrypoint``) run this before ``nanoiot db upgrade`` so that
a slow database delays the start instead of failing it, and a database that never comes gives
one clear line and a non-zero exit instead of an endless wait.
"""

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nanoiot.cli.common import run, state
from nanoiot.errors import StoreUnavailableError

if TYPE_CHECKING:  # SQLAlchemy is imported when used: `nanoiot --help` need not load it
    from sqlalchemy.ext.asyncio import AsyncEngine

RETRY_INTERVAL = 1.0  # seconds between attempts: polling another process, bounded by --timeout

TimeoutOption = Annotated[
    float,
    typer.Option("--timeout", "-t", min=0, help="Give up after this many seconds."),
]


def wait(ctx: typer.Context, timeout: TimeoutOption = 60.0) -> None:
    """Wait until the configured database accepts connections (exit 1 after --timeout).

    SQLite needs no waiting: its folder is created if missing, so that `nanoiot db upgrade`
    can create the file.
    """
    from storage.engine import is_sqlite, masked

    url = state(ctx).settings.effective_database_url
    if is_sqlite(url):
        _make_sqlite_folder(url)
        print(f"database {masked(url)} is SQLite: nothing to wait for")
        return
    attempts = run(lambda: wait_for_database(url, timeout))
    print(f"database {masked(url)} answers (attempt {attempts})")


def _say_waiting(within: float, reason: str) -> None:
    print(f"waiting up to {within:g} s for the database: {reason}", file=sys.stderr)


async def wait_for_database(
    url: str,
    within: float,
    interval: float = RETRY_INTERVAL,
    on_first_failure: Callable[[float, str], None] = _say_waiting,
) -> int:
    """Try ``SELECT 1`` until it succeeds; the number of attempts it took.

    After the first failed attempt ``on_first_failure(within, reason)`` is called (by default
    it prints one line to stderr). Raises StoreUnavailableError, with the last reason, when
    ``within`` seconds pass first. Only unavailability is retried: any other StoreError (a
    malformed URL) is raised at once.
    """
    from storage.engine import create_engine, masked

    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    engine = create_engine(url)
    attempts = 0
    try:
        while True:
            attempts += 1
            try:
                await asyncio.wait_for(_ping(engine, url), max(deadline - loop.time(), 0.1))
                return attempts
            except StoreUnavailableError as exc:
                reason = str(exc)
            except TimeoutError:
                reason = f"cannot use the database {masked(url)}: no answer"
            if loop.time() + interval >= deadline:
                raise StoreUnavailableError(
                    f"{reason} (gave up after {within:g} s and {attempts} attempts)"
                )
            if attempts == 1:
                on_first_failure(within, reason)
            await asyncio.sleep(interval)
    finally:
        await engine.dispose()


async def _ping(engine: "AsyncEngine", url: str) -> None:
    from sqlalchemy import text

    from storage.engine import mapped_errors

    with mapped_errors(url):
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))


def _make_sqlite_folder(url: str) -> None:
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        # 0o700 as the data directory: the database holds password hashes.
        Path(database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
