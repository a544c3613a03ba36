"""Before any of a request's body is read: the admin token, and a bound on the body's size.

FastAPI reads and parses a JSON body before a route's dependencies run, so the token check
(``admin.security``) came after the whole body was in memory: a 300 MiB body without a token
took 2 GB of RSS and stalled the event loop the MQTT broker shares. This ASGI middleware runs
first, on the headers alone:

- a request to the REST API (``/api/...``) without the valid admin token gets its 401 (or
  429) before a byte of its body is read;
- every body is bounded: a declared ``Content-Length`` over the route's bound is answered 413
  at once (RFC 9110 §15.5.14), and a chunked body is cut off, 413, as soon as it passes it.
  The bound is ``http_max_body_bytes`` for most routes, ``http_max_crl_bytes`` (and the
  form around it) for the routes that take a CRL, and none for the bulk import, which reads
  its body as a stream row by row;
- after the token: a query parameter, or a Content-Type or Authorization field, given twice
  is answered 400, and a JSON body to the REST API is read as RFC 8259 JSON
  (``admin.json_body``);
- a request framed two ways (``Content-Length`` and ``Transfer-Encoding``: the shape of
  request smuggling through a proxy) is answered 400, and a target or header fields past
  ``http_max_head_bytes`` 414 or 431, each with the connection closed.
"""

import re
from typing import Final
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from admin.json_body import strictly_json
from admin.limits import HttpLimits
from admin.problems import problem
from admin.security import token_refusal
from nanoiot.text import printable

# Header fields that hold one value (the Host field h11 checks itself, RFC 9112 §3.2).
_SINGLE_HEADERS: Final = (b"content-type", b"authorization", b"x-authorization")
_FORM_OVERHEAD: Final = 64 * 1024  # a form's other fields and multipart framing
# (method, path) of the routes with their own bound: the streamed import (no bound on the
# whole body), and the routes that take a CRL.
_STREAMED: Final = (("POST", re.compile(r"/api/v1/devices/import")),)
_TAKE_A_CRL: Final = (
    ("PUT", re.compile(r"/api/v1/trusted-cas/[^/]+/crl")),
    ("POST", re.compile(r"/ui/cas(/[^/]+/crl)?")),
)


class BodyTooLarge(HTTPException):
    """Raised into the application when a chunked body passes its bound: an HTTPException,
    so that FastAPI's body parsing passes it on (it turns other errors into 400) and the
    application's handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_message(limit), {"Connection": "close"})


def body_limit(method: str, path: str, limits: HttpLimits) -> int | None:
    """The bound on the body of a request to ``method path``; None: no bound."""

    def matches(routes: tuple[tuple[str, re.Pattern[str]], ...]) -> bool:
        return any(method == each and pattern.fullmatch(path) for each, pattern in routes)

    if matches(_STREAMED):
        return None
    if matches(_TAKE_A_CRL):
        return limits.max_crl_bytes + _FORM_OVERHEAD
    return limits.max_body_bytes


class BodyGuard:
    def __init__(self, app: ASGIApp, *, limits: HttpLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        framing = _framing_problem(scope, self.limits.max_head_bytes)
        if framing is not None:
            await problem(*framing, {"Connection": "close"})(scope, receive, send)
            return
        request = Request(scope)  # headers only: nothing is received here
        if scope["path"].startswith("/api/"):
            refused = token_refusal(request)
            if refused is not None:
                headers = dict(refused.headers or {})
                answer = problem(refused.status_code, refused.detail, headers)
                await answer(scope, receive, send)
                return
        # After the token, as every refusal of what a request says (the token first).
        names = [name for name, _ in scope["headers"]]
        ambiguous = _ambiguity_problem(names, scope.get("query_string") or b"")
        if ambiguous is not None:
            await problem(400, ambiguous)(scope, receive, send)
            return
        limit = body_limit(scope["method"], scope["path"], self.limits)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        await self._bounded(scope, receive, send, limit)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if scope["path"].startswith("/api/"):  # the JSON routes; the token is checked
                await strictly_json(self.app, scope, counted_receive, watched_send)
            else:  # no route here reads JSON: a body nobody reads is not parsed either
                await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if not started:
                await _too_large(limit)(scope, receive, send)


def _framing_problem(scope: Scope, max_head: int) -> tuple[int, str] | None:
    # A request's target, and its header fields (names and values), are bounded apart: h11
    # bounds only a head that arrives in pieces (``admin.server``), so one sent whole in a
    # read could be 256 KiB of thousands of fields or of path.
    headers = scope["headers"]
    target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    if target > max_head:  # RFC 9110 §15.5.15
        return 414, f"The request target is longer than {max_head:,} bytes."
    size = sum(len(name) + len(value) for name, value in headers)
    if size > max_head:  # RFC 6585 §5
        return 431, f"The request's header fields are larger than {max_head:,} bytes."
    names = {name for name, _ in headers}
    if b"transfer-encoding" in names and b"content-length" in names:
        # RFC 9112 §6.1: such a request may be rejected, and the connection MUST be closed;
        # a proxy that framed it by Content-Length would see another request in what follows.
        return 400, "The request has both Content-Length and Transfer-Encoding."
    return None


def _ambiguity_problem(header_names: list[bytes], query: bytes) -> str | None:
    """A request that says one thing twice: which one counts differs between readers (Starlette
    reads the first Content-Type but the last of a query parameter), so a check made on one
    can be passed with the other. Each names a single value, so twice is refused."""
    for name in _SINGLE_HEADERS:
        if header_names.count(name) > 1:  # RFC 9110 §5.3: not a list, so only once
            return f"The request has more than one {name.decode().title()} header field."
    seen: set[str] = set()
    for parameter, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if parameter in seen:
            return f"The query parameter {printable(parameter, 40)!r} is given twice."
        seen.add(parameter)
    return None


def _too_large_message(limit: int) -> str:
    return f"The request body is larger than this route accepts ({limit:,} bytes)."


def _too_large(limit: int) -> ASGIApp:
    return problem(413, _too_large_message(limit), {"Connection": "close"})
