"""Frames between nodes and route keys: pure encoding, and the route table's matching."""

import struct
import tracemalloc

import pytest

from broker.cluster.frames import (
    DIRECT,
    LONGEST_READABLE,
    RELAYED,
    Routed,
    decode,
    encode,
    encode_barrier,
    from_key,
    groups_room,
    is_digest,
    to_key,
)
from broker.cluster.routes import RouteTable
from broker.mqtt.properties import MAX_USER_PROPERTIES, Properties, Property, PropertyValue
from broker.mqtt.shared import naming
from broker.peer import store_key
from broker.router import Message
from nanoiot.errors import ClusterError

NOW = 1000.0


def test_a_frame_carries_messages_in_order_with_qos_and_retain() -> None:
    messages = [
        Message("devices/a/telemetry", b'{"t": 1}', 0),
        Message("a b/./é", b"\x00\xff" * 1000, 1, retain=True),
        Message("x", b"", 2),
    ]
    frame = bytearray()
    for message in messages:
        encode(message, frame, NOW)
    assert list(decode(bytes(frame), NOW)) == [Routed(m, True, ()) for m in messages]


def test_a_record_says_which_subscriptions_it_is_for() -> None:
    message = Message("devices/a/telemetry", b"x", 1)
    groups = [("workers", "devices/+/telemetry"), ("g2", "devices/#")]
    frame = bytearray()
    encode(message, frame, NOW, plain=False, groups=groups)
    encode(message, frame, NOW, plain=True)
    assert list(decode(bytes(frame), NOW)) == [
        Routed(message, False, tuple(groups)),
        Routed(message, True, ()),
    ]


def test_the_cluster_id_and_route_revision_cross() -> None:
    message = Message("t", b"p", 2, id=(0xDEADBEEF << 32) | 7, routed_at=2**40 + 3)
    frame = bytearray()
    encode(message, frame, NOW)
    (routed,) = decode(bytes(frame), NOW)
    assert (routed.message.id, routed.message.routed_at) == (message.id, message.routed_at)


def test_groups_past_what_a_record_names_cross_as_one_message() -> None:
    """A record names at most 65,535 bytes of groups (before: building the frame failed, and
    each publisher of a message matching them was disconnected)."""
    groups = [(f"g{n}" + "n" * 1000, "devices/#") for n in range(200)]  # 200 KB of names
    frame = bytearray()
    encode(Message("devices/a/t", b"1", 1, id=7), frame, NOW, groups=groups)
    encode(Message("devices/b/t", b"2", 0), frame, NOW, plain=False, groups=groups[:1])
    first, second = decode(bytes(frame), NOW)
    assert (first.message.topic, first.message.payload, first.message.id) == (
        "devices/a/t",
        b"1",
        7,
    )
    assert first.plain
    assert first.groups == tuple(groups)
    assert (second.message.topic, second.plain, second.groups) == (
        "devices/b/t",
        False,
        (groups[0],),
    )


def test_a_message_with_many_groups_holds_its_payload_once() -> None:
    """The records of more groups hold the groups alone (before, each repeated the topic,
    payload and properties: a 200 KB payload with 300 KB of names took 1.2 MB, past what
    NATS carries, and its publisher was disconnected)."""
    groups = [(f"g{n}" + "n" * 990, "devices/#") for n in range(300)]
    named = sum(naming(*group) for group in groups)
    message = Message("devices/a/t", b"p" * 200_000, 1, properties=_properties(), id=9)
    frame = bytearray()
    encode(message, frame, NOW, groups=groups)
    content = len(message.topic) + len(message.payload) + len(message.properties.wire)
    assert len(frame) <= 33 + content + groups_room(named) < content + named + 1024
    (routed,) = decode(bytes(frame), NOW)
    assert (routed.message.payload, routed.message.properties) == (message.payload, _properties())
    assert routed.groups == tuple(groups)


def test_records_of_more_groups_from_an_earlier_version_are_read_as_before() -> None:
    """An earlier version's records of more groups repeat the message: only their groups
    are taken, as an earlier version takes only those of this version's."""
    header = struct.Struct(">BHIHIIQQ")  # the record header (``broker.cluster.frames``)
    topic, payload = b"devices/a/t", b"21.5"
    frame = bytearray()
    for flags, named in ((0x01 | 0x08, b"g1/devices/#\x00g2/devices/#"), (0x01 | 0x80, b"g3/#")):
        frame += header.pack(flags, len(topic), len(payload), len(named), 0, 0xFFFFFFFF, 5, 6)
        frame += topic + payload + named
    (routed,) = decode(bytes(frame), NOW)
    assert routed == Routed(
        Message("devices/a/t", b"21.5", 1, id=5, routed_at=6),
        True,
        (("g1", "devices/#"), ("g2", "devices/#"), ("g3", "#")),
    )


def _properties() -> Properties:
    return Properties([(Property.CONTENT_TYPE, "text/plain")])


def test_a_record_for_one_session_names_it_and_no_group() -> None:
    """A message sent on for a session that moved: the key crosses whatever its client id
    holds (a device id has no '/', a client id may)."""
    message = Message("devices/a/telemetry", b"x", 1, id=5, routed_at=9)
    frame = bytearray()
    encode(message, frame, NOW, plain=False, session=("device-1", "client/with/slashes é"))
    (routed,) = decode(bytes(frame), NOW)
    assert routed == Routed(message, False, (), ("device-1", "client/with/slashes é"))


def test_a_record_for_one_session_may_name_its_shared_subscription() -> None:
    message = Message("devices/a/telemetry", b"x", 1, id=6, routed_at=9)
    frame = bytearray()
    group = ("backends", "devices/+/telemetry")
    encode(message, frame, NOW, plain=False, session=("device-1", "c"), groups=[group])
    (routed,) = decode(bytes(frame), NOW)
    assert routed == Routed(message, False, (group,), ("device-1", "c"))


def test_a_barrier_names_its_member_and_session_and_whether_it_was_relayed() -> None:
    message = Message("t", b"p", 1)
    frame = bytearray()
    encode(message, frame, NOW)
    encode_barrier("node-c", ("device-1", "client/1"), frame)
    encode_barrier("node-b", ("device-1", "client/1"), frame, relayed=True)
    first, direct, relayed = decode(bytes(frame), NOW)
    assert first.barrier == 0
    assert (direct.barrier, direct.message.topic, direct.session) == (
        DIRECT,
        "node-c",
        ("device-1", "client/1"),
    )
    assert (relayed.barrier, relayed.message.topic) == (RELAYED, "node-b")


def test_properties_and_the_time_to_expiry_cross() -> None:
    """Each process has its own clock: the expiry crosses as the time left."""
    properties = Properties(
        [(Property.USER_PROPERTY, ("k", "v")), (Property.CONTENT_TYPE, "application/json"),
         (Property.MESSAGE_EXPIRY_INTERVAL, 60)]
    )  # fmt: skip
    message = Message("t", b"p", 1, properties=properties, expires_at=NOW + 30.0)
    frame = bytearray()
    encode(message, frame, NOW)
    (routed,) = decode(bytes(frame), 50.0)
    assert routed.message.properties == properties
    assert routed.message.expires_at == 80.0


def test_a_property_list_of_128_bytes_or_more_crosses() -> None:
    # Its length takes two bytes of variable byte integer (§1.5.5): the frame keeps the list
    # without that length, whatever its size.
    properties = Properties([(Property.USER_PROPERTY, ("k" * 60, "v" * 80))])
    message = Message("t", b"p", 1, properties=properties)
    frame = bytearray()
    encode(message, frame, NOW)
    (routed,) = decode(bytes(frame), NOW)
    assert routed.message.properties == properties


def test_a_long_list_is_held_as_its_bytes_on_the_receiving_node() -> None:
    # Decoded, 1,024 empty user properties held 128 KB for the 5 KB that max_queued_bytes and
    # the retained bounds count (``Properties.held_as_wire``): as on the publisher's node.
    listed: list[tuple[int, PropertyValue]] = [
        (Property.USER_PROPERTY, (str(n), "")) for n in range(MAX_USER_PROPERTIES - 1)
    ]
    listed += [(Property.MESSAGE_EXPIRY_INTERVAL, 60), (Property.USER_PROPERTY, ("z", ""))]
    frame = bytearray()
    for n in range(10):
        message = Message(f"t/{n}", b"p", 1, properties=Properties(listed), expires_at=NOW + 60)
        encode(message, frame, NOW)
    data = bytes(frame)
    list(decode(data, NOW))  # the interpreter's free lists filled before counting
    tracemalloc.start()
    try:
        routed = list(decode(data, NOW))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(routed) == 10
    assert held < 2 * len(data)
    properties = routed[0].message.properties
    assert properties.message_expiry == 60
    assert properties.all(Property.USER_PROPERTY)[-1] == ("z", "")  # read when asked
    sent = properties.with_message_expiry(59)  # the time left, spliced into the bytes
    assert sent.items[-2:] == (
        (Property.MESSAGE_EXPIRY_INTERVAL, 59),
        (Property.USER_PROPERTY, ("z", "")),
    )


def test_a_list_no_publish_may_carry_is_refused() -> None:
    frame = bytearray()
    wrong = Properties([(Property.SESSION_EXPIRY_INTERVAL, 5)])  # CONNECT's, not PUBLISH's
    encode(Message("t", b"p", 1, properties=wrong), frame, NOW)
    with pytest.raises(ClusterError, match="no PUBLISH or will may carry"):
        list(decode(bytes(frame), NOW))


@pytest.mark.parametrize("cut", [1, 5, 8, 12])
def test_a_cut_frame_is_an_error_not_a_partial_message(cut: int) -> None:
    frame = bytearray()
    encode(Message("topic", b"payload", 1), frame, NOW)
    with pytest.raises(ClusterError, match="forwarded frame"):
        list(decode(bytes(frame[:-cut]), NOW))


def test_keys_hold_any_filter_in_the_characters_kv_allows() -> None:
    for text in ["devices/+/telemetry", "#", "a b/.*>/é", "$share/g/x/#", "/"]:
        key = to_key(text)
        assert set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
        assert from_key(key) == text


def test_client_ids_that_look_alike_are_claimed_under_keys_of_their_own() -> None:
    """A claim's key (``<cluster>_clients``) is its session key in base64url: ids a subject
    or a case-folding encoding would merge stay apart."""
    device = "0190d4a0-0000-7000-8000-000000000001"
    ids = ["a.b", "a/b", "a_b", "a-b", "a=b", "A.b", "a b", "a*", "a>", "", "é", "e\u0301"]
    keys = {to_key(store_key((device, client_id))) for client_id in ids}
    assert len(keys) == len(ids)
    assert all(from_key(key).partition("/")[2] in ids for key in keys)


def test_a_text_too_long_for_a_nats_subject_is_keyed_by_its_digest() -> None:
    """NATS closes a connection whose protocol line passes 4,096 bytes (max_control_line)."""
    longest = "é" * (LONGEST_READABLE // 2)
    assert from_key(to_key(longest)) == longest  # 2,048 characters: read back
    longest_session = store_key(("0190d4a0-0000-7000-8000-000000000001", "\U0001f600" * 255))
    assert from_key(to_key(longest_session)) == longest_session  # a claim is always read back
    for text in ["x" * 65535, "\U0001f600" * 1024, longest + "a"]:
        key = to_key(text)
        assert is_digest(key)
        assert len(key) == 44
        assert set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
        with pytest.raises(ValueError, match="its entry's value names the text"):
            from_key(key)
    assert to_key("x" * 65535) != to_key("x" * 65534)
    assert not is_digest(to_key(""))
    assert not is_digest(to_key(longest))


def test_route_table_names_each_interested_member_once() -> None:
    table = RouteTable()
    table.add("b", "devices/#")
    table.add("b", "devices/+/telemetry")  # overlapping: b is still named once
    table.add("c", "devices/x/telemetry")
    table.add("d", "other/#")
    assert sorted(table.members_for("devices/x/telemetry")) == ["b", "c"]
    assert sorted(table.members_for("devices/y/telemetry")) == ["b"]
    assert sorted(table.members_for("devices")) == ["b"]  # '#' matches its parent level
    assert list(table.members_for("$SYS/broker/uptime")) == []
    table.remove("b", "devices/#")
    assert sorted(table.members_for("devices/y/telemetry")) == ["b"]
    table.remove("b", "devices/+/telemetry")
    assert list(table.members_for("devices/y/telemetry")) == []
    assert table.members() == {"c", "d"}


def test_shared_subscriptions_are_routes_of_their_own_by_group() -> None:
    table = RouteTable()
    table.add("b", "$share/workers/devices/+/telemetry")
    table.add("c", "$share/workers/devices/+/telemetry")
    table.add("c", "$share/other/devices/#")
    table.add("d", "$share/workers/devices/#")  # same name, another filter: another group
    assert list(table.members_for("devices/x/telemetry")) == []  # no plain subscriber
    found = table.groups_for("devices/x/telemetry")
    assert {group: sorted(members) for group, members in found.items()} == {
        ("workers", "devices/+/telemetry"): ["b", "c"],
        ("other", "devices/#"): ["c"],
        ("workers", "devices/#"): ["d"],
    }
    table.remove("c", "$share/workers/devices/+/telemetry")
    table.remove("c", "$share/other/devices/#")
    assert set(table.groups_for("devices/x/telemetry")) == {
        ("workers", "devices/+/telemetry"),
        ("workers", "devices/#"),
    }


def test_route_table_does_not_hold_the_long_topics_it_was_asked() -> None:
    """The members of a topic are remembered, but not a topic of 64 KiB: 10,000 of 256 KiB
    (max_packet_size) held 2.5 GB for a device publishing on that many."""
    table = RouteTable()
    table.add("b", "devices/#")
    tracemalloc.start()
    try:
        for n in range(100):  # each message's topic is a string of its own
            assert set(table.members_for(f"devices/{n}/" + "x" * 64 * 1024)) == {"b"}
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 256 * 1024, f"{held} bytes held for 100 topics of 64 KiB"
    assert set(table.members_for("devices/1/telemetry")) == {"b"}  # short ones: remembered


def test_route_table_answers_follow_routes_added_after_a_topic_was_asked() -> None:
    table = RouteTable()
    assert list(table.members_for("devices/x/telemetry")) == []
    table.add("b", "devices/+/telemetry")
    assert list(table.members_for("devices/x/telemetry")) == ["b"]
    for n in range(12_000):  # past the topics remembered: answers stay right
        assert list(table.members_for(f"devices/{n}/telemetry")) == ["b"]
    table.add("c", "devices/7/#")
    assert sorted(table.members_for("devices/7/telemetry")) == ["b", "c"]
