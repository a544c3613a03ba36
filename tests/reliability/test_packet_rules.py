"""The packet rules and the CONNECT parser on their own: bytes in, verdict out, no broker."""

import asyncio

import pytest
from amqtt.adapters import BufferReader, WriterAdapter

from auth.decision import ConnackCode
from broker.connect import Connect, ConnectRefused, read_connect
from broker.framing import PacketReader
from broker.packet_rules import body_problem, header_problem
from tests.reliability import packets


@pytest.mark.parametrize(
    ("first_byte", "connected", "problem"),
    [
        (0x10, False, None),
        (0x30, False, "first packet is PUBLISH, not CONNECT"),
        (0x10, True, "second CONNECT"),
        (0x36, True, "QoS 3"),
        (0x38, True, "DUP set at QoS 0"),
        (0x3B, True, None),  # DUP, QoS 1, RETAIN
        (0x62, True, None),  # PUBREL, flags 0b0010
        (0x60, True, "PUBREL with fixed-header flags 0b0000"),
        (0x80, True, "SUBSCRIBE with fixed-header flags 0b0000"),
        (0x90, True, "SUBACK may not be sent by a client"),
        (0x00, True, "reserved type 0"),
        (0xF0, True, "reserved type 15"),
    ],
)
def test_header_rules(first_byte: int, connected: bool, problem: str | None) -> None:
    found = header_problem(first_byte, connected=connected)
    assert (found is None) == (problem is None)
    assert problem is None or problem in str(found)


@pytest.mark.parametrize(
    ("packet", "problem"),
    [
        (packets.publish("a/b", b"\x00\xff payload is binary", qos=1), None),
        (packets.publish("a/+"), "wildcards"),
        (packets.publish(b"a/\xed\xa0\x80"), "not valid UTF-8"),  # an encoded surrogate
        (packets.publish(b"\xc0\xaf"), "not valid UTF-8"),  # overlong '/'
        (packets.subscribe(("a/#", 2), ("+/b", 0)), None),
        (packets.subscribe(("a", 0x41)), "requested QoS byte 0x41"),
        (packets.unsubscribe("a", packet_id=7), None),
        (b"\x40\x02\x00\x01", None),  # PUBACK
        (b"\xe0\x00", None),  # DISCONNECT
        (b"\xe0\x01\x00", "remaining length must be 0"),
    ],
)
def test_body_rules(packet: bytes, problem: str | None) -> None:
    found = body_problem(packet[0], packet[2:])  # every packet here has a 1-byte length
    assert (found is None) == (problem is None), found
    assert problem is None or problem in str(found)


class _Sink(WriterAdapter):  # type: ignore[misc]  # amqtt has no type hints
    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        pass

    def get_peer_info(self) -> tuple[str, int]:
        return ("127.0.0.1", 1)

    def get_ssl_info(self) -> None:
        return None

    async def close(self) -> None:
        pass


def _connect(data: bytes) -> tuple[Connect | ConnectRefused, bytes]:
    sink = _Sink()

    async def run() -> Connect:
        return await read_connect(BufferReader(data), sink, 1.0, 1024)

    try:
        return asyncio.run(run()), sink.written
    except ConnectRefused as refused:
        return refused, sink.written


def test_connect_fields_are_read_exactly() -> None:
    data = packets.connect(
        "", username="ünï", password=b"pw", keep_alive=30, will=("v1/devices/me/s", b"\x00bye")
    )
    connect, answer = _connect(data)
    assert answer == b""
    assert connect == Connect(
        client_id="", clean_session=True, keep_alive=30, username="ünï", password="pw",
        will_topic="v1/devices/me/s", will_message=b"\x00bye", will_qos=0, will_retain=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("data", "code", "reason"),
    [
        (packets.connect("c", level=5), ConnackCode.UNACCEPTABLE_PROTOCOL, "level 5"),
        (packets.connect("c", name=b"MQIsdp", level=3), ConnackCode.UNACCEPTABLE_PROTOCOL, "3"),
        (packets.connect("", clean_session=False), ConnackCode.IDENTIFIER_REJECTED, "empty"),
        (packets.connect("c", username="u", password=b"\xff"), ConnackCode.BAD_USERNAME_OR_PASSWORD,
         "not UTF-8"),
        (packets.connect("c", extra=b"!"), None, "1 bytes after the CONNECT payload"),
        (packets.connect("c", name=b"MQTX"), None, "is not 'MQTT'"),
        (packets.connect("c\x00"), None, "U+0000"),
        (packets.publish("t"), None, "not CONNECT"),
        (b"\x10" + packets.remaining_length(2000), None, "exceeds max_packet_size 1024"),
        (b"\x10\x0a\x00\x04MQ", None, "closed inside the CONNECT"),
    ],
)  # fmt: skip
def test_connect_refusals(data: bytes, code: ConnackCode | None, reason: str) -> None:
    refused, answer = _connect(data)
    assert isinstance(refused, ConnectRefused)
    assert refused.code == code
    assert reason in str(refused)
    assert answer == (b"" if code is None else bytes([0x20, 2, 0, code]))


def test_packet_reader_serves_whole_packets_then_ends_at_a_violation() -> None:
    stream = packets.PINGREQ_PACKET + packets.publish("a", b"x") + b"\xf0\x00" + b"\xc0\x00"

    async def read_all() -> tuple[list[bytes], str | None]:
        reader = PacketReader(BufferReader(stream), 1024, "test client")
        seen = []
        while first := await reader.read(1):
            seen.append(first + await reader.read(-1))
        return seen, reader.violation

    seen, violation = asyncio.run(read_all())
    assert seen == [packets.PINGREQ_PACKET, packets.publish("a", b"x")]
    assert violation is not None
    assert "reserved type 15" in violation
