"""``broker.unadmitted.UnadmittedBytes``: the charges, the total, who is closed past the bound,
and its log line (the broker's use of it, over TLS: tests/e2e/test_unadmitted_bytes.py)."""

import logging
from typing import TYPE_CHECKING, cast

import pytest

from broker.connection_limit import LOG_INTERVAL
from broker.unadmitted import UnadmittedBytes

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
