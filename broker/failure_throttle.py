"""Failures per client address, and how long an address is shut out for them (fail2ban-like).

After ``free_failures`` failures in a row from an address, each further failure shuts it out
for 1 s, doubling up to ``max_block`` seconds; a success clears its count, and so does a
quiet spell of ``max_block`` seconds after its last failure or block (an old typo does not
count against it forever). At most ``tracked`` addresses are remembered: past it the longest
quiet one is forgotten, so a flood from ever new addresses costs bounded memory (the table:
``broker.host_table``).

The password gate's throttle (``broker.password_gate``: argon2 checks). Refused certificates,
tokens and connects without credentials slow their host instead of shutting it out
(``broker.slowed_hosts``). No I/O.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from broker.host_table import Failures, HostTable


class ThrottleBounds(Protocol):
    """What a throttle reads of its policy (``PasswordPolicy``)."""

    @property
    def free_failures(self) -> int: ...

    @property
    def max_block(self) -> float: ...

    @property
    def tracked(self) -> int: ...


@dataclass
class _Blocked(Failures):
    until: float = 0.0  # refused until then (the table's clock)

    def quiet_since(self) -> float:
        # A block outlasts the failure that set it: the quiet spell starts when it ends.
        return max(self.until, self.last)


class FailureThrottle:
    """Failures per address, and how long an address is refused. No I/O."""

    def __init__(self, policy: ThrottleBounds, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._table = HostTable(
            _Blocked, tracked=policy.tracked, quiet=policy.max_block, clock=clock
        )

    def blocked_for(self, address: str) -> float:
        """Seconds this address is still refused (0.0: it may try)."""
        entry = self._table.get(address)
        return max(0.0, entry.until - self._clock()) if entry is not None else 0.0

    def failed(self, address: str) -> float:
        """Count a failure; the seconds the address is now refused for (0.0: not yet)."""
        entry = self._table.failed(address)
        over = entry.count - self._policy.free_failures
        if over <= 0:
            return 0.0
        block = min(self._policy.max_block, 2.0 ** min(over - 1, 64))
        entry.until = self._clock() + block
        return block

    def failures(self, address: str) -> int:
        return self._table.failures(address)

    def succeeded(self, address: str) -> None:
        self._table.succeeded(address)

    def __len__(self) -> int:
        return len(self._table)
