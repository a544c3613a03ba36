"""``broker.unadmitted.UnadmittedBytes``: the charges, the total, who is closed past the bound,
and its log line (the broker's use of it, over TLS: tests/e2e/test_unadmitted_bytes.py)."""

import gc
import logging
import random
import weakref
from typing import TYPE_CHECKING, cast

import pytest

from broker.connection_limit import LOG_INTERVAL
from broker.unadmitted import _SLACK, UnadmittedBytes

if TYPE_CHECKING:
    from broker.client import MqttClient


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _holders(count: int) -> "list[MqttClient]":
    return [cast("MqttClient", object()) for _ in range(count)]


def test_charges_add_up_and_come_back_once() -> None:
    budget = UnadmittedBytes(100, lambda: None)
    a, b = _holders(2)
    assert budget.take(a, 60)
    assert budget.take(b, 30)
    assert budget.take(a, 10)  # exactly the bound
    assert not budget.take(b, 1)  # past it: nothing charged
    assert (budget.held, budget.charged(a), budget.charged(b), len(budget)) == (100, 70, 30, 2)
    budget.release(a)
    budget.release(a)  # admitted, then ended: given back once
    assert (budget.held, len(budget)) == (30, 1)
    budget.release(b)
    assert (budget.held, len(budget)) == (0, 0)


def test_the_largest_is_the_one_charged_the_most_above_a_floor() -> None:
    budget = UnadmittedBytes(100, lambda: None)
    a, b, c = _holders(3)
    budget.take(a, 20)
    budget.take(b, 50)
    budget.take(c, 30)
    assert budget.largest(above=10) is b
    assert budget.largest(above=50) is None  # a newcomer of 50 would be the largest itself


class Holder:
    """A connection's stand-in that a weak reference can follow."""


def test_the_largest_stays_the_one_charged_the_most_through_any_takes_and_releases() -> None:
    """The heap of charges against a scan of them all, through 20,000 random takes and
    releases (its rebuilds among them) and over-limit reads closing the largest."""
    rng = random.Random(7)
    budget = UnadmittedBytes(50_000, lambda: None)
    holders = _holders(300)
    charged = dict.fromkeys(holders, 0)
    for _ in range(20_000):
        holder = rng.choice(holders)
        if rng.random() < 0.2:
            budget.release(holder)
            charged[holder] = 0
            continue
        size = rng.randrange(1, 400)
        while not budget.take(holder, size):  # as broker.unadmitted.hold
            floor = charged[holder] + size
            most = max(charged.values())
            victim = budget.largest(above=floor)
            if most <= floor:
                assert victim is None
                break
            assert victim is not None
            assert charged[victim] == most
            budget.release(victim)
            charged[victim] = 0
        else:
            charged[holder] += size
        assert budget.held == sum(charged.values())
    assert budget.largest(above=0) is max(charged, key=lambda h: charged[h])


def test_connections_that_ended_are_not_kept_by_the_charges() -> None:
    """Stale entries are dropped once they outnumber the live charges: a flood's connections,
    all ended, are not kept alive by the budget."""
    budget = UnadmittedBytes(1 << 30, lambda: None)
    holders = [Holder() for _ in range(5 * _SLACK)]
    refs = [weakref.ref(holder) for holder in holders]
    for _ in range(3):
        for holder in holders:
            assert budget.take(cast("MqttClient", holder), 100)
    for holder in holders:
        budget.release(cast("MqttClient", holder))
    del holder, holders
    gc.collect()
    assert sum(ref() is not None for ref in refs) <= _SLACK
    assert (budget.held, len(budget), budget.largest(above=0)) == (0, 0, None)


def test_refusals_are_counted_each_and_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted: list[None] = []
    clock = Clock()
    budget = UnadmittedBytes(100, lambda: counted.append(None), clock)
    with caplog.at_level(logging.WARNING, logger="broker.unadmitted"):
        for port in range(3):
            budget.refused(f"192.0.2.1:{port}")
        clock.now += LOG_INTERVAL
        budget.refused("192.0.2.1:9")
    assert len(counted) == 4
    assert [r.getMessage() for r in caplog.records] == [
        "max_unadmitted_bytes (100) reached: 1 connection(s) not admitted yet closed, "
        "the last 192.0.2.1:0",
        "max_unadmitted_bytes (100) reached: 3 connection(s) not admitted yet closed, "
        "the last 192.0.2.1:9",
    ]
