"""Signing in with the admin token, and out again.

Failed attempts count towards the same per-address limit as the API's bearer checks
(``admin.ratelimit``): guessing through the form is no cheaper than through the API.
"""

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import RedirectResponse, Response

from admin.context import context_of
from admin.security import check_rate, remote_of, token_matches
from admin.web.forms import text
from admin.web.render import PREFIX, page, see_other
from admin.web.session import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Session,
    checked_post,
    clear_session_cookie,
    login_nonce,
    set_login_cookie,
    set_session_cookie,
    signer_of,
)

router = APIRouter(include_in_schema=False)
HOME = f"{PREFIX}/devices"


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse(HOME, status_code=status.HTTP_303_SEE_OTHER)


@router.get(PREFIX)
@router.get(PREFIX + "/")
async def ui_root() -> RedirectResponse:
    return RedirectResponse(HOME, status_code=status.HTTP_303_SEE_OTHER)


def _safe_next(value: str) -> str:
    """Only a page of this UI: never another site (an open redirect), never ``//host``."""
    if value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return HOME


def _login_page(
    request: Request, *, after: str, status_code: int = 200, error: str | None = None
) -> Response:
    nonce, new = login_nonce(request)
    response = page(
        request,
        "login.html",
        session=None,
        status_code=status_code,
        login_csrf=signer_of(request).login_csrf(nonce),
        after=after,
        error=error,
    )
    if new:
        set_login_cookie(response, request, nonce)
    return response


@router.get(PREFIX + "/login")
async def login_form(request: Request, next: str = HOME) -> Response:
    if signer_of(request).session(request.cookies.get(SESSION_COOKIE)) is not None:
        return see_other(_safe_next(next))
    return _login_page(request, after=_safe_next(next))


@router.post(PREFIX + "/login")
async def login(request: Request) -> Response:
    check_rate(request)  # 429 page while this address has failed too often
    form = await request.form()
    context = context_of(request)
    limit = context.limits.max_form_field_bytes
    after = _safe_next(text(form, "next", limit))
    signer = signer_of(request)
    csrf = text(form, CSRF_FIELD, limit)
    if not signer.login_csrf_matches(request.cookies.get(LOGIN_COOKIE), csrf):
        return _login_page(
            request,
            after=after,
            status_code=status.HTTP_403_FORBIDDEN,
            error="The sign-in form expired: please enter the token again.",
        )
    if not token_matches(text(form, "token", limit), context.admin_token):
        context.limiter.failed(remote_of(request))
        return _login_page(
            request,
            after=after,
            status_code=status.HTTP_401_UNAUTHORIZED,
            error="The admin token is not valid.",
        )
    response = see_other(after)
    set_session_cookie(response, request, signer.new_session())
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


@router.post(PREFIX + "/logout")
async def logout(request: Request, session: Session = Depends(checked_post)) -> Response:  # noqa: B008
    signer_of(request).end(session)  # dead on the server too, not only in this browser
    response = see_other(f"{PREFIX}/login", "signed-out")
    clear_session_cookie(response, request)
    return response
