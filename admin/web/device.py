"""One device: its details, Device Credentials, recent auth events, enable/disable, delete.

Saving credentials goes through ``admin.service.replace_credentials``, as the REST API's
does: the device ends up with exactly the new credential active, and the broker is told at
once (``AdminContext.changed()``), which closes live sessions of a retired credential.
"""

from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from admin import service
from admin.context import context_of
from admin.web.credentials import ordered, spec_of
from admin.web.forms import CREDENTIAL_CHOICES, REFUSED, CredentialInput, refusal_status, text
from admin.web.render import PREFIX, page, see_other
from admin.web.session import Session, checked_post, current_session
from auth.kinds import CredentialStatus

router = APIRouter(include_in_schema=False)
EVENTS_SHOWN = 20


async def device_page_response(
    request: Request,
    session: Session,
    device_id: UUID,
    *,
    form: CredentialInput | None = None,
    error: str | None = None,
    status_code: int = 200,
    new_token: str | None = None,
) -> Response:
    """The page; ``new_token``: an access token just made, shown this once (the store keeps
    only its hash), so this answer is the page itself and not a redirect."""
    context = context_of(request)
    device = await context.store.get_device(device_id)  # 404 page when unknown
    credentials = ordered(list(await context.store.list_credentials(device_id)))
    events = await context.store.list_auth_events(device_id=device_id, limit=EVENTS_SHOWN)
    current = credentials[0] if credentials and credentials[0].active else None
    connections = (await context.connections([str(device_id)])).get(str(device_id))
    if form is None:
        form = CredentialInput(type=current.credential.type) if current else CredentialInput()
    return page(
        request,
        "device.html",
        session=session,
        status_code=status_code,
        device=device,
        connected=connections is not None,
        connections=connections or [],
        current=current,
        history=[view for view in credentials if view is not current],
        events=events,
        form=form,
        form_open=error is not None,
        error=error,
        choices=CREDENTIAL_CHOICES,
        nav="devices",
        new_token=new_token,
    )


@router.get(PREFIX + "/devices/{device_id}")
async def device_page(
    request: Request,
    device_id: UUID,
    session: Session = Depends(current_session),  # noqa: B008
) -> Response:
    return await device_page_response(request, session, device_id)


@router.post(PREFIX + "/devices/{device_id}/credentials")
async def save_credentials(
    request: Request,
    device_id: UUID,
    session: Session = Depends(checked_post),  # noqa: B008
) -> Response:
    context = context_of(request)
    form = CredentialInput.from_form(await request.form(), context.limits.max_form_field_bytes)
    try:
        before = {c.id: c.status for c in await context.store.list_credentials(device_id)}
        saved = await service.replace_credentials(context.store, device_id, spec_of(form))
    except REFUSED as exc:
        return await device_page_response(
            request,
            session,
            device_id,
            form=form.refused_with(exc),
            error=str(exc),
            status_code=refusal_status(exc),
        )
    context.changed()
    if saved.token is not None:
        return await device_page_response(request, session, device_id, new_token=saved.token)
    unchanged = before.get(saved.id) is CredentialStatus.ACTIVE
    return see_other(f"{PREFIX}/devices/{device_id}", "unchanged" if unchanged else "saved")


@router.post(PREFIX + "/devices/{device_id}/enabled")
async def set_enabled(
    request: Request,
    device_id: UUID,
    _session: Session = Depends(checked_post),  # noqa: B008
) -> Response:
    context = context_of(request)
    enabled = text(await request.form(), "enabled", context.limits.max_form_field_bytes) == "yes"
    await context.store.set_device_enabled(device_id, enabled)
    context.changed()
    return see_other(f"{PREFIX}/devices/{device_id}", "enabled" if enabled else "disabled")


@router.get(PREFIX + "/devices/{device_id}/delete")
async def confirm_delete(
    request: Request,
    device_id: UUID,
    session: Session = Depends(current_session),  # noqa: B008
) -> Response:
    """The confirmation step, a page of its own so it works without JavaScript."""
    device = await context_of(request).store.get_device(device_id)
    return page(request, "device_delete.html", session=session, device=device, nav="devices")


@router.post(PREFIX + "/devices/{device_id}/delete")
async def delete_device(
    request: Request,
    device_id: UUID,
    _session: Session = Depends(checked_post),  # noqa: B008
) -> Response:
    context = context_of(request)
    await service.delete_device(context.store, device_id)
    context.changed()
    return see_other(f"{PREFIX}/devices", "deleted")
