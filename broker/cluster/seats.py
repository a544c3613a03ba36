"""``max_sessions_per_device`` across the cluster: the seats each member holds, per device.

The bucket ``<cluster>_devices`` has one key per device whose sessions some member holds; its
value maps each member to the process and run that wrote it and the sessions it holds for
the device (``{"a": [pid, started, run, count]}``). Only the entries of members live now, in
the run their heartbeats say (``broker.cluster.members``), count: a dead member's sessions,
or a fenced-off run's, are taken over by the member their device connects to next (a take-over
of an existing session, not a new seat), so its count would otherwise hold seats for good.

- ``reserve``: before a connect starts a NEW session here (none here, none in the shared store
  for it), one compare-and-set: the others' counts plus this member's own plus one, past the
  limit the connect is refused as on one node (``SessionQuotaExceeded``); else this member's
  count, one more, is written. A take-over, an adoption or a restore takes no seat this way.
- ``changed``: the session table says each add and remove; a writer rewrites this member's
  count for those devices in the background, many changes of a device in one write, a window
  of devices at a time (a restore of thousands of sessions is not a write each in the connects
  of others), and again after NATS comes back. Reservations and writes of one device take
  turns, so a write never lowers a count a reservation just raised.
- ``settle``: a member giving a session up to another member's connect writes its count
  first, so that the connect that takes it (Clean Start) finds its seat free.

A device none of whose members holds a session has no key (its delete marker is purged with
the other buckets', ``broker.cluster.compaction``). If NATS cannot be reached a connect is
checked against this member's own sessions only (logged, once per outage), as a claim goes on
without NATS (``broker.cluster.sessions``).
"""

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

from broker.cluster.frames import to_key
from broker.cluster.kv import Entry, KeyValue
from broker.cluster.members import MemberRegistry
from nanoiot.errors import (
    ClusterConflictError,
    ClusterError,
    ClusterUnavailableError,
    SessionQuotaExceeded,
)
from nanoiot.tasks import cancel_and_wait

__all__ = ["BUCKET", "DeviceSeats"]

log = logging.getLogger(__name__)

BUCKET: Final = "devices"
_ATTEMPTS: Final = 5  # compare-and-set rounds lost to other members before giving up
# Devices the writer writes at once: 5,000 devices' counts took 1.9 s at 16 or 64 at a time
# on a 2-core machine, and a connect's reservation meanwhile 22 ms at 16, 50 ms at 64 (it
# shares the connection to NATS).
_WINDOW: Final = 16
_RETRY: Final = 5.0  # seconds before writing again what NATS refused, unless it is back sooner

Seat = tuple[int, float, int, int]  # pid, started, run, sessions held


class DeviceSeats:
    """This member's seats in ``<cluster>_devices``; ``held(device)``: its sessions here."""

    def __init__(
        self, bucket: KeyValue, members: MemberRegistry, held: Callable[[str], int]
    ) -> None:
        self.bucket = bucket
        self.members = members
        self._held = held
        self._dirty: set[str] = set()  # devices whose count here changed since written
        self._written: dict[str, int] = {}  # the count this member last wrote, by device
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._wake = asyncio.Event()
        self._back = asyncio.Event()  # NATS is back: what failed is written again
        self._away = False  # NATS refused a read or write (logged once until it works again)
        self._run = members.run
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.members.link.on_reconnected(self._back.set)
        self.members.on_renewed(self._renewed)
        self._task = asyncio.get_running_loop().create_task(self._writer(), name="device seats")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    def changed(self, device_id: str) -> None:
        """The sessions ``device_id`` holds here changed: its count is written soon."""
        self._dirty.add(device_id)
        self._wake.set()

    async def reserve(self, device_id: str, limit: int) -> None:
        """One more session of ``device_id`` here, if the cluster's count allows it; else
        ``SessionQuotaExceeded``. The caller adds the session to its table before it awaits
        anything (the count written includes it)."""
        async with self._turn(device_id):
            try:
                if not self.members.link.connected:  # known lost: no request's timeout
                    raise ClusterUnavailableError("the connection to NATS is down")
                await self._reserve(device_id, limit)
            except ClusterError as exc:
                self._unreachable(exc, "connects are checked against this node's sessions")
                if self._held(device_id) + 1 > limit:
                    raise SessionQuotaExceeded(
                        f"the device holds max_sessions_per_device ({limit})"
                    ) from None
            else:
                self._reached()

    async def settle(self, device_id: str) -> None:
        """Write ``device_id``'s count now (a session of its was given up to another member);
        if NATS refuses, the writer writes it later."""
        self._dirty.discard(device_id)
        try:
            await self._write(device_id)
        except ClusterError as exc:
            self._unreachable(exc, "written when it is back")
            self.changed(device_id)

    async def _reserve(self, device_id: str, limit: int) -> None:
        key = to_key(device_id)
        for _ in range(_ATTEMPTS):
            entry = await self.bucket.get(key)
            seats = self._live_seats(entry)
            others = sum(seat[3] for name, seat in seats.items() if name != self.members.name)
            own = self._held(device_id) + 1
            if others + own > limit:
                raise SessionQuotaExceeded(
                    f"the device holds max_sessions_per_device ({limit}) across the cluster"
                )
            seats[self.members.name] = self._mine(own)
            if await self._put(key, entry, seats):
                self._written[device_id] = own
                return
        raise ClusterConflictError(f"{_ATTEMPTS} compare-and-set rounds lost")

    async def _write(self, device_id: str) -> None:
        """This member's count of ``device_id`` as its table has it now."""
        async with self._turn(device_id):
            own = self._held(device_id)
            if own == self._written.get(device_id, 0):
                return  # written already (by the reservation that made it, often)
            key = to_key(device_id)
            for _ in range(_ATTEMPTS):
                entry = await self.bucket.get(key)
                seats = self._live_seats(entry)
                if own:
                    seats[self.members.name] = self._mine(own)
                else:
                    seats.pop(self.members.name, None)
                if await self._put(key, entry, seats):
                    if own:
                        self._written[device_id] = own
                    else:
                        self._written.pop(device_id, None)
                    return
            raise ClusterConflictError(f"{_ATTEMPTS} compare-and-set rounds lost")

    async def _put(self, key: str, entry: Entry | None, seats: dict[str, Seat]) -> bool:
        """Write ``seats`` over ``entry`` (the key deleted if none are left); False if another
        member wrote it since it was read."""
        try:
            if not seats:
                if entry is not None:
                    await self.bucket.delete(key, entry.revision)
            elif entry is None:
                await self.bucket.create(key, _encode(seats))
            else:
                await self.bucket.update(key, _encode(seats), entry.revision)
        except ClusterConflictError:
            return False
        return True

    def _live_seats(self, entry: Entry | None) -> dict[str, Seat]:
        """The seats of ``entry`` that count: members live now, in the run that wrote them
        (this member's own too, whatever it says: it is rewritten from its table)."""
        seats = _decode(entry.value) if entry is not None else {}
        kept: dict[str, Seat] = {}
        for name, seat in seats.items():
            member = self.members.entry(name)
            if member is not None and (member.pid, member.started, member.run) == seat[:3]:
                kept[name] = seat
        return kept

    def _mine(self, count: int) -> Seat:
        return (os.getpid(), self.members.started, self.members.run, count)

    def _renewed(self, _began: float, run: int) -> None:
        """A heartbeat of a new run (back from fencing): the others ignore what the ended
        run wrote, so every count held here is written again."""
        if run == self._run:
            return
        self._run = run
        for device_id in self._written:
            self._dirty.add(device_id)
        self._written.clear()
        self._wake.set()

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                batch = [self._dirty.pop() for _ in range(min(_WINDOW, len(self._dirty)))]
                found = await asyncio.gather(*map(self._write, batch), return_exceptions=True)
                failed = [d for d, r in zip(batch, found, strict=True) if r is not None]
                for result in found:
                    if isinstance(result, ClusterError):
                        self._unreachable(result, "written when it is back")
                    elif isinstance(result, BaseException):
                        log.error("device seats not written", exc_info=result)
                if not failed:
                    self._reached()
                    continue
                self._dirty.update(failed)
                self._back.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_RETRY):  # or as soon as NATS is back
                        await self._back.wait()

    def _unreachable(self, exc: ClusterError, then: str) -> None:
        if not self._away:
            self._away = True
            log.warning("device seats (max_sessions_per_device): %s; %s", exc, then)

    def _reached(self) -> None:
        if self._away:
            self._away = False
            log.info("device seats (max_sessions_per_device) written again")

    @asynccontextmanager
    async def _turn(self, device_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(device_id, (asyncio.Lock(), 0))
        self._locks[device_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[device_id]
            if users == 1:
                del self._locks[device_id]
            else:
                self._locks[device_id] = (lock, users - 1)


def _encode(seats: dict[str, Seat]) -> bytes:
    return json.dumps(seats, separators=(",", ":"), sort_keys=True).encode()


def _decode(value: bytes) -> dict[str, Seat]:
    """The seats an entry holds; an unreadable one (another version's) holds none."""
    try:
        raw = json.loads(value)
        return {
            str(name): (int(s[0]), float(s[1]), int(s[2]), int(s[3])) for name, s in raw.items()
        }
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        log.warning("device seats entry unreadable: ignored")
        return {}
