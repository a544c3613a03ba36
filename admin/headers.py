"""The security headers of every admin HTTP response, set in one place.

The web UI's pages and ``/docs`` set their own (a Content-Security-Policy fit for a page); the
JSON API, ``/metrics``, ``/healthz``, error answers and static files had none, so a browser
could sniff a JSON answer that echoes input as HTML, and keep answers carrying tokens and
credentials in its cache. ``SecurityHeaders`` adds to each response the headers below that it
does not set itself. It must not import the routes: it knows responses, not what they hold.
"""

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULTS: Final = (
    # Never read a response as another type than the one it declares (a JSON body echoing a
    # device name is not HTML).
    (b"x-content-type-options", b"nosniff"),
    # RFC 9111 §5.2.2.5: answers carry tokens, credentials and the fleet's inventory; no
    # cache, a browser's or a proxy's, may keep them.
    (b"cache-control", b"no-store"),
    # A JSON answer or a file is never a page to frame or to run a script in.
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeaders:
    """ASGI middleware: ``DEFAULTS`` on every HTTP response that does not set them."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in DEFAULTS if name not in present]
                message["headers"] = headers
            await send(message)

        await self._app(scope, receive, with_headers)
