"""Rendering pages: the Jinja2 environment, the headers every page carries, error pages.

Templates are autoescaped. Every page gets the session's CSRF token (for its forms) and is sent
with a Content-Security-Policy that allows only this site's own files: no inline script runs,
so an injected tag could do nothing even if escaping were ever missed.
"""

import inspect
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import WebSocketRequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from admin.web.session import SESSION_COOKIE, Session, SignInRequired, signer_of

PREFIX = "/ui"
_HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=_HERE / "templates")
STATIC_DIR = _HERE / "static"

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",  # pages show credentials: keep them out of shared caches
}

# Messages shown after a redirect, chosen by a key in the URL (never text from the URL).
NOTICES = {
    "created": "Device created.",
    "saved": "Device credentials saved.",
    "unchanged": "These credentials were already in place: nothing changed.",
    "enabled": "Device enabled.",
    "disabled": "Device disabled: its live sessions were closed.",
    "deleted": "Device deleted.",
    "ca-added": "Trusted CA added.",
    "ca-deleted": "Trusted CA deleted.",
    "crl-saved": "Certificate revocation list saved.",
    "crl-cleared": "Certificate revocation list removed.",
    "signed-out": "You have signed out.",
}


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = int((datetime.now(UTC) - value).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now" if seconds < 5 else f"{seconds} s ago"


def _fingerprint(spki_sha256: str | None) -> str:
    """The one form a key's fingerprint takes everywhere (web UI, CLI, logs): ``sha256:`` and
    64 hex digits, unbroken, so a fingerprint copied from one finds it in the others. The page
    wraps it where it must (CSS), without inserting anything."""
    return f"sha256:{spki_sha256}" if spki_sha256 else "—"


TEMPLATES.env.filters["when"] = _when
TEMPLATES.env.filters["ago"] = _ago
TEMPLATES.env.filters["fingerprint"] = _fingerprint


def page(
    request: Request,
    template: str,
    *,
    session: Session | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    notice = NOTICES.get(request.query_params.get("done", ""))
    values = {
        "csrf_token": session.csrf_token if session else "",
        "signed_in": session is not None,
        "notice": notice,
        **context,
    }
    return TEMPLATES.TemplateResponse(
        request, template, values, status_code=status_code, headers=_SECURITY_HEADERS
    )


def see_other(path: str, done: str | None = None) -> RedirectResponse:
    """POST-redirect-GET: 303 so the browser follows with a GET, and reload does not re-post."""
    return RedirectResponse(f"{path}?done={done}" if done else path, status_code=303)


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    session = signer_of(request).session(request.cookies.get(SESSION_COOKIE))
    return TEMPLATES.TemplateResponse(
        request,
        "error.html",
        {
            "status": status_code,
            "title": HTTPStatus(status_code).phrase,
            "message": message,
            "signed_in": session is not None,
            "csrf_token": session.csrf_token if session else "",
            "notice": None,
        },
        status_code=status_code,
        headers=_SECURITY_HEADERS,
    )


Handler = Callable[[Request, Exception], Awaitable[Response]]
ApiHandler = Callable[[Request, Any], Response | Awaitable[Response]]


def install_error_pages(app: FastAPI) -> None:
    """Under /ui, answer errors with a page instead of the API's JSON body.

    The API's handlers (``admin.problems``) stay in charge of status and message: for a page
    request their JSON answer is turned into the same status with an HTML page.
    """
    for exc_type, handler in list(app.exception_handlers.items()):
        if isinstance(exc_type, type) and exc_type is not WebSocketRequestValidationError:
            app.add_exception_handler(exc_type, _html_for_pages(handler))
    if StarletteHTTPException not in app.exception_handlers:
        app.add_exception_handler(StarletteHTTPException, _html_for_pages(None))
    app.add_exception_handler(SignInRequired, _to_sign_in)


def _is_page(request: Request) -> bool:
    path = request.url.path
    return path == PREFIX or path.startswith(PREFIX + "/")


def _html_for_pages(api_handler: ApiHandler | None) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if api_handler is None:
            status_code, message, headers = _status_of(exc)
        else:
            answered = api_handler(request, exc)
            if inspect.isawaitable(answered):
                answered = await answered
            if not _is_page(request):
                return answered
            status_code, message = answered.status_code, _message_of(answered, exc)
            retry = answered.headers.get("Retry-After")
            headers = {"Retry-After": retry} if retry else {}
        response = error_page(request, status_code, message)
        response.headers.update(headers)
        return response

    return handle


def _message_of(answered: Response, exc: Exception) -> str:
    try:
        message = json.loads(bytes(answered.body))["message"]
    except (ValueError, KeyError, TypeError):
        return str(exc)
    return str(message)


def _status_of(exc: Exception) -> tuple[int, str, dict[str, str]]:
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return exc.status_code, detail, dict(exc.headers or {})
    return 500, str(exc) or "Something went wrong.", {}


async def _to_sign_in(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)
    return RedirectResponse(f"{PREFIX}/login?next={quote(exc.after, safe='/')}", status_code=303)
