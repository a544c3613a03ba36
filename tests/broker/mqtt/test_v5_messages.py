"""MQTT 5 on one connection, bytes in and bytes out: messages (topic aliases both ways, Receive
Maximum, Maximum Packet Size, message expiry, the QoS 1/2 flows and their reason codes,
subscription identifiers, malformed properties). Each test names the 5.0 section it checks."""

from broker.mqtt.events import (
    MessageCompleted,
    MessageDropped,
    MessageSent,
    ProtocolViolation,
)
from broker.mqtt.limits import Limits
from broker.mqtt.packets import (
    Disconnect,
    Puback,
    Publish,
    Pubrec,
    Pubrel,
)
from broker.mqtt.properties import Properties, Property
from broker.mqtt.session import Outgoing, Subscription
from broker.mqtt.trie import SubscriptionTrie
from tests.broker.mqtt.v5_connection import v5_accepted, v5_sent
from tests.broker.mqtt.wire_helpers import feed


def test_topic_aliases_from_the_client() -> None:
    # §3.3.2.3.4: a PUBLISH with topic and alias sets it; one with an empty topic uses it.
    connection, _ = v5_accepted(Limits(max_topic_aliases=2))
    alias = Properties([(Property.TOPIC_ALIAS, 2), (Property.USER_PROPERTY, ("k", "v"))])
    [first] = feed(connection, Publish("a/b", b"1", properties=alias))
    [second] = feed(connection, Publish("", b"2", properties=alias))
    assert isinstance(first, Publish)
    assert isinstance(second, Publish)
    assert (first.topic, second.topic) == ("a/b", "a/b")
    # The alias is this connection's: what is routed carries only the other properties,
    # and the bytes kept for forwarding them are theirs (the alias cut out of the middle).
    assert second.properties == Properties([(Property.USER_PROPERTY, ("k", "v"))])
    middle = Properties([(0x26, ("a", "1")), (Property.TOPIC_ALIAS, 2), (0x26, ("b", "2"))])
    [third] = feed(connection, Publish("", b"3", properties=middle))
    assert isinstance(third, Publish)
    kept = Properties([(0x26, ("a", "1")), (0x26, ("b", "2"))])
    assert third.properties == kept
    assert third.properties.wire == Properties(list(kept)).wire


def test_a_topic_alias_above_the_maximum_is_0x94_and_an_unknown_one_0x82() -> None:
    connection, _ = v5_accepted(Limits(max_topic_aliases=2))
    [violation] = feed(connection, Publish("t", b"", properties=Properties([(0x23, 3)])))
    assert isinstance(violation, ProtocolViolation)
    assert violation.code == 0x94
    connection, _ = v5_accepted(Limits(max_topic_aliases=2))
    [violation] = feed(connection, Publish("", b"", properties=Properties([(0x23, 1)])))
    assert isinstance(violation, ProtocolViolation)
    assert violation.code == 0x82


def test_a_client_publish_with_a_subscription_identifier_is_a_protocol_error() -> None:
    # §3.3.4: only the server sends Subscription Identifiers.
    connection, _ = v5_accepted()
    [violation] = feed(connection, Publish("t", b"", properties=Properties([(0x0B, 1)])))
    assert isinstance(violation, ProtocolViolation)


def test_topic_aliases_to_the_client() -> None:
    # §3.3.2.3.4: the server sets an alias with the topic once, then sends the alias alone.
    asked = Properties([(Property.TOPIC_ALIAS_MAXIMUM, 1)])
    connection, _ = v5_accepted(Limits(max_topic_aliases=5), asked)
    for topic in ("a", "a", "b"):
        connection.publish(Outgoing(topic, b"x", 0))
    first, second, third = v5_sent(connection)
    assert isinstance(first, Publish)
    assert isinstance(second, Publish)
    assert isinstance(third, Publish)
    assert (first.topic, first.properties.get(Property.TOPIC_ALIAS)) == ("a", 1)
    assert (second.topic, second.properties.get(Property.TOPIC_ALIAS)) == ("", 1)
    assert (third.topic, third.properties.get(Property.TOPIC_ALIAS)) == ("b", None)


def test_the_client_receive_maximum_bounds_messages_in_flight() -> None:
    # §3.1.2.11.3 / §4.9: no more unacknowledged QoS 1 and 2 PUBLISHes than it allows.
    asked = Properties([(Property.RECEIVE_MAXIMUM, 2)])
    connection, _ = v5_accepted(Limits(max_inflight=20), asked)
    messages = [Outgoing("t", bytes([n]), 1) for n in range(3)]
    events = [event for message in messages for event in connection.publish(message)]
    assert events == [MessageSent(messages[0]), MessageSent(messages[1])]
    feed(connection, Puback(messages[0].packet_id))
    assert messages[2].sent


def test_nothing_larger_than_the_client_reads_is_sent() -> None:
    # §3.1.2.11.4: discarded as if delivered.
    asked = Properties([(Property.MAXIMUM_PACKET_SIZE, 64)])
    connection, _ = v5_accepted(properties=asked)
    big, small = Outgoing("t", b"x" * 100, 1), Outgoing("t", b"x", 1)
    assert connection.publish(big) == [MessageDropped(big, "client_maximum_packet_size")]
    assert connection.publish(small) == [MessageSent(small)]
    assert connection.session is not None
    assert list(connection.session.inflight) == [2]


def test_message_expiry_drops_late_messages_and_forwards_the_time_left() -> None:
    # §3.3.2.3.3: not delivered once expired; otherwise the interval minus the time waited,
    # never more than the publisher set ([MQTT-3.3.2-6]): sent in the millisecond it came
    # (uvloop's clock counts whole ones), 3018.342 + 3600 - 3018.342 is 3600.0000000000005.
    connection, _ = v5_accepted()
    expiry = Properties([(Property.USER_PROPERTY, ("a", "1")), (0x02, 10)])
    fresh = Outgoing("t", b"", 0, properties=expiry, expires_at=10.0)
    stale = Outgoing("t", b"", 0, properties=expiry, expires_at=10.0)
    assert connection.publish(fresh, now=6.5) == []
    assert connection.publish(stale, now=10.0) == [MessageDropped(stale, "message_expiry")]
    [sent] = v5_sent(connection)
    assert isinstance(sent, Publish)
    assert sent.properties == Properties([(Property.USER_PROPERTY, ("a", "1")), (0x02, 4)])
    hour = Outgoing("t", b"", 0, properties=Properties([(0x02, 3600)]), expires_at=3018.342 + 3600)
    assert connection.publish(hour, now=3018.342) == []
    [sent] = v5_sent(connection)
    assert isinstance(sent, Publish)
    assert sent.properties.message_expiry == 3600


def test_a_refused_publish_is_acknowledged_with_its_reason_and_ends_a_qos_2_flow() -> None:
    # §3.4.2.1 / §3.5.2.1: 0x87 not authorized; a PUBREC of 0x80 or more ends the flow.
    connection, _ = v5_accepted()
    feed(connection, Publish("t", b"", 2, packet_id=9))
    connection.acknowledge(9, 2, 0x87)
    [pubrec] = v5_sent(connection)
    assert getattr(pubrec, "code", None) == 0x87
    assert connection.session is not None
    assert not connection.session.awaiting_pubrel


def test_a_pubrec_of_0x80_or_more_ends_the_flow_without_pubrel() -> None:
    # §4.3.3: PUBREL answers a PUBREC below 0x80 only; §4.4: the message is not sent again;
    # §4.9: its place in the client's Receive Maximum is free.
    connection, _ = v5_accepted(properties=Properties([(Property.RECEIVE_MAXIMUM, 1)]))
    refused, waiting = Outgoing("t", b"1", 2), Outgoing("t", b"2", 2)
    connection.publish(refused)
    connection.publish(waiting)
    v5_sent(connection)
    assert feed(connection, Pubrec(1, 0x80)) == [
        MessageCompleted(refused),
        MessageSent(waiting),
    ]
    [publish] = v5_sent(connection)  # no PUBREL before it
    assert isinstance(publish, Publish)
    assert publish.packet_id == 2
    assert connection.session is not None
    assert list(connection.session.inflight) == [2]
    assert feed(connection, Pubrec(1, 0x80)) == []  # unknown now: nothing
    assert v5_sent(connection) == []


def test_a_pubrec_for_a_qos_1_message_is_answered_packet_identifier_not_found() -> None:
    # §3.6.2.1: 0x92 when the id is not a QoS 2 message's; the QoS 1 one still waits for
    # its PUBACK (§4.3.2), which completes it.
    connection, _ = v5_accepted()
    message = Outgoing("t", b"1", 1)
    connection.publish(message)
    v5_sent(connection)
    assert feed(connection, Pubrec(1)) == []
    assert v5_sent(connection) == [Pubrel(1, 0x92)]
    assert feed(connection, Puback(1)) == [MessageCompleted(message)]


def test_session_expiry_in_disconnect_after_zero_in_connect_is_a_protocol_error() -> None:
    # §3.14.2.2.2
    connection, _ = v5_accepted()
    [violation] = feed(connection, Disconnect(0, Properties([(0x11, 60)])))
    assert isinstance(violation, ProtocolViolation)


def test_overlapping_subscriptions_give_one_match_with_every_identifier() -> None:
    # §3.3.4: one copy for the session, with the identifiers of all matching subscriptions,
    # at the highest QoS (3.1.1 §3.3.5); without identifiers the highest QoS alone wins.
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    trie.add("a/+", "s", Subscription(1, identifier=2))
    trie.add("a/#", "s", Subscription(2, identifier=3))
    trie.add("a/b", "s", Subscription(0))
    [(who, sub)] = trie.match("a/b").items()
    assert who == "s"
    assert sub.qos == 2
    assert sorted(sub.identifiers) == [2, 3]
    plain: SubscriptionTrie[str] = SubscriptionTrie()
    plain.add("a/+", "s", Subscription(1))
    plain.add("a/#", "s", Subscription(2))
    assert plain.match("a/b")["s"] == Subscription(2)


def test_a_malformed_user_property_closes_the_connection() -> None:
    # §1.5.4 / §1.5.7: ill-formed UTF-8, U+0000, or a string running past the property
    # length is a malformed packet (0x81).
    for pair in (b"\x00\x01\xff\x00\x00", b"\x00\x01\x00\x00\x00", b"\x00\x09ab\x00\x00"):
        connection, _ = v5_accepted()
        props = b"\x26" + pair
        body = b"\x00\x01t" + bytes((len(props),)) + props
        [violation] = connection.receive_data(b"\x30" + bytes((len(body),)) + body, 0)
        assert isinstance(violation, ProtocolViolation)
        assert violation.code == 0x81, pair
