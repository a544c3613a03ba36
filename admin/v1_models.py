"""The JSON shapes of ``/api/v1``: camelCase like the reference system, times in ms since epoch.

Responses are built from the store's records here (``*.of(record)``), so no route formats a
field itself. Requests forbid unknown fields: a misspelt ``cnRegex`` must fail loudly rather
than create a CA without its rule.
"""

from datetime import datetime
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from pydantic.alias_generators import to_camel

from admin.wire_types import Uuid
from auth.kinds import CredentialStatus, CredentialType
from storage.records import AuthEvent, AuthOutcome, Credential, Device, TrustedCA


def epoch_ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


class _Camel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True
    )


class _Request(_Camel):
    model_config = ConfigDict(extra="forbid")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give (``admin.problems`` adds their
    body, the Problem schema, and the 401/429/503 every route behind the token can give)."""
    meaning = {
        400: "Invalid input (the message says what is wrong)",
        404: "Unknown device, credential or CA",
        409: "Already registered",
        415: "Unsupported Content-Type",
    }
    return {code: {"description": meaning[code]} for code in codes}


def for_api(message: str) -> str:
    """An error message shared with the CLI, with its advice put in this API's terms."""
    return message.replace("--allow-expired", "allowExpired=true")


def unsupported(media_type: str, accepted: list[str]) -> HTTPException:
    """415 naming the Content-Types a route reads."""
    return HTTPException(
        415,
        f"send one of {', '.join(accepted)}, not '{media_type or 'no Content-Type'}'",
    )


# --- devices and credentials ---------------------------------------------------------------


class DeviceV1(_Camel):
    id: UUID
    name: str
    type: str
    label: str
    enabled: bool
    created_time: int
    connected: bool = Field(description="Has a live MQTT connection to this node's broker.")
    bound_ca_id: UUID | None = Field(
        None,
        description="The trusted CA whose certificates may connect as this device (the CA "
        "that created it, or the one it was bound to); null for none.",
    )

    @classmethod
    def of(cls, device: Device, connected: set[str]) -> Self:
        return cls(
            id=device.id,
            name=device.name,
            type=device.type,
            label=device.label,
            enabled=device.enabled,
            created_time=epoch_ms(device.created_at) or 0,
            connected=str(device.id) in connected,
            bound_ca_id=device.bound_ca_id,
        )


class DeviceCaBinding(_Request):
    ca_id: Uuid | None = Field(
        description="The trusted CA whose certificates (by their CN rule) may connect as this "
        "device; null unbinds. A device holding a certificate registered another way stays "
        "with it whatever this says."
    )


class CredentialV1(_Camel):
    """One credential; the fields of other credential types are null."""

    id: UUID
    device_id: UUID
    credentials_type: CredentialType
    status: CredentialStatus
    created_time: int
    credentials_id: str | None = Field(
        None,
        description="The reference system's lookup key: sha3-256 of the certificate for "
        "X.509; for an access token the token itself, in the answer that created it only "
        "(the store keeps a keyed hash of it).",
    )
    spki_sha256: str | None = None
    pem: str | None = None
    subject: str | None = None
    issuer: str | None = None
    serial: str | None = None
    not_before: int | None = None
    not_after: int | None = None
    issuer_ca_id: UUID | None = None
    token: str | None = Field(
        None, description="A new access token, in the answer that created it only (shown once)."
    )
    username: str | None = None
    client_id: str | None = None
    application: bool = False

    @classmethod
    def of(cls, credential: Credential) -> Self:
        return cls(
            id=credential.id,
            device_id=credential.device_id,
            credentials_type=credential.type,
            status=credential.status,
            created_time=epoch_ms(credential.created_at) or 0,
            credentials_id=credential.credentials_id or credential.token,
            spki_sha256=credential.spki_sha256,
            pem=credential.pem,
            subject=credential.subject,
            issuer=credential.issuer,
            serial=credential.serial,
            not_before=epoch_ms(credential.not_before),
            not_after=epoch_ms(credential.not_after),
            issuer_ca_id=credential.issuer_ca_id,
            token=credential.token,
            username=credential.username,
            client_id=credential.client_id,
            application=credential.application,
        )


class NewX509(_Request):
    credentials_type: Literal[CredentialType.X509_CERTIFICATE]
    pem: str = Field(description="The device certificate (or bare public key) in PEM.")
    allow_expired: StrictBool = Field(False, description="Register an already expired certificate.")


class NewAccessToken(_Request):
    credentials_type: Literal[CredentialType.ACCESS_TOKEN]
    token: str | None = Field(None, description="The token; generated when omitted.")


class NewMqttBasic(_Request):
    credentials_type: Literal[CredentialType.MQTT_BASIC]
    username: str
    password: str = Field(description="Stored as an argon2 hash; never returned.")
    client_id: str | None = Field(None, description="Require this MQTT client id.")
    application: StrictBool = Field(False, description="A backend application, not a device.")


NewCredential = Annotated[
    NewX509 | NewAccessToken | NewMqttBasic, Field(discriminator="credentials_type")
]


# --- trusted CAs ---------------------------------------------------------------------------


class CrlSummary(_Camel):
    entries: int | None = Field(None, description="Revoked serial numbers listed.")
    last_update: int | None = None
    next_update: int | None = None
    error: str | None = Field(None, description="Why the broker cannot use the stored CRL.")


class TrustedCaV1(_Camel):
    id: UUID
    name: str
    subject: str
    spki_sha256: str
    not_after: int
    cn_regex: str | None
    create_devices: bool
    enabled: bool
    created_time: int
    pem: str
    crl: CrlSummary | None

    @classmethod
    def of(cls, ca: TrustedCA, crl: CrlSummary | None) -> Self:
        return cls(
            id=ca.id,
            name=ca.name,
            subject=ca.subject,
            spki_sha256=ca.spki_sha256,
            not_after=epoch_ms(ca.not_after) or 0,
            cn_regex=ca.cn_regex,
            create_devices=ca.create_devices,
            enabled=ca.enabled,
            created_time=epoch_ms(ca.created_at) or 0,
            pem=ca.pem,
            crl=crl,
        )


class NewTrustedCa(_Request):
    name: str
    pem: str = Field(description="The CA certificate in PEM (basicConstraints cA=true).")
    cn_regex: str | None = Field(
        None,
        description="Matched against the whole CN of a device certificate; group 1 (or the "
        "whole CN) is the device name. Default: the CN is the device name.",
    )
    create_devices: StrictBool = Field(False, description="Create a device at its first connect.")


class NewCrl(_Request):
    crl: str = Field(description="The CA's CRL in PEM, signed by that CA.")


# --- auth events ---------------------------------------------------------------------------


class AuthEventV1(_Camel):
    id: int
    created_time: int
    device_id: UUID | None
    spki_sha256: str | None
    remote_address: str | None
    outcome: AuthOutcome
    reason: str

    @classmethod
    def of(cls, event: AuthEvent) -> Self:
        return cls(
            id=event.id,
            created_time=epoch_ms(event.at) or 0,
            device_id=event.device_id,
            spki_sha256=event.fingerprint,
            remote_address=event.remote_address,
            outcome=event.outcome,
            reason=event.reason,
        )


# --- bulk import ---------------------------------------------------------------------------


class ImportRowResult(_Camel):
    """One line of the import's answer per row, in the order of the rows."""

    line: int = Field(description="Line of the uploaded text where the row starts.")
    name: str | None = None
    ok: bool
    device_id: UUID | None = None
    credential_id: UUID | None = None
    status: int | None = Field(
        None, description="The HTTP status this row alone would have had (409: already there)."
    )
    error: str | None = None


class ImportSummary(_Camel):
    """The last line of the import's answer."""

    summary: Literal[True] = True
    imported: int
    failed: int
    conflicts: int = Field(description="Failed rows whose device or credential exists already.")
    complete: bool = Field(description="False when the upload itself broke off (see error).")
    error: str | None = None
