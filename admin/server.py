"""Serving the admin application with uvicorn inside an event loop we already run.

``nanoiot serve`` runs the broker and this server in one loop, so an API change reaches live
sessions at once; ``nanoiot api`` runs this server alone. We bind the socket ourselves, so
port 0 works (tests) and the bound port is known before the first request; connections that
arrive before uvicorn accepts wait in the listen backlog.
"""

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator, Sequence
from typing import Self

import uvicorn
from fastapi import FastAPI

from admin.app import create_app
from admin.context import AdminContext
from nanoiot.errors import ConfigError
from nanoiot.settings import Settings

log = logging.getLogger(__name__)

_SHUTDOWN_GRACE = 5.0  # seconds for in-flight requests when stopping


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server without its signal handlers: the process that embeds it owns SIGINT
    and SIGTERM (uvicorn would replace ``nanoiot serve``'s handlers with its own)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(self, server: _EmbeddedServer, sock: socket.socket) -> None:
        self._server = server
        self._socket = sock
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls, app: FastAPI, host: str, port: int, *, trusted_proxies: Sequence[str] = ()
    ) -> Self:
        """Serve ``app``. ``X-Forwarded-For`` / ``-Proto`` are honoured only on connections
        from ``trusted_proxies`` (addresses or networks): from anyone else they would let a
        client pick the address the sign-in rate limit counts."""
        try:
            sock = socket.create_server((host, port), reuse_port=False)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen for HTTP on {host}:{port} (NANOIOT_HTTP_BIND_ADDRESS / "
                f"NANOIOT_HTTP_PORT): {exc.strerror}"
            ) from None
        config = uvicorn.Config(
            app,
            log_config=None,  # keep the process's logging set-up
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(_SHUTDOWN_GRACE),
            server_header=False,
            proxy_headers=bool(trusted_proxies),
            forwarded_allow_ips=list(trusted_proxies),
        )
        started = cls(_EmbeddedServer(config), sock)
        started._task = asyncio.create_task(started._server.serve(sockets=[sock]), name="http")
        log.info("admin API and web UI on http://%s:%d", *started.address)
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
        self._server.should_exit = True
        await self._task
        self._task = None
        self._socket.close()


async def start_admin(context: AdminContext, settings: Settings) -> HttpServer:
    """The admin application on the configured address, with its configured bounds."""
    app = create_app(context, max_body=settings.http_max_body_bytes)
    return await HttpServer.start(
        app, settings.http_bind_address, settings.http_port,
        trusted_proxies=settings.http_trusted_proxies,
    )  # fmt: skip
