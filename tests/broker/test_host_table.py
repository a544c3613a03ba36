"""The bounded table of failures per host under both throttles, alone: its bound, the order
it forgets in, the quiet spell and a success (the throttles' own tests:
tests/broker/test_password_gate.py, tests/broker/test_auth_throttle.py)."""

from dataclasses import dataclass

from broker.host_table import Failures, HostTable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class _Held(Failures):
    until: float = 0.0

    def quiet_since(self) -> float:
        return max(self.until, self.last)


def _table(clock: Clock, tracked: int = 3, quiet: float = 10.0) -> HostTable[Failures]:
    return HostTable(Failures, tracked=tracked, quiet=quiet, clock=clock)


def test_failures_are_counted_per_host() -> None:
    clock = Clock()
    table = _table(clock)
    for _ in range(3):
        record = table.failed("10.0.0.1")
    table.failed("10.0.0.2")
    assert (record.count, record.last) == (3, 1000.0)
    assert table.failures("10.0.0.1") == 3
    assert table.failures("10.0.0.2") == 1
    assert table.failures("10.0.0.3") == 0
    assert table.get("10.0.0.3") is None
    assert len(table) == 2


def test_the_table_holds_at_most_tracked_hosts() -> None:
    clock = Clock()
    table = _table(clock, tracked=100)
    for n in range(10_000):
        clock.now += 0.001
        table.failed(f"host-{n}")
        assert len(table) <= 100
    assert len(table) == 100
    assert [table.failures(f"host-{n}") for n in (9_899, 9_900, 9_999)] == [0, 1, 1]


def test_the_longest_quiet_is_forgotten_first() -> None:
    clock = Clock()
    table = _table(clock, tracked=3)
    for host in ("a", "b", "c"):
        clock.now += 1.0
        table.failed(host)
    clock.now += 1.0
    table.failed("a")  # "a" failed last now: "b" has been quiet longest
    assert table.get("b") is not None  # a look does not count as a failure
    table.failed("d")
    assert [table.failures(host) for host in "abcd"] == [2, 0, 1, 1]
    table.failed("e")  # then "c"
    assert [table.failures(host) for host in "abcde"] == [2, 0, 0, 1, 1]


def test_a_quiet_spell_forgets_a_host() -> None:
    clock = Clock()
    table = _table(clock, quiet=10.0)
    table.failed("a")
    table.failed("a")
    clock.now += 10.0  # not past the spell yet
    assert table.get("a") is not None
    assert table.failed("a").count == 3
    clock.now += 10.1
    assert table.get("a") is None  # forgotten, and gone from the table
    assert len(table) == 0
    assert table.failed("a").count == 1  # counting starts afresh


def test_a_record_may_start_its_quiet_spell_later() -> None:
    clock = Clock()
    table: HostTable[_Held] = HostTable(_Held, tracked=3, quiet=10.0, clock=clock)
    table.failed("a").until = clock.now + 30.0  # held 30 s: quiet from then on
    clock.now += 39.0
    assert table.get("a") is not None
    clock.now += 1.1
    assert table.get("a") is None


def test_a_success_clears_a_host() -> None:
    clock = Clock()
    table = _table(clock)
    table.failed("a")
    table.failed("b")
    table.succeeded("a")
    table.succeeded("z")  # none held: nothing to clear
    assert table.failures("a") == 0
    assert table.get("a") is None
    assert len(table) == 1
    assert table.failed("a").count == 1
