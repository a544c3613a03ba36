"""The core's codec: each MUST on a packet's form, the fast PUBLISH encoder and the variable
byte integers. Every packet both ways as the standard's bytes: ``test_standard_bytes_3_1_1``
and ``test_standard_bytes_5``."""

import pytest

from auth.connack import ConnackCode
from broker.mqtt.codes import Reason
from broker.mqtt.decode import decode_connect, protocol_problem, read_protocol
from broker.mqtt.encode import encode, encode_publish
from broker.mqtt.events import ProtocolViolation
from broker.mqtt.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Connect,
    Publish,
    Suback,
    Subscribe,
)
from broker.mqtt.properties import Properties, Property
from broker.mqtt.rules import header_problem
from broker.mqtt.wire import Reader, varint
from nanoiot.errors import ConnectRefused, MalformedPacket, ProtocolError
from tests.broker.mqtt.wire_helpers import connected, decoded, packets_in


def test_encode_publish_matches_the_standard() -> None:
    # §3.3: fixed header 0x30 | DUP << 3 | QoS << 1 | retain, remaining length, topic, id.
    assert encode_publish(b"a/b", b"hi", 0, 0) == b"\x30\x07\x00\x03a/bhi"
    assert encode_publish(b"a/b", b"hi", 1, 258, retain=True) == b"\x33\x09\x00\x03a/b\x01\x02hi"
    assert encode_publish(b"t", b"", 2, 1, dup=True)[0] == 0x3C
    assert encode_publish(b"t", bytes(200), 0, 0)[:3] == b"\x30\xcb\x01"  # 203 (§2.2.3)
    assert encode_publish(b"t", b"", 1, 1, level=MQTT_5) == b"\x32\x06\x00\x01t\x00\x01\x00"


def test_variable_byte_integers_at_their_boundaries() -> None:
    # §2.2.3's table: 1 to 4 bytes.
    for value, size in [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3), (268_435_455, 4)]:
        encoded = varint(value)
        assert len(encoded) == size
        assert Reader(encoded).varint("n") == value
    with pytest.raises(MalformedPacket, match="longer than 4 bytes"):
        Reader(b"\xff\xff\xff\xff\x7f").varint("n")


def _publish(topic: bytes, qos: int = 0, packet_id: int = 1) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic + (packet_id.to_bytes(2, "big") if qos else b"")
    return bytes((0x30 | qos << 1,)) + varint(len(body)) + body


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (_publish(b"a/\xed\xa0\x80"), "not valid UTF-8"),  # an encoded surrogate, §1.5.3
        (_publish(b"\xc0\xaf"), "not valid UTF-8"),  # an overlong '/'
        (_publish(b"a\x00"), "U.0000"),
        (_publish(b""), "must not be empty"),  # §4.7.3
        (b"\x30\x05\x00\x05abc", "runs past"),
    ],
)
def test_malformed_publish(data: bytes, problem: str) -> None:
    with pytest.raises(MalformedPacket, match=problem):
        decoded(data, MQTT_3_1_1)


def test_a_wildcard_in_a_topic_name_is_a_protocol_error() -> None:
    # §3.3.2.1 [MQTT-3.3.2-2]: the packet parses; its data is not allowed (5.0 §1.2).
    with pytest.raises(ProtocolError, match="wildcards") as raised:
        decoded(_publish(b"a/+"), MQTT_3_1_1)
    assert not isinstance(raised.value, MalformedPacket)


@pytest.mark.parametrize(
    ("data", "error", "problem"),
    [
        (b"\x82\x06\x00\x01\x00\x01a\x41", MalformedPacket, "requested QoS byte 0x41"),
        (b"\x82\x02\x00\x01", ProtocolError, "no topic filter"),  # §3.8.3
        (b"\x82\x05\x00\x01\x00\x00\x00", MalformedPacket, "empty topic filter"),  # §4.7.3
        (b"\x82\x03\x00\x00\x00", ProtocolError, "packet identifier 0"),
        (b"\xa2\x02\x00\x01", ProtocolError, "no topic filter"),  # §3.10.3
        (b"\x40\x03\x00\x01\x00", MalformedPacket, "remaining length 3, must be 2"),
        (b"\xe0\x01\x00", MalformedPacket, "remaining length must be 0"),
        (b"\xc0\x01\x00", MalformedPacket, "remaining length must be 0"),
    ],
)
def test_malformed_packets_at_3_1_1(data: bytes, error: type[Exception], problem: str) -> None:
    with pytest.raises(error, match=problem):
        decoded(data, MQTT_3_1_1)


def _with_properties(raw: bytes) -> bytes:
    body = b"\x00\x01" + varint(len(raw)) + raw  # a PUBACK at level 5: id, code, properties
    return b"\x40" + varint(len(body) + 1) + body[:2] + b"\x00" + body[2:]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"\x7f\x00", "unknown property identifier 0x7f"),  # §2.2.2.2
        (b"\x02\x00\x00\x00\x01", "not allowed here"),  # message expiry in a PUBACK
        (b"\x1f\x00\x01a\x1f\x00\x01b", "appears twice"),
        (b"\x1f\x00\x05ab", "runs past"),
    ],
)
def test_strict_properties(raw: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decoded(_with_properties(raw), MQTT_5)


def test_property_values_in_range() -> None:
    zero_receive_maximum = b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x03\x21\x00\x00\x00\x01c"
    reader = Reader(zero_receive_maximum, 2)
    read_protocol(reader)
    with pytest.raises(ProtocolError, match="receive_maximum is 0"):  # 5.0 §3.1.2.11.3
        decode_connect(reader, MQTT_5)
    repeated_ids = Properties([(Property.SUBSCRIPTION_IDENTIFIER, 1)] * 2)
    publish = Publish("t", b"", properties=repeated_ids)  # 5.0 §3.3.2.3.8: may repeat here
    assert decoded(encode(publish, MQTT_5), MQTT_5) == publish


def _connect_body(data: bytes) -> Connect:
    reader = Reader(data, 2)
    name, level = read_protocol(reader)
    problem = protocol_problem(name, level)
    if problem is not None:
        raise problem
    return decode_connect(reader, level)


@pytest.mark.parametrize(
    ("connect", "code"),
    [
        (Connect(MQTT_3_1_1, "", False, 0), ConnackCode.IDENTIFIER_REJECTED),  # §3.1.3.1
        (Connect(MQTT_3_1, "x" * 24, True, 0), ConnackCode.IDENTIFIER_REJECTED),  # 3.1: 1-23
        (Connect(MQTT_3_1, "", True, 0), ConnackCode.IDENTIFIER_REJECTED),
    ],
)
def test_connects_refused_with_a_return_code(connect: Connect, code: ConnackCode) -> None:
    with pytest.raises(ConnectRefused) as refused:
        _connect_body(encode(connect, connect.level))
    assert refused.value.return_code == code


def test_connect_accepted_at_the_edges() -> None:
    assert _connect_body(encode(Connect(MQTT_3_1, "x" * 23, True, 0), MQTT_3_1)).client_id
    assert _connect_body(encode(Connect(MQTT_3_1_1, "", True, 0), MQTT_3_1_1)).client_id == ""
    # MQTT 5 lets a client send a password alone (5.0 §3.1.2.9).
    assert _connect_body(encode(Connect(MQTT_5, "c", True, 0, None, b"p"), MQTT_5)).password


@pytest.mark.parametrize(
    ("data", "error", "problem"),
    [
        (b"\x10\x0c\x00\x04MQTX\x04\x02\x00\x3c\x00\x00", ProtocolError, "is not 'MQTT'"),
        (b"\x10\x0c\x00\x04MQTT\x06\x02\x00\x3c\x00\x00", ConnectRefused, "level 6"),
        (b"\x10\x0e\x00\x06MQIsdp\x04\x02\x00\x3c\x00\x00", ConnectRefused, "'MQIsdp' level 4"),
        (b"\x10\x0d\x00\x04MQTT\x04\x03\x00\x3c\x00\x01p", MalformedPacket, "reserved flag"),
        (b"\x10\x0d\x00\x04MQTT\x04\x1a\x00\x3c\x00\x01p", MalformedPacket, "will QoS"),
        (b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x01p!", MalformedPacket, "1 bytes after"),
        (b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01\x00", MalformedPacket, "contains U.0000"),
    ],
)
def test_connects_that_close_without_connack_or_with_code_1(
    data: bytes, error: type[Exception], problem: str
) -> None:
    with pytest.raises(error, match=problem):
        _connect_body(data)


@pytest.mark.parametrize("level", [MQTT_3_1, MQTT_3_1_1])
def test_a_password_without_a_user_name_closes_without_connack(level: int) -> None:
    """3.1.1 §3.1.2.9 [MQTT-3.1.2-22]: such a CONNECT does not conform, and §3.1.4
    [MQTT-3.1.4-1] closes the connection with no CONNACK (no return code 4)."""
    with pytest.raises(ProtocolError) as raised:
        _connect_body(encode(Connect(level, "c", True, 0, None, b"p"), level))
    assert not isinstance(raised.value, ConnectRefused)
    assert "Password flag set without the User Name flag (§3.1.2.9)" in str(raised.value)


@pytest.mark.parametrize(
    ("options", "code"),
    [
        (0x41, Reason.MALFORMED_PACKET),  # a reserved bit (5.0 §3.8.3.1 [MQTT-3.8.3-5])
        (0x03, Reason.PROTOCOL_ERROR),  # Maximum QoS 3
        (0x31, Reason.PROTOCOL_ERROR),  # Retain Handling 3
    ],
)
def test_mqtt_5_subscription_options_name_their_error(options: int, code: Reason) -> None:
    """5.0 §3.8.3.1: reserved bits make the packet malformed (0x81), a Maximum QoS or Retain
    Handling of 3 is a protocol error (0x82): the reason the server's DISCONNECT gives."""
    data = b"\x82\x07\x00\x01\x00\x00\x01a" + bytes((options,))  # id 1, no properties, 'a'
    with pytest.raises(ProtocolError) as raised:
        decoded(data, MQTT_5)
    assert raised.value.reason_code == code


@pytest.mark.parametrize(
    ("first_byte", "level", "connected", "problem"),
    [
        (0x10, 0, False, None),
        (0x30, 0, False, "first packet is PUBLISH, not CONNECT"),  # §3.1.0
        (0x10, 4, True, "second CONNECT"),
        (0x36, 4, True, "QoS 3"),  # §3.3.1.2
        (0x38, 4, True, "DUP set at QoS 0"),  # §3.3.1.1
        (0x3B, 4, True, None),  # DUP, QoS 1, RETAIN
        (0x62, 4, True, None),
        (0x60, 4, True, "PUBREL with fixed-header flags 0b0000"),  # §2.2.2
        (0x60, 3, True, None),  # MQTT 3.1 clients may leave these flags out...
        (0x8A, 3, True, None),  # ... or set DUP on a SUBSCRIBE they retry
        (0x80, 4, True, "SUBSCRIBE with fixed-header flags 0b0000"),
        (0x90, 4, True, "SUBACK may not be sent by a client"),  # §2.2.1
        (0x00, 4, True, "reserved type 0"),
        (0xF0, 4, True, "reserved type 15"),
        (0xF0, 5, True, None),  # AUTH, MQTT 5 only
    ],
)
def test_header_rules(first_byte: int, level: int, connected: bool, problem: str | None) -> None:
    found = header_problem(first_byte, level=level, connected=connected)
    assert (found is None) == (problem is None), found
    assert problem is None or problem in str(found)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xc1\x00", 0x81),  # PINGREQ with a flag set: 5.0 §2.1.3, malformed
        (b"\x36\x03\x00\x01t", 0x81),  # PUBLISH with QoS 3: §3.3.1.2, malformed
        (b"\x38\x04\x00\x01t\x00", 0x81),  # DUP at QoS 0 [MQTT-3.3.1-2]: a flag, §2.1.3
        (b"\xa0\x05\x00\x01\x00\x01t", 0x81),  # UNSUBSCRIBE without its 0b0010 (§3.10.1)
        (b"\x0a\xc0t", 0x82),  # reserved type 0: no client sends it (§2.1.2), 0x82
        (b"\x90\x03\x00\x01\x00", 0x82),  # SUBACK from a client (§2.1.2)
        (b"\x10\x00", 0x82),  # a second CONNECT [MQTT-3.1.0-2]
    ],
)
def test_a_bad_fixed_header_gives_the_5_0_reason_mosquitto_gives(data: bytes, code: int) -> None:
    # Mosquitto's 01-bad-packets: reserved flags are "malformed packet", a reserved type a
    # "protocol error"; the DISCONNECT says which (5.0 §4.13).
    connection, _ = connected(level=MQTT_5)
    [violation] = connection.receive_data(data, 0.0)
    assert isinstance(violation, ProtocolViolation)
    assert violation.code == code, violation.reason


def test_packets_in_reads_what_a_server_writes() -> None:
    data = encode(Connack(False, 0), 4) + encode(Suback(1, (0,)), 4)
    assert packets_in(data) == [Connack(False, 0), Suback(1, (0,))]


def test_no_local_on_a_shared_subscription_is_a_protocol_error() -> None:
    # MQTT 5 §3.8.3.1 [MQTT-3.8.3-4]; the same option on an ordinary filter is fine.
    def subscribe(topic_filter: bytes, options: int) -> bytes:
        body = b"\x00\x01\x00" + len(topic_filter).to_bytes(2, "big") + topic_filter
        body += bytes((options,))
        return b"\x82" + varint(len(body)) + body

    with pytest.raises(ProtocolError, match="No Local set on a shared subscription"):
        decoded(subscribe(b"$share/g/a", 0x05), MQTT_5)
    ordinary = decoded(subscribe(b"a/b", 0x05), MQTT_5)
    assert isinstance(ordinary, Subscribe)
    assert ordinary.requests[0].no_local
    shared = decoded(subscribe(b"$share/g/a", 0x01), MQTT_5)
    assert isinstance(shared, Subscribe)
    assert not shared.requests[0].no_local


@pytest.mark.parametrize(("name", "level"), [("X" * 60_000, 4), ("MQTT" * 15_000, 4)])
def test_a_refused_protocol_name_is_cut_short_in_the_reason(name: str, level: int) -> None:
    # The reason is logged and may go back in a CONNACK: a client's 64 KiB name stays out.
    problem = protocol_problem(name, level)
    assert problem is not None
    assert len(str(problem)) < 300
