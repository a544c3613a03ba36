"""A JSON request body is read as RFC 8259 JSON (``nanoiot.strict_json``) before a route sees it.

FastAPI parses a JSON body with ``json.loads``, which takes ``NaN``, a name given twice (the
last one wins), lone surrogates and UTF-16; a 10,000-digit integer or arrays nested ten
thousand deep made it answer "There was an error parsing the body". ``BodyGuard`` calls
``strictly_json`` for a body it has bounded: the body is read whole, checked, and refused with
a one-line 400 (a ``charset`` other than UTF-8, 415), or handed on to the application as it
came. Routes that read JSON themselves (a CRL's upload) get it checked the same way. Only the
REST API's routes (``/api/``) read JSON, and their token is checked first: a client without it
cannot make the server parse a body.

Which bodies are JSON is FastAPI's own rule: ``application/json`` or ``application/*+json``.
"""

import asyncio
from email.message import Message as MimeHeader
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from admin.problems import problem
from nanoiot.strict_json import JsonRefused, loads

# RFC 8259 §8.1: JSON exchanged between systems MUST be UTF-8; the media type has no charset
# parameter (§11), but clients send "charset=utf-8", and ASCII is a subset.
_UTF8: Final = frozenset({"utf-8", "utf8", "us-ascii"})
# Bodies up to this size are checked on the event loop (under 10 ms); larger ones in a thread.
_READ_ON_THE_LOOP: Final = 64 * 1024


def json_media_type(content_type: str) -> tuple[bool, str | None]:
    """Whether a body of ``content_type`` is read as JSON, and its charset parameter."""
    header = MimeHeader()
    header["content-type"] = content_type
    if header.get_content_maintype() != "application":
        return False, None
    subtype = header.get_content_subtype()
    charset = header.get_param("charset")
    is_json = subtype == "json" or subtype.endswith("+json")
    return is_json, charset if isinstance(charset, str) else None


async def strictly_json(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run ``app`` with the request's body checked first if it is JSON."""
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
    is_json, charset = json_media_type(content_type.decode("latin-1"))
    if not is_json:
        await app(scope, receive, send)
        return
    if charset is not None and charset.lower() not in _UTF8:
        refused = f"JSON is sent as UTF-8 (RFC 8259 §8.1), not as charset={charset[:40]}."
        await problem(415, refused)(scope, receive, send)
        return
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away: nobody to answer
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    if body:  # FastAPI reads no body from an empty one ("field required")
        try:
            await _checked(bytes(body))
        except JsonRefused as exc:
            await problem(400, f"The request body is not valid JSON: {exc}.")(scope, receive, send)
            return
    await app(scope, _replaying(bytes(body), receive), send)


async def _checked(body: bytes) -> None:
    if len(body) <= _READ_ON_THE_LOOP:
        loads(body)
    else:  # a 16 MiB CRL upload takes seconds: the loop, the broker's too, goes on meanwhile
        await asyncio.to_thread(loads, body)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the application: the body read, then what the server sends after it."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
