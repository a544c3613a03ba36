"""Many devices, each with its first X.509 credential, in one transaction: the bulk import.

``create_device_with_credential`` costs a transaction, two lookups and four flushes per
device; a fleet of 100,000 took twelve minutes that way. Here a batch costs two lookups (names
and public keys already taken) and three multi-row INSERTs, whatever its size.

Each device is refused or created exactly as ``create_device_with_credential`` would have done
it, had the batch been imported one row after the other: the same checks in the same order and
the same messages, an earlier row of the batch counting as already stored. The change feed gets
the same two entries per device. A batch is one transaction: after a crash each of its devices
is either there with its credential, or not at all.

Token rows are not taken here: ``create_device_with_credential`` stays the one place where a
token is written.
"""

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from auth.certificate import ParsedCredential
from auth.keys import KeyPolicy
from auth.kinds import CredentialStatus, CredentialType
from nanoiot.errors import AlreadyImportedError, ConflictError, StoreError, ValidationError
from storage.base import _CHANGE_FEED_LOCK, StoreBase, check_device_key
from storage.credentials import ASSIGNED_ELSEWHERE
from storage.models import Base, CredentialRow, DeviceRow, new_id, utcnow
from storage.records import ChangeKind, Credential, Device

# A batch's lookups send one bound parameter per row; SQLite allows 32,766 per statement.
MAX_BATCH = 10_000

_DEVICES, _CREDENTIALS, _CHANGES = (
    Base.metadata.tables[name] for name in ("devices", "credentials", "changes")
)

Created = tuple[Device, Credential]
Outcome = Created | StoreError


@dataclass(frozen=True)
class NewDevice:
    """One device to create with ``x509`` as its first credential."""

    name: str
    x509: ParsedCredential
    type: str = "default"
    label: str = ""


@dataclass
class _Taken:
    """Names and public keys in use: in the store, or by an earlier device of the batch."""

    names: set[str]
    key_owners: dict[str, str]  # SPKI SHA-256 -> device name


class BulkDevices(StoreBase):
    """``create_devices_with_x509`` of ``storage.sql.SqlCredentialStore``."""

    async def create_devices_with_x509(self, devices: Sequence[NewDevice]) -> list[Outcome]:
        """Create ``devices`` in one transaction; the outcome of each, in order: the records,
        or why it was refused (``ValidationError``, ``ConflictError``, ``AlreadyImportedError``
        when the device exists already with this very certificate).

        Raises ``ConflictError`` for the whole batch, none of it created, when another writer
        took a name or key between the checks and the inserts (only PostgreSQL lets one in):
        import those rows one by one then. ``StoreUnavailableError`` as every method.
        """
        if len(devices) > MAX_BATCH:
            raise ValidationError(f"at most {MAX_BATCH:,} devices per batch")
        outcomes: list[Outcome | None] = [_invalid(device, self._keys) for device in devices]
        async with self._write("a device name or key was taken meanwhile") as session:
            valid = [d for d, outcome in zip(devices, outcomes, strict=True) if outcome is None]
            if self._is_postgres:
                # The lookups below are prepared statements with a thousand parameters. From
                # the sixth batch on, PostgreSQL may plan them once for any values: a scan of
                # the whole table comparing each row with every parameter, seconds a batch at
                # 50,000 devices. Planned for the values at hand, they are index lookups.
                await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
            taken = await _taken(session, valid)
            now = utcnow()
            for index, device in enumerate(devices):
                if outcomes[index] is not None:
                    continue
                refusal = _refusal(device, taken)
                outcomes[index] = refusal or _records(device, now)
                if refusal is None:  # taken for the rest of the batch, as once committed
                    taken.names.add(device.name)
                    taken.key_owners[device.x509.spki_sha256] = device.name
            created = [outcome for outcome in outcomes if isinstance(outcome, tuple)]
            if created:
                await self._insert(session, created)
        return [outcome for outcome in outcomes if outcome is not None]

    async def _insert(self, session: AsyncSession, created: Sequence[Created]) -> None:
        # Core INSERTs on the tables: one executemany each. Given the ORM classes, SQLAlchemy
        # would insert the change-feed rows one at a time to learn their keys.
        await session.execute(insert(_DEVICES), [_device_values(d) for d, _ in created])
        await session.execute(insert(_CREDENTIALS), [_credential_values(c) for _, c in created])
        if self._is_postgres:  # the change feed's commit order, as StoreBase._append_change
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHANGE_FEED_LOCK}
            )
        await session.execute(insert(_CHANGES), list(_changes(created)))


# storage.sql imports this module for its base class, so its rules are imported where used.


def _invalid(device: NewDevice, keys: KeyPolicy) -> ValidationError | None:
    from storage.sql import _validate_device

    try:
        _validate_device(device.name, device.type, device.label)
        check_device_key(device.x509, keys)
    except ValidationError as exc:
        return exc
    return None


async def _taken(session: AsyncSession, devices: Sequence[NewDevice]) -> _Taken:
    names = {device.name for device in devices}
    keys = {device.x509.spki_sha256 for device in devices}
    found = await session.scalars(select(DeviceRow.name).where(DeviceRow.name.in_(names)))
    # Any credential with the key, whatever its status: a revoked key stays taken.
    owners = await session.execute(
        select(CredentialRow.spki_sha256, DeviceRow.name)
        .join(DeviceRow, CredentialRow.device_id == DeviceRow.id)
        .where(CredentialRow.spki_sha256.in_(keys))
    )
    return _Taken(set(found), {str(key): name for key, name in owners.all()})


def _refusal(device: NewDevice, taken: _Taken) -> StoreError | None:
    """What ``create_device_with_credential`` would refuse it with: the name first, then the
    key."""
    from storage.sql import _name_taken

    owner = taken.key_owners.get(device.x509.spki_sha256)
    if device.name in taken.names:
        if owner == device.name:
            return AlreadyImportedError(
                f"{_name_taken(device.name)} (with this certificate: imported before)"
            )
        return ConflictError(_name_taken(device.name))
    if owner is not None:
        return ConflictError(f"{ASSIGNED_ELSEWHERE} (device '{owner}')")
    return None


def _records(device: NewDevice, now: datetime) -> Created:
    record = Device(
        id=new_id(), name=device.name, type=device.type, label=device.label, enabled=True,
        created_at=now,
    )  # fmt: skip
    x509 = device.x509
    credential = Credential(
        id=new_id(), device_id=record.id, type=CredentialType.X509_CERTIFICATE,
        status=CredentialStatus.ACTIVE, created_at=now, pem=x509.pem,
        spki_sha256=x509.spki_sha256, credentials_id=x509.credentials_id, subject=x509.subject,
        issuer=x509.issuer, serial=x509.serial, not_before=x509.not_before,
        not_after=x509.not_after,
    )  # fmt: skip
    return record, credential


def _device_values(device: Device) -> dict[str, Any]:
    return {
        "id": device.id, "name": device.name, "type": device.type, "label": device.label,
        "created_at": device.created_at, "enabled": device.enabled,
    }  # fmt: skip


def _credential_values(credential: Credential) -> dict[str, Any]:
    return {
        "id": credential.id, "device_id": credential.device_id, "type": credential.type,
        "status": credential.status, "created_at": credential.created_at,
        "pem": credential.pem, "spki_sha256": credential.spki_sha256,
        "credentials_id": credential.credentials_id, "subject": credential.subject,
        "issuer": credential.issuer, "serial": credential.serial,
        "not_before": credential.not_before, "not_after": credential.not_after,
        "application": False,
    }  # fmt: skip


def _changes(created: Iterable[Created]) -> Iterable[dict[str, Any]]:
    """The two entries ``create_device_with_credential`` appends, device by device."""
    for device, credential in created:
        at = device.created_at
        yield _change(at, ChangeKind.DEVICE_CREATED, device.id, None)
        yield _change(at, ChangeKind.CREDENTIAL_ADDED, device.id, credential.id)


def _change(
    at: datetime, kind: ChangeKind, device_id: uuid.UUID, credential_id: uuid.UUID | None
) -> dict[str, Any]:
    return {"at": at, "kind": kind, "device_id": device_id, "credential_id": credential_id}
