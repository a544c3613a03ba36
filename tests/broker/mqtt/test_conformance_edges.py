"""Edges the public conformance suites probe (Mosquitto's broker tests, paho.mqtt.testing):
nothing the server sends is larger than a 5.0 client's Maximum Packet Size (§3.1.2.11.4
[MQTT-3.1.2-24]), CONNACK, SUBACK and UNSUBACK included; a Topic Alias of 0 is "Topic Alias
invalid" (§3.3.2.3.4); a broken CONNECT is answered where Mosquitto answers it (§3.1.4)."""

import pytest

from broker.mqtt.connection import CLOSED, CONNECTED, Connection
from broker.mqtt.encode import encode
from broker.mqtt.events import ConnectionRefused, LimitExceeded, ProtocolViolation
from broker.mqtt.limits import Limits
from broker.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Publish,
    Suback,
    Subscribe,
    SubscribeRequest,
    Unsuback,
    Unsubscribe,
    Will,
)
from broker.mqtt.properties import NO_PROPERTIES, Properties, Property
from broker.mqtt.session import Session
from tests.broker.mqtt.wire_helpers import feed, packets_in, wire


def _connect(most: int, limits: Limits | None = None) -> Connection:
    connection = Connection(limits or Limits())
    asked = Properties(
        [(Property.MAXIMUM_PACKET_SIZE, most), (Property.REQUEST_RESPONSE_INFORMATION, 1)]
    )
    [event] = connection.receive_data(
        wire(Connect(MQTT_5, "", True, 60, properties=asked), level=MQTT_5), 0
    )
    assert isinstance(event, Connect)
    return connection


def _accept(connection: Connection, assigned: str | None = "auto-1") -> list[object]:
    return list(
        connection.accept(
            Session("c", persistent=False), session_present=False, assigned_client_id=assigned,
            response_information="devices/d/",
        )
    )  # fmt: skip


@pytest.mark.parametrize(
    ("properties", "where"),
    [
        (Properties([(Property.TOPIC_ALIAS, 0)]), "with a topic"),
        (Properties([(Property.USER_PROPERTY, ("k", "v")), (Property.TOPIC_ALIAS, 0)]), "later"),
    ],
)
def test_a_topic_alias_of_0_is_0x94(properties: Properties, where: str) -> None:
    # §3.3.2.3.4 [MQTT-3.3.2-8]: 0 is not an alias: 0x94, as for one above the maximum.
    for topic in ("t", ""):
        connection = _connect(1000)
        _accept(connection)
        [violation] = feed(connection, Publish(topic, b"", properties=properties))
        assert isinstance(violation, ProtocolViolation), where
        assert violation.code == 0x94
        assert "topic_alias is 0" in violation.reason


def test_a_connack_leaves_out_what_the_client_can_do_without_to_fit() -> None:
    # [MQTT-3.1.2-24]: the full CONNACK (limits, the four "available" flags, Topic Alias
    # Maximum, Response Information) is too large for 40 bytes; what bounds the client stays.
    full = _connect(1000)
    _accept(full)
    [roomy] = packets_in(full.data_to_send(), MQTT_5)
    assert isinstance(roomy, Connack)
    assert roomy.properties.get(Property.RESPONSE_INFORMATION) == "devices/d/"
    size = len(encode(roomy, MQTT_5))
    connection = _connect(size - 1)
    assert _accept(connection) == []
    data = connection.data_to_send()
    assert len(data) < size - 1
    [connack] = packets_in(data, MQTT_5)
    assert isinstance(connack, Connack)
    assert connack.code == 0
    assert [key for key, _ in connack.properties] == [
        Property.ASSIGNED_CLIENT_IDENTIFIER, Property.RECEIVE_MAXIMUM,
        Property.MAXIMUM_PACKET_SIZE,
    ]  # fmt: skip
    assert connection.state == CONNECTED
    # It was told no Topic Alias Maximum, which is 0 (§3.2.2.3.8): an alias is invalid.
    [violation] = feed(connection, Publish("t", b"", properties=Properties([(0x23, 1)])))
    assert isinstance(violation, ProtocolViolation)
    assert violation.code == 0x94


def test_a_connack_that_cannot_fit_is_not_sent_and_the_connection_closes() -> None:
    # As Mosquitto does: no CONNACK smaller than what the client needs, and nothing else
    # before a CONNACK ([MQTT-3.2.0-1]): no DISCONNECT either.
    connection = _connect(20)
    [refused] = _accept(connection, assigned="a-rather-long-assigned-client-identifier")
    assert isinstance(refused, ConnectionRefused)
    assert "its CONNACK of 56 bytes exceeds its Maximum Packet Size 20" in refused.reason
    assert connection.state == CLOSED
    connection.disconnect(0x95, "too large")
    assert connection.data_to_send() == b""


def test_a_refusal_is_not_sent_when_even_its_bare_form_is_too_large() -> None:
    # A refusing CONNACK without Reason String is 5 bytes (§3.2.2.3.9 [MQTT-3.2.2-19]).
    for most, sent in ((5, [Connack(False, 0x87)]), (4, [])):
        connection = _connect(most)
        connection.refuse(5, 0x87, "not authorized")
        assert packets_in(connection.data_to_send(), MQTT_5) == sent
        assert connection.state == CLOSED


@pytest.mark.parametrize("kind", [Subscribe, Unsubscribe])
def test_a_suback_or_unsuback_larger_than_the_client_reads_closes(
    kind: type[Subscribe] | type[Unsubscribe],
) -> None:
    # [MQTT-3.1.2-24] against [MQTT-3.8.4-1] / [MQTT-3.10.4-4]: it may be neither sent nor
    # left out, nor hold fewer codes: nothing of the packet is done, DISCONNECT 0x95 says why.
    most = 20  # the answer to 15 filters: 2 + packet id + property length + 15 codes
    filters = [f"a/{n}" for n in range(16)]

    def packet(count: int) -> Subscribe | Unsubscribe:
        if kind is Subscribe:
            return Subscribe(1, tuple(SubscribeRequest(f, 0) for f in filters[:count]))
        return Unsubscribe(1, tuple(filters[:count]))

    connection = _connect(most, Limits(max_filters_per_subscribe=10))
    _accept(connection, assigned=None)  # its 13 bytes fit
    connection.data_to_send()
    [event] = feed(connection, packet(15))  # 10 within the bound, 5 refused: 15 codes
    assert isinstance(event, kind)
    if kind is Subscribe:
        connection.suback(1, [0] * 15)
        assert packets_in(connection.data_to_send(), MQTT_5) == [Suback(1, (0,) * 15)]
    else:
        connection.unsuback(1, [0] * 15)
        assert packets_in(connection.data_to_send(), MQTT_5) == [Unsuback(1, (0,) * 15)]
    [event] = feed(connection, packet(16))
    name = "SUBACK" if kind is Subscribe else "UNSUBACK"
    assert event == LimitExceeded(
        "client_maximum_packet_size", f"its {name} of 21 bytes exceeds its Maximum Packet Size 20"
    )
    assert connection.state == CLOSED
    connection.disconnect(0x95, "an answer larger than the client reads")
    [disconnect] = packets_in(connection.data_to_send(), MQTT_5)
    assert isinstance(disconnect, Disconnect)
    assert disconnect.code == 0x95


def _connect_bytes(
    level: int, *, client_id: str = "c", will: Will | None = None,
    properties: Properties = NO_PROPERTIES,
) -> bytes:  # fmt: skip
    return encode(Connect(level, client_id, True, 60, will=will, properties=properties), level)


def _with_extra(data: bytes, extra: bytes) -> bytes:
    body = data[2:] + extra
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


@pytest.mark.parametrize(
    ("data", "answer"),
    [
        # Mosquitto's 07-will-null-topic: an empty will topic is 0x82 in a CONNACK.
        (_connect_bytes(MQTT_5, will=Will("", b"x")), 0x82),
        # Receive Maximum 0 (§3.1.2.11.3), a repeated property (§2.2.2.2): 0x82.
        (_connect_bytes(MQTT_5, properties=Properties([(0x21, 0)])), 0x82),
        (_connect_bytes(MQTT_5, properties=Properties([(0x11, 1), (0x11, 2)])), 0x82),
        # Will properties with one a will may not carry (Topic Alias): 0x82.
        (_connect_bytes(MQTT_5, will=Will("w", b"x", properties=Properties([(0x23, 1)]))), 0x82),
        # Bytes after the payload: malformed, 0x81.
        (_with_extra(_connect_bytes(MQTT_5), b"\x00"), 0x81),
        # A client id that is not UTF-8, or holds U+0000: malformed (§1.5.4), 0x81; 0x85 is
        # for "a valid string" the server does not allow (§3.2.2.2).
        (_connect_bytes(MQTT_5, client_id="cc").replace(b"\x02cc", b"\x02\xff\xfe"), 0x81),
        (_connect_bytes(MQTT_5, client_id="c\x00"), 0x81),
        # Answered by closing, in Mosquitto too: U+0000 in the will topic, a reserved flag.
        (_connect_bytes(MQTT_5, will=Will("a\x00", b"x")), None),
        (_connect_bytes(MQTT_5)[:9] + bytes([0x03]) + _connect_bytes(MQTT_5)[10:], None),
        # 3.1.1 §3.1.4 [MQTT-3.1.4-1]: never a CONNACK for a CONNECT that does not conform.
        (_connect_bytes(MQTT_3_1_1, will=Will("", b"x")), None),
        (_with_extra(_connect_bytes(MQTT_3_1_1), b"\x00"), None),
    ],
)
def test_a_broken_5_0_connect_is_answered_as_mosquitto_answers_it(
    data: bytes, answer: int | None
) -> None:
    # 5.0 §3.1.4 [MQTT-3.1.4-1]: the server MAY send a CONNACK of 0x80 or more before closing.
    connection = Connection(Limits())
    [event] = connection.receive_data(data, 0)
    assert isinstance(event, ConnectionRefused | ProtocolViolation)
    assert connection.state == CLOSED
    sent = packets_in(connection.data_to_send(), MQTT_5)
    assert [packet.code for packet in sent if isinstance(packet, Connack)] == (
        [answer] if answer is not None else []
    )


@pytest.mark.parametrize(
    ("topic", "code"),
    [("a/+", 0x82), ("#", 0x82), ("a\x00", 0x81)],
)
def test_a_5_0_topic_name_with_a_wildcard_is_a_protocol_error(topic: str, code: int) -> None:
    # [MQTT-3.3.2-2]: the packet parses, its topic name is not allowed: a Protocol Error
    # (0x82, 5.0 §1.2), as Mosquitto says; U+0000 makes it malformed (0x81, §1.5.4).
    connection = Connection(Limits())
    connection.receive_data(encode(Connect(MQTT_5, "c", True, 60), MQTT_5), 0)
    connection.accept(Session("c", persistent=False), session_present=False)
    connection.data_to_send()
    [violation] = feed(connection, Publish(topic, b"x"))
    assert isinstance(violation, ProtocolViolation)
    assert (violation.code, connection.state) == (code, CLOSED)


@pytest.mark.parametrize(
    "packet",
    [
        Publish("t", b"x", 1, packet_id=0),
        Publish("t", b"x", 2, packet_id=0),
        Subscribe(0, (SubscribeRequest("t", 0),)),
        Unsubscribe(0, ("t",)),
    ],
)
def test_packet_identifier_0_is_a_protocol_error(packet: Publish | Subscribe | Unsubscribe) -> None:
    # [MQTT-2.3.1-1]: these carry a non-zero packet id. Two bytes of 0 parse, the value is
    # not allowed: 5.0 §1.2 calls that a Protocol Error (0x82), not a Malformed Packet (which
    # cannot be parsed), and so does Mosquitto for PUBLISH. The DISCONNECT says 0x82.
    connection = Connection(Limits())
    connection.receive_data(encode(Connect(MQTT_5, "c", True, 60), MQTT_5), 0)
    connection.accept(Session("c", persistent=False), session_present=False)
    connection.data_to_send()
    [violation] = feed(connection, packet)
    assert isinstance(violation, ProtocolViolation)
    assert "packet identifier 0" in violation.reason
    assert (violation.code, connection.state) == (0x82, CLOSED)
    connection.disconnect(violation.code, violation.reason)
    [disconnect] = packets_in(connection.data_to_send(), MQTT_5)
    assert isinstance(disconnect, Disconnect)
    assert disconnect.code == 0x82
