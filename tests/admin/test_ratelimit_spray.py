"""A token-failure spray from ever new addresses against a full table of counts: each failure
costs a bounded number of steps, and who is refused is as it was.

Once ``http_max_failure_addresses`` (100,000) addresses were counted, every failure from a new
address walked all of them for expired counts. The walk asked the clock once per count: the
clock calls a failure makes are the steps it takes.
"""

import random
from collections import defaultdict, deque

import pytest

from admin.ratelimit import OVERFLOW, FailureLimiter

TRACKED = 10_000


class CountingClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


def test_a_failure_from_a_new_address_does_not_walk_the_full_table() -> None:
    clock = CountingClock()
    limiter = FailureLimiter(max_failures=3, window=60.0, clock=clock, max_tracked=TRACKED)
    for n in range(TRACKED // 2):
        limiter.failed(f"early-{n}")
    clock.now += 30.0
    for n in range(TRACKED // 2):
        limiter.failed(f"late-{n}")
    clock.now += 1.0  # full, and nothing expired
    clock.calls = 0
    for n in range(1000):
        limiter.failed(f"spray-{n}")
    assert clock.calls <= 2 * 1000  # the walk: 10,000 a failure
    assert limiter.retry_after("spray-0") == pytest.approx(60.0)  # all share one count
    # The early half expires: the first new address after it drops them, in one go.
    clock.now += 30.0
    clock.calls = 0
    limiter.failed("after")
    assert clock.calls <= TRACKED // 2 + 2
    assert limiter.retry_after("after") is None  # its own count again
    assert len(vars(limiter)["_failures"]) == TRACKED // 2 + 2  # late-*, the overflow, after


class Walking:
    """The limiter as it was: the whole table walked for expired counts."""

    def __init__(self, max_failures: int, window: float, clock: CountingClock, tracked: int):
        self.max, self.window, self.clock, self.tracked = max_failures, window, clock, tracked
        self.failures: defaultdict[str, deque[float]] = defaultdict(
            lambda: deque(maxlen=max_failures)
        )

    def retry_after(self, remote: str) -> float | None:
        if remote not in self.failures and OVERFLOW in self.failures:
            remote = OVERFLOW
        failures = self.failures.get(remote)
        if failures is None or not self._current(remote, failures) or len(failures) < self.max:
            return None
        return failures[0] + self.window - self.clock()

    def failed(self, remote: str) -> None:
        if remote not in self.failures and len(self.failures) >= self.tracked:
            for known, failures in list(self.failures.items()):
                self._current(known, failures)
            if len(self.failures) >= self.tracked:
                remote = OVERFLOW
        self.failures[remote].append(self.clock())

    def _current(self, remote: str, failures: deque[float]) -> bool:
        while failures and failures[0] <= self.clock() - self.window:
            failures.popleft()
        if not failures:
            del self.failures[remote]
        return bool(failures)


@pytest.mark.parametrize("seed", range(5))
def test_who_is_refused_is_as_with_the_walk(seed: int) -> None:
    rng = random.Random(seed)
    clock = CountingClock()
    limiter = FailureLimiter(max_failures=3, window=60.0, clock=clock, max_tracked=8)
    walking = Walking(3, 60.0, clock, 8)
    addresses = [f"10.0.0.{n}" for n in range(20)]
    for _ in range(3000):
        clock.now += rng.choice((0.0, 0.5, 3.0, 20.0))
        remote = rng.choice(addresses)
        if rng.random() < 0.6:
            limiter.failed(remote)
            walking.failed(remote)
        else:
            assert limiter.retry_after(remote) == walking.retry_after(remote)
