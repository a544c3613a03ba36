"""Shared subscriptions whose member session just moved between cluster members: the member it
left is not chosen for the group's copy while the one it joined can be.

A routing member picks one member per shared subscription for each message, in turn among
those its route table lists (``ClusterRouter``, MQTT 5.0 §4.8.2). While a session moves from
member A to member B, the table lists both for its groups: B from the moment it read the
session, A until it saw B's filters visible and its own entries' deletion came through. A
copy given to A is sent on to B (``broker.cluster.handover``) one hop behind a later copy
given to B directly; B holds both and gives them in order only until every member's barrier
came. So each routing member stops choosing A as soon as it is told of the move (the notice
that asks for its barrier, which names the groups): every copy it routes after its barrier
goes to B directly, behind the barrier, in the order it was published (§4.6).

Pure data, no I/O. At most ``MOVES_KEPT`` groups are remembered, each for ``window`` seconds
(the time A keeps sending on, after which it lists nothing for the session anyway). A move
away from a member that is gone lasts until the table no longer lists that member for the
group (at most ``GONE_KEPT`` seconds): its entries stay until whoever took its sessions is
done reading what was parked for it, and a copy parked for it after that reaches nobody.
"""

from collections.abc import Iterable
from typing import Final

from broker.cluster.frames import Group

__all__ = ["MOVES_KEPT", "MovedGroups"]

MOVES_KEPT: Final = 10_000  # groups whose moves are remembered (past that, the oldest go)
# Seconds a move away from a gone member is remembered at most: as long as a reader of its
# parked frames holds them from being purged (``broker.cluster.parked``).
GONE_KEPT: Final = 600.0


class _Move:
    __slots__ = ("gone", "new", "until", "visible")

    def __init__(self, new: str, visible: int, until: float, gone: bool) -> None:
        self.new = new
        self.visible = visible  # the route table revision that shows the new member's filters
        self.until = until  # on the loop's clock
        self.gone = gone  # the member left is gone: kept while the table lists it


class MovedGroups:
    def __init__(self, window: float) -> None:
        self.window = window
        # group -> the member a session of it left -> where it went
        self._moves: dict[Group, dict[str, _Move]] = {}

    def __len__(self) -> int:
        return len(self._moves)

    def moved(
        self,
        groups: Iterable[Group],
        old: str,
        new: str,
        visible: int,
        now: float,
        gone: bool = False,
    ) -> None:
        """A session in ``groups`` moved from ``old`` to ``new`` (its filters visible from
        route table revision ``visible``; ``gone``: ``old`` is). It supersedes a move away
        from ``new`` told before; a notice later than one of a newer move (a larger
        ``visible``) is stale."""
        gone = gone and old != new  # not a restarted member taking its own sessions back
        until = now + (GONE_KEPT if gone else self.window)
        for group in groups:
            moves = self._moves.pop(group, None) or {}  # re-inserted: newest last
            newer = [m for m in (moves.get(new), moves.get(old)) if m and m.visible > visible]
            if not newer:
                moves.pop(new, None)
                moves[old] = _Move(new, visible, until, gone)
            self._moves[group] = moves
        while len(self._moves) > MOVES_KEPT:
            del self._moves[next(iter(self._moves))]

    def candidates(self, group: Group, members: list[str], now: float) -> list[str]:
        """Of the members a route table lists for ``group``, those that may get its copy:
        not one a session of it left while the member it joined is listed (all of them if
        none would be left)."""
        moves = self._moves.get(group)
        if moves is None:
            return members
        listed = set(members)
        for old, move in list(moves.items()):
            if move.until <= now or (move.gone and old not in listed):
                del moves[old]
        if not moves:
            del self._moves[group]
            return members
        left = [m for m in members if not (m in moves and moves[m].new in listed)]
        return left or members
