"""An attacker on the MQTT listener, over real TLS, against a broker with its default limits
(but a 2 s CONNECT deadline): what each attack reaches, and that a bystander device still
works afterwards.

Covered elsewhere and not repeated here: handshake floods and idle connections
(``test_unadmitted_hosts``, ``tests/reliability/test_bad_input_tls``), certificate chains too
long or too large (``test_bad_input_tls::test_certificate_chain_past_the_bounds``), legacy
TLS versions, a 256 MB CONNECT (``test_bad_input_mqtt``), QoS 2 without PUBREL, SUBSCRIBE,
retained and session floods (``test_limits``), 1,025 user properties on a PUBLISH
(``test_unadmitted_hosts``), and the log lines of each (``test_refusal_flood``,
``test_device_log_flood``).
"""

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from OpenSSL import SSL

from broker.mqtt.codes import Reason
from broker.mqtt.encode import encode
from broker.mqtt.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Puback,
    Publish,
    Pubrec,
    Subscribe,
    SubscribeRequest,
    Will,
)
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import WAIT
from tests.e2e.limited_fleet import Fleet
from tests.e2e.peers import HOST, Raw

CONNECT_DEADLINE = 2  # tls_handshake_timeout: the handshake, then the CONNECT, each within
TELEMETRY = "v1/devices/me/telemetry"
RECEIVE_MAXIMUM = 100  # the max_awaiting_pubrel default, an MQTT 5 client's Receive Maximum
TLS_ALERT = 21  # RFC 5246 §6.2.1: a record's content type


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(tmp_path, tls_handshake_timeout=CONNECT_DEADLINE)
    try:
        yield made
    finally:
        made.broker.stop()


def _v5(fleet: Fleet, client_id: str) -> Raw:
    raw = Raw(fleet.broker.port, fleet.broker.server_cert, fleet.certfile, level=MQTT_5)
    raw.connect(Connect(MQTT_5, client_id, True, 0))
    return raw


def _disconnected(raw: Raw) -> Disconnect:
    packet = raw.read()
    while isinstance(packet, Publish | Puback | Pubrec):  # the answers to what went before
        packet = raw.read()
    assert isinstance(packet, Disconnect), packet
    assert raw.closed()
    return packet


def test_a_connect_sent_a_byte_at_a_time_ends_at_the_connect_deadline(fleet: Fleet) -> None:
    # Slowloris: each byte would restart a deadline counted from the last one. Counted from
    # the connection's start (3.1.1 §3.1.4), it is closed with most of its CONNECT unsent.
    connect = encode(Connect(MQTT_3_1_1, "slow" * 20, True, 0), MQTT_3_1_1)
    raw = Raw(fleet.broker.port, fleet.broker.server_cert, fleet.certfile)
    sent = 0
    try:
        for byte in connect:
            raw.sock.sendall(bytes([byte]))
            sent += 1
            time.sleep(0.1)  # the attacker's pace: the whole CONNECT would take 8 s
    except OSError:
        pass  # closed by the broker while sending
    assert raw.closed()
    assert sent < len(connect)
    raw.close()
    fleet.bystander_round_trip()


def test_a_tls_1_2_renegotiation_is_refused(fleet: Fleet) -> None:
    # A renegotiation could present another certificate after the broker checked the first
    # (RFC 5746 protects the handshake, not our per-connection identity). The broker never
    # answers the new ClientHello with a handshake record (a ServerHello): only alerts
    # (no_renegotiation, RFC 5246 §7.2.2; then close_notify, at the keep-alive's end).
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_max_proto_version(SSL.TLS1_2_VERSION)
    context.use_certificate_chain_file(str(fleet.certfile))
    context.use_privatekey_file(str(fleet.certfile))
    sock = socket.create_connection((HOST, fleet.broker.port), timeout=WAIT)
    sock.settimeout(None)  # pyOpenSSL treats a socket with a timeout as non-blocking
    tls = SSL.Connection(context, sock)
    tls.set_connect_state()
    try:
        tls.do_handshake()
        assert tls.get_protocol_version_name() == "TLSv1.2"
        tls.sendall(encode(Connect(MQTT_3_1_1, "renegotiator", True, 1), MQTT_3_1_1))
        assert tls.recv(4) == b"\x20\x02\x00\x00"  # CONNACK 0
        assert tls.renegotiate()
        sock.setblocking(False)
        with pytest.raises(SSL.WantReadError):
            tls.do_handshake()  # the ClientHello goes; nothing to read yet
        sock.settimeout(WAIT)
        received = b""  # read past pyOpenSSL, as records, until the broker closes
        while chunk := sock.recv(65536):
            received += chunk
    finally:
        sock.close()
    types = []
    while received:
        types.append(received[0])
        received = received[5 + int.from_bytes(received[3:5], "big") :]
    assert types
    assert set(types) == {TLS_ALERT}
    fleet.bystander_round_trip()


def test_publishes_past_the_receive_maximum_are_disconnected_with_0x93(fleet: Fleet) -> None:
    # 5.0 §3.3.4: a client that sends more QoS 1/2 PUBLISHes than the Receive Maximum the
    # broker gave it, unanswered, gets DISCONNECT 0x93. QoS 2 without PUBREL holds each.
    with _v5(fleet, "greedy-rm") as raw:
        over = [Publish(TELEMETRY, b"x", 2, packet_id=n) for n in range(1, RECEIVE_MAXIMUM + 2)]
        raw.send(*over)
        assert _disconnected(raw).code == Reason.RECEIVE_MAXIMUM_EXCEEDED
    assert fleet.hits("max_awaiting_pubrel") == 1
    fleet.bystander_round_trip()


def test_a_topic_alias_past_the_maximum_is_disconnected_with_0x94(fleet: Fleet) -> None:
    # 5.0 §3.3.2.3.4: above the Topic Alias Maximum the broker announced (max_topic_aliases).
    with _v5(fleet, "greedy-alias") as raw:
        for alias in range(1, 11):  # the 10 it may set, each a topic the broker keeps
            raw.send(Publish(TELEMETRY, b"x", 0, properties=Properties(
                [(Property.TOPIC_ALIAS, alias)])))  # fmt: skip
        raw.send(Publish(TELEMETRY, b"x", 0, properties=Properties([(Property.TOPIC_ALIAS, 11)])))
        assert _disconnected(raw).code == Reason.TOPIC_ALIAS_INVALID
    fleet.bystander_round_trip()


def test_a_property_sent_twice_is_disconnected_with_0x82(fleet: Fleet) -> None:
    # 5.0 §2.2.2.2: a property other than a user property appears once at most.
    twice = Properties([(Property.MESSAGE_EXPIRY_INTERVAL, 1)] * 2)
    with _v5(fleet, "repeater") as raw:
        raw.send(Publish(TELEMETRY, b"x", 1, packet_id=1, properties=twice))
        assert _disconnected(raw).code == Reason.PROTOCOL_ERROR
    fleet.bystander_round_trip()


@pytest.mark.parametrize("where", ["CONNECT", "SUBSCRIBE"])
def test_thousands_of_user_properties_are_not_read(fleet: Fleet, where: str) -> None:
    # Every packet that may carry them reads at most 1,024 (an implementation limit, 5.0
    # §4.13): past them, CONNACK or DISCONNECT 0x97 (quota exceeded).
    many = Properties([(Property.USER_PROPERTY, ("k", "v"))] * 5000)
    with Raw(fleet.broker.port, fleet.broker.server_cert, fleet.certfile, level=MQTT_5) as raw:
        if where == "CONNECT":
            raw.send(Connect(MQTT_5, "talkative", True, 0, properties=many))
            answer = raw.read()
            assert isinstance(answer, Connack)
        else:
            raw.connect(Connect(MQTT_5, "talkative", True, 0))
            raw.send(Subscribe(1, (SubscribeRequest(TELEMETRY, 1),), properties=many))
            answer = _disconnected(raw)
        assert answer.code == Reason.QUOTA_EXCEEDED
        assert raw.closed()
    fleet.bystander_round_trip()


def test_a_will_larger_than_max_packet_size_is_refused_before_it_is_read(fleet: Fleet) -> None:
    # The will is part of the CONNECT, so max_packet_size bounds it (5.0 §3.2.2.2: 0x95): its
    # payload is at most 64 KiB (a two-byte length), its properties make up the rest.
    heavy = Properties([(Property.USER_PROPERTY, ("k", "v" * 255))] * 1000)
    will = Will(TELEMETRY, b"w" * 65535, 1, False, properties=heavy)
    with Raw(fleet.broker.port, fleet.broker.server_cert, fleet.certfile, level=MQTT_5) as raw:
        connect = encode(Connect(MQTT_5, "heavy-will", True, 0, will=will), MQTT_5)
        assert len(connect) > 300_000
        raw.send(connect[:64])  # the fixed header and the protocol name decide: none of it read
        answer = raw.read()
        assert isinstance(answer, Connack)
        assert answer.code == Reason.PACKET_TOO_LARGE
        assert raw.closed()
    fleet.bystander_round_trip()


def test_a_publish_sent_a_byte_a_tls_record_arrives_whole(fleet: Fleet) -> None:
    # Each read of a packet not yet whole used to be appended to what came before: quadratic
    # copying (``broker.mqtt.intake``). Here 32 KiB in 32,768 records of one byte.
    subscriber = fleet.paho("trickle-watcher")
    try:
        assert subscriber.subscribe((TELEMETRY, 0)) == [0]
        payload = bytes(range(256)) * 128
        with Raw(fleet.broker.port, fleet.broker.server_cert, fleet.certfile) as raw:
            raw.connect(Connect(MQTT_3_1_1, "trickler", True, 0))
            for byte in encode(Publish(TELEMETRY, payload, 0), MQTT_3_1_1):
                raw.sock.sendall(bytes([byte]))  # one TLS record each
            assert subscriber.receive(1)[0].payload == payload
    finally:
        subscriber.close()
