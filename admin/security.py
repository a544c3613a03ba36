"""The admin token: how a request presents it and how it is checked.

A request proves it is the operator with ``Authorization: Bearer <token>`` or, as the
reference system's clients send it, ``X-Authorization: Bearer <token>``. The comparison is
constant-time; failures are counted per address (``admin.ratelimit``) and answered with 429
once too many. The web UI signs in with the same token and then carries a session cookie
(``admin.web.session``); the REST API never accepts that cookie, so no other site can make a
browser call it.
"""

import hmac
import ipaddress
import math
from collections.abc import Sequence

from fastapi import Depends, HTTPException, Request, status
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute

from admin.context import context_of
from admin.http_guard import host_of

_HEADERS = ("authorization", "x-authorization")


def presented_token(request: Request) -> str | None:
    for header in _HEADERS:
        value = request.headers.get(header)
        if value is None:
            continue
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def remote_of(request: Request) -> str:
    """Whose failures a request counts among: its client's host (``http_guard.host_of``), so
    an IPv6 client, which picks addresses in its /64 at will, gets no new guesses by taking
    a new address for each."""
    host = request.client.host if request.client is not None else "unknown"
    try:
        return host_of(ipaddress.ip_address(host))
    except ValueError:  # not an IP address (a Unix socket's peer, a test client's name)
        return host


def check_rate(request: Request) -> None:
    """Raise 429 when this address has failed too often lately."""
    wait = context_of(request).limiter.retry_after(remote_of(request))
    if wait is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "Too many failed sign-in attempts; try again later.",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


_BEARER = HTTPBearer(auto_error=False, description="The admin token")


def require_admin(
    request: Request,
    # Declared so the OpenAPI schema shows the scheme; both headers are read below.
    _credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER),  # noqa: B008
) -> None:
    """FastAPI dependency on every API route: the admin token, or 401 / 429."""
    refused = token_refusal(request)
    if refused is not None:
        raise refused


def token_refusal(request: Request) -> HTTPException | None:
    """The 429 or 401 for a request without the valid admin token, or None. Reads the
    headers only, so ``admin.body_guard`` can ask before any of the body is read."""
    try:
        check_rate(request)
    except HTTPException as exc:
        return exc
    context = context_of(request)
    token = presented_token(request)
    if token is not None and token_matches(token, context.admin_token):
        return None
    context.limiter.failed(remote_of(request))
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "Authentication failed: send the admin token as 'Authorization: Bearer <token>'."
        if token is None
        else "Authentication failed: the admin token is not valid.",
        headers={"WWW-Authenticate": "Bearer"},
    )


def refusal(request: Request) -> HTTPException | None:
    """The 401 or 429 that ``require_admin`` would raise for this request, or None.

    FastAPI reads and validates a request's body before it runs the route's dependencies, so
    a malformed body would be answered 400 before the token is looked at. The handler of
    invalid requests asks this first: a client without the token learns nothing but 401.
    """
    route = request.scope.get("route")
    if route is None or id(route) not in _admin_route_ids(request.app.routes):
        return None
    try:
        require_admin(request)
    except HTTPException as exc:
        return exc
    return None


def _admin_route_ids(routes: Sequence[BaseRoute]) -> set[int]:
    """The routes behind the admin token, wherever a router was included with it (by id:
    routes are not hashable)."""
    return {
        id(context.original_route)
        for context in iter_route_contexts(routes)
        if _depends_on_admin(getattr(context, "dependant", None))
    }


def _depends_on_admin(dependant: Dependant | None) -> bool:
    if dependant is None:
        return False
    return any(
        sub.call is require_admin or _depends_on_admin(sub) for sub in dependant.dependencies
    )
