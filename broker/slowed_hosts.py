"""Refused connects in a row per host, and a slowed host's connection rate (a token bucket).

After ``free_failures`` failures in a row a host is *slowed*, never shut out: its new
connections are let through at most ``rate`` a second, with a burst of as many (at least one),
and the others refused. A success clears its count and its slowing at once; so does a quiet
spell of ``quiet`` seconds after its last failure (an old failure does not count against it
forever). At most ``tracked`` hosts are remembered: past it the longest quiet one is
forgotten, so a flood from ever new hosts costs bounded memory (the table:
``broker.host_table``). No I/O.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from broker.host_table import Failures, HostTable


@dataclass(frozen=True)
class SlowingPolicy:
    free_failures: int = 20
    # 5 a second: each refused connect let through costs the broker about 5 ms of CPU (its
    # side of the TLS handshake), so one failing host stays near 2.5% of a core. A burst of
    # as many lets a device in at once when the host has been quiet for a second.
    rate: float = 5.0
    tracked: int = 10_000  # hosts whose failures are remembered
    quiet: float = 60.0  # seconds after its last failure that a host's count is forgotten

    @property
    def burst(self) -> float:
        return max(1.0, self.rate)


@dataclass
class _Host(Failures):
    tokens: float = 0.0  # connections it may open now, once slowed
    filled: float = 0.0  # when ``tokens`` was last brought up to date


class SlowedHosts:
    """Failures in a row per host, and the slowed hosts' buckets (the module's docstring)."""

    def __init__(self, policy: SlowingPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._hosts = HostTable(_Host, tracked=policy.tracked, quiet=policy.quiet, clock=clock)

    def let_through(self, host: str) -> bool:
        """Whether a new connection of ``host`` may go on (it takes a token of a slowed
        host's bucket); False: refuse it, the host is slowed and its tokens are spent."""
        entry = self._hosts.get(host)
        if entry is None or entry.count < self.policy.free_failures:
            return True
        now = self._clock()
        entry.tokens = min(
            self.policy.burst, entry.tokens + (now - entry.filled) * self.policy.rate
        )
        entry.filled = now
        if entry.tokens < 1.0:
            return False
        entry.tokens -= 1.0
        return True

    def failed(self, host: str) -> bool:
        """Count a failure of ``host``; True if it makes the host slowed (its bucket full)."""
        entry = self._hosts.failed(host)
        if entry.count != self.policy.free_failures:
            return False
        entry.tokens, entry.filled = self.policy.burst, entry.last
        return True

    def succeeded(self, host: str) -> None:
        """A connect of ``host`` was admitted: its count and slowing end."""
        self._hosts.succeeded(host)

    def failures(self, host: str) -> int:
        return self._hosts.failures(host)

    def __len__(self) -> int:
        return len(self._hosts)

    def __bool__(self) -> bool:
        return bool(self._hosts)
