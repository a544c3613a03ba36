"""The line ``broker.away_queue`` writes when a limit drops queued messages says what went:
queued QoS 0 messages first (§4.3.1), the oldest queued, or the new message itself (a queue
read back past a bound keeps its messages, which were acknowledged to their publishers).
It said "oldest first" whatever went. The queues, counts and store writes are the router's
(``AwayQueue.keep``); the whole over TLS is in tests/e2e/test_limits.py."""

import logging
from collections.abc import Iterator
from dataclasses import replace

import pytest

from broker.away_queue import AwayQueue
from broker.metrics import BrokerMetrics
from broker.mqtt.limits import Limits
from broker.mqtt.session import Outgoing
from broker.session_store import MemorySessionStore
from broker.sessions import BrokerSession
from tests.logwatch import Lines, attached

LIMITS = replace(Limits(), max_queued_messages=2)


@pytest.fixture
def lines() -> Iterator[Lines]:
    with attached(Lines(0.1), "broker.router", level=logging.WARNING) as handler:
        yield handler


def _line(lines: Lines) -> str:
    line = lines.next_of("messages dropped")
    assert line is not None
    return line


def _away(name: str) -> BrokerSession:
    return BrokerSession(("device", name), "d", persistent=True)


async def test_the_oldest_queued(lines: Lines) -> None:
    away, session = AwayQueue(MemorySessionStore(), LIMITS, BrokerMetrics()), _away("a")
    for n in range(3):
        away.keep(session, Outgoing("t", b"%d" % n, 1))
    assert [m.payload for m in session.queue] == [b"1", b"2"]
    line = _line(lines)
    assert "session device/a: 1 messages dropped, the oldest queued (max_queued_messages)" in line


async def test_queued_qos0_ones(lines: Lines) -> None:
    """A QoS 0 message its client left queued (behind its in-flight window) goes first."""
    away, session = AwayQueue(MemorySessionStore(), LIMITS, BrokerMetrics()), _away("b")
    session.enqueue(Outgoing("t", b"q0", 0), LIMITS)
    away.keep(session, Outgoing("t", b"old", 1))
    away.keep(session, Outgoing("t", b"new", 1))
    assert [m.payload for m in session.queue] == [b"old", b"new"]
    assert "1 messages dropped, queued QoS 0 ones (max_queued_messages)" in _line(lines)


async def test_the_new_message_itself(lines: Lines) -> None:
    """A queue read back past the bound (lowered since) keeps what it has."""
    away, session = AwayQueue(MemorySessionStore(), LIMITS, BrokerMetrics()), _away("c")
    for n in range(3):
        session.restore(Outgoing("t", b"%d" % n, 1))
    away.keep(session, Outgoing("t", b"new", 1))
    assert [m.payload for m in session.queue] == [b"0", b"1", b"2"]
    line = _line(lines)
    assert "1 messages dropped, the new message itself (max_queued_messages)" in line
    assert "oldest" not in line
