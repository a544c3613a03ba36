"""QoS 2 packet ids awaiting PUBREL kept with persistent sessions (MQTT 3.1.1 §4.3.3, method
B), on SQLite and PostgreSQL: read back by another process, freed by PUBREL, gone with
their session or device; and with each, what routing its message again needs."""

import pytest

from nanoiot.errors import ConflictError
from storage.records import Device
from storage.session_data import (
    AwaitPubrel,
    DropSession,
    MarkUnrouted,
    PubrelReceived,
)
from storage.sql import SqlCredentialStore
from tests.storage.conftest import saved_session


async def test_ids_are_read_back_with_their_session_until_released(
    store: SqlCredentialStore, other_store: SqlCredentialStore, device: Device
) -> None:
    mine, other = f"{device.id}/c1", f"{device.id}/c2"
    await store.write_sessions(
        [
            saved_session(device, "c1"),
            saved_session(device, "c2"),
            AwaitPubrel(((mine, 1), (mine, 65535), (other, 1))),
        ]
    )
    loaded = {s.key: s for s in await other_store.load_sessions()}  # committed
    assert sorted(loaded[mine].awaiting_pubrel) == [1, 65535]
    assert loaded[other].awaiting_pubrel == [1]

    await store.write_sessions([PubrelReceived(((mine, 1), (mine, 7)))])  # 7: never kept
    one = await other_store.load_session(mine)
    assert one is not None
    assert one.awaiting_pubrel == [65535]


async def test_an_id_kept_already_stays_kept(store: SqlCredentialStore, device: Device) -> None:
    """A batch may keep an id that an earlier one kept (freed and used again in between):
    the transaction does not fail on it."""
    key = f"{device.id}/c1"
    await store.write_sessions([saved_session(device, "c1"), AwaitPubrel(((key, 3),))])
    await store.write_sessions([AwaitPubrel(((key, 3), (key, 4)))])
    [loaded] = await store.load_sessions()
    assert sorted(loaded.awaiting_pubrel) == [3, 4]


async def test_ids_go_with_their_session_and_their_device(
    store: SqlCredentialStore, device: Device
) -> None:
    mine, other = f"{device.id}/c1", f"{device.id}/c2"
    await store.write_sessions(
        [
            saved_session(device, "c1"),
            saved_session(device, "c2"),
            AwaitPubrel(((mine, 1), (other, 2))),
        ]
    )
    await store.write_sessions([DropSession(mine), saved_session(device, "c1")])
    loaded = {s.key: s for s in await store.load_sessions()}
    assert loaded[mine].awaiting_pubrel == []  # a new session: nothing awaited
    assert loaded[other].awaiting_pubrel == [2]
    await store.delete_device(device.id)
    assert await store.load_sessions() == []


async def test_an_id_for_a_vanished_session_fails_the_transaction(
    store: SqlCredentialStore, device: Device
) -> None:
    """Like any write for a session that is gone: the journal applies the rest one by one."""
    with pytest.raises(ConflictError):
        await store.write_sessions(
            [saved_session(device, "c1"), AwaitPubrel(((f"{device.id}/gone", 1),))]
        )
    assert await store.load_sessions() == []


async def test_a_record_is_kept_with_its_id_and_goes_with_it(
    store: SqlCredentialStore, other_store: SqlCredentialStore, device: Device
) -> None:
    key = f"{device.id}/c1"
    await store.write_sessions([saved_session(device, "c1"), AwaitPubrel(((key, 1), (key, 2)))])
    await store.write_sessions([MarkUnrouted(((key, 1, '[7, [["g", "a/#", "m2"]]]'),))])
    loaded = await other_store.load_session(key)
    assert loaded is not None
    assert loaded.unrouted == {1: '[7, [["g", "a/#", "m2"]]]'}

    # Its PUBREL, then a new message with the id: that one has nothing to route again.
    await store.write_sessions([AwaitPubrel(((key, 1),))])
    await store.write_sessions([MarkUnrouted(((key, 2, "[8, []]"),))])
    loaded = await other_store.load_session(key)
    assert loaded is not None
    assert loaded.unrouted == {2: "[8, []]"}

    await store.write_sessions([MarkUnrouted(((key, 2, None),))])  # confirmed
    await store.write_sessions([PubrelReceived(((key, 1),)), MarkUnrouted(((key, 1, "x"),))])
    loaded = await other_store.load_session(key)
    assert loaded is not None
    assert (sorted(loaded.awaiting_pubrel), loaded.unrouted) == ([2], {})  # 1: not kept again
