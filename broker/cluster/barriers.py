"""The barriers a replay of a gone member's parked frames waits for (``broker.cluster.replay``).

Each member asked parks a barrier behind what it parked for the gone member and sends one
directly; the replay reads the parked frames until every member's parked barrier is read
among them. A member's own replay (restarted, or back on NATS) is different: the others
park for it until they see its heartbeat, and a member whose view of it lags keeps parking
after its barrier. There a barrier read among the parked frames says its member is still
parking (``broker.cluster.handover``); its direct barrier, sent once it stopped (all it
parked in JetStream), says none is left: it counts as read once the reader reaches the
stream's last sequence as of its coming.

Bounds, for members that do not answer: ``HOLD_WITHIN`` seconds from the asking (a member
that died answers none), and past that, for a member not heard from yet, as long as it is
live, up to ``cluster_handover_window`` seconds from the asking (``broker.cluster.liveness``:
a live member whose table lags gives its barriers once its table is there, and parks frames
for the gone member until then); ``READ_WITHIN`` seconds from a member's direct barrier, or,
for a member still parking, from the last frame read.
"""

import logging
from collections.abc import Iterable
from typing import Final

from broker.cluster.arrivals import HOLD_WITHIN
from broker.cluster.liveness import Hearing, unheard, waited_until
from broker.peer import SessionKey

__all__ = ["READ_WITHIN", "Awaited"]

log = logging.getLogger(__name__)

READ_WITHIN: Final = 5.0  # seconds a parked frame known to be there may take to come


class Awaited:
    """For ``token``, the barrier of each member asked, by when it is given up. ``own``: a
    member's own replay. ``window``, ``heard``: how long a live member not heard from yet is
    waited for past ``HOLD_WITHIN`` (``broker.cluster.liveness``)."""

    def __init__(
        self,
        token: SessionKey,
        members: Iterable[str],
        me: str,
        now: float,
        own: bool = False,
        *,
        window: float = 0.0,
        heard: Hearing = unheard,
    ) -> None:
        self.token = token
        self.own = own
        self._asked = now
        self._window = window
        self._heard = heard
        self._until = dict.fromkeys(members, now + HOLD_WITHIN)
        self._from = {me}  # heard from: bound by READ_WITHIN, not by being live
        if me in self._until:  # this member's own is queued already
            self._until[me] = now + READ_WITHIN
        self._direct: dict[str, int] = {}  # own: the stream's last sequence at their direct

    def answered(self, member: str, now: float, last: int | None = None) -> None:
        """``member``'s direct barrier came: its parked one is on its way; or, ``own``, the
        stream's last sequence as of its coming was ``last``."""
        if member not in self._until:
            return
        self._from.add(member)
        self._until[member] = max(self._until[member], now + READ_WITHIN)
        if self.own and last is not None:
            self._direct[member] = last

    def read(self, member: str, now: float) -> None:
        """``member``'s barrier read among the parked frames."""
        if not self.own:
            self._until.pop(member, None)
        else:  # it still parks: waited for as long as frames keep coming
            self._from.add(member)
            self._later(now, {member})

    def reached(self, sequence: int, now: float, frame: bool) -> None:
        """The reader is at stream sequence ``sequence`` (having read a ``frame`` just now):
        the members whose direct barrier came with the stream there or before, read. The
        others, for a member's own replay, waited for ``READ_WITHIN`` seconds from the last
        frame: while frames keep coming, a member still parks (the frames do not say which:
        a member whose own parked barrier waits behind its frames may be any of them)."""
        for member, last in list(self._direct.items()):
            if last <= sequence:
                del self._direct[member]
                self._until.pop(member, None)
        if frame and self.own:
            self._later(now, self._until.keys() - self._direct.keys())

    def _later(self, now: float, members: Iterable[str]) -> None:
        for member in members:
            if member in self._until and member not in self._direct:
                self._until[member] = max(self._until[member], now + READ_WITHIN)

    def left(self, now: float) -> float | None:
        """Seconds until the next member is due (0: one is); None once none is waited for."""
        return max(min(self._until.values()) - now, 0.0) if self._until else None

    def give_up(self, now: float, grace: float = 0.0) -> None:
        """Those due ``grace`` seconds ago: given up, unless live and not heard from yet
        (then due later). While frames keep coming, a due member's barrier may be among
        them, so it is given up only once none came for a moment, or after ``grace`` more."""
        late = sorted(member for member, until in self._until.items() if until + grace <= now)
        late = [member for member in late if not self._live(member, now)]
        if late:
            log.warning("no barrier behind their parked frames from %s: what is held for "
                        "the sessions taken goes without", ", ".join(late))  # fmt: skip
            for member in late:
                del self._until[member]
                self._direct.pop(member, None)

    def _live(self, member: str, now: float) -> bool:
        """Whether ``member``, due, is waited for longer: not heard from yet, and live (then
        until when it is, from now on)."""
        if member in self._from:
            return False
        until = waited_until(self._asked, self._heard(member), self._window)
        if until is None or until <= now:
            return False
        self._until[member] = until
        return True
