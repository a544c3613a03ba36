"""The registry's sessions by ``(device id, client id)``, with each device's kept apart.

``max_sessions_per_device`` is checked on every connect that would start a session, and the
change-feed follower (``broker.revocation``) looks at the sessions of the devices a change
touches: both ask the per-device index kept as sessions come and go, never a scan of every
session (a fleet's provisioning is a change per device, a few batches a second). In a
cluster the count is the cluster's: each add and remove is told to ``Seats``
(``broker.cluster.seats``), which a connect starting a new session asks for a seat.

How many of the sessions have a client is counted the same way, as sessions come and go
and clients take and leave them (``attach``): ``$SYS/broker/clients/disconnected`` is read
every ``sys_interval``, and a scan of every session for it stalled the loop once an
interval with 100,000 persistent sessions.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from broker.peer import SessionKey
from broker.sessions import BrokerSession

if TYPE_CHECKING:
    from broker.client import MqttClient


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
        # Device id -> its sessions' keys (a dict: kept in the order they came, as the table).
        self._per_device: dict[str, dict[SessionKey, None]] = {}
        self.changed: Callable[[str], None] | None = None  # told each device whose count changes
        self._attached = 0  # sessions here with a client

    def __setitem__(self, key: SessionKey, session: BrokerSession) -> None:
        old = self.get(key)
        if old is None:
            self._per_device.setdefault(key[0], {})[key] = None
            if self.changed is not None:
                self.changed(key[0])
        else:
            self._attached -= old.client is not None
        super().__setitem__(key, session)
        self._attached += session.client is not None

    def __delitem__(self, key: SessionKey) -> None:
        self._attached -= self[key].client is not None
        super().__delitem__(key)
        keys = self._per_device[key[0]]
        del keys[key]
        if not keys:
            del self._per_device[key[0]]
        if self.changed is not None:
            self.changed(key[0])

    def attach(self, session: BrokerSession, client: "MqttClient | None") -> None:
        """Give ``session`` its client (None: its client left), counted if it is here."""
        if self.get(session.key) is session:
            self._attached += (client is not None) - (session.client is not None)
        session.client = client

    def away(self) -> int:
        """How many sessions here have no client (persistent ones whose client left)."""
        return len(self) - self._attached

    def held_by(self, device_id: str) -> int:
        """How many sessions ``device_id`` holds here (connected or kept)."""
        return len(self._per_device.get(device_id, ()))

    def of_device(self, device_id: str) -> list[BrokerSession]:
        """The sessions ``device_id`` holds here, in the order they came."""
        return [self[key] for key in self._per_device.get(device_id, ())]
