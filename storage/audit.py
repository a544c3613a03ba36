"""Trusted CAs, the authentication history and the change feed: the store's other tables."""

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from auth.certificate import ParsedCredential
from auth.cn_rule import cn_rule_problem
from nanoiot.errors import ConflictError, NotFoundError, ValidationError
from storage.base import StoreBase
from storage.models import AuthEventRow, ChangeRow, TrustedCARow, new_id, utcnow
from storage.names import validate_text
from storage.records import (
    AuthEvent,
    AuthOutcome,
    Change,
    ChangeKind,
    NewAuthEvent,
    TrustedCA,
)


class TrustAndAudit(StoreBase):
    """Trusted CAs, auth events and the change feed; ``SqlCredentialStore`` adds the rest."""

    # --- trusted CAs ----------------------------------------------------------------------

    async def add_trusted_ca(
        self,
        name: str,
        parsed: ParsedCredential,
        *,
        cn_regex: str | None = None,
        create_devices: bool = False,
    ) -> TrustedCA:
        validate_text("CA name", name, max_length=128, name=True)
        if parsed.subject is None or parsed.not_after is None:
            raise ValidationError("a trusted CA must be a certificate, not a bare public key")
        if cn_regex is not None:
            _check_regex(cn_regex)
        async with self._write(f"trusted CA '{name}' or its key is already registered") as s:
            await _check_ca_free(s, name, parsed.spki_sha256)
            row = TrustedCARow(
                id=new_id(),
                name=name,
                pem=parsed.pem,
                spki_sha256=parsed.spki_sha256,
                subject=parsed.subject,
                not_after=parsed.not_after,
                cn_regex=cn_regex,
                create_devices=create_devices,
                enabled=True,
                crl_pem=None,
                created_at=utcnow(),
            )
            s.add(row)
            await s.flush()
            await self._append_change(s, ChangeKind.CA_CHANGED)
            return row.to_record()

    async def list_trusted_cas(self) -> Sequence[TrustedCA]:
        async with self._read() as session:
            rows = await session.scalars(select(TrustedCARow).order_by(TrustedCARow.name))
            return [row.to_record() for row in rows]

    async def set_ca_crl(self, ca_id: uuid.UUID, crl_pem: str | None) -> TrustedCA:
        async with self._write() as session:
            row = await _ca_row(session, ca_id)
            row.crl_pem = crl_pem
            await self._append_change(session, ChangeKind.CA_CHANGED)
            return row.to_record()

    async def delete_trusted_ca(self, ca_id: uuid.UUID) -> None:
        async with self._write() as session:
            await session.delete(await _ca_row(session, ca_id))
            await self._append_change(session, ChangeKind.CA_CHANGED)

    # --- auth events ----------------------------------------------------------------------

    async def record_auth_event(
        self,
        *,
        outcome: AuthOutcome,
        reason: str,
        device_id: uuid.UUID | None = None,
        fingerprint: str | None = None,
        remote_address: str | None = None,
    ) -> None:
        async with self._write() as session:
            session.add(
                AuthEventRow(
                    at=utcnow(),
                    device_id=device_id,
                    fingerprint=fingerprint,
                    remote_address=remote_address,
                    outcome=outcome,
                    reason=reason,
                )
            )

    async def record_auth_events(self, events: Sequence[NewAuthEvent]) -> None:
        """Several auth events in one transaction: the broker records the decisions that
        queued up while the previous commit ran together, one commit for many connects."""
        if not events:
            return
        rows = [
            {
                "at": event.at,
                "device_id": event.device_id,
                "fingerprint": event.fingerprint,
                "remote_address": event.remote_address,
                "outcome": event.outcome,
                "reason": event.reason,
            }
            for event in events
        ]
        async with self._write() as session:
            await session.execute(insert(AuthEventRow), rows)  # one executemany

    async def prune_auth_events(
        self, *, older_than: datetime, keep: int, batch: int = 10_000
    ) -> int:
        """Delete the auth events older than ``older_than``, and the oldest beyond the newest
        ``keep``; how many were deleted. At most ``batch`` rows per transaction, so a large
        backlog never holds the write lock for long.

        Ids grow with time, so both bounds are found from the oldest rows by primary key:
        a ``batch`` of the oldest is read, and deleted where old or beyond ``keep``; a batch
        with anything left standing means the rest is newer. No scan of the table.
        """
        deleted = 0
        while True:
            async with self._write() as session:
                newest = await session.scalar(select(func.max(AuthEventRow.id)))
                if newest is None:
                    return deleted
                oldest = (
                    await session.execute(
                        select(AuthEventRow.id, AuthEventRow.at)
                        .order_by(AuthEventRow.id)
                        .limit(batch)
                    )
                ).all()
                doomed = [
                    row.id for row in oldest if row.at < older_than or row.id <= newest - keep
                ]
                if doomed:
                    await session.execute(delete(AuthEventRow).where(AuthEventRow.id.in_(doomed)))
            deleted += len(doomed)
            if len(doomed) < batch:
                return deleted

    async def list_auth_events(
        self,
        *,
        device_id: uuid.UUID | None = None,
        outcome: AuthOutcome | None = None,
        limit: int = 100,
    ) -> Sequence[AuthEvent]:
        # Newest first by id: ids grow with insertion, and "at" may repeat or step back.
        query = select(AuthEventRow).order_by(AuthEventRow.id.desc()).limit(limit)
        if device_id is not None:
            query = query.where(AuthEventRow.device_id == device_id)
        if outcome is not None:
            query = query.where(AuthEventRow.outcome == outcome)
        async with self._read() as session:
            return [row.to_record() for row in await session.scalars(query)]

    # --- change feed ----------------------------------------------------------------------

    async def last_change_seq(self) -> int:
        async with self._read() as session:
            return await session.scalar(select(func.max(ChangeRow.seq))) or 0

    async def change_marker(self) -> int | None:
        """Unchanged while the change feed cannot have grown; None: read the feed to know."""
        return await self._lookups.change_marker()

    async def changes_since(self, seq: int, limit: int = 1000) -> Sequence[Change]:
        query = select(ChangeRow).where(ChangeRow.seq > seq).order_by(ChangeRow.seq).limit(limit)
        async with self._read() as session:
            return [row.to_record() for row in await session.scalars(query)]


async def _ca_row(session: AsyncSession, ca_id: uuid.UUID) -> TrustedCARow:
    row = await session.get(TrustedCARow, ca_id)
    if row is None:
        raise NotFoundError(f"trusted CA {ca_id} does not exist")
    return row


async def _check_ca_free(session: AsyncSession, name: str, spki_sha256: str) -> None:
    if await session.scalar(select(TrustedCARow.id).where(TrustedCARow.name == name)):
        raise ConflictError(f"a trusted CA named '{name}' already exists")
    other = await session.scalar(
        select(TrustedCARow.name).where(TrustedCARow.spki_sha256 == spki_sha256)
    )
    if other is not None:
        raise ConflictError(f"this CA's key is already trusted (as '{other}')")


def _check_regex(pattern: str) -> None:
    problem = cn_rule_problem(pattern)
    if problem is not None:
        raise ValidationError(problem)
