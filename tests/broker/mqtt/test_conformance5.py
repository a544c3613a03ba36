"""MQTT 5.0 statements binding a Server checked bytes in, bytes out, that no other pure test
names (``docs/conformance-5.0.md`` maps every statement to its test)."""

import pytest

from broker.mqtt.connection import CLOSED, Connection
from broker.mqtt.events import ConnectionRefused, ProtocolViolation
from broker.mqtt.limits import Limits
from broker.mqtt.packets import MQTT_5, Connack, Connect, Puback, Pubcomp, Publish, Pubrec, Pubrel
from broker.mqtt.properties import Properties, Property
from broker.mqtt.session import Outgoing, Session
from tests.broker.mqtt.v5_connection import v5_accepted, v5_sent
from tests.broker.mqtt.wire_helpers import connected, feed, packets_in, wire

BOM = "\ufeff"  # encoded 0xEF 0xBB 0xBF


def test_a_zero_width_no_break_space_is_kept_where_it_is() -> None:
    # §1.5.4 [MQTT-1.5.4-3]: 0xEF 0xBB 0xBF is U+FEFF wherever it is, never skipped or
    # stripped: in a client identifier and in a topic name, first or not.
    connection = Connection(Limits())
    [connect] = connection.receive_data(wire(Connect(MQTT_5, BOM + "c", True, 60), level=MQTT_5), 0)
    assert isinstance(connect, Connect)
    assert connect.client_id.encode() == b"\xef\xbb\xbfc"
    accepted, _ = v5_accepted()
    for topic in (BOM + "t", "a/" + BOM + "/b"):
        [publish] = feed(accepted, Publish(topic, b"x"))
        assert isinstance(publish, Publish)
        assert publish.topic == topic


def test_no_authentication_is_offered_to_a_client_that_asked_for_none() -> None:
    # §4.12 [MQTT-4.12.0-6]: without an Authentication Method in the CONNECT the server sends
    # no AUTH and no Authentication Method (or Data) in the CONNACK; [MQTT-3.2.0-2] one
    # CONNACK only, [MQTT-3.2.2-1] its reserved flag bits 0.
    connection, connack = v5_accepted()
    assert isinstance(connack, Connack)
    assert connack.properties.get(Property.AUTHENTICATION_METHOD) is None
    assert connack.properties.get(Property.AUTHENTICATION_DATA) is None
    assert not connack.session_present
    assert v5_sent(connection) == []


def _s(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _frame(first: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes([first, len(body)]) + body


NOT_UTF8 = b"\xed\xa0\x80"  # an encoded surrogate, U+D800 (§1.5.4 [MQTT-1.5.4-1])
CONNECT_HEAD = _s(b"MQTT") + bytes([5])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        # [MQTT-3.1.3-4] client identifier, [MQTT-3.1.3-11] will topic, [MQTT-3.1.3-12] user name
        (_frame(0x10, CONNECT_HEAD + b"\x02\x00\x3c\x00" + _s(NOT_UTF8)), "client identifier"),
        (
            _frame(
                0x10,
                CONNECT_HEAD + b"\x06\x00\x3c\x00" + _s(b"c") + b"\x00" + _s(NOT_UTF8) + _s(b""),
            ),
            "will topic",
        ),
        (_frame(0x10, CONNECT_HEAD + b"\x82\x00\x3c\x00" + _s(b"c") + _s(NOT_UTF8)), "user name"),
    ],
)
def test_a_connect_string_that_is_not_utf8_is_refused(data: bytes, reason: str) -> None:
    connection = Connection(Limits())
    [event] = connection.receive_data(data, 0)
    assert isinstance(event, ConnectionRefused | ProtocolViolation)
    assert f"{reason} is not valid UTF-8" in event.reason
    assert connection.state == CLOSED


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        # [MQTT-3.3.2-1] topic name, [MQTT-3.3.2-13] response topic, [MQTT-3.3.2-19] content
        # type, [MQTT-1.5.7-1] user property, [MQTT-3.8.3-1], [MQTT-3.10.3-1] topic filters
        (_frame(0x30, _s(NOT_UTF8) + b"\x00"), "topic name"),
        (
            _frame(0x30, _s(b"t") + bytes([3 + len(NOT_UTF8), 0x08]) + _s(NOT_UTF8)),
            "response_topic",
        ),
        (_frame(0x30, _s(b"t") + bytes([3 + len(NOT_UTF8), 0x03]) + _s(NOT_UTF8)), "content_type"),
        (
            _frame(0x30, _s(b"t") + bytes([6 + len(NOT_UTF8), 0x26]) + _s(NOT_UTF8) + _s(b"v")),
            "user property",
        ),
        (_frame(0x82, b"\x00\x01\x00" + _s(NOT_UTF8) + b"\x01"), "topic filter"),
        (_frame(0xA2, b"\x00\x01\x00" + _s(NOT_UTF8)), "topic filter"),
    ],
)
def test_a_string_that_is_not_utf8_closes_the_connection(data: bytes, reason: str) -> None:
    connection, _ = v5_accepted()
    [event] = connection.receive_data(data, 0)
    assert isinstance(event, ProtocolViolation)
    assert f"{reason} is not valid UTF-8" in event.reason
    assert connection.state == CLOSED


def test_an_empty_topic_name_needs_a_topic_alias() -> None:
    # §4.7.3 [MQTT-4.7.3-1]: a topic name is at least one character long; §3.3.2.1 allows an
    # empty one only with a Topic Alias, which gives the topic.
    connection, _ = v5_accepted()
    [event] = feed(connection, Publish("", b"x"))
    assert isinstance(event, ProtocolViolation)
    assert "empty topic name without a topic alias" in event.reason


def test_a_pubrel_for_no_message_gets_pubcomp_0x92_alone() -> None:
    # §3.7.2.1 [MQTT-3.7.2-1]: 0x92 Packet Identifier not found, and [MQTT-4.3.3-11] the same
    # packet identifier; no Reason String (§3.7.2.2.2: none is ever needed to say it).
    connection, _ = v5_accepted()
    assert feed(connection, Pubrel(9)) == []
    assert v5_sent(connection) == [Pubcomp(9, 0x92)]


def test_a_message_once_sent_is_sent_again_whatever_its_expiry() -> None:
    # §4.3.3 [MQTT-4.3.3-7]: no Message Expiry once the PUBLISH went; [MQTT-4.4.0-1] a resumed
    # session sends it again, with DUP, its interval what is left but at least 1 (0 would mean
    # "expires now" to the client, §3.3.2.3.3).
    session = Session("c", persistent=True)
    first, _ = connected(level=MQTT_5, session=session)
    expiry = Properties([(Property.MESSAGE_EXPIRY_INTERVAL, 5)])
    for topic, qos in (("a", 1), ("b", 2)):
        first.publish(Outgoing(topic, b"x", qos, properties=expiry, expires_at=5.0), now=1.0)
    assert [_publish(p).packet_id for p in packets_in(first.data_to_send(), MQTT_5)] == [1, 2]
    first.close()
    _, sent = connected(level=MQTT_5, session=session, present=True, now=100.0)
    again = [_publish(p) for p in sent[1:]]
    assert [(p.topic, p.qos, p.dup, p.packet_id) for p in again] == [
        ("a", 1, True, 1),
        ("b", 2, True, 2),
    ]
    assert all(p.properties.get(Property.MESSAGE_EXPIRY_INTERVAL) == 1 for p in again)


def _publish(packet: object) -> Publish:
    assert isinstance(packet, Publish)
    return packet


def _connect5(flags: int, payload: bytes) -> bytes:
    return _frame(0x10, CONNECT_HEAD + bytes([flags]) + b"\x00\x3c\x00" + payload)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_connect5(0x03, _s(b"c")), "reserved flag"),  # [MQTT-3.1.2-3]
        (_connect5(0x0A, _s(b"c")), "will QoS"),  # [MQTT-3.1.2-11]: Will QoS 1, no will
        (_connect5(0x22, _s(b"c")), "will QoS or retain"),  # [MQTT-3.1.2-13]
        (_connect5(0x1E, _s(b"c") + b"\x00" + _s(b"w") + _s(b"x")), "will QoS"),  # [-12]: 3
        (
            _connect5(0x06, _s(b"c") + b"\x00" + _s(b"w")),
            "will message runs past",
        ),  # [MQTT-3.1.2-9]
        (_connect5(0x82, _s(b"c")), "user name runs past"),  # [MQTT-3.1.2-17]: no user name
        (_connect5(0x42, _s(b"c")), "password runs past"),  # [MQTT-3.1.2-19]: no password
        (_connect5(0x02, _s(b"c") + _s(b"u")), "3 bytes after"),  # [MQTT-3.1.2-16], [-18]
    ],
)
def test_a_5_0_connect_whose_flags_and_payload_disagree_closes(data: bytes, reason: str) -> None:
    # §3.1.4 [MQTT-3.1.4-1]: a CONNECT not of the format closes the connection.
    connection = Connection(Limits())
    [event] = connection.receive_data(data, 0)
    assert isinstance(event, ConnectionRefused | ProtocolViolation)
    assert reason in event.reason
    assert connection.state == CLOSED


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_frame(0x30, _s(b"a\x00b") + b"\x00"), "topic name contains U+0000"),  # [MQTT-4.7.3-2]
        (_frame(0x82, b"\x00\x01\x00"), "SUBSCRIBE: no topic filter"),  # [MQTT-3.8.3-2]
        (_frame(0xA2, b"\x00\x01\x00"), "UNSUBSCRIBE: no topic filter"),  # [MQTT-3.10.3-2]
        (_frame(0x82, b"\x00\x01\x00" + _s(b"") + b"\x01"), "empty topic filter"),  # [4.7.3-1]
        (_frame(0x38, _s(b"t") + b"\x00"), "DUP set at QoS 0"),  # [MQTT-3.3.1-2]
        (_frame(0x36, _s(b"t") + b"\x00\x01\x00"), "QoS 3"),  # [MQTT-3.3.1-4]
    ],
)
def test_a_5_0_packet_the_standard_forbids_closes(data: bytes, reason: str) -> None:
    # §4.13.1 [MQTT-4.13.1-1]: a Malformed Packet or Protocol Error closes the connection.
    connection, _ = v5_accepted()
    [event] = connection.receive_data(data, 0)
    assert isinstance(event, ProtocolViolation)
    assert reason in event.reason
    assert connection.state == CLOSED


def test_acknowledged_packet_identifiers_start_new_messages() -> None:
    # §4.3.2 [MQTT-4.3.2-5]: after its PUBACK a QoS 1 identifier is a new message, DUP or
    # not; §3.4.2 [MQTT-3.4.2-1..3] the PUBACK is a reason code alone; §4.3.3 [MQTT-4.3.3-13]
    # a QoS 2 exchange goes on to PUBCOMP past the message's expiry.
    connection, _ = v5_accepted()
    first = Publish("t", b"1", 1, packet_id=1)
    assert feed(connection, first) == [first]
    connection.acknowledge(1, 1, 0x87)
    assert v5_sent(connection) == [Puback(1, 0x87)]
    again = Publish("t", b"2", 1, dup=True, packet_id=1)
    assert feed(connection, again) == [again]
    expiring = Publish("t", b"3", 2, packet_id=2, properties=Properties([(0x02, 1)]))
    assert feed(connection, expiring, now=0.0) == [expiring]
    connection.acknowledge(2, 2)
    assert v5_sent(connection) == [Pubrec(2)]
    assert feed(connection, Pubrel(2), now=100.0) == []
    assert v5_sent(connection) == [Pubcomp(2)]


def test_every_23_character_client_identifier_of_letters_and_digits_is_accepted() -> None:
    # §3.1.3.1 [MQTT-3.1.3-5]; longer ones too (as the standard allows), and any character.
    for client_id in (ALNUM[:23], ALNUM[23:46], ALNUM[39:], ALNUM, "device/é-1"):
        connection = Connection(Limits())
        [connect] = connection.receive_data(
            wire(Connect(MQTT_5, client_id, True, 60), level=MQTT_5), 0
        )
        assert isinstance(connect, Connect)
        assert connect.client_id == client_id


ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
