"""A PUBLISH's property list read in one pass (``broker.mqtt.publish_properties``): the same
verdict as the general reader on every list, values made only when asked for, and the
previous list of the connection reused when the bytes are the same (MQTT 5 §3.3.2.3)."""

import random

import pytest

from broker.mqtt.connection import Connection
from broker.mqtt.limits import Limits
from broker.mqtt.packets import MQTT_5, Connect, Publish
from broker.mqtt.properties import (
    NO_PROPERTIES,
    PUBLISH,
    Properties,
    Property,
    read_properties,
)
from broker.mqtt.publish_properties import read_publish_properties
from broker.mqtt.session import Outgoing, Session
from broker.mqtt.wire import Reader, varint
from nanoiot.errors import MalformedPacket, ProtocolError
from tests.broker.mqtt.wire_helpers import feed, packets_in, wire


def _user(name: bytes, value: bytes) -> bytes:
    return b"\x26" + len(name).to_bytes(2, "big") + name + len(value).to_bytes(2, "big") + value


PLAIN = _user(b"site", b"plant-7") + _user(b"line", b"3")  # ASCII: the fast reader's
USERS = PLAIN + _user(b"unit", b"\xc2\xb0C")  # not ASCII: the general reader's
ALIAS = b"\x23\x00\x05"
EXPIRY = b"\x02\x00\x00\x00\x3c"
# Lists the fast reader takes, and lists it hands to the general reader.
SEEDS = (
    PLAIN, PLAIN + ALIAS, ALIAS + PLAIN + EXPIRY, EXPIRY + _user(b"k", b"\x00\x01"), PLAIN * 4,
    USERS, USERS + ALIAS, ALIAS + USERS + EXPIRY, EXPIRY, ALIAS,
    _user(b"", b""), b"\x03\x00\x04text" + USERS,  # content type: the general reader's
    b"\x09\x00\x02\x00\x01" + ALIAS, b"\x01\x01" + USERS, b"\x08\x00\x03a/b" + EXPIRY,
    USERS * 5,  # 128 bytes or more: a two-byte length
)  # fmt: skip


def _general(block: bytes) -> tuple[str, object]:
    try:
        return "ok", read_properties(Reader(block), PUBLISH).items
    except (MalformedPacket, ProtocolError) as exc:
        return type(exc).__name__, str(exc)


def _fast(block: bytes) -> tuple[str, object]:
    try:
        properties, at = read_publish_properties(block, 0, len(block))
    except (MalformedPacket, ProtocolError) as exc:
        return type(exc).__name__, str(exc)
    assert at == len(block)
    return "ok" if properties._items is not None else "ok, read lazily", properties.items


def _mutations(rng: random.Random, raw: bytes) -> list[bytes]:
    """``raw`` with a byte changed, a byte dropped, a byte added, cut short, or doubled."""
    found = []
    for _ in range(40):
        data = bytearray(raw)
        at = rng.randrange(len(data) + 1)
        kind = rng.randrange(5)
        if kind == 0 and at < len(data):
            data[at] = rng.choice((0, 1, 2, 0x23, 0x26, 0x7F, 0x80, 0xC3, 0xFF, rng.randrange(256)))
        elif kind == 1 and at < len(data):
            del data[at]
        elif kind == 2:
            data.insert(at, rng.randrange(256))
        elif kind == 3:
            del data[at:]
        else:
            data += raw
        found.append(bytes(data))
    return found


def test_the_fast_reader_gives_the_general_readers_verdict_on_every_list() -> None:
    # §2.2.2, §3.3.2.3: the same values or the same error, for valid lists and for broken ones
    # (a changed identifier, a length past the end, bad UTF-8, U+0000, a repeated alias...).
    rng = random.Random(5)
    lists = [raw for seed in SEEDS for raw in (seed, *_mutations(rng, seed))]
    outcomes = set()
    for raw in lists:
        block = varint(len(raw)) + raw
        fast, general = _fast(block), _general(block)
        assert (fast[0].split(",")[0], fast[1]) == general, raw
        outcomes.add(fast[0])
    # And the lists tried reach every verdict, and both readers: the comparison can fail.
    assert outcomes == {"ok", "ok, read lazily", "MalformedPacket", "ProtocolError"}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (_user(b"a\x00", b"1"), r"U\+0000"),  # §1.5.4
        (_user(b"a", b"\xc3"), "not valid UTF-8"),
        (_user(b"a", b"\xed\xa0\x80"), "not valid UTF-8"),  # a surrogate, §1.5.4
        (ALIAS + ALIAS, "appears twice"),  # §2.2.2.2
        (b"\x23\x00\x00", "topic_alias is 0"),  # §3.3.2.3.4
        (USERS[:-1], "runs past"),
    ],
)
def test_what_the_fast_reader_refuses(raw: bytes, problem: str) -> None:
    block = varint(len(raw)) + raw
    with pytest.raises((MalformedPacket, ProtocolError), match=problem):
        read_publish_properties(block, 0, len(block))


def test_values_are_made_only_when_asked_for() -> None:
    raw = ALIAS + PLAIN + EXPIRY
    block = varint(len(raw)) + raw
    properties, _ = read_publish_properties(block, 0, len(block))
    # What the broker acts on is read; the user properties stay bytes until asked for.
    assert (properties.topic_alias, properties.message_expiry) == (5, 60)
    assert properties.wire == raw
    assert properties._items is None
    assert properties.all(Property.USER_PROPERTY) == [("site", "plant-7"), ("line", "3")]
    # The alias is cut out of the bytes, which stay the publisher's (§3.3.2.3.4).
    stripped = properties.without_topic_alias()
    assert stripped.wire == PLAIN + EXPIRY
    assert stripped.topic_alias is None
    assert stripped.message_expiry == 60
    assert stripped == Properties([*properties.items[1:]])
    assert properties.without_topic_alias() is stripped


def test_the_previous_list_is_reused_when_the_bytes_are_the_same() -> None:
    block = varint(len(USERS)) + USERS
    first, _ = read_publish_properties(block, 0, len(block))
    again, _ = read_publish_properties(block, 0, len(block), first)
    assert again is first
    other = varint(len(EXPIRY)) + EXPIRY
    changed, _ = read_publish_properties(other, 0, len(other), first)
    assert changed is not first
    assert changed.message_expiry == 60
    empty, at = read_publish_properties(b"\x00", 0, 1, first)
    assert (empty, at) == (NO_PROPERTIES, 1)


def _subscriber_and_publisher() -> tuple[Connection, Connection]:
    made = []
    aliases = Properties([(Property.TOPIC_ALIAS_MAXIMUM, 4)])
    for client_id, asked in (("sub", aliases), ("pub", NO_PROPERTIES)):
        connection = Connection(Limits(max_topic_aliases=4))
        connect = Connect(MQTT_5, client_id, True, 0, properties=asked)
        connection.receive_data(wire(connect, level=MQTT_5), 0)
        connection.accept(Session(client_id, persistent=False), session_present=False)
        connection.data_to_send()
        made.append(connection)
    return made[0], made[1]


def test_a_client_that_changes_its_properties_is_forwarded_the_new_ones() -> None:
    # §3.3.2.3.7: the user properties a subscriber receives are those of each message,
    # though the connection keeps the previous message's list.
    subscriber, publisher = _subscriber_and_publisher()
    lists = [
        Properties([(Property.TOPIC_ALIAS, 1), (0x26, ("n", "1"))]),
        Properties([(Property.TOPIC_ALIAS, 1), (0x26, ("n", "1"))]),
        Properties([(Property.TOPIC_ALIAS, 1), (0x26, ("n", "2"))]),
        Properties([(0x26, ("n", "2")), (Property.MESSAGE_EXPIRY_INTERVAL, 9)]),
    ]
    topics = ["a/b", "", "", "a/b"]
    packets = [Publish(t, b"x", properties=p) for t, p in zip(topics, lists, strict=True)]
    events = feed(publisher, *packets)
    assert [event.topic for event in events if isinstance(event, Publish)] == ["a/b"] * 4
    for event in events:
        assert isinstance(event, Publish)
        subscriber.publish(Outgoing(event.topic, event.payload, 0, properties=event.properties))
    received = packets_in(subscriber.data_to_send(), MQTT_5)
    assert [packet.properties.all(0x26) for packet in received if isinstance(packet, Publish)] == [
        [("n", "1")], [("n", "1")], [("n", "2")], [("n", "2")]
    ]  # fmt: skip
    # The subscriber is given alias 1 for a/b once, then the alias alone (§3.3.2.3.4).
    assert [packet.topic for packet in received if isinstance(packet, Publish)] == [
        "a/b", "", "", ""
    ]  # fmt: skip


def test_what_changes_per_delivery_is_spliced_into_the_publishers_bytes() -> None:
    raw = ALIAS + PLAIN + EXPIRY
    block = varint(len(raw)) + raw
    read, _ = read_publish_properties(block, 0, len(block))
    routed = read.without_topic_alias()
    # §3.3.2.3.3: the time left replaces the interval in place; the rest stays as it came.
    left = routed.with_message_expiry(7)
    assert left.wire == PLAIN + b"\x02\x00\x00\x00\x07"
    assert left.message_expiry == 7
    assert left.items == (*routed.items[:-1], (Property.MESSAGE_EXPIRY_INTERVAL, 7))
    # §3.3.4: the subscription identifiers go at the end; the expiry is still found.
    marked = routed.with_subscription_identifiers((2, 300))
    assert marked.wire == PLAIN + EXPIRY + b"\x0b\x02\x0b\xac\x02"
    assert marked.has_subscription_identifier
    assert marked.all(Property.SUBSCRIPTION_IDENTIFIER) == [2, 300]
    assert marked.with_message_expiry(1).wire == PLAIN + b"\x02\x00\x00\x00\x01\x0b\x02\x0b\xac\x02"
    # Properties made from values (a restored session's) get the same answers.
    made = Properties([(0x26, ("a", "1")), (Property.MESSAGE_EXPIRY_INTERVAL, 10)])
    assert made.with_message_expiry(4) == Properties([(0x26, ("a", "1")), (0x02, 4)])
    assert made.with_subscription_identifiers((5,)).all(Property.SUBSCRIPTION_IDENTIFIER) == [5]
