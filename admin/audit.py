"""The operator's audit trail: one log line for each request that may change something.

The store's change feed says what changed, for the brokers to follow, and is pruned; it does
not say through which request or from where. Every POST, PUT, PATCH and DELETE that reaches
the admin application (REST API or web UI, answered or refused) is logged here, on
``nanoiot.admin.audit``, once its answer starts: the client's address, the method, the path
and the status. The path is logged as sent (percent-encoded, so a name in it cannot start a
forged log line), without its query string; bodies, which may hold certificates, tokens or
passwords, never are. It must not import the routes: it knows requests, not what they hold.
"""

import logging
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("nanoiot.admin.audit")

# RFC 9110 §9.2.1: every other method is safe (read-only) by definition.
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Characters of the path logged: a URL longer than this is cut (and says so).
MAX_PATH: Final = 512


class AuditLog:
    """ASGI middleware: a log line per unsafe request, with the status it was answered."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self._app(scope, receive, send)
            return

        async def logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                log.info(
                    "%s %s %s -> %d", _client(scope), scope["method"], _path(scope),
                    message["status"],
                )  # fmt: skip
            await send(message)

        await self._app(scope, receive, logged)


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _path(scope: Scope) -> str:
    raw: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    # raw_path is what the client sent: printable ASCII unless a client sends other bytes,
    # which are shown escaped rather than written into the log as they are.
    text = raw.decode("ascii", "backslashreplace")
    text = "".join(c if " " < c < "\x7f" else f"\\x{ord(c):02x}" for c in text)
    return text if len(text) <= MAX_PATH else text[:MAX_PATH] + "...(cut)"
