"""The session journal: what a message's writes become, and bounded transactions.

``writes_for`` on its own (pure), and the ``Journal`` on a real SQLite store.
"""

import asyncio
from collections.abc import Sequence
from pathlib import Path
from uuid import uuid4

import pytest

from broker.journal import BATCH, Journal
from broker.journal_entries import DONE, QUEUE, RELEASE, SENT, Ref, Unconfirmed, writes_for
from broker.mqtt.session import RELEASED, Outgoing
from broker.session_store import SqlSessionStore
from broker.sessions import BrokerSession, Unrouted
from storage.records import Device
from storage.session_data import (
    Acknowledge,
    AwaitPubrel,
    DropSession,
    Enqueue,
    MarkReleased,
    MarkSent,
    MarkUnrouted,
    PubrelReceived,
    SaveSession,
    SessionWrite,
    Subscribe,
)
from storage.sql import SqlCredentialStore


def _ref(row: int | None = None) -> Ref:
    return Ref("k", Outgoing("t", b"p", 2), row)


def test_a_message_changed_before_its_first_commit_is_written_as_it_is_then() -> None:
    ref = _ref()
    ref.message.packet_id, ref.message.sent, ref.message.state = 5, True, RELEASED
    writes, queued = writes_for([(QUEUE, ref), (SENT, ref), (RELEASE, ref)])
    assert writes == [Enqueue("k", "t", b"p", 2, False, 5, True, True)]
    assert queued == [ref]


def test_a_message_done_before_its_first_commit_is_never_written() -> None:
    ref = _ref()
    ref.done = True
    assert writes_for([(QUEUE, ref), (DONE, ref)]) == ([], [])


def test_changes_to_a_stored_message_are_updates_of_its_row() -> None:
    sent, released, done = _ref(1), _ref(2), _ref(3)
    sent.message.packet_id = 9
    done.done = True
    writes, _ = writes_for([(SENT, sent), (RELEASE, released), (SENT, done), (DONE, done)])
    assert writes == [MarkSent(((1, 9),)), MarkReleased((2,)), Acknowledge((3,))]


def test_qos2_ids_are_written_as_the_batch_leaves_them() -> None:
    """§4.3.3: an id released and used again within one transaction stays kept; one kept
    and released within it is deleted (it may be stored from before); all after the other
    writes, grouped."""
    save = SaveSession("k", uuid4(), "meter", "c")
    writes, _ = writes_for(
        [
            AwaitPubrel((("k", 1),)),
            save,
            PubrelReceived((("k", 1),)),
            AwaitPubrel((("k", 1),)),
            AwaitPubrel((("k", 2),)),
            PubrelReceived((("k", 2),)),
            PubrelReceived((("other", 3),)),
        ]
    )
    assert writes == [
        save,
        PubrelReceived((("k", 2), ("other", 3))),
        AwaitPubrel((("k", 1),)),
    ]


def test_qos2_ids_of_a_session_dropped_in_the_batch_go_with_it() -> None:
    """A clean session after a persistent one (§3.1.2.4): the ids kept before the drop are
    not written after it; those of the session saved again after it are."""
    save = SaveSession("k", uuid4(), "meter", "c")
    writes, _ = writes_for(
        [AwaitPubrel((("k", 1),)), DropSession("k"), save, AwaitPubrel((("k", 2),)),
         AwaitPubrel((("j", 4),))]
    )  # fmt: skip
    assert writes == [DropSession("k"), save, AwaitPubrel((("k", 2), ("j", 4)))]


def test_a_qos2_id_is_written_with_its_record_as_its_routing_filled_it_in() -> None:
    """Submitted before its message is routed, in one entry: no transaction has the id
    without what routing the message again needs (``broker.cluster.resend``)."""
    record = Unrouted(0)
    entry = Unconfirmed("k", 1, record)
    record.message_id, record.groups = 7, {("g", "a/#"): "m2"}  # routing, in the same turn
    writes, _ = writes_for([entry])
    assert writes == [AwaitPubrel((("k", 1),)), MarkUnrouted((("k", 1, record.stored()),))]
    alone = Unconfirmed("k", 2, Unrouted(0))  # routed on its member alone
    assert writes_for([alone]) == ([AwaitPubrel((("k", 2),))], [])


def test_a_record_goes_with_its_id() -> None:
    """Confirmed: nothing to route again. Released, or its session dropped: gone with
    the id. The id kept again for a new message: that one has nothing to route again."""
    kept = Unconfirmed("k", 1, Unrouted(7))
    routed = MarkUnrouted((("k", 1, None),))
    assert writes_for([kept, routed])[0] == [AwaitPubrel((("k", 1),)), routed]
    released = PubrelReceived((("k", 1),))
    assert writes_for([kept, released])[0] == [released]
    assert writes_for([kept, DropSession("k")])[0] == [DropSession("k")]
    again = AwaitPubrel((("k", 1),))
    assert writes_for([MarkUnrouted((("k", 1, "x"),)), released, again])[0] == [again]


async def test_a_record_is_read_back_with_its_session_until_routed(tmp_path: Path) -> None:
    """What a member restoring or adopting the session reads (``SqlSessionStore``)."""
    opened = await SqlCredentialStore.open(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    device: Device = await opened.create_device("meter")
    sessions = SqlSessionStore(opened)
    session = BrokerSession((str(device.id), "c"), "meter", persistent=True)
    sessions.save_session(session)
    record = Unrouted(0)
    sessions.pubrel_awaited(session, 4, record)
    sessions.pubrel_awaited(session, 5, Unrouted(0))  # routed on this member alone
    record.message_id, record.groups = 2**64 - 3, {("g", "a/#"): "m2"}
    await sessions.flush()
    loaded = await sessions.load_one(session.key)
    assert loaded is not None
    assert loaded.awaiting_pubrel == {4, 5}
    assert loaded.unrouted == {4: record}

    sessions.unrouted(session, 4, None)  # confirmed after all
    await sessions.flush()
    loaded = await sessions.load_one(session.key)
    assert loaded is not None
    assert (loaded.awaiting_pubrel, loaded.unrouted) == ({4, 5}, None)
    await sessions.close(within=5)
    await opened.close()


async def test_many_writes_go_in_bounded_transactions(sqlite_store: SqlCredentialStore) -> None:
    """A client subscribing to thousands of filters never holds the write lock for one long
    transaction: at most BATCH writes each, and the commit awaited covers all of them."""
    device: Device = await sqlite_store.create_device("many")
    key = f"{device.id}/c"
    journal = Journal(sqlite_store)
    journal.submit(SaveSession(key, device.id, "many", "c"))
    for n in range(2 * BATCH + 10):
        journal.submit(Subscribe(key, f"devices/many/{n}", 0, False))
    pending = journal.pending_commit()
    assert pending is not None
    await pending
    assert journal.commits == 3
    assert journal.pending_commit() is None
    [stored] = await sqlite_store.load_sessions()
    assert len(stored.subscriptions) == 2 * BATCH + 10
    await journal.close(within=5)


async def test_a_flush_waits_for_the_writes_made_so_far_not_for_those_that_keep_coming(
    sqlite_store: SqlCredentialStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients writing during every commit (a QoS 2 publisher's stream on a loaded machine)
    always leave a commit pending: a flush, which a session moving here waits for before it
    reads the session, returns once the writes made before it are in, while they go on."""
    device: Device = await sqlite_store.create_device("busy")
    key = f"{device.id}/c"
    stream = 50  # commits with a write arriving during each
    real_write = sqlite_store.write_sessions

    async def written_meanwhile(writes: Sequence[SessionWrite]) -> list[int]:
        if journal.commits < stream:
            journal.submit(Subscribe(key, f"devices/busy/{journal.commits}", 0, False))
        return await real_write(writes)

    monkeypatch.setattr(sqlite_store, "write_sessions", written_meanwhile)
    journal = Journal(sqlite_store)
    journal.submit(SaveSession(key, device.id, "busy", "c"))
    await asyncio.wait_for(journal.flush(), 5)
    assert journal.commits <= 2, "the flush waited for writes made after it"
    assert journal.pending_commit() is not None  # the stream goes on
    await journal.close(within=5)
    [stored] = await sqlite_store.load_sessions()
    assert len(stored.subscriptions) == stream


async def test_changes_left_unsaved_at_shutdown_are_counted_with_the_batch_in_flight(
    sqlite_store: SqlCredentialStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A commit that does not end within the shutdown bound: its writes are not saved either.
    device: Device = await sqlite_store.create_device("slow")
    key = f"{device.id}/c"
    started, never = asyncio.Event(), asyncio.Event()

    async def hung(_writes: object) -> list[int]:
        started.set()
        await never.wait()
        return []

    monkeypatch.setattr(sqlite_store, "write_sessions", hung)
    journal = Journal(sqlite_store)
    journal.submit(SaveSession(key, device.id, "slow", "c"))
    journal.submit(Subscribe(key, "devices/slow/a", 0, False))
    await started.wait()  # both are in the commit under way
    journal.submit(Subscribe(key, "devices/slow/b", 0, False))
    await journal.close(within=0.01)
    assert "3 session changes could not be saved before shutdown" in caplog.text


async def test_a_freed_id_is_committed_before_anything_waits_on_it(
    sqlite_store: SqlCredentialStore,
) -> None:
    """PUBREL's write is a commit like any other (its PUBCOMP waits for it): once done, the
    store no longer holds the id, and the client using it again is kept again."""
    device: Device = await sqlite_store.create_device("meter")
    key = f"{device.id}/c"
    journal = Journal(sqlite_store)
    journal.submit(SaveSession(key, device.id, "meter", "c"))
    journal.submit(AwaitPubrel(((key, 1),)))
    await _committed(journal)
    journal.submit(PubrelReceived(((key, 1),)))
    await _committed(journal)
    [stored] = await sqlite_store.load_sessions()
    assert stored.awaiting_pubrel == []

    journal.submit(AwaitPubrel(((key, 1),)))  # the next message, with the id used again
    await _committed(journal)
    [stored] = await sqlite_store.load_sessions()
    assert stored.awaiting_pubrel == [1]
    await journal.close(within=5)


async def _committed(journal: Journal) -> None:
    pending = journal.pending_commit()
    assert pending is not None
    await asyncio.wait_for(pending, 5)
