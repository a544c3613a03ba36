"""What the store hands out: frozen records, never ORM objects.

Callers (CLI, broker, admin API) get plain values they can keep, log and compare without a
database session; the ORM models in ``storage.models`` stay inside this package.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar
from uuid import UUID

from auth.kinds import CredentialStatus, CredentialType

T = TypeVar("T")


@dataclass(frozen=True)
class Device:
    id: UUID
    name: str
    type: str
    label: str
    enabled: bool
    created_at: datetime
    # The trusted CA whose leaves may attach to this device (auth.binding): the CA that
    # created it, or the one an operator bound it to; None for neither.
    bound_ca_id: UUID | None = None


@dataclass(frozen=True)
class Credential:
    """One credential of a device. Fields that do not apply to its type are None."""

    id: UUID
    device_id: UUID
    type: CredentialType
    status: CredentialStatus
    created_at: datetime
    # X509_CERTIFICATE
    pem: str | None = None
    spki_sha256: str | None = None
    credentials_id: str | None = None
    subject: str | None = None
    issuer: str | None = None
    serial: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    # ACCESS_TOKEN: the token itself only in the record its creation returns (it is shown
    # once); the store keeps a hash of it.
    token: str | None = None
    # MQTT_BASIC (the password hash never leaves the store)
    client_id: str | None = None
    username: str | None = None
    application: bool = False
    # The trusted CA an X.509 credential was accepted through at its first connection (kept
    # after the CA is deleted); None for one an operator provisioned directly.
    issuer_ca_id: UUID | None = None


@dataclass(frozen=True)
class CredentialMatch:
    """A credential found by its lookup key, with the device it belongs to."""

    device: Device
    credential: Credential


@dataclass(frozen=True)
class TrustedCA:
    id: UUID
    name: str
    pem: str
    spki_sha256: str
    subject: str
    not_after: datetime
    cn_regex: str | None
    create_devices: bool
    enabled: bool
    crl_pem: str | None
    created_at: datetime


class AuthOutcome(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"
    ERROR = "error"


@dataclass(frozen=True)
class AuthEvent:
    id: int
    at: datetime
    device_id: UUID | None
    fingerprint: str | None
    remote_address: str | None
    outcome: AuthOutcome
    reason: str


@dataclass(frozen=True)
class NewAuthEvent:
    """An auth event to record (``record_auth_events``): what the broker decided, and when."""

    at: datetime
    outcome: AuthOutcome
    reason: str
    device_id: UUID | None = None
    fingerprint: str | None = None
    remote_address: str | None = None


class ChangeKind(StrEnum):
    """What happened; a broker closes live sessions on the ``*_REVOKED``-like kinds."""

    DEVICE_CREATED = "device_created"
    DEVICE_UPDATED = "device_updated"
    DEVICE_DISABLED = "device_disabled"
    DEVICE_DELETED = "device_deleted"
    CREDENTIAL_ADDED = "credential_added"
    CREDENTIAL_CHANGED = "credential_changed"
    CA_CHANGED = "ca_changed"


@dataclass(frozen=True)
class Change:
    """One entry of the change feed; ``seq`` grows strictly, so ``changes_since(seq)`` resumes."""

    seq: int
    at: datetime
    kind: ChangeKind
    device_id: UUID | None
    credential_id: UUID | None


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing, shaped like the reference API's ``{data, totalPages, ...}``."""

    items: tuple[T, ...]
    total: int
    page: int
    page_size: int

    @property
    def total_pages(self) -> int:
        return (self.total + self.page_size - 1) // self.page_size if self.page_size else 0

    @property
    def has_next(self) -> bool:
        return (self.page + 1) * self.page_size < self.total
