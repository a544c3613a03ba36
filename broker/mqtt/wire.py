"""The data representations of MQTT (3.1.1 §1.5, 5.0 §1.5): reading and writing them.

``Reader`` is a cursor over one packet's bytes; reading past the packet's end, a string that
is not well-formed UTF-8 or contains U+0000, or a variable byte integer longer than four bytes
is a malformed packet (``nanoiot.errors.MalformedPacket``, which the connection turns into a
close, §4.8); a packet id of 0 where one is required, a protocol error. The writers build
the same representations.
"""

from typing import Final

from nanoiot.errors import MalformedPacket, ProtocolError

MAX_VARINT: Final = 268_435_455  # §1.5.5 / 3.1.1 §2.2.3: four bytes of seven bits


class Reader:
    """A cursor over ``data[at:end]``: the body of one packet."""

    __slots__ = ("at", "data", "end")

    def __init__(self, data: bytes, at: int = 0, end: int | None = None) -> None:
        self.data = data
        self.at = at
        self.end = len(data) if end is None else end

    @property
    def left(self) -> int:
        return self.end - self.at

    def take(self, count: int, what: str) -> bytes:
        start = self.at
        if count > self.end - start:
            raise MalformedPacket(f"{what} runs past the remaining length (§2.2.3)")
        self.at = start + count
        return self.data[start : start + count]

    def rest(self) -> bytes:
        start, self.at = self.at, self.end
        return self.data[start : self.end]

    def byte(self, what: str) -> int:
        if self.at >= self.end:
            raise MalformedPacket(f"{what} runs past the remaining length (§2.2.3)")
        value = self.data[self.at]
        self.at += 1
        return value

    def uint16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def uint32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "big")

    def varint(self, what: str) -> int:
        """A variable byte integer (MQTT 5 §1.5.5; the remaining length of 3.1.1 §2.2.3)."""
        value, shift = 0, 0
        for _ in range(4):
            byte = self.byte(what)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise MalformedPacket(f"{what}: variable byte integer longer than 4 bytes (§1.5.5)")

    def packet_id(self) -> int:
        # §2.3.1 [MQTT-2.3.1-1]: SUBSCRIBE, UNSUBSCRIBE and PUBLISH (QoS > 0) carry a non-zero
        # packet id. Two bytes of 0 parse, so 0 is data the protocol does not allow: a
        # Protocol Error (0x82, 5.0 §1.2, §4.13.1), not a Malformed Packet.
        packet_id = self.uint16("packet identifier")
        if packet_id == 0:
            raise ProtocolError("packet identifier 0 (§2.3.1)")
        return packet_id

    def binary(self, what: str) -> bytes:
        """Binary data: two length bytes, then the bytes (§1.5.6)."""
        return self.take(self.uint16(what), what)

    def text(self, what: str) -> str:
        """A UTF-8 encoded string (§1.5.3 / 5.0 §1.5.4)."""
        return utf8(self.take(self.uint16(what), what), what)


def utf8(raw: bytes, what: str) -> str:
    """§1.5.3: well-formed UTF-8 (no surrogates) without U+0000, or MalformedPacket."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket(f"{what} is not valid UTF-8 (§1.5.3)") from None
    if "\x00" in text:
        raise MalformedPacket(f"{what} contains U+0000 (§1.5.3)")
    return text


def varint(value: int) -> bytes:
    """A variable byte integer: seven bits a byte, least significant first (§2.2.3)."""
    if value < 128:
        return bytes((value,))
    if value > MAX_VARINT:
        raise ValueError(f"{value} does not fit a variable byte integer")
    encoded = bytearray()
    while True:
        value, digit = divmod(value, 128)
        encoded.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(encoded)


def utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (§1.5.3), what a byte bound counts; ``isascii`` is O(1), so
    an ASCII topic costs no encoding."""
    return len(text) if text.isascii() else len(text.encode())


def utf8_field(text: str) -> bytes:
    """A UTF-8 encoded string with its two length bytes (§1.5.3)."""
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def binary_field(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data
