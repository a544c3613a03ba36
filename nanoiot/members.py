"""What a cluster member says about itself, as the members bucket holds it, and the protocol
the admin surfaces read the cluster through.

Pure: no NATS, no I/O, and nothing from ``broker/`` (the admin reads these records and must
not import the broker). ``broker.cluster.members`` writes and watches the entries; the admin
sees them through ``ClusterView``.

An entry is JSON: the member's name, host, process id, start time (seconds since the epoch,
for display: each host has its own clock, so liveness never compares it), its heartbeat
interval, its figures at the last heartbeat, its run: 0 at start-up, one more each time it
fenced itself off the cluster (``broker.cluster.fence``), so that the others take the run
that ended there as gone; and whether it is fenced off now: it takes no forwarded messages
then, and the others keep parking them for it until an entry says it is back
(``broker.cluster.absences``).
"""

import json
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

from nanoiot.errors import ClusterError

__all__ = ["ClusterView", "Figures", "Member", "decode_member", "encode_member", "totals"]


@dataclass(frozen=True, slots=True)
class Figures:
    """A member's counts: live now (clients, subscriptions) or since it started (the rest)."""

    clients: int = 0
    subscriptions: int = 0
    messages_received: int = 0
    messages_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    # Messages crossing between members: sent to others (one per member with interest),
    # and taken from others' frames.
    messages_forwarded: int = 0
    messages_from_members: int = 0


@dataclass(frozen=True, slots=True)
class Member:
    name: str  # unique in the cluster: the node name, plus -w<n> for a worker
    host: str
    pid: int
    started: float  # seconds since the epoch, on the member's clock
    interval: float  # seconds between its heartbeats
    figures: Figures
    mqtt_port: int = 0
    run: int = 0  # fencings of this process so far: each one ends a run
    fenced: bool = False  # fenced off now: it refuses frames and connections


def encode_member(member: Member) -> bytes:
    return json.dumps(asdict(member), separators=(",", ":")).encode()


def decode_member(data: bytes) -> Member:
    """The entry's member; ``ClusterError`` if it is not one (another version's, or damaged)."""
    try:
        raw = json.loads(data)
        figures = Figures(**{f.name: int(raw["figures"].get(f.name, 0)) for f in fields(Figures)})
        return Member(
            name=str(raw["name"]), host=str(raw["host"]), pid=int(raw["pid"]),
            started=float(raw["started"]), interval=float(raw["interval"]), figures=figures,
            mqtt_port=int(raw.get("mqtt_port", 0)), run=int(raw.get("run", 0)),
            fenced=_flag(raw.get("fenced", False), "fenced"),
        )  # fmt: skip
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ClusterError(f"a member entry that is not one: {exc}") from None


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):  # bool("false") would be True
        raise ValueError(f"{name} is {value!r}, not true or false")
    return value


def totals(members: Collection[Member]) -> Figures:
    """The members' figures summed: the cluster's."""
    summed: dict[str, Any] = {f.name: 0 for f in fields(Figures)}
    for member in members:
        for name in summed:
            summed[name] += getattr(member.figures, name)
    return Figures(**summed)


class ClusterView(Protocol):
    """The cluster as the admin surfaces see it (implemented beside ``broker.cluster``)."""

    @property
    def cluster(self) -> str: ...

    @property
    def member(self) -> str:
        """The name of the member the admin runs beside (a node, or a workers' supervisor)."""

    def members(self) -> list[Member]:
        """The live members, by name, each saying whether it is fenced off (``fenced``)."""

    async def connections(self, device_ids: Collection[str]) -> Mapping[str, list[tuple[str, str]]]:
        """Of ``device_ids``, those with live connections: device id -> (member, client id)
        of each, from the members that answered in time."""
