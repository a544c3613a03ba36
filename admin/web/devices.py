"""The Devices page: search, status, who is connected now, last seen; and Add device."""

from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from admin import service
from admin.context import AdminContext, context_of
from admin.web.credentials import spec_of
from admin.web.device import device_page_response
from admin.web.forms import CREDENTIAL_CHOICES, REFUSED, DeviceInput, refusal_status
from admin.web.render import PREFIX, page, see_other
from admin.web.session import Session, checked_post, current_session
from auth.kinds import CredentialStatus
from nanoiot.errors import ValidationError
from storage.records import AuthOutcome, Credential, Device, Page

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 20


@dataclass(frozen=True)
class DeviceRow:
    device: Device
    connected: bool
    members: list[str]  # the members its connections are on (a cluster's, or this node)
    last_seen: datetime | None
    credentialed: bool  # has an active credential: "Enabled" alone would promise a connect


async def _rows(context: AdminContext, devices: Page[Device]) -> list[DeviceRow]:
    """One row per device. "Last seen" is its newest allowed connection, "credentialed"
    whether any credential is active: two indexed queries per row, so a page costs
    2 x PAGE_SIZE small queries; where the page's devices are connected is one question
    (in a cluster, to every member at once)."""
    where = await context.connections([str(device.id) for device in devices.items])
    rows = []
    for device in devices.items:
        store = context.store
        events = await store.list_auth_events(
            device_id=device.id, outcome=AuthOutcome.ALLOWED, limit=1
        )
        credentials = await store.list_credentials(device.id)
        rows.append(
            DeviceRow(
                device,
                str(device.id) in where,
                sorted({member for member, _ in where.get(str(device.id), ()) if member}),
                events[0].at if events else None,
                any(c.status is CredentialStatus.ACTIVE for c in credentials),
            )
        )
    return rows


async def _devices_page(
    request: Request,
    session: Session,
    *,
    search: str = "",
    page_number: int = 0,
    form: DeviceInput | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    context = context_of(request)
    listed = await service.list_devices(
        context.store, text_search=search or None, page=page_number, page_size=PAGE_SIZE
    )
    return page(
        request,
        "devices.html",
        session=session,
        status_code=status_code,
        devices=listed,
        rows=await _rows(context, listed),
        search=search,
        form=form or DeviceInput(),
        form_open=form is not None,
        error=error,
        choices=CREDENTIAL_CHOICES,
        nav="devices",
    )


@router.get(PREFIX + "/devices")
async def devices(
    request: Request,
    q: str = "",
    page: int = 0,
    session: Session = Depends(current_session),  # noqa: B008
) -> Response:
    return await _devices_page(request, session, search=q.strip(), page_number=max(page, 0))


@router.post(PREFIX + "/devices")
async def add_device(
    request: Request,
    session: Session = Depends(checked_post),  # noqa: B008
) -> Response:
    context = context_of(request)
    form = DeviceInput.from_form(await request.form(), context.limits.max_form_field_bytes)
    try:
        device, credential = await _create(context, form)
    except REFUSED as exc:
        return await _devices_page(
            request,
            session,
            form=form.refused_with(exc),
            error=str(exc),
            status_code=refusal_status(exc),
        )
    context.changed()
    if credential is not None and credential.token is not None:
        # A new access token is shown this once: the page itself, not a redirect.
        return await device_page_response(request, session, device.id, new_token=credential.token)
    return see_other(f"{PREFIX}/devices/{device.id}", "created")


async def _create(context: AdminContext, form: DeviceInput) -> tuple[Device, Credential | None]:
    if not form.name:
        raise ValidationError("Enter a device name.")
    if not form.with_credentials:
        return await service.create_device(context.store, form.name, label=form.label), None
    return await service.create_device_with_credentials(
        context.store, form.name, spec_of(form.credentials), label=form.label
    )
