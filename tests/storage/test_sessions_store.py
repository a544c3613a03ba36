"""Persistent MQTT sessions in the store, on SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest

from nanoiot.errors import ConflictError
from storage.records import Device
from storage.session_data import (
    Acknowledge,
    DropSession,
    Enqueue,
    MarkAttempted,
    MarkReleased,
    MarkSent,
    SaveSession,
    SessionAway,
    StoredSubscription,
    Subscribe,
    Unsubscribe,
)
from storage.sql import SqlCredentialStore
from tests.storage.conftest import saved_session

EVERY_BYTE = bytes(range(256))


async def test_a_session_keeps_subscriptions_and_queue_in_order(
    store: SqlCredentialStore, other_store: SqlCredentialStore, device: Device
) -> None:
    key = f"{device.id}/c1"
    ids = await store.write_sessions(
        [
            saved_session(device),
            Subscribe(key, "devices/meter/rpc/request/+", 1, True),
            Subscribe(key, "devices/meter/attributes", 1, False),
            *(Enqueue(key, f"t/{n}", bytes([n]) * 3, 1) for n in range(5)),
            Enqueue(key, "binary", EVERY_BYTE, 1),
        ]
    )
    assert len(ids) == 6
    assert ids == sorted(ids)
    [loaded] = await other_store.load_sessions()  # another engine: it is committed
    assert (loaded.key, loaded.device_id, loaded.device_name, loaded.client_id) == (
        key, device.id, "meter", "c1",
    )  # fmt: skip
    assert sorted(loaded.subscriptions, key=lambda s: s.topic_filter) == [
        StoredSubscription("devices/meter/attributes", 1, False),
        StoredSubscription("devices/meter/rpc/request/+", 1, True),
    ]
    assert [m.id for m in loaded.queued] == ids
    assert [m.topic for m in loaded.queued] == [*(f"t/{n}" for n in range(5)), "binary"]
    assert loaded.queued[-1].payload == EVERY_BYTE
    assert not any(m.attempted for m in loaded.queued)


async def test_acknowledged_messages_are_gone_and_attempted_ones_marked(
    store: SqlCredentialStore, device: Device
) -> None:
    key = f"{device.id}/c1"
    first, second, third = await store.write_sessions(
        [saved_session(device), *(Enqueue(key, "t", bytes([n]), 1) for n in range(3))]
    )
    await store.write_sessions([MarkAttempted((first, second)), Acknowledge((first,))])
    [loaded] = await store.load_sessions()
    assert [(m.id, m.attempted) for m in loaded.queued] == [(second, True), (third, False)]


async def test_unsubscribe_and_resubscribe(store: SqlCredentialStore, device: Device) -> None:
    key = f"{device.id}/c1"
    await store.write_sessions(
        [saved_session(device), Subscribe(key, "a/+", 1, False), Subscribe(key, "b", 0, False)]
    )
    await store.write_sessions([Unsubscribe(key, "a/+"), Subscribe(key, "b", 1, False)])
    [loaded] = await store.load_sessions()
    assert loaded.subscriptions == [StoredSubscription("b", 1, False)]


async def test_a_subscription_keeps_its_identifier(
    store: SqlCredentialStore, device: Device
) -> None:
    # MQTT 5 §3.8.2.1.2: up to 268,435,455; a SUBSCRIBE of the same filter replaces it (§3.8.4).
    key = f"{device.id}/c1"
    most = 268_435_455
    await store.write_sessions(
        [saved_session(device), Subscribe(key, "a", 1, False, 0x04, most),
         Subscribe(key, "b", 1, False, 0, 7)]
    )  # fmt: skip
    await store.write_sessions([Subscribe(key, "b", 1, False)])
    [loaded] = await store.load_sessions()
    assert sorted(loaded.subscriptions, key=lambda s: s.topic_filter) == [
        StoredSubscription("a", 1, False, 0x04, most),
        StoredSubscription("b", 1, False),
    ]


async def test_dropping_a_session_removes_everything_of_it_only(
    store: SqlCredentialStore, device: Device
) -> None:
    mine, other = f"{device.id}/c1", f"{device.id}/c2"
    await store.write_sessions(
        [
            saved_session(device, "c1"),
            saved_session(device, "c2"),
            Subscribe(mine, "x", 1, False),
            Enqueue(mine, "x", b"1", 1),
            Subscribe(other, "y", 1, False),
            Enqueue(other, "y", b"2", 1),
        ]
    )
    await store.write_sessions([DropSession(mine)])
    [left] = await store.load_sessions()
    assert left.key == other
    assert [m.payload for m in left.queued] == [b"2"]


async def test_deleting_the_device_deletes_its_sessions(
    store: SqlCredentialStore, device: Device
) -> None:
    key = f"{device.id}/c1"
    await store.write_sessions(
        [saved_session(device), Subscribe(key, "x", 1, False), Enqueue(key, "x", b"m", 1)]
    )
    await store.delete_device(device.id)
    assert await store.load_sessions() == []


async def test_a_write_for_a_vanished_session_fails_and_applies_nothing(
    store: SqlCredentialStore, device: Device
) -> None:
    """One transaction: the caller (broker.journal) retries the writes one by one."""
    key = f"{device.id}/c1"
    with pytest.raises(ConflictError):
        await store.write_sessions(
            [saved_session(device), Enqueue(f"{device.id}/gone", "x", b"m", 1)]
        )
    assert await store.load_sessions() == []
    await store.write_sessions([saved_session(device), Enqueue(key, "x", b"m", 1)])
    [loaded] = await store.load_sessions()
    assert [m.payload for m in loaded.queued] == [b"m"]


async def test_saving_again_keeps_the_session_state(
    store: SqlCredentialStore, device: Device
) -> None:
    key = f"{device.id}/c1"
    await store.write_sessions([saved_session(device), Subscribe(key, "x", 1, False)])
    await store.write_sessions([saved_session(device)])
    [loaded] = await store.load_sessions()
    assert loaded.subscriptions == [StoredSubscription("x", 1, False)]


async def test_messages_in_flight_keep_packet_id_pubrec_state_and_retain(
    store: SqlCredentialStore, device: Device
) -> None:
    """§4.4: what a restart needs to re-send with the original packet ids."""
    key = f"{device.id}/c1"
    first, second, third = await store.write_sessions(
        [
            saved_session(device),
            Subscribe(key, "devices/meter/#", 2, False, options=0x2C),
            Enqueue(key, "t/sent", b"1", 2, retain=True, packet_id=7, attempted=True),
            Enqueue(key, "t/queued", b"2", 1),
            Enqueue(key, "t/released", b"3", 2, packet_id=9, attempted=True, released=True),
        ]
    )
    await store.write_sessions([MarkSent(((second, 8),)), MarkReleased((first,))])
    [loaded] = await store.load_sessions()
    assert [(m.packet_id, m.attempted, m.released, m.retain) for m in loaded.queued] == [
        (7, True, True, True),
        (8, True, False, False),
        (9, True, True, False),
    ]
    assert [m.id for m in loaded.queued] == [first, second, third]
    assert loaded.subscriptions == [StoredSubscription("devices/meter/#", 2, False, 0x2C)]


async def test_marking_a_message_that_is_gone_changes_nothing_else(
    store: SqlCredentialStore, device: Device
) -> None:
    """A message sent just before its session was dropped (a clean start, its expiry) or
    acknowledged: its MarkSent finds no row, and the writes beside it still apply, in the
    same transaction, like MarkAttempted and MarkReleased on missing rows."""
    key = f"{device.id}/c1"
    [gone, kept] = await store.write_sessions(
        [saved_session(device), Enqueue(key, "t/gone", b"1", 1), Enqueue(key, "t/kept", b"2", 1)]
    )
    await store.write_sessions([Acknowledge((gone,))])
    await store.write_sessions([MarkSent(((gone, 3), (kept, 4))), MarkReleased((gone,))])
    [loaded] = await store.load_sessions()
    assert [(m.id, m.packet_id, m.attempted) for m in loaded.queued] == [(kept, 4, True)]


async def test_a_topic_of_65535_bytes_is_stored_whole(
    store: SqlCredentialStore, device: Device
) -> None:
    """A PUBLISH topic may be 65,535 bytes (§1.5.3); a message acknowledged to its publisher
    must never fail to be stored for its length."""
    key = f"{device.id}/c1"
    topic = "é/" * 21845  # 65,535 bytes of UTF-8, 43,690 characters
    assert len(topic.encode()) == 65535
    await store.write_sessions([saved_session(device), Enqueue(key, topic, b"", 1)])
    [loaded] = await store.load_sessions()
    assert loaded.queued[0].topic == topic


async def test_mqtt_5_properties_and_receive_time_of_a_queued_message_are_kept(
    store: SqlCredentialStore, other_store: SqlCredentialStore, device: Device
) -> None:
    key = f"{device.id}/c1"
    # Message Expiry Interval 60, a user property ("k", "v"), Subscription Identifier 7.
    wire = b"\x0e\x02\x00\x00\x00\x3c\x26\x00\x01k\x00\x01v\x0b\x07"
    received = datetime(2026, 12, 5, 10, 0, 0, 123456, tzinfo=UTC)
    await store.write_sessions(
        [saved_session(device), Enqueue(key, "t", b"x", 1, properties=wire, received_at=received),
         Enqueue(key, "plain", b"y", 1)]
    )  # fmt: skip
    [loaded] = await other_store.load_sessions()
    first, second = loaded.queued
    assert (first.properties, first.received_at) == (wire, received)
    assert (second.properties, second.received_at) == (None, None)


async def test_a_session_keeps_its_expiry_interval_and_when_its_client_left(
    store: SqlCredentialStore, other_store: SqlCredentialStore, device: Device
) -> None:
    key = f"{device.id}/c1"
    left = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    await store.write_sessions([saved_session(device), SessionAway(key, 0xFFFFFFFF, left)])
    [loaded] = await other_store.load_sessions()
    assert (loaded.expiry_interval, loaded.disconnected_at) == (0xFFFFFFFF, left)
    # Its client is back with another interval: no longer away.
    again = SaveSession(key, device.id, device.name, "c1", 300)
    await store.write_sessions([again])
    [loaded] = await other_store.load_sessions()
    assert (loaded.expiry_interval, loaded.disconnected_at) == (300, None)
    await store.write_sessions([SessionAway(key, 300, left + timedelta(seconds=5))])
    loaded_one = await other_store.load_session(key)
    assert loaded_one is not None
    assert loaded_one.disconnected_at == left + timedelta(seconds=5)


async def test_a_3_1_1_session_has_no_expiry_interval(
    store: SqlCredentialStore, device: Device
) -> None:
    key = f"{device.id}/c1"
    await store.write_sessions([saved_session(device), SessionAway(key, None, datetime.now(UTC))])
    [loaded] = await store.load_sessions()
    assert loaded.expiry_interval is None
    assert loaded.disconnected_at is not None


async def test_a_queued_qos2_message_keeps_its_cluster_wide_id(
    store: SqlCredentialStore, device: Device
) -> None:
    """Every unsigned 64-bit id (a member's random 32 bits, then a count) reads back as it
    was written, in a BIGINT; a message without one (QoS 0/1, one node) has None."""
    key = f"{device.id}/c1"
    ids = [1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
    await store.write_sessions(
        [saved_session(device), *(Enqueue(key, "t", b"", 2, message_id=i) for i in ids),
         Enqueue(key, "t", b"", 1)]
    )  # fmt: skip
    [loaded] = await store.load_sessions()
    assert [m.message_id for m in loaded.queued] == [*ids, None]
