"""A minimal MQTT 3.1.1 client for load generation: hand-made packets on an asyncio Protocol.

No paho, no streams, no task per packet: ``data_received`` splits the bytes into packets and
calls back; a batch of PUBLISH packets is one ``write``. Only what the benchmark sends and
receives is handled: CONNACK, SUBACK, PUBLISH (QoS 0 and 1, answered with PUBACK), PUBACK.
"""

import asyncio
import ssl
import struct
from collections.abc import Callable
from typing import cast

from bench.mqtt_load import connect_packet, remaining_length

CONNACK, PUBLISH, PUBACK, SUBACK = 2, 3, 4, 9
DISCONNECT = b"\xe0\x00"

OnPublish = Callable[[bytes, bytes], None]  # topic, payload


def subscribe_packet(topic: str, qos: int, packet_id: int = 1) -> bytes:
    """§3.8: SUBSCRIBE, fixed header flags 0b0010, one filter."""
    name = topic.encode()
    body = packet_id.to_bytes(2, "big") + len(name).to_bytes(2, "big") + name + bytes([qos])
    return b"\x82" + remaining_length(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, qos: int, packet_id: int) -> bytes:
    """§3.3: PUBLISH, no retain, no dup; a packet id only for QoS > 0."""
    head = len(topic).to_bytes(2, "big") + topic
    if qos:
        head += packet_id.to_bytes(2, "big")
    return bytes([0x30 | (qos << 1)]) + remaining_length(len(head) + len(payload)) + head + payload


class Handshakes(asyncio.Protocol):
    """A load generator's connection: its CONNACK, SUBACK and end as futures (the
    subclasses read the packets)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[int] = loop.create_future()
        self.suback: asyncio.Future[int] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.connack, self.suback):
            if not future.done():
                future.set_exception(ConnectionError(f"connection lost: {exc!r}"))
                future.exception()  # whoever awaits it sees it; nobody else must be told
        if not self.closed.done():
            self.closed.set_result(None)


class MqttClient(Handshakes):
    def __init__(self, on_publish: OnPublish | None = None) -> None:
        super().__init__()
        self.on_publish = on_publish
        self.pubacks = 0
        self.on_puback: Callable[[], None] | None = None
        self._next_id = 0

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        position, end = 0, len(buffer)
        acks: list[bytes] = []
        while end - position >= 2:
            # §2.2.3: remaining length, seven bits a byte, least significant first.
            length, multiplier, index, complete = 0, 1, position + 1, False
            while index < end:
                byte = buffer[index]
                index += 1
                length += (byte & 0x7F) * multiplier
                if byte < 0x80:
                    complete = True
                    break
                multiplier <<= 7
            if not complete or index + length > end:
                break
            kind = buffer[position] >> 4
            body = bytes(buffer[index : index + length])
            qos = (buffer[position] >> 1) & 3
            position = index + length
            if kind == PUBLISH:
                self._publish(body, qos, acks)
            elif kind == PUBACK:
                self.pubacks += 1
                if self.on_puback is not None:
                    self.on_puback()
            elif kind == CONNACK and not self.connack.done():
                self.connack.set_result(body[1])
            elif kind == SUBACK and not self.suback.done():
                self.suback.set_result(body[-1])
        del buffer[:position]
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))

    def _publish(self, body: bytes, qos: int, acks: list[bytes]) -> None:
        size = (body[0] << 8) | body[1]
        topic = body[2 : 2 + size]
        start = 2 + size
        if qos:
            acks.append(b"\x40\x02" + body[start : start + 2])
            start += 2
        if self.on_publish is not None:
            self.on_publish(topic, body[start:])

    def packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


async def connect(
    port: int,
    context: ssl.SSLContext,
    client_id: str,
    on_publish: OnPublish | None = None,
    keep_alive: int = 0,
) -> MqttClient:
    """mTLS connection, CONNECT, CONNACK 0; raises otherwise."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: MqttClient(on_publish),
        "127.0.0.1",
        port,
        ssl=context,
        server_hostname="localhost",
    )
    client.write(connect_packet(client_id, keep_alive))
    code = await client.connack
    if code != 0:
        raise RuntimeError(f"CONNACK {code} for {client_id}")
    return client


def client_context(ca_file: str, pem_file: str) -> ssl.SSLContext:
    """A client TLS context: verify the server against ``ca_file``, present ``pem_file``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca_file)
    context.load_cert_chain(pem_file)
    return context


# Publisher index, sequence number, send time (CLOCK_MONOTONIC ns): 64 bytes.
PAYLOAD = struct.Struct(">IIq48x")
