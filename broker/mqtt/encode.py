"""Writing packets: one whole packet's bytes, for MQTT 3.1, 3.1.1 and 5.0.

``encode(packet, level)`` writes any packet; ``encode_publish`` is the hot path's shortcut,
which takes the topic already encoded so that a message fanned out to many subscribers
encodes its topic once.
"""

from collections.abc import Callable
from typing import Final

from broker.mqtt.packets import (
    MQTT_3_1,
    MQTT_5,
    PROTOCOL_NAMES,
    Auth,
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
    Unsuback,
    Unsubscribe,
)
from broker.mqtt.properties import Properties, encode_properties
from broker.mqtt.wire import binary_field, utf8_field, varint

_EMPTY_PROPERTIES: Final = b"\x00"
PINGRESP_BYTES: Final = b"\xd0\x00"


def _whole(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def encode_publish(
    topic: bytes,
    payload: bytes,
    qos: int,
    packet_id: int,
    *,
    retain: bool = False,
    dup: bool = False,
    level: int = 4,
    properties: bytes = _EMPTY_PROPERTIES,
) -> bytes:
    """A whole PUBLISH (§3.3) for a UTF-8 ``topic``; ``packet_id`` is written only for QoS 1
    and 2, ``properties`` (already encoded) only at level 5."""
    head = len(topic).to_bytes(2, "big") + topic
    if qos:
        head += packet_id.to_bytes(2, "big")
    if level == MQTT_5:
        head += properties
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    size = len(head) + len(payload)
    length = bytes((size,)) if size < 128 else varint(size)
    return bytes((first,)) + length + head + payload


def encode(packet: Packet, level: int) -> bytes:
    """The bytes of ``packet`` at protocol ``level``."""
    return _ENCODERS[type(packet)](packet, level)


def _props(properties: Properties, level: int) -> bytes:
    return encode_properties(properties) if level == MQTT_5 else b""


def _connect(packet: Packet, level: int) -> bytes:
    assert isinstance(packet, Connect)
    flags = 0x02 if packet.clean_start else 0
    payload = utf8_field(packet.client_id)
    will = packet.will
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _props(will.properties, level)
        payload += utf8_field(will.topic) + binary_field(will.payload)
    if packet.username is not None:
        flags |= 0x80
        payload += utf8_field(packet.username)
    if packet.password is not None:
        flags |= 0x40
        payload += binary_field(packet.password)
    head = utf8_field(PROTOCOL_NAMES[level]) + bytes((level, flags))
    head += packet.keep_alive.to_bytes(2, "big") + _props(packet.properties, level)
    return _whole(0x10, head + payload)


def _connack(packet: Packet, level: int) -> bytes:
    assert isinstance(packet, Connack)
    # MQTT 3.1 has no session present flag: its first byte is reserved.
    present = 1 if packet.session_present and level != MQTT_3_1 else 0
    return _whole(0x20, bytes((present, packet.code)) + _props(packet.properties, level))


def _publish(packet: Packet, level: int) -> bytes:
    assert isinstance(packet, Publish)
    return encode_publish(
        packet.topic.encode(), packet.payload, packet.qos, packet.packet_id or 0,
        retain=packet.retain, dup=packet.dup, level=level,
        properties=encode_properties(packet.properties),
    )  # fmt: skip


def _ack(first: int) -> Callable[[Packet, int], bytes]:
    def write(packet: Packet, level: int) -> bytes:
        assert isinstance(packet, Puback | Pubrec | Pubrel | Pubcomp)
        body = packet.packet_id.to_bytes(2, "big")
        if level == MQTT_5 and (packet.code or packet.properties):
            # 5.0 §3.4.2.1: code 0 without properties may be left out.
            body += bytes((packet.code,))
            if packet.properties:
                body += encode_properties(packet.properties)
        return _whole(first, body)

    return write


def _subscribe(packet: Packet, level: int) -> bytes:
    assert isinstance(packet, Subscribe)
    parts = [packet.packet_id.to_bytes(2, "big"), _props(packet.properties, level)]
    for request in packet.requests:  # joined once: a body built by += is quadratic
        options = request.qos
        if level == MQTT_5:
            options |= (0x04 if request.no_local else 0) | (
                0x08 if request.retain_as_published else 0
            )
            options |= request.retain_handling << 4
        parts.append(utf8_field(request.topic_filter) + bytes((options,)))
    return _whole(0x82, b"".join(parts))


def _suback(packet: Packet, level: int) -> bytes:
    assert isinstance(packet, Suback)
    body = packet.packet_id.to_bytes(2, "big") + _props(packet.properties, level)
    return _whole(0x90, body + bytes(packet.codes))


def _unsubscribe(packet: Packet, level: int) -> bytes:
    assert isinstance(packet, Unsubscribe)
    body = packet.packet_id.to_bytes(2, "big") + _props(packet.properties, level)
    return _whole(0xA2, body + b"".join(utf8_field(each) for each in packet.filters))


def _unsuback(packet: Packet, level: int) -> bytes:
    assert isinstance(packet, Unsuback)
    body = packet.packet_id.to_bytes(2, "big")
    if level == MQTT_5:
        body += encode_properties(packet.properties) + bytes(packet.codes)
    return _whole(0xB0, body)


def _reason_and_properties(first: int) -> Callable[[Packet, int], bytes]:
    def write(packet: Packet, level: int) -> bytes:
        assert isinstance(packet, Disconnect | Auth)
        if level != MQTT_5 or (not packet.code and not packet.properties):
            return bytes((first, 0))  # 5.0 §3.14.2.1: code 0 without properties: no body
        return _whole(first, bytes((packet.code,)) + encode_properties(packet.properties))

    return write


_ENCODERS: Final[dict[type, Callable[[Packet, int], bytes]]] = {
    Connect: _connect,
    Connack: _connack,
    Publish: _publish,
    Puback: _ack(0x40),
    Pubrec: _ack(0x50),
    Pubrel: _ack(0x62),
    Pubcomp: _ack(0x70),
    Subscribe: _subscribe,
    Suback: _suback,
    Unsubscribe: _unsubscribe,
    Unsuback: _unsuback,
    Pingreq: lambda _packet, _level: b"\xc0\x00",
    Pingresp: lambda _packet, _level: PINGRESP_BYTES,
    Disconnect: _reason_and_properties(0xE0),
    Auth: _reason_and_properties(0xF0),
}
