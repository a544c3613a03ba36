"""uvicorn's HTTP/1.1 protocol with the two bounds it lacks, for the admin server.

Anyone who reaches the admin port can open connections, token or not, and uvicorn keeps one
open as long as its client sends nothing, or sends a request's head a byte at a time: its
keep-alive timeout starts only after a response. Each such connection holds a file descriptor
of the process that also runs the broker. So here a request's head (request line and headers)
must arrive whole within ``HEAD_TIMEOUT`` of the connection or of the previous response, and a
connection past ``MAX_CONNECTIONS`` open ones is closed as soon as it is accepted, unless it
comes from the loopback address: the container's health check (``/healthz``) and an operator
on the host still get in while others hold every place.
"""

import asyncio
import ipaddress
import logging
import time
from typing import Final

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

# Seconds for a request's head: an operator's or a script's client sends it at once.
HEAD_TIMEOUT: Final = 10.0
# Admin connections open at once: operators, scripts and a browser's few each; they share the
# descriptors broker.connection_limit keeps besides the broker's connections (256).
MAX_CONNECTIONS: Final = 128
# One warning a minute at most while connections are turned away.
_LOG_INTERVAL: Final = 60.0


class _TurnedAway:
    """Connections closed at once since the last warning, and when the next may be logged."""

    count = 0
    next_report = 0.0


_turned_away = _TurnedAway()


class GuardedH11Protocol(H11Protocol):
    """``H11Protocol`` with a deadline for each request's head and a bound on connections."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= MAX_CONNECTIONS and not _loopback(transport):
            transport.abort()
            _report_turned_away()
            return
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        if self in self.connections:  # a connection closed at once never joined them
            super().connection_lost(exc)

    def _watch_head(self) -> None:
        """A deadline while the next request's head is awaited (h11: the client IDLE)."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not waiting:
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_late)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def _report_turned_away() -> None:
    _turned_away.count += 1
    now = time.monotonic()
    if now >= _turned_away.next_report:
        log.warning(
            "admin HTTP: %d connections open: %d new one(s) closed at once",
            MAX_CONNECTIONS, _turned_away.count,
        )  # fmt: skip
        _turned_away.count, _turned_away.next_report = 0, now + _LOG_INTERVAL


def _loopback(transport: asyncio.Transport) -> bool:
    peer = transport.get_extra_info("peername")
    try:
        return bool(peer) and ipaddress.ip_address(peer[0]).is_loopback
    except ValueError:  # not an IP address (a Unix socket): local too
        return True
