"""Shared pieces of the TLS transport tests: a server on a free port and tiny peers."""

import asyncio
import contextlib
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable

from broker.tls import build_server_context
from broker.transport import TlsConnection, TlsServer, start_tls_server
from nanoiot.settings import Settings
from tests.broker.tls_certs import ClientFiles, ServerPki

Handler = Callable[[TlsConnection], Awaitable[None]]
MIB = 1024 * 1024
# MQTT 3.1.1 §3.1: CONNECT for client id "dev1", clean session, keep-alive 60 s.
MQTT_CONNECT = b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04dev1"
CONNACK_OK = b"\x20\x02\x00\x00"  # MQTT 3.1.1 §3.2: session present 0, return code 0


@contextlib.asynccontextmanager
async def serving(settings: Settings, handler: Handler) -> AsyncIterator[TlsServer]:
    server = await start_tls_server(
        build_server_context(settings),
        "127.0.0.1",
        0,
        handler,
        handshake_timeout=settings.tls_handshake_timeout,
    )
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


async def read_mqtt_packet(conn: TlsConnection) -> tuple[int, bytes] | None:
    """One MQTT packet (MQTT 3.1.1 §2.2): (first byte, body), or None at end of stream."""
    first = await conn.reader.read(1)
    if not first:
        return None
    length, multiplier = 0, 1
    while True:
        byte = (await conn.reader.read(1))[0]
        length += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            break
        multiplier *= 128
    return first[0], await conn.reader.read(length)


async def echoed(port: int, context: ssl.SSLContext, data: bytes) -> None:
    """A new connection to an echoing server (``echo``) on ``port`` gets ``data`` back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    writer.write(data)
    assert await reader.readexactly(len(data)) == data
    writer.close()
    await writer.wait_closed()


def legacy_client_context(pki: ServerPki, client: ClientFiles) -> ssl.SSLContext:
    """A client that speaks TLS 1.0/1.1 only (its OpenSSL 3 needs security level 0 for it)."""
    ctx = pki.client_context(client, ciphers="DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the point of this client
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


async def echo(conn: TlsConnection) -> None:
    while data := await conn.reader.read_some():
        conn.writer.write(data)
        await conn.writer.drain()
