"""Members others park frames for, and when that ends (``broker.cluster.parked``).

A member's frames are parked from the moment NATS says nobody listens for it, or the
members registry takes it as gone for its missed heartbeats (``broker.cluster.forward``),
until it is back: an entry of it is written again (``broker.cluster.members``) by a run
that takes frames (``back``, the one rule for it). That is a restarted process, or the same
one back on NATS after a moment away, or back from fencing itself off; not a run fenced
off (``Member.fenced``: it refuses frames until it restored its sessions, and the
publishers of frames it refuses are disconnected unacknowledged), nor the run the registry
took as gone meanwhile: a heartbeat of that run may still come, begun before the member
found it had to fence itself off (a stopped process running again, a write sent as NATS
came back), and the member fences itself off right after it (``broker.cluster.fence``).

That member then reads back what was parked for it (``broker.cluster.replay``): restarted
or back from fencing, once its sessions are restored (``SessionClaims.restored``); back on
NATS, once its next heartbeat is written (the others park for it until they see one), what
reaches its sessions held meanwhile.
"""

from broker.cluster.forward import Forwarder
from broker.cluster.members import MemberRegistry
from broker.cluster.replay import Replays
from broker.sessions import BrokerSession
from nanoiot.members import Member

__all__ = ["Absences", "back"]


def back(now: Member | None, parked_as: Member | None, ended: Member | None) -> bool:
    """Whether a member whose frames are parked takes them again: its entry now (``now``,
    None if not live) was written since the parking began (``parked_as``: its entry then,
    None if it was not live), by a run not fenced off, and not by the run the members
    registry took as gone meanwhile (``ended``: that run's last entry, if it did)."""
    if now is None or now is parked_as or now.fenced:
        return False
    return ended is None or _run(now) != _run(ended)


def _run(member: Member) -> tuple[int, float, int]:
    return member.pid, member.started, member.run  # the process, and its fencings


class Absences:
    def __init__(self, forwarder: Forwarder, member: str) -> None:
        self.forwarder = forwarder
        self.member = member
        self.replays: Replays | None = None
        self.members: MemberRegistry | None = None
        # Members whose frames are parked, and their last heartbeat then (None: not live).
        self._parked_as: dict[str, Member | None] = {}
        # ... and of those, the last entry of the run the registry took as gone since.
        self._ended: dict[str, Member] = {}
        self._back: list[BrokerSession] = []  # held since NATS came back, until a heartbeat

    def watch(self, members: MemberRegistry) -> None:
        self.members = members
        members.on_gone(self._departed)
        members.on_change(self._changed)
        members.on_renewed(self._renewed)

    def gone(self, member: str) -> None:
        """Frames for ``member`` are parked from now on."""
        self._parked_as[member] = self._entry(member)
        self._ended.pop(member, None)

    def _entry(self, member: str) -> Member | None:
        return self.members.entry(member) if self.members is not None else None

    def _departed(self, member: Member) -> None:
        """The registry took ``member``'s run as gone: no entry of that run brings it back."""
        if member.name in self._parked_as:
            self._ended[member.name] = member

    def _changed(self) -> None:
        """A member whose frames are parked and that is back gets them again."""
        if not self._parked_as:
            return
        for member, then in list(self._parked_as.items()):
            if back(self._entry(member), then, self._ended.get(member)):
                del self._parked_as[member]
                self._ended.pop(member, None)
                self.forwarder.unpark(member)

    def back_on_nats(self) -> None:
        if self.replays is not None:
            self._back += self.replays.back()

    def _renewed(self, _began: float, _run: int) -> None:
        if self._back and self.replays is not None:
            held, self._back = self._back, []
            self.replays.start(self.member, held, purge=True)
