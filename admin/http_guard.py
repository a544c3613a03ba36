"""uvicorn's HTTP/1.1 protocol with the bounds it lacks, for the admin server.

Anyone who reaches the admin port can open connections, token or not, and uvicorn keeps one
open as long as its client sends nothing, or sends a request's head a byte at a time: its
keep-alive timeout starts only after a response. Each such connection holds a file descriptor
of the process that also runs the broker. So here a request's head (request line and headers)
must arrive whole within ``HEAD_TIMEOUT`` of the connection or of the previous response (and a
body at the pace of ``BODY_GRACE`` and ``BODY_MIN_RATE``), and a
connection past ``http_max_connections_per_address`` from its source address is closed as soon
as it is accepted. One address alone thus never holds every place: others still get in while
it holds its share. Past ``http_max_connections`` open ones, a new connection takes the place of
the one that has waited longest for a request's head (idle between keep-alive requests, which
a server may close at any time, RFC 9112 §9.5, or never sending a whole head): 8 addresses of
16 idle connections each no longer keep operators out. Only when every connection is busy
with a request is the new one closed at once. The loopback address is bound by neither: the
container's health check (``/healthz``) and an operator on the host still get in while others
hold every place. A trusted reverse proxy (``http_trusted_proxies``) carries every one of its
clients' connections from its one address, so it is bound by the first only; which
client a connection is for is known only from the ``X-Forwarded-For`` of each request, after
the connection is taken in, so bounding each client is the proxy's job.
"""

import asyncio
import ipaddress
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from email.utils import formatdate
from typing import ClassVar, Final, TypeAlias

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from admin.headers import DEFAULTS as SECURITY_HEADERS

log = logging.getLogger(__name__)

IpAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

# Seconds for a request's head: an operator's or a script's client sends it at once.
HEAD_TIMEOUT: Final = 10.0
# A request's body (the sign-in form needs no token) must keep coming: BODY_GRACE seconds for
# its start, then each BODY_MIN_RATE bytes buy one second more, as Apache's mod_reqtimeout
# (body=20,MinRate=500). One byte every few seconds no longer holds a connection for ever; a
# 1 GB import at 500 B/s and more still gets in. Time the server itself does not read (its
# buffer full, or a client waiting for 100 Continue) is not counted against the client.
BODY_GRACE: Final = 20.0
BODY_MIN_RATE: Final = 500
# An IPv6 host is given a whole /64 (RFC 7421) and picks addresses in it at will (RFC 8981):
# its addresses count as one.
_IPV6_HOST_PREFIX: Final = 64
# One warning a minute at most, for each bound, while connections are turned away.
_LOG_INTERVAL: Final = 60.0


# uvicorn warns of each request h11 cannot parse: a line per request a client sends. Its log goes
# through this child of its logger, where that warning is dropped: ``send_400_response``
# reports such requests once a minute instead, as the bounds above do.
_INVALID_REQUEST: Final = "Invalid HTTP request received."
_UVICORN_LOG: Final = logging.getLogger("uvicorn.error.admin")
_UVICORN_LOG.addFilter(lambda record: record.msg != _INVALID_REQUEST)


class _TurnedAway:
    """Connections (or requests) one bound closed at once since its last warning, and when the
    next may be logged."""

    def __init__(self, outcome: str = "closed at once") -> None:
        self.outcome = outcome
        self.count = 0
        self.next_report = 0.0

    def report(self, message: str, *args: object) -> None:
        self.count += 1
        now = time.monotonic()
        if now >= self.next_report:
            log.warning(f"{message}: %d new one(s) {self.outcome}", *args, self.count)
            self.count, self.next_report = 0, now + _LOG_INTERVAL


class Places:
    """One server's open connections per source (an IPv4 address or an IPv6 /64), the
    loopback address and trusted proxies not counted, and the connections turned away. An
    entry goes when its last connection does: the table holds at most one per connection."""

    def __init__(self, trusted_proxies: Sequence[str], max_per_address: int) -> None:
        self.max_per_address = max_per_address
        self._proxies = tuple(
            ipaddress.ip_network(entry.strip(), strict=False) for entry in trusted_proxies
        )
        self._open: dict[str, int] = {}
        # Connections waiting for a request's head, the longest waiting first.
        self.idle: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self.turned_away_total = _TurnedAway()
        self.idle_closed = _TurnedAway("took the place of the longest idle")
        self.turned_away_per_address = _TurnedAway()
        self.slow_bodies = _TurnedAway()
        self.malformed = _TurnedAway()
        self.upgrades = _TurnedAway("answered as plain HTTP")

    def source_of(self, ip: IpAddress | None) -> str | None:
        """What a connection from ``ip`` (``peer_ip``), not the loopback address, counts
        under, or None if it is bound by the total only."""
        if ip is None or any(ip in network for network in self._proxies):
            return None
        return host_of(ip)

    def close_longest_idle(self) -> bool:
        """Close the connection that has waited longest for a request's head, for a new one;
        False if every connection is busy with a request."""
        if not self.idle:
            return False
        next(iter(self.idle)).evict()
        return True

    def full(self, source: str) -> bool:
        return self._open.get(source, 0) >= self.max_per_address

    def take(self, source: str) -> None:
        self._open[source] = self._open.get(source, 0) + 1

    def give_back(self, source: str) -> None:
        left = self._open[source] - 1
        if left:
            self._open[source] = left
        else:
            del self._open[source]


class GuardedH11Protocol(H11Protocol):
    """``H11Protocol`` with a deadline for each request's head, a minimum pace for its body and
    bounds on connections.
    ``guarded_protocol`` makes the class for one server, with its own ``places``."""

    places: ClassVar[Places]
    max_connections: ClassVar[int]
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _body_deadline = 0.0  # loop time by which the body must have come, while one comes
    _source: str | None = None  # set while this connection holds a place of its address

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        ip = peer_ip(peer)  # once per connection: each check below asks for it
        local = _loopback(peer, ip)
        source = None if local else self.places.source_of(ip)
        # Its address's share first: a connection refused would have closed another for nothing.
        if source is not None and self.places.full(source):
            transport.abort()
            self.places.turned_away_per_address.report(
                "admin HTTP: %d connections open from one address (lately %s)",
                self.places.max_per_address, source,
            )  # fmt: skip
            return
        if len(self.connections) >= self.max_connections and not local:
            if not self.places.close_longest_idle():
                transport.abort()
                self.places.turned_away_total.report(
                    "admin HTTP: %d connections open", self.max_connections
                )
                return
            self.places.idle_closed.report("admin HTTP: %d connections open", self.max_connections)
        self.logger = _UVICORN_LOG
        super().connection_made(transport)
        if self.client is not None:
            # A dual-stack listener (``::``) reports IPv4 peers as ::ffff:a.b.c.d: the
            # application (sign-in rate limit, trusted proxies, logs) sees a.b.c.d, as it
            # would from an IPv4 listener.
            self.client = (str(ip) if ip is not None else self.client[0], self.client[1])
        if source is not None:
            self.places.take(source)
            self._source = source
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()
        self._watch_body(len(data))

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()
        self._watch_body(0)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_body_timer()
        if self._source is not None:  # once: asyncio calls this once per transport
            self.places.give_back(self._source)
            self._source = None
        if self in self.connections:  # a connection closed at once never joined them
            super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 cannot parse (no Host, a malformed request line or
        field), as a problem body with the security headers every other answer carries."""
        body = json.dumps({"status": 400, "message": msg, "errorCode": 31}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"date", formatdate(usegmt=True).encode()),  # RFC 9110 §6.6.1
            *SECURITY_HEADERS,
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        self.transport.close()
        self.places.malformed.report(
            "admin HTTP: a request that is not valid HTTP/1.1, answered 400"
        )

    def _unsupported_upgrade_warning(self) -> None:
        # uvicorn warned twice of each Upgrade request, advising to install a WebSocket library:
        # no route speaks WebSocket (``ws="none"``), so it is answered as plain HTTP.
        self.places.upgrades.report("admin HTTP: an Upgrade request (no route speaks WebSocket)")

    def _watch_head(self) -> None:
        """A deadline while the next request's head is awaited (h11: the client IDLE), and a
        place among the idle ones (``Places.close_longest_idle``)."""
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not waiting:
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_late)
            self.places.idle[self] = None

    def _stop_head_timer(self) -> None:
        self.places.idle.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def evict(self) -> None:
        """Close the connection, idle, for a new one: at once (a client that does not read
        would hold a connection ``close`` waits on), its place free on the next turn."""
        self._stop_head_timer()
        self.transport.abort()

    def _watch_body(self, received: int) -> None:
        """The body's deadline (``BODY_GRACE``, ``BODY_MIN_RATE``) while the client sends one."""
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            self._stop_body_timer()
        elif self._body_timer is None:
            self._body_deadline = self.loop.time() + BODY_GRACE
            self._body_timer = self.loop.call_at(self._body_deadline, self._body_late)
        else:
            self._body_deadline += received / BODY_MIN_RATE

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_late(self) -> None:
        self._body_timer = None
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused or (
            self.cycle is not None and self.cycle.waiting_for_100_continue
        ):
            self._body_deadline = max(self._body_deadline, now + BODY_GRACE)  # the wait is ours
        if now < self._body_deadline:
            self._body_timer = self.loop.call_at(self._body_deadline, self._body_late)
            return
        self.places.slow_bodies.report("admin HTTP: a request body came too slowly")
        self.transport.close()


def guarded_protocol(
    trusted_proxies: Sequence[str], *, max_connections: int, max_per_address: int
) -> type[GuardedH11Protocol]:
    """The protocol class for one server: its connections counted apart from any other's.
    The bounds are settings (``http_max_connections``, ``http_max_connections_per_address``):
    operators, scripts and a browser's few connections each share the descriptors
    ``broker.connection_limit`` keeps besides the broker's connections (256), and a browser
    opens up to 6 connections to a server, a script or the CLI one or two, so 16 from one
    address serve two or three operators behind one NAT address while it takes 8 addresses to
    hold all 128 places."""

    class ServerProtocol(GuardedH11Protocol):
        places = Places(trusted_proxies, max_per_address)

    ServerProtocol.max_connections = max_connections

    return ServerProtocol


def host_of(ip: IpAddress) -> str:
    """What one client host counts as: its IPv4 address, or the /64 of its IPv6 address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, _IPV6_HOST_PREFIX), strict=False))
    return str(ip)


def _loopback(peer: object, ip: IpAddress | None) -> bool:
    """Whether the connection from ``peer`` (its peer name; ``ip``, its ``peer_ip``) is local:
    from a loopback address, ::ffff:127.0.0.1 too, or not an IP address (a Unix socket)."""
    return bool(peer) and (ip is None or ip.is_loopback)


def peer_ip(peer: object) -> IpAddress | None:
    """The IP address of a transport's peer name (``peername``), None if it has none."""
    try:
        ip = ipaddress.ip_address(peer[0]) if isinstance(peer, tuple) and peer else None
    except ValueError:
        return None
    # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
