"""Every device's entry in ``<cluster>_devices`` as this member last knew it: what a watch of
the bucket gave, and what this member wrote itself (whichever is the later revision), so that
a connect is decided on it without asking NATS (``broker.cluster.seats``).

The entries are kept as written, every member's seat in them: which of those count (members
live now, in their run) is decided when a connect reads them, as membership changes. A
deleted key is forgotten. The watch is remade after a reconnection to NATS from the revision
after the last it gave (``broker.cluster.kv.Watch``); until it has given every value there
was at its start the view is not ``ready``, and connects ask NATS.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Final

from broker.cluster.kv import KeyValue, Watch
from nanoiot.errors import ClusterError
from nanoiot.tasks import cancel_and_wait, cancellable

__all__ = ["Seat", "SeatView", "decode", "encode"]

log = logging.getLogger(__name__)

Seat = tuple[int, float, int, int]  # pid, started, run, sessions held
# Deleted keys whose revision is kept (a reply to a write is late by a request's timeout at
# most; a reply later than this many deletions would show the key again until its next write).
_DELETIONS_KEPT: Final = 4096
_RETRY: Final = 5.0  # seconds before opening the watch again, unless NATS is back sooner


class SeatView:
    """The devices bucket by key: ``(revision, seats)``; ``on_entry(key, seats)`` is told of
    each entry kept ({}: deleted), given by the watch or written by this member."""

    def __init__(self, bucket: KeyValue, on_entry: Callable[[str, dict[str, Seat]], None]) -> None:
        self.bucket = bucket
        self._on_entry = on_entry
        self._entries: dict[str, tuple[int, dict[str, Seat]]] = {}
        self._deleted: dict[str, int] = {}  # the revisions of the last keys deleted
        self._ready = asyncio.Event()  # the watch gave every value there was at its start
        self._back = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def until_ready(self) -> None:
        await self._ready.wait()

    def __len__(self) -> int:
        return len(self._entries)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="device seats")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._ready.clear()
        if task is not None:
            await cancel_and_wait(task)

    def back(self) -> None:
        """NATS is back: a watch that could not be opened is opened again at once."""
        self._back.set()

    def seats(self, key: str) -> dict[str, Seat]:
        """The seats of ``key``'s last entry known ({} if none)."""
        found = self._entries.get(key)
        return {} if found is None else found[1]

    def fold(self, key: str, revision: int, seats: dict[str, Seat]) -> bool:
        """Keep ``seats`` as ``key``'s entry at ``revision`` ({}: deleted), unless a later one is
        known; whether it was kept."""
        known = self._entries.get(key)
        latest = known[0] if known is not None else self._deleted.get(key, 0)
        if latest >= revision:
            return False
        if seats:
            self._deleted.pop(key, None)
            self._entries[key] = (revision, seats)
            self._on_entry(key, seats)
            return True
        # A deletion forgets the key, but not at once its revision: a reply to this member's
        # own earlier write can come after the watch gave the deletion (they are read apart).
        self._entries.pop(key, None)
        self._deleted[key] = revision
        if len(self._deleted) > _DELETIONS_KEPT:
            del self._deleted[next(iter(self._deleted))]
        self._on_entry(key, seats)
        return True

    async def _follow(self) -> None:
        """Open the watch and follow it; opened again (connects asking NATS meanwhile) if
        NATS refused it, within ``_RETRY`` seconds or as soon as NATS is back."""
        while True:
            try:  # nats-py's waits can swallow the stop's cancellation (``nanoiot.tasks``)
                watch = await cancellable(self.bucket.watch())
            except ClusterError as exc:
                log.debug("device seats watch not opened: %s", exc)
            else:
                try:
                    await self._read(watch)
                except ClusterError as exc:  # before its start was given: NATS lost meanwhile
                    log.debug("device seats watch ended: %s", exc)
                except Exception:  # not NATS: opening it again is all there is to do
                    log.exception("device seats watch ended")
                finally:
                    self._ready.clear()
                    await watch.stop()
            self._back.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_RETRY):
                    await self._back.wait()

    async def _read(self, watch: Watch) -> None:
        while True:
            change = await cancellable(watch.value())  # else the stop waited for ever
            if change is None:  # every value there was at its start was given
                self._ready.set()
                continue
            key, value = change
            self.fold(key, watch.revision, decode(value) if value is not None else {})


def encode(seats: dict[str, Seat]) -> bytes:
    return json.dumps(seats, separators=(",", ":"), sort_keys=True).encode()


def decode(value: bytes) -> dict[str, Seat]:
    """The seats an entry holds; an unreadable one (another version's) holds none."""
    try:
        raw = json.loads(value)
        return {
            str(name): (int(s[0]), float(s[1]), int(s[2]), int(s[3])) for name, s in raw.items()
        }
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        log.warning("device seats entry unreadable: ignored")
        return {}
