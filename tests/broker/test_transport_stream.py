"""The TLS transport's stream behaviour and lifecycle: exact reads, close_notify, backpressure,
no leaked tasks or descriptors, resumed sessions. 127.0.0.1, port 0, no sleeps.
"""

import asyncio
import os
import socket
import ssl
from collections.abc import Callable

import pytest

from broker.tls import build_server_context
from broker.transport import TlsConnection, start_tls_server
from nanoiot.settings import Settings
from tests.broker.tls_certs import ClientFiles, ServerPki
from tests.broker.transport_helpers import (
    MIB,
    serving,
)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_close_leaves_no_task_and_no_connection(
    pki: ServerPki, client_ec: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    before = asyncio.all_tasks()
    fds = open_fds()
    entered = asyncio.Event()

    async def waits_forever(conn: TlsConnection) -> None:
        entered.set()
        await conn.reader.read(1)  # until the server closes the connection

    server = await start_tls_server(
        build_server_context(tls_settings()), "127.0.0.1", 0, waits_forever, handshake_timeout=5
    )
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", server.port, ssl=pki.client_context(client_ec)
    )
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", server.port)
    await entered.wait()
    server.close()
    await server.wait_closed()
    assert asyncio.all_tasks() == before
    assert not server.protocols
    assert await reader.read() == b""  # close_notify, then end of stream
    assert await silent_reader.read() == b""
    for w in (writer, silent_writer):
        w.close()
        await w.wait_closed()
    assert open_fds() == fds


async def test_a_failing_handler_is_logged_and_its_connection_closed(
    pki: ServerPki,
    client_ec: ClientFiles,
    tls_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(conn: TlsConnection) -> None:
        raise RuntimeError("bug in handler")

    async with serving(tls_settings(), broken) as server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=pki.client_context(client_ec)
        )
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
    assert any(r.exc_info and "bug in handler" in str(r.exc_info[1]) for r in caplog.records)


# --- stream semantics ---


async def test_reads_are_exact_and_past_end_of_stream_give_empty_bytes(
    pki: ServerPki, client_ec: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    reads: list[bytes] = []
    done = asyncio.Event()

    async def handler(conn: TlsConnection) -> None:
        reads.extend([await conn.reader.read(3), await conn.reader.read(10)])
        reads.extend([await conn.reader.read(1), await conn.reader.read(-1)])
        done.set()

    async with serving(tls_settings(), handler) as server:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=pki.client_context(client_ec)
        )
        writer.write(b"abc")
        await writer.drain()
        writer.write(b"defg")
        writer.close()  # close_notify: end of stream for the server
        await writer.wait_closed()
        await done.wait()
    assert reads == [b"abc", b"defg", b"", b""]


async def test_close_sends_close_notify(
    pki: ServerPki, client_ec: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    async def say_bye(conn: TlsConnection) -> None:
        conn.writer.write(b"bye")
        await conn.writer.close()

    def blocking_client(port: int) -> tuple[bytes, bytes]:
        ctx = pki.client_context(client_ec)
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as tls,
        ):
            data = tls.recv(10)
            # Without close_notify, the ssl module raises SSLEOFError here (RFC 8446 §6.1).
            return data, tls.recv(10)

    async with serving(tls_settings(), say_bye) as server:
        assert await asyncio.to_thread(blocking_client, server.port) == (b"bye", b"")


async def test_drain_waits_while_the_peer_does_not_read(
    pki: ServerPki, client_ec: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    blocked = asyncio.Event()
    sent = 0
    chunk = os.urandom(64 * 1024)

    async def flood(conn: TlsConnection) -> None:
        nonlocal sent
        while sent < 64 * MIB:  # far beyond what the socket buffers hold
            conn.writer.write(chunk)
            sent += len(chunk)
            drain = asyncio.ensure_future(conn.writer.drain())
            await asyncio.sleep(0)  # one turn of the loop, not a timed wait
            if not drain.done():
                blocked.set()
                await drain
                await conn.writer.close()
                return
            await drain
        blocked.set()  # drain never waited: the assertion below fails
        await conn.writer.close()

    async with serving(tls_settings(), flood) as server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=pki.client_context(client_ec)
        )
        async with asyncio.timeout(20):
            await blocked.wait()
        assert sent < 64 * MIB  # bounded by the socket buffers, not by memory
        received = len(await reader.read())  # read everything: the server's drain returns
        assert received == sent
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["TLSv1.2", "TLSv1.3"]
)
async def test_resumed_session_still_reports_the_client_certificate(
    version: ssl.TLSVersion,
    pki: ServerPki,
    client_ec: ClientFiles,
    tls_settings: Callable[..., Settings],
) -> None:
    seen: list[TlsConnection] = []

    async def handler(conn: TlsConnection) -> None:
        seen.append(conn)
        conn.writer.write(b"x")
        await conn.reader.read(1)

    def two_connections(port: int) -> list[bool]:
        ctx = pki.client_context(client_ec)
        ctx.maximum_version = version
        session = None
        reused = []
        for _ in range(2):
            with (
                socket.create_connection(("127.0.0.1", port)) as raw,
                ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
            ):
                assert tls.recv(1) == b"x"  # TLS 1.3 tickets arrive with the first data
                reused.append(bool(tls.session_reused))
                session = tls.session
        return reused

    async with serving(tls_settings(), handler) as server:
        assert await asyncio.to_thread(two_connections, server.port) == [False, True]
    assert [c.peer_certificate for c in seen] == [client_ec.issued.cert] * 2
