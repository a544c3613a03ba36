"""PROXY protocol v2 on the real TLS listener: a trusted balancer's header names the client,
anyone else's header fails the handshake; a client shut out is dropped before any TLS work,
at accept or behind a balancer once its header names it. Real TLS clients on 127.0.0.1, port
0; every wait is on an event with a bound."""

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from OpenSSL import SSL

from broker.proxy_protocol import SIGNATURE, ProxyHeaderError, TrustedProxies
from broker.tls import build_server_context
from broker.tls_failures import FailureKind, TlsFailureReason, classify
from broker.transport import TlsConnection, TlsServer, start_tls_server
from nanoiot.settings import Settings
from tests.broker.proxy_headers import v2_header
from tests.broker.tls_certs import ClientFiles, ServerPki
from tests.broker.transport_helpers import echo

WAIT = 10.0


@dataclass
class Seen:
    remotes: "asyncio.Queue[tuple[str, int]]" = field(default_factory=asyncio.Queue)
    failures: "asyncio.Queue[tuple[tuple[str, int], TlsFailureReason, str]]" = field(
        default_factory=asyncio.Queue
    )

    def failed(
        self,
        remote: tuple[str, int],
        kind: FailureKind,
        error: SSL.Error | ProxyHeaderError | None,
        first_bytes: bytes,
    ) -> None:
        failure = classify(kind, error, first_bytes)
        self.failures.put_nowait((remote, failure.reason, failure.text))

    async def handler(self, conn: TlsConnection) -> None:
        self.remotes.put_nowait(conn.remote)
        await echo(conn)


@contextlib.asynccontextmanager
async def listening(
    settings: Settings,
    trusted: list[str],
    seen: Seen,
    shut_out: Callable[[str], bool] | None = None,
) -> AsyncIterator[TlsServer]:
    server = await start_tls_server(
        build_server_context(settings),
        "127.0.0.1",
        0,
        seen.handler,
        handshake_timeout=settings.tls_handshake_timeout,
        handshake_failed=seen.failed,
        proxy_trusted=TrustedProxies(trusted),
        shut_out=shut_out,
    )
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


async def tls_after(
    port: int, prefix: bytes, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect from 127.0.0.1, send ``prefix`` in the clear, then run TLS on the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.setblocking(False)
    if prefix:
        await asyncio.get_running_loop().sock_sendall(sock, prefix)
    return await asyncio.wait_for(
        asyncio.open_connection(sock=sock, ssl=context, server_hostname="localhost"), WAIT
    )


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), WAIT) == b"ping"
    writer.close()
    with contextlib.suppress(ssl.SSLError, ConnectionError):
        await writer.wait_closed()


@pytest.fixture
def client_context(pki: ServerPki, client_ec: ClientFiles) -> ssl.SSLContext:
    return pki.client_context(client_ec)


async def test_a_trusted_balancer_header_makes_the_client_the_remote(
    tls_settings: Callable[..., Settings], client_context: ssl.SSLContext
) -> None:
    seen = Seen()
    async with listening(tls_settings(), ["127.0.0.0/8"], seen) as server:
        header = v2_header(source=("203.0.113.7", 40001), destination=("127.0.0.1", server.port))
        await round_trip(*await tls_after(server.port, header, client_context))
        assert await asyncio.wait_for(seen.remotes.get(), WAIT) == ("203.0.113.7", 40001)
        ipv6 = v2_header(family=0x21, source=("2001:db8::7", 5), destination=("::1", 8883))
        await round_trip(*await tls_after(server.port, ipv6, client_context))
        assert await asyncio.wait_for(seen.remotes.get(), WAIT) == ("2001:db8::7", 5)
    assert seen.failures.empty()


async def test_local_command_keeps_the_socket_address(
    tls_settings: Callable[..., Settings], client_context: ssl.SSLContext
) -> None:
    seen = Seen()
    async with listening(tls_settings(), ["127.0.0.1"], seen) as server:
        local = v2_header(command=0x0, family=0x00, body=b"")
        reader, writer = await tls_after(server.port, local, client_context)
        own_port = writer.get_extra_info("sockname")[1]
        await round_trip(reader, writer)
        assert await asyncio.wait_for(seen.remotes.get(), WAIT) == ("127.0.0.1", own_port)


async def test_a_trusted_address_without_a_header_fails_the_handshake(
    tls_settings: Callable[..., Settings], client_context: ssl.SSLContext
) -> None:
    """From a listed balancer the header is required: a receiver must not guess."""
    seen = Seen()
    async with listening(tls_settings(), ["127.0.0.1"], seen) as server:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await tls_after(server.port, b"", client_context)
        remote, reason, text = await asyncio.wait_for(seen.failures.get(), WAIT)
        assert remote[0] == "127.0.0.1"
        assert reason is TlsFailureReason.PROXY_HEADER
        assert "no PROXY protocol v2 header (first bytes 1603" in text
    assert seen.remotes.empty()


async def test_a_header_from_an_untrusted_address_fails_the_handshake(
    tls_settings: Callable[..., Settings], client_context: ssl.SSLContext
) -> None:
    """Only listed balancers may name a client: 127.0.0.1 is not 127.0.0.2."""
    seen = Seen()
    async with listening(tls_settings(), ["127.0.0.2"], seen) as server:
        header = v2_header(destination=("127.0.0.1", server.port))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await tls_after(server.port, header, client_context)
        remote, reason, _ = await asyncio.wait_for(seen.failures.get(), WAIT)
        assert remote[0] == "127.0.0.1"
        assert reason is TlsFailureReason.PROXY_UNTRUSTED
        # The same client without a header is an ordinary TLS client.
        reader, writer = await tls_after(server.port, b"", client_context)
        own_port = writer.get_extra_info("sockname")[1]
        await round_trip(reader, writer)
        assert await asyncio.wait_for(seen.remotes.get(), WAIT) == ("127.0.0.1", own_port)


async def test_proxy_headers_are_refused_when_no_balancer_is_configured(
    tls_settings: Callable[..., Settings], client_context: ssl.SSLContext
) -> None:
    seen = Seen()
    async with listening(tls_settings(), [], seen) as server:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await tls_after(server.port, v2_header(), client_context)
        _, reason, _ = await asyncio.wait_for(seen.failures.get(), WAIT)
        assert reason is TlsFailureReason.PROXY_UNTRUSTED


async def test_an_incomplete_header_times_out(tls_settings: Callable[..., Settings]) -> None:
    seen = Seen()
    settings = tls_settings(tls_handshake_timeout=0.5)
    async with listening(settings, ["127.0.0.1"], seen) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(SIGNATURE[:7])
        _, reason, text = await asyncio.wait_for(seen.failures.get(), WAIT)
        assert reason is TlsFailureReason.PROXY_HEADER
        assert "(7 bytes came)" in text
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed by the broker
        writer.close()


async def test_an_oversized_header_is_refused_at_once(
    tls_settings: Callable[..., Settings],
) -> None:
    seen = Seen()
    async with listening(tls_settings(), ["127.0.0.1"], seen) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(SIGNATURE + b"\x21\x11\xff\xff")  # claims 65,535 more bytes
        _, reason, text = await asyncio.wait_for(seen.failures.get(), WAIT)
        assert reason is TlsFailureReason.PROXY_HEADER
        assert "over the limit" in text
        assert await asyncio.wait_for(reader.read(), WAIT) == b""
        writer.close()


@pytest.fixture
def ssl_objects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the OpenSSL connection objects the listener makes."""
    made: list[str] = []

    class Counted(SSL.Connection):
        def __init__(self, context: SSL.Context, sock: None = None) -> None:
            made.append("made")
            super().__init__(context, sock)

    monkeypatch.setattr(SSL, "Connection", Counted)  # broker.tls_protocol looks it up there
    return made


async def test_a_client_shut_out_is_dropped_before_any_tls_work(
    tls_settings: Callable[..., Settings],
    client_context: ssl.SSLContext,
    ssl_objects: list[str],
) -> None:
    seen, shut = Seen(), {"127.0.0.1"}
    async with listening(tls_settings(), [], seen, shut_out=shut.__contains__) as server:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await tls_after(server.port, b"", client_context)
        assert ssl_objects == []  # not even an SSL object made for it
        shut.clear()
        await round_trip(*await tls_after(server.port, b"", client_context))
        assert await asyncio.wait_for(seen.remotes.get(), WAIT)
        assert ssl_objects == ["made"]
    assert seen.failures.empty()  # a drop is not a failed handshake


async def test_behind_a_balancer_the_client_named_is_screened_before_any_tls_work(
    tls_settings: Callable[..., Settings],
    client_context: ssl.SSLContext,
    ssl_objects: list[str],
) -> None:
    seen = Seen()
    shut_out = {"2001:db8:1:2::66"}.__contains__
    async with listening(tls_settings(), ["127.0.0.1"], seen, shut_out=shut_out) as server:
        attacker = v2_header(family=0x21, source=("2001:db8:1:2::66", 5), destination=("::1", 1))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await tls_after(server.port, attacker, client_context)
        assert ssl_objects == []
        other = v2_header(family=0x21, source=("2001:db8:1:3::7", 5), destination=("::1", 1))
        await round_trip(*await tls_after(server.port, other, client_context))
        assert await asyncio.wait_for(seen.remotes.get(), WAIT) == ("2001:db8:1:3::7", 5)
        assert ssl_objects == ["made"]
    assert seen.failures.empty()
