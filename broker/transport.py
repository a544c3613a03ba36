"""The broker's TLS listener: TLS in pyOpenSSL over memory BIOs, on a plain asyncio TCP server.

Why not ``asyncio.start_server(ssl=...)``: the stdlib ssl module has no verify callback, so
it cannot accept the self-signed device certificates we pin by public key (``broker.tls``).
Here an ``asyncio.Protocol`` (``broker.tls_protocol``) feeds the socket's bytes to an
``OpenSSL.SSL.Connection`` built on memory BIOs (``bio_write``), runs the handshake and
decrypts (``do_handshake``, ``recv``), and sends what OpenSSL wrote (``bio_read``). After the
handshake the ``TlsConnection`` (``broker.tls_connection``) goes to ``on_open``, which
returns the receiver called with every decrypted read (the broker's MQTT connections: no task
per connection or read), or to ``on_connection``, a coroutine run as a task that reads
``connection.reader``.

Hot path (every MQTT byte): one BIO write and one SSL_read per TLS record completed per socket
read (``broker.tls_records``; the calls themselves in ``broker.tls_calls``), no task per
read; writes made in one event-loop turn are encrypted and sent together (one record, one
``send``), and a full record's worth is sent at once. Failed handshakes (alerts, plaintext
MQTT, garbage, timeouts) close only that connection and go to ``TlsServer.handshake_failed``
(by default a ``broker.tls_failures.TlsFailureLog``: classified, logged, counted).

A connection from a trusted load balancer (``TlsServer.proxy_trusted``) starts with a PROXY
protocol v2 header naming the client, read before the handshake (``broker.handshake_watch``
keeps a connection's handshake state); from then on its ``remote`` is the client's address.

Knows nothing of MQTT: this module only moves bytes.
"""

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final

from OpenSSL import SSL

from broker.connection_limit import ConnectingPerHost, ConnectionLimit
from broker.eviction import Unadmitted
from broker.handshake_watch import HandshakeFailed
from broker.proxy_protocol import TrustedProxies
from broker.tls_connection import Receiver, StreamReceiver, TlsConnection
from broker.tls_failures import TlsFailureLog
from broker.tls_protocol import TlsProtocol

__all__ = ["TlsConnection", "TlsServer", "start_tls_server"]

log = logging.getLogger(__name__)

OnConnection = Callable[[TlsConnection], Awaitable[None]]
OnOpen = Callable[[TlsConnection], Receiver]

# Handler tasks still running this long after TlsServer.close() are cancelled.
_HANDLER_GRACE: Final = 5.0


class TlsServer:
    """A listening TLS server; ``close()`` then ``await wait_closed()`` stops it entirely."""

    def __init__(
        self,
        context: SSL.Context,
        on_connection: OnConnection | None,
        handshake_timeout: float,
        on_open: OnOpen | None = None,
    ) -> None:
        if (on_connection is None) == (on_open is None):
            raise ValueError("give exactly one of on_connection and on_open")
        self.context = context
        self.handshake_timeout = handshake_timeout
        self.loop = asyncio.get_running_loop()
        self.protocols: set[TlsProtocol] = set()
        self.handshake_failed: HandshakeFailed = TlsFailureLog().report
        self.proxy_trusted = TrustedProxies(())  # load balancers sending PROXY v2 headers
        # True for a new connection from a client address dropped before its handshake (the
        # password gate's shut-out, broker.auth_throttle's slowed hosts). Asked once per
        # connection: a slowed host's connection let through takes one of its slots.
        self.shut_out: Callable[[str], bool] = lambda _address: False
        # max_connections: past it a new connection takes the place of the oldest one not
        # admitted yet (``unadmitted``), or is closed at once (None: no bound).
        self.connection_limit: ConnectionLimit | None = None
        self.unadmitted = Unadmitted()
        # max_connecting_per_address: past it a host's new connection is closed at once, until
        # one of its connections is admitted (``TlsConnection.admitted``) or closes.
        self.connecting: ConnectingPerHost | None = None
        self._on_connection = on_connection
        self._on_open = on_open
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def is_serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def use_context(self, context: SSL.Context) -> None:
        """TLS settings for connections accepted from now on; open ones keep theirs."""
        self.context = context

    def make_room(self, address: str) -> bool:
        """Whether a new connection from ``address`` may be held: fewer than
        ``max_connections`` are open, or the oldest not admitted yet was closed for it; else
        it is refused (counted and logged)."""
        limit = self.connection_limit
        if limit is None or len(self.protocols) < limit.maximum:
            return True
        if self.unadmitted.evict_oldest(limit):
            return True
        limit.refused(address)
        return False

    def start_handler(self, connection: TlsConnection) -> Receiver:
        """``on_open``'s receiver, or a stream read by a task running ``on_connection``."""
        if self._on_open is not None:
            return self._on_open(connection)
        task = self.loop.create_task(self._run_handler(connection))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        return StreamReceiver(connection.reader)

    async def _run_handler(self, connection: TlsConnection) -> None:
        assert self._on_connection is not None
        try:
            await self._on_connection(connection)
        except Exception:
            log.exception("connection handler failed for %s:%d", *connection.remote)
        finally:
            # The handler owns the connection for its lifetime; when it returns, we close.
            connection.close()

    def close(self) -> None:
        """Stop accepting and close every connection (close_notify to each)."""
        if self._server is not None:
            self._server.close()
        for protocol in list(self.protocols):
            protocol.close()
        self.unadmitted.flush()

    async def wait_closed(self) -> None:
        """Wait until the sockets are closed and connection handlers have returned."""
        if self._server is not None:
            await self._server.wait_closed()
        if self._handlers:
            _, late = await asyncio.wait(set(self._handlers), timeout=_HANDLER_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        closing = [protocol.wait_closed() for protocol in list(self.protocols)]
        if closing:
            await asyncio.gather(*closing)

    async def __aenter__(self) -> "TlsServer":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


async def start_tls_server(
    ctx: SSL.Context,
    host: str,
    port: int,
    on_connection: OnConnection | None = None,
    *,
    handshake_timeout: float,
    on_open: OnOpen | None = None,
    sock: socket.socket | None = None,
    handshake_failed: HandshakeFailed | None = None,
    proxy_trusted: TrustedProxies | None = None,
    shut_out: Callable[[str], bool] | None = None,
    connection_limit: ConnectionLimit | None = None,
    connecting: ConnectingPerHost | None = None,
) -> TlsServer:
    """Listen on ``host:port`` (or accept on ``sock``, already bound: ``broker.listen``); for
    every completed handshake call ``on_open`` (which returns the connection's receiver) or
    start ``on_connection``.

    ``on_connection`` runs as one task per connection; the connection is closed when it
    returns. A client that has not finished its handshake after ``handshake_timeout`` seconds
    is disconnected. Connections from ``proxy_trusted`` addresses must start with a PROXY
    protocol v2 header (``broker.proxy_protocol``). A client address for which ``shut_out``
    is true is disconnected before any handshake (it costs the broker no TLS work), and so is
    every connection past ``connecting``'s maximum of connections from one host not yet
    admitted while half of ``connection_limit``'s are taken. Past ``connection_limit``'s
    maximum a new connection takes the place of the oldest not admitted yet
    (``broker.eviction``), or with none is disconnected before any handshake.
    """
    server = TlsServer(ctx, on_connection, handshake_timeout, on_open)
    if handshake_failed is not None:
        server.handshake_failed = handshake_failed
    if proxy_trusted is not None:
        server.proxy_trusted = proxy_trusted
    if shut_out is not None:
        server.shut_out = shut_out
    server.connection_limit = connection_limit
    server.connecting = connecting
    if connecting is not None and connection_limit is not None:
        # Hosts are held to their share only once half the places are taken.
        maximum = connection_limit.maximum
        connecting.crowded = lambda: 2 * len(server.protocols) >= maximum
    where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": host, "port": port}
    server._server = await server.loop.create_server(
        lambda: TlsProtocol(server), backlog=1024, **where
    )
    return server
