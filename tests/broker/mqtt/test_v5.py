"""MQTT 5 on one connection, bytes in and bytes out: each test names the 5.0 section it checks."""

from broker.mqtt.connection import CLOSED, Connection
from broker.mqtt.events import (
    ConnectionRefused,
    MessageCompleted,
    MessageDropped,
    MessageSent,
    ProtocolViolation,
)
from broker.mqtt.limits import Limits
from broker.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Puback,
    Publish,
    Pubrec,
    Pubrel,
)
from broker.mqtt.properties import NO_PROPERTIES, Properties, Property
from broker.mqtt.session import Outgoing, Session, Subscription
from broker.mqtt.trie import SubscriptionTrie
from tests.broker.mqtt.wire_helpers import feed, packets_in, wire


def _connect(
    limits: Limits | None = None, properties: Properties = NO_PROPERTIES, keep_alive: int = 60
) -> Connection:
    connection = Connection(limits or Limits())
    connect = Connect(MQTT_5, "c", True, keep_alive, properties=properties)
    [event] = connection.receive_data(wire(connect, level=MQTT_5), 0)
    assert isinstance(event, Connect)
    return connection


def _accepted(
    limits: Limits | None = None,
    properties: Properties = NO_PROPERTIES,
    *,
    assigned_client_id: str | None = None,
    response_information: str | None = None,
) -> tuple[Connection, Connack]:
    connection = _connect(limits, properties)
    connection.accept(
        Session("c", persistent=False), session_present=False,
        assigned_client_id=assigned_client_id, response_information=response_information,
    )  # fmt: skip
    [connack] = packets_in(connection.data_to_send(), MQTT_5)
    assert isinstance(connack, Connack)
    return connection, connack


def _sent(connection: Connection) -> list[object]:
    return list(packets_in(connection.data_to_send(), MQTT_5))


def test_connack_announces_the_server_limits() -> None:
    # §3.2.2.3: receive maximum, maximum packet size, topic alias maximum, and what is
    # available.
    limits = Limits(max_packet_size=4096, max_awaiting_pubrel=7, max_topic_aliases=3)
    _, connack = _accepted(limits, assigned_client_id="auto-1")
    assert connack.code == 0
    props = connack.properties
    assert props.get(Property.RECEIVE_MAXIMUM) == 7
    assert props.get(Property.MAXIMUM_PACKET_SIZE) == 4096
    assert props.get(Property.TOPIC_ALIAS_MAXIMUM) == 3
    assert props.get(Property.SHARED_SUBSCRIPTION_AVAILABLE) == 1
    assert props.get(Property.ASSIGNED_CLIENT_IDENTIFIER) == "auto-1"  # §3.2.2.3.7
    assert props.get(Property.SESSION_EXPIRY_INTERVAL) is None  # not changed: not sent


def test_session_expiry_is_cut_to_the_server_maximum_and_said_so() -> None:
    # §3.2.2.3.2: the server tells the client the interval it uses instead of the one asked.
    asked = Properties([(Property.SESSION_EXPIRY_INTERVAL, 0xFFFFFFFF)])
    connection, connack = _accepted(Limits(max_session_expiry=3600), asked)
    assert connack.properties.get(Property.SESSION_EXPIRY_INTERVAL) == 3600
    assert connection.v5 is not None
    assert connection.v5.session_expiry == 3600


def test_server_keep_alive_replaces_a_longer_or_absent_one() -> None:
    # §3.2.2.3.14: the client must use the Server Keep Alive instead of its own.
    connection = _connect(Limits(max_keep_alive=30), keep_alive=0)
    assert connection.keep_alive == 30
    connection.accept(Session("c", persistent=False), session_present=False)
    [connack] = packets_in(connection.data_to_send(), MQTT_5)
    assert isinstance(connack, Connack)
    assert connack.properties.get(Property.SERVER_KEEP_ALIVE) == 30
    assert _connect(Limits(max_keep_alive=30), keep_alive=20).keep_alive == 20


def test_response_information_only_when_asked() -> None:
    # §3.1.2.11.6 / §3.2.2.3.15
    asked = Properties([(Property.REQUEST_RESPONSE_INFORMATION, 1)])
    _, connack = _accepted(properties=asked, response_information="devices/d/")
    assert connack.properties.get(Property.RESPONSE_INFORMATION) == "devices/d/"
    _, connack = _accepted(response_information="devices/d/")
    assert connack.properties.get(Property.RESPONSE_INFORMATION) is None


def test_a_refusal_carries_the_reason_code_and_string() -> None:
    # §3.2.2.2 and §3.2.2.3.9: 0x87 not authorized, with the words of the auth log.
    connection = _connect()
    connection.refuse(5, 0x87, "unknown certificate key sha256:ab")
    [connack] = packets_in(connection.data_to_send(), MQTT_5)
    assert connack == Connack(
        False, 0x87, Properties([(Property.REASON_STRING, "unknown certificate key sha256:ab")])
    )
    assert connection.state == CLOSED
    quiet = _connect(Limits(reason_strings=False))
    quiet.refuse(4)  # bad user name or password: 0x86 in 5.0
    assert packets_in(quiet.data_to_send(), MQTT_5) == [Connack(False, 0x86)]


def test_enhanced_authentication_is_refused_with_0x8c() -> None:
    # §4.12: the server supports no authentication method: 0x8C bad authentication method.
    connection = Connection(Limits())
    connect = Connect(
        MQTT_5, "c", True, 0, properties=Properties([(Property.AUTHENTICATION_METHOD, "SCRAM")])
    )
    [event] = connection.receive_data(wire(connect, level=MQTT_5), 0)
    assert isinstance(event, ConnectionRefused)
    [connack] = packets_in(connection.data_to_send(), MQTT_5)
    assert isinstance(connack, Connack)
    assert connack.code == 0x8C
    assert "SCRAM" in str(connack.properties.get(Property.REASON_STRING))


def test_an_unsupported_authentication_method_is_cut_short_in_the_reason() -> None:
    # The reason is logged and goes back in the CONNACK: a client's 60,000 characters do not.
    connection = Connection(Limits())
    method = "M" * 60_000
    properties = Properties([(Property.AUTHENTICATION_METHOD, method)])
    connect = Connect(MQTT_5, "c", True, 0, properties=properties)
    [event] = connection.receive_data(wire(connect, level=MQTT_5), 0)
    assert isinstance(event, ConnectionRefused)
    assert len(event.reason) < 300


def test_authentication_data_without_a_method_is_a_protocol_error() -> None:
    # §3.1.2.11.10: Authentication Data without an Authentication Method is a Protocol Error.
    connection = Connection(Limits())
    properties = Properties([(Property.AUTHENTICATION_DATA, b"secret")])
    connect = Connect(MQTT_5, "c", True, 0, properties=properties)
    [event] = connection.receive_data(wire(connect, level=MQTT_5), 0)
    assert isinstance(event, ConnectionRefused)
    assert "authentication data without an authentication method" in event.reason
    assert connection.state == CLOSED
    # §3.1.4 [MQTT-3.1.4-1] allows a CONNACK saying why, which Mosquitto sends.
    [connack] = packets_in(connection.data_to_send(), MQTT_5)
    assert isinstance(connack, Connack)
    assert connack.code == 0x82


def test_a_response_topic_with_a_wildcard_closes_with_0x82() -> None:
    # §3.3.2.3.5 [MQTT-3.3.2-14]: the Response Topic is a topic name, without wildcards.
    for response_topic in ("reply/+", "reply/#"):
        connection, _ = _accepted()
        properties = Properties([(Property.RESPONSE_TOPIC, response_topic)])
        [event] = feed(connection, Publish("t", b"", properties=properties))
        assert isinstance(event, ProtocolViolation)
        assert "response_topic contains a wildcard" in event.reason
        assert event.code == 0x82


def test_a_too_large_connect_gets_0x95() -> None:
    # §3.2.2.2: 0x95 packet too large, in a CONNACK a 5.0 client reads.
    connection = Connection(Limits(max_packet_size=1024))
    connect = Connect(MQTT_5, "c" * 2000, True, 0)
    [event] = connection.receive_data(wire(connect, level=MQTT_5), 0)
    assert isinstance(event, ConnectionRefused)
    [connack] = packets_in(connection.data_to_send(), MQTT_5)
    assert isinstance(connack, Connack)
    assert connack.code == 0x95


def test_the_server_says_why_it_disconnects_a_5_client_and_not_a_3_1_1_one() -> None:
    # §3.14.2.1: DISCONNECT with a reason code (0x98 administrative action), only after a
    # successful CONNACK; 3.1.1 has no server DISCONNECT.
    connection, _ = _accepted()
    connection.disconnect(0x98, "credential revoked")
    assert _sent(connection) == [
        Disconnect(0x98, Properties([(Property.REASON_STRING, "credential revoked")]))
    ]
    old = Connection(Limits())
    old.receive_data(wire(Connect(MQTT_3_1_1, "c", True, 0)), 0)
    old.accept(Session("c", persistent=False), session_present=False)
    old.data_to_send()
    old.disconnect(0x98, "credential revoked")
    assert old.data_to_send() == b""


def test_request_problem_information_0_keeps_reasons_on_connack_and_disconnect_only() -> None:
    # §3.1.2.11.7: with 0 the server MAY still send a Reason String on CONNACK and DISCONNECT,
    # and MUST NOT on other packets; none of the server's other packets carries one anyway.
    no_problems = Properties([(Property.REQUEST_PROBLEM_INFORMATION, 0)])
    refused = _connect(properties=no_problems)
    refused.refuse(5, 0x87, "revoked")
    assert _sent(refused) == [
        Connack(False, 0x87, Properties([(Property.REASON_STRING, "revoked")]))
    ]
    connection, _ = _accepted(properties=no_problems)
    connection.receive_data(wire(Pubrec(7), level=MQTT_5), 0)  # an id not in flight
    assert _sent(connection) == [Pubrel(7, 0x92)]  # no Reason String with its 0x92
    connection.disconnect(0x98, "credential revoked")
    assert _sent(connection) == [
        Disconnect(0x98, Properties([(Property.REASON_STRING, "credential revoked")]))
    ]


def test_no_reason_string_takes_a_packet_past_the_client_s_maximum_packet_size() -> None:
    # §3.2.2.3.9 [MQTT-3.2.2-19] and §3.14.2.2.3 [MQTT-3.14.2-3]: the Reason String is left out.
    small = Properties([(Property.MAXIMUM_PACKET_SIZE, 30)])
    refused = _connect(properties=small)
    refused.refuse(5, 0x87, "no client certificate and no user name")
    assert packets_in(refused.data_to_send(), MQTT_5) == [Connack(False, 0x87)]
    connection, _ = _accepted(properties=small)
    connection.disconnect(0x81, "PUBLISH: topic name must not contain the wildcards")
    assert _sent(connection) == [Disconnect(0x81)]
    roomy, _ = _accepted(properties=Properties([(Property.MAXIMUM_PACKET_SIZE, 100)]))
    roomy.disconnect(0x81, "too long for 30 bytes")
    assert _sent(roomy) == [
        Disconnect(0x81, Properties([(Property.REASON_STRING, "too long for 30 bytes")]))
    ]


def test_an_auth_packet_without_an_authentication_method_is_a_protocol_error() -> None:
    # §4.12 / §3.15: AUTH only follows a CONNECT that named an Authentication Method.
    connection, _ = _accepted()
    [violation] = connection.receive_data(b"\xf0\x00", 0)
    assert isinstance(violation, ProtocolViolation)
    assert violation.reason == "AUTH: no authentication method was agreed in CONNECT (MQTT 5 §4.12)"
    assert violation.code == 0x82


def test_topic_aliases_from_the_client() -> None:
    # §3.3.2.3.4: a PUBLISH with topic and alias sets it; one with an empty topic uses it.
    connection, _ = _accepted(Limits(max_topic_aliases=2))
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
    connection, _ = _accepted(Limits(max_topic_aliases=2))
    [violation] = feed(connection, Publish("t", b"", properties=Properties([(0x23, 3)])))
    assert isinstance(violation, ProtocolViolation)
    assert violation.code == 0x94
    connection, _ = _accepted(Limits(max_topic_aliases=2))
    [violation] = feed(connection, Publish("", b"", properties=Properties([(0x23, 1)])))
    assert isinstance(violation, ProtocolViolation)
    assert violation.code == 0x82


def test_a_client_publish_with_a_subscription_identifier_is_a_protocol_error() -> None:
    # §3.3.4: only the server sends Subscription Identifiers.
    connection, _ = _accepted()
    [violation] = feed(connection, Publish("t", b"", properties=Properties([(0x0B, 1)])))
    assert isinstance(violation, ProtocolViolation)


def test_topic_aliases_to_the_client() -> None:
    # §3.3.2.3.4: the server sets an alias with the topic once, then sends the alias alone.
    asked = Properties([(Property.TOPIC_ALIAS_MAXIMUM, 1)])
    connection, _ = _accepted(Limits(max_topic_aliases=5), asked)
    for topic in ("a", "a", "b"):
        connection.publish(Outgoing(topic, b"x", 0))
    first, second, third = _sent(connection)
    assert isinstance(first, Publish)
    assert isinstance(second, Publish)
    assert isinstance(third, Publish)
    assert (first.topic, first.properties.get(Property.TOPIC_ALIAS)) == ("a", 1)
    assert (second.topic, second.properties.get(Property.TOPIC_ALIAS)) == ("", 1)
    assert (third.topic, third.properties.get(Property.TOPIC_ALIAS)) == ("b", None)


def test_the_client_receive_maximum_bounds_messages_in_flight() -> None:
    # §3.1.2.11.3 / §4.9: no more unacknowledged QoS 1 and 2 PUBLISHes than it allows.
    asked = Properties([(Property.RECEIVE_MAXIMUM, 2)])
    connection, _ = _accepted(Limits(max_inflight=20), asked)
    messages = [Outgoing("t", bytes([n]), 1) for n in range(3)]
    events = [event for message in messages for event in connection.publish(message)]
    assert events == [MessageSent(messages[0]), MessageSent(messages[1])]
    feed(connection, Puback(messages[0].packet_id))
    assert messages[2].sent


def test_nothing_larger_than_the_client_reads_is_sent() -> None:
    # §3.1.2.11.4: discarded as if delivered.
    asked = Properties([(Property.MAXIMUM_PACKET_SIZE, 64)])
    connection, _ = _accepted(properties=asked)
    big, small = Outgoing("t", b"x" * 100, 1), Outgoing("t", b"x", 1)
    assert connection.publish(big) == [MessageDropped(big, "client_maximum_packet_size")]
    assert connection.publish(small) == [MessageSent(small)]
    assert connection.session is not None
    assert list(connection.session.inflight) == [2]


def test_message_expiry_drops_late_messages_and_forwards_the_time_left() -> None:
    # §3.3.2.3.3: not delivered once expired; otherwise the interval minus the time waited,
    # never more than the publisher set ([MQTT-3.3.2-6]): sent in the millisecond it came
    # (uvloop's clock counts whole ones), 3018.342 + 3600 - 3018.342 is 3600.0000000000005.
    connection, _ = _accepted()
    expiry = Properties([(Property.USER_PROPERTY, ("a", "1")), (0x02, 10)])
    fresh = Outgoing("t", b"", 0, properties=expiry, expires_at=10.0)
    stale = Outgoing("t", b"", 0, properties=expiry, expires_at=10.0)
    assert connection.publish(fresh, now=6.5) == []
    assert connection.publish(stale, now=10.0) == [MessageDropped(stale, "message_expiry")]
    [sent] = _sent(connection)
    assert isinstance(sent, Publish)
    assert sent.properties == Properties([(Property.USER_PROPERTY, ("a", "1")), (0x02, 4)])
    hour = Outgoing("t", b"", 0, properties=Properties([(0x02, 3600)]), expires_at=3018.342 + 3600)
    assert connection.publish(hour, now=3018.342) == []
    [sent] = _sent(connection)
    assert isinstance(sent, Publish)
    assert sent.properties.message_expiry == 3600


def test_a_refused_publish_is_acknowledged_with_its_reason_and_ends_a_qos_2_flow() -> None:
    # §3.4.2.1 / §3.5.2.1: 0x87 not authorized; a PUBREC of 0x80 or more ends the flow.
    connection, _ = _accepted()
    feed(connection, Publish("t", b"", 2, packet_id=9))
    connection.acknowledge(9, 2, 0x87)
    [pubrec] = _sent(connection)
    assert getattr(pubrec, "code", None) == 0x87
    assert connection.session is not None
    assert not connection.session.awaiting_pubrel


def test_a_pubrec_of_0x80_or_more_ends_the_flow_without_pubrel() -> None:
    # §4.3.3: PUBREL answers a PUBREC below 0x80 only; §4.4: the message is not sent again;
    # §4.9: its place in the client's Receive Maximum is free.
    connection, _ = _accepted(properties=Properties([(Property.RECEIVE_MAXIMUM, 1)]))
    refused, waiting = Outgoing("t", b"1", 2), Outgoing("t", b"2", 2)
    connection.publish(refused)
    connection.publish(waiting)
    _sent(connection)
    assert feed(connection, Pubrec(1, 0x80)) == [
        MessageCompleted(refused),
        MessageSent(waiting),
    ]
    [publish] = _sent(connection)  # no PUBREL before it
    assert isinstance(publish, Publish)
    assert publish.packet_id == 2
    assert connection.session is not None
    assert list(connection.session.inflight) == [2]
    assert feed(connection, Pubrec(1, 0x80)) == []  # unknown now: nothing
    assert _sent(connection) == []


def test_a_pubrec_for_a_qos_1_message_is_answered_packet_identifier_not_found() -> None:
    # §3.6.2.1: 0x92 when the id is not a QoS 2 message's; the QoS 1 one still waits for
    # its PUBACK (§4.3.2), which completes it.
    connection, _ = _accepted()
    message = Outgoing("t", b"1", 1)
    connection.publish(message)
    _sent(connection)
    assert feed(connection, Pubrec(1)) == []
    assert _sent(connection) == [Pubrel(1, 0x92)]
    assert feed(connection, Puback(1)) == [MessageCompleted(message)]


def test_session_expiry_in_disconnect_after_zero_in_connect_is_a_protocol_error() -> None:
    # §3.14.2.2.2
    connection, _ = _accepted()
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
        connection, _ = _accepted()
        props = b"\x26" + pair
        body = b"\x00\x01t" + bytes((len(props),)) + props
        [violation] = connection.receive_data(b"\x30" + bytes((len(body),)) + body, 0)
        assert isinstance(violation, ProtocolViolation)
        assert violation.code == 0x81, pair
