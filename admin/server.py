"""Serving the admin application with uvicorn inside an event loop we already run.

``nanoiot serve`` runs the broker and this server in one loop, so an API change reaches live
sessions at once; ``nanoiot api`` runs this server alone. We bind the socket ourselves, so
port 0 works (tests) and the bound port is known before the first request; connections that
arrive before uvicorn accepts wait in the listen backlog.

An idle node must cost nothing: the application (FastAPI, the API's models, the web UI's
templates, some 11 MiB) is built by the first request, not at start (``LazyApp``), and
uvicorn's main loop, which wakes ten times a second to look for a stop and refresh its Date
header, waits for ``stop()`` instead; each response gets its Date (RFC 9110 §6.6.1) when it
starts. Every response gets the security headers (``admin.headers``), and a request the
application fails on is logged once and answered 500 (``admin.failures``).
"""

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from email.utils import formatdate
from typing import Any, Self

import uvicorn

from admin.failures import AnswerFailures
from admin.headers import SecurityHeaders
from admin.http_guard import guarded_protocol
from admin.limits import HttpLimits
from nanoiot.errors import ConfigError
from nanoiot.sockets import listening_socket
from nanoiot.text import host_port

log = logging.getLogger(__name__)

_SHUTDOWN_GRACE = 5.0  # seconds for in-flight requests when stopping

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class LazyApp:
    """An ASGI application built by ``build`` when the first request arrives.

    The build (imports and route set-up, about half a second of CPU) runs in a thread, so
    the event loop, which also runs the broker, keeps serving MQTT meanwhile; requests that
    arrive during it wait for the one build.
    """

    def __init__(self, build: Callable[[], App]) -> None:
        self._build = build
        self._app: App | None = None
        self._building = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        if app is None:
            async with self._building:
                if self._app is None:
                    self._app = await asyncio.to_thread(self._build)
                app = self._app
        await app(scope, receive, send)


class _Dated:
    """Adds the Date header to every HTTP response, formatted at most once a second."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._second = -1
        self._date = (b"date", b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self._now()]
            await send(message)

        await self._app(scope, receive, dated)

    def _now(self) -> tuple[bytes, bytes]:
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            self._date = (b"date", formatdate(now, usegmt=True).encode())
        return self._date


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server without its signal handlers (the process that embeds it owns SIGINT
    and SIGTERM; uvicorn would replace ``nanoiot serve``'s handlers with its own) and without
    its 0.1 s tick."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        await self._exit.wait()

    def exit(self) -> None:
        self.should_exit = True
        self._exit.set()


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``nanoiot.sockets``), or a one-line
    ``ConfigError``."""
    where = f"{host_port(host, port)} (NANOIOT_HTTP_BIND_ADDRESS / NANOIOT_HTTP_PORT)"
    try:
        return listening_socket(host, port)
    except OSError as exc:  # socket.gaierror included: an unknown host name
        raise ConfigError(f"cannot listen for HTTP on {where}: {exc.strerror}") from None


class HttpServer:
    def __init__(self, server: _EmbeddedServer, sock: socket.socket) -> None:
        self._server = server
        self._socket = sock
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        app: App,
        host: str,
        port: int,
        *,
        trusted_proxies: Sequence[str] = (),
        limits: HttpLimits = HttpLimits(),  # noqa: B008 - frozen
    ) -> Self:
        """Serve ``app``, its connections bounded by ``limits``. ``X-Forwarded-For`` /
        ``-Proto`` are honoured only on connections from ``trusted_proxies`` (addresses or
        networks): from anyone else they would let a client pick the address the sign-in rate
        limit counts."""
        sock = _bind(host, port)
        config = uvicorn.Config(
            # Outside the application: its own 500 (Starlette's, outermost in it) and answers
            # from any other application served here get the security headers too.
            _Dated(SecurityHeaders(AnswerFailures(app))),
            log_config=None,  # keep the process's logging set-up
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(_SHUTDOWN_GRACE),
            server_header=False,
            date_header=False,  # _Dated adds it
            # A deadline for request heads, bounds on connections in all and per address.
            http=guarded_protocol(
                trusted_proxies,
                max_connections=limits.max_connections,
                max_per_address=limits.max_connections_per_address,
            ),
            # No route speaks WebSocket: an Upgrade request is answered as plain HTTP, so every
            # connection stays with the guard to its end (an upgraded one would leave it).
            ws="none",
            # h11 bounds a head that arrives in pieces; ``admin.body_guard`` one that arrives
            # whole (``http_max_head_bytes`` both).
            h11_max_incomplete_event_size=limits.max_head_bytes,
            proxy_headers=bool(trusted_proxies),
            forwarded_allow_ips=list(trusted_proxies),
        )
        started = cls(_EmbeddedServer(config), sock)
        started._task = asyncio.create_task(started._server.serve(sockets=[sock]), name="http")
        log.info("admin API and web UI on http://%s", host_port(*started.address))
        return started

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.exit()
        await self._task
        self._task = None
        self._socket.close()
