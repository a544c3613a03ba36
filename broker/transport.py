"""The broker's TLS listener: TLS in pyOpenSSL over memory BIOs, on a plain asyncio TCP server.

Why not ``asyncio.start_server(ssl=...)``: the stdlib ssl module has no verify callback, so
it cannot accept the self-signed device certificates we pin by public key (``broker.tls``).
Here an ``asyncio.Protocol`` feeds the socket's bytes to an ``OpenSSL.SSL.Connection`` built
on memory BIOs (``bio_write``), runs the handshake and decrypts (``do_handshake``, ``recv``),
and sends what OpenSSL wrote (``bio_read``). After the handshake the ``TlsConnection``
(``broker.tls_connection``) goes to ``on_open``, which returns the receiver called with every
decrypted read (the broker's MQTT connections: no task per connection or read), or to
``on_connection``, a coroutine run as a task that reads ``connection.reader``.

Hot path (every MQTT byte): one ``bio_write`` and a ``recv`` loop per socket read, no task per
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
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from OpenSSL import SSL

from broker.handshake_watch import HandshakeFailed, HandshakeWatch
from broker.proxy_protocol import ProxyHeaderError, TrustedProxies
from broker.tls_connection import Receiver, StreamReceiver, TlsConnection
from broker.tls_failures import FailureKind, TlsFailureLog
from broker.tls_failures import openssl_reason as _reason

__all__ = ["TlsConnection", "TlsServer", "start_tls_server"]

log = logging.getLogger(__name__)

OnConnection = Callable[[TlsConnection], Awaitable[None]]
OnOpen = Callable[[TlsConnection], Receiver]

# RFC 8446 §5.1: a record carries at most 2^14 bytes of plaintext; SSL_read returns at most one.
_RECORD: Final = 16 * 1024
_BIO_CHUNK: Final = 64 * 1024
# A peer that stops reading cannot hold a closed connection open longer than this.
_CLOSE_GRACE: Final = 5.0
# Handler tasks still running this long after TlsServer.close() are cancelled.
_HANDLER_GRACE: Final = 5.0

_HANDSHAKE, _OPEN, _CLOSED = 0, 1, 2


class _TlsProtocol(asyncio.Protocol):
    def __init__(self, server: "TlsServer") -> None:
        self._server = server
        self._loop = server.loop
        self._tls = SSL.Connection(server.context, None)
        self._tls.set_accept_state()
        self._state = _HANDSHAKE
        self._transport: asyncio.Transport | None = None
        self._remote: tuple[str, int] = ("?", 0)
        self._timer: asyncio.TimerHandle | None = None
        self._receiver: Receiver | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._flush_scheduled = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed = self._loop.create_future()
        self._watch: HandshakeWatch | None = None  # until the handshake is over
        self._screened = False  # the client's address was checked against shut_out

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self._remote = (str(peer[0]), int(peer[1]))
        self._server.protocols.add(self)
        self._watch = HandshakeWatch(self._server, self._remote, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        if self._state == _OPEN:
            self._tls.bio_write(data)
            self._read_records()
        elif self._state == _HANDSHAKE and self._watch is not None:
            try:
                data = self._watch.feed(data)
            except ProxyHeaderError:  # reported by the watch
                self._shut(abort=False)
                return
            if data:
                if not self._screened:
                    self._screened = True
                    if self._server.shut_out(self._watch.remote[0]):
                        self._watch.done()
                        self._shut(abort=True)  # no TLS work for an address shut out
                        return
                self._tls.bio_write(data)
                self._handshake()

    def eof_received(self) -> bool:
        if self._state == _HANDSHAKE and self._watch is not None:
            self._watch.failed(FailureKind.CLOSED)
        if self._receiver is not None:
            self._receiver.connection_lost()
        return False  # asyncio closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        if self._timer is not None:
            self._timer.cancel()
        if self._watch is not None:
            self._watch.done()
        if self._receiver is not None:
            self._receiver.connection_lost()
        self._wake_drain()
        self._server.protocols.discard(self)
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drain()

    # --- handshake ---

    def _handshake(self) -> None:
        try:
            self._tls.do_handshake()
        except SSL.WantReadError:
            self._send_tls_output()
            return
        except SSL.Error as exc:
            self._send_tls_output()  # the alert, if OpenSSL wrote one
            if self._watch is not None:
                self._watch.failed(FailureKind.ERROR, exc)
            self._shut(abort=False)
            return
        tls = self._tls
        version = tls.get_protocol_version_name()
        if version != "TLSv1.3":
            self._send_tls_output()  # TLS 1.2: our Finished, which the client waits for
        # TLS 1.3: our Finished went out with the first flight; what OpenSSL wrote now is the
        # session tickets (RFC 8446 §4.6.1), which no client waits for. They stay in the BIO
        # and leave with the first record we send (CONNACK): one write less per connect.
        if self._watch is not None:
            self._watch.done()
            self._remote = self._watch.remote  # a balancer's client, if it named one
            self._watch = None
        self._state = _OPEN
        leaf = tls.get_peer_certificate(as_cryptography=True)
        sent = tls.get_peer_cert_chain(as_cryptography=True) or []
        # On a server, OpenSSL's peer chain leaves the leaf out.
        chain = (leaf, *(c for c in sent if c != leaf)) if leaf is not None else tuple(sent)
        connection = TlsConnection(self, self._remote, leaf, chain, version)
        self._receiver = self._server.start_handler(connection)
        # The client may have sent application data right behind its Finished.
        self._read_records()

    def _handshake_expired(self) -> None:
        if self._state == _HANDSHAKE:
            self._shut(abort=False)

    # --- reading ---

    def _read_records(self) -> None:
        recv = self._tls.recv
        chunks: list[bytes] = []
        try:
            while True:
                chunks.append(recv(_RECORD))
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:  # close_notify (RFC 8446 §6.1): answer it, then close
            self._feed(chunks)
            self.close()
            return
        except SSL.Error as exc:
            self._feed(chunks)
            log.debug("TLS error from %s:%d: %s", *self._remote, _reason(exc))
            self._send_tls_output()
            self._shut(abort=False)
            return
        self._feed(chunks)

    def _feed(self, chunks: list[bytes]) -> None:
        if chunks and self._receiver is not None:
            self._receiver.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    # --- writing (TransportLink for the adapters) ---

    def send_plain(self, data: bytes) -> None:
        if self._state != _OPEN or not data:
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= _RECORD:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending or self._state != _OPEN:
            return
        pending = self._pending
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._pending_size = 0
        view = memoryview(data)
        send = self._tls.send
        try:
            while view:
                view = view[send(view) :]
        except SSL.Error as exc:
            log.debug("TLS error sending to %s:%d: %s", *self._remote, _reason(exc))
            self._shut(abort=True)
            return
        self._send_tls_output()

    def _send_tls_output(self) -> None:
        bio_read = self._tls.bio_read
        try:
            chunk = bio_read(_BIO_CHUNK)
        except SSL.WantReadError:
            return  # nothing to send
        if len(chunk) == _BIO_CHUNK:
            chunks = [chunk]
            try:
                while len(chunk) == _BIO_CHUNK:
                    chunk = bio_read(_BIO_CHUNK)
                    chunks.append(chunk)
            except SSL.WantReadError:
                pass
            chunk = b"".join(chunks)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(chunk)

    def buffered(self) -> int:
        """Bytes written but not yet taken by the socket: plaintext waiting for this turn's
        flush, and TLS records in the transport's write buffer (a peer that stops reading
        makes this grow; ``broker.client`` caps it)."""
        transport = self._transport
        held = transport.get_write_buffer_size() if transport is not None else 0
        return self._pending_size + held

    async def drain(self) -> None:
        while self._write_paused and self._state != _CLOSED:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self._loop.create_future()
            await waiter

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # --- closing ---

    def close(self) -> None:
        """Flush pending writes, send close_notify (RFC 8446 §6.1) and close the socket."""
        if self._state == _OPEN:
            self._flush()
            # A broken connection gets closed all the same.
            with contextlib.suppress(SSL.Error):
                self._tls.shutdown()
            self._send_tls_output()
        self._shut(abort=False)

    def abort(self) -> None:
        """Close the socket now, unsent data dropped (even while ``close`` waits for it)."""
        self._shut(abort=True)
        if self._transport is not None:
            self._transport.abort()

    def _shut(self, *, abort: bool) -> None:
        if self._watch is not None:
            self._watch.done()
        if self._state != _CLOSED:
            self._state = _CLOSED
            if self._receiver is not None:
                self._receiver.connection_lost()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if abort:
            transport.abort()
        else:
            transport.close()
            # close() waits for the write buffer to empty; a peer that stops reading must
            # not keep the socket forever.
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_later(_CLOSE_GRACE, transport.abort)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)


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
        self.protocols: set[_TlsProtocol] = set()
        self.handshake_failed: HandshakeFailed = TlsFailureLog().report
        self.proxy_trusted = TrustedProxies(())  # load balancers sending PROXY v2 headers
        # True for a client address refused before its handshake (the password throttle).
        self.shut_out: Callable[[str], bool] = lambda _address: False
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
) -> TlsServer:
    """Listen on ``host:port`` (or accept on ``sock``, already bound: ``broker.listen``); for
    every completed handshake call ``on_open`` (which returns the connection's receiver) or
    start ``on_connection``.

    ``on_connection`` runs as one task per connection; the connection is closed when it
    returns. A client that has not finished its handshake after ``handshake_timeout`` seconds
    is disconnected. Connections from ``proxy_trusted`` addresses must start with a PROXY
    protocol v2 header (``broker.proxy_protocol``). A client address for which ``shut_out``
    is true is disconnected before any handshake (it costs the broker no TLS work).
    """
    server = TlsServer(ctx, on_connection, handshake_timeout, on_open)
    if handshake_failed is not None:
        server.handshake_failed = handshake_failed
    if proxy_trusted is not None:
        server.proxy_trusted = proxy_trusted
    if shut_out is not None:
        server.shut_out = shut_out
    where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": host, "port": port}
    server._server = await server.loop.create_server(
        lambda: _TlsProtocol(server), backlog=1024, **where
    )
    return server
