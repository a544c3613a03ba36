"""The pyOpenSSL TLS transport against real clients: stdlib ssl, paho-mqtt, openssl, mosquitto.

Everything runs on 127.0.0.1 with port 0; waits are on events or end of stream, never sleeps.
"""

import asyncio
import contextlib
import os
import random
import shutil
import socket
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from auth.fingerprint import spki_sha256
from broker.tls import build_server_context
from broker.transport import TlsConnection, TlsServer, start_tls_server
from nanoiot.settings import Settings
from tests.broker.tls_certs import ClientFiles, ServerPki, client_cert

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


# --- client certificates ---


@pytest.mark.parametrize("kind", ["ec", "rsa"])
async def test_unprovisioned_self_signed_cert_is_seen_exactly_and_echoes_1mib(
    kind: str,
    pki: ServerPki,
    client_ec: ClientFiles,
    client_rsa: ClientFiles,
    tls_settings: Callable[..., Settings],
) -> None:
    client = client_ec if kind == "ec" else client_rsa
    seen: list[TlsConnection] = []

    async def handler(conn: TlsConnection) -> None:
        seen.append(conn)
        await echo(conn)

    payload = random.Random(kind).randbytes(MIB)
    async with serving(tls_settings(), handler) as server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=pki.client_context(client)
        )

        async def send() -> None:
            for start in range(0, MIB, 100_000):  # not aligned with records or reads
                writer.write(payload[start : start + 100_000])
                await writer.drain()

        _, echoed = await asyncio.gather(send(), reader.readexactly(MIB))
        assert echoed == payload
        writer.close()
        await writer.wait_closed()

    (conn,) = seen
    assert conn.peer_certificate is not None
    assert spki_sha256(conn.peer_certificate.public_key()) == spki_sha256(
        client.issued.cert.public_key()
    )
    assert conn.peer_certificate == client.issued.cert
    assert conn.peer_chain == (client.issued.cert,)
    assert conn.tls_version == "TLSv1.3"
    assert conn.writer.get_ssl_info() is None
    assert conn.writer.get_peer_info() == conn.remote
    assert conn.writer.connection is conn
    assert conn.remote[0] == "127.0.0.1"


async def test_paho_mqtt_client_gets_connack(
    pki: ServerPki, client_ec: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    fingerprints: list[str] = []

    async def fake_broker(conn: TlsConnection) -> None:
        assert conn.peer_certificate is not None
        fingerprints.append(spki_sha256(conn.peer_certificate.public_key()))
        packet = await read_mqtt_packet(conn)
        assert packet is not None
        assert packet[0] == 0x10  # CONNECT
        conn.writer.write(CONNACK_OK)
        await conn.writer.drain()
        while await read_mqtt_packet(conn) is not None:  # DISCONNECT, then end of stream
            pass

    def run_paho(port: int) -> int:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dev1")
        client.tls_set(
            ca_certs=str(pki.ca_file),
            certfile=str(client_ec.cert_file),
            keyfile=str(client_ec.key_file),
            cert_reqs=ssl.CERT_REQUIRED,
        )
        codes: list[int] = []

        def on_connect(
            client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
        ) -> None:
            codes.append(rc.value)  # type: ignore[attr-defined]
            client.disconnect()

        client.on_connect = on_connect
        client.connect("127.0.0.1", port, keepalive=30)
        client.loop_forever()  # returns after the disconnect
        return codes[0]

    async with serving(tls_settings(), fake_broker) as server:
        assert await asyncio.to_thread(run_paho, server.port) == 0
    assert fingerprints == [spki_sha256(client_ec.issued.cert.public_key())]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_openssl_s_client(
    pki: ServerPki, client_rsa: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    seen: list[TlsConnection] = []

    async def greet(conn: TlsConnection) -> None:
        seen.append(conn)
        conn.writer.write(b"hello from nanoiot\n")
        await conn.writer.drain()

    async with serving(tls_settings(), greet) as server:
        proc = await asyncio.create_subprocess_exec(
            "openssl", "s_client", "-connect", f"127.0.0.1:{server.port}",
            "-CAfile", str(pki.ca_file), "-cert", str(client_rsa.cert_file),
            "-key", str(client_rsa.key_file), "-verify_return_error", "-quiet",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b"hello from nanoiot" in out
    assert seen[0].peer_certificate == client_rsa.issued.cert


@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="needs mosquitto-clients")
async def test_mosquitto_sub(
    pki: ServerPki, client_ec: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    async def fake_broker(conn: TlsConnection) -> None:
        assert conn.peer_certificate == client_ec.issued.cert
        packet = await read_mqtt_packet(conn)
        assert packet is not None
        assert packet[0] == 0x10
        conn.writer.write(CONNACK_OK)
        packet = await read_mqtt_packet(conn)
        assert packet is not None
        assert packet[0] == 0x82  # SUBSCRIBE (MQTT 3.1.1 §3.8)
        packet_id = packet[1][:2]
        conn.writer.write(b"\x90\x03" + packet_id + b"\x00")  # SUBACK, QoS 0 granted
        conn.writer.write(b"\x30\x0a\x00\x01tpayload")  # PUBLISH t "payload", QoS 0
        await conn.writer.drain()
        while await read_mqtt_packet(conn) is not None:
            pass

    async with serving(tls_settings(), fake_broker) as server:
        proc = await asyncio.create_subprocess_exec(
            "mosquitto_sub", "-h", "127.0.0.1", "-p", str(server.port), "-i", "dev1",
            "--cafile", str(pki.ca_file), "--cert", str(client_ec.cert_file),
            "--key", str(client_ec.key_file), "-t", "t", "-C", "1", "-W", "10",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out == b"payload\n"


@pytest.mark.slow
async def test_1000_distinct_certs_sharing_one_subject_dn(
    pki: ServerPki, tmp_path: Path, tls_settings: Callable[..., Settings]
) -> None:
    clients = [client_cert(tmp_path, "same-device-dn", name=f"c{i}") for i in range(1000)]
    seen: set[str] = set()

    async def record(conn: TlsConnection) -> None:
        assert conn.peer_certificate is not None
        seen.add(spki_sha256(conn.peer_certificate.public_key()))
        conn.writer.write(b"k")

    limit = asyncio.Semaphore(16)

    async def connect(port: int, client: ClientFiles) -> None:
        async with limit:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=pki.client_context(client)
            )
            assert await reader.read(1) == b"k"
            writer.close()
            await writer.wait_closed()

    async with serving(tls_settings(), record) as server:
        await asyncio.gather(*(connect(server.port, c) for c in clients))
    assert len({c.issued.cert.subject for c in clients}) == 1
    assert seen == {spki_sha256(c.issued.cert.public_key()) for c in clients}


# --- no client certificate ---


async def test_no_client_cert_is_accepted_when_not_required(
    pki: ServerPki, tls_settings: Callable[..., Settings]
) -> None:
    seen: list[TlsConnection] = []

    async def handler(conn: TlsConnection) -> None:
        seen.append(conn)
        await echo(conn)

    async with serving(tls_settings(require_client_certificate=False), handler) as server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=pki.client_context()
        )
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.close()
        await writer.wait_closed()
    assert seen[0].peer_certificate is None
    assert seen[0].peer_chain == ()


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["TLSv1.2", "TLSv1.3"]
)
async def test_no_client_cert_is_refused_when_required(
    version: ssl.TLSVersion, pki: ServerPki, tls_settings: Callable[..., Settings]
) -> None:
    called = asyncio.Event()

    async def handler(conn: TlsConnection) -> None:
        called.set()

    ctx = pki.client_context()
    ctx.maximum_version = version
    async with serving(tls_settings(require_client_certificate=True), handler) as server:
        # RFC 8446 §4.4.2.4: under TLS 1.3 the client has sent Finished before the server
        # refuses, so it may only see the certificate_required alert at its first read.
        with pytest.raises((ssl.SSLError, ConnectionResetError)):  # noqa: PT012
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx)
            data = await reader.read(1)
            writer.close()
            if not data:
                raise ConnectionResetError("closed without data")
    assert not called.is_set()


# --- protocol versions ---


async def test_tls_1_1_client_is_refused_by_default(
    pki: ServerPki, client_ec: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    async def handler(conn: TlsConnection) -> None:
        raise AssertionError("a TLS 1.1 client must not get through")

    async with serving(tls_settings(), handler) as server:
        with pytest.raises(ssl.SSLError):
            await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=legacy_client_context(pki, client_ec)
            )


async def test_tls_1_1_client_is_accepted_when_legacy_allowed(
    pki: ServerPki, client_ec: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    versions: list[str] = []

    async def handler(conn: TlsConnection) -> None:
        versions.append(conn.tls_version)
        await echo(conn)

    async with serving(tls_settings(tls_allow_legacy_protocols=True), handler) as server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=legacy_client_context(pki, client_ec)
        )
        writer.write(b"old")
        assert await reader.readexactly(3) == b"old"
        writer.close()
        await writer.wait_closed()
    assert versions == ["TLSv1.1"]


async def test_tls_1_3_minimum_refuses_a_tls_1_2_client(
    pki: ServerPki, client_ec: ClientFiles, tls_settings: Callable[..., Settings]
) -> None:
    async def handler(conn: TlsConnection) -> None:
        raise AssertionError("a TLS 1.2 client must not get through")

    ctx = pki.client_context(client_ec)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    async with serving(tls_settings(mqtt_ssl_protocol="TLSv1.3"), handler) as server:
        with pytest.raises(ssl.SSLError):
            await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx)


# --- misbehaving clients ---


async def test_silent_client_is_dropped_after_the_handshake_timeout(
    tls_settings: Callable[..., Settings],
) -> None:
    async def handler(conn: TlsConnection) -> None:
        raise AssertionError("no handshake happened")

    loop = asyncio.get_running_loop()
    async with serving(tls_settings(tls_handshake_timeout=0.3), handler) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = loop.time()
        async with asyncio.timeout(10):
            assert await reader.read() == b""
        assert loop.time() - started >= 0.25
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    "junk",
    [MQTT_CONNECT, b"\x00" + random.Random(7).randbytes(999), b"GET / HTTP/1.1\r\n\r\n"],
    ids=["plaintext-mqtt-connect", "random-bytes", "http"],
)
async def test_non_tls_bytes_close_the_connection_and_the_server_keeps_serving(
    junk: bytes,
    pki: ServerPki,
    client_ec: ClientFiles,
    tls_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="broker.transport")
    async with serving(tls_settings(), echo) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(junk)
        async with asyncio.timeout(10):
            answer = await reader.read()  # to end of stream
        assert answer == b"" or answer[0] == 0x15  # nothing, or a TLS alert record
        writer.close()
        await writer.wait_closed()

        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=pki.client_context(client_ec)
        )
        writer.write(b"still here")
        assert await reader.readexactly(10) == b"still here"
        writer.close()
        await writer.wait_closed()
    failures = [r for r in caplog.records if "handshake" in r.getMessage()]
    assert failures
    assert all(r.levelname == "DEBUG" and r.exc_info is None for r in failures)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_client_alert_closes_the_connection_and_the_server_keeps_serving(
    pki: ServerPki,
    client_ec: ClientFiles,
    tls_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="broker.transport")
    async with serving(tls_settings(), echo) as server:
        # Without our CA, s_client refuses our certificate with a fatal unknown_ca alert.
        proc = await asyncio.create_subprocess_exec(
            "openssl", "s_client", "-connect", f"127.0.0.1:{server.port}",
            "-CAfile", str(client_ec.cert_file), "-verify_return_error",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await proc.wait() != 0
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=pki.client_context(client_ec)
        )
        writer.write(b"ok")
        assert await reader.readexactly(2) == b"ok"
        writer.close()
        await writer.wait_closed()
    alerts = [r for r in caplog.records if "alert unknown ca" in r.getMessage()]
    assert alerts
    assert all(r.levelname == "DEBUG" and r.exc_info is None for r in alerts)


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
