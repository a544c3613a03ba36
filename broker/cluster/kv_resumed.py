"""A key-value watcher that starts at a stream sequence: a watch remade after a reconnection
to NATS (``broker.cluster.kv.Watch.resume``) reads only what changed since the last revision
it gave.

nats-py's own watcher starts with each key's last value (deliver policy "last per
subject"): remade that way, a watch of the routes bucket read the whole route table again
on every reconnection (every member's filters; 20,000 entries: measured in docs/deploy.md)
only to skip them, as given already. This one is a JetStream ordered consumer on the bucket's
stream from the revision after the last given ("by start sequence"): every write, delete
and purge made since, in order. With one value kept per key (``history=1``) the stream holds
no older value of a key than its last, so it gives the same changes as a new watch would,
less those given already. A delete or purge leaves its marker in the stream (until the
bucket's age removes it), so a key deleted while the connection was away is seen deleted,
as with nats-py's watcher.
"""

import asyncio
from typing import Final

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_MARKER_REASON, KV_OP, KV_PURGE
from nats.js.kv import KeyValue as NatsKeyValue

__all__ = ["ResumedWatcher", "watch_from"]

# Changes held before the consumer waits for them to be read (as nats-py's watcher).
_HELD: Final = 256
# Seconds before the server drops the consumer of a watcher nobody reads (as nats-py's).
_INACTIVE: Final = 5 * 60.0
_STOPPED: Final = object()
# The reasons of the markers NATS 2.11+ writes itself (a key aged out or removed).
_MARKERS: Final = {"MaxAge": KV_PURGE, "Purge": KV_PURGE, "Remove": KV_DEL}


class ResumedWatcher:
    """What ``broker.cluster.kv.Watch`` reads of a nats-py watcher: ``updates``, ``stop``."""

    def __init__(self, bucket: str) -> None:
        self._bucket = bucket
        self._prefix = f"$KV.{bucket}."
        self._updates: asyncio.Queue[object] = asyncio.Queue(maxsize=_HELD)
        self._sub: Subscription | None = None

    async def updates(self, timeout: float | None = None) -> object:  # noqa: ASYNC109 (nats-py's)
        try:
            return await asyncio.wait_for(self._updates.get(), timeout)
        except TimeoutError:
            raise nats.errors.TimeoutError from None

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
        while True:  # a reader waiting wakes (``Watch.resume``), however full the queue is
            try:
                self._updates.put_nowait(_STOPPED)
                return
            except asyncio.QueueFull:
                self._updates.get_nowait()

    async def _deliver(self, msg: Msg) -> None:
        operation = None
        headers = msg.headers or {}
        if KV_OP in headers:
            operation = headers[KV_OP]
        elif KV_MARKER_REASON in headers:
            operation = _MARKERS.get(headers[KV_MARKER_REASON])
            if operation is None:
                return  # a marker of a later server's: nothing a key-value change says
        meta = msg.metadata
        entry = NatsKeyValue.Entry(
            bucket=self._bucket,
            key=msg.subject[len(self._prefix) :],
            value=msg.data,
            revision=meta.sequence.stream,
            delta=meta.num_pending,
            created=meta.timestamp,  # type: ignore[arg-type]  # nats-py: a datetime
            operation=operation,
        )
        await self._updates.put(entry)  # waits while _HELD are unread: the consumer waits


async def watch_from(js: JetStreamContext, bucket: str, keys: str, start: int) -> ResumedWatcher:
    """Every change of ``keys`` in ``bucket`` from revision ``start`` on."""
    watcher = ResumedWatcher(bucket)
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(start, 1)
    )
    watcher._sub = await js.subscribe(
        f"$KV.{bucket}.{keys}",
        stream=f"KV_{bucket}",
        cb=watcher._deliver,
        ordered_consumer=True,
        config=config,
        inactive_threshold=_INACTIVE,
    )
    return watcher
