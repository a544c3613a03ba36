"""The registry's sessions by ``(device id, client id)``, with how many each device holds.

``max_sessions_per_device`` is checked on every connect that would start a session: a count
kept as sessions come and go, not a scan of every session.
"""

from collections import Counter

from broker.peer import SessionKey
from broker.sessions import BrokerSession


class SessionTable(dict[SessionKey, BrokerSession]):
    """A dict of sessions; only ``table[key] = ...`` and ``del table[key]`` change it."""

    def __init__(self) -> None:
        super().__init__()
        self._per_device: Counter[str] = Counter()

    def __setitem__(self, key: SessionKey, session: BrokerSession) -> None:
        if key not in self:
            self._per_device[key[0]] += 1
        super().__setitem__(key, session)

    def __delitem__(self, key: SessionKey) -> None:
        super().__delitem__(key)
        left = self._per_device[key[0]] - 1
        if left:
            self._per_device[key[0]] = left
        else:
            del self._per_device[key[0]]

    def held_by(self, device_id: str) -> int:
        """How many sessions ``device_id`` holds here (connected or kept)."""
        return self._per_device[device_id]
