"""Aggregating repeated refusals: the counts, the intervals and the bound on addresses."""

import asyncio
import logging
import time

import pytest

from broker.repeats import OTHERS, LimitedLoggers, LogLimiter, RepeatCounter, Summary


def test_the_first_few_are_reported_and_the_rest_summed_per_interval() -> None:
    counter = RepeatCounter(repeats=2, interval=10.0)
    assert [counter.report("10.0.0.1", "unknown_token", 0.0) for _ in range(5)] == [
        True, True, False, False, False,
    ]  # fmt: skip
    assert counter.report("10.0.0.1", "unknown_key", 1.0)  # another reason counts apart
    assert counter.due(9.0) == []
    assert counter.due(10.0) == [Summary("10.0.0.1", "unknown_token", 3, 10.0)]
    assert counter.report("10.0.0.1", "unknown_token", 10.5)  # a new interval
    assert not counter.pending()


def test_addresses_past_the_bound_share_one_count() -> None:
    counter = RepeatCounter(repeats=1, interval=10.0, max_keys=3)
    reported = [counter.report(f"10.0.0.{n}", "unknown_token", 0.0) for n in range(10)]
    assert reported == [True] * 3 + [False] * 7
    assert len(counter) == 4
    assert counter.due(10.0) == [Summary(OTHERS, "unknown_token", 7, 10.0)]


def test_a_log_limiter_writes_one_line_per_key_and_interval_then_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = logging.getLogger("tests.repeats")
    limiter = LogLimiter(log, interval=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="tests.repeats"):
        for n in range(1000):  # a flood: one key, and a second one once
            limiter.warning("member-a", "frames refused", "a frame for %s refused (%d)", "a", n)
        limiter.warning("member-b", "frames refused", "a frame for %s refused (%d)", "b", 0)
        now[0] = 59.0
        limiter.warning("member-a", "frames refused", "a frame for %s refused (%d)", "a", 1000)
        now[0] = 61.0  # the interval ended: its count comes with the next warning
        limiter.warning("member-a", "frames refused", "a frame for %s refused (%d)", "a", 1001)
    assert [r.getMessage() for r in caplog.records] == [
        "a frame for a refused (0)",
        "a frame for b refused (0)",
        "member-a: 1000 more frames refused in 60 s",
        "a frame for a refused (1001)",
    ]


def test_limited_loggers_keep_one_limiter_per_logger_and_count_per_device_and_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lines = LimitedLoggers(interval=60.0, repeats=2)
    first, second = logging.getLogger("tests.first"), logging.getLogger("tests.second")
    assert lines(first) is lines(first)
    assert lines(first) is not lines(second)
    with caplog.at_level(logging.INFO, logger="tests"):
        for n in range(5):  # a device connecting again and again: 2 lines of each kind
            lines(first).info("device 'd'", "take-overs", "taken over %d", n)
            lines(first).info("device 'd'", "kicks", "kicked %d", n)
            lines(first).info("device 'e'", "take-overs", "e taken over %d", n)
    assert [r.getMessage() for r in caplog.records] == [
        "taken over 0", "kicked 0", "e taken over 0",
        "taken over 1", "kicked 1", "e taken over 1",
    ]  # fmt: skip


class _Lines(logging.Handler):
    """The messages logged, and an event set once ``wanted`` of them came."""

    def __init__(self, wanted: int) -> None:
        super().__init__()
        self.messages: list[str] = []
        self.wanted = wanted
        self.enough = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if len(self.messages) >= self.wanted:
            self.enough.set()


async def test_a_device_that_stops_gets_its_count_when_the_interval_ends() -> None:
    """Before, the count came only with the next line of that kind: a device that stopped
    repeating itself never had it written, and its key was held until some line came."""
    log = logging.getLogger("tests.repeats.timer")
    log.propagate = False
    log.setLevel(logging.INFO)
    lines = _Lines(wanted=3)
    log.addHandler(lines)
    try:
        # Both keys' intervals start at one instant (on the real clock 'e' starts a little
        # later and may not be due yet when the timer fires for 'd'); the clock then stands
        # past their end, so the loop's timer, armed for 0.2 s, finds both due.
        now = [time.monotonic()]
        limiter = LogLimiter(log, interval=0.2, repeats=1, clock=lambda: now[0])
        for n in range(5):  # a device taken over 5 times, then silent
            limiter.info("device 'd'", "take-overs", "taken over %d", n)
        limiter.warning("device 'e'", "kicks", "kicked %d", 0)  # one line: nothing counted
        now[0] += 0.3
        await asyncio.wait_for(lines.enough.wait(), 10.0)
        assert lines.messages == [
            "taken over 0", "kicked 0", "device 'd': 4 more take-overs in 0 s",
        ]  # fmt: skip
        assert len(limiter) == 0  # both keys forgotten, not held until another line
    finally:
        log.removeHandler(lines)
        log.propagate = True
        log.setLevel(logging.NOTSET)
        log.setLevel(logging.NOTSET)


async def test_the_keys_held_are_bounded_and_flush_writes_what_is_counted() -> None:
    log = logging.getLogger("tests.repeats.flush")
    log.propagate = False
    log.setLevel(logging.INFO)
    lines = _Lines(wanted=1)
    log.addHandler(lines)
    try:
        limiter = LogLimiter(log, interval=600.0, repeats=1)
        for n in range(20_000):  # more devices than RepeatCounter's default max_keys
            limiter.info(f"device '{n}'", "kicks", "kicked %d", n)
        assert len(limiter) == 10_001  # 10,000 devices and the one key the others share
        assert len(lines.messages) == 10_000
        limiter.flush()  # the broker stops: the count of the others, then nothing held
        assert lines.messages[-1] == "*: 10000 more kicks in 600 s"
        assert len(limiter) == 0
    finally:
        log.removeHandler(lines)
        log.propagate = True
        log.setLevel(logging.NOTSET)
        log.setLevel(logging.NOTSET)
