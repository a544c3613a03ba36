"""MQTT 5 on one connection, bytes in and bytes out: CONNECT and CONNACK (limits announced,
refusals and their reasons, authentication) and why the server disconnects. Each test names
the 5.0 section it checks."""

from broker.mqtt.connection import CLOSED, Connection
from broker.mqtt.events import (
    ConnectionRefused,
    ProtocolViolation,
)
from broker.mqtt.limits import Limits
from broker.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Publish,
    Pubrec,
    Pubrel,
    Will,
)
from broker.mqtt.properties import Properties, Property
from broker.mqtt.session import Session
from tests.broker.mqtt.v5_connection import v5_accepted, v5_connect, v5_sent
from tests.broker.mqtt.wire_helpers import feed, packets_in, wire


def test_connack_announces_the_server_limits() -> None:
    # §3.2.2.3: receive maximum, maximum packet size, topic alias maximum, and what is
    # available.
    limits = Limits(max_packet_size=4096, max_awaiting_pubrel=7, max_topic_aliases=3)
    _, connack = v5_accepted(limits, assigned_client_id="auto-1")
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
    connection, connack = v5_accepted(Limits(max_session_expiry=3600), asked)
    assert connack.properties.get(Property.SESSION_EXPIRY_INTERVAL) == 3600
    assert connection.v5 is not None
    assert connection.v5.session_expiry == 3600


def test_server_keep_alive_replaces_a_longer_or_absent_one() -> None:
    # §3.2.2.3.14: the client must use the Server Keep Alive instead of its own.
    connection = v5_connect(Limits(max_keep_alive=30), keep_alive=0)
    assert connection.keep_alive == 30
    connection.accept(Session("c", persistent=False), session_present=False)
    [connack] = packets_in(connection.data_to_send(), MQTT_5)
    assert isinstance(connack, Connack)
    assert connack.properties.get(Property.SERVER_KEEP_ALIVE) == 30
    assert v5_connect(Limits(max_keep_alive=30), keep_alive=20).keep_alive == 20


def test_response_information_only_when_asked() -> None:
    # §3.1.2.11.6 / §3.2.2.3.15
    asked = Properties([(Property.REQUEST_RESPONSE_INFORMATION, 1)])
    _, connack = v5_accepted(properties=asked, response_information="devices/d/")
    assert connack.properties.get(Property.RESPONSE_INFORMATION) == "devices/d/"
    _, connack = v5_accepted(response_information="devices/d/")
    assert connack.properties.get(Property.RESPONSE_INFORMATION) is None


def test_a_refusal_carries_the_reason_code_and_string() -> None:
    # §3.2.2.2 and §3.2.2.3.9: 0x87 not authorized, with the words of the auth log.
    connection = v5_connect()
    connection.refuse(5, 0x87, "unknown certificate key sha256:ab")
    [connack] = packets_in(connection.data_to_send(), MQTT_5)
    assert connack == Connack(
        False, 0x87, Properties([(Property.REASON_STRING, "unknown certificate key sha256:ab")])
    )
    assert connection.state == CLOSED
    quiet = v5_connect(Limits(reason_strings=False))
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
        connection, _ = v5_accepted()
        properties = Properties([(Property.RESPONSE_TOPIC, response_topic)])
        [event] = feed(connection, Publish("t", b"", properties=properties))
        assert isinstance(event, ProtocolViolation)
        assert "response_topic contains a wildcard" in event.reason
        assert event.code == 0x82


def test_an_empty_response_topic_closes_with_0x82() -> None:
    # §3.3.2.3.5: the Response Topic is the topic name of the reply, and a topic name is at
    # least one character long (§4.7.3 [MQTT-4.7.3-1]); a will's is the same property.
    connection, _ = v5_accepted()
    properties = Properties([(Property.RESPONSE_TOPIC, "")])
    [event] = feed(connection, Publish("t", b"", properties=properties))
    assert isinstance(event, ProtocolViolation)
    assert "response_topic is empty" in event.reason
    assert event.code == 0x82
    will = Will("w", b"", 1, properties=properties)
    connection = Connection(Limits())
    [refused] = connection.receive_data(
        wire(Connect(MQTT_5, "c", True, 0, will=will), level=MQTT_5), 0
    )
    assert isinstance(refused, ConnectionRefused)
    [connack] = packets_in(connection.data_to_send(), MQTT_5)
    assert isinstance(connack, Connack)
    assert connack.code == 0x82


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
    connection, _ = v5_accepted()
    connection.disconnect(0x98, "credential revoked")
    assert v5_sent(connection) == [
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
    refused = v5_connect(properties=no_problems)
    refused.refuse(5, 0x87, "revoked")
    assert v5_sent(refused) == [
        Connack(False, 0x87, Properties([(Property.REASON_STRING, "revoked")]))
    ]
    connection, _ = v5_accepted(properties=no_problems)
    connection.receive_data(wire(Pubrec(7), level=MQTT_5), 0)  # an id not in flight
    assert v5_sent(connection) == [Pubrel(7, 0x92)]  # no Reason String with its 0x92
    connection.disconnect(0x98, "credential revoked")
    assert v5_sent(connection) == [
        Disconnect(0x98, Properties([(Property.REASON_STRING, "credential revoked")]))
    ]


def test_no_reason_string_takes_a_packet_past_the_client_s_maximum_packet_size() -> None:
    # §3.2.2.3.9 [MQTT-3.2.2-19] and §3.14.2.2.3 [MQTT-3.14.2-3]: the Reason String is left out.
    small = Properties([(Property.MAXIMUM_PACKET_SIZE, 30)])
    refused = v5_connect(properties=small)
    refused.refuse(5, 0x87, "no client certificate and no user name")
    assert packets_in(refused.data_to_send(), MQTT_5) == [Connack(False, 0x87)]
    connection, _ = v5_accepted(properties=small)
    connection.disconnect(0x81, "PUBLISH: topic name must not contain the wildcards")
    assert v5_sent(connection) == [Disconnect(0x81)]
    roomy, _ = v5_accepted(properties=Properties([(Property.MAXIMUM_PACKET_SIZE, 100)]))
    roomy.disconnect(0x81, "too long for 30 bytes")
    assert v5_sent(roomy) == [
        Disconnect(0x81, Properties([(Property.REASON_STRING, "too long for 30 bytes")]))
    ]


def test_an_auth_packet_without_an_authentication_method_is_a_protocol_error() -> None:
    # §4.12 / §3.15: AUTH only follows a CONNECT that named an Authentication Method.
    connection, _ = v5_accepted()
    [violation] = connection.receive_data(b"\xf0\x00", 0)
    assert isinstance(violation, ProtocolViolation)
    assert violation.reason == "AUTH: no authentication method was agreed in CONNECT (MQTT 5 §4.12)"
    assert violation.code == 0x82
