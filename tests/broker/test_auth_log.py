"""The auth-event writer batches: decisions queued meanwhile share one transaction."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from auth.decision import Reason, deny
from broker.authn import ConnectRequest
from broker.telemetry import AuthLog, AuthLogPolicy
from nanoiot.errors import StoreUnavailableError
from storage.interface import CredentialStore
from storage.records import AuthOutcome, NewAuthEvent
from storage.sql import SqlCredentialStore
from tests.sqlite_template import migrated_sqlite


class CountingStore:
    """The real store, counting the batched writes (and failing them on request)."""

    def __init__(self, store: SqlCredentialStore) -> None:
        self.store = store
        self.batches: list[int] = []
        self.fail = False

    async def record_auth_events(self, events: Sequence[NewAuthEvent]) -> None:
        self.batches.append(len(events))
        if self.fail:
            raise StoreUnavailableError("database is away")
        await self.store.record_auth_events(events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    opened = await SqlCredentialStore.open(migrated_sqlite(tmp_path / "store.db"))
    try:
        yield CountingStore(opened)
    finally:
        await opened.close()


def _request(number: int, remote: str = "192.0.2.7") -> ConnectRequest:
    return ConnectRequest(None, (), f"user-{number}", None, f"client-{number}", remote)


async def test_a_burst_of_decisions_is_written_in_few_transactions(store: CountingStore) -> None:
    # Every refusal one by one (aggregating repeats is tested with real clients elsewhere).
    auth_log = AuthLog(cast(CredentialStore, store), policy=AuthLogPolicy(repeats=1000))
    auth_log.start()
    for number in range(120):
        auth_log.refused(deny(Reason.UNKNOWN_TOKEN, f"token {number}"), _request(number))
    await auth_log.stop()

    events = await store.store.list_auth_events(limit=200)
    assert [e.reason for e in reversed(events)] == [
        f"unknown_token: token {number}" for number in range(120)
    ]
    assert {(e.outcome, e.remote_address) for e in events} == {(AuthOutcome.DENIED, "192.0.2.7")}
    assert sum(store.batches) == 120
    assert len(store.batches) < 10  # one commit per connect would be 120
    assert auth_log.dropped == 0


async def test_a_failed_batch_is_counted_as_dropped(store: CountingStore) -> None:
    store.fail = True
    auth_log = AuthLog(cast(CredentialStore, store))
    auth_log.start()
    for number in range(5):
        auth_log.refused(deny(Reason.UNKNOWN_TOKEN, "x"), _request(number))
    await auth_log.stop()

    assert auth_log.dropped == 5
    assert auth_log.counts[Reason.UNKNOWN_TOKEN.value] == 5
    assert await store.store.list_auth_events() == []


async def test_flushed_returns_once_every_decision_is_stored(store: CountingStore) -> None:
    auth_log = AuthLog(cast(CredentialStore, store))
    auth_log.start()
    try:
        for number in range(5):
            auth_log.refused(deny(Reason.UNKNOWN_TOKEN, f"token {number}"), _request(number))
        await auth_log.flushed()
        assert len(await store.store.list_auth_events(limit=10)) == 5
    finally:
        await auth_log.stop()


async def test_a_host_refused_a_few_times_is_forgotten_when_its_interval_ends(
    store: CountingStore,
) -> None:
    """Before, a host's key went only with some host's summary: hosts refused no more than
    ``repeats`` times stayed held (10,000 of them, then every new host only counted)."""
    auth_log = AuthLog(cast(CredentialStore, store), policy=AuthLogPolicy(interval=0.2))
    auth_log.start()
    for number in range(3):  # three hosts, once each: nothing to sum up
        auth_log.refused(deny(Reason.UNKNOWN_TOKEN, "x"), _request(number, f"192.0.2.{number}"))
    assert auth_log.hosts_held() == 3
    deadline = asyncio.get_running_loop().time() + 10.0
    while auth_log.hosts_held():  # the interval's timer forgets them
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    await auth_log.stop()
