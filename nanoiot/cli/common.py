"""What every command shares: the settings, the store, and how errors are printed."""

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    # Imported where used: every command module loads this one, and `nanoiot --help` or
    # `nanoiot keygen` need neither the settings model (pydantic) nor SQLAlchemy.
    from nanoiot.settings import Settings
    from storage.sql import SqlCredentialStore

T = TypeVar("T")


@dataclass
class State:
    """Per-invocation state hung on the typer context by the root callback."""

    config_path: Path | None = None
    _settings: "Settings | None" = field(default=None, repr=False)

    @property
    def settings(self) -> "Settings":
        if self._settings is None:
            from nanoiot.settings import load_settings

            self._settings = load_settings(self.config_path)
        return self._settings


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, State) else State()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit: the shape of every user-facing error."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


# What a file the user names may hold at most, as the admin API takes it: a certificate with
# its chain fits many times over, a CRL of ~400,000 entries fits. A larger file (or a device
# such as /dev/zero, which never ends) is not one, and is not read into memory whole.
MAX_CERTIFICATE_FILE = 64 * 1024
MAX_CRL_FILE = 16 * 1024 * 1024


def read_file(path: Path, *, limit: int, holding: str) -> bytes:
    """The bytes of a file the user named, at most ``limit`` of them, or one error line
    saying why it cannot be read; ``holding`` names what it should hold ("a certificate")."""
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    if len(data) > limit:
        size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"
        fail(f"{path} is larger than {size}: too large to hold {holding}")
    return data


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine function to completion in a fresh event loop."""

    async def _wrapper() -> T:
        return await coro_fn()

    return asyncio.run(_wrapper())


def with_store(
    ctx: typer.Context,
    action: "Callable[[SqlCredentialStore], Awaitable[T]]",
    *,
    writes: bool = False,
) -> T:
    """Open the configured store, run ``action`` on it, close it, return the result.

    ``writes``: the command changed the store, so say which database it used (on stderr, so
    that ``--json`` output stays clean): a change written to another database than the
    broker's must not go unnoticed.
    """
    settings = state(ctx).settings

    async def _go() -> T:
        async with open_store(settings) as store:
            return await action(store)

    result = asyncio.run(_go())
    if writes:
        print(f"database: {database_label(settings)}", file=sys.stderr)
    return result


def database_label(settings: "Settings") -> str:
    """The database in use, as shown to people: the SQLite file, or the URL without its
    password."""
    from sqlalchemy.engine import make_url

    from storage.engine import is_sqlite, masked

    url = settings.effective_database_url
    if is_sqlite(url):
        return f"SQLite {make_url(url).database or '(in memory)'}"
    return masked(url)


@asynccontextmanager
async def open_store(settings: "Settings") -> AsyncIterator["SqlCredentialStore"]:
    """The store for this settings' database, migrated and closed afterwards."""
    from nanoiot.store import open_store as open_configured

    store = await open_configured(settings)
    try:
        yield store
    finally:
        await store.close()
