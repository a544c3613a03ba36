"""The answer to a request the application failed on: a 500 problem, logged once with the request.

Starlette's ``ServerErrorMiddleware`` sits outside every middleware an application adds: its
500 for an unexpected exception went out without ``admin.headers``' headers, and it raises the
exception again for the server, which logged "Exception in ASGI application" with a traceback
but not which request failed. ``AnswerFailures`` wraps the whole application (``admin.server``,
inside ``SecurityHeaders``): it logs the failure once, with the request's method and path, and
answers 500 if nothing was answered yet; the client gets no traceback, only the problem body.

It must not import FastAPI: the server wraps the application before the first request builds it.
"""

import json
import logging
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nanoiot.text import printable

log = logging.getLogger(__name__)

INTERNAL_ERROR: Final = "Internal error: the server's log has the details."
_BODY: Final = json.dumps({"status": 500, "message": INTERNAL_ERROR, "errorCode": 2}).encode()


class AnswerFailures:
    """ASGI middleware: an exception from ``app`` is logged once and answered 500."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive, watched)
        except Exception:
            # The path is the client's text: printable() keeps a %0A in it from forging a line.
            log.exception("admin HTTP: %s %s failed", scope["method"], printable(scope["path"]))
            if not started:  # else the server closes the connection of the broken answer
                await _internal_error(send)


async def _internal_error(send: Send) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_BODY)).encode()),
        (b"connection", b"close"),  # what the failure left of the connection is not reused
    ]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": _BODY})
