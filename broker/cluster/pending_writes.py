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

A member writes every filter of the sessions it restores that the bucket lacks (all of them
for a member whose routes a survivor deleted: 60,000 for 20,000 sessions, 40 s of writes). A
client connecting meanwhile waited behind them all for its own few, and a client subscribing
had its route written only after them. So a change is written
now (a client's) or later (a restore's, ``later``): the later ones go once no other waits, a
key changed now leaves the later ones, and a wait may be for some keys only (``keys_written``).
A key is pending once at most, whichever way, and one writer writes: each key's changes are
still written in their order.
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
        # its place when changed again, so the order is that of the first changes; a key is
        # in one of them at most, the later ones written once no other waits.
        self._pending: dict[str, tuple[bytes | None, int]] = {}
        self._later: dict[str, tuple[bytes | None, int]] = {}
        self._stored: set[str] = set()  # this member's keys in the bucket, as written so far
        self._writing: tuple[str, int] | None = None  # the key being written, and its change
        self._count = 0  # changes so far
        self._markers: list[tuple[int, asyncio.Future[None]]] = []  # (changes before it, ...)
        self._awaited: dict[str, list[_KeysWaiter]] = {}  # key -> the waits for it
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending) + len(self._later)

    def stored(self, keys: Iterable[str]) -> None:
        """``keys`` are in the bucket (left by this member's previous run)."""
        self._stored.update(keys)

    def change(self, key: str, value: bytes | None, *, later: bool = False) -> None:
        """Write ``value`` to ``key`` (None: delete it); ``later``: once no change made
        without it waits (a key changed without it is written with those)."""
        self._count += 1
        writing = self._writing is not None and self._writing[0] == key
        if value is None and not self._shared and key not in self._stored and not writing:
            dropped = self._pending.pop(key, None) or self._later.pop(key, None)
            if dropped is not None:  # never written: nothing to delete
                self._settle()
                self._key_settled(key)
            return
        waiting = self._pending.get(key)
        if waiting is None:
            waiting = self._later.pop(key, None) if not later else self._later.get(key)
        lane = self._later if later and key not in self._pending else self._pending
        lane[key] = (value, self._count if waiting is None else waiting[1])
        self._ready.set()

    def idle(self, key: str) -> bool:
        """No change of ``key`` waits or is being written."""
        writing = self._writing is not None and self._writing[0] == key
        return not writing and key not in self._pending and key not in self._later

    def hurry(self, keys: Iterable[str]) -> None:
        """The later changes of ``keys`` are written with those made without ``later``."""
        for key in keys:
            waiting = self._later.pop(key, None)
            if waiting is not None:
                self._pending[key] = waiting

    def keys_written(self, keys: Iterable[str]) -> "asyncio.Future[None]":
        """Done once every change made so far to ``keys`` is in the bucket."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _KeysWaiter(self._count, future)
        for key in keys:
            if self._waits_for(key, waiter.count) and key not in waiter.left:
                waiter.left.add(key)
                self._awaited.setdefault(key, []).append(waiter)
        if not waiter.left:
            future.set_result(None)
        return future

    def written(self) -> "asyncio.Future[None]":
        """Done once every change made so far is in the bucket."""
        marker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._markers.append((self._count, marker))
        self._settle()
        return marker

    async def next(self) -> tuple[str, bytes | None]:
        """The next key to write and its value; ``done`` once written."""
        while not self._pending and not self._later:
            self._ready.clear()
            await self._ready.wait()
        lane = self._pending or self._later
        key = next(iter(lane))
        value, first = lane.pop(key)
        self._writing = (key, first)
        return key, value

    def done(self, key: str, value: bytes | None) -> None:
        if value is None:
            self._stored.discard(key)
        else:
            self._stored.add(key)
        self._writing = None
        self._settle()
        self._key_settled(key)

    def _waits_for(self, key: str, count: int) -> bool:
        """A change of ``key`` at or before change ``count`` is not in the bucket yet."""
        if self._writing is not None and self._writing[0] == key:
            return True
        waiting = self._pending.get(key) or self._later.get(key)
        return waiting is not None and waiting[1] <= count

    def _key_settled(self, key: str) -> None:
        """``key`` written or dropped: the waits with no change of it left to wait for."""
        waiters = self._awaited.pop(key, None)
        if waiters is None:
            return
        still = []
        for waiter in waiters:
            if self._waits_for(key, waiter.count):
                still.append(waiter)
                continue
            waiter.left.discard(key)
            if not waiter.left and not waiter.future.done():
                waiter.future.set_result(None)
        if still:
            self._awaited[key] = still

    def _settle(self) -> None:
        """Markers with no change at or before theirs still waiting: done."""
        if not self._markers:
            return
        firsts = [self._writing[1]] if self._writing is not None else []
        oldest = next(iter(self._later.values()), None)  # the order is the first changes'
        if oldest is not None:
            firsts.append(oldest[1])
        # ... but not among those written first: a later one hurried keeps its first change
        firsts.extend(first for _value, first in self._pending.values())
        low = min(firsts, default=self._count + 1)
        still = []
        for count, marker in self._markers:
            if count < low:
                if not marker.done():
                    marker.set_result(None)
            else:
                still.append((count, marker))
        self._markers = still


class _KeysWaiter:
    """A wait for the changes of some keys made up to change ``count``."""

    __slots__ = ("count", "future", "left")

    def __init__(self, count: int, future: "asyncio.Future[None]") -> None:
        self.count = count
        self.future = future
        self.left: set[str] = set()  # the keys with such a change not in the bucket yet
