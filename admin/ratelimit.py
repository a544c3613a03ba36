"""Slowing down token guessing: a client that fails too often is refused for a while.

Counted per client host (an IPv4 address, or an IPv6 /64: ``admin.security.remote_of``) over a
sliding window. A success does not reset the count: an attacker holding one valid token for
another purpose must not buy free guesses with it.
"""

import time
from collections import defaultdict, deque
from collections.abc import Callable

MAX_FAILURES = 10
WINDOW_SECONDS = 60.0
_MAX_TRACKED = 100_000  # bound memory under a spray from many addresses


class FailureLimiter:
    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_failures
        self._window = window
        self._clock = clock
        self._failures: defaultdict[str, deque[float]] = defaultdict(deque)

    def retry_after(self, remote: str) -> float | None:
        """Seconds until ``remote`` may try again, or None when it may try now."""
        failures = self._failures.get(remote)
        if failures is None:
            return None
        now = self._clock()
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            del self._failures[remote]
            return None
        if len(failures) < self._max:
            return None
        return failures[0] + self._window - now

    def failed(self, remote: str) -> None:
        if len(self._failures) >= _MAX_TRACKED and remote not in self._failures:
            self._failures.clear()  # crude, but bounded; each address starts over
        self._failures[remote].append(self._clock())
