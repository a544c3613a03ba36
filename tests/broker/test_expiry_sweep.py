"""The sweep of away sessions' expired messages (``broker.expiry_sweep``) at fleet scale:
10,000 sessions whose messages expire in the same moment are swept in turns that each hold
the loop briefly: counted as the most messages swept between two turns of a task that yields
at every one (a count, not a time, so that a loaded machine cannot fail it; a turn of 256
was measured at 1.5-3 ms, the fleet in one turn at ~55 ms). The store is the in-memory one
(the real stores' deletes are covered by ``tests/e2e/test_queue_sweep.py``); the sessions are
queued the router's way (``AwayQueue.keep``) and observed through the device tallies and the
limit counts.
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
PER_TURN = 256  # sessions a turn at most (broker.expiry_sweep): one message each here


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


async def _largest_turn_until(done: Callable[[], int], goal: int) -> int:
    """The most that ``done()`` grew in one turn of the loop while waiting for it to reach
    ``goal``: yielding at every turn, for at most 10 s."""
    largest = 0
    deadline = time.perf_counter() + 10
    while (before := done()) != goal:
        assert time.perf_counter() < deadline, "not swept within 10 s"
        await asyncio.sleep(0)  # one turn of the loop: whatever else is ready runs
        largest = max(largest, done() - before)
    return largest


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
    largest = await _largest_turn_until(lambda: hits["message_expiry"], FLEET)
    assert 0 < largest <= PER_TURN, f"{largest} messages swept in one turn"
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
    await _largest_turn_until(lambda: hits["message_expiry"], 1)
    assert broker.registry.device_queues.of_device("device") == (0, 0)  # type: ignore[union-attr]
