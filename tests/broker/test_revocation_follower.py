"""The change-feed follower (``broker.revocation``).

Idle, it reads only the store's change marker, never the feed, and still sees a commit from
another store on the same database (another process, the CLI) without any wake-up. Woken (the
admin API in the same process), it polls at once.
"""

import asyncio
from collections.abc import Sequence
from pathlib import Path

from broker.authn import Authenticator
from broker.revocation import RevocationFollower
from storage.records import Change
from storage.sql import SqlCredentialStore
from tests.broker.standin_broker import StandInBroker


class _CountingStore(SqlCredentialStore):
    feed_reads = 0

    async def changes_since(self, seq: int, limit: int = 1000) -> Sequence[Change]:
        self.feed_reads += 1
        return await super().changes_since(seq, limit)


async def _looks(follower: RevocationFollower, count: int) -> None:
    for _ in range(count):
        await asyncio.wait_for(follower.applied.wait(), 5)


async def test_idle_follower_reads_no_feed_and_still_sees_other_writers(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    writer = await SqlCredentialStore.open(url)
    store = await _CountingStore.open(url)
    broker = StandInBroker()
    follower = RevocationFollower(store, broker, Authenticator(store), interval=0.01)
    try:
        device = await writer.create_device("before")
        await follower.start()
        await _looks(follower, 20)
        # the first look reads the feed; the idle ones after it only the marker
        assert store.feed_reads == 1
        await writer.set_device_enabled(device.id, False)  # another connection, no wake
        await asyncio.wait_for(_noted(follower, broker, str(device.id)), 5)
        reads = store.feed_reads
        await _looks(follower, 20)
        assert store.feed_reads == reads
    finally:
        await follower.stop()
        await store.close()
        await writer.close()


async def _noted(follower: RevocationFollower, broker: StandInBroker, device_id: str) -> None:
    while not any(ids is not None and device_id in ids for ids in broker.noted):
        await follower.applied.wait()


async def test_wake_polls_without_waiting_for_the_interval(tmp_path: Path) -> None:
    store = await SqlCredentialStore.open(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    follower = RevocationFollower(
        store,
        StandInBroker(),
        Authenticator(store),
        interval=3600.0,  # never by the clock within this test
    )
    try:
        await follower.start()
        await asyncio.wait_for(follower.applied.wait(), 5)  # the first poll, at start
        applied = follower.applied
        await store.create_device("woken")
        follower.wake()
        await asyncio.wait_for(applied.wait(), 5)
        assert follower._seq == await store.last_change_seq()
    finally:
        await follower.stop()
        await store.close()
