"""A JetStream key-value bucket with compare-and-set, in NanoIoT's terms.

What a cluster needs from it: ``create`` succeeds for one writer only (a take-over lock, a
session's owner), ``update`` succeeds only if nobody wrote since the revision read (CAS), and
a bucket made with a TTL forgets an entry that was not rewritten in time (node liveness).
A lost race is a ``ClusterConflictError``; an unreachable NATS a ``ClusterUnavailableError``.

A watch says when it has given every value there was at its start; that is decided here, not
by nats-py's own marker, which can come before values already written (nats.py #842: the
consumer's pending count is read while deliveries are still on their way). Reading a partial
route table, member list or retained set at start-up would lose messages.

A watch is remade after a reconnection to NATS (``broker.cluster.watches``): the new one starts
at the revision after the last the watch gave (``broker.cluster.kv_resumed``), so each
revision is given once, in order, and a remake reads what changed meanwhile, not the bucket.
What the old one held but had not given yet is dropped with it: the new one gives it, unless a
later value of the key replaced it (the bucket keeps one value per key, ``history=1``), which
it then gives instead.
"""

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE
from nats.js.kv import KeyValue as NatsKeyValue

from broker.cluster.errors import nats_errors
from broker.cluster.kv_resumed import ResumedWatcher, watch_from
from broker.cluster.markers import DeleteMarkers
from broker.cluster.watches import OpenWatches
from nanoiot.tasks import cancellable

__all__ = ["Entry", "KeyValue", "Watch"]


@dataclass(frozen=True)
class Entry:
    value: bytes
    revision: int  # pass to update() to write only if nobody wrote since


# Seconds a watch waits for the last value there was at its start before it checks whether
# that value is still there (it may have expired meanwhile, and would never come).
RECHECK: Final = 1.0


class KeyValue:
    def __init__(
        self,
        store: NatsKeyValue,
        bucket: str,
        js: JetStreamContext,
        watches: OpenWatches | None = None,
    ) -> None:
        self._store = store
        self._js = js
        self._watches = watches  # remade on each reconnection to NATS
        self._stream = f"KV_{bucket}"
        self.bucket = bucket
        # The delete markers its watches gave, while a compaction needs them (``compaction``).
        self.markers: DeleteMarkers | None = None

    async def get(self, key: str) -> Entry | None:
        """The entry, or None if there is none (never written, deleted or expired)."""
        with nats_errors(f"reading {self.bucket}/{key}"):
            try:
                entry = await self._store.get(key)
            except nats.js.errors.KeyNotFoundError:  # KeyDeletedError is one too
                return None
        if entry.value is None or entry.revision is None:
            return None
        return Entry(entry.value, entry.revision)

    async def create(self, key: str, value: bytes) -> int:
        """Write ``key`` only if it has no value; its revision. Lost race: ClusterConflictError."""
        with nats_errors(f"creating {self.bucket}/{key}"):
            return await self._store.create(key, value)

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Write ``key`` only if its revision is still ``revision``; the new revision."""
        with nats_errors(f"updating {self.bucket}/{key}"):
            return await self._store.update(key, value, last=revision)

    async def put(self, key: str, value: bytes) -> int:
        with nats_errors(f"writing {self.bucket}/{key}"):
            return await self._store.put(key, value)

    async def delete(self, key: str, revision: int | None = None) -> int:
        """Delete ``key`` (only at ``revision``, when given); the deletion's revision (nats-py's
        ``delete`` does not say it: a member telling its own deletions from others' needs it,
        ``broker.cluster.routes``)."""
        headers = {KV_OP: KV_DEL}
        if revision:
            headers[Header.EXPECTED_LAST_SUBJECT_SEQUENCE] = str(revision)
        with nats_errors(f"deleting {self.bucket}/{key}"):
            ack = await self._js.publish(f"$KV.{self.bucket}.{key}", headers=headers)
        return ack.seq

    async def keys_now(self) -> set[str]:
        """The keys the bucket's stream holds now, deleted ones included: one request, not
        a watch, whose view lags the writes by a delivery (``broker.cluster.routes_seen``)."""
        prefix = f"$KV.{self.bucket}."
        with nats_errors(f"listing {self.bucket}"):
            info = await self._js.stream_info(self._stream, subjects_filter=prefix + ">")
        return {subject.removeprefix(prefix) for subject in info.state.subjects or {}}

    async def last_revision(self) -> int:
        """The revision of the last value written to the bucket (0: there is none)."""
        with nats_errors(f"reading {self.bucket}"):
            return await self._last_revision(">")

    async def values(self) -> dict[str, bytes]:
        """Every key's value at this moment (one pass over the bucket)."""
        found: dict[str, bytes] = {}
        watch = await self.watch()
        try:
            while (change := await watch.value()) is not None:
                key, value = change
                if value is not None:
                    found[key] = value
        finally:
            await watch.stop()
        return found

    async def watch(self, keys: str = ">") -> "Watch":
        """Every key's current value, then each change as it happens (``Watch.next``)."""
        # nats-py's requests can swallow a cancellation (``nanoiot.tasks``): a watch opened
        # by a task stopped meanwhile is closed, and the stop goes on.
        with nats_errors(f"watching {self.bucket}"):
            last = await cancellable(self._last_revision(keys))  # before: the watch gives it
            watcher = await cancellable(self._store.watch(keys), _stopped)

        async def remade(start: int) -> ResumedWatcher:
            with nats_errors(f"watching {self.bucket} again"):
                return await watch_from(self._js, self.bucket, keys, start)

        watch = Watch(watcher, self.bucket, last, self._holds, remade, self._watches)
        watch.given = self._given
        if self._watches is not None:
            self._watches.add(watch)
        return watch

    async def compact(self, older_than: float) -> int:
        """Purge the delete markers written more than ``older_than`` seconds ago; how many
        were purged. Only on a server where a purge leaves open watches alone (2.9.12 and
        later, ``broker.cluster.compaction``)."""
        markers = await self.delete_markers(older_than)
        await self.purge(markers)
        return len(markers)

    async def delete_markers(self, older_than: float) -> list[tuple[str, int]]:
        """(key, revision) of each delete marker written more than ``older_than`` seconds
        ago, by the server's clock (when the entries say they were stored)."""
        markers: list[tuple[str, int]] = []
        watch = await self.watch()
        try:
            while (change := await watch.next()) is not None:
                key, present = change
                written_at = watch.written_at
                if not present and written_at is not None and written_at < time.time() - older_than:
                    markers.append((key, watch.revision))
        finally:
            await watch.stop()
        return markers

    async def purge(self, markers: list[tuple[str, int]]) -> None:
        """Purge each (key, revision) with what is older on its key, never a value written
        after it: a key written again since it was read keeps its new value (a purge of the
        whole key, as nats-py's ``purge_deletes`` does, would lose it)."""
        for key, revision in markers:
            with nats_errors(f"purging {self.bucket}/{key}"):
                # JetStream purges the subject's messages below ``seq``; later ones stay.
                await self._js.purge_stream(
                    self._stream, subject=f"$KV.{self.bucket}.{key}", seq=revision + 1
                )

    def _given(self, key: str, present: bool, revision: int, written_at: float | None) -> None:
        if self.markers is not None:
            self.markers.seen(key, present, revision, written_at)

    async def _last_revision(self, keys: str) -> int:
        """The revision of the last value written to ``keys`` (0: there is none)."""
        try:
            found = await self._js.get_last_msg(self._stream, f"$KV.{self.bucket}.{keys}")
        except nats.js.errors.NotFoundError:
            return 0
        return found.seq or 0

    async def _holds(self, revision: int) -> bool:
        """Whether the value written at ``revision`` is still in the bucket."""
        with nats_errors(f"reading {self.bucket}"):
            try:
                await self._js.get_msg(self._stream, seq=revision)
            except nats.js.errors.NotFoundError:
                return False
        return True


def _stored_at(entry: NatsKeyValue.Entry) -> float | None:
    """When the server stored ``entry`` (its stream message's timestamp, not its delivery's:
    nats-py types it as an int and gives a datetime)."""
    created: object = entry.created
    return created.timestamp() if isinstance(created, datetime) else None


_Watcher = NatsKeyValue.KeyWatcher | ResumedWatcher


class Watch:
    """The changes of a bucket's keys, in the order they were written."""

    def __init__(
        self,
        watcher: _Watcher,
        bucket: str,
        last: int,
        holds: Callable[[int], Awaitable[bool]],
        remade: Callable[[int], Awaitable[_Watcher]] | None = None,
        watches: OpenWatches | None = None,
    ) -> None:
        self._watcher = watcher
        self._remade = remade  # a new watcher of the same keys, from a given revision on
        self._watches = watches
        self.stopped = False
        self._bucket = bucket
        self._last = last  # the last revision there was at the start (0: none, or expired)
        self._holds = holds
        self._started = False  # every value there was at the start was given
        self.revision = 0  # of the last change given: the bucket as of then is known
        self.repeated = 0  # changes a remade watcher gave again (given already): skipped
        # When the NATS server stored the last change given (seconds since the epoch, on the
        # server's clock; None: not said).
        self.written_at: float | None = None
        self.given: Callable[[str, bool, int, float | None], None] | None = None  # each entry

    async def next(self) -> tuple[str, bool] | None:
        """(key, present: False once deleted or expired); None once, when the values there
        were at the start have all been given."""
        entry = await self._entry()
        if entry is None:
            return None
        return entry.key, entry.operation not in (KV_DEL, KV_PURGE)

    async def value(self) -> tuple[str, bytes | None] | None:
        """As ``next``, with the value (None once deleted or expired)."""
        entry = await self._entry()
        if entry is None:
            return None
        deleted = entry.operation in (KV_DEL, KV_PURGE)
        return entry.key, None if deleted else (entry.value or b"")

    async def _entry(self) -> NatsKeyValue.Entry | None:
        # Values come in revision order: once the start's last revision (or a later one) was
        # given, every value there was at the start was. nats-py's marker (None) is skipped.
        while True:
            if not self._started and self.revision >= self._last:
                self._started = True
                return None
            watcher = self._watcher
            entry = await self._update(watcher)
            if watcher is not self._watcher:
                continue  # remade meanwhile: the new watcher gives what is left to give
            # Given already: counted, so that a remake reading the bucket again would show.
            if not isinstance(entry, NatsKeyValue.Entry):
                continue
            if (entry.revision or 0) <= self.revision:
                self.repeated += 1
                continue
            self.revision = entry.revision or 0
            self.written_at = _stored_at(entry)
            if self.given is not None:
                deleted = entry.operation in (KV_DEL, KV_PURGE)
                self.given(entry.key, not deleted, self.revision, self.written_at)
            return entry

    async def _update(self, watcher: _Watcher) -> object:
        """nats-py's next item; until the start's values are given, a check every ``RECHECK``
        seconds that the last of them is still there (expired, it would never come)."""
        if self._started:
            return await watcher.updates(timeout=None)
        try:
            # With a timeout, nats-py's wait can swallow a cancellation (``cancellable``).
            updates = watcher.updates(timeout=RECHECK)
            return await cancellable(updates)
        except nats.errors.TimeoutError:
            if not await cancellable(self._holds(self._last)):  # a request: the same
                self._last = 0  # expired before it came: nothing more to wait for
            return None

    async def resume(self) -> None:
        """Go on with a new nats-py watcher: the server may have forgotten the old one's
        consumer (restarted), and nats-py would make it again only after two idle heartbeats
        missed. Stopping the old one wakes a ``next`` waiting on it, which reads the new one."""
        if self._remade is None or self.stopped:
            return
        watcher = await self._remade(self.revision + 1)
        if self.stopped:  # while it was being made
            await _stopped(watcher)
            return
        old, self._watcher = self._watcher, watcher
        await _stopped(old)

    async def stop(self) -> None:
        self.stopped = True
        if self._watches is not None:
            self._watches.discard(self)
        await _stopped(self._watcher)


async def _stopped(watcher: _Watcher) -> None:
    with contextlib.suppress(nats.errors.Error):
        await watcher.stop()
