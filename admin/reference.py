"""Endpoints shaped like the reference system's device API (``/api/...``).

Paths, field names and status codes follow the reference, so its clients and scripts keep
working: creating answers 200 with the object, deleting 200 with no body. Two things differ on
purpose: a device is created without credentials (the reference gives it a random access token,
which would let it connect with that token too), and switching a device to a certificate
needs only its id (``POST /api/device/credentials``, see ``admin.service``).

The admin token is checked by the dependency ``admin.app`` puts on this router. Every change
is followed by ``AdminContext.changed()``, so a broker in this process applies it to live
sessions at once.
"""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request, Response
from starlette.convertors import UUIDConvertor, register_url_convertor

from admin import service
from admin.context import context_of
from admin.problems import Problem
from admin.schemas import (
    CredentialsOut,
    CredentialsUpdate,
    DeviceCreate,
    DeviceOut,
    DevicePage,
    DeviceWithCredentials,
    DeviceWithCredentialsOut,
)
from admin.wire_types import JSON_BOOLEAN, JSON_INTEGER, UUID_PATTERN
from storage.interface import CredentialStore
from storage.sql import MAX_PAGE, MAX_PAGE_SIZE

router = APIRouter(tags=["devices (reference-compatible)"])


class _UuidText(UUIDConvertor):
    """A path id in the hyphenated form only (``admin.wire_types``): Starlette's ``uuid``
    also matches 32 bare hex digits. Any other text is no route: 404, as before."""

    regex = UUID_PATTERN


register_url_convertor("uuid_text", _UuidText())

_MEANINGS = {
    400: "Invalid input; the message says what is wrong (for a certificate: not PEM, a private "
    "key, a chain in the wrong order, already expired)",
    404: "No such device",
    409: "Already registered (device name, certificate key, token or user name)",
}

AllowExpired = Annotated[
    bool,
    Query(
        alias="allowExpired",
        description="Register a certificate that has already expired (devices cannot use it)",
    ),
    JSON_BOOLEAN,
]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem, "description": _MEANINGS[code]} for code in codes}


def _store(request: Request) -> CredentialStore:
    return context_of(request).store


# --- devices --------------------------------------------------------------------------------


@router.post(
    "/api/device",
    response_model=DeviceOut,
    responses=_errors(400, 409),
    summary="Create a device (without credentials)",
)
async def save_device(body: DeviceCreate, request: Request) -> DeviceOut:
    body.checked()
    device = await service.create_device(
        _store(request), body.name, type=body.type, label=body.label
    )
    context_of(request).changed()
    return DeviceOut.of(device)


@router.get(
    "/api/device/{deviceId:uuid_text}",
    response_model=DeviceOut,
    responses=_errors(404),
    summary="Get a device",
)
async def get_device(deviceId: UUID, request: Request) -> DeviceOut:
    return DeviceOut.of(await _store(request).get_device(deviceId))


@router.delete(
    "/api/device/{deviceId:uuid_text}",
    response_class=Response,
    responses={
        200: {"description": "Deleted, with its credentials", "content": {}},
        **_errors(404),
    },
    summary="Delete a device and its credentials",
)
async def delete_device(deviceId: UUID, request: Request) -> Response:
    await service.delete_device(_store(request), deviceId)
    context_of(request).changed()
    return Response(status_code=200)


@router.get(
    "/api/tenant/devices",
    response_model=DevicePage,
    responses=_errors(400),
    summary="List devices by name, one page at a time",
)
async def list_devices(
    request: Request,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=MAX_PAGE_SIZE), JSON_INTEGER] = 100,
    page: Annotated[int, Query(ge=0, le=MAX_PAGE), JSON_INTEGER] = 0,
    text_search: Annotated[
        str | None,
        Query(alias="textSearch", max_length=255, description="Part of the name, any case"),
    ] = None,
) -> DevicePage:
    found = await service.list_devices(
        _store(request), text_search=text_search, page=page, page_size=page_size
    )
    return DevicePage.of(found)


# --- credentials ----------------------------------------------------------------------------


@router.get(
    "/api/device/{deviceId:uuid_text}/credentials",
    response_model=CredentialsOut,
    responses=_errors(404),
    summary="The credentials a device authenticates with",
    description="Its newest active credential, or its newest one if none is active.",
)
async def get_credentials(deviceId: UUID, request: Request) -> CredentialsOut:
    return CredentialsOut.of(await service.current_credential(_store(request), deviceId))


@router.post(
    "/api/device/credentials",
    response_model=CredentialsOut,
    responses=_errors(400, 404, 409),
    summary="Switch a device to new credentials",
    description=(
        "Only `deviceId` and the new credential are needed; `id` and, for a certificate, "
        "`credentialsId` are ignored when sent. The new credential is added first, so an error "
        "leaves the device unchanged; the device's other X.509 credentials are then revoked "
        "and its tokens and MQTT basic credentials disabled. Sending the credential the "
        "device already has changes nothing."
    ),
)
async def save_credentials(
    body: CredentialsUpdate, request: Request, allow_expired: AllowExpired = False
) -> CredentialsOut:
    credential = await service.replace_credentials(
        _store(request), body.device_id.id, body.spec(), allow_expired=allow_expired
    )
    context_of(request).changed()
    return CredentialsOut.of(credential)


@router.post(
    "/api/device-with-credentials",
    response_model=DeviceWithCredentialsOut,
    responses=_errors(400, 409),
    summary="Create a device with its first credential, all or nothing",
)
async def save_device_with_credentials(
    body: DeviceWithCredentials, request: Request, allow_expired: AllowExpired = False
) -> DeviceWithCredentialsOut:
    device = body.device.checked()
    created, credential = await service.create_device_with_credentials(
        _store(request),
        device.name,
        body.credentials.spec(),
        type=device.type,
        label=device.label,
        allow_expired=allow_expired,
    )
    context_of(request).changed()
    # The reference answers with the device; the credential is added, as a generated access
    # token is shown in this answer only.
    return DeviceWithCredentialsOut.of_created(created, credential)
