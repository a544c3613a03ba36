"""Reading the property list of a PUBLISH (MQTT 5 §3.3.2.3): the hot path of MQTT 5.

A busy MQTT 5 client sends the same few properties with every message: user properties
(§3.3.2.3.7), often a topic alias (§3.3.2.3.4), sometimes a message expiry (§3.3.2.3.3). The
broker acts on the alias and the expiry only; everything else goes to the subscribers as it
came (§3.3.2.3: the server forwards them unaltered). So a list made of those three is checked
here in one pass over its bytes, without making a Python object of any value the broker does
not act on (``Properties.read_lazily``), and a list with anything else, a string that is not
ASCII, or anything wrong, goes to the general reader (``read_properties``), which decodes
every value and raises the error the standard prescribes. Both accept and refuse exactly the
same lists.

``known`` is the list this connection's previous PUBLISH carried: when the bytes are the same,
so is the verdict, and that object is returned again, however long the list (a new one costs
the turn by its size: ``broker.mqtt.connection``). Either way a list is kept as its bytes
(``Properties.held_as_wire``): what the queues' and retained messages' bounds count.
"""

from typing import Final

from broker.mqtt.properties import (
    NO_PROPERTIES,
    PUBLISH,
    Properties,
    Property,
    read_properties,
)
from broker.mqtt.wire import Reader
from nanoiot.errors import MalformedPacket

_USER_PROPERTY: Final = 0x26
_TOPIC_ALIAS: Final = 0x23
_MESSAGE_EXPIRY: Final = 0x02


def read_publish_properties(
    data: bytes, at: int, end: int, known: Properties = NO_PROPERTIES
) -> tuple[Properties, int]:
    """The property list of a PUBLISH whose property length is at ``data[at]`` (the body
    ends at ``end``), and where the payload starts."""
    length = data[at] if at < end else 0x80  # past the end: the general reader says so
    if length & 0x80:  # 128 bytes or more, or nothing left
        if known.wire and at < end:  # the same long list as the last: not read again
            reader = Reader(data, at, end)
            size = reader.varint("property length")
            stop = reader.at + size
            if stop <= end and data[reader.at : stop] == known.wire:
                return known, stop
        reader = Reader(data, at, end)
        return read_properties(reader, PUBLISH).held_as_wire(), reader.at
    start = at + 1
    stop = start + length
    if not length:
        return NO_PROPERTIES, start
    if stop > end:
        raise MalformedPacket("property length runs past the remaining length (MQTT 5 §2.2.2.1)")
    wire = data[start:stop]
    if wire == known.wire:  # NO_PROPERTIES: b"", never a list of some length
        return known, stop
    found = _scan(wire)
    if found is None:
        return read_properties(Reader(data, at, end), PUBLISH).held_as_wire(), stop
    return found, stop


def _scan(wire: bytes) -> Properties | None:
    """The list ``wire`` if it holds nothing but user properties, at most one topic alias
    (not 0) and at most one message expiry, each whole, and is ASCII throughout; None for any
    other list. ASCII strings are well-formed UTF-8; that none holds U+0000 (§1.5.4) is told by
    counting: every zero byte of the list must be one of a length or a number."""
    if not wire.isascii():
        return None
    size, at, zeros = len(wire), 0, 0
    alias: int | None = None
    expiry: int | None = None
    alias_at = expiry_at = -1
    try:  # a length that runs past the end reads past it: IndexError
        while at < size:
            key = wire[at]
            if key == _USER_PROPERTY:  # name, value: each a two-byte length and the bytes
                high, low = wire[at + 1], wire[at + 2]
                at += 3 + (high << 8 | low)
                high2, low2 = wire[at], wire[at + 1]
                at += 2 + (high2 << 8 | low2)
                zeros += (high == 0) + (low == 0) + (high2 == 0) + (low2 == 0)
            elif key == _TOPIC_ALIAS and alias is None:
                high, low = wire[at + 1], wire[at + 2]
                alias = high << 8 | low
                zeros += (high == 0) + (low == 0)
                alias_at, at = at, at + 3
            elif key == _MESSAGE_EXPIRY and expiry is None:
                expiry = int.from_bytes(wire[at + 1 : at + 5], "big")
                zeros += wire.count(0, at + 1, at + 5)
                expiry_at, at = at, at + 5
            else:
                return None
    except IndexError:
        return None
    if at != size or alias == 0 or wire.count(0) != zeros:
        return None
    return Properties.read_lazily(wire, alias, alias_at, expiry, expiry_at)


_UTF8_PAYLOAD: Final = b"\x01\x01"  # Payload Format Indicator (0x01) of 1, as it is on the wire


def payload_problem(properties: Properties, payload: bytes) -> str | None:
    """Why ``payload`` is not what its Payload Format Indicator says, if it is not: 1 says
    UTF-8, which must be well-formed (5.0 §3.3.2.3.2 [MQTT-3.3.2-4], RFC 3629; a will's,
    §3.1.3.2.3). The server may check it and answer 0x99; it does, because a subscriber's
    client that checks it closes its connection for it, and a persistent session's would be
    sent the same message again at each reconnection. A list without the bytes of that
    property is not decoded (the hot path's lists never hold it)."""
    if not properties or _UTF8_PAYLOAD not in properties.wire:
        return None
    if properties.get(Property.PAYLOAD_FORMAT_INDICATOR) != 1:
        return None
    try:
        payload.decode("utf-8")  # strict: no surrogates, no overlong forms (RFC 3629)
    except UnicodeDecodeError as exc:
        return f"payload is not UTF-8 ({exc.reason} at byte {exc.start}), as its format says"
    return None
