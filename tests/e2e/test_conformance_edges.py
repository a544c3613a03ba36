"""Edges public conformance suites (paho.mqtt.testing, Mosquitto's broker tests) probe, each
against a real broker over TLS with the exact bytes a raw client writes."""

from pathlib import Path

import pytest

from broker.mqtt.encode import encode
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
    Will,
)
from broker.mqtt.properties import NO_PROPERTIES, Properties, Property
from broker.mqtt.wire import Reader, varint
from tests.e2e.harness import BrokerThread, write_pem
from tests.e2e.peers import Raw
from tests.e2e.v5_client import v5_client

TELEMETRY = "v1/devices/me/telemetry"


def _raw(broker: BrokerThread, folder: Path, name: str, level: int = MQTT_5) -> Raw:
    _, issued = broker.provision(name)
    return Raw(broker.port, broker.server_cert, write_pem(folder, issued, name), level)


def _connect(
    broker: BrokerThread, folder: Path, name: str, level: int = MQTT_5, most: int | None = None
) -> tuple[Raw, Connack | None]:
    """A raw client of the new device ``name`` (5.0: Maximum Packet Size ``most``) and what
    answered its CONNECT, None if the broker closed without answering."""
    raw = _raw(broker, folder, name, level)
    asked = Properties([(Property.MAXIMUM_PACKET_SIZE, most)]) if most else NO_PROPERTIES
    raw.send(Connect(level, name, True, 60, properties=asked))
    connack = raw.read()
    assert connack is None or isinstance(connack, Connack)
    return raw, connack


def test_a_topic_alias_of_0_is_disconnect_0x94(broker: BrokerThread, tmp_path: Path) -> None:
    # 5.0 §3.3.2.3.4 [MQTT-3.3.2-8]: 0x94 "Topic Alias invalid", as for an alias above the
    # maximum (Mosquitto 2.0.11 says 0x81 for 0, 0x94 above its maximum).
    raw, connack = _connect(broker, tmp_path, "alias-zero")
    assert connack is not None
    raw.send(Publish(TELEMETRY, b"x", properties=Properties([(Property.TOPIC_ALIAS, 0)])))
    packet = raw.read()
    assert isinstance(packet, Disconnect)
    assert packet.code == 0x94
    assert raw.read() is None
    raw.close()


def test_a_connack_keeps_within_the_client_s_maximum_packet_size(
    broker: BrokerThread, tmp_path: Path
) -> None:
    # 5.0 §3.1.2.11.4 [MQTT-3.1.2-24]: 20 bytes hold what bounds the client, not the rest
    # (§3.2.2.3: absent, the flags mean what they said, Topic Alias Maximum 0).
    raw, connack = _connect(broker, tmp_path, "tiny", most=20)
    assert connack is not None
    assert connack.code == 0
    assert len(encode(connack, MQTT_5)) <= 20
    assert [key for key, _ in connack.properties] == [
        Property.RECEIVE_MAXIMUM, Property.MAXIMUM_PACKET_SIZE,
    ]  # fmt: skip
    # A SUBACK of 16 codes is 21 bytes: neither sent nor left out ([MQTT-3.8.4-1]), so the
    # connection closes, 0x95 "for this Client".
    raw.send(Subscribe(1, tuple(SubscribeRequest(f"a/{n}", 0) for n in range(16))))
    packet = raw.read()
    assert isinstance(packet, Disconnect)
    assert packet.code == 0x95
    assert raw.read() is None
    raw.close()
    # And nothing at all when not even that fits: the connection closes, as Mosquitto's does.
    raw, connack = _connect(broker, tmp_path, "tinier", most=12)
    assert connack is None
    raw.close()


@pytest.mark.parametrize(
    ("level", "extra"),
    [
        (MQTT_3_1_1, b"\x00\x02\xff\xfe\x00"),  # not UTF-8 (§1.5.3)
        (MQTT_3_1_1, b"\x00\x03#/a\x00"),  # '#' not last (§4.7.1.2)
        (MQTT_3_1_1, b"\x00\x00\x00"),  # empty ([MQTT-4.7.3-1])
        (MQTT_5, b"\x00\x02\xc3\x28\x00"),  # not UTF-8: malformed, 0x81
        (MQTT_5, b"\x00\x01a\xc0"),  # reserved option bits ([MQTT-3.8.3-5]), 0x81
    ],
)
def test_a_malformed_filter_past_max_filters_per_subscribe_still_closes(
    broker: BrokerThread, tmp_path: Path, level: int, extra: bytes
) -> None:
    # 3.1.1 §4.8, 5.0 §4.13: the packet is malformed wherever the filter is.
    bound = broker.settings.max_filters_per_subscribe
    raw, connack = _connect(broker, tmp_path, f"filters-{level}", level)
    assert connack is not None
    valid = Subscribe(1, tuple(SubscribeRequest(f"a/{n}", 0) for n in range(bound)))
    whole = encode(valid, level)
    reader = Reader(whole, 1)
    reader.varint("remaining length")
    body = whole[reader.at :] + extra
    raw.send(bytes([0x82]) + varint(len(body)) + body)
    packet = raw.read()
    if level == MQTT_5:
        assert isinstance(packet, Disconnect)
        assert packet.code == 0x81
        packet = raw.read()
    assert packet is None  # no SUBACK: nothing was subscribed
    raw.close()
    # Valid filters past the bound are still refused, each, and the connection goes on.
    raw, _ = _connect(broker, tmp_path, f"many-{level}", level)
    raw.send(Subscribe(2, (*valid.requests, SubscribeRequest("é/+", 0))))
    suback = raw.read()
    assert isinstance(suback, Suback)
    assert suback.codes[-1] == (0x97 if level == MQTT_5 else 0x80)
    raw.close()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xc1\x00", 0x81),  # PINGREQ with a reserved flag: 5.0 §2.1.3, malformed
        (b"\x0a\xc0t", 0x82),  # reserved packet type 0: a protocol error
    ],
)
def test_a_bad_fixed_header_is_answered_as_mosquitto_answers_it(
    broker: BrokerThread, tmp_path: Path, data: bytes, code: int
) -> None:
    # Mosquitto's 01-bad-packets: "malformed packet" for the flags, "protocol error" for the type.
    raw, connack = _connect(broker, tmp_path, f"header-{code:x}")
    assert connack is not None
    raw.send(data)
    packet = raw.read()
    assert isinstance(packet, Disconnect)
    assert packet.code == code
    assert raw.read() is None
    raw.close()


def test_a_publish_with_packet_identifier_0_is_disconnect_0x82(
    broker: BrokerThread, tmp_path: Path
) -> None:
    # [MQTT-2.3.1-1]: the id parses, its value is not allowed: a Protocol Error (5.0 §1.2),
    # as Mosquitto's DISCONNECT says too (0x81 is for a packet that cannot be parsed).
    raw, connack = _connect(broker, tmp_path, "packet-id-0")
    assert connack is not None
    raw.send(encode(Publish(TELEMETRY, b"x", 1, packet_id=0), MQTT_5))
    packet = raw.read()
    assert isinstance(packet, Disconnect)
    assert packet.code == 0x82
    assert raw.read() is None
    raw.close()


def test_a_5_0_connect_with_an_empty_will_topic_gets_connack_0x82(
    broker: BrokerThread, tmp_path: Path
) -> None:
    # Mosquitto's 07-will-null-topic: 5.0 §3.1.4 [MQTT-3.1.4-1] allows the CONNACK, 3.1.1's
    # §3.1.4 forbids it.
    for level, answer in ((MQTT_5, Connack(False, 0x82)), (MQTT_3_1_1, None)):
        raw = _raw(broker, tmp_path, f"null-will-{level}", level)
        raw.send(Connect(level, "null-will", True, 60, will=Will("", b"x")))
        packet = raw.read()
        if answer is not None:
            assert isinstance(packet, Connack)
            assert packet.code == answer.code
            packet = raw.read()
        assert packet is None
        raw.close()


@pytest.mark.parametrize(
    ("level", "clean_before", "clean_after", "will"),
    [
        (MQTT_3_1_1, False, False, False),  # the session goes on: no will
        (MQTT_3_1_1, True, False, True),  # it ended with the connection taken over
        (MQTT_5, False, False, False),  # [MQTT-3.1.3-9]: a connection to the session came
        (MQTT_5, False, True, True),  # Clean Start ends it: the will goes
    ],
)
def test_a_take_over_publishes_the_will_only_if_the_session_ends(
    broker: BrokerThread, tmp_path: Path, level: int, clean_before: bool, clean_after: bool,
    will: bool,
) -> None:  # fmt: skip
    # 5.0 §3.1.3.2.2, as Mosquitto's 07-will-takeover has it (3.1.1 too).
    name = f"taker-{level}-{int(clean_before)}{int(clean_after)}"
    broker.application(f"watch-{name}", f"watch-{name}", "pw-watcher")
    watcher = v5_client(
        broker.port, broker.server_cert, None, username=f"watch-{name}", password="pw-watcher"
    )
    try:
        assert watcher.wait_connack()[0] == 0
        assert watcher.subscribe(f"devices/{name}/status", qos=0) == [0]
        first = _raw(broker, tmp_path, name, level)
        certfile = tmp_path / f"{name}.nopass.pem"

        def connect(raw: Raw, clean: bool, with_will: bool) -> None:
            expiry = Properties([(Property.SESSION_EXPIRY_INTERVAL, 0 if clean else 60)])
            raw.send(
                Connect(
                    level, "same", clean, 60,
                    will=Will("v1/devices/me/status", b"gone") if with_will else None,
                    properties=expiry if level == MQTT_5 else NO_PROPERTIES,
                )
            )  # fmt: skip
            connack = raw.read()
            assert isinstance(connack, Connack)
            assert connack.code == 0

        connect(first, clean_before, with_will=True)
        second = Raw(broker.port, broker.server_cert, certfile, level)
        connect(second, clean_after, with_will=False)
        second.send(Publish("v1/devices/me/status", b"after"))
        payloads = [watcher.next_message().payload for _ in range(2 if will else 1)]
        assert payloads == ([b"gone", b"after"] if will else [b"after"])
        first.close()
        second.close()
    finally:
        watcher.close()
