"""A Message Expiry Interval of 0 on one connection, bytes out (5.0 §3.3.2.3.3,
``broker.mqtt.expiry``): sent as part of its publish however late the clock reads then, with
an interval of 0; never after waiting in the session's queue. Any other interval expires as
it did: one whose deadline has passed is not sent, in the publish or later."""

from broker.mqtt.connection import Connection
from broker.mqtt.events import MessageDropped, MessageSent
from broker.mqtt.expiry import deadline, expired, for_connected_only
from broker.mqtt.limits import Limits
from broker.mqtt.packets import MQTT_5, Connack, Connect, Puback, Publish
from broker.mqtt.properties import NO_PROPERTIES, Properties, Property
from broker.mqtt.session import Outgoing, Session
from tests.broker.mqtt.wire_helpers import feed, packets_in, wire

RECEIVED_AT = 100.0
ZERO = Properties([(Property.USER_PROPERTY, ("a", "1")), (Property.MESSAGE_EXPIRY_INTERVAL, 0)])
ONE = Properties([(Property.MESSAGE_EXPIRY_INTERVAL, 1)])


def _accepted(receive_maximum: int = 10) -> Connection:
    connection = Connection(Limits())
    asked = Properties([(Property.RECEIVE_MAXIMUM, receive_maximum)])
    [event] = connection.receive_data(
        wire(Connect(MQTT_5, "c", True, 60, properties=asked), level=MQTT_5), 0
    )
    assert isinstance(event, Connect)
    connection.accept(Session("c", persistent=False), session_present=False)
    [connack] = packets_in(connection.data_to_send(), MQTT_5)
    assert isinstance(connack, Connack)
    return connection


def _copy(properties: Properties, qos: int = 1) -> Outgoing:
    """A subscriber's copy of a message received at ``RECEIVED_AT``."""
    return Outgoing(
        "t", b"x", qos, properties=properties, expires_at=deadline(properties, RECEIVED_AT)
    )


def _published(connection: Connection) -> list[Publish]:
    found = packets_in(connection.data_to_send(), MQTT_5)
    assert all(isinstance(packet, Publish) for packet in found)
    return [packet for packet in found if isinstance(packet, Publish)]


def test_the_rule_itself() -> None:
    assert deadline(ZERO, RECEIVED_AT) == RECEIVED_AT
    assert deadline(ONE, RECEIVED_AT) == RECEIVED_AT + 1
    assert deadline(NO_PROPERTIES, RECEIVED_AT) is None
    assert for_connected_only(ZERO)
    assert not for_connected_only(ONE)
    assert not for_connected_only(NO_PROPERTIES)
    assert for_connected_only(ZERO.with_subscription_identifiers((3,)))  # a subscriber's copy
    later = RECEIVED_AT + 0.0014  # the store commit a QoS 1 delivery waits for
    assert not expired(_copy(ZERO), later, publishing=True)
    assert expired(_copy(ZERO), later)  # from the queue, later
    assert expired(_copy(ONE), RECEIVED_AT + 1, publishing=True)  # the deadline is the deadline
    assert not expired(_copy(ONE), RECEIVED_AT + 0.999)
    assert not expired(_copy(NO_PROPERTIES), 1e12)


def test_sent_as_part_of_its_publish_with_an_interval_of_0_at_every_qos() -> None:
    connection = _accepted()
    for qos in (0, 1, 2):
        copy = _copy(ZERO, qos)
        events = connection.publish(copy, now=RECEIVED_AT + 0.0014)
        assert events == ([MessageSent(copy)] if qos else [])
        [sent] = _published(connection)
        assert (sent.payload, sent.qos) == (b"x", qos)
        # [MQTT-3.3.2-6]: the interval less the time waited, which is never below 0.
        assert sent.properties == ZERO


def test_a_copy_that_would_wait_for_a_later_turn_expires_at_once() -> None:
    """Behind a full in-flight window (5.0 §4.9) or messages queued before it (§4.6): its
    onward delivery could only start after the publish, when its lifetime is over."""
    connection = _accepted(receive_maximum=1)
    first, blocked, waiting, zero = _copy(ONE), _copy(ONE), _copy(ZERO, 0), _copy(ZERO)
    assert connection.publish(first, now=RECEIVED_AT) == [MessageSent(first)]
    assert connection.publish(blocked, now=RECEIVED_AT) == []  # queued: the window is full
    assert connection.publish(zero, now=RECEIVED_AT) == [MessageDropped(zero, "message_expiry")]
    assert connection.publish(waiting, now=RECEIVED_AT) == [
        MessageDropped(waiting, "message_expiry")
    ]  # QoS 0 waits behind a queued message too
    assert connection.session is not None
    assert list(connection.session.queue) == [blocked]
    assert [p.payload for p in _published(connection)] == [b"x"]


def test_a_queued_copy_of_lifetime_0_is_not_sent_later() -> None:
    """One that reached the queue anyway (a session read back from the store after a
    restart, where its row was written before its send) is dropped when its turn comes."""
    connection = _accepted(receive_maximum=1)
    first, later = _copy(ONE), _copy(ONE)
    assert connection.publish(first, now=RECEIVED_AT) == [MessageSent(first)]
    session = connection.session
    assert session is not None
    stored = _copy(ZERO)
    session.enqueue(stored, Limits())
    session.enqueue(later, Limits())
    connection.data_to_send()
    events = feed(connection, Puback(first.packet_id), now=RECEIVED_AT + 0.5)
    assert MessageDropped(stored, "message_expiry") in events
    assert MessageSent(later) in events
    [sent] = _published(connection)
    assert sent.properties.message_expiry == 1


def test_any_other_interval_past_its_deadline_is_not_sent_in_the_publish_either() -> None:
    connection = _accepted()
    late = _copy(ONE)
    assert connection.publish(late, now=RECEIVED_AT + 1) == [MessageDropped(late, "message_expiry")]
    fresh = _copy(ONE)
    assert connection.publish(fresh, now=RECEIVED_AT + 0.2) == [MessageSent(fresh)]
    [sent] = _published(connection)
    assert sent.properties.message_expiry == 1
