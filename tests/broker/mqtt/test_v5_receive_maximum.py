"""The server's Receive Maximum (MQTT 5 §3.2.2.3.3, §4.9): how many QoS 1 and 2 PUBLISHes a
5.0 client may send that the server has not answered (PUBACK, or PUBREC then PUBCOMP)."""

from broker.mqtt.connection import CLOSED, CONNECTED, Connection
from broker.mqtt.events import DuplicateReceived, LimitExceeded
from broker.mqtt.limits import Limits
from broker.mqtt.packets import MQTT_3_1_1, MQTT_5, Connect, Pubcomp, Publish, Pubrec
from broker.mqtt.properties import Properties, Property
from broker.mqtt.session import RELEASED, SENT, Outgoing, Session
from tests.broker.mqtt.wire_helpers import connected, feed, packets_in, wire

LIMITS = Limits(max_awaiting_pubrel=3)
OVER = LimitExceeded(
    "max_awaiting_pubrel", "3 QoS 1 and 2 messages are not acknowledged (Receive Maximum 3)"
)


def _publishes(qos: int, *packet_ids: int) -> list[Publish]:
    return [Publish("t", b"x", qos, packet_id=packet_id) for packet_id in packet_ids]


def test_qos_1_publishes_whose_puback_has_not_gone_count() -> None:
    # §3.3.4: more than Receive Maximum QoS 1 PUBLISHes without PUBACK is a 0x93 DISCONNECT;
    # the broker holds a PUBACK until the store commits the message.
    connection, _ = connected(LIMITS, level=MQTT_5)
    events = feed(connection, *_publishes(1, 1, 2, 3, 4))
    assert events[3:] == [OVER]
    assert events[:3] == _publishes(1, 1, 2, 3)
    assert connection.state == CLOSED


def test_a_puback_sent_makes_room_for_one_more() -> None:
    connection, _ = connected(LIMITS, level=MQTT_5)
    assert feed(connection, *_publishes(1, 1, 2, 3)) == _publishes(1, 1, 2, 3)
    connection.acknowledge(1, 1)
    connection.acknowledge(2, 1, 0x87)  # a refusal answers it too (§3.4.2.1)
    assert feed(connection, *_publishes(1, 4, 5)) == _publishes(1, 4, 5)
    assert connection.state == CONNECTED
    assert feed(connection, *_publishes(1, 6)) == [OVER]


def test_qos_1_and_qos_2_share_the_receive_maximum() -> None:
    connection, _ = connected(LIMITS, level=MQTT_5)
    events = feed(connection, *_publishes(2, 1, 2), *_publishes(1, 3, 4))
    assert events[3:] == [OVER]
    assert connection.state == CLOSED


def test_a_qos_2_publish_sent_again_is_not_counted_again() -> None:
    connection, _ = connected(LIMITS, level=MQTT_5)
    feed(connection, *_publishes(2, 1, 2, 3))
    connection.acknowledge(1, 2)
    [again] = feed(connection, Publish("t", b"x", 2, dup=True, packet_id=1))
    assert isinstance(again, DuplicateReceived)
    assert connection.state == CONNECTED


def test_mqtt_3_1_1_qos_1_is_not_bounded_by_it() -> None:
    # 3.1.1 has no Receive Maximum: its QoS 1 PUBACKs only wait for the store's commit
    # (at most ``ack_timeout``); the setting bounds its QoS 2 packet ids awaiting PUBREL.
    connection, _ = connected(LIMITS, level=MQTT_3_1_1)
    publishes = _publishes(1, *range(1, 11))
    assert feed(connection, *publishes) == publishes
    assert connection.state == CONNECTED


def _resumed(receive_maximum: int, *states: int) -> tuple[Connection, list[Outgoing], Session]:
    """A 5.0 client back with Receive Maximum ``receive_maximum`` to a session that has a
    message in flight in each of ``states`` from an earlier connection."""
    session = Session("c", persistent=True)
    messages = [Outgoing("t", bytes([n]), 2) for n in range(len(states))]
    for message, state in zip(messages, states, strict=True):
        session.start_flight(message)
        message.sent, message.state = True, state
    connection = Connection(Limits(max_inflight=20))
    asked = Properties([(Property.RECEIVE_MAXIMUM, receive_maximum)])
    connection.receive_data(wire(Connect(MQTT_5, "c", False, 60, properties=asked), level=5), 0)
    connection.accept(session, session_present=True)
    return connection, messages, session


def _resent(connection: Connection) -> list[tuple[str, int]]:
    sent = packets_in(connection.data_to_send(), MQTT_5)
    return [(type(packet).__name__, getattr(packet, "packet_id", 0)) for packet in sent]


def test_messages_sent_again_keep_within_a_smaller_receive_maximum() -> None:
    # 5.0 §4.9: the send quota starts at the Receive Maximum of this connection, and
    # PUBLISHes sent again take from it; a QoS 2 message awaiting PUBCOMP keeps its place.
    connection, messages, session = _resumed(2, RELEASED, SENT, SENT, SENT)
    assert _resent(connection) == [("Connack", 0), ("Pubrel", 1), ("Publish", 2)]
    session.enqueue(Outgoing("t", b"later", 1), Limits())
    feed(connection, Pubcomp(1))  # room for one: the next one in flight, not the queued
    assert _resent(connection) == [("Publish", 3)]
    feed(connection, Pubrec(4))  # the client had it: it is not sent again
    feed(connection, Pubrec(2))
    assert _resent(connection) == [("Pubrel", 4), ("Pubrel", 2)]
    feed(connection, Pubcomp(2), Pubcomp(4))
    [queued] = packets_in(connection.data_to_send(), MQTT_5)
    assert isinstance(queued, Publish)
    assert (queued.payload, messages[2].state) == (b"later", SENT)
