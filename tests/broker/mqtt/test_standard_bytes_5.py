"""Each MQTT 5.0 packet as the standard's bytes, written byte by byte from its sections (fixed
header §2.2, then the packet's variable header, its property length (§2.2.2.1) and properties
in order, then its payload), not produced by our encoder: a round trip alone would pass an
encoder and decoder that are wrong the same way. The 3.1.1 packets' bytes:
``test_standard_bytes_3_1_1``."""

import pytest

from broker.mqtt.codes import Reason
from broker.mqtt.encode import encode
from broker.mqtt.packets import (
    MQTT_5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Puback,
    Publish,
    Pubrel,
    Subscribe,
    SubscribeRequest,
    Unsuback,
    Will,
)
from broker.mqtt.properties import Properties, Property
from tests.broker.mqtt.wire_helpers import decoded

USER = Property.USER_PROPERTY
V5_PROPS = Properties([(USER, ("b", "2")), (USER, ("a", "1"))])  # order kept (5.0 §3.3.2.3.7)
USER_B2_A1 = b"\x0e\x26\x00\x01b\x00\x012\x26\x00\x01a\x00\x011"  # V5_PROPS, length 14
AT_5: list[tuple[Packet, bytes]] = [
    (
        Connect(MQTT_5, "", False, 0, None, b"pw", Will("w", b"x", 0, False, V5_PROPS), V5_PROPS),
        # §3.1.2.3: password 0x40 | will 0x04 (5.0 allows a password without a user name);
        # §3.1.3: client id, will properties, will topic, will payload, password.
        b"\x10\x34\x00\x04MQTT\x05\x44\x00\x00"
        + USER_B2_A1
        + b"\x00\x00"
        + USER_B2_A1
        + b"\x00\x01w\x00\x01x\x00\x02pw",
    ),
    (
        Connack(False, Reason.NOT_AUTHORIZED, Properties([(Property.REASON_STRING, "revoked")])),
        b"\x20\x0d\x00\x87\x0a\x1f\x00\x07revoked",  # §3.2.2.3.11: Reason String 0x1F
    ),
    (
        Publish("t", b"p", 1, packet_id=3, properties=Properties([(Property.TOPIC_ALIAS, 4)])),
        b"\x32\x0a\x00\x01t\x00\x03\x03\x23\x00\x04p",  # §3.3.2.3.4: Topic Alias 0x23
    ),
    (Puback(4, Reason.NO_MATCHING_SUBSCRIBERS), b"\x40\x03\x00\x04\x10"),  # §3.4.2.2.1
    (
        Pubrel(5, Reason.PACKET_IDENTIFIER_NOT_FOUND, V5_PROPS),
        b"\x62\x12\x00\x05\x92" + USER_B2_A1,
    ),
    (
        Subscribe(
            11,
            (SubscribeRequest("x", 1, True, True, 2),),
            Properties([(Property.SUBSCRIPTION_IDENTIFIER, 268_435_455)]),
        ),
        # §3.8.2.1.2: identifier 0x0B, the largest variable byte integer; §3.8.3.1: options
        # QoS 1 | No Local 0x04 | Retain As Published 0x08 | Retain Handling 2 << 4.
        b"\x82\x0c\x00\x0b\x05\x0b\xff\xff\xff\x7f\x00\x01x\x2d",
    ),
    (Unsuback(12, (0, Reason.NO_SUBSCRIPTION_EXISTED)), b"\xb0\x05\x00\x0c\x00\x00\x11"),
    (
        Disconnect(Reason.SESSION_TAKEN_OVER, Properties([(Property.SESSION_EXPIRY_INTERVAL, 9)])),
        b"\xe0\x07\x8e\x05\x11\x00\x00\x00\x09",  # §3.14.2.2.2: a four byte integer
    ),
    (
        Auth(Reason.CONTINUE_AUTHENTICATION, Properties([(Property.AUTHENTICATION_METHOD, "m")])),
        b"\xf0\x06\x18\x04\x15\x00\x01m",  # §3.15.2.2.2: Authentication Method 0x15
    ),
]


@pytest.mark.parametrize(("packet", "data"), AT_5, ids=lambda p: type(p).__name__)
def test_mqtt_5_packets_are_the_standard_s_bytes(packet: Packet, data: bytes) -> None:
    assert encode(packet, MQTT_5) == data
    assert decoded(data, MQTT_5) == packet
