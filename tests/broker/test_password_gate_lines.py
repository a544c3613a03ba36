"""The password gate's "shutting out" lines are bounded: one per host and interval, for at most
``tracked`` hosts an interval, the rest counted in summary lines. A line a block came without
end from one host whose blocks are short and from guesses spread over ever new hosts."""

import logging

import pytest

from broker.password_gate import PasswordGate, PasswordPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _wrong() -> None:
    return None


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "broker.password_gate" and record.levelno == logging.WARNING
    ]


async def test_one_host_failing_1000_times_writes_one_line_an_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.password_gate")
    clock = Clock()
    gate = PasswordGate(PasswordPolicy(free_failures=1, max_block=0.05), clock)
    for _ in range(1000):  # each guess as soon as the last block ends: 50 s in all
        assert await gate.check("192.0.2.1", _wrong) is None
        clock.now += 0.05
    lines = _lines(caplog)
    assert len(lines) == 1, lines[:3]  # 999 blocks, one line for the interval
    assert lines[0].startswith("shutting out 192.0.2.1 for 0.05 s")
    clock.now += 60.0  # the next interval (the host's count forgotten meanwhile)
    for _ in range(2):
        assert await gate.check("192.0.2.1", _wrong) is None
    lines = _lines(caplog)
    assert len(lines) == 3, lines  # the last interval's summary, and a line again
    assert lines[1].startswith("192.0.2.1: 998 more shut-outs after failed password checks")
    assert lines[2].startswith("shutting out 192.0.2.1 for 0.05 s")


@pytest.mark.parametrize("tracked", [10_000, 100])
async def test_1000_failing_hosts_write_at_most_one_line_each_and_tracked_in_all(
    caplog: pytest.LogCaptureFixture, tracked: int
) -> None:
    caplog.set_level(logging.WARNING, logger="broker.password_gate")
    clock = Clock()
    gate = PasswordGate(PasswordPolicy(free_failures=1, max_block=0.001, tracked=tracked), clock)
    for n in range(1000):  # 5 s in all
        for _ in range(5):  # four blocks each
            assert await gate.check(f"198.51.{n // 250}.{n % 250}", _wrong) is None
            clock.now += 0.001
    lines = _lines(caplog)
    assert len(lines) == min(1000, tracked)  # 4,000 blocks
    assert len({line.split()[2] for line in lines}) == len(lines)  # a host's line at most
    gate.flush()
    summaries = _lines(caplog)[len(lines) :]
    # Each host with a line: its 3 further blocks; past ``tracked``, the others' in one line.
    assert len(summaries) == min(1000, tracked) + (tracked < 1000)
    if tracked < 1000:
        assert "*: 3600 more shut-outs" in summaries[-1]
