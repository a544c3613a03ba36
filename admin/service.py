"""Operator operations shared by the REST API and the web UI.

Both surfaces call these, so a device created or a credential switched behaves the same
whichever way the operator went. Inputs are checked before the store is touched (a bad PEM is
refused without I/O); store and credential errors (``nanoiot.errors``) pass through for the
HTTP boundary to map. After a successful change the caller tells the broker
(``AdminContext.changed()``); these functions know only the store.

Switching credentials (``replace_credentials``) leaves the device with exactly the new
credential active:

1. the new credential is added first, so a bad PEM, an expired certificate or a key that is
   already registered leaves the device as it was;
2. its other X.509 credentials are then revoked (final: a revoked key can never be registered
   again), its access tokens and MQTT basic credentials disabled. Disabling keeps a token or
   user name reserved to this device, and switching back to the same token re-enables it;
3. sending the credential the device already has is idempotent: nothing is added, and only
   credentials still active beside it are retired (which also completes a switch that was
   interrupted between steps 1 and 2).
"""

import asyncio
import secrets
import unicodedata
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID
from weakref import WeakKeyDictionary

from auth.certificate import ParsedCredential, parse_credential
from auth.kinds import CredentialStatus, CredentialType
from auth.validity import validity_problem
from nanoiot.errors import CertificateRejected, ConflictError, NotFoundError, ValidationError
from storage.credentials import NO_SUCH_DEVICE_FOR_CREDENTIAL
from storage.interface import CredentialStore
from storage.records import Credential, Device, Page

TOKEN_BYTES = 15  # 20 URL-safe characters, as the CLI makes them


@dataclass(frozen=True)
class X509Spec:
    """A certificate (PEM or DER text, a chain leaf first) or a bare public key PEM."""

    pem: str


@dataclass(frozen=True)
class TokenSpec:
    """An access token; ``None`` asks for a random one."""

    token: str | None = None


@dataclass(frozen=True)
class BasicSpec:
    """MQTT user name and password, optionally bound to one client id."""

    username: str
    password: str
    client_id: str | None = None


CredentialSpec = X509Spec | TokenSpec | BasicSpec
_Ready = ParsedCredential | TokenSpec | BasicSpec  # checked, and a token chosen


# --- devices --------------------------------------------------------------------------------


async def create_device(
    store: CredentialStore, name: str, *, type: str | None = None, label: str | None = None
) -> Device:
    return await store.create_device(name, type=type or "default", label=_label(label))


async def list_devices(
    store: CredentialStore, *, text_search: str | None, page: int, page_size: int
) -> Page[Device]:
    if text_search:
        _refuse_unstorable("textSearch", text_search)
    return await store.list_devices(text_search=text_search, page=page, page_size=page_size)


async def delete_device(store: CredentialStore, device_id: UUID) -> None:
    await store.delete_device(device_id)


async def create_device_with_credentials(
    store: CredentialStore,
    name: str,
    spec: CredentialSpec,
    *,
    type: str | None = None,
    label: str | None = None,
    allow_expired: bool = False,
    now: datetime | None = None,
) -> tuple[Device, Credential]:
    """A device and its first credential; on any error no device is left behind."""
    ready = _ready(spec, allow_expired=allow_expired, now=now)
    type_, label_ = type or "default", _label(label)
    if isinstance(ready, ParsedCredential):
        return await store.create_device_with_credential(name, type=type_, label=label_, x509=ready)
    if isinstance(ready, TokenSpec):
        return await store.create_device_with_credential(
            name, type=type_, label=label_, token=ready.token
        )
    # The store has no one-transaction form for MQTT basic: undo the device on failure.
    device = await store.create_device(name, type=type_, label=label_)
    try:
        credential = await _add(store, device.id, ready)
    except Exception:
        await store.delete_device(device.id)
        raise
    return device, credential


# --- credentials ----------------------------------------------------------------------------


async def current_credential(store: CredentialStore, device_id: UUID) -> Credential:
    """The credential a device authenticates with: its newest active one, else its newest."""
    credentials = await store.list_credentials(device_id)
    if not credentials:
        raise NotFoundError(f"device {device_id} has no credentials")
    active = [c for c in credentials if c.status is CredentialStatus.ACTIVE]
    return max(active or credentials, key=lambda c: c.created_at)


async def replace_credentials(
    store: CredentialStore,
    device_id: UUID,
    spec: CredentialSpec,
    *,
    allow_expired: bool = False,
    now: datetime | None = None,
) -> Credential:
    """Switch the device to ``spec``; see the module's docstring for what happens to the
    credentials it had."""
    ready = _ready(spec, allow_expired=allow_expired, now=now)
    async with _switching(store):
        try:
            existing = await store.list_credentials(device_id)
        except NotFoundError:
            raise NotFoundError(NO_SUCH_DEVICE_FOR_CREDENTIAL) from None
        same = await _same_credential(store, existing, ready)
        kept = await _reuse(store, same) if same else await _add(store, device_id, ready)
        await _retire_others(store, existing, kept)
    return kept


async def _add(store: CredentialStore, device_id: UUID, ready: _Ready) -> Credential:
    if isinstance(ready, ParsedCredential):
        return await store.add_x509_credential(device_id, ready)
    if isinstance(ready, TokenSpec):
        assert ready.token is not None
        return await store.add_token_credential(device_id, ready.token)
    return await store.add_basic_credential(
        device_id, username=ready.username, password=ready.password, client_id=ready.client_id
    )


async def _same_credential(
    store: CredentialStore, existing: Sequence[Credential], ready: _Ready
) -> Credential | None:
    """The device's credential that ``ready`` describes again, if it has one."""
    if isinstance(ready, ParsedCredential):
        found = next((c for c in existing if c.spki_sha256 == ready.spki_sha256), None)
        if found is not None and found.pem != ready.pem:
            raise ConflictError(
                "this device already has a credential for this public key "
                f"({found.subject or 'a bare public key'}); a new certificate needs a new key pair"
            )
        return found
    if isinstance(ready, TokenSpec):
        # The store keeps a hash of each token: it is found by the token, not compared.
        assert ready.token is not None
        match = await store.find_token(ready.token)
        holder = match.credential.id if match is not None else None
        return next((c for c in existing if c.id == holder), None)
    found = next((c for c in existing if c.username == ready.username), None)
    if found is None:
        return None
    match = await store.check_basic(ready.username, ready.password, ready.client_id)
    if match is None or match.credential.id != found.id or found.client_id != ready.client_id:
        raise ConflictError(
            f"user name '{ready.username}' is already registered for this device with another "
            "password or client id: choose another user name"
        )
    return found


async def _reuse(store: CredentialStore, credential: Credential) -> Credential:
    if credential.status is CredentialStatus.REVOKED:
        raise ConflictError(
            "this credential of the device was revoked, and revocation is final: "
            "register a new one (for X.509, a certificate for a new key pair)"
        )
    if credential.status is CredentialStatus.DISABLED:
        return await store.set_credential_status(credential.id, CredentialStatus.ACTIVE)
    return credential


async def _retire_others(
    store: CredentialStore, existing: Sequence[Credential], kept: Credential
) -> None:
    for credential in existing:
        if credential.id == kept.id or credential.status is CredentialStatus.REVOKED:
            continue
        if credential.type is CredentialType.X509_CERTIFICATE:
            assert credential.spki_sha256 is not None
            await store.revoke_x509(credential.device_id, credential.spki_sha256)
        elif credential.status is CredentialStatus.ACTIVE:
            await store.set_credential_status(credential.id, CredentialStatus.DISABLED)


# Two switches of one device at once would each retire the other's new credential; in this
# process they take turns (one lock per store, so each event loop has its own).
_LOCKS: WeakKeyDictionary[CredentialStore, asyncio.Lock] = WeakKeyDictionary()


@asynccontextmanager
async def _switching(store: CredentialStore) -> AsyncIterator[None]:
    lock = _LOCKS.setdefault(store, asyncio.Lock())
    async with lock:
        yield


# --- checks before any I/O ------------------------------------------------------------------


def _ready(spec: CredentialSpec, *, allow_expired: bool, now: datetime | None) -> _Ready:
    if isinstance(spec, X509Spec):
        parsed = parse_credential(spec.pem)
        _check_not_expired(parsed, now or datetime.now(UTC), allow_expired=allow_expired)
        return parsed
    if isinstance(spec, TokenSpec):
        return TokenSpec(spec.token if spec.token else secrets.token_urlsafe(TOKEN_BYTES))
    _refuse_unstorable("password", spec.password)
    return spec


def _check_not_expired(parsed: ParsedCredential, now: datetime, *, allow_expired: bool) -> None:
    """RFC 5280 §4.1.2.5. A certificate not valid *yet* is accepted: devices are often
    provisioned before their certificate starts."""
    problem = None if allow_expired else validity_problem(None, parsed.not_after, now)
    if problem is not None:
        raise CertificateRejected(
            f"the certificate {problem}: devices could not connect with it "
            "(the API's allowExpired=true registers it anyway)"
        )


def _label(label: str | None) -> str:
    if label:
        _refuse_unstorable("device label", label)
    return label or ""


def _refuse_unstorable(what: str, value: str) -> None:
    """Free text must still be storable: PostgreSQL text cannot hold U+0000, and a lone
    surrogate (which JSON's \\u escapes can carry) cannot be encoded as UTF-8."""
    if "\x00" in value or any(unicodedata.category(char) == "Cs" for char in value):
        raise ValidationError(f"{what} must not contain NUL characters or invalid Unicode")
