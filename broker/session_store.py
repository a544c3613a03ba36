"""Where persistent sessions live between connections and across restarts: ``SessionStore``.

The interface is what the broker tells a store, at the moment it happens: a persistent
session opened or ended, a subscription made or removed, a message routed to it, sent,
PUBREC'd, or done with (acknowledged, or dropped by a limit), the packet id of a QoS 2
message its client published kept until PUBREL (§4.3.3), with what routing it again needs
while other members of a cluster have not confirmed it (``broker.cluster.resend``), and in
a cluster the ids of the last QoS 2 messages its client completed.
``pending_commit`` is what a publisher's PUBACK or PUBREC waits for (MQTT 3.1.1 §4.3.2: once
acknowledged, the message is the server's), also while the store cannot be written;
``status`` says whether it can, for ``/healthz`` and ``/metrics``. Small on purpose, so that
a cluster can implement it on PostgreSQL.

``MemorySessionStore`` keeps nothing (sessions last as long as the process);
``SqlSessionStore`` writes through ``broker.journal`` to the credential store's database and
reads it back after a restart, a page at a time (``broker.restore``, ``broker.stored_sessions``).
"""

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from broker.journal import Journal
from broker.journal_entries import DONE, QUEUE, RELEASE, SENT, Completed, Ref, Unconfirmed
from broker.mqtt.session import Outgoing, Subscription
from broker.peer import SessionKey, store_key
from broker.sessions import BrokerSession, Unrouted
from broker.stored_sessions import session_from
from storage.models import utcnow
from storage.session_data import (
    AwaitPubrel,
    DropSession,
    MarkUnrouted,
    PubrelReceived,
    SaveSession,
    SessionAway,
    Subscribe,
    Unsubscribe,
)
from storage.sql import SqlCredentialStore


@dataclass(frozen=True)
class StoreStatus:
    """Whether session changes can be saved: ``problem`` is empty when they can."""

    problem: str = ""
    unwritable_for: float = 0.0  # seconds since the first failed attempt
    unsaved: int = 0  # changes waiting to be saved
    failures: int = 0  # failed attempts since start

    @property
    def writable(self) -> bool:
        return not self.problem


class SessionStore(Protocol):
    @property
    def degraded(self) -> bool:
        """The store cannot be written: changes wait in memory, and so do the PUBACKs of
        the messages among them."""
        ...

    def status(self) -> StoreStatus: ...

    @property
    def unsaved(self) -> int:
        """Changes waiting to be saved (``max_unsaved_session_changes``)."""
        ...

    async def load_page(
        self, after: str | None, limit: int
    ) -> tuple[list[BrokerSession], str | None]:
        """Up to ``limit`` persistent sessions of the previous run whose store keys sort
        after ``after`` (from the first: None), with their subscriptions and their messages
        in order (sent ones in flight with their packet ids, §4.4); and where the next page
        starts, None after the last."""
        ...

    async def load_one(self, key: SessionKey) -> BrokerSession | None:
        """The stored session of ``key``, or None."""
        ...

    def save_session(self, session: BrokerSession) -> None: ...
    def session_away(self, session: BrokerSession) -> None:
        """Its client disconnected: the session ends ``session.expiry`` seconds from now."""
        ...

    def drop_session(self, session: BrokerSession) -> None: ...
    def subscribe(self, session: BrokerSession, topic_filter: str, sub: Subscription) -> None: ...
    def unsubscribe(self, session: BrokerSession, topic_filter: str) -> None: ...
    def message_queued(self, session: BrokerSession, message: Outgoing) -> None:
        """A persistent session's QoS 1/2 message: the store keeps it (``message.stored``)
        until ``message_done``. The three below change only such a message; for one whose
        ``stored`` is None they do nothing, and the hot path skips the call."""
        ...

    def message_sent(self, message: Outgoing) -> None: ...
    def message_released(self, message: Outgoing) -> None: ...
    def message_done(self, message: Outgoing) -> None: ...
    def message_completed(self, session: BrokerSession, message: Outgoing) -> None:
        """``message_done`` for a stored message the session's client acknowledged (PUBACK,
        PUBCOMP). One with a cluster-wide id (QoS 2 in a cluster) leaves it with the
        session, among the last ``cluster_qos2_completed_kept`` (in the same transaction as
        the message's row goes): a member the session moves to gives it no copy of that
        message routed again (§4.3.3, ``broker.cluster.resend``)."""
        ...

    def pubrel_awaited(
        self, session: BrokerSession, packet_id: int, unrouted: Unrouted | None = None
    ) -> None:
        """A persistent session's client published a QoS 2 message with ``packet_id``, now
        routed: the id is kept until ``pubrel_received`` (§4.3.3), so that the PUBLISH sent
        again after a restart, or to another member, is not routed again. Its PUBREC waits
        for ``pending_commit``. ``unrouted``: what routing it again needs, kept with the id
        as the routing that follows in this turn fills it in (``Unrouted.stored``)."""
        ...

    def unrouted(self, session: BrokerSession, packet_id: int, record: Unrouted | None) -> None:
        """What routing again the message of a kept ``packet_id`` needs is now ``record``
        (None: nothing, its routing was confirmed)."""
        ...

    def pubrel_received(self, session: BrokerSession, packet_id: int) -> None:
        """PUBREL came for ``packet_id``: the id is free again. PUBCOMP waits for
        ``pending_commit``: after it the client may use the id for a new message."""
        ...

    def pending_commit(self) -> "asyncio.Future[None] | None": ...
    def pending_attempt(self) -> "asyncio.Future[None] | None": ...
    async def flush(self) -> None: ...
    async def close(self, within: float) -> None: ...


class MemorySessionStore:
    """Sessions in memory only: every write is a no-op, nothing is ever pending."""

    degraded = False
    unsaved = 0

    def status(self) -> StoreStatus:
        return StoreStatus()

    async def load_page(
        self, after: str | None, limit: int
    ) -> tuple[list[BrokerSession], str | None]:
        return [], None

    async def load_one(self, key: SessionKey) -> BrokerSession | None:
        return None

    def save_session(self, session: BrokerSession) -> None:
        pass

    def session_away(self, session: BrokerSession) -> None:
        pass

    def drop_session(self, session: BrokerSession) -> None:
        pass

    def subscribe(self, session: BrokerSession, topic_filter: str, sub: Subscription) -> None:
        pass

    def unsubscribe(self, session: BrokerSession, topic_filter: str) -> None:
        pass

    def message_queued(self, session: BrokerSession, message: Outgoing) -> None:
        pass

    def message_sent(self, message: Outgoing) -> None:
        pass

    def message_released(self, message: Outgoing) -> None:
        pass

    def message_done(self, message: Outgoing) -> None:
        pass

    def message_completed(self, session: BrokerSession, message: Outgoing) -> None:
        pass

    def pubrel_awaited(
        self, session: BrokerSession, packet_id: int, unrouted: Unrouted | None = None
    ) -> None:
        pass

    def unrouted(self, session: BrokerSession, packet_id: int, record: Unrouted | None) -> None:
        pass

    def pubrel_received(self, session: BrokerSession, packet_id: int) -> None:
        pass

    def pending_commit(self) -> "asyncio.Future[None] | None":
        return None

    def pending_attempt(self) -> "asyncio.Future[None] | None":
        return None

    async def flush(self) -> None:
        pass

    async def close(self, within: float) -> None:
        pass


def subscription_options(sub: Subscription) -> int:
    """MQTT 5 subscription options as bits 2-5 of the SUBSCRIBE options byte (§3.8.3.1)."""
    return (
        (0x04 if sub.no_local else 0)
        | (0x08 if sub.retain_as_published else 0)
        | (sub.retain_handling << 4)
    )


class SqlSessionStore:
    """Persistent sessions in the credential store's database (migrations 0003, 0004, 0007,
    0008, 0009, 0010, 0011, 0012). ``completed_kept``: the QoS 2 message ids with a cluster-wide
    id each session keeps, its last completed (0: none). ``persistent_expiry``: the expiry
    interval a 3.1/3.1.1 session read back gets if it was stored without one (0: none)."""

    def __init__(
        self, store: SqlCredentialStore, completed_kept: int = 0, persistent_expiry: int = 0
    ) -> None:
        self._store = store
        self.journal = Journal(store)
        self.completed_kept = completed_kept
        self.persistent_expiry = persistent_expiry

    @property
    def degraded(self) -> bool:
        return self.journal.degraded

    @property
    def unsaved(self) -> int:
        return self.journal.unsaved

    def status(self) -> StoreStatus:
        journal = self.journal
        since = journal.degraded_since
        now = time.monotonic()
        return StoreStatus(
            journal.problem if journal.degraded else "",
            now - since if since is not None else 0.0,
            journal.unsaved,
            journal.failures,
        )

    async def load_page(
        self, after: str | None, limit: int
    ) -> tuple[list[BrokerSession], str | None]:
        records = await self._store.load_sessions_page(after, limit)
        expiry = self.persistent_expiry
        sessions = [s for s in (session_from(r, expiry) for r in records) if s is not None]
        return sessions, records[-1].key if len(records) == limit else None

    async def load_one(self, key: SessionKey) -> BrokerSession | None:
        record = await self._store.load_session(store_key(key))
        return session_from(record, self.persistent_expiry) if record is not None else None

    def save_session(self, session: BrokerSession) -> None:
        self.journal.submit(
            SaveSession(
                session.store_key, uuid.UUID(session.device_id), session.device_name,
                session.client_id, session.expiry,
            )
        )  # fmt: skip

    def session_away(self, session: BrokerSession) -> None:
        self.journal.submit(SessionAway(session.store_key, session.expiry, utcnow()))

    def drop_session(self, session: BrokerSession) -> None:
        self.journal.submit(DropSession(session.store_key))

    def subscribe(self, session: BrokerSession, topic_filter: str, sub: Subscription) -> None:
        options = subscription_options(sub)
        self.journal.submit(
            Subscribe(
                session.store_key, topic_filter, sub.qos, sub.me_form, options, sub.identifier
            )
        )

    def unsubscribe(self, session: BrokerSession, topic_filter: str) -> None:
        self.journal.submit(Unsubscribe(session.store_key, topic_filter))

    def message_queued(self, session: BrokerSession, message: Outgoing) -> None:
        ref = Ref(session.store_key, message, received_at=_received_at(message))
        message.stored = ref
        self.journal.submit((QUEUE, ref))

    def message_sent(self, message: Outgoing) -> None:
        self._change(SENT, message)

    def message_released(self, message: Outgoing) -> None:
        ref = message.stored
        if isinstance(ref, Ref):  # what its PUBRELs wait for (``journal.release_commit``)
            self.journal.submit((RELEASE, ref))
            ref.released = self.journal.pending_commit()

    def message_done(self, message: Outgoing) -> None:
        ref = message.stored
        if isinstance(ref, Ref):
            ref.done = True
            self.journal.submit((DONE, ref))

    def message_completed(self, session: BrokerSession, message: Outgoing) -> None:
        ref = message.stored
        kept = self.completed_kept
        if not isinstance(ref, Ref) or not message.message_id or not kept:
            self.message_done(message)  # a single node's, a QoS 1 one: nothing to keep
            return
        ref.done = True
        session.completions = seq = session.completions + 1
        self.journal.submit(Completed(ref, seq % kept, seq))  # one entry: one transaction

    def pubrel_awaited(
        self, session: BrokerSession, packet_id: int, unrouted: Unrouted | None = None
    ) -> None:
        key = session.store_key
        if unrouted is None:
            self.journal.submit(AwaitPubrel(((key, packet_id),)))
        else:  # one entry, so that no transaction has the id without its record
            self.journal.submit(Unconfirmed(key, packet_id, unrouted))

    def unrouted(self, session: BrokerSession, packet_id: int, record: Unrouted | None) -> None:
        stored = record.stored() if record is not None else None
        self.journal.submit(MarkUnrouted(((session.store_key, packet_id, stored),)))

    def pubrel_received(self, session: BrokerSession, packet_id: int) -> None:
        self.journal.submit(PubrelReceived(((session.store_key, packet_id),)))

    def _change(self, kind: str, message: Outgoing) -> None:
        # Submitted even before the message's row exists: a transaction built later knows
        # the row; one built together with the row's Enqueue writes the state it finds.
        ref = message.stored
        if isinstance(ref, Ref):
            self.journal.submit((kind, ref))

    def pending_commit(self) -> "asyncio.Future[None] | None":
        return self.journal.pending_commit()

    def pending_attempt(self) -> "asyncio.Future[None] | None":
        return self.journal.pending_attempt()

    async def flush(self) -> None:
        await self.journal.flush()

    async def close(self, within: float) -> None:
        await self.journal.close(within)


def _received_at(message: Outgoing) -> datetime:
    """When the message was received, on the wall clock: its expiry interval ends at
    ``expires_at`` on the loop's clock (a retained one was received before it is queued)."""
    now = utcnow()
    interval = message.properties.message_expiry  # not the list's values: its bytes are kept
    if message.expires_at is None or not isinstance(interval, int):
        return now
    left = message.expires_at - asyncio.get_running_loop().time()
    return now + timedelta(seconds=left - interval)
