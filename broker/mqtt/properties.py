"""MQTT 5 property lists (OASIS MQTT 5.0 §2.2.2): the list a packet carries, read and written.

A property list is a variable byte integer length followed by (identifier, value) pairs;
which identifiers exist, their value types and the packets each may appear in are §2.2.2.2's
table (``broker.mqtt.property_table``). Decoding is strict: an unknown identifier, a property
in a packet that does not allow it, a repeated property (only User Property and, in PUBLISH,
Subscription Identifier may repeat) or a value outside its range is a malformed packet or a
protocol error (§2.2.2.2, §4.13). MQTT 3.1 and 3.1.1 have no properties: their packets carry
``NO_PROPERTIES``.
"""

from collections.abc import Iterable, Iterator
from typing import Final

from broker.mqtt.codes import Reason
from broker.mqtt.property_table import (
    BINARY,
    BOOLEAN,
    BYTE,
    FOUR,
    INT_SIZE,
    NON_ZERO,
    PUBLISH,
    REPEATABLE,
    TABLE,
    TEXT,
    TWO,
    VARINT,
    WILL,
    Property,
    property_name,
)
from broker.mqtt.wire import Reader, binary_field, utf8_field, varint
from nanoiot.errors import MalformedPacket, ProtocolError

# ``Property``, ``PUBLISH`` and ``WILL`` are the table's, importable from here too: what reads
# or makes a property list names them with it.
__all__ = [
    "NO_PROPERTIES", "PUBLISH", "WILL", "Properties", "Property", "PropertyValue",
    "encode_properties", "encode_property", "read_properties",
]  # fmt: skip

PropertyValue = int | str | bytes | tuple[str, str]


# Plain ints for the hot path: an IntEnum member costs a descriptor call each time it is read.
_TOPIC_ALIAS: Final = 0x23
_MESSAGE_EXPIRY: Final = 0x02
_SUBSCRIPTION_ID: Final = 0x0B


class Properties:
    """An immutable, ordered list of (identifier, value) pairs (§2.2.2.2: User Property keeps
    its order and may repeat). ``wire`` is their encoding without the length, kept from the
    packet they were read from or made once: a message forwarded to many subscribers, or
    to one, is not encoded again.

    The broker acts on three properties of a PUBLISH only: Topic Alias, Message Expiry
    Interval and Subscription Identifier (§3.3.2.3). A PUBLISH's list is checked when it is
    read (``broker.mqtt.publish_properties``) but its values are turned into Python objects
    only when something asks for them (``items``): user properties, content type, correlation
    data and the like travel to the subscribers as the publisher's bytes."""

    __slots__ = ("_alias_at", "_block", "_expiry_at", "_extra", "_items", "_stripped", "_wire",
                 "has_subscription_identifier", "message_expiry", "topic_alias")  # fmt: skip

    # What the broker acts on, read once (plain attributes: read for every message).
    topic_alias: int | None  # §3.3.2.3.4
    message_expiry: int | None  # §3.3.2.3.3, in seconds
    has_subscription_identifier: bool  # §3.3.2.3.8

    def __init__(
        self,
        items: Iterable[tuple[int, PropertyValue]] = (),
        *,
        wire: bytes | None = None,
        alias_at: int = -1,
    ) -> None:
        self._items: tuple[tuple[int, PropertyValue], ...] | None = tuple(items)
        self._wire = wire
        self._alias_at = alias_at  # where a Topic Alias starts in ``wire`` (-1: none)
        self._expiry_at = -1  # where the Message Expiry Interval starts in ``wire`` (-1: unknown)
        self.topic_alias = self.message_expiry = None
        self.has_subscription_identifier = False
        for key, value in self._items:
            if key == _TOPIC_ALIAS and isinstance(value, int):
                self.topic_alias = value
            elif key == _MESSAGE_EXPIRY and isinstance(value, int):
                self.message_expiry = value
            elif key == _SUBSCRIPTION_ID:
                self.has_subscription_identifier = True
        self._block: bytes | None = None  # the last ``block`` made, and its ``extra``
        self._extra = b""
        self._stripped: Properties | None = None

    @classmethod
    def read_lazily(
        cls,
        wire: bytes,
        alias: int | None = None,
        alias_at: int = -1,
        expiry: int | None = None,
        expiry_at: int = -1,
        *,
        subscribed: bool = False,
    ) -> "Properties":
        """A PUBLISH's list ``wire``, already checked, whose Topic Alias is ``alias`` (at
        ``alias_at`` in ``wire``), Message Expiry Interval ``expiry`` (at ``expiry_at``), and
        which holds a Subscription Identifier if ``subscribed``; ``items`` reads the rest if
        asked."""
        self = cls.__new__(cls)
        self._items, self._wire, self._alias_at, self._expiry_at = None, wire, alias_at, expiry_at
        self.topic_alias, self.message_expiry = alias, expiry
        self.has_subscription_identifier = subscribed
        self._block, self._extra, self._stripped = None, b"", None
        return self

    @property
    def items(self) -> tuple[tuple[int, PropertyValue], ...]:
        items = self._items
        if items is None:
            assert self._wire is not None
            reader = Reader(varint(len(self._wire)) + self._wire)
            items = self._items = read_properties(reader, PUBLISH, users=None).items
        return items

    def held_as_wire(self) -> "Properties":
        """This list, checked, kept as its bytes alone (``items`` reads them again if asked):
        read, 1,024 empty user properties hold 128 KB for their 5 KB, which is what a queue's
        and the retained messages' bounds count."""
        if self._wire is None or self._items is None:
            return self
        return Properties.read_lazily(
            self._wire, self.topic_alias, self._alias_at, self.message_expiry, self._expiry_at,
            subscribed=self.has_subscription_identifier,
        )  # fmt: skip

    def without_topic_alias(self) -> "Properties":
        """These properties but the Topic Alias, which names a topic on one connection only
        (§3.3.2.3.4); the wire bytes are cut, not encoded again. Kept: a client that sends
        the same properties with every message gets the same object back each time."""
        stripped = self._stripped
        if stripped is not None:
            return stripped
        at, wire = self._alias_at, self._wire
        if self._items is None and wire is not None and at >= 0:
            cut = wire[:at] + wire[at + 3 :]  # identifier, two bytes
            expiry_at = self._expiry_at - 3 if self._expiry_at > at else self._expiry_at
            stripped = NO_PROPERTIES
            if cut:
                stripped = Properties.read_lazily(
                    cut, None, -1, self.message_expiry, expiry_at,
                    subscribed=self.has_subscription_identifier,
                )  # fmt: skip
        else:
            items = [item for item in self.items if item[0] != _TOPIC_ALIAS]
            if not items:
                stripped = NO_PROPERTIES
            elif at < 0 or wire is None:
                stripped = Properties(items)
            else:
                stripped = Properties(items, wire=wire[:at] + wire[at + 3 :])
        self._stripped = stripped
        return stripped

    def with_message_expiry(self, seconds: int) -> "Properties":
        """These properties with ``seconds`` for the Message Expiry Interval they hold, which
        keeps its place (§3.3.2.3.3: what a subscriber receives is the time left); four bytes
        of the wire are replaced, nothing is encoded again."""
        at, wire = self._expiry_at, self._wire
        if at < 0 or wire is None:
            return Properties(
                (key, seconds if key == _MESSAGE_EXPIRY else value) for key, value in self.items
            )
        spliced = wire[: at + 1] + seconds.to_bytes(4, "big") + wire[at + 5 :]
        return Properties.read_lazily(
            spliced, self.topic_alias, self._alias_at, seconds, at,
            subscribed=self.has_subscription_identifier,
        )  # fmt: skip

    def with_subscription_identifiers(self, identifiers: tuple[int, ...]) -> "Properties":
        """These properties and a Subscription Identifier for each of ``identifiers`` at their
        end (§3.3.4: one copy of a message carries those of every subscription it matched)."""
        extra = b"".join(b"\x0b" + varint(each) for each in identifiers)
        return Properties.read_lazily(
            self.wire + extra, self.topic_alias, self._alias_at, self.message_expiry,
            self._expiry_at, subscribed=True,
        )  # fmt: skip

    @property
    def wire(self) -> bytes:
        wire = self._wire
        if wire is None:
            wire = self._wire = b"".join(_encode_item(key, value) for key, value in self.items)
        return wire

    def block(self, extra: bytes = b"") -> bytes:
        """The list as it goes on the wire, its length first, with ``extra`` (properties
        already encoded) at its end; the last one made is kept, as the next message to the
        same subscriber most often asks for the same."""
        block = self._block
        if block is not None and extra == self._extra:
            return block
        body = self.wire + extra if extra else self.wire
        size = len(body)
        block = (bytes((size,)) if size < 128 else varint(size)) + body
        self._block, self._extra = block, extra
        return block

    def __bool__(self) -> bool:
        items = self._items
        return bool(items) if items is not None else bool(self._wire)

    def __iter__(self) -> Iterator[tuple[int, PropertyValue]]:
        return iter(self.items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Properties) and other.items == self.items

    def __hash__(self) -> int:
        return hash(self.items)

    def __repr__(self) -> str:
        shown = ", ".join(f"{property_name(key)}={value!r}" for key, value in self.items)
        return f"Properties({shown})"

    def get(self, key: int, default: PropertyValue | None = None) -> PropertyValue | None:
        """The value of a property that appears at most once, or ``default``."""
        for found, value in self.items:
            if found == key:
                return value
        return default

    def all(self, key: int) -> list[PropertyValue]:
        """Every value of a repeatable property, in order (User Property, Subscription Id)."""
        return [value for found, value in self.items if found == key]


NO_PROPERTIES: Final = Properties()
# User properties one packet may carry (5.0 §3.3.2.3.7 lets them repeat at will): each costs
# about 2.4 µs to read, so a 256 KiB list of 50,000 empty ones held the event loop for 140 ms
# (minutes with a max_packet_size of 256 MB). 1,024 are read in about 2.5 ms, a turn's work
# (``broker.mqtt.intake``); more close the connection (DISCONNECT 0x97, quota exceeded).
MAX_USER_PROPERTIES: Final = 1024


def read_properties(
    reader: Reader, packet_type: int, *, users: int | None = MAX_USER_PROPERTIES
) -> Properties:
    """The property list at the reader's position, for a packet of ``packet_type`` (or WILL),
    with at most ``users`` user properties (None: any number, for a list read before)."""
    length = reader.varint("property length")
    left = users if users is not None else length  # each takes 5 bytes at least
    end = reader.at + length
    if end > reader.end:
        raise MalformedPacket("property length runs past the remaining length (MQTT 5 §2.2.2.1)")
    if not length:
        return NO_PROPERTIES
    items: list[tuple[int, PropertyValue]] = []
    seen: set[int] = set()
    data = reader.data
    alias_at = expiry_at = -1
    while reader.at < end:
        key = data[reader.at]
        if key == Property.USER_PROPERTY and packet_type in _USER_PROPERTY_IN:
            # The hot case of a busy PUBLISH, read inline: two UTF-8 strings (§1.5.7).
            left -= 1
            if left < 0:
                raise ProtocolError(
                    f"more than {users} user properties (an implementation limit, 5.0 §4.13)",
                    Reason.QUOTA_EXCEEDED,
                )
            at = reader.at + 1
            if at + 2 > end:
                raise MalformedPacket("user property runs past the property length (§2.2.2.1)")
            name_at = at + 2
            at = name_at + ((data[at] << 8) | data[at + 1])
            if at + 2 > end:
                raise MalformedPacket("user property runs past the property length (§2.2.2.1)")
            value_at = at + 2
            at = value_at + ((data[at] << 8) | data[at + 1])
            if at > end:
                raise MalformedPacket("user property runs past the property length (§2.2.2.1)")
            try:
                pair = (data[name_at : value_at - 2].decode(), data[value_at:at].decode())
            except UnicodeDecodeError:
                raise MalformedPacket("user property is not valid UTF-8 (§1.5.4)") from None
            if "\x00" in pair[0] or "\x00" in pair[1]:
                raise MalformedPacket("user property contains U+0000 (§1.5.4)")
            items.append((key, pair))
            reader.at = at
            continue
        if key == Property.TOPIC_ALIAS:
            alias_at = reader.at - (end - length)
        elif key == Property.MESSAGE_EXPIRY_INTERVAL:
            expiry_at = reader.at - (end - length)
        key = reader.varint("property identifier")
        kind, allowed = TABLE.get(key, (-1, frozenset()))
        if kind < 0:
            raise MalformedPacket(f"unknown property identifier {key:#04x} (MQTT 5 §2.2.2.2)")
        if packet_type not in allowed:
            raise ProtocolError(
                f"property {property_name(key)} is not allowed here (MQTT 5 §2.2.2.2)"
            )
        repeatable = key in REPEATABLE or (
            key == Property.SUBSCRIPTION_IDENTIFIER and packet_type == PUBLISH
        )
        if key in seen and not repeatable:
            raise ProtocolError(f"property {property_name(key)} appears twice (MQTT 5 §2.2.2.2)")
        seen.add(key)
        items.append((key, _read_value(reader, key, kind)))
    if reader.at != end:
        raise MalformedPacket("a property runs past the property length (MQTT 5 §2.2.2.1)")
    found = Properties(items, wire=data[end - length : end], alias_at=alias_at)
    found._expiry_at = expiry_at
    return found


_USER_PROPERTY_IN: Final = TABLE[Property.USER_PROPERTY][1]


def _read_value(reader: Reader, key: int, kind: int) -> PropertyValue:
    value: PropertyValue
    if kind == BYTE:
        value = reader.byte(property_name(key))
        if key in BOOLEAN and value > 1:
            raise ProtocolError(f"property {property_name(key)} is {value}, must be 0 or 1")
    elif kind == TWO:
        value = reader.uint16(property_name(key))
    elif kind == FOUR:
        value = reader.uint32(property_name(key))
    elif kind == VARINT:
        value = reader.varint(property_name(key))
    elif kind == TEXT:
        value = reader.text(property_name(key))
        if key == Property.RESPONSE_TOPIC and (not value or "+" in value or "#" in value):
            # It is the topic name of the reply (§3.3.2.3.5, [MQTT-3.3.2-14]; a will's too),
            # so neither wildcards nor empty (§4.7.3 [MQTT-4.7.3-1]): a responder that
            # answered on it would be closed for a protocol error itself.
            raise ProtocolError(
                f"property response_topic {'contains a wildcard' if value else 'is empty'} "
                "(MQTT 5 §3.3.2.3.5, §4.7.3)"
            )
    elif kind == BINARY:
        value = reader.binary(property_name(key))
    else:
        value = (reader.text("user property name"), reader.text("user property value"))
    if key in NON_ZERO and value == 0:
        if key == Property.TOPIC_ALIAS:
            # §3.3.2.3.4 [MQTT-3.3.2-8]: 0 is not a topic alias. §4.13 leaves the DISCONNECT's
            # code to the receiver; 0x94 "Topic Alias invalid" names it better than 0x82, and
            # is what Mosquitto sends for an alias above its maximum (2.0.11 answers 0 with
            # 0x81, Malformed Packet, though the two bytes parse: 5.0 §1.2).
            raise ProtocolError("topic_alias is 0 (MQTT 5 §3.3.2.3.4)", Reason.TOPIC_ALIAS_INVALID)
        raise ProtocolError(f"property {property_name(key)} is 0 (MQTT 5 §3)")
    return value


def encode_properties(properties: Properties, extra: bytes = b"") -> bytes:
    """The property list as it goes on the wire: its length, then each property, then
    ``extra`` (properties already encoded, e.g. a topic alias: ``encode_property``)."""
    if not properties and not extra:
        return b"\x00"
    return properties.block(extra)


def encode_property(key: int, value: PropertyValue) -> bytes:
    """One property, identifier and value, as it goes on the wire."""
    return _encode_item(key, value)


def _encode_item(key: int, value: PropertyValue) -> bytes:
    kind = TABLE[key][0]
    head = varint(key)
    if isinstance(value, int):
        if kind == VARINT:
            return head + varint(value)
        return head + value.to_bytes(INT_SIZE[kind], "big")
    if isinstance(value, str):
        return head + utf8_field(value)
    if isinstance(value, bytes):
        return head + binary_field(value)
    return head + utf8_field(value[0]) + utf8_field(value[1])
