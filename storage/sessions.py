"""Persistent MQTT sessions in the store: sessions, subscriptions, messages in flight.

The broker (``broker.journal``) describes what changed as a list of writes and hands many of
them over at once: ``write_sessions`` applies them in order in one transaction (group
commit), so a burst of messages costs one commit, not one each. A message of a persistent
session is written when it is routed and deleted at its PUBACK / PUBCOMP, whether its client
was connected or not (MQTT 3.1.1 §4.4). The packet id of a QoS 2 message the session's client
published is kept from its PUBREC to its PUBREL (§4.3.3), in a cluster with what routing it
again needs (``MarkUnrouted``); and in a cluster, the ids of the last QoS 2 messages a
session's client completed (``KeepCompleted``). Payloads are bytes end to end.
The writes and the sessions read back are plain data (``storage.session_data``); this module
is their SQL.
"""

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

from sqlalchemy import Select, Table, and_, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.base import StoreBase
from storage.models import (
    MqttAwaitingPubrelRow,
    MqttCompletedRow,
    MqttQueuedMessageRow,
    MqttSessionRow,
    MqttSubscriptionRow,
    utcnow,
)
from storage.session_data import (
    Acknowledge,
    AwaitPubrel,
    DropSession,
    Enqueue,
    KeepCompleted,
    MarkAttempted,
    MarkReleased,
    MarkSent,
    MarkUnrouted,
    PubrelReceived,
    SaveSession,
    SessionAway,
    SessionWrite,
    StoredMessage,
    StoredSession,
    StoredSubscription,
    Subscribe,
    Unsubscribe,
)

_CHUNK = 500  # ids per IN (...) list: well below every driver's parameter limit
_PAGE = 5000  # sessions per page of load_sessions
_SESSIONS = MqttSessionRow.__table__
_SUBSCRIPTIONS = MqttSubscriptionRow.__table__
_MESSAGES = MqttQueuedMessageRow.__table__
_AWAITING = MqttAwaitingPubrelRow.__table__
_COMPLETED = MqttCompletedRow.__table__
_SESSION_COLUMNS = [
    _SESSIONS.c[n]
    for n in ("key", "device_id", "device_name", "client_id", "expiry_interval", "disconnected_at")
]
_SUBSCRIPTION_COLUMNS = [
    _SUBSCRIPTIONS.c[n]
    for n in ("session_key", "topic_filter", "qos", "me_form", "options", "identifier")
]
_MESSAGE_COLUMNS = [
    _MESSAGES.c[n]
    for n in ("id", "session_key", "topic", "payload", "qos", "attempted", "packet_id",
              "released", "retain", "properties", "received_at", "message_id")
]  # fmt: skip


class SessionRecords(StoreBase):
    """The session tables; mixed into ``storage.sql.SqlCredentialStore``."""

    async def write_sessions(self, writes: Sequence[SessionWrite]) -> list[int]:
        """Apply ``writes`` in order, in one transaction; the ids of the Enqueue writes.

        Raises StoreUnavailableError when the database cannot be reached (nothing applied),
        ConflictError when a write names a session that no longer exists.
        """
        ids: list[int] = []
        async with self._write("the MQTT session no longer exists") as session:
            for group in _runs(writes):
                if isinstance(group[0], Enqueue):
                    ids.extend(await _enqueue(session, group))  # type: ignore[arg-type]
                else:
                    for write in group:
                        if isinstance(write, AwaitPubrel):
                            await self._await_pubrel(session, write)
                        elif isinstance(write, KeepCompleted):
                            await self._keep_completed(session, write)
                        else:
                            await _apply(session, write)
        return ids

    def _upsert(self, row: type[Any]) -> Any:
        """An INSERT into the table of ``row`` that can take ON CONFLICT, in this store's
        dialect. Its module is imported here, not at the top: a process on SQLite (every CLI
        call on the default store) need not load PostgreSQL's dialect, nor one on PostgreSQL
        SQLite's."""
        if self._is_postgres:
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(row)
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(row)

    async def _await_pubrel(self, session: AsyncSession, write: AwaitPubrel) -> None:
        """Insert the pairs; one already kept (a batch may name an id its session kept
        before: its PUBREL and a new PUBLISH with that id in between) is now the new
        message's, with nothing to route again."""
        statement = self._upsert(MqttAwaitingPubrelRow)
        statement = statement.on_conflict_do_update(
            index_elements=[_AWAITING.c.session_key, _AWAITING.c.packet_id],
            set_={"unrouted": None},
        )
        rows = [{"session_key": key, "packet_id": packet_id} for key, packet_id in write.ids]
        await session.execute(statement, rows)

    async def _keep_completed(self, session: AsyncSession, write: KeepCompleted) -> None:
        """Each id in its session's slot, in place of the one kept there before: one row
        written per completion, and at most a ring's worth kept per session."""
        statement = self._upsert(MqttCompletedRow)
        statement = statement.on_conflict_do_update(
            index_elements=[_COMPLETED.c.session_key, _COMPLETED.c.slot],
            set_={"seq": statement.excluded.seq, "message_id": statement.excluded.message_id},
        )
        # The last of each slot: a batch with more completions than slots writes no more.
        last = {(key, slot): (seq, message_id) for key, slot, seq, message_id in write.ids}
        rows = [
            {"session_key": key, "slot": slot, "seq": seq, "message_id": _signed(message_id)}
            for (key, slot), (seq, message_id) in last.items()
        ]
        await session.execute(statement, rows)

    async def load_sessions(self) -> list[StoredSession]:
        """Every persistent session with its subscriptions and messages (oldest first)."""
        found: list[StoredSession] = []
        after: str | None = None
        while page := await self.load_sessions_page(after, _PAGE):
            found.extend(page)
            after = page[-1].key
        return found

    async def load_sessions_page(self, after: str | None, limit: int) -> list[StoredSession]:
        """Up to ``limit`` sessions whose keys sort after ``after`` (all: None), in key order,
        with their subscriptions and messages: a start-up restores them a page at a time."""
        query = select(*_SESSION_COLUMNS).order_by(_SESSIONS.c.key).limit(limit)
        if after is not None:
            query = query.where(_SESSIONS.c.key > after)
        return await self._load(query)

    async def load_session(self, key: str) -> StoredSession | None:
        """The one session stored under ``key`` (a client connecting while the rest are
        still being restored), or None."""
        found = await self._load(select(*_SESSION_COLUMNS).where(_SESSIONS.c.key == key))
        return found[0] if found else None

    async def _load(self, sessions_query: Select[Any]) -> list[StoredSession]:
        # Core rows, not ORM objects: restoring 10^5 sessions is dominated by building rows.
        async with self._snapshot() as session:
            found = {row.key: _stored_session(row) for row in await session.execute(sessions_query)}
            for chunk in _chunks_of(list(found)):
                subs = select(*_SUBSCRIPTION_COLUMNS).where(_SUBSCRIPTIONS.c.session_key.in_(chunk))
                for sub in await session.execute(subs):
                    found[sub.session_key].subscriptions.append(
                        StoredSubscription(
                            sub.topic_filter, sub.qos, sub.me_form, sub.options, sub.identifier
                        )
                    )
                messages = (
                    select(*_MESSAGE_COLUMNS)
                    .where(_MESSAGES.c.session_key.in_(chunk))
                    .order_by(_MESSAGES.c.id)
                )
                for message in await session.execute(messages):
                    found[message.session_key].queued.append(_stored_message(message))
                awaiting = select(
                    _AWAITING.c.session_key, _AWAITING.c.packet_id, _AWAITING.c.unrouted
                ).where(_AWAITING.c.session_key.in_(chunk))
                for row in await session.execute(awaiting):
                    stored = found[row.session_key]
                    stored.awaiting_pubrel.append(row.packet_id)
                    if row.unrouted is not None:
                        stored.unrouted[row.packet_id] = row.unrouted
                completed = select(
                    _COMPLETED.c.session_key, _COMPLETED.c.seq, _COMPLETED.c.message_id
                ).where(_COMPLETED.c.session_key.in_(chunk))
                for row in await session.execute(completed):
                    stored = found[row.session_key]
                    stored.completed.append(_unsigned(row.message_id) or 0)
                    stored.completions = max(stored.completions, row.seq)
        return list(found.values())


def _stored_session(row: Any) -> StoredSession:
    return StoredSession(
        row.key,
        row.device_id,
        row.device_name,
        row.client_id,
        row.expiry_interval,
        row.disconnected_at,
    )


def _stored_message(row: Any) -> StoredMessage:
    return StoredMessage(
        row.id,
        row.topic,
        row.payload,
        row.qos,
        row.attempted,
        row.packet_id,
        row.released,
        row.retain,
        row.properties,
        row.received_at,
        _unsigned(row.message_id),
    )


def _runs(writes: Sequence[SessionWrite]) -> Iterator[list[SessionWrite]]:
    """Consecutive Enqueue writes together (one multi-row INSERT), every other write alone."""
    run: list[SessionWrite] = []
    for write in writes:
        if run and not (isinstance(write, Enqueue) and isinstance(run[-1], Enqueue)):
            yield run
            run = []
        run.append(write)
    if run:
        yield run


async def _enqueue(session: AsyncSession, writes: Sequence[Enqueue]) -> list[int]:
    rows = [
        {"session_key": w.key, "topic": w.topic, "payload": w.payload, "qos": w.qos,
         "attempted": w.attempted, "packet_id": w.packet_id, "released": w.released,
         "retain": w.retain, "properties": w.properties, "received_at": w.received_at,
         "message_id": _signed(w.message_id)}
        for w in writes
    ]  # fmt: skip
    statement = insert(MqttQueuedMessageRow).returning(
        MqttQueuedMessageRow.id, sort_by_parameter_order=True
    )
    result = await session.execute(statement, rows)
    return [int(row_id) for row_id in result.scalars()]


async def _apply(session: AsyncSession, write: SessionWrite) -> None:
    match write:
        case SaveSession(key, device_id, device_name, client_id, expiry_interval):
            row = await session.get(MqttSessionRow, key)
            if row is None:
                session.add(MqttSessionRow(key=key, device_id=device_id,
                                           device_name=device_name, client_id=client_id,
                                           updated_at=utcnow(),
                                           expiry_interval=expiry_interval))  # fmt: skip
            else:
                row.device_name, row.updated_at = device_name, utcnow()
                row.expiry_interval, row.disconnected_at = expiry_interval, None
        case SessionAway(key, expiry_interval, at):
            await session.execute(
                update(MqttSessionRow)
                .where(MqttSessionRow.key == key)
                .values(expiry_interval=expiry_interval, disconnected_at=at)
            )
        case DropSession(key):
            # Children first: SQLite enforces the foreign keys but the cascade is not needed.
            children = (MqttQueuedMessageRow, MqttSubscriptionRow, MqttAwaitingPubrelRow,
                        MqttCompletedRow)  # fmt: skip
            for table in children:
                await session.execute(delete(table).where(table.session_key == key))
            await session.execute(delete(MqttSessionRow).where(MqttSessionRow.key == key))
        case Subscribe(key, topic_filter, qos, me_form, options, identifier):
            sub = await session.get(MqttSubscriptionRow, (key, topic_filter))
            if sub is None:
                session.add(MqttSubscriptionRow(session_key=key, topic_filter=topic_filter,
                                                qos=qos, me_form=me_form, options=options,
                                                identifier=identifier))  # fmt: skip
            else:
                sub.qos, sub.me_form, sub.options = qos, me_form, options
                sub.identifier = identifier  # §3.8.4: the new subscription replaces it
        case Unsubscribe(key, topic_filter):
            await session.execute(
                delete(MqttSubscriptionRow).where(
                    MqttSubscriptionRow.session_key == key,
                    MqttSubscriptionRow.topic_filter == topic_filter,
                )
            )
        case Acknowledge(ids):
            for chunk in _chunks(ids):
                await session.execute(
                    delete(MqttQueuedMessageRow).where(MqttQueuedMessageRow.id.in_(chunk))
                )
        case MarkAttempted(ids):
            for chunk in _chunks(ids):
                await session.execute(
                    update(MqttQueuedMessageRow)
                    .where(MqttQueuedMessageRow.id.in_(chunk))
                    .values(attempted=True)
                )
        case MarkSent(sent):
            # On the table, not the ORM's update by primary key, which fails the whole
            # transaction when a row is gone (its session dropped or the message acknowledged
            # meanwhile): a message that is gone has nothing left to mark.
            await session.execute(
                update(cast(Table, _MESSAGES))
                .where(_MESSAGES.c.id == bindparam("row"))
                .values(packet_id=bindparam("packet_id"), attempted=True),
                [{"row": row, "packet_id": packet_id} for row, packet_id in sent],
            )
        case MarkReleased(ids):
            for chunk in _chunks(ids):
                await session.execute(
                    update(MqttQueuedMessageRow)
                    .where(MqttQueuedMessageRow.id.in_(chunk))
                    .values(released=True)
                )
        case PubrelReceived(ids):
            await session.execute(
                delete(cast(Table, _AWAITING)).where(
                    and_(
                        _AWAITING.c.session_key == bindparam("awaited_key"),
                        _AWAITING.c.packet_id == bindparam("awaited_id"),
                    )
                ),
                [{"awaited_key": key, "awaited_id": packet_id} for key, packet_id in ids],
            )
        case MarkUnrouted(records):
            await session.execute(
                update(cast(Table, _AWAITING))
                .where(
                    _AWAITING.c.session_key == bindparam("awaited_key"),
                    _AWAITING.c.packet_id == bindparam("awaited_id"),
                )
                .values(unrouted=bindparam("record")),
                [{"awaited_key": k, "awaited_id": i, "record": r} for k, i, r in records],
            )
        case Enqueue():
            await _enqueue(session, [write])
    await session.flush()


def _signed(message_id: int | None) -> int | None:
    """A cluster-wide message id (unsigned 64 bits) as a BIGINT (signed) keeps it."""
    if message_id is None or message_id < 1 << 63:
        return message_id
    return message_id - (1 << 64)


def _unsigned(stored: int | None) -> int | None:
    return stored + (1 << 64) if stored is not None and stored < 0 else stored


def _chunks_of(keys: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(keys), _CHUNK):
        yield keys[start : start + _CHUNK]


def _chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    chunk: list[int] = []
    for value in ids:
        chunk.append(value)
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
