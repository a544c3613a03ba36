"""What crosses between nodes, as bytes: batches of routed messages, and NATS key names.

Pure: no NATS, no I/O. A *frame* is the messages one node forwards to another in one event
loop turn, one NATS message however many they are (NATS's cost is per message, not per
byte). Each record is::

    flags (1 byte: QoS in bits 0-1, retain in bit 2, "plain subscribers" in bit 3)
    | topic length (2) | payload length (4) | groups length (2)
    | topic (UTF-8) | payload | groups

"plain subscribers": the receiver gives the message to its subscriptions without
``$share``; ``groups`` names the shared subscriptions the sender chose the receiver for, as
``{share name}/{filter}`` joined by NUL (which MQTT strings never hold, §1.5.3). Topics are
the broker's canonical form. MQTT 5 properties do not cross yet: a message that reaches a
subscriber on another node carries none.

KV keys allow only ``[-/_=.A-Za-z0-9]``, and a topic filter can hold any character, so keys
carry filters and topics in unpadded base64url (RFC 4648 §5), which stays within that set.
"""

import base64
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from broker.router import Message
from nanoiot.errors import ClusterError

__all__ = ["Group", "Routed", "decode", "encode", "from_key", "to_key"]

_HEADER: Final = struct.Struct(">BHIH")
_QOS_BITS: Final = 0x03
_RETAIN_BIT: Final = 0x04
_PLAIN_BIT: Final = 0x08
_EMPTY: Final = "="
_NUL: Final = "\x00"

Group = tuple[str, str]  # (share name, topic filter)


@dataclass(frozen=True, slots=True)
class Routed:
    """A forwarded message and which of the receiver's subscriptions it is for."""

    message: Message
    plain: bool
    groups: tuple[Group, ...]


def encode(
    message: Message, into: bytearray, *, plain: bool = True, groups: Sequence[Group] = ()
) -> None:
    """Append ``message`` to a frame being built."""
    topic = message.topic.encode()
    named = _NUL.join(f"{name}/{topic_filter}" for name, topic_filter in groups).encode()
    flags = message.qos | (_RETAIN_BIT if message.retain else 0) | (_PLAIN_BIT if plain else 0)
    into += _HEADER.pack(flags, len(topic), len(message.payload), len(named))
    into += topic
    into += message.payload
    into += named


def decode(frame: bytes) -> Iterator[Routed]:
    """The records of a frame, in order; ``ClusterError`` if it is cut short or garbled."""
    view = memoryview(frame)
    at, end = 0, len(frame)
    while at < end:
        if end - at < _HEADER.size:
            raise ClusterError("a forwarded frame ends inside a record header")
        flags, topic_length, payload_length, groups_length = _HEADER.unpack_from(view, at)
        at += _HEADER.size
        if end - at < topic_length + payload_length + groups_length or flags & _QOS_BITS == 3:
            raise ClusterError("a forwarded frame holds a malformed record")
        topic = str(view[at : at + topic_length], "utf-8")
        at += topic_length
        payload = bytes(view[at : at + payload_length])
        at += payload_length
        named = str(view[at : at + groups_length], "utf-8")
        at += groups_length
        groups = tuple(_group(one) for one in named.split(_NUL)) if named else ()
        message = Message(topic, payload, flags & _QOS_BITS, bool(flags & _RETAIN_BIT))
        yield Routed(message, bool(flags & _PLAIN_BIT), groups)


def _group(text: str) -> Group:
    name, _, topic_filter = text.partition("/")  # a share name holds no '/' (§4.8.2)
    return name, topic_filter


def to_key(text: str) -> str:
    """A topic or filter as a KV key token (never empty: the empty topic is ``=``)."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=") or _EMPTY


def from_key(part: str) -> str:
    if part == _EMPTY:
        return ""
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()
