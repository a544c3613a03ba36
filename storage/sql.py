"""The credential store on SQLAlchemy's async ORM: SQLite (default) or PostgreSQL.

Every mutation appends to the ``changes`` table in its own transaction, so another process
(the broker) can poll ``changes_since`` and act on revocations. This module opens the store
and keeps its devices; each other part is a mixin of its own (``SqlCredentialStore``). Records
(``storage.records``) leave the store, ORM objects never do.
"""

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Self

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from auth.certificate import ParsedCredential
from auth.keys import DEFAULT_KEYS, KeyPolicy
from nanoiot.errors import ConflictError, NotFoundError, ValidationError
from storage import migrate
from storage.audit import TrustAndAudit
from storage.base import device_row
from storage.bulk import BulkDevices
from storage.credentials import Credentials
from storage.engine import Timeouts, create_engine, is_sqlite
from storage.files import prepare_files
from storage.models import DeviceRow, new_id, utcnow
from storage.names import hidden_character_problem, validate_device_name, validate_text
from storage.records import ChangeKind, Credential, Device, Page
from storage.sessions import SessionRecords
from storage.token_key import token_hash_key as token_key_for

MAX_PAGE_SIZE = 1000
MAX_PAGE = 1_000_000  # far beyond any fleet; keeps page * page size a valid SQL offset


class SqlCredentialStore(BulkDevices, Credentials, SessionRecords, TrustAndAudit):
    """``storage.interface.CredentialStore`` on SQLAlchemy. Build it with ``open``.

    Devices live here; credentials and the connect-path lookups in ``storage.credentials``;
    the bulk import in ``storage.bulk``; trusted CAs, auth events and the change feed in
    ``storage.audit``; sessions and error mapping in ``storage.base``; persistent MQTT sessions
    in ``storage.sessions``.
    """

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        data_dir: Path | None = None,
        timeouts: Timeouts | None = None,
        keys: KeyPolicy = DEFAULT_KEYS,
        token_hash_key: bytes | None = None,
    ) -> Self:
        """Open the store at ``url``; ``timeouts`` bound the waits for the database, ``keys``
        are the smallest device keys it registers (auth.keys).

        SQLite: the file's directory (and ``data_dir``) is created if missing (0700, the file
        0600), and the schema upgraded to the newest revision. Other databases must have been
        upgraded already (``nanoiot db upgrade``); otherwise StoreError says so.
        ``token_hash_key``: see storage.token_key (by default the data directory's).
        """
        engine = create_engine(url, timeouts)  # parses the URL; connects only when first used
        try:
            prepare_files(url, data_dir)
            token_key = await token_key_for(engine, url, data_dir, token_hash_key)
            if is_sqlite(url):
                if await migrate.current_revision_engine(engine, url) != migrate.head_revision():
                    await migrate.upgrade_engine(engine, url, token_hash_key=token_key)
            else:
                await migrate.require_head(engine, url)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine, url, keys, token_key, timeouts)

    # --- devices --------------------------------------------------------------------------

    async def create_device(
        self,
        name: str,
        *,
        type: str = "default",
        label: str = "",
        bound_ca_id: uuid.UUID | None = None,
    ) -> Device:
        _validate_device(name, type, label)
        async with self._write(_name_taken(name)) as session:
            device = await self._insert_device(session, name, type, label, bound_ca_id)
            await self._append_change(session, ChangeKind.DEVICE_CREATED, device.id)
            return device.to_record()

    async def get_device(self, device_id: uuid.UUID) -> Device:
        async with self._read() as session:
            return (await device_row(session, device_id)).to_record()

    async def get_device_by_name(self, name: str) -> Device:
        async with self._read() as session:
            row = await session.scalar(select(DeviceRow).where(DeviceRow.name == name))
        if row is None:
            raise NotFoundError(f"device '{name}' does not exist")
        return row.to_record()

    async def list_devices(
        self, *, text_search: str | None = None, page: int = 0, page_size: int = 100
    ) -> Page[Device]:
        if not (0 <= page <= MAX_PAGE and 1 <= page_size <= MAX_PAGE_SIZE):
            # A page past MAX_PAGE would overflow the 64-bit OFFSET (SQLite and PostgreSQL).
            raise ValidationError(
                f"page must be 0 to {MAX_PAGE:,} and page size 1 to {MAX_PAGE_SIZE}"
            )
        query = select(DeviceRow)
        if text_search:
            pattern = text_search.lower()
            query = query.where(func.lower(DeviceRow.name).contains(pattern, autoescape=True))
        async with self._snapshot() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = await session.scalars(
                query.order_by(DeviceRow.name).offset(page * page_size).limit(page_size)
            )
            items = tuple(row.to_record() for row in rows)
        return Page(items=items, total=total or 0, page=page, page_size=page_size)

    async def set_device_enabled(self, device_id: uuid.UUID, enabled: bool) -> Device:
        async with self._write() as session:
            row = await device_row(session, device_id, for_update=True)
            if row.enabled != enabled:
                row.enabled = enabled
                kind = ChangeKind.DEVICE_UPDATED if enabled else ChangeKind.DEVICE_DISABLED
                await self._append_change(session, kind, device_id)
            return row.to_record()

    async def bind_device(self, device_id: uuid.UUID, ca_id: uuid.UUID | None) -> Device:
        async with self._write() as session:
            row = await device_row(session, device_id, for_update=True)
            if row.bound_ca_id != ca_id:
                row.bound_ca_id = ca_id
                await self._append_change(session, ChangeKind.DEVICE_UPDATED, device_id)
            return row.to_record()

    async def delete_device(self, device_id: uuid.UUID) -> None:
        async with self._write() as session:
            await device_row(session, device_id)
            # ON DELETE CASCADE removes the credentials; auth events have no foreign key.
            await session.execute(delete(DeviceRow).where(DeviceRow.id == device_id))
            await self._append_change(session, ChangeKind.DEVICE_DELETED, device_id)

    async def create_device_with_credential(
        self,
        name: str,
        *,
        type: str = "default",
        label: str = "",
        x509: ParsedCredential | None = None,
        token: str | None = None,
        issuer_ca_id: uuid.UUID | None = None,
    ) -> tuple[Device, Credential]:
        if (x509 is None) == (token is None):
            raise ValidationError("give exactly one first credential: a certificate or a token")
        _validate_device(name, type, label)
        if token is not None:
            validate_text("access token", token)
        async with self._write(_name_taken(name)) as session:
            # A device a CA creates is that CA's (auth.binding).
            device = await self._insert_device(session, name, type, label, issuer_ca_id)
            if x509 is not None:
                credential = await self._insert_x509(session, device.id, x509, issuer_ca_id)
            else:
                assert token is not None
                credential = await self._insert_token(session, device.id, token)
            await self._append_change(session, ChangeKind.DEVICE_CREATED, device.id)
            await self._append_change(
                session, ChangeKind.CREDENTIAL_ADDED, device.id, credential.id
            )
            # The token itself is in this answer only (shown once), never stored.
            return device.to_record(), replace(credential.to_record(), token=token)

    async def _insert_device(
        self,
        session: AsyncSession,
        name: str,
        type: str,
        label: str,
        bound_ca_id: uuid.UUID | None = None,
    ) -> DeviceRow:
        await _check_name_free(session, name)
        row = DeviceRow(
            id=new_id(), name=name, type=type, label=label, created_at=utcnow(), enabled=True,
            bound_ca_id=bound_ca_id,
        )  # fmt: skip
        session.add(row)
        await session.flush()
        return row


async def _check_name_free(session: AsyncSession, name: str) -> None:
    if await session.scalar(select(DeviceRow.id).where(DeviceRow.name == name)):
        raise ConflictError(_name_taken(name))


def _validate_device(name: str, type: str, label: str) -> None:
    validate_device_name(name)
    validate_text("device type", type, max_length=64)
    if len(label) > 255:
        raise ValidationError("device label is longer than 255 characters")
    hidden = hidden_character_problem(label)  # shown beside the name in every list
    if hidden is not None:
        raise ValidationError(f"device label must not contain {hidden}")


def _name_taken(name: str) -> str:
    return f"Device with name '{name}' already exists!"
