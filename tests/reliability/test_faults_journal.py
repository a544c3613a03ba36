"""The session journal under faults: database away, a session deleted under its writes.

``broker.journal.Journal`` on a real SQLite store; an outage is the store's own
StoreUnavailableError, raised by its write method for as long as the test says.
"""

import asyncio
from collections.abc import Sequence

import pytest

from broker.journal import BATCH, Journal
from broker.journal_entries import DONE, QUEUE, Ref
from broker.mqtt.session import Outgoing
from nanoiot.errors import StoreUnavailableError
from storage.records import Device
from storage.session_data import SaveSession, SessionWrite
from storage.sql import SqlCredentialStore


@pytest.fixture
async def device(sqlite_store: SqlCredentialStore) -> Device:
    return await sqlite_store.create_device("meter")


class Outage:
    """The store's session writes fail with StoreUnavailableError until ``over`` is set;
    ``attempts`` counts them."""

    def __init__(self, store: SqlCredentialStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.over = asyncio.Event()
        self.attempts = 0
        real_write = store.write_sessions

        async def write_sessions(writes: Sequence[SessionWrite]) -> list[int]:
            self.attempts += 1
            if not self.over.is_set():
                raise StoreUnavailableError("database away")
            return await real_write(writes)

        monkeypatch.setattr(store, "write_sessions", write_sessions)


@pytest.fixture
def outage(sqlite_store: SqlCredentialStore, monkeypatch: pytest.MonkeyPatch) -> Outage:
    return Outage(sqlite_store, monkeypatch)


def queued(journal: Journal, key: str, count: int) -> list[Ref]:
    refs = [Ref(key, Outgoing("devices/meter/x", str(n).encode(), 1)) for n in range(count)]
    for ref in refs:
        journal.submit((QUEUE, ref))
    return refs


async def test_writes_submitted_together_share_a_commit(
    sqlite_store: SqlCredentialStore, device: Device
) -> None:
    journal = Journal(sqlite_store)
    key = f"{device.id}/c"
    journal.submit(SaveSession(key, device.id, "meter", "c"))
    messages = queued(journal, key, 200)
    commit = journal.pending_commit()
    assert commit is not None
    await commit
    assert journal.commits == 1
    assert all(ref.row is not None for ref in messages)
    assert journal.pending_commit() is None
    await journal.close(within=5)
    [stored] = await sqlite_store.load_sessions()
    assert [m.payload for m in stored.queued] == [str(n).encode() for n in range(200)]


async def test_outage_keeps_writes_and_their_commit_pending_until_the_database_is_back(
    sqlite_store: SqlCredentialStore, device: Device, outage: Outage
) -> None:
    """What a PUBACK waits for (``pending_commit``) is not done by a failed attempt: it
    stays pending through the outage, and so does the commit of writes made meanwhile."""
    journal = Journal(sqlite_store)
    key = f"{device.id}/c"
    journal.submit(SaveSession(key, device.id, "meter", "c"))
    queued(journal, key, 3)
    first = journal.pending_commit()
    assert first is not None
    await journal.flush()  # returns after the failed attempt
    assert journal.degraded
    assert "database away" in journal.problem
    assert not first.done()  # the acknowledgements waiting for it keep waiting
    assert journal.pending_attempt() is None  # output does not wait for attempts now
    queued(journal, key, 2)
    second = journal.pending_commit()
    assert second is not None
    assert journal.unsaved == 6
    outage.over.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)  # retried until committed
    assert not journal.degraded
    assert journal.unsaved == 0
    assert outage.attempts >= 2
    assert journal.failures >= 1
    await journal.close(within=10)
    [stored] = await sqlite_store.load_sessions()
    assert len(stored.queued) == 5


async def test_a_commit_failing_behind_a_queue_longer_than_a_batch_keeps_both_waiting(
    sqlite_store: SqlCredentialStore, device: Device, outage: Outage
) -> None:
    journal = Journal(sqlite_store)
    key = f"{device.id}/c"
    journal.submit(SaveSession(key, device.id, "meter", "c"))
    queued(journal, key, BATCH + 50)  # two transactions
    whole = journal.pending_commit()
    assert whole is not None
    await journal.flush()
    assert journal.degraded
    queued(journal, key, 1)
    later = journal.pending_commit()
    assert later is not None
    assert not whole.done()
    assert not later.done()
    outage.over.set()
    await asyncio.wait_for(asyncio.gather(whole, later), 10)
    await journal.close(within=10)
    [stored] = await sqlite_store.load_sessions()
    assert len(stored.queued) == BATCH + 51


async def test_writes_for_a_deleted_session_are_dropped_alone(
    sqlite_store: SqlCredentialStore, device: Device
) -> None:
    other = await sqlite_store.create_device("other")
    journal = Journal(sqlite_store)
    mine, theirs = f"{device.id}/c", f"{other.id}/c"
    journal.submit(SaveSession(mine, device.id, "meter", "c"))
    journal.submit(SaveSession(theirs, other.id, "other", "c"))
    await journal.flush()
    await sqlite_store.delete_device(other.id)  # its session goes with it
    kept = queued(journal, mine, 2)
    lost = queued(journal, theirs, 1)
    await journal.close(within=5)
    assert all(ref.row is not None for ref in kept)
    assert lost[0].row is None
    [stored] = await sqlite_store.load_sessions()
    assert stored.key == mine
    assert len(stored.queued) == 2


async def test_a_message_acknowledged_before_its_commit_is_never_written(
    sqlite_store: SqlCredentialStore, device: Device
) -> None:
    journal = Journal(sqlite_store)
    key = f"{device.id}/c"
    journal.submit(SaveSession(key, device.id, "meter", "c"))
    [ref] = queued(journal, key, 1)
    ref.done = True
    journal.submit((DONE, ref))
    await journal.close(within=5)
    [stored] = await sqlite_store.load_sessions()
    assert stored.queued == []
