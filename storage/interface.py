"""The small interface every caller of the credential store programs against.

``storage.sql.SqlCredentialStore`` implements it on SQLAlchemy (SQLite or PostgreSQL).
All methods raise only ``nanoiot.errors.StoreError`` subclasses; database driver errors are
mapped at this boundary (connection failures become ``StoreUnavailableError``).
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from auth.certificate import ParsedCredential
from auth.kinds import CredentialStatus
from storage.bulk import NewDevice, Outcome
from storage.records import (
    AuthEvent,
    AuthOutcome,
    Change,
    Credential,
    CredentialMatch,
    Device,
    NewAuthEvent,
    Page,
    TrustedCA,
)
from storage.session_data import SessionWrite, StoredSession


class CredentialStore(Protocol):
    # --- devices ---
    async def create_device(
        self,
        name: str,
        *,
        type: str = "default",
        label: str = "",
        bound_ca_id: UUID | None = None,
    ) -> Device:
        """Raises ValidationError for a name MQTT cannot carry, ConflictError if taken.
        ``bound_ca_id``: the trusted CA whose leaves may attach to it (auth.binding)."""

    async def get_device(self, device_id: UUID) -> Device:
        """Raises NotFoundError."""

    async def get_device_by_name(self, name: str) -> Device:
        """Raises NotFoundError."""

    async def list_devices(
        self, *, text_search: str | None = None, page: int = 0, page_size: int = 100
    ) -> Page[Device]:
        """Devices ordered by name; ``text_search`` matches a substring of the name, any case."""

    async def set_device_enabled(self, device_id: UUID, enabled: bool) -> Device: ...

    async def bind_device(self, device_id: UUID, ca_id: UUID | None) -> Device:
        """Bind the device to a trusted CA (its leaves may attach to it), or unbind (None)."""

    async def delete_device(self, device_id: UUID) -> None:
        """Deletes the device and its credentials (the auth events keep their history)."""

    async def create_device_with_credential(
        self,
        name: str,
        *,
        type: str = "default",
        label: str = "",
        x509: ParsedCredential | None = None,
        token: str | None = None,
        issuer_ca_id: UUID | None = None,
    ) -> tuple[Device, Credential]:
        """Device and its first credential (exactly one of x509/token) in one transaction:
        on any error neither exists afterwards. ``issuer_ca_id``: see add_x509_credential;
        the device is then bound to that CA."""

    async def create_devices_with_x509(self, devices: Sequence[NewDevice]) -> list[Outcome]:
        """Many devices with their first X.509 credential in one transaction (the bulk
        import): each device's records, or why it was refused, in order; see storage.bulk."""

    # --- credentials ---
    async def add_x509_credential(
        self, device_id: UUID, parsed: ParsedCredential, *, issuer_ca_id: UUID | None = None
    ) -> Credential:
        """Raises ConflictError 'Device credentials are already assigned to another device!'
        (naming the device) when the public key is registered already.

        ``issuer_ca_id`` is the trusted CA the leaf was accepted through (the broker's first
        connection of a CA-issued leaf); None for a certificate an operator pins directly.
        """

    async def add_token_credential(self, device_id: UUID, token: str) -> Credential: ...

    async def add_basic_credential(
        self,
        device_id: UUID,
        *,
        username: str,
        password: str,
        client_id: str | None = None,
        application: bool = False,
    ) -> Credential:
        """Stores an argon2 hash of ``password``, never the password."""

    async def get_credential(self, credential_id: UUID) -> Credential: ...

    async def list_credentials(self, device_id: UUID) -> Sequence[Credential]: ...

    async def set_credential_status(
        self, credential_id: UUID, status: CredentialStatus
    ) -> Credential:
        """Raises ValidationError when reactivating a revoked credential (revocation is final)."""

    async def revoke_x509(
        self, device_id: UUID, fingerprint: str | None = None
    ) -> Sequence[Credential]:
        """Revokes the device's X.509 credential with that SPKI SHA-256 (or all of them).

        Returns the credentials this call revoked (already revoked ones are left out, so an
        empty result means there was nothing left to revoke). The fingerprint may be given in
        upper case or colon-separated. Raises NotFoundError for an unknown device, or when no
        X.509 credential of the device has that fingerprint.
        """

    # --- lookups on the connect path: one indexed query each ---
    async def find_x509(self, spki_sha256: str) -> CredentialMatch | None: ...

    async def find_token(self, token: str) -> CredentialMatch | None: ...

    async def check_basic(
        self,
        username: str,
        password: str,
        client_id: str | None,
        *,
        lookup_within: float | None = None,
    ) -> CredentialMatch | None:
        """The match if the user name exists, the password verifies and the client id fits.
        ``lookup_within``: seconds the lookup may take (TimeoutError past it); the password's
        verification, CPU work on this machine, is not bounded by it."""

    # --- trusted CAs ---
    async def add_trusted_ca(
        self,
        name: str,
        parsed: ParsedCredential,
        *,
        cn_regex: str | None = None,
        create_devices: bool = False,
    ) -> TrustedCA: ...

    async def list_trusted_cas(self) -> Sequence[TrustedCA]: ...

    async def set_ca_crl(self, ca_id: UUID, crl_pem: str | None) -> TrustedCA: ...

    async def delete_trusted_ca(self, ca_id: UUID) -> None: ...

    # --- auth events ---
    async def record_auth_event(
        self,
        *,
        outcome: AuthOutcome,
        reason: str,
        device_id: UUID | None = None,
        fingerprint: str | None = None,
        remote_address: str | None = None,
    ) -> None: ...

    async def record_auth_events(self, events: Sequence[NewAuthEvent]) -> None:
        """Several auth events in one transaction."""

    async def list_auth_events(
        self,
        *,
        device_id: UUID | None = None,
        outcome: AuthOutcome | None = None,
        limit: int = 100,
    ) -> Sequence[AuthEvent]:
        """Newest first."""

    async def prune_auth_events(
        self, *, older_than: datetime, keep: int, batch: int = 10_000
    ) -> int:
        """Delete the events older than ``older_than`` and the oldest beyond the newest
        ``keep``, at most ``batch`` per transaction; how many were deleted."""

    # --- change feed ---
    async def last_change_seq(self) -> int: ...

    async def changes_since(self, seq: int, limit: int = 1000) -> Sequence[Change]: ...

    async def change_marker(self) -> int | None:
        """A value that stays the same while the change feed cannot have grown (a cheap check
        a follower makes before reading the feed); None when there is no such check."""

    # --- persistent MQTT sessions (storage.sessions) ---
    async def write_sessions(self, writes: Sequence[SessionWrite]) -> list[int]:
        """Apply the writes in order in one transaction; the ids of its Enqueue writes."""

    async def load_sessions(self) -> list[StoredSession]: ...

    async def load_sessions_page(self, after: str | None, limit: int) -> list[StoredSession]: ...

    async def load_session(self, key: str) -> StoredSession | None: ...

    async def ping(self) -> None:
        """Raises StoreUnavailableError when the database cannot be reached."""

    async def close(self) -> None: ...
