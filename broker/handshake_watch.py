"""What a TLS connection keeps until its handshake completes: its deadline, what a failure
report needs, and a trusted load balancer's PROXY header.

``broker.transport`` makes one ``HandshakeWatch`` per accepted connection. It holds the
handshake's deadline, the client's first bytes (enough to tell a ClientHello's version or
plain MQTT apart, for ``broker.tls_failures``) and, on a connection from a trusted load
balancer, the PROXY protocol v2 header being read (``broker.proxy_protocol``): once that is
complete the client's address replaces the balancer's and the handshake gets its full time.
Every way a handshake fails ends in ``failed``, which hands it to the server's
``handshake_failed``.

No sockets and no OpenSSL calls: the transport feeds it and acts on what it answers.
"""

import asyncio
from collections.abc import Callable
from typing import Final, Protocol

from OpenSSL import SSL

from broker.proxy_protocol import HEADER_TIMEOUT, HeaderReader, ProxyHeaderError, TrustedProxies
from broker.tls_failures import FailureKind

__all__ = ["HandshakeFailed", "HandshakeWatch"]

# (peer address, how it ended, OpenSSL's error if any, the first bytes the client sent)
HandshakeFailed = Callable[
    [tuple[str, int], FailureKind, SSL.Error | ProxyHeaderError | None, bytes], None
]

# Enough of a failed client's first bytes to tell a ClientHello's version or plain MQTT.
_HELLO_KEPT: Final = 16


class Server(Protocol):
    """What a watch reads from the listening server (``broker.transport.TlsServer``)."""

    loop: asyncio.AbstractEventLoop
    handshake_timeout: float
    handshake_failed: HandshakeFailed
    proxy_trusted: TrustedProxies


class HandshakeWatch:
    __slots__ = ("_expired", "_hello", "_proxy", "_server", "_timer", "remote")

    def __init__(
        self, server: Server, remote: tuple[str, int], expired: Callable[[], None]
    ) -> None:
        """``expired`` is called once the deadline has passed and the failure is reported."""
        self.remote = remote
        self._server = server
        self._expired = expired
        self._hello = b""
        self._proxy = HeaderReader() if server.proxy_trusted.trusts(remote[0]) else None
        timeout = server.handshake_timeout
        if self._proxy is not None:
            timeout = min(timeout, HEADER_TIMEOUT)
        self._timer: asyncio.TimerHandle | None = server.loop.call_later(timeout, self._timed_out)

    def feed(self, data: bytes) -> bytes:
        """The bytes of ``data`` that are the client's TLS: all of them, or on a balancer's
        connection those after its PROXY header (b"" while that is incomplete). A bad header
        is reported, then raised (``ProxyHeaderError``)."""
        if self._proxy is not None:
            try:
                done = self._proxy.feed(data)
            except ProxyHeaderError as exc:
                self.failed(FailureKind.ERROR, exc)
                raise
            if done is None:
                return b""
            header, data = done
            self._proxy = None
            if header.source is not None:  # None: the balancer's own connection (LOCAL)
                self.remote = header.source
            self.done()
            self._timer = self._server.loop.call_later(
                self._server.handshake_timeout, self._timed_out
            )
        if len(self._hello) < _HELLO_KEPT:
            self._hello += data[: _HELLO_KEPT - len(self._hello)]
        return data

    def failed(self, kind: FailureKind, error: SSL.Error | ProxyHeaderError | None = None) -> None:
        """The handshake failed this way: report it (once the deadline is off)."""
        self.done()
        self._server.handshake_failed(self.remote, kind, error, self._hello)

    def done(self) -> None:
        """The handshake is over (completed, failed, or the connection closed): no deadline."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        error = self._proxy.timed_out() if self._proxy is not None else None
        self.failed(FailureKind.TIMEOUT, error)
        self._expired()
