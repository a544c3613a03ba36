"""Changes waiting for a key-value bucket's one writer: the latest change of each key, in the
order the keys first waited (``broker.cluster.routes``, ``broker.cluster.retained``).

Clients decide how often a member writes: each first subscription to a filter on a member and
each last unsubscription is a write to the routes bucket, and each retained message kept or
deleted one to the retained bucket. A client may subscribe and unsubscribe, or publish a
retained message, in a loop (MQTT sets no rate), faster than NATS takes writes (a few thousand
a second). Queued one by one, such a loop grew the queue without bound (a retained message
each, up to max_packet_size) and every other client's route or retained message waited behind
it (20,000 subscribe/unsubscribe pairs sent in half a second delayed another client's route by
5 s, its messages from other members unrouted meanwhile). So a key changed again before it was
written is written once, in its latest state; and in a bucket whose keys only this member
writes (its routes), a key written and deleted again before it was written costs no write at
all. What waits is bounded by the keys there are (a member's filters, the retained topics).
"""

import asyncio
from collections.abc import Iterable

__all__ = ["PendingWrites"]


class PendingWrites:
    """``shared``: other members write the bucket's keys too, so a delete is always written
    (this member cannot tell whether the key holds a value)."""

    def __init__(self, *, shared: bool = False) -> None:
        self._shared = shared
        # Key -> (value to write, None: delete; the change it first waited at). A key keeps
        # its place when changed again, so the order is that of the first changes.
        self._pending: dict[str, tuple[bytes | None, int]] = {}
        self._stored: set[str] = set()  # this member's keys in the bucket, as written so far
        self._writing: tuple[str, int] | None = None  # the key being written, and its change
        self._count = 0  # changes so far
        self._markers: list[tuple[int, asyncio.Future[None]]] = []  # (changes before it, ...)
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def stored(self, keys: Iterable[str]) -> None:
        """``keys`` are in the bucket (left by this member's previous run)."""
        self._stored.update(keys)

    def change(self, key: str, value: bytes | None) -> None:
        """Write ``value`` to ``key`` (None: delete it)."""
        self._count += 1
        writing = self._writing is not None and self._writing[0] == key
        if value is None and not self._shared and key not in self._stored and not writing:
            if self._pending.pop(key, None) is not None:  # never written: nothing to delete
                self._settle()
            return
        waiting = self._pending.get(key)
        self._pending[key] = (value, self._count if waiting is None else waiting[1])
        self._ready.set()

    def written(self) -> "asyncio.Future[None]":
        """Done once every change made so far is in the bucket."""
        marker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._markers.append((self._count, marker))
        self._settle()
        return marker

    async def next(self) -> tuple[str, bytes | None]:
        """The next key to write and its value; ``done`` once written."""
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
        key = next(iter(self._pending))
        value, first = self._pending.pop(key)
        self._writing = (key, first)
        return key, value

    def done(self, key: str, value: bytes | None) -> None:
        if value is None:
            self._stored.discard(key)
        else:
            self._stored.add(key)
        self._writing = None
        self._settle()

    def _settle(self) -> None:
        """Markers with no change at or before theirs still waiting: done."""
        if not self._markers:
            return
        firsts = [self._writing[1]] if self._writing is not None else []
        oldest = next(iter(self._pending.values()), None)  # the order is the first changes'
        if oldest is not None:
            firsts.append(oldest[1])
        low = min(firsts, default=self._count + 1)
        still = []
        for count, marker in self._markers:
            if count < low:
                if not marker.done():
                    marker.set_result(None)
            else:
                still.append((count, marker))
        self._markers = still
