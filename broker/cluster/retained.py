"""Retained messages cluster-wide: every node keeps the same ones (MQTT 3.1.1 §3.3.1.3).

A retained message a node keeps (within its limits, ``broker.retained``) or deletes is
written to the JetStream key-value bucket ``<cluster>_retained``, one key per topic (base64url,
or the digest of a long topic: ``broker.cluster.frames.to_key``; the value names the topic);
every node watches the bucket and applies the others' changes to its own ``RetainedStore``
as they are, never refusing one for its own limits (the writer checked them), so that every
node keeps what the bucket holds. A node that starts reads them all before it accepts
clients, so a subscriber on any node gets the retained messages published on any other, and
they outlive a restart of every node (JetStream keeps them on disk). A message's expiry
(MQTT 5 §3.3.2.3.3) is stored as the time left and the wall-clock time it was written,
each process's loop clock being its own. The broker's own ``$SYS`` messages are not
replicated: each node has its figures.

A write happens after the publisher's PUBACK may have gone: another node sees a retained
message about a millisecond after it was published.
"""

import asyncio
import logging
import struct
import time
from typing import Final

from broker.cluster.frames import decode, encode, from_key, is_digest, to_key
from broker.cluster.kv import KeyValue, Watch
from broker.cluster.pending_writes import PendingWrites
from broker.retained import Retained, RetainedStore
from broker.router import Message
from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_all_and_wait, cancel_requested, cancellable

__all__ = ["BUCKET", "RetainedReplica"]

log = logging.getLogger(__name__)

BUCKET: Final = "retained"
_HEAD: Final = struct.Struct(">dH")


class RetainedReplica:
    def __init__(self, bucket: KeyValue, store: RetainedStore) -> None:
        self.bucket = bucket
        self.store = store
        self._writes = PendingWrites(shared=True)  # the latest change of each topic
        self._tasks: list[asyncio.Task[None]] = []
        self._long: dict[str, str] = {}  # digest key -> topic, to delete it by its key

    async def start(self) -> int:
        """Take in every retained message the cluster has; how many. Then follow changes."""
        watch = await self.bucket.watch()
        count = 0
        while (change := await watch.value()) is not None:
            count += self._apply(*change)
        self.store.replica = self._changed
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._follow(watch), name="cluster retained watch"),
            loop.create_task(self._write(), name="cluster retained writer"),
        ]
        return count

    async def stop(self) -> None:
        self.store.replica = None
        tasks, self._tasks = self._tasks, []
        await cancel_all_and_wait(tasks)

    def _changed(self, topic: str, retained: Retained | None) -> None:
        self._writes.change(to_key(topic), None if retained is None else _value(retained))

    def _apply(self, key: str, value: bytes | None) -> int:
        try:
            if value is None:
                topic = self._long.pop(key, None) if is_digest(key) else from_key(key)
                if topic is not None:
                    self.store.retain(topic, b"", 0, None, replicate=False)
                return 0
            owner, message = _parse(value)
            topic = message.topic
            if to_key(topic) != key:
                raise ValueError("its topic is not the one its key names")
        except (ClusterError, ValueError) as exc:
            log.warning("retained message %s in %s unreadable: %s", key[:100], BUCKET, exc)
            return 0
        if is_digest(key):
            self._long[key] = topic
        # Kept whatever this node's limits: the writer checked them (``RetainedStore.retain``).
        self.store.retain(
            topic, message.payload, message.qos, owner or None, message.properties,
            message.expires_at, replicate=False,
        )  # fmt: skip
        return 1

    async def _follow(self, watch: Watch) -> None:
        while True:
            change = await cancellable(watch.value())  # a stop's cancellation nats-py lost
            if change is not None:
                self._apply(*change)

    async def _write(self) -> None:
        """One writer, the latest change of each topic in the order the topics first changed
        (``broker.cluster.pending_writes``); a write NATS refuses is retried."""
        while True:
            key, value = await self._writes.next()
            while True:
                try:
                    if value is None:
                        await self.bucket.delete(key)
                    else:
                        await self.bucket.put(key, value)
                    break
                except ClusterError as exc:
                    log.warning("%s (retrying)", exc)
                    await asyncio.sleep(1.0)
            self._writes.done(key, value)
            if cancel_requested():  # lost in nats-py's wait (``nanoiot.tasks``): stopping
                raise asyncio.CancelledError


def _value(retained: Retained) -> bytes:
    """written at (wall clock, 8) | owner length (2) | owner | one frame record
    (``broker.cluster.frames``: its expiry is the time left when written)."""
    owner = (retained.owner or "").encode()
    record = bytearray(_HEAD.pack(time.time(), len(owner)) + owner)
    message = Message(
        retained.topic, retained.payload, retained.qos, True, retained.properties,
        retained.expires_at,
    )  # fmt: skip
    encode(message, record, asyncio.get_running_loop().time())
    return bytes(record)


def _parse(value: bytes) -> tuple[str, Message]:
    written, length = _HEAD.unpack_from(value)
    owner = value[_HEAD.size : _HEAD.size + length].decode()
    # The time left when written, less the time since (wall clocks of two hosts agree to
    # what NTP gives; an expiry is in seconds).
    now = asyncio.get_running_loop().time() - max(0.0, time.time() - written)
    (routed,) = decode(value[_HEAD.size + length :], now)
    return owner, routed.message
