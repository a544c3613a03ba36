"""What the store's parts share: the engine, its three kinds of session, the change feed.

Every session maps driver errors to ``nanoiot.errors`` (``storage.engine.mapped_errors``), so
no SQLAlchemy or asyncpg exception leaves the store.
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from auth.certificate import ParsedCredential
from auth.keys import KeyPolicy, registration_problem
from nanoiot.errors import NotFoundError, ValidationError
from storage.engine import Timeouts, mapped_errors, read_engine, write_engine
from storage.lookups import Lookups
from storage.models import ChangeRow, CredentialRow, DeviceRow, utcnow
from storage.records import ChangeKind

ALREADY_REGISTERED = "Specified credentials are already registered!"
# Any constant will do: it names the lock that orders change-feed writers on PostgreSQL.
_CHANGE_FEED_LOCK = 0x4E616E6F


class StoreBase:
    """The engine and sessions; see ``storage.sql.SqlCredentialStore`` for the whole store."""

    def __init__(
        self,
        engine: AsyncEngine,
        url: str,
        keys: KeyPolicy,
        token_key: bytes,
        timeouts: Timeouts | None = None,
    ) -> None:
        self._engine = engine
        self._url = url
        self._token_key = token_key  # HMAC key of the stored access tokens (storage.secrets)
        self._keys = keys  # what a device certificate needs to be registered (auth.keys)
        self._is_postgres = engine.dialect.name == "postgresql"
        self._reads = async_sessionmaker(read_engine(engine), expire_on_commit=False)
        self._lookups = Lookups(read_engine(engine), timeouts)
        self._transactions = async_sessionmaker(engine, expire_on_commit=False)
        self._writes = async_sessionmaker(write_engine(engine), expire_on_commit=False)

    async def close(self) -> None:
        await self._lookups.close()
        await self._engine.dispose()

    async def ping(self) -> None:
        async with self._read() as session:
            await session.execute(text("SELECT 1"))

    # --- sessions -------------------------------------------------------------------------

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        """For one statement; no transaction is begun."""
        with mapped_errors(self._url):
            async with self._reads() as session:
                yield session

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[AsyncSession]:
        """For several statements that must see the same data (a count and its page)."""
        with mapped_errors(self._url):
            async with self._transactions() as session, session.begin():
                yield session

    @asynccontextmanager
    async def _write(self, conflict: str = ALREADY_REGISTERED) -> AsyncIterator[AsyncSession]:
        """A write transaction; ``conflict`` is the message if a unique constraint is hit."""
        with mapped_errors(self._url, conflict):
            async with self._writes() as session, session.begin():
                yield session

    async def _append_change(
        self,
        session: AsyncSession,
        kind: ChangeKind,
        device_id: uuid.UUID | None = None,
        credential_id: uuid.UUID | None = None,
    ) -> None:
        """Append to the change feed; call it last in the transaction.

        PostgreSQL hands out sequence numbers in call order but commits may land in another
        order, and a poller past seq 8 would never see a later-committed 7. The advisory lock,
        held until commit, makes seq order commit order. SQLite has one writer at a time.
        """
        if self._is_postgres:
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHANGE_FEED_LOCK}
            )
        session.add(
            ChangeRow(at=utcnow(), kind=kind, device_id=device_id, credential_id=credential_id)
        )
        await session.flush()


# for_update: on PostgreSQL, lock the row until commit so that two writers cannot both act on
# the state they read (a revocation overwritten by a concurrent "disable" would be undone).
# SQLite ignores it: BEGIN IMMEDIATE already admits one writer at a time.


def check_device_key(parsed: ParsedCredential, keys: KeyPolicy) -> None:
    """Refuse a CA certificate or a key below the minimums as a device credential."""
    problem = registration_problem(parsed, keys)
    if problem is not None:
        raise ValidationError(problem)


async def device_row(
    session: AsyncSession, device_id: uuid.UUID, *, for_update: bool = False
) -> DeviceRow:
    row = await session.get(DeviceRow, device_id, with_for_update=for_update)
    if row is None:
        raise NotFoundError(f"device {device_id} does not exist")
    return row


async def credential_row(
    session: AsyncSession, credential_id: uuid.UUID, *, for_update: bool = False
) -> CredentialRow:
    row = await session.get(CredentialRow, credential_id, with_for_update=for_update)
    if row is None:
        raise NotFoundError(f"credential {credential_id} does not exist")
    return row
