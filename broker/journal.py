"""Group commit of session writes to the store: one transaction at a time, in order.

Whatever arrives while a transaction commits goes into the next one, so many publishers
share one commit; a transaction holds at most ``BATCH`` writes, so a client subscribing to
thousands of filters never holds the database's write lock for long. A message's writes are
made from its state when the transaction starts (``Ref``, ``broker.journal_entries``): a
message sent, or even acknowledged, before its first commit is written as it is then, or not
at all. The packet ids of QoS 2 PUBLISHes awaiting PUBREL (§4.3.3) are written as what a
transaction's writes leave of them: kept, or free again; one kept with what routing its
message again needs (``Unconfirmed``, ``broker.cluster.resend``) has that written in the
same row, as it is when the transaction starts, so that the two are committed together. So
is the cluster-wide id of a QoS 2 message a session's client completed with the deletion of
its row (``Completed``): one entry each, so no transaction has one without the other.

Each commit has two futures (``Commit``): ``durable`` is done once its writes are in the
database, and only then may a publisher be acknowledged (MQTT 3.1.1 §4.3.2: after PUBACK
the message is the server's); ``settled`` is done as soon as the attempt ends either way,
which is all a connection's output waits for. When the database cannot be written
(unreachable, locked past its busy timeout, a read-only or full file system) the journal is
``degraded``: the broker keeps routing from memory, PUBACKs keep waiting (the publisher is
closed after ``ack_timeout``, ``broker.client``), and the journal retries until the writes
commit, then releases every acknowledgement that waited for them.
"""

import asyncio
import contextlib
import logging
import time
from typing import Final

from broker.journal_entries import Entry, Ref, writes_for
from broker.mqtt.session import Outgoing
from nanoiot.errors import StoreError, StoreUnavailableError
from storage.sql import SqlCredentialStore

log = logging.getLogger(__name__)

BATCH: Final = 1000  # writes per transaction at most
_RETRY_FIRST, _RETRY_MAX = 0.2, 5.0  # seconds between attempts while the database is away


def release_commit(message: Outgoing) -> "asyncio.Future[None] | None":
    """The commit of a stored QoS 2 message's release (``SessionStore.message_released``)
    while it is pending, else None. Every PUBREL for the message waits for it, the first and
    any sent again (a repeated PUBREC, a resumed session, §4.4): a server that read the
    session from the store before it would send the PUBLISH again after the PUBREL, which the
    client would take for a new message once it answered the PUBREL (§4.3.3)."""
    ref = message.stored
    if not isinstance(ref, Ref) or ref.released is None:
        return None
    if ref.released.done():
        ref.released = None  # committed: nothing to keep
    return ref.released


class Commit:
    """The commit that will cover some writes: ``durable`` once they are in the database,
    ``settled`` once an attempt at them ended (committed, or failed for now)."""

    __slots__ = ("durable", "settled")

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.durable: asyncio.Future[None] = loop.create_future()
        self.settled: asyncio.Future[None] = loop.create_future()

    def committed(self) -> None:
        _resolve(self.durable)
        _resolve(self.settled)


class Journal:
    def __init__(self, store: SqlCredentialStore) -> None:
        self._store = store
        self._queued: list[Entry] = []
        self._next: Commit | None = None  # covers _queued
        self._inflight: Commit | None = None  # covers the transaction being committed
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._outage = asyncio.Event()  # set while degraded
        self.degraded = False  # the database cannot be written: writes wait in memory
        self.degraded_since: float | None = None  # time.monotonic() of the first failure
        self.problem = ""  # why the last attempt failed, while degraded
        self.commits = 0
        self._inflight_size = 0
        self.failures = 0  # commit attempts that failed because the store was unusable
        self._task = asyncio.create_task(self._run(), name="session journal")

    @property
    def unsaved(self) -> int:
        """Writes submitted and not committed yet."""
        inflight = self._inflight_size if self._inflight is not None else 0
        return len(self._queued) + inflight

    def submit(self, entry: Entry) -> None:
        self._queued.append(entry)
        if self._next is None:
            self._next = Commit()
            self._wake.set()

    def pending_commit(self) -> "asyncio.Future[None] | None":
        """Done once every write submitted so far is committed; None if none is due. It
        stays pending through an outage: what waits for it waits for the database."""
        commit = self._next or self._inflight
        return commit.durable if commit is not None else None

    def pending_attempt(self) -> "asyncio.Future[None] | None":
        """Done once the attempt at every write submitted so far ended, whichever way; None
        if none is due or the database is away (nothing waits for an attempt then)."""
        commit = self._next or self._inflight
        if commit is None or self.degraded:
            return None
        return commit.settled

    async def flush(self) -> None:
        """Wait until every write submitted so far was committed (or failed for now).

        So far: the commit pending now covers them, and that one alone is waited for. Waiting
        until no commit is pending at all never ended while clients kept writing faster than
        a commit took (a publisher's QoS 2 stream on a loaded machine): a take-over's read of
        the session waited behind it and its CONNACK never came."""
        pending = self.pending_commit()
        if pending is None or self.degraded:
            return
        outage = asyncio.ensure_future(self._outage.wait())
        try:
            await asyncio.wait((pending, outage), return_when=asyncio.FIRST_COMPLETED)
        finally:
            outage.cancel()

    async def close(self, within: float) -> None:
        """Commit what is queued (for at most ``within`` seconds), then stop."""
        self._closing.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), within)
        except TimeoutError:
            self._task.cancel()
            # The batch whose commit was cut short counts too (``unsaved``).
            log.error("%d session changes could not be saved before shutdown", self.unsaved)
        await asyncio.gather(self._task, return_exceptions=True)
        # Nobody waits for a commit that will not come; the connections are closed already,
        # so no acknowledgement goes out for what was not saved.
        for commit in (self._next, self._inflight):
            if commit is not None:
                commit.committed()

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
                self._inflight = Commit()
                self._wake.set()
            else:
                self._inflight, self._next = self._next, None
            self._inflight_size = len(entries)
            committed = await self._commit(entries)
            inflight, self._inflight = self._inflight, None
            assert inflight is not None
            if committed:
                inflight.committed()
                delay = _RETRY_FIRST
                continue
            self._failed(inflight, entries)
            if self._closing.is_set():  # this was the attempt at shutdown
                log.error("database unwritable at shutdown: %d session changes not saved",
                          len(self._queued))  # fmt: skip
                return
            await _sleep_unless(self._closing, delay)  # shutdown cuts it short: one more try
            delay = min(delay * 2, _RETRY_MAX)
            self._wake.set()

    def _failed(self, inflight: Commit, entries: list[Entry]) -> None:
        """The writes go back first in line; whoever waited for them keeps waiting, now
        for the commit of everything queued (which includes them)."""
        _resolve(inflight.settled)
        self._queued[:0] = entries
        later = self._next
        if later is None:
            self._next = inflight
            return
        _resolve(later.settled)  # degraded: output no longer waits for attempts
        later.durable.add_done_callback(lambda _done: inflight.committed())

    async def _commit(self, entries: list[Entry]) -> bool:
        writes, queued = writes_for(entries)
        began = time.monotonic()
        try:
            rows = await self._store.write_sessions(writes)
        except StoreUnavailableError as exc:
            self._unwritable(str(exc), began)
            return False
        except StoreError as exc:  # a session deleted meanwhile: apply what still applies
            log.info("session changes failed together (%s): applying them one by one", exc)
            return await self._commit_one_by_one(entries)
        _number(queued, rows)
        self._writable()
        self.commits += 1
        return True

    def _unwritable(self, problem: str, since: float) -> None:
        self.failures += 1
        self.problem = problem
        if not self.degraded:
            log.error("session changes cannot be saved, acknowledgements wait: %s", problem)
            self.degraded = True
            self.degraded_since = since  # the failed attempt's start: it waited meanwhile
            self._outage.set()

    def _writable(self) -> None:
        if not self.degraded:
            return
        since = self.degraded_since or 0.0
        log.warning("session changes saved again after %.1f s; %d waiting writes saved",
                    time.monotonic() - since, self._inflight_size)  # fmt: skip
        self.degraded, self.degraded_since, self.problem = False, None, ""
        self._outage.clear()
        later = self._next
        if later is not None and later.settled.done():
            later.settled = asyncio.get_running_loop().create_future()

    async def _commit_one_by_one(self, entries: list[Entry]) -> bool:
        for entry in entries:
            writes, queued = writes_for([entry])
            try:
                rows = await self._store.write_sessions(writes)
            except StoreUnavailableError as exc:
                self._unwritable(str(exc), time.monotonic())
                return False  # the rest is retried with the others
            except StoreError as exc:
                log.warning("session change dropped: %s", exc)
                continue
            _number(queued, rows)
        self._writable()
        return True


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
