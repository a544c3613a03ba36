"""The registry's sessions by ``(device id, client id)``, with how many each device holds.

``max_sessions_per_device`` is checked on every connect that would start a session: a count
kept as sessions come and go, not a scan of every session. In a cluster the count is the
cluster's: each add and remove is told to ``Seats`` (``broker.cluster.seats``), which a
connect starting a new session asks for a seat.
"""

from collections import Counter
from collections.abc import Callable
from typing import Protocol

from broker.peer import SessionKey
from broker.sessions import BrokerSession


class Seats(Protocol):
    """A device's sessions counted across a cluster (``broker.cluster.seats``)."""

    async def reserve(self, device_id: str, limit: int) -> None:
        """One more session of the device here, or ``SessionQuotaExceeded`` if the cluster
        holds ``limit``; the session is added to the table before the caller awaits."""
        ...

    def changed(self, device_id: str) -> None:
        """The sessions the device holds here changed."""
        ...

    async def settle(self, device_id: str) -> None:
        """Tell the cluster now what the device holds here (a session was given up)."""
        ...


class SessionTable(dict[SessionKey, BrokerSession]):
    """A dict of sessions; only ``table[key] = ...`` and ``del table[key]`` change it."""

    def __init__(self) -> None:
        super().__init__()
        self._per_device: Counter[str] = Counter()
        self.changed: Callable[[str], None] | None = None  # told each device whose count changes

    def __setitem__(self, key: SessionKey, session: BrokerSession) -> None:
        if key not in self:
            self._per_device[key[0]] += 1
            if self.changed is not None:
                self.changed(key[0])
        super().__setitem__(key, session)

    def __delitem__(self, key: SessionKey) -> None:
        super().__delitem__(key)
        left = self._per_device[key[0]] - 1
        if left:
            self._per_device[key[0]] = left
        else:
            del self._per_device[key[0]]
        if self.changed is not None:
            self.changed(key[0])

    def held_by(self, device_id: str) -> int:
        """How many sessions ``device_id`` holds here (connected or kept)."""
        return self._per_device[device_id]
