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

The counts are kept in the order of each one's last failure, so the expired ones are at the
front: a failure drops those it meets there and stops at the first still current, amortized
O(1). A walk of the whole table for expired counts cost every failure from a new address
100,000 steps once the table was full, however few had expired.
"""

import time
from collections import OrderedDict, deque
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
        # count never grows past them, the shared one (``OVERFLOW``) included. Ordered by
        # each one's last failure, the oldest first (``failed``).
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

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
        table = self._failures
        if remote not in table and len(table) >= self._max_tracked:
            self._drop_expired()
            if len(table) >= self._max_tracked:
                remote = OVERFLOW
        failures = table.get(remote)
        if failures is None:
            failures = table[remote] = deque(maxlen=self._max)
        else:
            table.move_to_end(remote)  # its last failure is now the latest
        failures.append(self._clock())

    def _drop_expired(self) -> None:
        """Drop the counts whose last failure left the window: those at the front."""
        table, oldest = self._failures, self._clock() - self._window
        while table:
            remote, failures = next(iter(table.items()))
            if failures and failures[-1] > oldest:
                return
            del table[remote]

    def _current(self, remote: str, failures: "deque[float]") -> bool:
        """Drop ``remote``'s failures that left the window, and its entry once none is left;
        whether any is left."""
        now = self._clock()
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            del self._failures[remote]
        return bool(failures)
