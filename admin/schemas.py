"""Request and response bodies of the reference-compatible API (``/api/...``).

Field names are the reference system's (camelCase: ``credentialsType``, ``deviceId``, ...), so
its clients and scripts work unchanged; what we add (``enabled``, ``status``, ``spkiSha256``,
the certificate's subject, issuer and validity) is extra fields they can ignore. Unknown fields
in a request are ignored for the same reason: the reference's clients send back whole objects.

This module only shapes data: records in, JSON models out, and requests into the service's
credential specs. No store access here.
"""

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from admin.service import BasicSpec, CredentialSpec, TokenSpec, X509Spec
from admin.wire_types import Uuid
from auth.kinds import CredentialStatus, CredentialType
from nanoiot import strict_json
from nanoiot.errors import ValidationError
from storage.names import MAX_NAME_LENGTH
from storage.records import Credential, Device, Page

MAX_PEM_LENGTH = 64 * 1024  # a leaf and a few chain certificates fit many times over
MAX_LABEL_LENGTH = 255
MAX_TYPE_LENGTH = 64


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


def _ms(when: datetime) -> int:
    """The reference's timestamps: milliseconds since the Unix epoch."""
    return int(when.timestamp() * 1000)


# --- ids ------------------------------------------------------------------------------------


class EntityId(_Model):
    """``{id}``: how the reference names a credentials object."""

    id: Uuid


class DeviceId(_Model):
    """``{id, entityType: "DEVICE"}``: how the reference names a device."""

    id: Uuid
    entity_type: Literal["DEVICE"] = "DEVICE"


# --- devices --------------------------------------------------------------------------------


class DeviceCreate(_Model):
    """A new device. The name is also its default MQTT client id, so it must be one MQTT can
    carry (no '/', '+', '#', no leading '$'); the store says which rule a name breaks."""

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    type: str | None = Field(
        default=None, max_length=MAX_TYPE_LENGTH, description="'default' when left out"
    )
    label: str | None = Field(default=None, max_length=MAX_LABEL_LENGTH)
    id: EntityId | None = Field(
        default=None,
        description="Not accepted: this endpoint creates devices only (400 when present).",
    )

    def checked(self) -> "DeviceCreate":
        if self.id is not None:
            raise ValidationError(
                "this endpoint creates devices and does not update them: leave out 'id'"
            )
        return self


class DeviceOut(_Model):
    id: DeviceId
    created_time: int = Field(description="Milliseconds since the Unix epoch")
    name: str
    type: str
    label: str
    enabled: bool = Field(description="A disabled device is refused at connect")

    @classmethod
    def of(cls, device: Device) -> "DeviceOut":
        return cls(
            id=DeviceId(id=device.id),
            created_time=_ms(device.created_at),
            name=device.name,
            type=device.type,
            label=device.label,
            enabled=device.enabled,
        )


class DevicePage(_Model):
    """One page of devices, as the reference pages its listings."""

    data: list[DeviceOut]
    total_pages: int
    total_elements: int
    has_next: bool

    @classmethod
    def of(cls, page: Page[Device]) -> "DevicePage":
        return cls(
            data=[DeviceOut.of(device) for device in page.items],
            total_pages=page.total_pages,
            total_elements=page.total,
            has_next=page.has_next,
        )


# --- credentials ----------------------------------------------------------------------------


class CredentialsValue(_Model):
    """A credential as the reference's clients send it.

    - ``X509_CERTIFICATE``: ``credentialsValue`` is the certificate PEM (the ``.pub.pem``
      file; a chain is accepted leaf first) or a bare public key PEM. ``credentialsId`` is
      computed from it and ignored when sent.
    - ``ACCESS_TOKEN``: ``credentialsId`` is the token; a random one is made when omitted.
    - ``MQTT_BASIC``: ``credentialsValue`` is the JSON text
      ``{"clientId": ..., "userName": ..., "password": ...}`` (clientId optional).
    """

    credentials_type: CredentialType
    credentials_id: str | None = Field(default=None, max_length=255)
    credentials_value: str | None = Field(default=None, max_length=MAX_PEM_LENGTH)

    def spec(self) -> CredentialSpec:
        if self.credentials_type is CredentialType.X509_CERTIFICATE:
            if not self.credentials_value:
                raise ValidationError(
                    "credentialsValue must hold the device certificate in PEM for "
                    "X509_CERTIFICATE (the .pub.pem file)"
                )
            return X509Spec(pem=self.credentials_value)
        if self.credentials_type is CredentialType.ACCESS_TOKEN:
            return TokenSpec(token=self.credentials_id or None)
        return _basic_spec(self.credentials_value)


class CredentialsUpdate(CredentialsValue):
    """``POST /api/device/credentials``: only ``deviceId`` and the new credential are needed.

    ``id`` (the current credentials object) is accepted for compatibility and ignored: the
    device's current credentials are found from ``deviceId``.
    """

    id: EntityId | None = None
    device_id: DeviceId


class DeviceWithCredentials(_Model):
    device: DeviceCreate
    credentials: CredentialsValue


class CredentialsOut(_Model):
    """One credential of a device; secrets (passwords, their hashes) are never included."""

    id: EntityId
    created_time: int = Field(description="Milliseconds since the Unix epoch")
    device_id: DeviceId
    credentials_type: CredentialType
    credentials_id: str | None = Field(
        description="X.509: the reference's SHA3-256 hash of the certificate; token: the token, "
        "in the answer that created it only (the store keeps a keyed hash)"
    )
    credentials_value: str | None = Field(
        description="X.509: the PEM; MQTT_BASIC: JSON text with clientId and userName"
    )
    status: CredentialStatus = Field(description="Only 'active' credentials authenticate")
    spki_sha256: str | None = Field(
        description="X.509: SHA-256 of the public key (SubjectPublicKeyInfo), our lookup key"
    )
    subject: str | None
    issuer: str | None
    not_before: datetime | None
    not_after: datetime | None

    @classmethod
    def of(cls, credential: Credential) -> "CredentialsOut":
        return cls(
            id=EntityId(id=credential.id),
            created_time=_ms(credential.created_at),
            device_id=DeviceId(id=credential.device_id),
            credentials_type=credential.type,
            credentials_id=_credentials_id(credential),
            credentials_value=_credentials_value(credential),
            status=credential.status,
            spki_sha256=credential.spki_sha256,
            subject=credential.subject,
            issuer=credential.issuer,
            not_before=credential.not_before,
            not_after=credential.not_after,
        )


def _credentials_id(credential: Credential) -> str | None:
    if credential.type is CredentialType.X509_CERTIFICATE:
        return credential.credentials_id
    if credential.type is CredentialType.ACCESS_TOKEN:
        return credential.token
    return None


def _credentials_value(credential: Credential) -> str | None:
    if credential.type is CredentialType.X509_CERTIFICATE:
        return credential.pem
    if credential.type is CredentialType.MQTT_BASIC:
        # The reference returns the password here too; we store only its hash, and keep it.
        return json.dumps({"clientId": credential.client_id, "userName": credential.username})
    return None


def _basic_spec(value: str | None) -> BasicSpec:
    """Read the reference's MQTT_BASIC ``credentialsValue`` (JSON inside a JSON string)."""
    example = '{"clientId": "...", "userName": "...", "password": "..."}'
    try:
        fields: Any = strict_json.loads(value) if value else None
    except strict_json.JsonRefused:  # a name twice as well: which password would count?
        fields = None
    if not isinstance(fields, dict):
        raise ValidationError(f"credentialsValue must be JSON text like {example} for MQTT_BASIC")
    username, password, client_id = (fields.get(k) for k in ("userName", "password", "clientId"))
    if not isinstance(username, str) or not username:
        raise ValidationError("MQTT_BASIC credentials need a userName (a non-empty string)")
    if not isinstance(password, str) or not password:
        raise ValidationError("MQTT_BASIC credentials need a password (a non-empty string)")
    if client_id is not None and not isinstance(client_id, str):
        raise ValidationError("clientId must be a string or left out")
    return BasicSpec(username=username, password=password, client_id=client_id or None)


class DeviceWithCredentialsOut(DeviceOut):
    """The device, and the credential it was created with: the only answer that shows a new
    access token (the store keeps a keyed hash of it)."""

    credentials: CredentialsOut

    @classmethod
    def of_created(cls, device: Device, credential: Credential) -> "DeviceWithCredentialsOut":
        return cls(**DeviceOut.of(device).model_dump(), credentials=CredentialsOut.of(credential))
