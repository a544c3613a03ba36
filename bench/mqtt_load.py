"""The benchmarks' MQTT load generator: raw MQTT 3.1.1 CONNECT/CONNACK/DISCONNECT over mTLS,
a bounded number in flight (paho is too slow to measure a broker with)."""

import asyncio
import contextlib
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.broker_process import HOST, WAIT_S, Broker

CONNACK_ACCEPTED = b"\x20\x02\x00\x00"  # MQTT 3.1.1 §3.2: session present 0, return code 0
DISCONNECT = b"\xe0\x00"


@dataclass(frozen=True)
class RealDevice:
    name: str
    cert_pem: str
    pem_file: Path  # private key then certificate, in the run's temporary directory


def connect_packet(client_id: str, keep_alive: int = 60) -> bytes:
    """MQTT 3.1.1 CONNECT (§3.1): clean session, no will, no user name or password."""
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02" + keep_alive.to_bytes(2, "big")
    payload = len(cid).to_bytes(2, "big") + cid
    return b"\x10" + remaining_length(len(variable) + len(payload)) + variable + payload


def remaining_length(value: int) -> bytes:
    """§2.2.3: seven bits a byte, least significant first, at most four bytes."""
    if not 0 <= value < 128**4:
        raise ValueError(f"remaining length {value} out of range")
    encoded = bytearray()
    for _ in range(4):
        value, digit = divmod(value, 128)
        encoded.append(digit | (0x80 if value else 0))
        if not value:
            break
    return bytes(encoded)


@dataclass(frozen=True)
class Client:
    name: str
    context: ssl.SSLContext


def clients_for(devices: Sequence[RealDevice], broker: Broker) -> list[Client]:
    """One TLS client context per device, trusting only the broker's certificate."""
    clients = []
    for device in devices:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(broker.server_cert)
        context.load_cert_chain(device.pem_file)
        clients.append(Client(device.name, context))
    return clients


async def connect_once(port: int, client: Client) -> str:
    """TLS handshake, CONNECT, CONNACK 0, DISCONNECT, close; returns the TLS version."""
    async with asyncio.timeout(WAIT_S):
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=client.context, server_hostname="localhost"
        )
        try:
            version = str(writer.get_extra_info("ssl_object").version())
            writer.write(connect_packet(client.name))
            connack = await reader.readexactly(4)
            if connack != CONNACK_ACCEPTED:
                raise RuntimeError(f"CONNACK {connack.hex()} for {client.name}")
            writer.write(DISCONNECT)
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await writer.wait_closed()
    return version


@dataclass
class Tally:
    connected: set[str] = field(default_factory=set)
    connects: int = 0
    failures: int = 0
    first_error: str = ""
    tls_version: str = ""


async def drive(port: int, clients: Iterator[Client], count: int, concurrency: int) -> Tally:
    """``count`` connects, taking clients in turn, at most ``concurrency`` in flight."""
    tally = Tally()
    jobs = iter(range(count))

    async def worker() -> None:
        for _ in jobs:
            client = next(clients)
            try:
                tally.tls_version = await connect_once(port, client)
            except (OSError, RuntimeError, TimeoutError, asyncio.IncompleteReadError) as exc:
                tally.failures += 1
                tally.first_error = tally.first_error or f"{client.name}: {exc!r}"
            else:
                tally.connected.add(client.name)
            tally.connects += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally
