"""MQTT 5.0 statements binding a Server that no other test checks on the wire, each over
mutual TLS with a raw 5.0 client (``docs/conformance-5.0.md`` maps every statement to its
test): topic aliases do not outlive a connection (§3.3.2.3.4 [MQTT-3.3.2-7]), a send quota
of 0 holds back PUBLISHes only (§4.9 [MQTT-3.3.4-10], [MQTT-4.9.0-3]), a will
kept as retained (§3.1.2.7 [MQTT-3.1.2-15]), a refused CONNECT has no session present
(§3.2.2.1.1 [MQTT-3.2.2-6]), a subscription granted QoS 1 caps QoS 2 messages
(§3.8.4 [MQTT-3.8.4-8]) and a subscription sent again replaces the first (§3.8.4
[MQTT-3.8.4-3])."""

import time
from pathlib import Path

from broker.mqtt.packets import (
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    SubscribeRequest,
    Unsuback,
    Unsubscribe,
    Will,
)
from broker.mqtt.properties import Properties, Property
from tests.e2e.harness import BrokerThread, write_pem
from tests.e2e.peers import Raw
from tests.e2e.suite5 import wait_until

TELEMETRY = "v1/devices/me/telemetry"
ATTRIBUTES = "v1/devices/me/attributes"


def _certfile(broker: BrokerThread, folder: Path, name: str) -> Path:
    _, issued = broker.provision(name)
    return write_pem(folder, issued, name)


def _raw(broker: BrokerThread, certfile: Path) -> Raw:
    return Raw(broker.port, broker.server_cert, certfile, MQTT_5)


def _subscribe(raw: Raw, packet_id: int, *requests: SubscribeRequest) -> Suback:
    raw.send(Subscribe(packet_id, requests))
    suback = raw.read()
    assert isinstance(suback, Suback)
    return suback


def test_topic_aliases_end_with_their_connection(broker: BrokerThread, tmp_path: Path) -> None:
    """[MQTT-3.3.2-7]: neither side carries a Topic Alias mapping to the next connection. The
    broker's alias for a topic is sent with the topic name again on the session's next
    connection, and the client's alias from before is unknown: a Protocol Error."""
    certfile = _certfile(broker, tmp_path, "aliases")
    aliases = Properties([(Property.TOPIC_ALIAS_MAXIMUM, 5)])
    keep = Properties([(Property.SESSION_EXPIRY_INTERVAL, 60), (Property.TOPIC_ALIAS_MAXIMUM, 5)])
    for attempt in range(2):
        with _raw(broker, certfile) as raw:
            connack = raw.connect(Connect(MQTT_5, "al", attempt == 0, 60, properties=keep))
            assert connack.session_present == (attempt == 1)
            if attempt == 0:
                assert _subscribe(raw, 1, SubscribeRequest(TELEMETRY, 0)).codes == (0,)
                sent_alias = Properties([(Property.TOPIC_ALIAS, 1)])
                raw.send(Publish(TELEMETRY, b"set", properties=sent_alias))
            raw.send(Publish(TELEMETRY, b"named"))
            for _ in range(2 - attempt):
                delivered = raw.read()
                assert isinstance(delivered, Publish)
                # The first PUBLISH of a topic on a connection names it (§3.3.2.3.4).
                if delivered.payload in (b"set", b"named") and attempt == 1:
                    assert delivered.topic == TELEMETRY
            if attempt == 0:
                raw.send(Disconnect(0))
    with _raw(broker, certfile) as raw:
        raw.connect(Connect(MQTT_5, "al", False, 60, properties=aliases))
        raw.send(Publish("", b"old alias", properties=Properties([(Property.TOPIC_ALIAS, 1)])))
        disconnect = raw.read()
        assert isinstance(disconnect, Disconnect)
        assert disconnect.code == 0x82
        assert raw.read() is None


def test_a_send_quota_of_0_holds_back_publishes_only(broker: BrokerThread, tmp_path: Path) -> None:
    """[MQTT-3.3.4-9], [MQTT-4.9.0-2]: no more unacknowledged QoS 1 and 2 PUBLISHes than the
    client's Receive Maximum; [MQTT-3.3.4-10], [MQTT-4.9.0-3]: the other packets are not
    held back (QoS 0 PUBLISHes wait in order behind, which §4.9 allows)."""
    certfile = _certfile(broker, tmp_path, "quota")
    with _raw(broker, certfile) as sub, _raw(broker, certfile) as pub:
        one = Properties([(Property.RECEIVE_MAXIMUM, 1)])
        sub.connect(Connect(MQTT_5, "sub", True, 60, properties=one))
        pub.connect(Connect(MQTT_5, "pub", True, 60))
        assert _subscribe(sub, 1, SubscribeRequest(TELEMETRY, 1)).codes == (1,)
        pub.send(Publish(TELEMETRY, b"q1-a", 1, packet_id=1))
        pub.send(Publish(TELEMETRY, b"q1-b", 1, packet_id=2))
        assert [pub.read(), pub.read()] == [Puback(1), Puback(2)]
        first = sub.read()
        assert isinstance(first, Publish)
        assert first.payload == b"q1-a"
        assert sub.publishes_before_pingresp() == []  # PINGRESP, and no second PUBLISH
        assert _subscribe(sub, 2, SubscribeRequest(ATTRIBUTES, 1)).codes == (1,)
        assert first.packet_id is not None
        sub.send(Puback(first.packet_id))
        second = sub.read()
        assert isinstance(second, Publish)
        assert second.payload == b"q1-b"


def test_a_retained_will_is_kept_retained(broker: BrokerThread, tmp_path: Path) -> None:
    """[MQTT-3.1.2-15]: a will with Will Retain 1 is published as a retained message; the
    reason code 0x04 asks for the will on a DISCONNECT (§3.14.2.1)."""
    certfile = _certfile(broker, tmp_path, "retained-will")
    with _raw(broker, certfile) as raw:
        will = Will(ATTRIBUTES, b"offline", 1, retain=True)
        raw.connect(Connect(MQTT_5, "w", True, 60, will=will))
        raw.send(Disconnect(0x04))
        assert raw.read() is None
    with _raw(broker, certfile) as late:
        late.connect(Connect(MQTT_5, "late", True, 60))
        assert _subscribe(late, 1, SubscribeRequest(ATTRIBUTES, 1)).codes == (1,)
        kept = late.read()
        assert isinstance(kept, Publish)
        assert (kept.topic, kept.payload, kept.retain) == (ATTRIBUTES, b"offline", True)


def test_a_refused_connect_has_no_session_present(broker: BrokerThread, tmp_path: Path) -> None:
    """[MQTT-3.2.2-6]: a CONNACK with a non-zero reason code has Session Present 0, even when
    the session exists (here: a second CONNECT of the session with a broken property), and
    [MQTT-3.2.2-7] the connection closes after it."""
    certfile = _certfile(broker, tmp_path, "refused")
    keep = Properties([(Property.SESSION_EXPIRY_INTERVAL, 60)])
    with _raw(broker, certfile) as raw:
        raw.connect(Connect(MQTT_5, "s", True, 60, properties=keep))
        raw.send(Disconnect(0))
        assert raw.read() is None
    with _raw(broker, certfile) as raw:
        # Receive Maximum 0 is a Protocol Error (§3.1.2.11.3).
        raw.send(Connect(MQTT_5, "s", False, 60, properties=Properties([(0x21, 0)])))
        connack = raw.read()
        assert isinstance(connack, Connack)
        assert (connack.code, connack.session_present) == (0x82, False)
        assert raw.read() is None


def test_a_subscription_caps_the_qos_and_one_sent_again_replaces_it(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """[MQTT-3.8.4-8]: a message goes at the lower of its QoS and the subscription's;
    [MQTT-3.8.4-3]: the same filter subscribed again replaces the subscription (one copy,
    at the new QoS), and [MQTT-3.3.1-9] its Retain Handling 0 sends the retained message
    again, no message lost; [MQTT-3.3.1-8] a PUBLISH with RETAIN 0 left the retained
    message as it was; [MQTT-3.3.1-3] a copy's DUP is its own, not the publisher's."""
    certfile = _certfile(broker, tmp_path, "capped")
    with _raw(broker, certfile) as sub, _raw(broker, certfile) as pub:
        sub.connect(Connect(MQTT_5, "sub", True, 60))
        pub.connect(Connect(MQTT_5, "pub", True, 60))
        pub.send(Publish(TELEMETRY, b"kept", 1, retain=True, packet_id=1))
        assert pub.read() == Puback(1)
        assert _subscribe(sub, 1, SubscribeRequest(TELEMETRY, 1)).codes == (1,)
        retained = sub.read()
        assert isinstance(retained, Publish)
        assert (retained.payload, retained.qos, retained.retain) == (b"kept", 1, True)
        assert retained.packet_id is not None
        sub.send(Puback(retained.packet_id))
        pub.send(Publish(TELEMETRY, b"two", 2, packet_id=2))
        assert pub.read() == Pubrec(2)
        capped = sub.read()
        assert isinstance(capped, Publish)
        assert (capped.payload, capped.qos) == (b"two", 1)
        assert capped.packet_id is not None
        sub.send(Puback(capped.packet_id))
        assert _subscribe(sub, 2, SubscribeRequest(TELEMETRY, 0)).codes == (0,)
        again = sub.read()
        assert isinstance(again, Publish)
        assert (again.payload, again.qos, again.retain) == (b"kept", 0, True)
        pub.send(Publish(TELEMETRY, b"once", 1, dup=True, packet_id=3))
        assert pub.read() == Puback(3)
        [once] = sub.publishes_before_pingresp()
        assert (once.payload, once.qos, once.dup) == (b"once", 0, False)


def _shared_pair(raw_a: Raw, raw_b: Raw, pub: Raw, qos: int) -> None:
    for raw, client_id in ((raw_a, "a"), (raw_b, "b"), (pub, "p")):
        raw.connect(Connect(MQTT_5, client_id, True, 60))
    for raw in (raw_a, raw_b):
        assert _subscribe(raw, 1, SubscribeRequest(f"$share/g/{TELEMETRY}", qos)).codes == (qos,)


def _first_of_pair(raw_a: Raw, raw_b: Raw, pub: Raw, qos: int) -> tuple[Raw, Raw, Publish]:
    """The member that got the first message, the other one, and the message."""
    pub.send(Publish(TELEMETRY, b"one", qos, packet_id=1))
    assert isinstance(pub.read(), Puback | Pubrec)
    chosen, other = raw_a, raw_b
    sent = chosen.publishes_before_pingresp()
    if not sent:
        chosen, other = raw_b, raw_a
        sent = [chosen.read()]  # type: ignore[list-item]
    [message] = sent
    assert isinstance(message, Publish)
    assert message.payload == b"one"
    assert message.packet_id is not None
    return chosen, other, message


def test_a_shared_message_refused_by_its_member_goes_to_no_other(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """[MQTT-4.8.2-6]: a PUBACK or PUBREC of 0x80 or more from the member discards the
    message: no other member of the group gets it."""
    certfile = _certfile(broker, tmp_path, "shared-refusal")
    for qos in (1, 2):
        with _raw(broker, certfile) as a, _raw(broker, certfile) as b, _raw(broker, certfile) as p:
            _shared_pair(a, b, p, qos)
            chosen, other, message = _first_of_pair(a, b, p, qos)
            assert message.packet_id is not None
            chosen.send(
                Puback(message.packet_id, 0x80) if qos == 1 else Pubrec(message.packet_id, 0x80)
            )
            assert other.publishes_before_pingresp() == []
            assert chosen.publishes_before_pingresp() == []


def test_a_shared_qos_2_message_whose_member_s_session_ends_goes_to_no_other(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """[MQTT-4.8.2-5]: a QoS 2 message sent to a member whose session ends before it is
    acknowledged is not sent to another member (a QoS 1 one is: ``test_shared_subscriptions``)."""
    certfile = _certfile(broker, tmp_path, "shared-qos2")
    with _raw(broker, certfile) as a, _raw(broker, certfile) as b, _raw(broker, certfile) as p:
        _shared_pair(a, b, p, 2)
        chosen, other, _ = _first_of_pair(a, b, p, 2)
        chosen.close()  # its clean session ends with the message unacknowledged
        with _raw(broker, certfile) as again:  # once this is connected, that session ended
            again.connect(Connect(MQTT_5, "a" if chosen is a else "b", True, 60))
        p.send(Publish(TELEMETRY, b"two", 2, packet_id=2))
        assert isinstance(p.read(), Pubrec)
        assert [m.payload for m in other.publishes_before_pingresp()] == [b"two"]


def test_a_retained_message_keeps_its_properties_and_the_time_left(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """[MQTT-3.3.2-6]: a retained message sent on SUBSCRIBE carries what is left of its
    Message Expiry Interval; [MQTT-3.3.2-4], -15, -16, -17, -18, -20: its Payload Format
    Indicator, Response Topic, Correlation Data, User Properties (in order) and Content
    Type as published."""
    certfile = _certfile(broker, tmp_path, "retained-properties")
    sent = Properties(
        [
            (Property.PAYLOAD_FORMAT_INDICATOR, 1),
            (Property.MESSAGE_EXPIRY_INTERVAL, 3600),
            (Property.USER_PROPERTY, ("b", "2")),
            (Property.CONTENT_TYPE, "text/plain"),
            (Property.USER_PROPERTY, ("a", "1")),
            (Property.RESPONSE_TOPIC, "v1/devices/me/rpc/response/1"),
            (Property.CORRELATION_DATA, b"\x00\x01"),
            (Property.USER_PROPERTY, ("b", "0")),
        ]
    )
    with _raw(broker, certfile) as pub, _raw(broker, certfile) as sub:
        pub.connect(Connect(MQTT_5, "p", True, 60))
        pub.send(Publish(ATTRIBUTES, b"kept", 1, retain=True, packet_id=1, properties=sent))
        assert pub.read() == Puback(1)
        sub.connect(Connect(MQTT_5, "s", True, 60))
        assert _subscribe(sub, 1, SubscribeRequest(ATTRIBUTES, 1)).codes == (1,)
        kept = sub.read()
        assert isinstance(kept, Publish)
        assert kept.retain
        got = list(kept.properties)
        left = kept.properties.get(Property.MESSAGE_EXPIRY_INTERVAL)
        assert isinstance(left, int)
        assert 3590 <= left <= 3600
        assert [p for p in got if p[0] != Property.MESSAGE_EXPIRY_INTERVAL] == [
            p for p in sent if p[0] != Property.MESSAGE_EXPIRY_INTERVAL
        ]


def test_unsubscribe_stops_new_messages_and_completes_those_in_flight(
    broker: BrokerThread, tmp_path: Path
) -> None:
    """[MQTT-3.10.4-2]: no new message for the filters unsubscribed; [MQTT-3.10.4-3] a QoS 2
    message sent before completes (PUBREL for its PUBREC); [MQTT-3.10.4-4], -5, -6,
    [MQTT-3.11.3-1], -2: one UNSUBACK for all the filters, in their order, 0x11 for the
    filter no subscription had; [MQTT-3.3.1-6], [MQTT-3.3.1-7]: a retained PUBLISH with no
    payload removes the retained message and is not kept itself."""
    certfile = _certfile(broker, tmp_path, "unsubscriber")
    with _raw(broker, certfile) as sub, _raw(broker, certfile) as pub:
        sub.connect(Connect(MQTT_5, "sub", True, 60))
        pub.connect(Connect(MQTT_5, "pub", True, 60))
        assert _subscribe(sub, 1, SubscribeRequest(TELEMETRY, 2)).codes == (2,)
        pub.send(Publish(TELEMETRY, b"in flight", 2, packet_id=1))
        assert pub.read() == Pubrec(1)
        sent = sub.read()
        assert isinstance(sent, Publish)
        assert sent.packet_id is not None
        sub.send(Unsubscribe(2, (ATTRIBUTES, TELEMETRY)))
        assert sub.read() == Unsuback(2, (0x11, 0x00))
        sub.send(Pubrec(sent.packet_id))
        assert sub.read() == Pubrel(sent.packet_id)
        sub.send(Pubcomp(sent.packet_id))
        pub.send(Publish(TELEMETRY, b"after"))
        pub.send(Publish(ATTRIBUTES, b"kept", retain=True))
        pub.send(Publish(ATTRIBUTES, b"", retain=True))
        assert _subscribe(pub, 1, SubscribeRequest(ATTRIBUTES, 0)).codes == (0,)
        assert pub.publishes_before_pingresp() == []  # nothing retained any more
        assert sub.publishes_before_pingresp() == []
    with _raw(broker, certfile) as late:
        late.connect(Connect(MQTT_5, "late", True, 60))
        assert _subscribe(late, 1, SubscribeRequest(ATTRIBUTES, 0)).codes == (0,)
        assert late.publishes_before_pingresp() == []


def test_an_expired_retained_message_is_not_sent(broker: BrokerThread, tmp_path: Path) -> None:
    """[MQTT-3.3.2-5]: a retained message whose Message Expiry Interval has passed is not sent
    to a new subscription; one that has time left is, with what is left ([MQTT-3.3.2-6])."""
    certfile = _certfile(broker, tmp_path, "expired-retained")
    with _raw(broker, certfile) as pub, _raw(broker, certfile) as sub:
        pub.connect(Connect(MQTT_5, "p", True, 60))
        for topic, seconds in ((f"{ATTRIBUTES}/short", 1), (f"{ATTRIBUTES}/long", 3600)):
            expiry = Properties([(Property.MESSAGE_EXPIRY_INTERVAL, seconds)])
            pub.send(Publish(topic, b"kept", retain=True, properties=expiry))
        sent = time.monotonic()
        assert pub.publishes_before_pingresp() == []  # both retained by now
        wait_until(sent + 1.1)
        sub.connect(Connect(MQTT_5, "s", True, 60))
        assert _subscribe(sub, 1, SubscribeRequest(f"{ATTRIBUTES}/#", 0)).codes == (0,)
        [kept] = sub.publishes_before_pingresp()
        assert kept.topic == f"{ATTRIBUTES}/long"
        left = kept.properties.get(Property.MESSAGE_EXPIRY_INTERVAL)
        assert isinstance(left, int)
        assert 3590 <= left < 3600
