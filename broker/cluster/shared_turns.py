"""Which member gets a shared subscription's copy of a message routed across the cluster: one
member per group cluster-wide (MQTT 5.0 §4.8.2), in turn among those the route table lists.

A group with members on the routing member itself was served there already (``LocalRouter``);
each other one takes turns among the members listed for it, except one a session of the group
just left (``broker.cluster.moves``) and, while another is listed, one found gone: its frames
are parked, and a copy parked for it could wait for a session already taken elsewhere
(§4.8.2 lets a copy go to any member of the group).

Pure data, no I/O: ``ClusterRouter`` passes in what its route table, its own subscribers, its
hand-overs and its forwarder know.
"""

from collections.abc import Collection
from typing import Final

from broker.cluster.frames import Group
from broker.cluster.moves import MovedGroups

__all__ = ["TURNS_KEPT", "SharedTurns"]

TURNS_KEPT: Final = 10_000  # shared subscriptions whose turn is remembered (then it starts over)


class SharedTurns:
    """Whose turn it is among the members of each shared subscription."""

    __slots__ = ("_turns",)

    def __init__(self) -> None:
        self._turns: dict[Group, int] = {}  # shared subscription -> whose turn among members

    def choose(
        self,
        remote: dict[Group, list[str]],
        here: Collection[Group],
        moved: MovedGroups | None,
        now: float,
        gone: Collection[str],
    ) -> dict[str, list[Group]]:
        """member -> the shared subscriptions it gets a message for. ``remote``: the groups
        matching its topic, each with the members listed for it; ``here``: those served on
        this member; ``moved``: recent moves of their sessions (``now`` on the loop's clock);
        ``gone``: members whose frames are parked."""
        chosen: dict[str, list[Group]] = {}
        turns = self._turns
        if len(turns) > TURNS_KEPT:
            turns.clear()
        for group, members in remote.items():
            if group in here:
                continue
            if moved:  # a member session just left: not the way through the member it left
                members = moved.candidates(group, members, now)
            if gone:  # parked, a copy could wait for a session already taken elsewhere
                members = [m for m in members if m not in gone] or members
            turn = turns.get(group, 0)
            turns[group] = turn + 1
            members.sort()
            chosen.setdefault(members[turn % len(members)], []).append(group)
        return chosen
