"""Failures in a row per client host, in a table of bounded size.

What both throttles of failing hosts keep: the password gate's blocks (``broker.failure_throttle``,
fail2ban-like) and the slowed hosts of refused connects (``broker.slowed_hosts``, a token
bucket). Each is a policy over one ``HostTable`` of its own records.

A host's record counts its failures in a row and holds the time of the last. A success
forgets it (``succeeded``); so does a quiet spell of ``quiet`` seconds after the record's
``quiet_since`` (its last failure, or later when the policy says so: the end of a block), so
an old failure does not count against a host forever. At most ``tracked`` hosts are held:
past it the one quiet longest (its last failure the oldest) is forgotten, so a flood from
ever new hosts costs bounded memory. No I/O; the clock is the caller's.
"""

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar


@dataclass
class Failures:
    """A host's failures in a row; a policy's record adds its own fields."""

    count: int = 0
    last: float = 0.0  # the last failure (the table's clock)

    def quiet_since(self) -> float:
        """When the host's quiet spell started: the record is forgotten ``quiet`` seconds on."""
        return self.last


R = TypeVar("R", bound=Failures)


class HostTable(Generic[R]):
    """``new()``'s records by host (see the module's docstring)."""

    def __init__(
        self,
        new: Callable[[], R],
        *,
        tracked: int,
        quiet: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._new = new
        self._tracked = tracked
        self._quiet = quiet
        self._clock = clock
        # Oldest last failure first: the order in which a full table forgets.
        self._records: OrderedDict[str, R] = OrderedDict()

    def get(self, host: str) -> R | None:
        """The host's record; None if it has none or stayed quiet long enough to be forgotten
        (forgotten then)."""
        record = self._records.get(host)
        if record is not None and self._clock() > record.quiet_since() + self._quiet:
            del self._records[host]
            return None
        return record

    def failed(self, host: str) -> R:
        """Count a failure of ``host``: its record (a new one if it had none), now the last
        the table would forget."""
        record = self.get(host) or self._new()
        record.count += 1
        record.last = self._clock()
        self._records[host] = record
        self._records.move_to_end(host)
        while len(self._records) > self._tracked:
            self._records.popitem(last=False)  # the longest quiet goes first
        return record

    def failures(self, host: str) -> int:
        """The host's failures in a row as counted (a record past its quiet spell still
        counts here until ``get`` or ``failed`` forgets it)."""
        record = self._records.get(host)
        return record.count if record is not None else 0

    def succeeded(self, host: str) -> None:
        """A success of ``host``: its count (and whatever its policy kept) starts afresh."""
        self._records.pop(host, None)

    def __len__(self) -> int:
        return len(self._records)
