"""Is this MQTT 3.1.1 packet well formed? Pure checks of one whole packet, no I/O.

amqtt's decoder is lenient where the standard is not: it decodes invalid UTF-8 as the text
``"b'...'"``, accepts any fixed-header flags, QoS 3, packet id 0, wildcards in PUBLISH topics
and trailing bytes, and its reader loop discards what it cannot decode and reads on. MQTT
3.1.1 §4.8 says otherwise: on a protocol violation the server MUST close the network
connection. ``broker.framing`` runs these checks on every packet a client sends before amqtt
sees it, and closes the connection on the first violation.

Only the packet's form is checked here; what a client may do (topics, sessions) is decided in
``auth`` and ``broker.routing``. Imports only the stdlib and ``auth.topics``.
"""

from typing import Final

from auth.topics import topic_name_problem

CONNECT: Final = 1
PUBLISH: Final = 3
PUBREL: Final = 6
SUBSCRIBE: Final = 8
UNSUBSCRIBE: Final = 10
PINGREQ: Final = 12
DISCONNECT: Final = 14

# §2.2.2: the flags each packet type a client may send must carry (PUBLISH's are checked
# apart). CONNACK, SUBACK, UNSUBACK and PINGRESP only flow from server to client, and types 0
# and 15 are reserved (§2.2.1): none of them is listed, so each is a violation.
_FIXED_FLAGS: Final = {
    CONNECT: 0,
    4: 0,  # PUBACK
    5: 0,  # PUBREC
    PUBREL: 2,
    7: 0,  # PUBCOMP
    SUBSCRIBE: 2,
    UNSUBSCRIBE: 2,
    PINGREQ: 0,
    DISCONNECT: 0,
}
_NAMES: Final = {
    0: "reserved type 0", 1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK",
    5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE",
    11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT", 15: "reserved type 15",
}  # fmt: skip
_ACK_TYPES: Final = frozenset({4, 5, 6, 7})


class Malformed(Exception):
    """The packet breaks MQTT 3.1.1; the message names the rule."""


def packet_name(first_byte: int) -> str:
    return _NAMES[first_byte >> 4]


def header_problem(first_byte: int, *, connected: bool) -> str | None:
    """Why a packet starting with ``first_byte`` may not come from a client now, or None.

    ``connected``: a CONNECT was already accepted on this connection.
    """
    kind, flags = first_byte >> 4, first_byte & 0x0F
    if not connected and kind != CONNECT:
        return f"first packet is {packet_name(first_byte)}, not CONNECT (§3.1.0)"
    if connected and kind == CONNECT:
        return "second CONNECT on one connection (§3.1.0)"
    if kind == PUBLISH:
        if (flags >> 1) & 0x03 == 3:
            return "PUBLISH with QoS 3 (§3.3.1.2)"
        if flags & 0x08 and not flags & 0x06:
            return "PUBLISH with DUP set at QoS 0 (§3.3.1.1)"
        return None
    if kind not in _FIXED_FLAGS:
        return f"{packet_name(first_byte)} may not be sent by a client (§2.2.1)"
    if flags != _FIXED_FLAGS[kind]:
        return f"{packet_name(first_byte)} with fixed-header flags {flags:#06b} (§2.2.2)"
    return None


def body_problem(first_byte: int, body: bytes) -> str | None:
    """Why ``body`` (the bytes after the fixed header) is malformed, or None.

    Assumes ``header_problem(first_byte, ...)`` found nothing. CONNECT bodies are checked by
    ``broker.connect`` after the protocol level, which decides how the rest reads (§3.1.2.2).
    """
    kind = first_byte >> 4
    try:
        if kind == PUBLISH:
            _check_publish(first_byte, Body(body))
        elif kind in _ACK_TYPES:
            _check_ack(body)
        elif kind == SUBSCRIBE:
            _check_subscribe(Body(body))
        elif kind == UNSUBSCRIBE:
            _check_unsubscribe(Body(body))
        elif kind in (PINGREQ, DISCONNECT) and body:
            raise Malformed("remaining length must be 0 (§3.12.1, §3.14.1)")
    except Malformed as problem:
        return f"{packet_name(first_byte)}: {problem}"
    return None


class Body:
    """A cursor over a packet body; reading past its end is a malformed packet."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.at

    def take(self, count: int, what: str) -> bytes:
        if count > self.left:
            raise Malformed(f"{what} runs past the remaining length (§2.2.3)")
        chunk = self.data[self.at : self.at + count]
        self.at += count
        return chunk

    def uint16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def packet_id(self) -> int:
        # §2.3.1: SUBSCRIBE, UNSUBSCRIBE and PUBLISH (QoS > 0) carry a non-zero packet id.
        packet_id = self.uint16("packet identifier")
        if packet_id == 0:
            raise Malformed("packet identifier 0 (§2.3.1)")
        return packet_id

    def text(self, what: str) -> str:
        return utf8(self.take(self.uint16(what), what), what)


def utf8(raw: bytes, what: str) -> str:
    """§1.5.3: well-formed UTF-8 (no surrogates) without U+0000, or Malformed."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed(f"{what} is not valid UTF-8 (§1.5.3)") from None
    if "\x00" in text:
        raise Malformed(f"{what} contains U+0000 (§1.5.3)")
    return text


def _check_publish(first_byte: int, body: Body) -> None:
    topic = body.text("topic name")
    problem = topic_name_problem(topic)
    if problem is not None:
        raise Malformed(f"topic name {problem}")
    if (first_byte >> 1) & 0x03:
        body.packet_id()


def _check_ack(body: bytes) -> None:
    # §3.4-§3.7: the variable header is the packet id alone.
    if len(body) != 2:
        raise Malformed(f"remaining length {len(body)}, must be 2 (§3.4.1)")


def _check_subscribe(body: Body) -> None:
    body.packet_id()
    if not body.left:
        raise Malformed("no topic filter (§3.8.3)")
    while body.left:
        if not body.text("topic filter"):
            raise Malformed("empty topic filter (§4.7.3)")
        (options,) = body.take(1, "requested QoS")
        if options > 2:  # §3.8.3.1: reserved bits 0, QoS 0..2
            raise Malformed(f"requested QoS byte {options:#04x} (§3.8.3.1)")


def _check_unsubscribe(body: Body) -> None:
    body.packet_id()
    if not body.left:
        raise Malformed("no topic filter (§3.10.3)")
    while body.left:
        if not body.text("topic filter"):
            raise Malformed("empty topic filter (§4.7.3)")
