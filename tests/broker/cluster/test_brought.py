"""A persistent session read back from the store knows the QoS 2 messages it holds by their
cluster-wide ids (``BrokerSession.brought``), and a copy of one routed again
(``broker.cluster.resend``) does not reach it (MQTT 3.1.1 / 5.0 §4.3.3); the whole is
tested in tests/cluster/test_qos2_moved.py. On a real SQLite store."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.mqtt.session import Subscription
from broker.router import LocalRouter, Message
from broker.session_store import SqlSessionStore
from broker.sessions import BrokerSession
from storage.records import Device
from storage.sql import SqlCredentialStore

FIRST = 2**64 - 5  # a member's id base has its top bit set half of the time


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[SqlCredentialStore]:
    store = await SqlCredentialStore.open(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def sessions(opened: SqlCredentialStore) -> AsyncIterator[SqlSessionStore]:
    store = SqlSessionStore(opened)
    try:
        yield store
    finally:
        await store.close(within=5)


async def _moved(sessions: SqlSessionStore, opened: SqlCredentialStore) -> BrokerSession:
    """A session whose client is away, with copies of QoS 2 message FIRST (and of one at
    QoS 1) queued on one member, as another member reads it from the store."""
    device: Device = await opened.create_device("meter")
    there = LocalRouter(sessions, Limits(), BrokerMetrics())
    session = BrokerSession((str(device.id), "c"), "meter", persistent=True)
    sessions.save_session(session)
    there.subscribe(session, "a/#", Subscription(2))
    sessions.subscribe(session, "a/#", Subscription(2))
    assert there.deliver(Message("a/b", b"first", 2, id=FIRST)) is True
    assert there.deliver(Message("a/b", b"one", 1, id=7)) is True
    await sessions.flush()
    loaded = await sessions.load_one(session.key)
    assert loaded is not None
    return loaded


async def test_a_restored_session_knows_its_qos2_messages_by_id(
    sessions: SqlSessionStore, opened: SqlCredentialStore
) -> None:
    moved = await _moved(sessions, opened)
    assert [(m.payload, m.message_id) for m in moved.queue] == [(b"first", FIRST), (b"one", 0)]
    assert moved.brought == {FIRST}


async def test_a_copy_routed_again_does_not_reach_a_session_that_brought_it(
    sessions: SqlSessionStore, opened: SqlCredentialStore
) -> None:
    moved = await _moved(sessions, opened)
    here = LocalRouter(sessions, Limits(), BrokerMetrics())
    here.subscribe(moved, "a/#", Subscription(2))
    assert here.deliver(Message("a/b", b"first", 2, id=FIRST)) is False  # routed again
    assert here.deliver_since(Message("a/b", b"first", 2, id=FIRST), moved.since - 1) is False
    assert here.deliver(Message("a/b", b"next", 2, id=FIRST + 1)) is True
    assert here.deliver(Message("a/b", b"one", 1, id=7)) is True  # QoS 1: at least once
    assert [m.payload for m in moved.queue] == [b"first", b"one", b"next", b"one"]


async def test_nor_after_it_completed_that_message_here(
    sessions: SqlSessionStore, opened: SqlCredentialStore
) -> None:
    moved = await _moved(sessions, opened)
    sent = moved.next_to_send(window=10)
    assert sent is not None
    assert sent.message_id == FIRST
    assert moved.released(sent.packet_id) is sent
    assert moved.completed(sent.packet_id, 2) is sent
    here = LocalRouter(sessions, Limits(), BrokerMetrics())
    here.subscribe(moved, "a/#", Subscription(2))
    assert here.deliver(Message("a/b", b"first", 2, id=FIRST)) is False
    assert [m.payload for m in moved.queue] == [b"one"]


async def test_nor_through_a_shared_subscription(
    sessions: SqlSessionStore, opened: SqlCredentialStore
) -> None:
    moved = await _moved(sessions, opened)
    here = LocalRouter(sessions, Limits(), BrokerMetrics())
    here.subscribe(moved, "$share/g/a/#", Subscription(2))
    assert here.deliver_forwarded(
        Message("a/b", b"first", 2, id=FIRST), plain=False, groups=[("g", "a/#")]
    ) is False  # fmt: skip
    assert len(moved.queue) == 2
