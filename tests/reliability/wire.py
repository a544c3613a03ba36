"""Clients that speak TLS and MQTT byte by byte, for what paho will not send.

``tls_attempt`` runs a handshake on a memory BIO over a plain socket, so after a failure the
test can still wait for the server to close the TCP connection: the broker logs why it
refused before it closes, so the log line is there once ``tls_attempt`` returns.
``RawMqtt`` is a blocking TLS socket for hand-made packets. ``run_case`` (asyncio) opens a
connection, optionally CONNECTs with a token, sends one fuzz packet and reports what the
broker did.
"""

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.e2e.harness import V311_RETURN_CODE, WAIT, Client
from tests.reliability.packets import CONNACK_ACCEPTED, connect

HOST = "127.0.0.1"


def client_context(
    server_cert: Path, certfile: Path | None = None, *, ciphers: str | None = None
) -> ssl.SSLContext:
    """A client that checks the broker's certificate, as devices do."""
    context = ssl.create_default_context(cafile=str(server_cert))
    if certfile is not None:
        context.load_cert_chain(str(certfile))
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


@dataclass
class Attempt:
    """How a TLS attempt ended: ``error`` is the client's view (None: handshake done)."""

    error: str | None
    local_port: int
    version: str | None
    closed_by_server: bool


def tls_attempt(
    port: int,
    context: ssl.SSLContext,
    first_bytes: bytes = b"",
    *,
    rewrite: Callable[[bytes], bytes] | None = None,
) -> Attempt:
    """Handshake, send ``first_bytes`` and read until the server closes the connection.

    ``rewrite`` may change the client's TLS records on their way out (see ``impostor``).
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection((HOST, port), timeout=WAIT) as raw:

        def flush() -> None:
            data = outgoing.read()
            raw.sendall(rewrite(data) if rewrite is not None and data else data)

        local_port = raw.getsockname()[1]
        error, version = None, None
        try:
            _pump(raw, tls, incoming, flush, tls.do_handshake)
            version = tls.version()
            if first_bytes:
                tls.write(first_bytes)
            # TLS 1.3: a refused client certificate only shows at the client's first read.
            while _pump(raw, tls, incoming, flush, lambda: tls.read(4096)):
                pass
        except (ssl.SSLError, ConnectionError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(OSError):
                flush()  # our alert, if the server still listens
        closed = _drain_until_closed(raw)
    return Attempt(error, local_port, version, closed)


def _pump(
    raw: socket.socket,
    tls: ssl.SSLObject,
    incoming: ssl.MemoryBIO,
    flush: Callable[[], None],
    step: Callable[[], bytes | None],
) -> bytes:
    """Run ``step`` until it has what it needs; b"" once the server closed TLS cleanly."""
    while True:
        try:
            result = step()
        except ssl.SSLWantReadError:
            flush()
            data = raw.recv(65536)
            if data:
                incoming.write(data)
            else:  # the next step raises the SSLError for an unexpected EOF
                incoming.write_eof()
            continue
        except ssl.SSLZeroReturnError:
            return b""
        flush()
        return b"handshake done" if result is None else result


def _drain_until_closed(raw: socket.socket) -> bool:
    try:
        while raw.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


class RawMqtt:
    """A blocking TLS connection for hand-made MQTT packets."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        raw = socket.create_connection((HOST, port), timeout=WAIT)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def closed_by_server(self) -> tuple[bool, bytes, float]:
        """(closed, bytes received before the close, seconds it took)."""
        started, received = time.monotonic(), b""
        try:
            while chunk := self.sock.recv(65536):
                received += chunk
        except (ConnectionResetError, ssl.SSLError):
            pass
        except TimeoutError:
            return False, received, time.monotonic() - started
        return True, received, time.monotonic() - started

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> "RawMqtt":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- asyncio, for the fuzzer ------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    port: int
    context: ssl.SSLContext
    token: str  # an ACCESS_TOKEN credential, for fuzzing after a valid CONNECT


async def run_case(
    target: Target, data: bytes, *, after_connect: bool, must_close: bool, client_id: str
) -> str | None:
    """Send ``data``; None if the broker behaved, else what went wrong."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(HOST, target.port, ssl=target.context, server_hostname="localhost"),
        WAIT,
    )
    try:
        if after_connect:
            writer.write(connect(client_id, username=target.token))
            connack = await asyncio.wait_for(reader.readexactly(4), WAIT)
            if connack != CONNACK_ACCEPTED:
                return f"CONNACK {connack.hex()} for a valid CONNECT"
        writer.write(data)
        if must_close and not await _closed_by_server(reader):
            return "connection not closed"
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), WAIT)


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        await asyncio.wait_for(reader.read(), WAIT)  # to end of stream
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return True


# --- paho, when the CONNACK flags or another protocol version matter -----------------------


@dataclass
class PahoProbe:
    """A paho client whose CONNACKs report (MQTT 3.1.1 return code, session present)."""

    client: Client
    connacks: "Queue[tuple[int, bool]]"

    def wait_connack(self) -> tuple[int, bool]:
        return self.connacks.get(timeout=WAIT)


def paho_probe(
    port: int,
    server_cert: Path,
    certfile: Path | None,
    *,
    client_id: str,
    clean_session: bool = True,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
) -> PahoProbe:
    """Like ``harness.mqtt_client``, also for MQTT 3.1 and 5, and keeping session present."""
    paho = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=None if protocol == MQTTProtocolVersion.MQTTv5 else clean_session,
        protocol=protocol,
        reconnect_on_failure=False,
    )
    probe = PahoProbe(Client(paho), Queue())
    paho.tls_set(ca_certs=str(server_cert), certfile=str(certfile) if certfile else None)

    def on_connect(_c: object, _u: object, flags: Any, code: ReasonCode, _p: object) -> None:
        rc = V311_RETURN_CODE.get(code.value, code.value)
        probe.connacks.put((rc, bool(flags.session_present)))

    client = probe.client
    paho.on_connect = on_connect
    paho.on_message = lambda _c, _u, message: client.messages.put(message)
    paho.on_subscribe = lambda _c, _u, _mid, codes, _p: client.subacks.put(list(codes))
    paho.on_disconnect = lambda *_args: client.disconnected.set()
    paho.connect_async(HOST, port, keepalive=60)
    paho.loop_start()
    return probe


async def run_batch(
    target: Target, cases: list[bytes], *, after_connect: bool, must_close: bool, tag: str
) -> list[str]:
    """Run ``cases`` concurrently (one connection each); what went wrong, per failing case."""
    results = await asyncio.gather(
        *(
            run_case(target, data, after_connect=after_connect, must_close=must_close,
                     client_id=f"{tag}-{index}")
            for index, data in enumerate(cases)
        ),
        return_exceptions=True,
    )  # fmt: skip
    return [
        f"{data.hex()[:80]}: {result!r}"
        for data, result in zip(cases, results, strict=True)
        if result is not None
    ]
