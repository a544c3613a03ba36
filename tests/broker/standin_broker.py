"""What the change-feed follower (``broker.revocation``) asks of a broker, for its tests: a
broker with no connections, sessions or wills, that records the devices it is told changed.
"""

from collections.abc import Callable

from broker.last_will import DelayedWill
from broker.peer import Peer
from broker.sessions import BrokerSession


class StandInBroker:
    def __init__(self) -> None:
        self.noted: list[set[str] | None] = []  # each ``note_changes``' devices (None: all)

    def live_peers(self, device_ids: set[str] | None = None) -> list[Peer]:
        return []

    def note_changes(self, device_ids: set[str] | None) -> None:
        self.noted.append(device_ids)

    def forget_device(self, device_id: str) -> None:
        pass

    def waiting_wills(self, device_ids: set[str] | None) -> list[tuple[BrokerSession, DelayedWill]]:
        return []

    def drop_will(self, session: BrokerSession, will: DelayedWill, reason: str) -> None:
        pass

    def kick_device(
        self, device_id: str, reason: str, which: Callable[[Peer], bool] | None = None
    ) -> int:
        return 0
