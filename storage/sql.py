"""The credential store on SQLAlchemy's async ORM: SQLite (default) or PostgreSQL.

Every mutation appends to the ``changes`` table in its own transaction, so another process
(the broker) can poll ``changes_since`` and act on revocations. Lookups on the connect path
are one indexed query each and return the match whatever its status: the pure decision in
``auth`` decides and names the reason. Records (``storage.records``) leave this module, ORM
objects never do.
"""

import re
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from auth.certificate import ParsedCredential
from auth.keys import DEFAULT_KEYS, KeyPolicy
from auth.kinds import CredentialStatus, CredentialType
from nanoiot.errors import (
    ConflictError,
    NotFoundError,
    ValidationError,
)
from storage import migrate
from storage.audit import TrustAndAudit
from storage.base import ALREADY_REGISTERED, check_device_key, credential_row, device_row
from storage.bulk import BulkDevices
from storage.engine import Timeouts, create_engine, is_sqlite, mapped_errors
from storage.files import prepare_files
from storage.lookups import BY_SPKI, BY_TOKEN, BY_USERNAME, password_hash, to_match
from storage.models import CredentialRow, DeviceRow, new_id, utcnow
from storage.names import validate_device_name, validate_text
from storage.passwords import hash_password_async, verify_password_async
from storage.records import ChangeKind, Credential, CredentialMatch, Device, Page
from storage.secrets import token_digest
from storage.sessions import SessionRecords
from storage.token_key import token_hash_key as token_key_for

ASSIGNED_ELSEWHERE = "Device credentials are already assigned to another device!"
NO_SUCH_DEVICE_FOR_CREDENTIAL = "Can't assign device credentials to non-existent device!"
MAX_PAGE_SIZE = 1000


class SqlCredentialStore(BulkDevices, SessionRecords, TrustAndAudit):
    """``storage.interface.CredentialStore`` on SQLAlchemy. Build it with ``open``.

    Devices, credentials and the connect-path lookups live here; trusted CAs, auth events and
    the change feed in ``storage.audit``; sessions and error mapping in ``storage.base``;
    persistent MQTT sessions in ``storage.sessions``.
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
        if page < 0 or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValidationError(f"page must be >= 0 and page size 1 to {MAX_PAGE_SIZE}")
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

    # --- credentials ----------------------------------------------------------------------

    async def add_x509_credential(
        self,
        device_id: uuid.UUID,
        parsed: ParsedCredential,
        *,
        issuer_ca_id: uuid.UUID | None = None,
    ) -> Credential:
        async with self._write() as session:
            row = await self._insert_x509(session, device_id, parsed, issuer_ca_id)
            await self._append_change(session, ChangeKind.CREDENTIAL_ADDED, device_id, row.id)
            return row.to_record()

    async def add_token_credential(self, device_id: uuid.UUID, token: str) -> Credential:
        validate_text("access token", token)
        async with self._write() as session:
            row = await self._insert_token(session, device_id, token)
            await self._append_change(session, ChangeKind.CREDENTIAL_ADDED, device_id, row.id)
            return replace(row.to_record(), token=token)  # shown once, never stored

    async def add_basic_credential(
        self,
        device_id: uuid.UUID,
        *,
        username: str,
        password: str,
        client_id: str | None = None,
        application: bool = False,
    ) -> Credential:
        validate_text("user name", username)
        if client_id is not None:
            validate_text("client id", client_id)
        if not password:
            raise ValidationError("password must not be empty")
        # Hashed before the transaction: argon2 takes a while and must not hold the write lock.
        password_hash = await hash_password_async(password)
        async with self._write() as session:
            row = await self._insert_credential(
                session,
                device_id,
                CredentialRow.username,
                type=CredentialType.MQTT_BASIC,
                username=username,
                password_hash=password_hash,
                client_id=client_id,
                application=application,
            )
            await self._append_change(session, ChangeKind.CREDENTIAL_ADDED, device_id, row.id)
            return row.to_record()

    async def get_credential(self, credential_id: uuid.UUID) -> Credential:
        async with self._read() as session:
            return (await credential_row(session, credential_id)).to_record()

    async def list_credentials(self, device_id: uuid.UUID) -> Sequence[Credential]:
        async with self._snapshot() as session:
            await device_row(session, device_id)
            rows = await session.scalars(
                select(CredentialRow)
                .where(CredentialRow.device_id == device_id)
                .order_by(CredentialRow.created_at, CredentialRow.id)
            )
            return [row.to_record() for row in rows]

    async def set_credential_status(
        self, credential_id: uuid.UUID, status: CredentialStatus
    ) -> Credential:
        async with self._write() as session:
            row = await credential_row(session, credential_id, for_update=True)
            if row.status == status:
                return row.to_record()
            if row.status == CredentialStatus.REVOKED:
                raise ValidationError(
                    f"credential {credential_id} is revoked, and revocation is final: "
                    "add a new credential instead"
                )
            row.status = status
            await self._append_change(session, ChangeKind.CREDENTIAL_CHANGED, row.device_id, row.id)
            return row.to_record()

    async def revoke_x509(
        self, device_id: uuid.UUID, fingerprint: str | None = None
    ) -> Sequence[Credential]:
        query = select(CredentialRow).where(
            CredentialRow.device_id == device_id,
            CredentialRow.type == CredentialType.X509_CERTIFICATE,
        )
        if fingerprint is not None:
            wanted = _normalise_fingerprint(fingerprint)
            query = query.where(CredentialRow.spki_sha256 == wanted)
        async with self._write() as session:
            device = await device_row(session, device_id)
            rows = list(
                await session.scalars(query.order_by(CredentialRow.created_at).with_for_update())
            )
            if fingerprint is not None and not rows:
                raise NotFoundError(
                    f"device '{device.name}' has no X.509 credential with fingerprint {wanted}"
                )
            revoked = [row for row in rows if row.status != CredentialStatus.REVOKED]
            for row in revoked:
                row.status = CredentialStatus.REVOKED
            for row in revoked:
                await self._append_change(session, ChangeKind.CREDENTIAL_CHANGED, device_id, row.id)
            return [row.to_record() for row in revoked]

    async def _insert_x509(
        self,
        session: AsyncSession,
        device_id: uuid.UUID,
        parsed: ParsedCredential,
        issuer_ca_id: uuid.UUID | None = None,
    ) -> CredentialRow:
        check_device_key(parsed, self._keys)
        return await self._insert_credential(
            session,
            device_id,
            CredentialRow.spki_sha256,
            type=CredentialType.X509_CERTIFICATE,
            pem=parsed.pem,
            spki_sha256=parsed.spki_sha256,
            credentials_id=parsed.credentials_id,
            subject=parsed.subject,
            issuer=parsed.issuer,
            serial=parsed.serial,
            not_before=parsed.not_before,
            not_after=parsed.not_after,
            issuer_ca_id=issuer_ca_id,
        )

    async def _insert_token(
        self, session: AsyncSession, device_id: uuid.UUID, token: str
    ) -> CredentialRow:
        return await self._insert_credential(
            session, device_id, CredentialRow.token_hash, type=CredentialType.ACCESS_TOKEN,
            token_hash=token_digest(self._token_key, token),
        )  # fmt: skip

    async def _insert_credential(
        self,
        session: AsyncSession,
        device_id: uuid.UUID,
        key: InstrumentedAttribute[str | None],
        **values: Any,
    ) -> CredentialRow:
        """Insert a credential after checking its lookup ``key`` column is free.

        The unique index still decides when two writers race; ``_write`` maps that to
        ConflictError as well.
        """
        if await session.get(DeviceRow, device_id) is None:
            raise NotFoundError(NO_SUCH_DEVICE_FOR_CREDENTIAL)
        await _check_key_free(session, device_id, key, values[key.key])
        row = CredentialRow(
            id=new_id(),
            device_id=device_id,
            status=CredentialStatus.ACTIVE,
            created_at=utcnow(),
            application=values.pop("application", False),
            **values,
        )
        session.add(row)
        await session.flush()
        return row

    # --- lookups on the connect path ------------------------------------------------------

    async def find_x509(self, spki_sha256: str) -> CredentialMatch | None:
        row = await self._lookup(BY_SPKI, spki_sha256)
        return to_match(row) if row is not None else None

    async def find_token(self, token: str) -> CredentialMatch | None:
        row = await self._lookup(BY_TOKEN, token_digest(self._token_key, token))
        return to_match(row) if row is not None else None

    async def check_basic(
        self, username: str, password: str, client_id: str | None
    ) -> CredentialMatch | None:
        row = await self._lookup(BY_USERNAME, username)
        # Verified even for an unknown user, so timing does not reveal which names exist.
        verified = await verify_password_async(password_hash(row) if row else None, password)
        if row is None or not verified:
            return None
        match = to_match(row)
        if match.credential.client_id not in (None, client_id):
            return None
        return match

    async def _lookup(self, query: Select[Any], key: str) -> Sequence[Any] | None:
        with mapped_errors(self._url):
            return await self._lookups.first(query, key)


async def _check_name_free(session: AsyncSession, name: str) -> None:
    if await session.scalar(select(DeviceRow.id).where(DeviceRow.name == name)):
        raise ConflictError(_name_taken(name))


async def _check_key_free(
    session: AsyncSession, device_id: uuid.UUID, key: InstrumentedAttribute[str | None], value: str
) -> None:
    """Any credential with this key, whatever its status: a revoked key stays taken."""
    query = (
        select(DeviceRow.id, DeviceRow.name)
        .join(CredentialRow, CredentialRow.device_id == DeviceRow.id)
        .where(key == value)
    )
    owner = (await session.execute(query)).first()
    if owner is not None and owner.id == device_id:
        raise ConflictError(ALREADY_REGISTERED)
    if owner is not None:
        raise ConflictError(f"{ASSIGNED_ELSEWHERE} (device '{owner.name}')")


def _validate_device(name: str, type: str, label: str) -> None:
    validate_device_name(name)
    validate_text("device type", type, max_length=64)
    if len(label) > 255:
        raise ValidationError("device label is longer than 255 characters")


def _name_taken(name: str) -> str:
    return f"Device with name '{name}' already exists!"


def _normalise_fingerprint(fingerprint: str) -> str:
    # Accept what tools print: upper case, and colon- or space-separated byte pairs.
    return re.sub(r"[\s:]", "", fingerprint).lower()
