"""The change-feed follower polls at once when woken (the admin API in the same process)."""

import asyncio
from collections.abc import Callable
from pathlib import Path

from broker.authn import Authenticator
from broker.peer import Peer
from broker.revocation import RevocationFollower
from storage.sql import SqlCredentialStore


class _NoLiveSessions:
    def live_peers(self) -> list[Peer]:
        return []

    def note_changes(self, device_ids: set[str] | None) -> None:
        pass

    def forget_device(self, device_id: str) -> None:
        pass

    def kick_device(
        self, device_id: str, reason: str, which: Callable[[Peer], bool] | None = None
    ) -> int:
        return 0


async def test_wake_polls_without_waiting_for_the_interval(tmp_path: Path) -> None:
    store = await SqlCredentialStore.open(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    follower = RevocationFollower(
        store,
        _NoLiveSessions(),
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
