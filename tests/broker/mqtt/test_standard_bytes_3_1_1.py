"""Every MQTT 3.1.1 packet as the standard's bytes, written byte by byte from its sections
(fixed header §2.2, then the packet's variable header and payload), not produced by our
encoder: a round trip alone would pass an encoder and decoder that are wrong the same way.
Each of them round trips at 5.0 too; 3.1's CONNECT and CONNACK. The 5.0 packets' bytes:
``test_standard_bytes_5``."""

import pytest

from broker.mqtt.encode import encode
from broker.mqtt.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
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
from tests.broker.mqtt.wire_helpers import decoded

AT_3_1_1: list[tuple[Packet, bytes]] = [
    (
        Connect(MQTT_3_1_1, "dev-1", True, 60, "user", b"\x00pw", Will("a/b", b"bye", 1, True)),
        # §3.1.2: name, level 4, flags user|password|will retain|will QoS 1|will|clean = 0xEE,
        # keep alive 60; §3.1.3: client id, will topic, will message, user name, password.
        b"\x10\x26\x00\x04MQTT\x04\xee\x00\x3c\x00\x05dev-1\x00\x03a/b\x00\x03bye"
        b"\x00\x04user\x00\x03\x00pw",
    ),
    (Connack(True, 0), b"\x20\x02\x01\x00"),  # §3.2.2.2: session present in bit 0
    # §3.3.1: 0x30 | DUP 0x08 | QoS 2 << 1 | RETAIN 1; topic, packet id 7, payload.
    (Publish("a/b", b"\x00\xff", 2, True, True, 7), b"\x3d\x09\x00\x03a/b\x00\x07\x00\xff"),
    (Publish("a/b", b"", 0), b"\x30\x05\x00\x03a/b"),  # §3.3.2.2: no packet id at QoS 0
    (Puback(1), b"\x40\x02\x00\x01"),
    (Pubrec(2), b"\x50\x02\x00\x02"),
    (Pubrel(3), b"\x62\x02\x00\x03"),  # §3.6.1: flags 0010
    (Pubcomp(65535), b"\x70\x02\xff\xff"),
    (
        Subscribe(9, (SubscribeRequest("a/+", 2), SubscribeRequest("#", 0))),
        b"\x82\x0c\x00\x09\x00\x03a/+\x02\x00\x01#\x00",  # §3.8.1: flags 0010
    ),
    (Suback(9, (2, 0x80)), b"\x90\x04\x00\x09\x02\x80"),  # §3.9.3: 0x80 is Failure
    (Unsubscribe(10, ("a/+", "#")), b"\xa2\x0a\x00\x0a\x00\x03a/+\x00\x01#"),
    (Unsuback(10), b"\xb0\x02\x00\x0a"),
    (Pingreq(), b"\xc0\x00"),
    (Pingresp(), b"\xd0\x00"),
    (Disconnect(), b"\xe0\x00"),
]
EVERY_PACKET = [packet for packet, _ in AT_3_1_1]


@pytest.mark.parametrize(("packet", "data"), AT_3_1_1, ids=lambda p: type(p).__name__)
def test_every_packet_is_the_standard_s_bytes_at_3_1_1(packet: Packet, data: bytes) -> None:
    assert encode(packet, MQTT_3_1_1) == data
    assert decoded(data, MQTT_3_1_1) == packet


@pytest.mark.parametrize("packet", EVERY_PACKET, ids=lambda p: type(p).__name__)
def test_every_packet_round_trips_at_5(packet: Packet) -> None:
    if isinstance(packet, Connect):
        packet = Connect(MQTT_5, *(getattr(packet, f) for f in packet.__slots__[1:]))
    assert decoded(encode(packet, MQTT_5), MQTT_5) == packet


def test_mqtt_3_1_connect_and_its_connack_without_session_present() -> None:
    connect = Connect(MQTT_3_1, "old-device", True, 30)
    data = encode(connect, MQTT_3_1)
    assert data[2:10] == b"\x00\x06MQIsdp"
    assert decoded(data, MQTT_3_1) == connect
    assert encode(Connack(True, 0), MQTT_3_1) == b"\x20\x02\x00\x00"  # no such flag in 3.1
