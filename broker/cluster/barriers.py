"""The barriers a replay of a gone member's parked frames waits for (step 4 of
``broker.cluster.replay``): each member asked parks one behind what it parked for the gone
member, and sends one directly."""

import logging
from collections.abc import Iterable
from typing import Final

from broker.cluster.arrivals import HOLD_WITHIN
from broker.peer import SessionKey

__all__ = ["READ_WITHIN", "Awaited"]

log = logging.getLogger(__name__)

READ_WITHIN: Final = 5.0  # seconds a parked frame known to be there may take to come


class Awaited:
    """The barriers a replay waits for among the gone member's parked frames (step 4): for
    ``token``, one from each member asked, by when it is given up."""

    def __init__(self, token: SessionKey, members: Iterable[str], me: str, now: float) -> None:
        self.token = token
        self._until = dict.fromkeys(members, now + HOLD_WITHIN)
        if me in self._until:  # this member's own is queued already
            self._until[me] = now + READ_WITHIN

    def answered(self, member: str, now: float) -> None:
        """``member``'s direct barrier came: its parked one is on its way."""
        if member in self._until:
            self._until[member] = max(self._until[member], now + READ_WITHIN)

    def read(self, member: str) -> None:
        self._until.pop(member, None)

    def left(self, now: float) -> float | None:
        """Seconds until the next member is due (0: one is); None once none is waited for."""
        return max(min(self._until.values()) - now, 0.0) if self._until else None

    def give_up(self, now: float, grace: float = 0.0) -> None:
        """Those due ``grace`` seconds ago: given up. While frames keep coming, a due
        member's barrier may be among them, so it is given up only once none came for a
        moment, or after ``grace`` more."""
        late = sorted(member for member, until in self._until.items() if until + grace <= now)
        if late:
            log.warning("no barrier behind their parked frames from %s: what is held for "
                        "the sessions taken goes without", ", ".join(late))  # fmt: skip
            for member in late:
                del self._until[member]
