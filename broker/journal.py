"""Group commit of session writes to the store: one transaction at a time, in order.

Whatever arrives while a transaction commits goes into the next one, so many publishers
share one commit; a transaction holds at most ``BATCH`` writes, so a client subscribing to
thousands of filters never holds the database's write lock for long. A message's writes are
made from its state when the transaction starts (``Ref``): a message sent, or even
acknowledged, before its first commit is written as it is then, or not at all.

When the database is unreachable the broker keeps working from memory (``degraded``: the
publisher's PUBACK no longer waits) and the journal retries until the database is back;
what changed meanwhile is written then.
"""

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Final

from broker.mqtt.session import RELEASED, Outgoing
from nanoiot.errors import StoreError, StoreUnavailableError
from storage.sessions import (
    Acknowledge,
    Enqueue,
    MarkReleased,
    MarkSent,
    SessionWrite,
)
from storage.sql import SqlCredentialStore

log = logging.getLogger(__name__)

BATCH: Final = 1000  # writes per transaction at most
_RETRY_FIRST, _RETRY_MAX = 0.2, 5.0  # seconds between attempts while the database is away
QUEUE, SENT, RELEASE, DONE = "queue", "sent", "release", "done"


class Ref:
    """A message of a persistent session and its row in the store (once committed)."""

    __slots__ = ("done", "key", "message", "row")

    def __init__(self, key: str, message: Outgoing, row: int | None = None) -> None:
        self.key = key
        self.message = message
        self.row = row
        self.done = False  # acknowledged or dropped: its row goes, or is never written


Entry = SessionWrite | tuple[str, Ref]


class Journal:
    def __init__(self, store: SqlCredentialStore) -> None:
        self._store = store
        self._queued: list[Entry] = []
        self._next: asyncio.Future[None] | None = None  # done when _queued is committed
        self._inflight: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self.degraded = False  # the database is unreachable: PUBACK does not wait for it
        self.commits = 0
        self._task = asyncio.create_task(self._run(), name="session journal")

    def submit(self, entry: Entry) -> None:
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
        while (pending := self._next or self._inflight) is not None:
            await asyncio.shield(pending)
            if self.degraded:
                return

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
            if not self._queued:
                if self._closing.is_set():
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            entries, self._queued = self._queued[:BATCH], self._queued[BATCH:]
            if self._queued:
                # What waits for ``_next`` waits for the rest too, in a later transaction.
                self._inflight = asyncio.get_running_loop().create_future()
                self._wake.set()
            else:
                self._inflight, self._next = self._next, None
            committed = await self._commit(entries)
            if committed:
                _resolve(self._inflight)
                self._inflight = None
                delay = _RETRY_FIRST
                continue
            _resolve(self._inflight)  # degraded: nobody waits for the database any more
            self._inflight = None
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

    async def _commit(self, entries: list[Entry]) -> bool:
        writes, queued = writes_for(entries)
        try:
            rows = await self._store.write_sessions(writes)
        except StoreUnavailableError as exc:
            if not self.degraded:
                log.warning("session changes kept in memory until the database is back: %s", exc)
            self.degraded = True
            return False
        except StoreError as exc:  # a session deleted meanwhile: apply what still applies
            log.info("session changes failed together (%s): applying them one by one", exc)
            return await self._commit_one_by_one(entries)
        _number(queued, rows)
        if self.degraded:
            log.warning("database back: session changes saved again")
        self.degraded = False
        self.commits += 1
        return True

    async def _commit_one_by_one(self, entries: list[Entry]) -> bool:
        for entry in entries:
            writes, queued = writes_for([entry])
            try:
                rows = await self._store.write_sessions(writes)
            except StoreUnavailableError:
                return False  # the rest is retried with the others
            except StoreError as exc:
                log.warning("session change dropped: %s", exc)
                continue
            _number(queued, rows)
        return True


def writes_for(entries: Sequence[Entry]) -> tuple[list[SessionWrite], list[Ref]]:
    """Store writes for ``entries``, and the messages whose row ids the Enqueue writes give."""
    writes: list[SessionWrite] = []
    queued: list[Ref] = []
    sent: list[tuple[int, int]] = []
    released: list[int] = []
    done: list[int] = []
    for entry in entries:
        if not isinstance(entry, tuple):
            writes.append(entry)
            continue
        kind, ref = entry
        message = ref.message
        if kind == QUEUE and not ref.done and ref.row is None:
            writes.append(
                Enqueue(
                    ref.key, message.topic, message.payload, message.qos, message.retain,
                    message.packet_id or None, message.sent, message.state == RELEASED,
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
    return writes, queued


def _number(queued: list[Ref], rows: list[int]) -> None:
    """Each written message learns its row: an acknowledgement that came while the row was
    being written was submitted after it, so it deletes the row in a later transaction."""
    for ref, row in zip(queued, rows, strict=True):
        ref.row = row


def _resolve(future: "asyncio.Future[None] | None") -> None:
    if future is not None and not future.done():
        future.set_result(None)


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
