"""Members others park frames for, and when that ends (``broker.cluster.parked``).

A member's frames are parked from the moment NATS says nobody listens for it
(``broker.cluster.forward``) until a heartbeat of it is written again: by a restarted
process, or by the same one back on NATS after a moment away. That member then reads back
what was parked for it (``broker.cluster.replay``): restarted, once its sessions are
restored (``SessionClaims.restored``); back on NATS, once its next heartbeat is written (the
others park for it until they see one), what reaches its sessions held meanwhile.
"""

from broker.cluster.forward import Forwarder
from broker.cluster.members import MemberRegistry
from broker.cluster.replay import Replays
from broker.sessions import BrokerSession
from nanoiot.members import Member

__all__ = ["Absences"]


class Absences:
    def __init__(self, forwarder: Forwarder, member: str) -> None:
        self.forwarder = forwarder
        self.member = member
        self.replays: Replays | None = None
        self.members: MemberRegistry | None = None
        # Members whose frames are parked, and their last heartbeat then (None: not live).
        self._parked_as: dict[str, Member | None] = {}
        self._back: list[BrokerSession] = []  # held since NATS came back, until a heartbeat

    def watch(self, members: MemberRegistry) -> None:
        self.members = members
        members.on_change(self._changed)
        members.on_renewed(self._renewed)

    def gone(self, member: str) -> None:
        """Frames for ``member`` are parked from now on."""
        self._parked_as[member] = self._entry(member)

    def _entry(self, member: str) -> Member | None:
        return self.members.entry(member) if self.members is not None else None

    def _changed(self) -> None:
        """A member whose frames are parked and that wrote a heartbeat since gets them again."""
        if not self._parked_as:
            return
        for member, then in list(self._parked_as.items()):
            now = self._entry(member)
            if now is not None and now is not then:
                del self._parked_as[member]
                self.forwarder.unpark(member)

    def back_on_nats(self) -> None:
        if self.replays is not None:
            self._back += self.replays.back()

    def _renewed(self, _began: float, _run: int) -> None:
        if self._back and self.replays is not None:
            back, self._back = self._back, []
            self.replays.start(self.member, back, purge=True)
