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

1. A message of a persistent session forwarded to other members leaves a record with its
   packet id (``Unrouted``, in ``BrokerSession.unrouted``): its cluster-wide message id, and
   the member each shared subscription's copy was sent to. It is kept while their
   confirmations are awaited and after they failed, at most one per packet id awaiting PUBREL
   (``max_awaiting_pubrel``); it goes with the PUBREL, or once the routing, or a routing of
   a copy sent again, is confirmed everywhere. The store keeps it in the packet id's row,
   written in the same transaction as the id (``broker.journal``: submitted before the
   routing, written as the routing filled it in) and cleared at the confirmation, so that
   the member that restores the session after a restart, or adopts or takes it over after
   its member's death, reads it with the id. The member a session is handed over to gets
   its records with its packet ids (``handed_over``; the store has them too): the client
   may send again to any member.
2. The PUBLISH sent again (§4.3.3: PUBREC, and not a new message) is routed again with the
   recorded id, with the route table as it is now: plain copies to every member with a
   matching filter, each shared subscription's copy to the member that had it (another one
   only if that one left the group). Its PUBREC waits for their confirmations again. A copy
   sent again while the first routing is still pending (its connection closed, the client
   connected again at once) is not routed a second time: its PUBREC waits for that routing's
   outcome, and if that fails, its connection closes unacknowledged too, so the client sends
   it again, which then routes it again.
3. Each member remembers the QoS 2 message ids it delivered and when (``DeliveredIds``; at
   most ``cluster_qos2_ids_kept``, the oldest forgotten first). A message id it delivered
   before goes only to the sessions that came to it since (a session that moved here, whose
   member refused the first copy), and not to shared subscriptions: every subscriber gets
   the message once (§4.3.3), whether the member took the first copy, answered late, or
   refused it. The publisher's own member counts its local delivery in the same way.
4. A persistent session may have moved since it got the first copy (taken over, adopted
   after its member died, restored after a restart): the member it is on now may not have
   delivered the id, yet the session's queue, read from the store, holds that copy. So a
   QoS 2 copy keeps its message's cluster-wide id (``Outgoing.message_id``, stored with the
   queue entry), a session read back from the store notes the ids it holds
   (``BrokerSession.brought``, at most its queue and in-flight window as read), and routing
   gives no copy of one of those to it (``broker.router``), also after it completed that
   copy here. A session that completed the first copy before it moved no longer holds it:
   the store keeps the ids of the last ``cluster_qos2_completed_kept`` QoS 2 messages each
   session completed, written in the transaction that deletes the message's queue row
   (``SessionStore.message_completed``), and a session read back notes those too. One
   completed longer ago than that reaches it again.
"""

import asyncio
import collections
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from broker.cluster.confirmations import all_of
from broker.cluster.frames import Group
from broker.router import Message
from broker.sessions import Unrouted

if TYPE_CHECKING:
    from broker.cluster.router import ClusterRouter
    from broker.session_store import SessionStore
    from broker.sessions import BrokerSession

__all__ = [
    "DeliveredIds", "Unrouted", "groups_again", "handed_over", "read_handed_over",
    "remember_unless_routed", "route_again", "route_first", "taken_over",
]  # fmt: skip


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


def route_first(
    router: "ClusterRouter", message: Message, session: "BrokerSession", packet_id: int
) -> "bool | asyncio.Future[None]":
    """Step 1: a persistent session's QoS 2 ``message``, routed, its ``packet_id`` kept
    until PUBREL with the record (in the store as in memory) while other members'
    confirmations are awaited."""
    record = Unrouted(0)
    router.store.pubrel_awaited(session, packet_id, record)  # as routing fills it in
    routed = router.publish(message, record)
    if isinstance(routed, asyncio.Future):
        remember_unless_routed(session, packet_id, record, routed, router.store)
    else:
        record.message_id = 0  # routed here alone: nothing to route again
    return routed


def remember_unless_routed(
    session: "BrokerSession",
    packet_id: int,
    record: Unrouted,
    routed: "asyncio.Future[None]",
    store: "SessionStore",
) -> None:
    """Keep ``record`` with the session's QoS 2 ``packet_id`` while ``routed`` is pending
    and after it failed (step 1), and let it go once a routing of it succeeds (the store
    has it from the start: ``route_first``)."""
    kept = session.unrouted
    if kept is None:
        kept = session.unrouted = {}
    kept[packet_id] = record
    record.pending = routed

    def settled(done: "asyncio.Future[None]") -> None:
        if record.pending is done:
            record.pending = None
        if done.cancelled() or done.exception() is not None:
            return  # kept: routed again when sent again
        if session.unrouted is None or session.unrouted.get(packet_id) is not record:
            return  # released meanwhile, or the id's record replaced
        del session.unrouted[packet_id]
        if packet_id in session.awaiting_pubrel:  # still this session's (not handed over)
            store.unrouted(session, packet_id, None)

    routed.add_done_callback(settled)


def route_again(
    router: "ClusterRouter", message: Message, session: "BrokerSession", packet_id: int
) -> "bool | asyncio.Future[None] | None":
    """Step 2: ``message`` (as sent again) routed again as the one ``session`` has not
    routed for sure under ``packet_id``; None if that one was not kept. While the first
    routing is pending, no second: the PUBREC waits for its outcome (and the connection
    closes unacknowledged if it fails, as the first copy's did)."""
    kept = session.unrouted
    record = kept.get(packet_id) if kept is not None else None
    if kept is None or record is None:
        return None
    if record.pending is not None:
        return record.pending
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
        router.store.unrouted(session, packet_id, None)
        return durable
    remember_unless_routed(session, packet_id, record, routed, router.store)
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


def handed_over(
    awaiting: list[int],
    unrouted: dict[int, Unrouted] | None,
    parked: tuple[str, str] | None = None,
) -> bytes:
    """A take-over's answer (``broker.cluster.sessions``) for a session given up: the
    packet ids of its client's QoS 2 messages awaiting PUBREL, and the records of those whose
    routing failed or is still pending (the store has them too, from members of this
    version); and the gone member whose parked frames it was not given yet, with the pin
    on them (``Owed.handing_over``)."""
    records = {str(packet_id): record.as_list() for packet_id, record in (unrouted or {}).items()}
    answer: dict[str, object] = {"awaiting_pubrel": awaiting, "unrouted": records}
    if parked is not None:
        answer["parked"] = list(parked)
    return json.dumps(answer).encode()


def read_handed_over(
    answer: bytes,
) -> tuple[set[int], dict[int, Unrouted], tuple[str, str] | None]:
    """The packet ids, records and parked frames to read in a take-over answer (none from a
    member that sent only "1", or garbled ones)."""
    try:
        found = json.loads(answer)
        ids = {int(i) for i in found.get("awaiting_pubrel", []) if 0 < int(i) < 65536}
    except (ValueError, TypeError, AttributeError):
        return set(), {}, None
    parked = found.get("parked")
    taken = None
    if isinstance(parked, list) and len(parked) == 2 and all(isinstance(p, str) for p in parked):
        taken = (parked[0], parked[1])
    unrouted: dict[int, Unrouted] = {}
    try:
        for packet_id, record in dict(found.get("unrouted", {})).items():
            if int(packet_id) in ids:
                unrouted[int(packet_id)] = Unrouted.from_list(record)
    except (ValueError, TypeError):
        return ids, {}, taken
    return ids, unrouted, taken


def taken_over(
    session: "BrokerSession", unrouted: dict[int, Unrouted], store: "SessionStore"
) -> None:
    """The records a take-over answer named (``read_handed_over``) join those read with
    the session from the store; one it did not have (from a member of an earlier version,
    which kept them in memory only) is stored now."""
    kept = session.unrouted
    if kept is None:
        kept = session.unrouted = {}
    for packet_id, record in unrouted.items():
        if packet_id not in kept:
            kept[packet_id] = record
            store.unrouted(session, packet_id, record)
