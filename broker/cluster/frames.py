"""What crosses between nodes, as bytes: batches of routed messages, and NATS key names.

Pure: no NATS, no I/O. A *frame* is the messages one node forwards to another in one event
loop turn, one NATS message however many they are (NATS's cost is per message, not per
byte). Each record is::

    flags (1 byte: QoS in bits 0-1, retain in bit 2, "plain subscribers" in bit 3,
           "for one session" in bit 4, "barrier" in bit 5, "relayed" in bit 6,
           "more groups" in bit 7)
    | topic length (2) | payload length (4) | groups length (2) | properties length (4)
    | milliseconds to expiry (4; all ones: none) | message id (8) | routed at (8)
    | topic (UTF-8) | payload | groups | properties (MQTT 5 §2.2.2, as in the PUBLISH)

"plain subscribers": the receiver gives the message to its subscriptions without
``$share``; ``groups`` names the shared subscriptions the sender chose the receiver for, as
``{share name}/{filter}`` joined by NUL (which MQTT strings never hold, §1.5.3). Groups past
the 65,535 bytes the field holds (an application may hold hundreds of shared subscriptions,
all matching ``devices/#``) follow in records of the same message marked "more groups",
which ``decode`` gives as one; such a record holds its groups only (no topic, payload or
properties: the receiver takes nothing else from it, earlier versions neither), so that a
message with many groups does not repeat its payload. What one member's groups may name is
bounded (``max_shared_subscription_bytes``, checked against NATS's max_payload at start:
``broker.cluster.link``), so a message's records always fit one NATS message. Topics are
the broker's canonical form. A message expiry (MQTT 5 §3.3.2.3.3) crosses as the time
left, since each process has its own clock; the publisher's interval stays in the
properties, which tells a lifetime of 0 (``broker.mqtt.expiry``) from one that ran out. The
message id and the route table revision it was routed at are the first routing member's
(``broker.cluster.handover``). A frame comes
from the network: ``decode`` checks what it reads, the property list as strictly as a
PUBLISH's (``broker.mqtt.publish_properties``), which it then keeps as its bytes, as the
publisher's member does (``Properties.held_as_wire``). A record "for
one session" is one a member sends on for a session that moved from it: ``groups`` then
holds that session's key (``device id/client id``), then the shared subscription it is for
if any (NUL before each), and the message goes to that session alone. A
"barrier" record carries no message: its topic names the member it is from, ``groups`` the
session it is for, and "relayed" says it came through the member the session left.

KV keys allow only ``[-/_=.A-Za-z0-9]``, and a topic filter can hold any character, so keys
carry filters and topics in unpadded base64url (RFC 4648 §5), which stays within that set. A
key is a NATS subject, which the client sends in one protocol line that the server bounds
(``max_control_line``, 4,096 bytes by default: past it the server closes the connection, and
with it everything the node does in the cluster). So a text of more than ``LONGEST_READABLE``
bytes (a 65,535-byte topic, 1,024 four-byte characters of a filter) is keyed by its SHA-256
instead (``is_digest``), and the entry's value names it. A session key always stays readable
(a client id is at most 255 characters: ``storage.models``).
"""

import base64
import hashlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from broker.mqtt.properties import NO_PROPERTIES, WILL, Properties, read_properties
from broker.mqtt.publish_properties import read_publish_properties
from broker.mqtt.wire import Reader, varint
from broker.peer import SessionKey, store_key
from broker.router import Message
from nanoiot.errors import ClusterError, NanoIoTError

__all__ = [
    "DIRECT", "FRAMING", "LONGEST_READABLE", "RELAYED", "Group", "Routed", "decode", "encode",
    "encode_barrier", "from_key", "groups_room", "is_digest", "read", "to_key",
]  # fmt: skip

_HEADER: Final = struct.Struct(">BHIHIIQQ")
_NO_EXPIRY: Final = 0xFFFFFFFF
_QOS_BITS: Final = 0x03
_RETAIN_BIT: Final = 0x04
_PLAIN_BIT: Final = 0x08
_ONE_SESSION_BIT: Final = 0x10
_BARRIER_BIT: Final = 0x20
_RELAYED_BIT: Final = 0x40
_MORE_BIT: Final = 0x80
_SPECIAL: Final = _ONE_SESSION_BIT | _BARRIER_BIT | _MORE_BIT
_MOST_NAMED: Final = 0xFFFF  # bytes of a record's groups (its length field has 2)
# Bytes naming one group, at most: a subscription's filter ($share/{name}/{filter}) is at most
# 1,024 characters (``storage.models``), of 4 bytes at most, and a NUL.
_LONGEST_NAMING: Final = 4 * 1024 + 1
# Bytes of a NATS message beyond one MQTT packet's content: a record's header, a retained
# message's owner (``broker.cluster.forward``, ``broker.cluster.retained``).
FRAMING: Final = 1024
DIRECT: Final = 1  # Routed.barrier: a barrier from the member it names
RELAYED: Final = 2  # ... that came through the member the session left
_EMPTY: Final = "="
# Bytes of a text its key token carries readably: 2,048 characters of base64url, which with
# the bucket, the member's prefix and a reply subject stay well within NATS's 4,096.
LONGEST_READABLE: Final = 1536
_DIGEST: Final = "="  # then the SHA-256 of a longer text, in base64url (base64url has no '=')
_NUL: Final = "\x00"

Group = tuple[str, str]  # (share name, topic filter)


# Not frozen: the receiver makes one per message (``Message``'s note on the cost).
@dataclass(slots=True)
class Routed:
    """A forwarded message and which of the receiver's subscriptions it is for."""

    message: Message
    plain: bool
    groups: tuple[Group, ...]
    session: SessionKey | None = None  # a record for one session (sent on by the member it left)
    barrier: int = 0  # DIRECT or RELAYED: a barrier (``message.topic`` names its member)


def encode(
    message: Message,
    into: bytearray,
    now: float,
    *,
    plain: bool = True,
    groups: Sequence[Group] = (),
    session: SessionKey | None = None,
) -> None:
    """Append ``message`` to a frame being built; ``now``: this process's loop time."""
    topic = message.topic.encode()
    flags = message.qos | (_RETAIN_BIT if message.retain else 0) | (_PLAIN_BIT if plain else 0)
    listed = message.properties
    # Without its length (the header has it); most messages have none: no call for them.
    properties = b"" if listed is NO_PROPERTIES else listed.wire
    expires = message.expires_at
    left = (
        _NO_EXPIRY if expires is None else max(0, min(int((expires - now) * 1000), _NO_EXPIRY - 1))
    )
    payload = message.payload
    if session is None and not groups:  # most records: nothing to name (one pass, no lists)
        into += _HEADER.pack(
            flags, len(topic), len(payload), 0, len(properties), left, message.id,
            message.routed_at,
        )  # fmt: skip
        into += topic
        into += payload
        into += properties
        return
    if session is not None:  # one group at most: one record
        chunks = [_NUL.join([store_key(session), *(f"{n}/{f}" for n, f in groups)]).encode()]
        flags |= _ONE_SESSION_BIT
    else:
        chunks = _chunked([f"{name}/{topic_filter}".encode() for name, topic_filter in groups])
    first, *more = chunks
    into += _HEADER.pack(
        flags, len(topic), len(payload), len(first), len(properties), left,
        message.id, message.routed_at,
    )  # fmt: skip
    into += topic
    into += payload
    into += first
    into += properties
    flags = (flags & ~_PLAIN_BIT) | _MORE_BIT
    for named in more:  # more groups only: what else they would hold is the record's before
        into += _HEADER.pack(flags, 0, 0, len(named), 0, _NO_EXPIRY, message.id, 0)
        into += named


def groups_room(named: int) -> int:
    """Bytes the records of one message take beyond its first record's header, topic, payload
    and properties when ``named`` bytes name its groups (a NUL after each): the names, and
    the headers of the records of more groups (each holds at least ``_MOST_NAMED`` bytes
    less one name's longest)."""
    return named + named // (_MOST_NAMED - _LONGEST_NAMING) * _HEADER.size


def _chunked(names: list[bytes]) -> list[bytes]:
    """Group names joined by NUL, in pieces of at most ``_MOST_NAMED`` bytes (at least one;
    a name is at most ``_LONGEST_NAMING`` bytes)."""
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = -1
    for name in names:
        if current and size + 1 + len(name) > _MOST_NAMED:
            chunks.append(b"\x00".join(current))
            current, size = [], -1
        current.append(name)
        size += 1 + len(name)
    chunks.append(b"\x00".join(current))
    return chunks


def encode_barrier(
    member: str, session: SessionKey, into: bytearray, *, relayed: bool = False
) -> None:
    """Append a barrier from ``member`` for ``session`` (``broker.cluster.handover``)."""
    flags = _BARRIER_BIT | (_RELAYED_BIT if relayed else 0)
    name, key = member.encode(), store_key(session).encode()
    into += _HEADER.pack(flags, len(name), 0, len(key), 0, _NO_EXPIRY, 0, 0)
    into += name
    into += key


def decode(frame: bytes, now: float) -> Iterator[Routed]:
    """The records of a frame, in order; ``ClusterError`` if it is cut short or garbled.
    ``now``: this process's loop time, which expiry deadlines are set on. A message's records
    of more groups are given as one with the record before them."""
    for record in read(frame, now):
        yield record if isinstance(record, Routed) else Routed(record, True, ())


def read(frame: bytes, now: float) -> Iterator[Routed | Message]:
    """``decode``, but a message for plain subscriptions alone (no groups, not for one
    session, not a barrier) given as its ``Message``: most records, and what a member
    receiving them needs of them.

    One pass over the bytes, slicing them (a frame holds hundreds of records: what each
    costs here is most of what a message crossing costs the receiver beyond routing)."""
    data = frame if type(frame) is bytes else bytes(frame)
    header = _HEADER.size
    held: Routed | Message | None = None
    at, end = 0, len(data)
    while at < end:
        if end - at < header:
            raise ClusterError("a forwarded frame ends inside a record header")
        (
            flags, topic_length, payload_length, groups_length, properties_length, left,
            message_id, routed_at,
        ) = _HEADER.unpack_from(data, at)  # fmt: skip
        at += header
        size = topic_length + payload_length + groups_length + properties_length
        if end - at < size or flags & _QOS_BITS == 3:
            raise ClusterError("a forwarded frame holds a malformed record")
        start, at = at, at + size
        routed: Routed | Message
        if not (flags & _SPECIAL or groups_length or properties_length):  # most records
            topic_end = start + topic_length
            routed = Message(
                data[start:topic_end].decode(), data[topic_end:at], flags & _QOS_BITS,
                bool(flags & _RETAIN_BIT), NO_PROPERTIES,
                None if left == _NO_EXPIRY else now + left / 1000, None, message_id, routed_at,
            )  # fmt: skip
            if not flags & _PLAIN_BIT:  # for nobody here: as ``decode`` gives it
                routed = Routed(routed, False, ())
        else:
            lengths = (topic_length, payload_length, groups_length, properties_length)
            record = _record(data, start, flags, lengths, left, (message_id, routed_at), now)
            if flags & _MORE_BIT and not flags & _BARRIER_BIT:
                if isinstance(held, Message):  # a plain record's: it names groups now
                    held = Routed(held, True, ())
                if held is None or held.session is not None or held.barrier:
                    raise ClusterError("a forwarded frame holds groups of no message")
                held.groups += record.groups
                continue
            routed = record
        if held is not None:
            yield held
        held = routed
    if held is not None:
        yield held


def _record(
    data: bytes, at: int, flags: int, lengths: tuple[int, int, int, int], left: int,
    ids: tuple[int, int], now: float,
) -> Routed:  # fmt: skip
    """A record with groups, properties, or for one session, or a barrier; its lengths are
    checked against the frame's."""
    topic_length, payload_length, groups_length, properties_length = lengths
    topic = data[at : at + topic_length].decode()
    at += topic_length
    payload = data[at : at + payload_length]
    at += payload_length
    named = data[at : at + groups_length].decode()
    at += groups_length
    session: SessionKey | None = None
    groups: tuple[Group, ...] = ()
    if flags & (_ONE_SESSION_BIT | _BARRIER_BIT):
        key, *shared = named.split(_NUL)
        device_id, _, client_id = key.partition("/")
        session = (device_id, client_id)
        groups = tuple(_group(one) for one in shared)
    else:
        groups = tuple(_group(one) for one in named.split(_NUL)) if named else ()
    properties = NO_PROPERTIES
    if properties_length:
        properties = _properties(varint(properties_length) + data[at : at + properties_length])
    expires = None if left == _NO_EXPIRY else now + left / 1000
    message = Message(
        topic, payload, flags & _QOS_BITS, bool(flags & _RETAIN_BIT), properties, expires,
        None, *ids,
    )  # fmt: skip
    if flags & _BARRIER_BIT:
        return Routed(message, False, (), session, RELAYED if flags & _RELAYED_BIT else DIRECT)
    return Routed(message, bool(flags & _PLAIN_BIT), groups, session)


def _properties(listed: bytes) -> Properties:
    """A PUBLISH's properties, or a will's (which routes like one, §3.1.3.2). Checked again,
    as the frame came from the network, then kept as their bytes, as the publisher's node
    keeps them (``Properties.held_as_wire``): a queue's and the retained messages' bounds
    count those bytes, so the values read must not hold 25 times more here than there."""
    try:
        properties, _ = read_publish_properties(listed, 0, len(listed))
        return properties
    except NanoIoTError:
        pass
    # A list only a will may hold (a Will Delay Interval): the broker routes a will without
    # it (``inbound.publish_will``), so none should come; read in full, as before.
    try:
        return read_properties(Reader(listed), WILL)
    except NanoIoTError:
        raise ClusterError(
            "a forwarded frame holds properties no PUBLISH or will may carry"
        ) from None


def _group(text: str) -> Group:
    name, _, topic_filter = text.partition("/")  # a share name holds no '/' (§4.8.2)
    return name, topic_filter


def to_key(text: str) -> str:
    """A topic, filter or session key as a KV key token: never empty (the empty topic is
    ``=``), never longer than 2,048 characters (past ``LONGEST_READABLE`` bytes, a digest:
    the entry's value must name the text)."""
    encoded = text.encode()
    if len(encoded) > LONGEST_READABLE:
        digest = hashlib.sha256(encoded).digest()
        return _DIGEST + base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return base64.urlsafe_b64encode(encoded).decode().rstrip("=") or _EMPTY


def is_digest(part: str) -> bool:
    """Whether a key token is a long text's digest (``from_key`` cannot give the text)."""
    return len(part) > 1 and part.startswith(_DIGEST)


def from_key(part: str) -> str:
    """The text of a key token; ``ValueError`` if it is a digest or not base64url."""
    if part == _EMPTY:
        return ""
    if is_digest(part):
        raise ValueError("the key of a long text: its entry's value names the text")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()
