"""The web UI's sign-in: a stateless session cookie and the CSRF tokens tied to it.

The operator signs in with the admin token. The cookie holds ``expiry.nonce.signature``, the
signature an HMAC-SHA256 keyed by a secret derived from the admin token, so changing the token
signs every browser out. The server also keeps the nonces of the sessions it issued
(``LiveSessions``, in memory): signing out forgets the nonce, so a copy of the cookie is dead
at once, not at its expiry; a restart signs everyone out. The cookie is HttpOnly (no script
reads it), SameSite=Strict (no other site's page sends it) and Secure over https.

Every form carries a CSRF token, an HMAC of the session cookie under the same secret, checked
on every POST: a forged or missing token is 403 and nothing changes. The sign-in form itself,
which has no session yet, is tied the same way to a short-lived pre-sign-in cookie.

The REST API never reads this cookie (``admin.security`` takes bearer headers only), so a
page on another site cannot reach the API through the operator's browser.
"""

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request, status
from fastapi.responses import Response

from admin.context import context_of
from admin.live_sessions import LiveSessions

SESSION_COOKIE = "nanoiot_session"
LOGIN_COOKIE = "nanoiot_login"
SESSION_SECONDS = 12 * 3600  # a working day; then the operator signs in again
_LOGIN_SECONDS = 3600
COOKIE_PATH = "/ui"
CSRF_FIELD = "csrf_token"


class SignInRequired(Exception):
    """No valid session: the page answers with a redirect to the sign-in form."""

    def __init__(self, after: str) -> None:
        super().__init__(after)
        self.after = after  # where to go once signed in


@dataclass(frozen=True)
class Session:
    cookie: str
    expires_at: int
    csrf_token: str


def _secret(admin_token: str) -> bytes:
    # A key of its own, so a cookie's signature never reveals anything usable as the token.
    return hmac.new(admin_token.encode(), b"nanoiot web session v1", hashlib.sha256).digest()


def _sign(secret: bytes, purpose: str, value: str) -> str:
    return hmac.new(secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


class SessionSigner:
    """Makes and checks cookies and CSRF tokens for one admin token."""

    def __init__(
        self,
        admin_token: str,
        clock: Callable[[], float] = time.time,
        live: LiveSessions | None = None,
    ) -> None:
        self._secret = _secret(admin_token)
        self._clock = clock
        self._live = live if live is not None else LiveSessions()

    def new_session(self) -> Session:
        now = self._clock()
        expires_at = int(now) + SESSION_SECONDS
        nonce = secrets.token_urlsafe(16)
        body = f"{expires_at}.{nonce}"
        cookie = f"{body}.{_sign(self._secret, 'session', body)}"
        self._live.add(nonce, expires_at, now)
        return Session(cookie, expires_at, self._csrf_for(cookie))

    def end(self, session: Session) -> None:
        """Sign out: the cookie (and every copy of it) is no session from now on."""
        self._live.end(session.cookie.split(".")[1])

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie stands for, or None if it is missing, forged or expired."""
        if not cookie:
            return None
        body, _, signature = cookie.rpartition(".")
        expiry, _, nonce = body.partition(".")
        if not (expiry.isdigit() and nonce and signature):
            return None
        if not hmac.compare_digest(signature, _sign(self._secret, "session", body)):
            return None
        if int(expiry) <= self._clock() or nonce not in self._live:
            return None
        return Session(cookie, int(expiry), self._csrf_for(cookie))

    def csrf_matches(self, session: Session, given: str) -> bool:
        return hmac.compare_digest(given.encode(), session.csrf_token.encode())

    def login_csrf(self, nonce: str) -> str:
        return _sign(self._secret, "login", nonce)

    def login_csrf_matches(self, nonce: str | None, given: str) -> bool:
        if not nonce:
            return False
        return hmac.compare_digest(given.encode(), self.login_csrf(nonce).encode())

    def _csrf_for(self, cookie: str) -> str:
        return _sign(self._secret, "csrf", cookie)


def signer_of(request: Request) -> SessionSigner:
    context = context_of(request)
    return SessionSigner(context.admin_token, live=context.web_sessions)


def _after(request: Request) -> str:
    query = request.url.query
    path = request.url.path
    return f"{path}?{query}" if query and request.method == "GET" else path


def current_session(request: Request) -> Session:
    """FastAPI dependency of every page but sign-in: the session, or a redirect to sign in."""
    session = signer_of(request).session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInRequired(_after(request) if request.method == "GET" else "/ui/devices")
    return session


async def checked_post(request: Request) -> Session:
    """FastAPI dependency of every form POST: a valid session and its CSRF token, or 403."""
    session = current_session(request)
    form = await request.form()
    given = form.get(CSRF_FIELD)
    if not isinstance(given, str) or not signer_of(request).csrf_matches(session, given):
        await form.close()  # nothing of a refused form is kept, not even a spooled upload
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "The form has expired or did not come from this site: reload the page and try again.",
        )
    return session


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, session: Session) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session.cookie,
        max_age=SESSION_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=is_https(request)
    )


def login_nonce(request: Request) -> tuple[str, bool]:
    """The pre-sign-in nonce of this browser, and whether it is new (then set the cookie)."""
    nonce = request.cookies.get(LOGIN_COOKIE)
    if nonce and len(nonce) <= 64:
        return nonce, False
    return secrets.token_urlsafe(16), True


def set_login_cookie(response: Response, request: Request, nonce: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=_LOGIN_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )
