"""What the session journal (``broker.journal``) is given, and the store writes it makes of it.

The broker hands the journal entries as things happen: a store write as it is, a message's
change (``Ref`` with ``QUEUE``, ``SENT``, ``RELEASE`` or ``DONE``), a QoS 2 packet id kept
with what routing its message again needs (``Unconfirmed``), a QoS 2 message its session's
client completed whose cluster-wide id is kept (``Completed``). ``writes_for`` turns the
entries of one transaction into the store's writes (``storage.session_data``), each
message's from its state when the transaction starts. Pure: no I/O, no event loop.
"""

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from broker.mqtt.properties import encode_properties
from broker.mqtt.session import RELEASED, Outgoing
from storage.session_data import (
    Acknowledge,
    AwaitPubrel,
    DropSession,
    Enqueue,
    KeepCompleted,
    MarkReleased,
    MarkSent,
    MarkUnrouted,
    PubrelReceived,
    SessionWrite,
)

if TYPE_CHECKING:
    from broker.sessions import Unrouted

QUEUE, SENT, RELEASE, DONE = "queue", "sent", "release", "done"


class Ref:
    """A message of a persistent session and its row in the store (once committed)."""

    __slots__ = ("done", "key", "message", "received_at", "released", "row")

    def __init__(
        self, key: str, message: Outgoing, row: int | None = None,
        received_at: datetime | None = None,
    ) -> None:  # fmt: skip
        self.key = key
        self.message = message
        self.row = row
        self.received_at = received_at  # its Message Expiry Interval counts from then
        self.done = False  # acknowledged or dropped: its row goes, or is never written
        # The commit of its release (PUBREC came), which every PUBREL for it waits for.
        self.released: asyncio.Future[None] | None = None


class Unconfirmed:
    """A QoS 2 packet id kept until PUBREL (``AwaitPubrel``) whose message's routing is
    made after it is submitted (in the same turn) and waits for other members: ``record``
    is what routing it again needs, filled in by that routing."""

    __slots__ = ("key", "packet_id", "record")

    def __init__(self, key: str, packet_id: int, record: "Unrouted") -> None:
        self.key = key
        self.packet_id = packet_id
        self.record = record


class Completed:
    """A persistent session's stored QoS 2 message its client completed (PUBCOMP), which
    has a cluster-wide id: its row goes, and in the same transaction the id is kept as the
    session's ``seq``-th completion, in ``slot`` of the last ones it keeps (MQTT 3.1.1 /
    5.0 §4.3.3: a copy routed again after the session moved does not reach it twice,
    ``broker.cluster.resend``)."""

    __slots__ = ("ref", "seq", "slot")

    def __init__(self, ref: Ref, slot: int, seq: int) -> None:
        self.ref = ref
        self.slot = slot
        self.seq = seq


Entry = SessionWrite | tuple[str, Ref] | Unconfirmed | Completed
Awaiting = dict[str, dict[int, bool]]  # session key -> QoS 2 packet id -> kept at the end
Records = dict[tuple[str, int], str | None]  # (session key, packet id) -> ``MarkUnrouted``


def writes_for(entries: Sequence[Entry]) -> tuple[list[SessionWrite], list[Ref]]:
    """Store writes for ``entries``, and the messages whose row ids the Enqueue writes give."""
    writes: list[SessionWrite] = []
    queued: list[Ref] = []
    sent: list[tuple[int, int]] = []
    released: list[int] = []
    done: list[int] = []
    awaiting: Awaiting = {}
    records: Records = {}
    completed: list[tuple[str, int, int, int]] = []
    for entry in entries:
        if isinstance(entry, Completed):
            ref = entry.ref
            if ref.row is not None:  # else its Enqueue is never written (``ref.done``)
                done.append(ref.row)
            completed.append((ref.key, entry.slot, entry.seq, ref.message.message_id))
            continue
        if not isinstance(entry, tuple):
            if isinstance(entry, AwaitPubrel | PubrelReceived | MarkUnrouted | Unconfirmed):
                _note_awaiting(awaiting, records, entry)
                continue
            if isinstance(entry, DropSession):
                awaiting.pop(entry.key, None)  # gone with the session's rows
                for gone in [pair for pair in records if pair[0] == entry.key]:
                    del records[gone]
                completed = [kept for kept in completed if kept[0] != entry.key]
            writes.append(entry)
            continue
        kind, ref = entry
        message = ref.message
        if kind == QUEUE and not ref.done and ref.row is None:
            writes.append(
                Enqueue(
                    ref.key, message.topic, message.payload, message.qos, message.retain,
                    message.packet_id or None, message.sent, message.state == RELEASED,
                    encode_properties(message.properties) if message.properties else None,
                    ref.received_at, message.message_id or None,
                )
            )  # fmt: skip
            queued.append(ref)
        elif ref.row is None or (ref.done and kind != DONE):
            continue  # written as it is by its Enqueue, or never
        elif kind == SENT:
            sent.append((ref.row, message.packet_id))
        elif kind == RELEASE:
            released.append(ref.row)
        elif kind == DONE:
            done.append(ref.row)
    if sent:
        writes.append(MarkSent(tuple(sent)))
    if released:
        writes.append(MarkReleased(tuple(released)))
    if done:
        writes.append(Acknowledge(tuple(done)))
    if awaiting or records:
        writes.extend(_awaiting_writes(awaiting, records))
    if completed:  # last, as the ids: its session's row exists by then
        writes.append(KeepCompleted(tuple(completed)))
    return writes, queued


def _note_awaiting(
    awaiting: Awaiting,
    records: Records,
    write: AwaitPubrel | PubrelReceived | MarkUnrouted | Unconfirmed,
) -> None:
    """A kept id starts with nothing to route again, a freed one has nothing; the last
    ``MarkUnrouted`` of one still kept is what it keeps."""
    if isinstance(write, MarkUnrouted):
        for key, packet_id, record in write.records:
            records[key, packet_id] = record
        return
    if isinstance(write, Unconfirmed):
        awaiting.setdefault(write.key, {})[write.packet_id] = True
        records.pop((write.key, write.packet_id), None)
        if (stored := write.record.stored()) is not None:
            records[write.key, write.packet_id] = stored
        return
    kept = isinstance(write, AwaitPubrel)
    for key, packet_id in write.ids:
        awaiting.setdefault(key, {})[packet_id] = kept
        records.pop((key, packet_id), None)


def _awaiting_writes(awaiting: Awaiting, records: Records) -> list[SessionWrite]:
    """What the entries left of each id: free again (deleted), or kept (inserted; an id
    freed and used again within the entries stays kept), then what routing its message
    again needs. After every other write, so that the session's row exists by then; a
    session dropped within the entries had its ids forgotten there, ``writes_for``."""
    freed = [(k, i) for k, ids in awaiting.items() for i, kept in ids.items() if not kept]
    held = [(k, i) for k, ids in awaiting.items() for i, kept in ids.items() if kept]
    writes: list[SessionWrite] = []
    if freed:
        writes.append(PubrelReceived(tuple(freed)))
    if held:
        writes.append(AwaitPubrel(tuple(held)))
    if records:
        writes.append(MarkUnrouted(tuple((k, i, r) for (k, i), r in records.items())))
    return writes
