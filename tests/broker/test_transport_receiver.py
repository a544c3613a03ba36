"""The transport's synchronous path: a receiver gets the plaintext in the transport's own
callback (no task per connection or per read), writes back, closes or aborts."""

import asyncio
from collections.abc import Callable

from broker.tls import build_server_context
from broker.tls_connection import TlsConnection
from broker.transport import start_tls_server
from nanoiot.settings import Settings
from tests.broker.tls_certs import ClientFiles, ServerPki
from tests.broker.transport_helpers import MIB


class Echo:
    def __init__(self, connection: TlsConnection, lost: asyncio.Event) -> None:
        self.connection = connection
        self.lost = lost
        self.calls: list[asyncio.Task[object] | None] = []

    def data_received(self, data: bytes) -> None:
        self.calls.append(asyncio.current_task())
        if data.startswith(b"abort"):
            self.connection.abort()
            return
        self.connection.write(data)

    def connection_lost(self) -> None:
        self.lost.set()


async def test_a_receiver_echoes_1mib_without_any_task(
    pki: ServerPki, client_ec: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    lost = asyncio.Event()
    receivers: list[Echo] = []

    def on_open(connection: TlsConnection) -> Echo:
        receivers.append(Echo(connection, lost))
        return receivers[-1]

    settings = tls_settings()
    server = await start_tls_server(
        build_server_context(settings), "127.0.0.1", 0, handshake_timeout=5.0, on_open=on_open
    )
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=pki.client_context(client_ec), server_hostname="localhost"
        )
        payload = bytes(range(256)) * (MIB // 256)
        writer.write(payload)
        assert await reader.readexactly(MIB) == payload
        (echo,) = receivers
        assert echo.calls
        assert set(echo.calls) == {None}  # called from the protocol, not from a task
        assert echo.connection.peer_certificate == client_ec.issued.cert
        writer.write(b"abort now")
        assert await reader.read() == b""  # the broker side cut the connection
        await asyncio.wait_for(lost.wait(), 5)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
