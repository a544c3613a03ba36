"""The pyOpenSSL TLS transport against real clients: stdlib ssl, paho-mqtt, openssl, mosquitto.

Everything runs on 127.0.0.1 with port 0; waits are on events or end of stream, never sleeps.
"""

import asyncio
import random
import shutil
import ssl
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from auth.fingerprint import spki_sha256
from broker.transport import TlsConnection
from nanoiot.settings import Settings
from tests.broker.tls_certs import ClientFiles, ServerPki, client_cert
from tests.broker.transport_helpers import (
    CONNACK_OK,
    MIB,
    MQTT_CONNECT,
    echo,
    echoed,
    legacy_client_context,
    read_mqtt_packet,
    serving,
)

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
    assert conn.writer.get_peer_info() == conn.remote
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
    caplog.set_level("DEBUG", logger="broker.tls_failures")
    async with serving(tls_settings(), echo) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(junk)
        async with asyncio.timeout(10):
            answer = await reader.read()  # to end of stream
        assert answer == b"" or answer[0] == 0x15  # nothing, or a TLS alert record
        writer.close()
        await writer.wait_closed()

        await echoed(server.port, pki.client_context(client_ec), b"still here")
    failures = [r for r in caplog.records if "handshake" in r.getMessage()]
    assert failures
    assert all(r.levelname == "INFO" and r.exc_info is None for r in failures)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_client_alert_closes_the_connection_and_the_server_keeps_serving(
    pki: ServerPki,
    client_ec: ClientFiles,
    tls_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="broker.tls_failures")
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
        await echoed(server.port, pki.client_context(client_ec), b"ok")
    alerts = [r for r in caplog.records if "does not trust our certificate" in r.getMessage()]
    assert alerts
    assert all(r.levelname == "INFO" and r.exc_info is None for r in alerts)
