"""A persistent session read back from the store knows the QoS 2 messages it holds, and the
last ones it completed, by their cluster-wide ids (``BrokerSession.brought``), and a copy of
one routed again (``broker.cluster.resend``) does not reach it (MQTT 3.1.1 / 5.0 §4.3.3);
the whole is tested in tests/cluster/test_qos2_moved.py and test_qos2_completed.py. On a
real SQLite store."""

import pytest

from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.mqtt.session import Subscription
from broker.router import LocalRouter, Message
from broker.session_store import SqlSessionStore
from broker.sessions import BrokerSession
from storage.sql import SqlCredentialStore
from tests.broker.stored_sessions import subscribed_away

FIRST = 2**64 - 5  # a member's id base has its top bit set half of the time
KEPT = 3  # completed ids kept per session (``cluster_qos2_completed_kept``)


@pytest.fixture
def completed_kept() -> int:
    return KEPT


async def _read(sessions: SqlSessionStore, session: BrokerSession) -> BrokerSession:
    """The session as another member reads it from the store."""
    await sessions.flush()
    loaded = await sessions.load_one(session.key)
    assert loaded is not None
    return loaded


async def _moved(sessions: SqlSessionStore, sqlite_store: SqlCredentialStore) -> BrokerSession:
    """A session whose client is away, with copies of QoS 2 message FIRST (and of one at
    QoS 1) queued on one member, as another member reads it from the store."""
    there, session = await subscribed_away(sessions, sqlite_store, 2)
    assert there.deliver(Message("a/b", b"first", 2, id=FIRST)) is True
    assert there.deliver(Message("a/b", b"one", 1, id=7)) is True
    return await _read(sessions, session)


def _complete(sessions: SqlSessionStore, session: BrokerSession) -> int:
    """Its client takes the next queued message through PUBCOMP (§4.3.3); its id."""
    sent = session.next_to_send(window=10)
    assert sent is not None
    if sent.qos == 2:
        assert session.released(sent.packet_id) is sent
    assert session.completed(sent.packet_id, sent.qos) is sent
    sessions.message_completed(session, sent)
    return sent.message_id


async def test_a_restored_session_knows_its_qos2_messages_by_id(
    sessions: SqlSessionStore, sqlite_store: SqlCredentialStore
) -> None:
    moved = await _moved(sessions, sqlite_store)
    assert [(m.payload, m.message_id) for m in moved.queue] == [(b"first", FIRST), (b"one", 0)]
    assert moved.brought == {FIRST}


async def test_a_copy_routed_again_does_not_reach_a_session_that_brought_it(
    sessions: SqlSessionStore, sqlite_store: SqlCredentialStore
) -> None:
    moved = await _moved(sessions, sqlite_store)
    here = LocalRouter(sessions, Limits(), BrokerMetrics())
    here.subscribe(moved, "a/#", Subscription(2))
    assert here.deliver(Message("a/b", b"first", 2, id=FIRST)) is False  # routed again
    assert here.deliver_since(Message("a/b", b"first", 2, id=FIRST), moved.since - 1) is False
    assert here.deliver(Message("a/b", b"next", 2, id=FIRST + 1)) is True
    assert here.deliver(Message("a/b", b"one", 1, id=7)) is True  # QoS 1: at least once
    assert [m.payload for m in moved.queue] == [b"first", b"one", b"next", b"one"]


async def test_nor_after_it_completed_that_message_here(
    sessions: SqlSessionStore, sqlite_store: SqlCredentialStore
) -> None:
    moved = await _moved(sessions, sqlite_store)
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
    sessions: SqlSessionStore, sqlite_store: SqlCredentialStore
) -> None:
    moved = await _moved(sessions, sqlite_store)
    here = LocalRouter(sessions, Limits(), BrokerMetrics())
    here.subscribe(moved, "$share/g/a/#", Subscription(2))
    assert here.deliver_forwarded(
        Message("a/b", b"first", 2, id=FIRST), plain=False, groups=[("g", "a/#")]
    ) is False  # fmt: skip
    assert len(moved.queue) == 2


async def test_nor_when_it_completed_it_before_it_moved(
    sessions: SqlSessionStore, sqlite_store: SqlCredentialStore
) -> None:
    there, session = await subscribed_away(sessions, sqlite_store, 2)
    there.deliver(Message("a/b", b"first", 2, id=FIRST))
    there.deliver(Message("a/b", b"one", 1, id=7))
    assert [_complete(sessions, session), _complete(sessions, session)] == [FIRST, 0]
    moved = await _read(sessions, session)
    assert (list(moved.queue), moved.brought, moved.completions) == ([], {FIRST}, 1)
    here = LocalRouter(sessions, Limits(), BrokerMetrics())
    here.subscribe(moved, "a/#", Subscription(2))
    assert here.deliver(Message("a/b", b"first", 2, id=FIRST)) is False  # routed again
    assert here.deliver(Message("a/b", b"one", 1, id=7)) is True  # QoS 1: at least once
    assert [m.payload for m in moved.queue] == [b"one"]


async def test_the_last_completed_are_kept_the_oldest_forgotten(
    sessions: SqlSessionStore, sqlite_store: SqlCredentialStore
) -> None:
    """Five completed where three are kept, then one more where the session moved: the
    store keeps three rows, the last three ids."""
    there, session = await subscribed_away(sessions, sqlite_store, 2)
    for n in range(5):
        there.deliver(Message("a/b", b"m", 2, id=1000 + n))
        _complete(sessions, session)
    moved = await _read(sessions, session)
    assert (moved.brought, moved.completions) == ({1002, 1003, 1004}, 5)
    here = LocalRouter(sessions, Limits(), BrokerMetrics())
    here.subscribe(moved, "a/#", Subscription(2))
    assert here.deliver(Message("a/b", b"m", 2, id=1001)) is True  # forgotten: delivered
    here.deliver(Message("a/b", b"m", 2, id=2000))
    assert [_complete(sessions, moved), _complete(sessions, moved)] == [1001, 2000]
    await sessions.flush()
    record = await sqlite_store.load_session(session.store_key)
    assert record is not None
    assert (sorted(record.completed), record.completions) == ([1001, 1004, 2000], 7)


async def test_a_single_node_keeps_no_completed_ids(
    sessions: SqlSessionStore, sqlite_store: SqlCredentialStore
) -> None:
    """Its messages have no cluster-wide id: their rows go, nothing else is written."""
    there, session = await subscribed_away(sessions, sqlite_store, 2)
    there.deliver(Message("a/b", b"m", 2))
    assert _complete(sessions, session) == 0
    moved = await _read(sessions, session)
    assert (list(moved.queue), moved.brought, moved.completions) == ([], None, 0)
