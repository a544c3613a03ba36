"""``broker.eviction``: the oldest connection not admitted yet gives its place, once."""

import logging

import pytest

from broker.connection_limit import ConnectionLimit
from broker.eviction import Unadmitted


class Connection:
    def __init__(self) -> None:
        self.aborted = 0

    def abort(self) -> None:
        self.aborted += 1


def test_the_oldest_still_waiting_is_closed_and_admitted_ones_never(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.eviction")
    hits: list[None] = []
    limit = ConnectionLimit(4, lambda: hits.append(None))
    waiting = Unadmitted()
    first, admitted, third = Connection(), Connection(), Connection()
    waiting.add(first, "2001:db8::1")
    waiting.add(admitted, "192.0.2.1")
    waiting.add(third, "2001:db8::2")
    waiting.discard(admitted)  # its CONNECT accepted
    assert waiting.evict_oldest(limit)
    assert waiting.evict_oldest(limit)
    assert not waiting.evict_oldest(limit)  # only admitted ones left: the newcomer is refused
    assert (first.aborted, admitted.aborted, third.aborted) == (1, 0, 1)
    assert len(hits) == 2
    waiting.discard(first)  # its close comes later: nothing left to do
    assert len(waiting) == 0
    # One line per host (an IPv6 /64) and minute; the second is counted for a summary.
    assert [record.getMessage() for record in caplog.records] == [
        "max_connections (4) reached: closed a connection from 2001:db8::/64 not admitted "
        "yet, the oldest, for a new one"
    ]
    waiting.flush()
    assert caplog.records[-1].getMessage() == (
        "2001:db8::/64: 1 more connections not admitted yet closed for newer ones "
        "(max_connections) in 60 s"
    )
