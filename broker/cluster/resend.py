"""A persistent session's QoS 2 message whose routing another member did not confirm, sent
again by its client: routed again, and delivered once.

The publisher's PUBREC waits until every member the message was forwarded to confirmed it
(``broker.cluster.forward``). When one does not (no answer within ``CONFIRM_WITHIN``, a
refusal, a full forwarding buffer), the connection closes unacknowledged and the client sends
the PUBLISH again with DUP=1 and the same packet id (MQTT 3.1.1 §4.4, §4.3.3; 5.0 §4.4,
§4.3.3). The session holds that packet id as received by then (method B: routed on receipt,
kept until PUBREL), so the copy sent again is not routed as a new message: without more, the
members that did not take the first copy never get it, although the client then has its
PUBREC. So:

1. A message of a persistent session whose routing failed leaves a record with its packet
   id (``Unrouted``, in ``BrokerSession.unrouted``): its cluster-wide message id, and the
   member each shared subscription's copy was sent to. At most one per packet id awaiting
   PUBREL (``max_awaiting_pubrel``); it goes with the PUBREL, or once a copy sent again is
   confirmed everywhere. The member a session is handed over to gets its records with its
   packet ids (``handed_over``): the client may send again to any member. They are kept in
   memory only: a restart of the member that held the session, or its death, loses them
   (the copy sent again is then acknowledged unrouted, as before).
2. The PUBLISH sent again (§4.3.3: PUBREC, and not a new message) is routed again with the
   recorded id, with the route table as it is now: plain copies to every member with a
   matching filter, each shared subscription's copy to the member that had it (another one
   only if that one left the group). Its PUBREC waits for their confirmations again.
3. Each member remembers the QoS 2 message ids it delivered and when (``DeliveredIds``; at
   most ``cluster_qos2_ids_kept``, the oldest forgotten first). A message id it delivered
   before goes only to the sessions that came to it since (a session that moved here, whose
   member refused the first copy), and not to shared subscriptions: every subscriber gets
   the message once (§4.3.3), whether the member took the first copy, answered late, or
   refused it. The publisher's own member counts its local delivery in the same way.
"""

import asyncio
import collections
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.cluster.forward import all_of
from broker.cluster.frames import Group
from broker.router import Message

if TYPE_CHECKING:
    from broker.cluster.router import ClusterRouter
    from broker.sessions import BrokerSession

__all__ = [
    "DeliveredIds", "Unrouted", "groups_again", "handed_over", "read_handed_over",
    "remember_unless_routed", "route_again",
]  # fmt: skip


@dataclass(slots=True)
class Unrouted:
    """What a QoS 2 message whose routing failed needs to be routed again (step 1)."""

    message_id: int
    groups: dict[Group, str] = field(default_factory=dict)  # shared subscription -> member


class DeliveredIds:
    """The QoS 2 message ids this member delivered, each with when (step 3), the last
    ``most`` of them."""

    __slots__ = ("_at", "_order", "most")

    def __init__(self, most: int) -> None:
        self.most = most
        self._at: dict[int, float] = {}
        self._order: collections.deque[int] = collections.deque()

    def __len__(self) -> int:
        return len(self._at)

    def first(self, message_id: int, now: float) -> float | None:
        """None if ``message_id`` was not delivered here yet (it is counted from ``now``
        on), else when it was."""
        at = self._at.get(message_id)
        if at is not None:
            return at
        self._at[message_id] = now
        order = self._order
        order.append(message_id)
        if len(order) > self.most:
            self._at.pop(order.popleft(), None)
        return None


def remember_unless_routed(
    session: "BrokerSession",
    packet_id: int,
    record: Unrouted,
    routed: "asyncio.Future[None]",
) -> None:
    """Keep ``record`` with the session's QoS 2 ``packet_id`` if ``routed`` fails (step 1),
    and let it go once a routing of it succeeds."""

    def settled(done: "asyncio.Future[None]") -> None:
        kept = session.unrouted
        if done.cancelled() or done.exception() is not None:
            if packet_id not in session.awaiting_pubrel:
                return  # released meanwhile: nothing will be sent again
            if kept is None:
                kept = session.unrouted = {}
            kept[packet_id] = record
        elif kept is not None and kept.get(packet_id) is record:
            del kept[packet_id]

    routed.add_done_callback(settled)


def route_again(
    router: "ClusterRouter", message: Message, session: "BrokerSession", packet_id: int
) -> "bool | asyncio.Future[None] | None":
    """Step 2: ``message`` (as sent again) routed again as the one ``session`` could not
    route under ``packet_id``; None if that one was not kept."""
    kept = session.unrouted
    record = kept.get(packet_id) if kept is not None else None
    if kept is None or record is None:
        return None
    router.routed_again += 1
    message.id = record.message_id
    if router.announcer is not None:
        message.routed_at = router.announcer.revision
    local, table = router.local, router.table
    since = router.delivered.first(message.id, time.monotonic())
    durable = local.publish(message) if since is None else local.deliver_since(message, since)
    confirmations = list(local.waits)
    local.waits.clear()
    plain = table.members_for(message.topic)
    groups = groups_again(record.groups, table.groups_for(message.topic))
    if plain or groups:
        members = set(plain).union(groups)
        router.forwarded += len(members)
        confirmed = router.forwarder.forward(members, message, plain, groups)
        if confirmed is not None:
            confirmations.append(confirmed)
    committed = router.store.pending_commit() if durable else None
    if committed is not None:
        confirmations.append(committed)
    routed = all_of(confirmations)
    if routed is None:
        del kept[packet_id]
        return durable
    remember_unless_routed(session, packet_id, record, routed)
    return routed


def groups_again(
    chosen: Mapping[Group, str], members_now: Mapping[Group, list[str]]
) -> dict[str, list[Group]]:
    """member -> the shared subscriptions it gets a message routed again for: the member
    that had each one's copy if it is still in the group (it delivers it once), else
    another (MQTT 5.0 §4.8.2: one copy per group); none for a group that has no member
    on other members now."""
    again: dict[str, list[Group]] = {}
    for group, member in chosen.items():
        members = members_now.get(group)
        if not members:
            continue
        if member not in members:
            member = min(members)
        again.setdefault(member, []).append(group)
    return again


def handed_over(awaiting: list[int], unrouted: dict[int, Unrouted] | None) -> bytes:
    """A take-over's answer (``broker.cluster.sessions``) for a session given up: the
    packet ids of its client's QoS 2 messages awaiting PUBREL, and the records of those whose
    routing failed."""
    records = {
        str(packet_id): [record.message_id, [[*group, member] for group, member in
                                             record.groups.items()]]
        for packet_id, record in (unrouted or {}).items()
    }  # fmt: skip
    return json.dumps({"awaiting_pubrel": awaiting, "unrouted": records}).encode()


def read_handed_over(answer: bytes) -> tuple[set[int], dict[int, Unrouted]]:
    """The packet ids and records in a take-over answer (none from a member that sent only
    "1", or garbled ones)."""
    try:
        found = json.loads(answer)
        ids = {int(i) for i in found.get("awaiting_pubrel", []) if 0 < int(i) < 65536}
    except (ValueError, TypeError, AttributeError):
        return set(), {}
    unrouted: dict[int, Unrouted] = {}
    try:
        for packet_id, (message_id, groups) in dict(found.get("unrouted", {})).items():
            if int(packet_id) in ids:
                chosen = {(str(n), str(f)): str(m) for n, f, m in groups}
                unrouted[int(packet_id)] = Unrouted(int(message_id), chosen)
    except (ValueError, TypeError):
        return ids, {}
    return ids, unrouted
