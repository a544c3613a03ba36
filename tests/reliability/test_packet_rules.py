"""The packet rules and the CONNECT parser on their own: bytes in, verdict out, no broker."""

import pytest

from auth.connack import ConnackCode
from broker.mqtt.connection import Connection
from broker.mqtt.events import ConnectionRefused, Event, ProtocolViolation
from broker.mqtt.limits import Limits
from broker.mqtt.packets import Connect, Will
from broker.mqtt.session import Session
from tests.reliability import packets


def _connect(data: bytes) -> tuple[list[Event], bytes]:
    connection = Connection(Limits(max_packet_size=1024))
    events = connection.receive_data(data, 0.0)
    return events, connection.data_to_send()


def test_connect_fields_are_read_exactly() -> None:
    data = packets.connect(
        "", username="ünï", password=b"pw", keep_alive=30, will=("v1/devices/me/s", b"\x00bye")
    )
    events, answer = _connect(data)
    assert answer == b""
    assert events == [
        Connect(4, "", True, 30, "ünï", b"pw", Will("v1/devices/me/s", b"\x00bye", 0, False))
    ]


@pytest.mark.parametrize(
    ("data", "code", "reason"),
    [
        (packets.connect("c", level=6), ConnackCode.UNACCEPTABLE_PROTOCOL, "level 6"),
        (packets.connect("c", name=b"MQIsdp", level=4), ConnackCode.UNACCEPTABLE_PROTOCOL,
         "'MQIsdp' level 4"),
        (packets.connect("", clean_session=False), ConnackCode.IDENTIFIER_REJECTED, "empty"),
        (packets.connect("x" * 24, name=b"MQIsdp", level=3), ConnackCode.IDENTIFIER_REJECTED,
         "1 to 23"),
        (packets.connect("c", password=b"pw"), None,
         "Password flag set without the User Name flag (§3.1.2.9)"),
        (packets.connect("c", extra=b"!"), None, "1 bytes after the CONNECT payload"),
        (packets.connect("c", name=b"MQTX"), None, "is not 'MQTT'"),
        (packets.connect("c\x00"), None, "U+0000"),
        (packets.publish("t"), None, "not CONNECT"),
        (b"\x10" + packets.remaining_length(2000), None, "exceeds max_packet_size 1024"),
    ],
)  # fmt: skip
def test_connect_refusals(data: bytes, code: ConnackCode | None, reason: str) -> None:
    events, answer = _connect(data)
    [event] = events
    if code is None:
        assert isinstance(event, ProtocolViolation)
        assert reason in event.reason
    else:
        assert isinstance(event, ConnectionRefused)
        assert event.return_code == code
        assert reason in event.reason
    assert answer == (b"" if code is None else bytes([0x20, 2, 0, code]))


def test_a_connect_cut_short_waits_for_the_rest() -> None:
    events, answer = _connect(b"\x10\x0a\x00\x04MQ")
    assert (events, answer) == ([], b"")


def test_packets_are_served_whole_then_a_violation_ends_the_stream() -> None:
    connection = Connection(Limits())
    connection.receive_data(packets.connect("c"), 0.0)
    connection.accept(Session("c", persistent=False), session_present=False)
    stream = packets.PINGREQ_PACKET + packets.publish("a", b"x") + b"\xf0\x00" + b"\xc0\x00"
    events = connection.receive_data(stream, 0.0)
    assert [type(event).__name__ for event in events] == ["Publish", "ProtocolViolation"]
    violation = events[-1]
    assert isinstance(violation, ProtocolViolation)
    assert "reserved type 15" in violation.reason
    assert connection.data_to_send().endswith(packets.PINGRESP_PACKET)  # the PINGREQ before it
