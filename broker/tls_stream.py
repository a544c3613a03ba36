"""A TLS connection as a stream: a reader fed by ``broker.transport`` and a writer back to it.

For code that reads with ``await`` (tests, benchmarks); the broker's MQTT connections take the
plaintext synchronously instead (``broker.tls_connection.Receiver``). No task, lock or log
line per read or write, and a read that the buffer can satisfy does not wait.

Must not import OpenSSL: the TLS state machine belongs to ``broker.transport``.
"""

import asyncio
from typing import Protocol

__all__ = ["TlsStreamReader", "TlsStreamWriter", "TransportLink"]


class TransportLink(Protocol):
    """What the adapters need from the connection under them (``broker.transport``)."""

    def send_plain(self, data: bytes) -> None: ...
    def buffered(self) -> int: ...
    async def drain(self) -> None: ...
    def close(self) -> None: ...
    async def wait_closed(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class TlsStreamReader:
    """Decrypted bytes of one connection.

    ``read(n)`` returns exactly ``n`` bytes, or fewer only at end of stream (then ``b""`` once
    the buffer is empty). ``read(-1)`` reads
    to end of stream; ``read_some(n)`` returns what is there, up to ``n``. When more than
    ``2 * limit`` bytes wait unread, the transport stops reading the socket until the buffer
    is back under ``limit`` or a read needs more, as ``asyncio.StreamReader`` does.
    """

    def __init__(self, link: TransportLink, limit: int = 64 * 1024) -> None:
        self._link = link
        self._limit = limit
        self._buffer = bytearray()
        self._eof = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    def feed_data(self, data: bytes) -> None:
        """Called by the transport with decrypted bytes."""
        self._buffer += data
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if not self._paused and len(self._buffer) > 2 * self._limit:
            self._paused = True
            self._link.pause_reading()

    def feed_eof(self) -> None:
        """End of stream: close_notify, TCP FIN, or the connection was closed."""
        self._eof = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def at_eof(self) -> bool:
        return self._eof and not self._buffer

    async def read(self, n: int = -1) -> bytes:
        buffer = self._buffer
        if n < 0:
            while not self._eof:
                await self._wait()
            data = bytes(buffer)
            buffer.clear()
        else:
            while len(buffer) < n and not self._eof:
                await self._wait()
            if n >= len(buffer):
                data = bytes(buffer)
                buffer.clear()
            else:
                data = bytes(buffer[:n])
                # bytearray drops a prefix in O(1): it moves its start, not the bytes.
                del buffer[:n]
        self._resume_if_drained()
        return data

    async def read_some(self, n: int = 64 * 1024) -> bytes:
        """Up to ``n`` bytes as soon as any are there (``StreamReader.read(n)``); b"" at end."""
        buffer = self._buffer
        if not buffer and not self._eof:
            await self._wait()
        data = bytes(buffer[:n])
        del buffer[:n]
        self._resume_if_drained()
        return data

    def _resume_if_drained(self) -> None:
        """The socket flows again once what is buffered is back within the limit."""
        if self._paused and len(self._buffer) <= self._limit:
            self._paused = False
            self._link.resume_reading()

    async def _wait(self) -> None:
        if self._waiter is not None:
            raise RuntimeError("TlsStreamReader.read() called while another read is waiting")
        if self._paused:
            # The caller needs more than is buffered (a large read): let the socket flow.
            self._paused = False
            self._link.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


class TlsStreamWriter:
    """Plaintext writes of one connection; the transport encrypts and sends them.

    ``drain()`` waits while the socket's write buffer is above its high-water mark. Writes after
    the connection closed are dropped.
    """

    def __init__(self, link: TransportLink, peer: tuple[str, int]) -> None:
        self._link = link
        self._peer = peer
        self.is_closed = False

    def write(self, data: bytes) -> None:
        self._link.send_plain(data)

    def buffered(self) -> int:
        """Bytes written to this connection that the peer has not taken yet."""
        return self._link.buffered()

    async def drain(self) -> None:
        await self._link.drain()

    def get_peer_info(self) -> tuple[str, int]:
        return self._peer

    async def close(self) -> None:
        """Flush, send close_notify and wait until the socket is closed."""
        self.is_closed = True
        self._link.close()
        await self._link.wait_closed()
