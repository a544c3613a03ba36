"""Frames between nodes and route keys: pure encoding, and the route table's matching."""

import pytest

from broker.cluster.frames import decode, encode, from_key, to_key
from broker.cluster.routes import RouteTable, route_filter
from broker.router import Message
from nanoiot.errors import ClusterError


def test_a_frame_carries_messages_in_order_with_qos_and_retain() -> None:
    messages = [
        Message("devices/a/telemetry", b'{"t": 1}', 0),
        Message("a b/./é", b"\x00\xff" * 1000, 1, retain=True),
        Message("x", b"", 2),
    ]
    frame = bytearray()
    for message in messages:
        encode(message, frame)
    assert list(decode(bytes(frame))) == messages


@pytest.mark.parametrize("cut", [1, 5, 8, 12])
def test_a_cut_frame_is_an_error_not_a_partial_message(cut: int) -> None:
    frame = bytearray()
    encode(Message("topic", b"payload", 1), frame)
    with pytest.raises(ClusterError, match="forwarded frame"):
        list(decode(bytes(frame[:-cut])))


def test_keys_hold_any_filter_in_the_characters_kv_allows() -> None:
    for text in ["devices/+/telemetry", "#", "a b/.*>/é", "$share/g/x/#", "/"]:
        key = to_key(text)
        assert set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
        assert from_key(key) == text


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
    assert table.drop_member("b") == 1
    assert list(table.members_for("devices/y/telemetry")) == []
    assert table.members() == {"c", "d"}


def test_a_shared_subscription_routes_on_its_filter() -> None:
    assert route_filter("$share/workers/devices/+/telemetry") == "devices/+/telemetry"
    assert route_filter("devices/#") == "devices/#"
