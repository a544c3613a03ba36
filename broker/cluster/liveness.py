"""How long a member's barrier is waited for (``broker.cluster.handover``,
``broker.cluster.replay``): a member that died gives none, a live one whose route table lags
gives it late, and its messages routed with the older table come before it.

Every barrier is waited for ``HOLD_WITHIN`` seconds from the asking. Past that, a member is
waited for while it is live, as its heartbeats say (``broker.cluster.members``): while no
heartbeat of its is overdue, that is, while this member saw its entry written within
``LATE_BEAT`` of its intervals; never past ``cluster_handover_window`` seconds from the
asking, after which the member the session left refuses what a member routes with a table
that old (its publisher sends it again). A member killed before the asking is given up once
its next heartbeat is overdue (half an interval after it was due); one killed later, once the
one after is; one gone (``MemberRegistry`` took it as gone) at once.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["LATE_BEAT", "Heard", "Hearing", "sort_out", "unheard", "waited_until"]

# A member's heartbeat is overdue this many of its intervals after the last one seen: the
# same margin by which a member takes itself as cut off from NATS (``MemberRegistry``),
# for a write's time and the timers' lateness.
LATE_BEAT: Final = 1.5


@dataclass(frozen=True, slots=True)
class Heard:
    """A live member's last heartbeat as this member saw it."""

    at: float  # this member's loop time when it saw the member's entry written
    interval: float  # the member's heartbeat interval (its entry says)


Hearing = Callable[[str], Heard | None]  # a member's last heartbeat seen, None if not live


def unheard(_member: str) -> Heard | None:
    """No heartbeats known (no member registry): every member as if not live."""
    return None


def waited_until(asked: float, heard: Heard | None, window: float) -> float | None:
    """Until when (loop time) a member's barrier asked for at ``asked`` is waited for past
    ``HOLD_WITHIN``, given its last heartbeat seen (``heard``); None if the member is not
    live. A later heartbeat gives a later time: the caller asks again then."""
    if heard is None:
        return None
    return min(asked + window, heard.at + LATE_BEAT * heard.interval)


def sort_out(
    members: Iterable[str], asked: float, now: float, heard: Hearing, window: float
) -> tuple[list[str], float | None]:
    """Of ``members``, whose barriers asked for at ``asked`` are missing at ``now`` (at
    least ``HOLD_WITHIN`` later): those given up (by name), and when to look again at the
    others (None: none is waited for any more)."""
    until = {member: waited_until(asked, heard(member), window) for member in members}
    late = sorted(member for member, t in until.items() if t is None or t <= now)
    waiting = [t for t in until.values() if t is not None and t > now]
    return late, min(waiting, default=None)
