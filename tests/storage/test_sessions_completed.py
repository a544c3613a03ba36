"""The cluster-wide ids of QoS 2 messages a persistent session's client completed, kept with
the session in a ring of slots (``KeepCompleted``, migration 0011; MQTT 3.1.1 / 5.0 §4.3.3,
``broker.cluster.resend``), on SQLite and PostgreSQL: read back by another process, each
slot replaced by a later completion, gone with their session or device."""

import pytest

from nanoiot.errors import ConflictError
from storage.records import Device
from storage.session_data import DropSession, KeepCompleted
from storage.sql import SqlCredentialStore
from tests.storage.conftest import saved_session

BIG = 2**64 - 1  # unsigned 64 bits: kept as a signed BIGINT


async def test_ids_are_read_back_with_their_session(
    store: SqlCredentialStore, other_store: SqlCredentialStore, device: Device
) -> None:
    mine, other = f"{device.id}/c1", f"{device.id}/c2"
    await store.write_sessions(
        [saved_session(device, "c1"), saved_session(device, "c2"),
         KeepCompleted(((mine, 1, 1, BIG), (mine, 2, 2, 5), (other, 1, 1, 6)))]
    )  # fmt: skip
    loaded = {s.key: s for s in await other_store.load_sessions()}  # committed
    assert (sorted(loaded[mine].completed), loaded[mine].completions) == ([5, BIG], 2)
    assert (loaded[other].completed, loaded[other].completions) == ([6], 1)


async def test_a_later_completion_takes_its_slot_so_the_rows_stay_bounded(
    store: SqlCredentialStore, device: Device
) -> None:
    """Three slots, seven completions (two in one transaction): the last three stay."""
    key = f"{device.id}/c1"
    await store.write_sessions([saved_session(device, "c1")])
    for seq in range(1, 6):
        await store.write_sessions([KeepCompleted(((key, seq % 3, seq, 100 + seq),))])
    await store.write_sessions([KeepCompleted(((key, 0, 6, 106), (key, 1, 7, 107)))])
    loaded = await store.load_session(key)
    assert loaded is not None
    assert (sorted(loaded.completed), loaded.completions) == ([105, 106, 107], 7)
    # More in one transaction than there are slots: the last in each slot stays.
    await store.write_sessions(
        [KeepCompleted(tuple((key, s % 3, s, 100 + s) for s in range(8, 12)))]
    )
    loaded = await store.load_session(key)
    assert loaded is not None
    assert (sorted(loaded.completed), loaded.completions) == ([109, 110, 111], 11)


async def test_ids_go_with_their_session_and_their_device(
    store: SqlCredentialStore, device: Device
) -> None:
    mine, other = f"{device.id}/c1", f"{device.id}/c2"
    await store.write_sessions(
        [saved_session(device, "c1"), saved_session(device, "c2"),
         KeepCompleted(((mine, 1, 1, 5), (other, 1, 1, 6)))]
    )  # fmt: skip
    await store.write_sessions([DropSession(mine), saved_session(device, "c1")])
    loaded = {s.key: s for s in await store.load_sessions()}
    assert (loaded[mine].completed, loaded[mine].completions) == ([], 0)  # a new session
    assert loaded[other].completed == [6]
    await store.delete_device(device.id)
    assert await store.load_sessions() == []


async def test_an_id_for_a_vanished_session_fails_the_transaction(
    store: SqlCredentialStore, device: Device
) -> None:
    """Like any write for a session that is gone: the journal applies the rest one by one."""
    with pytest.raises(ConflictError):
        await store.write_sessions(
            [saved_session(device, "c1"), KeepCompleted(((f"{device.id}/gone", 1, 1, 5),))]
        )
    assert await store.load_sessions() == []
