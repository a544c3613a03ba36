"""``max_connections``: how many connections one broker process holds open at once.

Every connection costs memory from its first byte (a TLS object, its buffers; about 40 KiB once
a device is connected) and a file descriptor, and a client needs no certificate to open one.
So past the bound a new connection takes the place of the oldest one not admitted yet
(``broker.eviction``); with none, it is closed as soon as it is accepted, before any TLS work:
counted as a hit of ``max_connections`` and logged at most once a minute while it goes on.

The bound is also kept under the process's open-file limit, less a reserve for what is not a
client connection (the store, NATS, the admin server's clients, certificate and log files):
a process out of descriptors could not reach its database. Descriptors can still run out for a
moment (asyncio accepts a whole backlog of connections before it closes the ones past the
bound): its accept loop then logs a traceback for every connection it could not accept, so
``quiet_accept_errors`` says it in one line a minute instead.

``ConnectingPerHost`` (``max_connecting_per_address``) bounds the share of those connections
one client host holds before it is admitted, so that it cannot take them all. It applies only
while half of ``max_connections`` or more are open: until then nobody is kept out, and many
devices behind one address (a carrier-grade NAT, a load balancer without PROXY headers, a test
rig) may reconnect all at once, as after a broker restart, without being turned away.
"""

import asyncio
import ipaddress
import logging
import resource
import time
from collections.abc import Callable
from typing import Any, Final

log = logging.getLogger(__name__)

# Descriptors kept for the store's connections, NATS, admin HTTP clients and files; at most a
# quarter of a small limit, which must still leave room for clients.
FD_RESERVE: Final = 256
# One warning a minute at most while connections are being turned away (a flood would
# otherwise write a line for each).
LOG_INTERVAL: Final = 60.0
# What asyncio's accept loop reports when accept() fails for want of descriptors or memory.
_ACCEPT_FAILED: Final = "socket.accept() out of system resource"
_IPV6_HOST_PREFIX: Final = 64


def usable_connections(wanted: int) -> int:
    """``wanted``, or fewer if the open-file limit (raised to its hard limit if need be) does
    not leave room for that many connections and the reserve; the shortfall is logged."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):  # a limit the process may not raise: keep its own
            pass
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    reserve = min(FD_RESERVE, soft // 4)
    usable = max(1, soft - reserve)
    if usable >= wanted:
        return wanted
    log.warning(
        "max_connections is %d but the open-file limit is %d (ulimit -n; %d kept for the "
        "store, NATS and the admin server): at most %d connections",
        wanted, soft, reserve, usable,
    )  # fmt: skip
    return usable


class ConnectionLimit:
    """Counts and reports connections closed because ``maximum`` were open: each counted, and
    logged at most once a ``LOG_INTERVAL`` while it goes on (a flood would otherwise write a
    line for each). ``ConnectingPerHost`` reports its refusals the same way."""

    setting = "max_connections"
    closed = "connection(s) closed before any TLS work, the last from"  # the warning's words
    log = log  # the warning's logger

    def __init__(
        self,
        maximum: int,
        count: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.maximum = maximum
        self._count = count
        self._clock = clock
        self._unreported = 0
        self._next_report = 0.0

    def hit(self) -> None:
        """Counted only: the bound was reached and an older connection closed instead of the
        new one (``broker.eviction``), which logs it its own way."""
        self._count()

    def refused(self, source: str) -> None:
        """A connection from ``source`` was closed: ``maximum`` were held."""
        self._count()
        self._unreported += 1
        now = self._clock()
        if now < self._next_report:
            return
        self.log.warning(
            "%s (%d) reached: %d %s %s",
            self.setting, self.maximum, self._unreported, self.closed, source,
        )  # fmt: skip
        self._unreported = 0
        self._next_report = now + LOG_INTERVAL


def quiet_accept_errors(
    loop: asyncio.AbstractEventLoop, clock: Callable[[], float] = time.monotonic
) -> None:
    """Report ``loop``'s failed accepts as one plain line a minute, not a traceback each;
    every other exception goes to the handler the loop had."""
    previous = loop.get_exception_handler()
    failed, next_report = 0, 0.0

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal failed, next_report
        if context.get("message") != _ACCEPT_FAILED:
            if previous is None:
                loop.default_exception_handler(context)
            else:
                previous(loop, context)
            return
        failed += 1
        now = clock()
        if now >= next_report:
            error = context.get("exception")
            log.warning(
                "%d connection(s) not accepted: %s (open-file limit %d, ulimit -n); "
                "accepting again in a moment",
                failed, getattr(error, "strerror", error),
                resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            )  # fmt: skip
            failed, next_report = 0, now + LOG_INTERVAL

    loop.set_exception_handler(handle)


def host_of(address: str) -> str:
    """What one client host counts as: its IPv4 address, or the /64 of its IPv6 address (a
    host is given a whole /64, RFC 7421, and picks addresses in it at will, RFC 8981)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # not an IP address (a Unix socket): one host
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, _IPV6_HOST_PREFIX), strict=False))
    return str(ip)


class ConnectingPerHost(ConnectionLimit):
    """``max_connecting_per_address``: connections of one host not admitted yet.

    A connection costs a slot of ``max_connections`` from its first byte, and until its CONNECT
    is accepted no credential vouches for it: without a bound per host, one host could hold
    every slot with connections that never finish their handshake (each re-opened as
    ``tls_handshake_timeout`` closes it) and keep every device out. Past ``maximum`` a new
    connection from the host is closed at once, counted, and logged at most once a minute, while
    ``crowded`` says the broker is at least half full (``TlsServer`` sets it); before that the
    host's connections are only counted.
    """

    setting = "max_connecting_per_address"

    def __init__(
        self,
        maximum: int,
        count: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(maximum, count, clock)
        self.crowded: Callable[[], bool] = lambda: True
        self._held: dict[str, int] = {}  # host -> its connections not admitted yet

    def take(self, address: str) -> str | None:
        """A slot for a new connection from ``address``: the host to ``give_back`` it to, or
        None (refused: the host holds ``maximum`` and the broker is crowded)."""
        host = host_of(address)
        held = self._held.get(host, 0)
        if held < self.maximum or not self.crowded():
            self._held[host] = held + 1
            return host
        self.refused(host)
        return None

    def give_back(self, host: str) -> None:
        """The connection is admitted or closed: its host's slot is free."""
        held = self._held.get(host, 0) - 1
        if held > 0:
            self._held[host] = held
        else:
            self._held.pop(host, None)

    def held(self, address: str) -> int:
        return self._held.get(host_of(address), 0)
