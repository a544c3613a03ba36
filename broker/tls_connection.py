"""One client after its TLS handshake, and the two ways its plaintext is read.

A ``Receiver`` gets the decrypted bytes synchronously, in the transport's own callback: no
task, no buffer, no await per read (the broker's MQTT connections, ``broker.client``).
``StreamReceiver`` feeds them into a ``TlsStreamReader`` instead, for code that reads with
``await`` (tests and benchmarks). Either way ``TlsConnection.write`` hands plaintext back to
the transport, which encrypts what one event-loop turn wrote as one record.

Must not import OpenSSL: the TLS state machine belongs to ``broker.transport``.
"""

from typing import Protocol

from cryptography import x509

from broker.tls_stream import TlsStreamReader, TlsStreamWriter, TransportLink

__all__ = ["Receiver", "StreamReceiver", "TlsConnection"]


class Receiver(Protocol):
    """What reads a connection's plaintext. ``connection_lost`` may be called more than once
    (end of stream, then the socket closing) and from inside ``data_received``."""

    def data_received(self, data: bytes) -> None: ...
    def connection_lost(self) -> None: ...


class Link(TransportLink, Protocol):
    def abort(self) -> None: ...
    def admitted(self) -> None: ...


class TlsConnection:
    """One client after a completed handshake.

    ``peer_certificate`` is the leaf the client presented (None if it sent none) and
    ``peer_chain`` every certificate it sent, leaf first (RFC 8446 §4.4.2). Neither is
    verified beyond the client's proof that it holds the leaf's private key: the caller
    decides trust (public-key pinning, or a CA check of ``peer_chain``).
    """

    __slots__ = (
        "_link", "_reader", "_writer", "peer_certificate", "peer_chain", "remote",
        "tls_version",
    )  # fmt: skip

    def __init__(
        self,
        link: Link,
        remote: tuple[str, int],
        peer_certificate: x509.Certificate | None,
        peer_chain: tuple[x509.Certificate, ...],
        tls_version: str,
    ) -> None:
        self._link = link
        self.remote = remote
        self.peer_certificate = peer_certificate
        self.peer_chain = peer_chain
        self.tls_version = tls_version
        self._reader: TlsStreamReader | None = None
        self._writer: TlsStreamWriter | None = None

    @property
    def reader(self) -> TlsStreamReader:
        """The plaintext as a stream (made on first use: receivers never pay for it)."""
        if self._reader is None:
            self._reader = TlsStreamReader(self._link)
        return self._reader

    @property
    def writer(self) -> TlsStreamWriter:
        if self._writer is None:
            self._writer = TlsStreamWriter(self._link, self.remote)
        return self._writer

    def write(self, data: bytes) -> None:
        """Send plaintext (dropped once the connection is closed)."""
        self._link.send_plain(data)

    def buffered(self) -> int:
        """Bytes written that the peer has not taken yet."""
        return self._link.buffered()

    def pause_reading(self) -> None:
        self._link.pause_reading()

    def resume_reading(self) -> None:
        self._link.resume_reading()

    def admitted(self) -> None:
        """The client is admitted (its CONNECT accepted): it no longer counts against its
        host's ``max_connecting_per_address``."""
        self._link.admitted()

    def close(self) -> None:
        """Send what is pending and close_notify, then close the socket."""
        self._link.close()

    def abort(self) -> None:
        """Close the socket now, whatever is still unsent (a peer that does not read)."""
        self._link.abort()

    async def wait_closed(self) -> None:
        await self._link.wait_closed()


class StreamReceiver:
    """Feeds a connection's plaintext into its ``TlsStreamReader``."""

    __slots__ = ("_reader",)

    def __init__(self, reader: TlsStreamReader) -> None:
        self._reader = reader

    def data_received(self, data: bytes) -> None:
        self._reader.feed_data(data)

    def connection_lost(self) -> None:
        self._reader.feed_eof()
