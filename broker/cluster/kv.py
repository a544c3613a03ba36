"""A JetStream key-value bucket with compare-and-set, in NanoIoT's terms.

What a cluster needs from it: ``create`` succeeds for one writer only (a take-over lock, a
session's owner), ``update`` succeeds only if nobody wrote since the revision read (CAS), and
a bucket made with a TTL forgets an entry that was not rewritten in time (node liveness).
A lost race is a ``ClusterConflictError``; an unreachable NATS a ``ClusterUnavailableError``.
"""

import contextlib
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js.kv import KV_DEL, KV_PURGE
from nats.js.kv import KeyValue as NatsKeyValue

from broker.cluster.errors import nats_errors

__all__ = ["Entry", "KeyValue", "Watch"]


@dataclass(frozen=True)
class Entry:
    value: bytes
    revision: int  # pass to update() to write only if nobody wrote since


class KeyValue:
    def __init__(self, store: NatsKeyValue, bucket: str) -> None:
        self._store = store
        self.bucket = bucket

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

    async def delete(self, key: str, revision: int | None = None) -> None:
        """Delete ``key`` (only at ``revision``, when given)."""
        with nats_errors(f"deleting {self.bucket}/{key}"):
            await self._store.delete(key, last=revision)

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
        with nats_errors(f"watching {self.bucket}"):
            return Watch(await self._store.watch(keys), self.bucket)


class Watch:
    """The changes of a bucket's keys, in the order they were written."""

    def __init__(self, watcher: NatsKeyValue.KeyWatcher, bucket: str) -> None:
        self._watcher = watcher
        self._bucket = bucket
        self.revision = 0  # of the last change given: the bucket as of then is known

    async def next(self) -> tuple[str, bool] | None:
        """(key, present: False once deleted or expired); None once, when the values there
        were at the start have all been given."""
        while True:
            entry = await self._watcher.updates(timeout=None)  # type: ignore[no-untyped-call]
            if entry is None:
                return None
            if isinstance(entry, NatsKeyValue.Entry):
                self.revision = max(self.revision, entry.revision or 0)
                return entry.key, entry.operation not in (KV_DEL, KV_PURGE)

    async def value(self) -> tuple[str, bytes | None] | None:
        """As ``next``, with the value (None once deleted or expired)."""
        while True:
            entry = await self._watcher.updates(timeout=None)  # type: ignore[no-untyped-call]
            if entry is None:
                return None
            if isinstance(entry, NatsKeyValue.Entry):
                self.revision = max(self.revision, entry.revision or 0)
                deleted = entry.operation in (KV_DEL, KV_PURGE)
                return entry.key, None if deleted else (entry.value or b"")

    async def stop(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self._watcher.stop()  # type: ignore[no-untyped-call]
