"""Several credentials per device, for rotation, and turning devices and credentials on and off.

A credential is ``active``, ``disabled`` (can be enabled again) or ``revoked`` (final, like an
RFC 5280 §5.3.1 revocation that is not certificateHold). Every change is followed by
``AdminContext.changed()`` so a broker in this process closes the sessions it no longer allows
at once instead of at its next poll of the change feed.
"""

import secrets
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Request, status

from admin.context import context_of
from admin.v1_models import (
    CredentialV1,
    DeviceV1,
    NewAccessToken,
    NewCredential,
    NewMqttBasic,
    NewX509,
    errors,
    for_api,
)
from admin.wire_types import Uuid
from auth.certificate import ParsedCredential, parse_credential
from auth.kinds import CredentialStatus
from auth.validity import check_registrable
from nanoiot.errors import CertificateRejected
from storage.interface import CredentialStore
from storage.records import Credential

router = APIRouter(tags=["credentials (v1)"])

DeviceId = Annotated[Uuid, Path(alias="deviceId", description="The device's id.")]
CredentialId = Annotated[Uuid, Path(alias="credentialId", description="The credential's id.")]


@router.get(
    "/devices/{deviceId}/credentials",
    summary="List a device's credentials",
    response_model=list[CredentialV1],
    responses=errors(404),
)
async def list_credentials(request: Request, device_id: DeviceId) -> list[CredentialV1]:
    credentials = await context_of(request).store.list_credentials(device_id)
    return [CredentialV1.of(c) for c in credentials]


@router.post(
    "/devices/{deviceId}/credentials",
    summary="Add a credential to a device (X.509 PEM, access token or MQTT basic)",
    description="The device keeps its other credentials, so a new certificate can be rolled "
    "out before the old one is disabled or revoked. An access token is generated when none "
    "is given. 409 names the device that holds the key, token or user name already.",
    status_code=status.HTTP_201_CREATED,
    response_model=CredentialV1,
    responses=errors(400, 404, 409),
)
async def add_credential(
    request: Request,
    device_id: DeviceId,
    body: NewCredential,
) -> CredentialV1:
    context = context_of(request)
    credential = await _add(context.store, device_id, body)
    context.changed()
    return CredentialV1.of(credential)


async def _add(store: CredentialStore, device_id: UUID, body: NewCredential) -> Credential:
    if isinstance(body, NewX509):
        parsed = parse_credential(body.pem)
        _check_registrable(parsed, allow_expired=body.allow_expired)
        return await store.add_x509_credential(device_id, parsed)
    if isinstance(body, NewAccessToken):
        return await store.add_token_credential(device_id, body.token or secrets.token_urlsafe(15))
    assert isinstance(body, NewMqttBasic)
    return await store.add_basic_credential(
        device_id,
        username=body.username,
        password=body.password,
        client_id=body.client_id,
        application=body.application,
    )


def _check_registrable(parsed: ParsedCredential, *, allow_expired: bool) -> None:
    """``auth.validity.check_registrable``, with its advice worded for this API."""
    try:
        check_registrable(parsed, datetime.now(UTC), allow_expired=allow_expired)
    except CertificateRejected as exc:
        raise CertificateRejected(for_api(str(exc))) from None


@router.get(
    "/credentials/{credentialId}",
    summary="Get one credential",
    response_model=CredentialV1,
    responses=errors(404),
)
async def get_credential(request: Request, credential_id: CredentialId) -> CredentialV1:
    return CredentialV1.of(await context_of(request).store.get_credential(credential_id))


@router.post(
    "/credentials/{credentialId}/disable",
    summary="Disable a credential",
    description="It stops admitting the device (live sessions using it are closed) until "
    "enabled again. 400 for a revoked credential.",
    response_model=CredentialV1,
    responses=errors(400, 404),
)
async def disable_credential(request: Request, credential_id: CredentialId) -> CredentialV1:
    return await _set_status(request, credential_id, CredentialStatus.DISABLED)


@router.post(
    "/credentials/{credentialId}/enable",
    summary="Enable a disabled credential",
    description="400 for a revoked credential: revocation is final, add a new one instead.",
    response_model=CredentialV1,
    responses=errors(400, 404),
)
async def enable_credential(request: Request, credential_id: CredentialId) -> CredentialV1:
    return await _set_status(request, credential_id, CredentialStatus.ACTIVE)


@router.post(
    "/credentials/{credentialId}/revoke",
    summary="Revoke a credential for good",
    description="Live sessions using it are closed; its key, token or user name stays taken.",
    response_model=CredentialV1,
    responses=errors(404),
)
async def revoke_credential(request: Request, credential_id: CredentialId) -> CredentialV1:
    return await _set_status(request, credential_id, CredentialStatus.REVOKED)


async def _set_status(
    request: Request, credential_id: UUID, wanted: CredentialStatus
) -> CredentialV1:
    context = context_of(request)
    credential = await context.store.set_credential_status(credential_id, wanted)
    context.changed()
    return CredentialV1.of(credential)


@router.post(
    "/devices/{deviceId}/disable",
    summary="Disable a device",
    description="It is refused at its next connect, and live sessions are closed.",
    response_model=DeviceV1,
    responses=errors(404),
)
async def disable_device(request: Request, device_id: DeviceId) -> DeviceV1:
    return await _set_enabled(request, device_id, enabled=False)


@router.post(
    "/devices/{deviceId}/enable",
    summary="Enable a disabled device",
    response_model=DeviceV1,
    responses=errors(404),
)
async def enable_device(request: Request, device_id: DeviceId) -> DeviceV1:
    return await _set_enabled(request, device_id, enabled=True)


async def _set_enabled(request: Request, device_id: UUID, *, enabled: bool) -> DeviceV1:
    context = context_of(request)
    device = await context.store.set_device_enabled(device_id, enabled)
    context.changed()
    return DeviceV1.of(device, context.connected_device_ids())
