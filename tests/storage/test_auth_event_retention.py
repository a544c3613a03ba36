"""auth_events stays within its retention: by age and by row count, on both databases."""

from datetime import UTC, datetime, timedelta

from storage.records import AuthOutcome, NewAuthEvent
from storage.sql import SqlCredentialStore

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _events(count: int, at: datetime, prefix: str) -> list[NewAuthEvent]:
    return [
        NewAuthEvent(
            at=at,
            outcome=AuthOutcome.DENIED,
            reason=f"{prefix} {n}",
            device_id=None,
            fingerprint=None,
            remote_address="192.0.2.1",
        )
        for n in range(count)
    ]


async def test_events_older_than_the_age_go(store: SqlCredentialStore) -> None:
    await store.record_auth_events(_events(30, NOW - timedelta(days=100), "old"))
    await store.record_auth_events(_events(5, NOW - timedelta(days=1), "recent"))
    deleted = await store.prune_auth_events(older_than=NOW - timedelta(days=90), keep=1000, batch=7)
    assert deleted == 30
    left = await store.list_auth_events(limit=100)
    assert sorted(e.reason for e in left) == sorted(f"recent {n}" for n in range(5))


async def test_beyond_the_row_count_the_oldest_go(store: SqlCredentialStore) -> None:
    await store.record_auth_events(_events(25, NOW, "event"))
    deleted = await store.prune_auth_events(older_than=NOW - timedelta(days=1), keep=10, batch=4)
    assert deleted == 15
    left = await store.list_auth_events(limit=100)
    assert [e.reason for e in left] == [f"event {n}" for n in range(24, 14, -1)]  # newest first
    assert await store.prune_auth_events(older_than=NOW - timedelta(days=1), keep=10) == 0


async def test_an_empty_table_is_left_alone(store: SqlCredentialStore) -> None:
    assert await store.prune_auth_events(older_than=NOW, keep=1) == 0
