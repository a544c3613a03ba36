"""MQTT 3.1.1 (and 3.1) statements about CONNECT, CONNACK, the will, DISCONNECT and the fixed
header, each against a real broker over mutual TLS with the exact bytes a raw client writes
(docs/conformance-3.1.1.md maps every statement to its test)."""

import pytest

from broker.mqtt.encode import encode
from broker.mqtt.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    Connack,
    Connect,
    Disconnect,
    Puback,
    Publish,
    Suback,
    Subscribe,
    SubscribeRequest,
    Will,
)
from broker.mqtt.wire import utf8_field, varint
from tests.e2e.conformance311 import Broker, publishes, until_marker, until_pingresp
from tests.e2e.conformance311 import conformance as conformance


def _connect_bytes(name: str, level: int, flags: int, payload: bytes) -> bytes:
    body = utf8_field(name) + bytes((level, flags)) + b"\x00\x3c" + payload
    return b"\x10" + varint(len(body)) + body


@pytest.mark.parametrize(
    ("name", "level", "answer"),
    [
        ("MQTT", 3, Connack(False, 1)),  # [MQTT-3.1.2-2]: level not supported with this name
        ("MQTT", 6, Connack(False, 1)),
        ("MQTT", 0, Connack(False, 1)),
        ("MQIsdp", 4, Connack(False, 1)),
        ("MQIsdp", 3, Connack(False, 0)),  # MQTT 3.1
    ],
)
def test_an_unsupported_protocol_level_is_connack_1_then_closed(
    conformance: Broker, name: str, level: int, answer: Connack
) -> None:
    with conformance.raw() as raw:
        raw.send(_connect_bytes(name, level, 0x02, utf8_field("level")))
        assert raw.read() == answer
        if answer.code:
            assert raw.closed()  # [MQTT-3.2.2-5]


@pytest.mark.parametrize(
    ("flags", "payload"),
    [
        (0x03, utf8_field("r")),  # [MQTT-3.1.2-3]: the reserved flag is not 0
        (0x0A, utf8_field("q")),  # [MQTT-3.1.2-11/13]: Will QoS 1 without the Will Flag
        (0x22, utf8_field("r")),  # [MQTT-3.1.2-15]: Will Retain without the Will Flag
        (0x1E, utf8_field("q") + utf8_field("w") + utf8_field("x")),  # [MQTT-3.1.2-14]: QoS 3
        (0x82, utf8_field("u")),  # [MQTT-3.1.2-19]: the User Name flag, no user name
        (0xC2, utf8_field("u") + utf8_field("user")),  # [MQTT-3.1.2-21]: no password
        (0x06, utf8_field("w") + utf8_field("topic")),  # [MQTT-3.1.2-9]: no will message
        (0x02, utf8_field("c") + utf8_field("extra")),  # [MQTT-3.1.2-18/20]: what no flag says
        (0x02, b""),  # [MQTT-3.1.3-3]: no client id
        (0x02, b"\x00\x02\xc3\x28"),  # [MQTT-3.1.3-4], [MQTT-1.5.3-1]: not UTF-8
        (0x02, utf8_field("a\x00b")),  # [MQTT-1.5.3-2]: U+0000
        (0x06, utf8_field("w") + utf8_field("a/+") + utf8_field("x")),  # [MQTT-3.1.3-10], §4.7.1
        (0x82, utf8_field("u") + b"\x00\x01\xff"),  # [MQTT-3.1.3-11]: a user name not UTF-8
    ],
)
def test_a_connect_that_does_not_conform_is_closed_without_connack(
    conformance: Broker, flags: int, payload: bytes
) -> None:
    # [MQTT-3.1.4-1]: validated, and closed without CONNACK when it does not conform.
    with conformance.raw() as raw:
        raw.send(_connect_bytes("MQTT", MQTT_3_1_1, flags, payload))
        assert raw.read() is None


def test_the_first_packet_must_be_connect(conformance: Broker) -> None:
    # [MQTT-3.1.0-1] (the client's rule) and [MQTT-4.8.0-1]: anything else closes, nothing
    # sent, not even a CONNACK ([MQTT-3.2.0-1]).
    with conformance.raw() as raw:
        raw.send(Subscribe(1, (SubscribeRequest("a", 0),)))
        assert raw.read() is None


def test_nothing_after_a_refused_connect_is_processed(conformance: Broker) -> None:
    # [MQTT-3.1.4-5]: a PUBLISH written together with a refused CONNECT goes nowhere.
    with conformance.subscribed("refused-watch", ("refused/after", 0)) as watcher:
        with conformance.raw() as raw:
            raw.send(Connect(MQTT_3_1_1, "", False, 60), Publish("refused/after", b"x"))
            assert raw.read() == Connack(False, 2)  # [MQTT-3.1.3-8]
            assert raw.closed()
        assert until_marker(watcher, "refused-watch") == []


@pytest.mark.parametrize(
    ("client_id", "code"),
    [("x" * 23, 0), ("x" * 24, 2), ("", 2), ("id-3.1", 0)],
)
def test_mqtt_3_1_client_ids_are_1_to_23_characters(
    conformance: Broker, client_id: str, code: int
) -> None:
    # MQTT 3.1 §3.1 (CONNECT, Client Identifier): 1 to 23 characters, else CONNACK 2
    # "identifier rejected"; its CONNACK has no Session Present flag.
    with conformance.raw(MQTT_3_1) as raw:
        raw.send(Connect(MQTT_3_1, client_id, True, 60))
        assert raw.read() == Connack(False, code)
        if code:
            assert raw.closed()
        else:
            assert until_pingresp(raw) == []


def test_3_1_1_client_ids_beyond_23_characters_are_allowed(conformance: Broker) -> None:
    # [MQTT-3.1.3-5]: 1 to 23 of [0-9a-zA-Z] MUST be allowed; more MAY be (3.1.1 only).
    for client_id in ("0123456789abcdefghijABC", "a-longer-id/with:other+characters#" * 3):
        conformance.client(client_id).close()


def test_a_second_connect_closes_the_connection(conformance: Broker) -> None:
    # [MQTT-3.1.0-2]: a protocol violation; the session it made stays usable elsewhere.
    with conformance.client("twice") as raw:
        raw.send(Connect(MQTT_3_1_1, "twice", True, 60))
        assert raw.closed()


def test_session_present_follows_clean_session(conformance: Broker) -> None:
    # [MQTT-3.2.2-1..3] and [MQTT-3.1.2-4/6]: kept with CleanSession 0, thrown away with 1.
    conformance.client("sp", clean=True).close()
    conformance.client("sp", clean=False, present=False).close()
    conformance.client("sp", clean=False, present=True).close()
    conformance.client("sp", clean=True, present=False).close()
    conformance.client("sp", clean=False, present=False).close()
    conformance.client("sp", clean=True).close()


def test_a_take_over_closes_the_first_connection(conformance: Broker) -> None:
    # [MQTT-3.1.4-2]: the server disconnects the existing client with the same id.
    with conformance.client("taken") as first, conformance.client("taken") as second:
        assert first.closed()
        assert until_pingresp(second) == []


@pytest.mark.parametrize("retain", [False, True])
def test_a_will_is_published_when_the_connection_drops(conformance: Broker, retain: bool) -> None:
    # [MQTT-3.1.2-8], [MQTT-3.1.2-16/17]: published as retained only with Will Retain; to a
    # subscription made before it, RETAIN is 0 ([MQTT-3.3.1-9]), to a new one 1 ([-8]).
    topic = f"will/dropped/{int(retain)}"
    name = f"will-watch-{int(retain)}"
    with conformance.subscribed(name, (topic, 1)) as watcher:
        with conformance.raw() as dying:
            will = Will(topic, b"gone", 1, retain)
            dying.send(Connect(MQTT_3_1_1, f"dying-{int(retain)}", True, 60, will=will))
            assert dying.read() == Connack(False, 0)
        # Closed without DISCONNECT.
        [sent] = publishes(watcher, 1)
        assert (sent.topic, sent.payload, sent.qos, sent.retain) == (topic, b"gone", 1, False)
        assert sent.packet_id is not None
        watcher.send(Puback(sent.packet_id), Subscribe(2, (SubscribeRequest(topic, 0),)))
        assert watcher.read() == Suback(2, (0,))
        kept = until_marker(watcher, name)
        assert kept == ([Publish(topic, b"gone", 0, retain=True)] if retain else [])
        watcher.send(Publish(topic, b"", 1, retain=True, packet_id=3))  # [MQTT-3.3.1-10]
        assert Puback(3) in (watcher.read(), watcher.read())  # and its own copy, QoS 0


def test_disconnect_discards_the_will(conformance: Broker) -> None:
    # [MQTT-3.14.4-3], [MQTT-3.1.2-10]: after DISCONNECT the will is not published;
    # [MQTT-3.1.2-12]: without the Will Flag there is none to publish.
    topic = "will/discarded"
    with conformance.subscribed("discard-watch", (topic, 0)) as watcher:
        with conformance.raw() as leaving:
            leaving.send(Connect(MQTT_3_1_1, "leaving", True, 60, will=Will(topic, b"will")))
            assert leaving.read() == Connack(False, 0)
            leaving.send(Publish(topic, b"last"), Disconnect())
            assert leaving.closed()
        with conformance.client("no-will") as dropped:
            dropped.send(Publish(topic, b"no will"))
        # Closed without DISCONNECT.
        assert [p.payload for p in publishes(watcher, 2)] == [b"last", b"no will"]
        assert until_marker(watcher, "discard-watch") == []


@pytest.mark.parametrize(
    "data",
    [
        b"\xe1\x00",  # [MQTT-3.14.1-1]: DISCONNECT's reserved flags
        b"\xc2\x00",  # [MQTT-2.2.2-1/2]: PINGREQ's
        b"\x60\x02\x00\x01",  # [MQTT-3.6.1-1]: PUBREL must be 0010
        b"\x80\x06\x00\x01\x00\x01a\x00",  # [MQTT-3.8.1-1]: SUBSCRIBE must be 0010
        b"\xa0\x05\x00\x01\x00\x01a",  # [MQTT-3.10.1-1]: UNSUBSCRIBE must be 0010
        b"\x36\x05\x00\x01a\x00\x01",  # [MQTT-3.3.1-4]: QoS 3
        b"\x00\x00",  # reserved packet type 0
        b"\xf0\x00",  # AUTH (type 15) does not exist in 3.1.1
        b"\x20\x02\x00\x00",  # a CONNACK from a client
        b"\xe0\x01\x00",  # a DISCONNECT with a remaining length (§3.14.2: none)
        b"\x40\x03\x00\x01\x00",  # a PUBACK with a byte too many (§3.4.2)
        b"\xc0\xff\xff\xff\xff\x01",  # remaining length of five bytes (§2.2.3)
    ],
)
def test_an_invalid_fixed_header_or_length_closes(conformance: Broker, data: bytes) -> None:
    # [MQTT-4.8.0-1]: a protocol violation closes the connection; nothing is answered.
    raw = conformance.client("flags")
    raw.send(data)
    assert raw.closed()
    raw.close()


def test_mqtt_3_1_connect_and_session(conformance: Broker) -> None:
    # MQTT 3.1: "MQIsdp" level 3; its CONNACK has no Session Present (it is 3.1.1's).
    with conformance.raw(MQTT_3_1) as raw:
        raw.send(encode(Connect(MQTT_3_1, "old", False, 60), MQTT_3_1))
        assert raw.read() == Connack(False, 0)
        raw.send(Subscribe(1, (SubscribeRequest("old/t", 1),)))
        assert raw.read() == Suback(1, (1,))
        raw.send(Publish("old/t", b"x", 1, packet_id=2))
        answers = [raw.read(), raw.read()]
        assert Puback(2) in answers
        [message] = [packet for packet in answers if isinstance(packet, Publish)]
        assert (message.topic, message.payload, message.qos) == ("old/t", b"x", 1)
    with conformance.raw(MQTT_3_1) as raw:  # resumed: still no Session Present flag
        raw.send(Connect(MQTT_3_1, "old", False, 60))
        assert raw.read() == Connack(False, 0)
        # Not acknowledged, so sent again ([MQTT-4.4.0-1]), DUP set ([MQTT-3.3.1-1]).
        again = raw.read()
        assert again == Publish("old/t", b"x", 1, dup=True, packet_id=message.packet_id)
        assert message.packet_id is not None
        raw.send(Puback(message.packet_id))
    with conformance.raw(MQTT_3_1) as raw:
        raw.send(Connect(MQTT_3_1, "old", True, 60))
        assert raw.read() == Connack(False, 0)


def test_an_empty_retained_will_removes_the_retained_message(conformance: Broker) -> None:
    # [MQTT-3.3.1-10/11] hold for a will too ([MQTT-3.1.2-17]: published as a retained
    # message): delivered empty, and the message retained on its topic is gone.
    topic = "will/empty"
    with conformance.client("empty-will-pub") as publisher:
        publisher.send(Publish(topic, b"old", 1, retain=True, packet_id=1))
        assert publisher.read() == Puback(1)
    with conformance.subscribed("empty-will-watch", (topic, 0)) as watcher:
        [old] = publishes(watcher, 1)
        assert (old.payload, old.retain) == (b"old", True)
        with conformance.raw() as dying:
            will = Will(topic, b"", 0, retain=True)
            dying.send(Connect(MQTT_3_1_1, "empty-will", True, 60, will=will))
            assert dying.read() == Connack(False, 0)
        [empty] = publishes(watcher, 1)
        assert (empty.payload, empty.retain) == (b"", False)
    with conformance.subscribed("empty-will-late", (topic, 0)) as late:
        assert until_marker(late, "empty-will-late") == []
