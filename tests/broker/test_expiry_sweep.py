"""The sweep of away sessions' expired messages (``broker.expiry_sweep``) at fleet scale:
10,000 sessions whose messages expire in the same moment are swept in turns that each hold
the loop briefly, measured as the longest gap between two turns of a task that yields at
every one. The store is the in-memory one (the real stores' deletes are covered by
``tests/e2e/test_queue_sweep.py``); the sessions are queued the router's way
(``AwayQueue.keep``) and observed through the device tallies and the limit counts.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import pytest

from auth.acl import Acl
from broker.authn import Authenticator
from broker.core import Broker
from broker.mqtt.session import Outgoing
from broker.router import LocalRouter
from broker.sessions import BrokerSession
from broker.telemetry import AuthLog
from storage.sql import SqlCredentialStore

FLEET = 10_000
LONGEST_TURN = 0.025  # seconds: measured ~2 ms a turn; the fleet in one turn took ~55 ms


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    store = await SqlCredentialStore.open(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    made = Broker(Authenticator(store), Acl(), AuthLog(store))
    yield made
    made.close_all()
    await store.close()


def _away(broker: Broker, device_id: str) -> BrokerSession:
    session = BrokerSession((device_id, "c"), "d", persistent=True)
    broker.registry.sessions[session.key] = session
    assert broker.registry.device_queues is not None
    broker.registry.device_queues.join(session)
    return session


def _queue(broker: Broker, session: BrokerSession, payload: bytes, expires_at: float) -> None:
    out = Outgoing("t", payload, 1, expires_at=expires_at)
    assert cast(LocalRouter, broker.router).away.keep(session, out)


async def _longest_turn_until(check: Callable[[], bool]) -> float:
    """The longest a turn of the loop took while waiting for ``check()``: yielding at every
    turn, for at most 10 s."""
    longest = 0.0
    deadline = time.perf_counter() + 10
    while not check():
        assert time.perf_counter() < deadline, "not swept within 10 s"
        before = time.perf_counter()
        await asyncio.sleep(0)  # one turn of the loop: whatever else is ready runs
        longest = max(longest, time.perf_counter() - before)
    return longest


async def test_a_fleets_expired_messages_are_swept_in_short_turns(broker: Broker) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.5
    sessions = [_away(broker, f"device-{n}") for n in range(FLEET)]
    for session in sessions:
        _queue(broker, session, b"short", deadline)
    kept = sessions[0]
    _queue(broker, kept, b"live", deadline + 3600)
    queues = broker.registry.device_queues
    assert queues is not None
    hits = broker.metrics.limit_hits
    longest = await _longest_turn_until(lambda: hits["message_expiry"] == FLEET)
    assert longest < LONGEST_TURN, f"a turn held the loop {longest * 1000:.1f} ms"
    assert loop.time() >= deadline  # none before its deadline
    assert queues.of_device("device-0") == (1, len("t") + len("live"))
    assert all(queues.of_device(f"device-{n}") == (0, 0) for n in range(1, FLEET))
    assert [m.payload for m in kept.queue] == [b"live"]


async def test_a_session_whose_client_came_back_is_left_to_it(broker: Broker) -> None:
    """Its client's sending drops its expired messages as their turn comes; one that went
    away again is swept again."""
    loop = asyncio.get_running_loop()
    session = _away(broker, "device")
    _queue(broker, session, b"short", loop.time() + 0.2)
    session.client = object()  # type: ignore[assignment]
    hits = broker.metrics.limit_hits
    passed = loop.create_future()
    loop.call_at(loop.time() + 0.3, passed.set_result, None)
    await passed
    assert hits["message_expiry"] == 0
    session.client = None
    broker.registry.released(session, None, 3600)  # type: ignore[arg-type]
    await _longest_turn_until(lambda: hits["message_expiry"] == 1)
    assert broker.registry.device_queues.of_device("device") == (0, 0)  # type: ignore[union-attr]
