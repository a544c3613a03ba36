"""May this packet come from this side now? Checks of a packet's first byte, before its body.

MQTT 3.1.1 §4.8 and 5.0 §4.13: on a protocol violation the receiver closes the network
connection. Checking the fixed header first lets the connection refuse a packet before it
waits for (or buffers) its body. What a client may do with a well-formed packet (topics,
sessions) is decided elsewhere: ``auth`` and ``broker``.
"""

from typing import Final

from broker.mqtt.packets import MQTT_3_1, MQTT_5, PacketType

_NAMES: Final = {
    0: "reserved type 0", 1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK",
    5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE",
    11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "reserved type 15",
}  # fmt: skip
# §2.2.2: the flags each packet type must carry (PUBLISH's are checked apart).
_FIXED_FLAGS: Final = dict.fromkeys(range(1, 16), 0) | {
    PacketType.PUBREL: 2,
    PacketType.SUBSCRIBE: 2,
    PacketType.UNSUBSCRIBE: 2,
}
# §2.2.1: who may send which packet. AUTH (15) exists only in MQTT 5 (5.0 §3.15).
_FROM_CLIENT: Final = frozenset({1, 3, 4, 5, 6, 7, 8, 10, 12, 14})
_FROM_SERVER: Final = frozenset({2, 3, 4, 5, 6, 7, 9, 11, 13, 14})
_BOTH_WAYS_IN_5: Final = frozenset({15})
# MQTT 3.1 set QoS 1 in these headers and let a retry carry DUP (0x08); its servers
# accepted either, and so do we for clients that speak it.
_LENIENT_IN_3_1: Final = frozenset(
    {PacketType.PUBREL, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE}
)


def packet_name(first_byte: int, level: int = 0) -> str:
    """The packet type's name; type 15 is AUTH at MQTT 5 (5.0 §3.15), reserved before."""
    if level == MQTT_5 and first_byte >> 4 == PacketType.AUTH:
        return "AUTH"
    return _NAMES[first_byte >> 4]


def header_problem(
    first_byte: int, *, level: int, connected: bool, from_server: bool = False
) -> str | None:
    """Why a packet starting with ``first_byte`` may not come now, or None.

    ``level``: the protocol level agreed in CONNECT (0 before it); ``connected``: a CONNECT
    was already received on this connection; ``from_server``: checking what a server sent.
    """
    kind, flags = first_byte >> 4, first_byte & 0x0F
    if not from_server:
        if not connected and kind != PacketType.CONNECT:
            return f"first packet is {packet_name(first_byte)}, not CONNECT (§3.1.0)"
        if connected and kind == PacketType.CONNECT:
            return "second CONNECT on one connection (§3.1.0)"
    allowed = _FROM_SERVER if from_server else _FROM_CLIENT
    if kind not in allowed and not (level == MQTT_5 and kind in _BOTH_WAYS_IN_5):
        side = "server" if from_server else "client"
        return f"{packet_name(first_byte)} may not be sent by a {side} (§2.2.1)"
    if kind == PacketType.PUBLISH:
        if (flags >> 1) & 0x03 == 3:
            return "PUBLISH with QoS 3 (§3.3.1.2)"
        if flags & 0x08 and not flags & 0x06:
            return "PUBLISH with DUP set at QoS 0 (§3.3.1.1)"
        return None
    if level == MQTT_3_1 and kind in _LENIENT_IN_3_1:
        return None
    if flags != _FIXED_FLAGS[kind]:
        return f"{packet_name(first_byte)} with fixed-header flags {flags:#06b} (§2.2.2)"
    return None


def header_reason(first_byte: int, *, level: int, connected: bool) -> int:
    """The MQTT 5 reason code (§2.4) of what ``header_problem`` found in a client's packet. A
    packet type that may not come now, or from a client, is a protocol error (0x82, §4.13); one
    that may, with flags the standard does not allow, a malformed packet (0x81): §2.1.3 "If
    invalid flags are received it is a Malformed Packet" [MQTT-2.1.3-1], §3.3.1.2 for QoS 3."""
    kind = first_byte >> 4
    if connected == (kind == PacketType.CONNECT):
        return 0x82
    if kind not in _FROM_CLIENT and not (level == MQTT_5 and kind in _BOTH_WAYS_IN_5):
        return 0x82
    return 0x81
