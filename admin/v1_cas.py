"""Trusted CAs (the reference's "X.509 certificate chain" strategy) and their CRLs.

A device whose own key is not registered still gets in when its certificate chains to a CA
registered here; the CA's CN rule names the device, and its CRL (RFC 5280 §5) revokes leaves.
A CRL is checked before it is stored (``auth.chain.load_crl``: parses, and is signed by this
CA), so the broker never meets one it has to ignore.
"""

from typing import Annotated

from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Path, Request, Response, status
from pydantic import ValidationError as PydanticValidationError

from admin.context import context_of
from admin.trusted_cas import check_is_ca, find_ca
from admin.v1_models import (
    CrlSummary,
    DeviceCaBinding,
    DeviceV1,
    NewCrl,
    NewTrustedCa,
    TrustedCaV1,
    epoch_ms,
    errors,
    unsupported,
)
from admin.wire_types import Uuid
from auth.certificate import load_certificate, parse_credential
from auth.chain import load_crl
from nanoiot.errors import NanoIoTError, PemError, ValidationError
from storage.records import TrustedCA

router = APIRouter(tags=["trusted CAs (v1)"])

CaId = Annotated[Uuid, Path(alias="caId", description="The trusted CA's id.")]
DeviceId = Annotated[Uuid, Path(alias="deviceId", description="The device's id.")]

# Bodies a CRL may come in, besides JSON {"crl": "<PEM>"}.
_CRL_BODY_TYPES = {
    "application/pkix-crl": {"schema": {"type": "string", "format": "binary"}},
    "application/x-pem-file": {"schema": {"type": "string"}},
    "text/plain": {"schema": {"type": "string"}},
}
_CRL_JSON = {"application/json": {"schema": NewCrl.model_json_schema(by_alias=True)}}


@router.get("/trusted-cas", summary="List the trusted CAs", response_model=list[TrustedCaV1])
async def list_cas(request: Request) -> list[TrustedCaV1]:
    return [_out(ca) for ca in await context_of(request).store.list_trusted_cas()]


@router.post(
    "/trusted-cas",
    summary="Trust a CA: devices with a certificate it issued may connect",
    status_code=status.HTTP_201_CREATED,
    response_model=TrustedCaV1,
    responses=errors(400, 409),
)
async def add_ca(request: Request, body: NewTrustedCa) -> TrustedCaV1:
    parsed = parse_credential(body.pem)
    check_is_ca(parsed)
    context = context_of(request)
    ca = await context.store.add_trusted_ca(
        body.name, parsed, cn_regex=body.cn_regex, create_devices=body.create_devices
    )
    context.changed()
    return _out(ca)


@router.get(
    "/trusted-cas/{caId}",
    summary="Get one trusted CA",
    response_model=TrustedCaV1,
    responses=errors(404),
)
async def get_ca(request: Request, ca_id: CaId) -> TrustedCaV1:
    return _out(await find_ca(context_of(request).store, ca_id))


@router.delete(
    "/trusted-cas/{caId}",
    summary="Stop trusting a CA (and drop its CRL)",
    description="Devices admitted through it are refused from now on and disconnected; "
    "certificates pinned as device credentials keep working.",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(404),
)
async def delete_ca(request: Request, ca_id: CaId) -> None:
    context = context_of(request)
    await context.store.delete_trusted_ca(ca_id)
    context.changed()


@router.put(
    "/trusted-cas/{caId}/crl",
    summary="Set a trusted CA's CRL",
    description="The body is the CRL itself (PEM as text/plain or application/x-pem-file, DER "
    'as application/pkix-crl) or JSON {"crl": "<PEM>"}. It must be signed by this CA; '
    "400 says what is wrong with it. Live sessions of revoked certificates are closed.",
    response_model=TrustedCaV1,
    responses=errors(400, 404, 415),
    openapi_extra={"requestBody": {"required": True, "content": {**_CRL_JSON, **_CRL_BODY_TYPES}}},
)
async def set_crl(request: Request, ca_id: CaId) -> TrustedCaV1:
    context = context_of(request)
    ca = await find_ca(context.store, ca_id)
    data = await _crl_bytes(request)
    try:
        revocations = load_crl(data, load_certificate(ca.pem))
    except PemError as exc:
        raise PemError(f"CRL for trusted CA '{ca.name}': {exc}") from None
    stored = await context.store.set_ca_crl(ca.id, revocations.public_bytes(Encoding.PEM).decode())
    context.changed()
    return _out(stored)


async def _crl_bytes(request: Request) -> bytes:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and media_type not in _CRL_BODY_TYPES:
        raise unsupported(media_type, ["application/json", *_CRL_BODY_TYPES])
    limit = context_of(request).limits.max_crl_bytes  # http_max_crl_bytes, as the web UI
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ValidationError(f"the CRL is larger than {limit:,} bytes")
    if media_type != "application/json":
        return bytes(body)
    try:
        return NewCrl.model_validate_json(body).crl.encode()
    except PydanticValidationError as exc:
        # One line, without the body: pydantic's text spans lines and repeats the input.
        reasons = "; ".join(
            f"{'.'.join(map(str, error['loc']))}: {error['msg']}" if error["loc"] else error["msg"]
            for error in exc.errors()
        )
        raise ValidationError(f'expected JSON {{"crl": "<PEM>"}}: {reasons}') from None


@router.delete(
    "/trusted-cas/{caId}/crl",
    summary="Remove a trusted CA's CRL",
    response_model=TrustedCaV1,
    responses=errors(404),
)
async def clear_crl(request: Request, ca_id: CaId) -> TrustedCaV1:
    context = context_of(request)
    stored = await context.store.set_ca_crl(ca_id, None)
    context.changed()
    return _out(stored)


def _out(ca: TrustedCA) -> TrustedCaV1:
    return TrustedCaV1.of(ca, _crl_summary(ca))


def _crl_summary(ca: TrustedCA) -> CrlSummary | None:
    """What the broker would use of the stored CRL (``error`` when it cannot use it)."""
    if not ca.crl_pem:
        return None
    try:
        crl = load_crl(ca.crl_pem.encode(), load_certificate(ca.pem))
    except NanoIoTError as exc:
        return CrlSummary(error=str(exc))
    return CrlSummary(
        entries=len(crl),
        last_update=epoch_ms(crl.last_update_utc),
        next_update=epoch_ms(crl.next_update_utc),
    )


@router.put(
    "/devices/{deviceId}/trusted-ca",
    summary="Bind a device to a trusted CA",
    description="A certificate of a trusted CA connects as an existing device only if that CA "
    "created it or it is bound to that CA (and never if the device holds a certificate "
    'registered another way). Body {"caId": "<id>"}, or {"caId": null} to unbind.',
    response_model=DeviceV1,
    responses=errors(400, 404),
)
async def bind_device(request: Request, device_id: DeviceId, body: DeviceCaBinding) -> DeviceV1:
    context = context_of(request)
    if body.ca_id is not None:
        await find_ca(context.store, body.ca_id)  # 404 for an unknown CA
    device = await context.store.bind_device(device_id, body.ca_id)
    context.changed()
    return DeviceV1.of(device, context.connected_device_ids())
