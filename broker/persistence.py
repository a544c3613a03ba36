"""Persistent sessions (MQTT 3.1.1 §3.1.2.4) that survive a broker restart, even SIGKILL.

amqtt keeps sessions in memory only, and its persistence plugin re-delivers every queued
message after each restart, never persists an unsubscribe and breaks binary payloads
(facts.md §2). Instead the broker writes through to the store at the moments a session
changes, and reads everything back at start-up:

- CONNECT with CleanSession 0 saves the session, with CleanSession 1 deletes it (§3.1.2.4);
- SUBSCRIBE / UNSUBSCRIBE of a persistent session save or delete the subscription;
- a QoS 1 or 2 message for a persistent session whose client is away is queued in the store,
  and the publisher's PUBACK waits for that commit (``pending_commit``): once acknowledged,
  a SIGKILL cannot lose it (§4.3.2, the server owns it);
- on reconnection the queue is sent, each message deleted when its PUBACK arrives; messages
  sent once before carry DUP (§3.3.1.1), the rest are sent as first attempts.

``Journal`` batches these writes: whatever arrives while a transaction commits goes into the
next one (group commit), so many publishers share one commit. When the database is
unreachable the broker keeps working from memory (PUBACK no longer waits) and the journal
retries until the database is back; what changed meanwhile is written then.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from amqtt.broker import RetainedApplicationMessage
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.session import OutgoingApplicationMessage, Session

from auth.acl import to_canonical, to_device_form
from auth.topics import topic_matches
from broker.peer import Peer, peer_of
from nanoiot.errors import StoreError, StoreUnavailableError
from storage.sessions import (
    Acknowledge,
    DropSession,
    Enqueue,
    MarkAttempted,
    SaveSession,
    SessionWrite,
    StoredSession,
    Subscribe,
    Unsubscribe,
)
from storage.sql import SqlCredentialStore

log = logging.getLogger(__name__)

_REFUSED = 0x80  # SUBACK failure return code, §3.9.3
_ME_FILTERS = "nanoiot.me_filters"  # session attribute: canonical filters made in `me` form
_DEVICE_NAME = "nanoiot.device_name"
_HELD_PUBACKS = "nanoiot.held_pubacks"
_RETRY_FIRST, _RETRY_MAX = 0.2, 5.0  # seconds between attempts while the database is away


class QueuedMessage(RetainedApplicationMessage):  # type: ignore[misc]  # amqtt is untyped
    """A message kept for a persistent session, with its row in the store once committed."""

    def __init__(self, source: Session | None, topic: str, data: bytes, qos: int) -> None:
        super().__init__(source, topic, data, qos)
        self.stored_id: int | None = None
        self.attempted = False  # sent at least once: a re-delivery carries DUP
        self.acknowledged = False


# What the journal holds: a store write, or a change to a queued message whose row id may
# only be known once an earlier transaction has committed.
_Entry = SessionWrite | tuple[str, QueuedMessage, str]
_QUEUE, _ACK, _ATTEMPT = "queue", "ack", "attempt"


class Journal:
    """Group commit of session writes; one transaction at a time, in submission order."""

    def __init__(self, store: SqlCredentialStore) -> None:
        self._store = store
        self._queued: list[_Entry] = []
        self._next: asyncio.Future[None] | None = None  # done when _queued is committed
        self._inflight: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self.degraded = False  # the database is unreachable: PUBACK does not wait for it
        self.commits = 0
        self._task = asyncio.create_task(self._run(), name="session journal")

    def submit(self, entry: _Entry) -> None:
        self._queued.append(entry)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        self._wake.set()

    def pending_commit(self) -> "asyncio.Future[None] | None":
        """The commit that will cover every write submitted so far; None if none is due."""
        if self.degraded:
            return None
        return self._next or self._inflight

    async def flush(self) -> None:
        """Wait until every write submitted so far was committed (or failed for now)."""
        pending = self._next or self._inflight
        if pending is not None:
            await asyncio.shield(pending)

    async def close(self, within: float) -> None:
        """Commit what is queued (for at most ``within`` seconds), then stop."""
        self._closing.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), within)
        except TimeoutError:
            self._task.cancel()
            log.error("%d session changes could not be saved before shutdown", len(self._queued))
        await asyncio.gather(self._task, return_exceptions=True)
        _resolve(self._next)  # nobody waits for a commit that will not come
        _resolve(self._inflight)

    async def _run(self) -> None:
        delay = _RETRY_FIRST
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queued:
                if self._closing.is_set():
                    return
                continue
            entries, self._queued = self._queued, []
            self._inflight, self._next = self._next, None
            committed = await self._commit(entries)
            _resolve(self._inflight)
            self._inflight = None
            if committed:
                delay = _RETRY_FIRST
                continue
            self._queued[:0] = entries  # first in line when the database is back
            if self._next is None:
                self._next = asyncio.get_running_loop().create_future()
            if self._closing.is_set():  # this was the attempt at shutdown
                log.error("database unreachable at shutdown: %d session changes lost",
                          len(self._queued))  # fmt: skip
                return
            await _sleep_unless(self._closing, delay)  # shutdown cuts it short: one more try
            delay = min(delay * 2, _RETRY_MAX)
            self._wake.set()

    async def _commit(self, entries: list[_Entry]) -> bool:
        writes, queued = _writes(entries)
        try:
            ids = await self._store.write_sessions(writes)
        except StoreUnavailableError as exc:
            if not self.degraded:
                log.warning("session changes kept in memory until the database is back: %s", exc)
            self.degraded = True
            return False
        except StoreError as exc:  # a session deleted meanwhile: apply what still applies
            log.info("session changes failed together (%s): applying them one by one", exc)
            return await self._commit_one_by_one(entries)
        for message, stored_id in zip(queued, ids, strict=True):
            message.stored_id = stored_id
        if self.degraded:
            log.warning("database back: session changes saved again")
        self.degraded = False
        self.commits += 1
        return True

    async def _commit_one_by_one(self, entries: list[_Entry]) -> bool:
        for entry in entries:
            writes, queued = _writes([entry])
            try:
                ids = await self._store.write_sessions(writes)
            except StoreUnavailableError:
                return False  # the rest is retried with the others
            except StoreError as exc:
                log.warning("session change dropped: %s", exc)
                continue
            for message, stored_id in zip(queued, ids, strict=True):
                message.stored_id = stored_id
        return True


def _writes(entries: Sequence[_Entry]) -> tuple[list[SessionWrite], list[QueuedMessage]]:
    """Store writes for ``entries``, and the messages whose ids the Enqueue writes return."""
    writes: list[SessionWrite] = []
    queued: list[QueuedMessage] = []
    acks: list[int] = []
    attempts: list[int] = []
    for entry in entries:
        if not isinstance(entry, tuple):
            writes.append(entry)
            continue
        kind, message, key = entry
        if kind == _QUEUE and not message.acknowledged and message.stored_id is None:
            writes.append(Enqueue(key, message.topic, bytes(message.data), message.qos))
            queued.append(message)
        elif kind == _ACK and message.stored_id is not None:
            acks.append(message.stored_id)
        elif kind == _ATTEMPT and message.stored_id is not None:
            attempts.append(message.stored_id)
    if attempts:
        writes.append(MarkAttempted(tuple(attempts)))
    if acks:
        writes.append(Acknowledge(tuple(acks)))
    return writes, queued


def _resolve(future: "asyncio.Future[None] | None") -> None:
    if future is not None and not future.done():
        future.set_result(None)


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


class PersistenceMixin:
    """Mixed into ``NanoIoTBroker`` before ``RoutingMixin``; inert while ``journal`` is None."""

    journal: Journal | None = None
    _persisted: set[str]  # keys of the sessions in the store (set by restore_sessions)
    _sessions: dict[str, tuple[Session, Any]]
    _subscriptions: dict[str, list[tuple[Session, int]]]

    # --- start-up -------------------------------------------------------------------------

    def restore_sessions(self, journal: Journal, stored: Sequence[StoredSession]) -> None:
        """Recreate the persistent sessions read from the store, their clients away, and
        write every later change through ``journal``."""
        self.journal = journal
        self._persisted = {record.key for record in stored}
        for record in stored:
            session = Session()
            session.client_id = record.key
            session.clean_session = False
            session.attributes[_DEVICE_NAME] = record.device_name
            session.attributes[_ME_FILTERS] = {
                sub.topic_filter for sub in record.subscriptions if sub.me_form
            }
            for sub in record.subscriptions:
                self._subscriptions.setdefault(sub.topic_filter, []).append((session, sub.qos))
            for row in record.queued:
                message = QueuedMessage(None, row.topic, row.payload, row.qos)
                message.stored_id, message.attempted = row.id, row.attempted
                session.retained_messages.put_nowait(message)
            self._sessions[record.key] = (session, None)
        if stored:
            queued = sum(len(record.queued) for record in stored)
            log.info("restored %d persistent sessions, %d queued messages", len(stored), queued)

    # --- what changes a session -----------------------------------------------------------

    def session_opened(self, key: str, session: Session, peer: Peer, clean: bool) -> None:
        """After authentication, for the session this CONNECT uses (§3.1.2.4)."""
        # The `me` filters belong to the session, not the connection: a resumed session
        # keeps delivering in the form its client subscribed in.
        peer.me_filters = session.attributes.setdefault(_ME_FILTERS, set())
        session.attributes[_DEVICE_NAME] = peer.identity.device_name
        if self.journal is None:
            return
        if clean:
            if key in self._persisted:
                self._persisted.discard(key)
                self.journal.submit(DropSession(key))
        else:
            self._persisted.add(key)
            device_id = uuid.UUID(peer.identity.device_id)
            self.journal.submit(
                SaveSession(key, device_id, peer.identity.device_name, peer.client_id)
            )

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        granted: int = await super().add_subscription(subscription, session)  # type: ignore[misc]
        peer = peer_of(session)
        if self.journal is not None and granted != _REFUSED and _persistent(session, peer):
            assert peer is not None
            canonical = _canonical(peer, subscription[0])
            me_form = canonical != subscription[0]
            self.journal.submit(Subscribe(session.client_id, canonical, subscription[1], me_form))
        return granted

    async def _handle_unsubscription(
        self, client_session: Session, handler: Any, unsubscribe_waiter: "asyncio.Future[Any]"
    ) -> None:
        await super()._handle_unsubscription(client_session, handler, unsubscribe_waiter)  # type: ignore[misc]
        peer = peer_of(client_session)
        if self.journal is not None and _persistent(client_session, peer):
            assert peer is not None
            for topic_filter in unsubscribe_waiter.result().topics:
                canonical = _canonical(peer, topic_filter)
                self.journal.submit(Unsubscribe(client_session.client_id, canonical))

    def queue_offline(self, target: Session, message: RetainedApplicationMessage) -> None:
        """A QoS 1 or 2 message for a persistent session whose client is away."""
        topic = _restored_form(target, message.topic)
        queued = QueuedMessage(message.source_session, topic, message.data, message.qos)
        target.retained_messages.put_nowait(queued)
        if self.journal is not None:
            self.journal.submit((_QUEUE, queued, target.client_id))

    def defer_puback(self, session: Session, packet_id: int, writer: Any) -> bool:
        """Hold this PUBACK until the writes routing just made are committed (§4.3.2: the
        server owns the message once it acknowledges it); True if held.

        Held PUBACKs of a session go out in the order of their PUBLISHes (§4.6), so a later
        one that needs no commit waits behind an earlier one that does.
        """
        held: list[tuple[int, Any, asyncio.Future[None] | None]] | None
        held = session.attributes.get(_HELD_PUBACKS)
        pending = self.journal.pending_commit() if self.journal is not None else None
        if pending is None and not held:
            return False
        if held is None:
            held = session.attributes[_HELD_PUBACKS] = []
        held.append((packet_id, writer, pending))
        if pending is not None:
            pending.add_done_callback(lambda _done: _release_pubacks(held))
        return True

    # --- delivering the queue on reconnection ---------------------------------------------

    async def _publish_session_retained_messages(self, session: Session) -> None:
        handler = self._sessions.get(session.client_id, (None, None))[1]
        queued = _drain(session)
        if handler is None or not queued:
            return
        if self.journal is not None:
            # Durable before sending: after a crash, a message sent once comes back with DUP.
            await self.journal.flush()
            for message in queued:
                if isinstance(message, QueuedMessage) and not message.attempted:
                    self.journal.submit((_ATTEMPT, message, session.client_id))
            await self.journal.flush()
        results = await asyncio.gather(
            *(self._send_queued(handler, session, message) for message in queued),
            return_exceptions=True,
        )
        unsent = [
            message for message, sent in zip(queued, results, strict=True) if sent is not True
        ]
        if unsent:
            # Kept, in order, for the next connection (§4.4: re-sent on reconnection).
            for message in [*unsent, *_drain(session)]:
                session.retained_messages.put_nowait(message)

    async def _send_queued(self, handler: Any, session: Session, message: Any) -> bool:
        outgoing = OutgoingApplicationMessage(
            session.next_packet_id if message.qos in (QOS_1, QOS_2) else None,
            message.topic, message.qos, message.data, False,
        )  # fmt: skip  # retain 0: delivered because of a subscription (§3.3.1.3)
        if isinstance(message, QueuedMessage):
            if message.attempted:
                # amqtt's flow sets DUP when the message already has a PUBLISH packet.
                outgoing.publish_packet = outgoing.build_publish_packet()
            message.attempted = True
        await handler._handle_message_flow(outgoing)
        if isinstance(message, QueuedMessage):
            message.acknowledged = True
            if self.journal is not None:
                self.journal.submit((_ACK, message, session.client_id))
        return True


def _release_pubacks(held: list[tuple[int, Any, "asyncio.Future[None] | None"]]) -> None:
    """Send the held PUBACKs whose commit is done, in order, up to the first still waiting."""
    while held and (held[0][2] is None or held[0][2].done()):
        packet_id, writer, _ = held.pop(0)
        # A closed connection's writer drops it (broker.tls_stream).
        writer.write(b"\x40\x02" + packet_id.to_bytes(2, "big"))  # PUBACK, §3.4


def _persistent(session: Session, peer: Peer | None) -> bool:
    return peer is not None and not session.clean_session


def _canonical(peer: Peer, topic_filter: str) -> str:
    if peer.identity.application:
        return topic_filter
    return to_canonical(topic_filter, peer.identity.device_name)


def _restored_form(target: Session, topic: str) -> str:
    """Routing turns topics into the `me` form through the live peer; a session restored
    from the store has none until its client is back, so its stored filters decide."""
    if peer_of(target) is not None:
        return topic
    name = target.attributes.get(_DEVICE_NAME)
    me_filters = target.attributes.get(_ME_FILTERS) or ()
    if name and any(topic_matches(topic, topic_filter) for topic_filter in me_filters):
        return to_device_form(topic, name)
    return topic


def _drain(session: Session) -> list[Any]:
    messages = []
    while not session.retained_messages.empty():
        messages.append(session.retained_messages.get_nowait())
    return messages
