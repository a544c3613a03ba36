"""The Trusted CAs page: CAs whose certificates let devices in without per-device provisioning,
each with its CN rule, "create devices" switch and CRL (RFC 5280 §5)."""

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import Response

from admin.context import context_of
from admin.trusted_cas import check_is_ca, find_ca
from admin.web.forms import REFUSED, CAInput, bytes_or_file, refusal_status
from admin.web.render import PREFIX, page, see_other
from admin.web.session import Session, checked_post, current_session
from auth.certificate import load_certificate, parse_credential
from auth.chain import load_crl
from auth.cn_rule import cn_rule_problem
from nanoiot.errors import (
    CredentialError,
    NanoIoTError,
    ValidationError,
)
from storage.interface import CredentialStore
from storage.records import TrustedCA

router = APIRouter(include_in_schema=False)
CAS = f"{PREFIX}/cas"


@dataclass(frozen=True)
class CAView:
    ca: TrustedCA
    expired: bool
    crl: str  # "none", "3 revoked, next update ...", or why the broker cannot use it
    crl_usable: bool


def _view(ca: TrustedCA, now: datetime) -> CAView:
    if not ca.crl_pem:
        return CAView(ca, ca.not_after < now, "none", True)
    try:
        crl = load_crl(ca.crl_pem.encode(), load_certificate(ca.pem))
    except NanoIoTError as exc:
        return CAView(ca, ca.not_after < now, f"unusable: {exc}", False)
    due = crl.next_update_utc
    summary = f"{len(crl)} revoked" + (f", next update {due:%Y-%m-%d %H:%M} UTC" if due else "")
    return CAView(ca, ca.not_after < now, summary, True)


async def _cas_page(
    request: Request,
    session: Session,
    *,
    form: CAInput | None = None,
    error: str | None = None,
    crl_error: tuple[UUID, str] | None = None,
    status_code: int = 200,
) -> Response:
    now = datetime.now(UTC)
    cas = [_view(ca, now) for ca in await context_of(request).store.list_trusted_cas()]
    return page(
        request,
        "cas.html",
        session=session,
        status_code=status_code,
        cas=cas,
        form=form or CAInput(),
        form_open=form is not None,
        error=error,
        crl_error=crl_error,
        nav="cas",
    )


@router.get(CAS)
async def cas_page(request: Request, session: Session = Depends(current_session)) -> Response:  # noqa: B008
    return await _cas_page(request, session)


@router.post(CAS)
async def add_ca(request: Request, session: Session = Depends(checked_post)) -> Response:  # noqa: B008
    context = context_of(request)
    limit = context.limits.max_form_field_bytes
    submitted = await request.form()
    try:
        form = await CAInput.from_form(submitted, limit)
    finally:
        await submitted.close()  # uploaded files are spooled to temporary files
    try:
        await _add(context.store, form, limit)
    except REFUSED as exc:
        return await _cas_page(
            request, session, form=form, error=str(exc), status_code=refusal_status(exc)
        )
    context.changed()
    return see_other(CAS, "ca-added")


async def _add(store: CredentialStore, form: CAInput, limit: int) -> TrustedCA:
    if not form.name:
        raise ValidationError("Enter a name for the CA.")
    if not form.certificate:
        raise ValidationError("Paste the CA certificate (PEM) or choose its file.")
    if len(form.certificate) > limit:  # http_max_form_field_bytes
        raise ValidationError("This file is too large to be a CA certificate.")
    problem = cn_rule_problem(form.cn_regex) if form.cn_regex else None
    if problem is not None:
        raise ValidationError(f"The {problem}.")
    parsed = parse_credential(form.certificate)
    check_is_ca(parsed)
    return await store.add_trusted_ca(
        form.name, parsed, cn_regex=form.cn_regex or None, create_devices=form.create_devices
    )


@router.post(CAS + "/{ca_id}/crl")
async def set_crl(
    request: Request,
    ca_id: UUID,
    session: Session = Depends(checked_post),  # noqa: B008
) -> Response:
    context = context_of(request)
    limits = context.limits
    form = await request.form()
    try:
        clear = form.get("clear") == "yes"
        data = await bytes_or_file(
            form, "crl", "crl_file",
            limit=limits.max_crl_bytes, text_limit=limits.max_crl_bytes,
        )  # fmt: skip
    finally:
        await form.close()  # uploaded files are spooled to temporary files
    ca = await find_ca(context.store, ca_id)
    if clear:
        await context.store.set_ca_crl(ca.id, None)
        context.changed()
        return see_other(CAS, "crl-cleared")
    try:
        if not data:
            raise ValidationError("Choose the CRL file (PEM or DER) or paste the PEM.")
        if len(data) > limits.max_crl_bytes:  # http_max_crl_bytes, as the REST API
            raise ValidationError(f"The CRL is larger than {limits.max_crl_bytes:,} bytes.")
        revocations = load_crl(data, load_certificate(ca.pem))
    except (CredentialError, ValidationError) as exc:
        return await _cas_page(
            request, session, crl_error=(ca.id, str(exc)), status_code=status.HTTP_400_BAD_REQUEST
        )
    await context.store.set_ca_crl(ca.id, revocations.public_bytes(Encoding.PEM).decode())
    context.changed()
    return see_other(CAS, "crl-saved")


@router.get(CAS + "/{ca_id}/delete")
async def confirm_delete(
    request: Request,
    ca_id: UUID,
    session: Session = Depends(current_session),  # noqa: B008
) -> Response:
    ca = await find_ca(context_of(request).store, ca_id)
    return page(request, "ca_delete.html", session=session, ca=ca, nav="cas")


@router.post(CAS + "/{ca_id}/delete")
async def delete_ca(
    request: Request,
    ca_id: UUID,
    _session: Session = Depends(checked_post),  # noqa: B008
) -> Response:
    context = context_of(request)
    await context.store.delete_trusted_ca(ca_id)
    context.changed()
    return see_other(CAS, "ca-deleted")
