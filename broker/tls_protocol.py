"""One connection of the broker's TLS listener (``broker.transport``): the asyncio protocol.

It feeds the socket's bytes to an ``OpenSSL.SSL.Connection`` on memory BIOs (once open, through
``broker.tls_calls``, one SSL_read per record a read completes: ``broker.tls_records``),
reads a PROXY protocol v2 header first from a trusted load balancer (``broker.proxy_protocol``),
runs the handshake within ``handshake_timeout`` (a failure goes to
``TlsServer.handshake_failed``), then decrypts every read into the connection's receiver and
encrypts what the broker writes (what one event-loop turn wrote goes out together, a full
record's worth at once, RFC 8446 §5.1; the answers to a read as soon as it is handled), with
flow control both ways. Knows nothing of MQTT.
"""

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Final, cast

from OpenSSL import SSL

from broker.handshake_watch import HandshakeWatch
from broker.proxy_protocol import ProxyHeaderError
from broker.tls import sent_chain_refused
from broker.tls_calls import feed, read_record, take_output, write_plain
from broker.tls_connection import Receiver, TlsConnection
from broker.tls_failures import CHAIN_REFUSED, FailureKind
from broker.tls_failures import openssl_reason as _reason
from broker.tls_records import records_completed

if TYPE_CHECKING:
    from broker.transport import TlsServer

log = logging.getLogger("broker.transport")  # logged as the listener it belongs to

# RFC 8446 §5.1: a record carries at most 2^14 bytes of plaintext; SSL_read returns at most one.
_RECORD: Final = 16 * 1024
_BIO_CHUNK: Final = 64 * 1024
# A peer that stops reading cannot hold a closed connection open longer than this.
_CLOSE_GRACE: Final = 5.0

_HANDSHAKE, _OPEN, _CLOSED = 0, 1, 2


class TlsProtocol(asyncio.Protocol):
    """One TLS connection of a ``TlsServer``, from its first byte to its close."""

    # Slots: one per connection, idle devices included (an instance dict of these 19
    # attributes is about 0.5 KiB more).
    __slots__ = (
        "_closed", "_drain_waiter", "_flush_scheduled", "_head", "_host", "_left", "_loop",
        "_pending", "_pending_size", "_receiver", "_remote", "_screened", "_server", "_state",
        "_timer", "_tls", "_transport", "_watch", "_write_paused",
    )  # fmt: skip
    # Made once the client's address passed its screening (``_start_tls``; every use comes
    # after): a connection dropped at accept, shut out or past a bound, makes no SSL object.
    _tls: SSL.Connection

    def __init__(self, server: "TlsServer") -> None:
        self._server = server
        self._loop = server.loop
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
        # The host whose max_connecting_per_address slot this connection holds until admitted.
        self._host: str | None = None
        # Where the client's TLS records end (``broker.tls_records``): the start of a record
        # header cut by a read, and how many bytes of the current record are still to come.
        self._head = b""
        self._left = 0

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self._remote = (str(peer[0]), int(peer[1]))
        # A load balancer's connection counts against its client's host, and is screened for
        # it, once its PROXY header names it (``data_received``); any other at once, before
        # it may take an older connection's place: one refused would have closed it for
        # nothing (a host past its share could close every connection not admitted yet).
        remote, server = self._remote[0], self._server
        self._screened = not server.proxy_trusted.trusts(remote)
        if self._screened and (server.shut_out(remote) or not self._hold(remote)):
            self._shut(abort=True)  # no TLS work, not even a read
            return
        # Past max_connections the oldest connection not admitted yet gives its place; with
        # none, this one is closed before any TLS work (broker.eviction).
        if not server.make_room(remote):
            self.admitted()  # its host's slot back
            self._shut(abort=True)
            return
        if self._screened:
            self._start_tls()
        server.protocols.add(self)
        server.unadmitted.add(self, remote)
        self._watch = HandshakeWatch(server, self._remote, self._handshake_expired)

    def _hold(self, address: str) -> bool:
        """Take a ``max_connecting_per_address`` slot of ``address``'s host; False if it holds
        them all."""
        connecting = self._server.connecting
        if connecting is None:
            return True
        self._host = connecting.take(address)
        return self._host is not None

    def _start_tls(self) -> None:
        """The connection's OpenSSL side, once its client may start a handshake."""
        self._tls = SSL.Connection(self._server.context, None)
        self._tls.set_accept_state()

    def admitted(self) -> None:
        """The client is admitted: its host's slot is free for its next connection, and its
        own is no newcomer's (``broker.eviction``)."""
        self._server.unadmitted.discard(self)
        host, self._host = self._host, None
        if host is not None and self._server.connecting is not None:
            self._server.connecting.give_back(host)

    def data_received(self, data: bytes) -> None:
        if self._state == _OPEN:
            feed(self._tls, data)
            records, self._head, self._left = records_completed(self._head, self._left, data)
            if records:  # none: a record cut by the read waits for its rest
                self._read_records(records)
            if self._pending:
                # What answering this read wrote here (PUBACKs, SUBACKs) goes out now: one
                # loop callback less per read. Writes to other connections wait for the end
                # of the turn, to leave together (fan-in).
                self._flush()
        elif self._state == _HANDSHAKE and self._watch is not None:
            try:
                data = self._watch.feed(data)
            except ProxyHeaderError:  # reported by the watch
                self._shut(abort=False)
                return
            if data:
                if not self._screened:
                    self._screened = True
                    remote = self._watch.remote[0]
                    if self._server.shut_out(remote):
                        self._watch.done()
                        self._shut(abort=True)  # no TLS work for an address dropped
                        return
                    if self._remote[0] != remote and not self._hold(remote):  # a balancer's
                        self._shut(abort=True)
                        return
                    self._start_tls()
                self._tls.bio_write(data)
                # Counted from the first byte on, to know where the records after it end.
                _, self._head, self._left = records_completed(self._head, self._left, data)
                self._handshake()

    def eof_received(self) -> bool:
        if self._state == _HANDSHAKE and self._watch is not None:
            self._watch.failed(FailureKind.CLOSED)
        if self._receiver is not None:
            self._receiver.connection_lost()
        return False  # asyncio closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self.admitted()  # or not: its slot is free all the same
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
        leaf = tls.get_peer_certificate(as_cryptography=True)
        sent = tls.get_peer_cert_chain(as_cryptography=True) or []
        # On a server, OpenSSL's peer chain leaves the leaf out.
        chain = (leaf, *(c for c in sent if c != leaf)) if leaf is not None else tuple(sent)
        # The context's verify depth is max_client_chain_certificates, its app data
        # max_client_chain_bytes (broker.tls).
        context = tls.get_context()
        if sent_chain_refused(chain, context.get_verify_depth(), context.get_app_data()):
            if self._watch is not None:
                self._watch.failed(FailureKind.ERROR, SSL.Error(CHAIN_REFUSED))
            self._shut(abort=False)
            return
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
        connection = TlsConnection(self, self._remote, leaf, chain, version)
        self._receiver = self._server.start_handler(connection)
        # The client may have sent application data right behind its Finished.
        self._read_records()

    def _handshake_expired(self) -> None:
        if self._state == _HANDSHAKE:
            self._shut(abort=False)

    # --- reading ---

    def _read_records(self, records: int = 0) -> None:
        """Decrypt what the client sent: ``records`` reads, one per record that came whole
        (SSL_read returns one record's data at most), or until OpenSSL wants more bytes.
        Counting spares the read that fails with WANT_READ (an exception each time, about a
        third of the TLS read cost of a small message); the handshake's last read drains
        without counting, since the handshake consumed records of its own."""
        tls = self._tls
        chunks: list[bytes] = []
        try:
            if records:
                for _ in range(records):
                    chunks.append(read_record(tls, _RECORD))
            else:
                while True:
                    chunks.append(read_record(tls, _RECORD))
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
        receiver = self._receiver  # (``_feed``, inline: this is every read's path)
        if chunks and receiver is not None:
            receiver.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))

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
        tls = self._tls
        try:
            sent = write_plain(tls, data)
            if sent < len(data):  # only with partial writes enabled, which we do not
                view = memoryview(data)[sent:]
                while view:
                    view = view[write_plain(tls, view) :]
        except SSL.Error as exc:
            log.debug("TLS error sending to %s:%d: %s", *self._remote, _reason(exc))
            self._shut(abort=True)
            return
        self._send_tls_output()

    def _send_tls_output(self) -> None:
        tls = self._tls
        chunk = take_output(tls, _BIO_CHUNK)
        if not chunk:
            return  # nothing to send
        if len(chunk) == _BIO_CHUNK:
            chunks = [chunk]
            while len(chunk) == _BIO_CHUNK:
                chunk = take_output(tls, _BIO_CHUNK)
                chunks.append(chunk)
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
