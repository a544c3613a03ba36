"""Device credentials in the store: adding, listing and revoking them, and finding the one a
connecting client presents.

A credential is an X.509 certificate (pinned by its public key's SHA-256), an access token
(kept as an HMAC, ``storage.secrets``) or a user name and password (argon2,
``storage.passwords``). Its lookup key is unique across every device and stays taken once
revoked. The connect-path lookups are one indexed query each and return the match whatever
its status: the pure decision in ``auth`` decides and names the reason.
"""

import asyncio
import re
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from auth.certificate import ParsedCredential
from auth.kinds import CredentialStatus, CredentialType
from nanoiot.errors import ConflictError, NotFoundError, ValidationError
from storage.base import ALREADY_REGISTERED, StoreBase, check_device_key, credential_row, device_row
from storage.engine import mapped_errors
from storage.lookups import BY_SPKI, BY_TOKEN, BY_USERNAME, password_hash, to_match
from storage.models import CredentialRow, DeviceRow, new_id, utcnow
from storage.names import validate_text
from storage.passwords import hash_password_async, verify_password_async
from storage.records import ChangeKind, Credential, CredentialMatch
from storage.secrets import token_digest

ASSIGNED_ELSEWHERE = "Device credentials are already assigned to another device!"
NO_SUCH_DEVICE_FOR_CREDENTIAL = "Can't assign device credentials to non-existent device!"


class Credentials(StoreBase):
    """The credentials table; mixed into ``storage.sql.SqlCredentialStore``."""

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
        self,
        username: str,
        password: str,
        client_id: str | None,
        *,
        lookup_within: float | None = None,
    ) -> CredentialMatch | None:
        async with asyncio.timeout(lookup_within):  # the database's part only
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


def _normalise_fingerprint(fingerprint: str) -> str:
    # Accept what tools print: upper case, and colon- or space-separated byte pairs.
    return re.sub(r"[\s:]", "", fingerprint).lower()
