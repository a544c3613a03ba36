"""Schema migrations: the only way the store's tables are made or changed.

Alembic is configured in code, with the migration scripts found in the installed package
(``storage/migrations``), so it works from any working directory and needs no alembic.ini.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from nanoiot.errors import StoreError
from storage.engine import create_engine, mapped_errors, write_engine

NOT_UP_TO_DATE = "database schema is not up to date: run `nanoiot db upgrade`"


def alembic_config(url: str = "") -> Config:
    config = Config()
    config.set_main_option("script_location", "storage:migrations")
    config.set_main_option("path_separator", "os")
    # ConfigParser interpolation would read a '%' in a password as a reference.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "storage/migrations/versions has no revision"
    return head


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
        async with write_engine(engine).begin() as connection:
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


def _upgrade_sync(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _current_sync(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _alembic_errors() -> Iterator[None]:
    # Alembic reports a revision it does not know (a newer schema) as CommandError.
    try:
        yield
    except CommandError as exc:
        raise StoreError(f"cannot migrate the database: {exc}") from exc
