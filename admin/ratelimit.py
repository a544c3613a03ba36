"""Slowing down token guessing: a client that fails too often is refused for a while.

Counted per client host (an IPv4 address, or an IPv6 /64: ``admin.security.remote_of``) over a
sliding window. A success does not reset the count: an attacker holding one valid token for
another purpose must not buy free guesses with it.

At most ``max_tracked`` addresses (``http_max_failure_addresses``) are counted apart (memory
is bounded under a spray from many addresses). Once that many are, expired counts are
dropped; if none is, a new address shares one count with every other address that did not
fit (``OVERFLOW``): a spray from ever new addresses gets ``max_failures`` guesses per window
in all, and the addresses already counted keep their counts (emptying the table would have
given each of them its guesses back). An address with no failure of its own may be refused
with the overflow's count meanwhile: under such a spray, sign-in from new addresses waits for
the window.
"""

import time
from collections import defaultdict, deque
from collections.abc import Callable

from admin.limits import HttpLimits

MAX_FAILURES = 10
WINDOW_SECONDS = 60.0
OVERFLOW = "*"  # the count shared by addresses that did not fit


class FailureLimiter:
    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = HttpLimits.max_failure_addresses,
    ) -> None:
        self._max = max_failures
        self._max_tracked = max_tracked
        self._window = window
        self._clock = clock
        # The last ``max_failures`` of each are enough to know when it may try again; so a
        # count never grows past them, the shared one (``OVERFLOW``) included.
        self._failures: defaultdict[str, deque[float]] = defaultdict(
            lambda: deque(maxlen=max_failures)
        )

    def retry_after(self, remote: str) -> float | None:
        """Seconds until ``remote`` may try again, or None when it may try now."""
        if remote not in self._failures and OVERFLOW in self._failures:
            remote = OVERFLOW  # counted with the others that did not fit
        failures = self._failures.get(remote)
        if failures is None or not self._current(remote, failures):
            return None
        if len(failures) < self._max:
            return None
        return failures[0] + self._window - self._clock()

    def failed(self, remote: str) -> None:
        if remote not in self._failures and len(self._failures) >= self._max_tracked:
            for known, failures in list(self._failures.items()):
                self._current(known, failures)  # drops the expired
            if len(self._failures) >= self._max_tracked:
                remote = OVERFLOW
        self._failures[remote].append(self._clock())

    def _current(self, remote: str, failures: "deque[float]") -> bool:
        """Drop ``remote``'s failures that left the window, and its entry once none is left;
        whether any is left."""
        now = self._clock()
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            del self._failures[remote]
        return bool(failures)
