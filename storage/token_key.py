"""Finding the token hash key when the store opens (storage.secrets says what it is for).

The key comes from the caller (the ``token_hash_key`` setting), else from the data
directory, else from the SQLite file's folder, else from the per-user data folder: the same
places the rest of NanoIoT's data lives. A key made just now while the database already holds
token hashes would match none of them: the store refuses to open, and the new key is removed
so the next start does not take it for the real one.
"""

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from nanoiot.errors import StoreError
from nanoiot.locations import user_data_dir
from storage.engine import create_engine, is_sqlite, mapped_errors
from storage.secrets import KEY_FILE, load_or_create_key, parse_key

if TYPE_CHECKING:
    from nanoiot.settings import Settings


def configured_token_key(settings: "Settings") -> bytes | None:
    """The ``token_hash_key`` setting as bytes, or None to use the data directory's."""
    if settings.token_hash_key is None:
        return None
    return parse_key(settings.token_hash_key.get_secret_value(), "token_hash_key")


async def settled_token_key(settings: "Settings") -> bytes:
    """``token_hash_key`` for the store ``settings`` name, outside ``SqlCredentialStore``."""
    url = settings.effective_database_url
    engine = create_engine(url)
    try:
        with mapped_errors(url):
            return await token_hash_key(
                engine, url, settings.data_dir, configured_token_key(settings)
            )
    finally:
        await engine.dispose()


def key_directory(url: str, data_dir: Path | None) -> Path:
    if data_dir is not None:
        return data_dir
    database = make_url(url).database if is_sqlite(url) else None
    if database and not database.startswith("file:") and database != ":memory:":
        return Path(database).absolute().parent
    return user_data_dir(os.environ)


async def token_hash_key(
    engine: AsyncEngine, url: str, data_dir: Path | None, given: bytes | None
) -> bytes:
    """The key to hash access tokens with; see the module docstring."""
    if given is not None:
        return given
    directory = key_directory(url, data_dir)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key, created = load_or_create_key(directory)
    except OSError as exc:
        raise StoreError(f"cannot read or create {directory / KEY_FILE}: {exc.strerror}") from exc
    if created and await _holds_token_hashes(engine):
        with contextlib.suppress(OSError):
            (directory / KEY_FILE).unlink()
        raise StoreError(
            f"the database holds access-token hashes but {directory / KEY_FILE} is missing (a "
            "new key would match none of them): restore the file from a backup of the data "
            "directory, or set NANOIOT_TOKEN_HASH_KEY to the key the other nodes use"
        )
    return key


async def _holds_token_hashes(engine: AsyncEngine) -> bool:
    """Whether any credential has a token hash (False for a schema that has none yet)."""
    query = text("SELECT 1 FROM credentials WHERE token_hash IS NOT NULL LIMIT 1")
    try:
        async with engine.connect() as connection:
            return (await connection.execute(query)).first() is not None
    except (SQLAlchemyError, OSError):
        return False  # no such table or column yet; an unreachable store is reported later
