"""``max_sessions_per_device`` across the cluster: the seats each member holds, per device.

The bucket ``<cluster>_devices`` has one key per device whose sessions some member holds; its
value maps each member to the process and run that wrote it and the sessions it holds for
the device (``{"a": [pid, started, run, count]}``). Only the entries of members live now, in
the run their heartbeats say (``broker.cluster.members``), count: a dead member's sessions,
or a fenced-off run's, are taken over by the member their device connects to next (a take-over
of an existing session, not a new seat), so its count would otherwise hold seats for good.
Its entry stays in the key until a live member writes the key, counting for nobody.

- ``reserve``: before a connect starts a NEW session here (none here, none in the shared store
  for it). Every member watches the bucket (``broker.cluster.seat_view``); a connect whose
  device, as the watch has it, leaves a seat free for one more session here and one more on
  every other live member is admitted without asking NATS. Else, one compare-and-set: the
  others' counts plus this member's own plus one, past the limit the connect is refused as
  on one node (``SessionQuotaExceeded``); else this member's count, one more, is written.
  Why both: two members taking the last seat at once both ask, and the compare-and-set lets
  one through. One admitted without asking is written by the writer soon after; until it is,
  the device's next connect here asks (so each member holds at most one session not written
  yet, which the free seat left for every other member covers). What the watch has not given
  yet is not covered: others filling more than those free seats faster than this member's
  watch shows it let a connect here through past the limit (logged when its count is
  written). A take-over, an adoption or a restore takes no seat this way.
- ``changed``: the session table says each add and remove; a writer rewrites this member's
  count for those devices in the background, many changes of a device in one write, a window
  of devices at a time (a restore of thousands of sessions is not a write each in the connects
  of others), again after NATS comes back, and when the watch shows this member's count not
  as its table has it (another member dropped it, taking this one as gone for a while). A
  connect never waits for it: the writer and
  the compare-and-sets of connects write by compare-and-set on the device's key, each counting
  what the table holds with the connects under way, and the one that lost reads it again.
- ``settle``: a member giving a session up to another member's connect writes its count
  first, so that the connect that takes it (Clean Start) finds its seat free.

A device none of whose members holds a session has no key (its delete marker is purged with
the other buckets', ``broker.cluster.compaction``). If NATS cannot be reached a connect is
checked against this member's own sessions only (logged, once per outage), as a claim goes on
without NATS (``broker.cluster.sessions``). While a member restores its sessions from the
store, those not read yet hold no seat (as on one node).
"""

import asyncio
import contextlib
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

from broker.cluster.frames import to_key
from broker.cluster.kv import Entry, KeyValue
from broker.cluster.members import MemberRegistry
from broker.cluster.seat_view import Seat, SeatView, decode, encode
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


class DeviceSeats:
    """This member's seats in ``<cluster>_devices``; ``held(device)``: its sessions here."""

    def __init__(
        self, bucket: KeyValue, members: MemberRegistry, held: Callable[[str], int]
    ) -> None:
        self.bucket = bucket
        self.members = members
        self._held = held
        self.view = SeatView(bucket, self._seen)
        self._dirty: set[str] = set()  # devices whose count here changed since written
        self._mine: dict[str, str] = {}  # device by key, of those this member wrote a seat in
        self._unwritten: set[str] = set()  # admitted without asking NATS, count not written
        self._reserving: Counter[str] = Counter()  # compare-and-sets under way, by device
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._wake = asyncio.Event()
        self._back = asyncio.Event()  # NATS is back: what failed is written again
        self._away = False  # NATS refused a read or write (logged once until it works again)
        self._run = members.run
        self._limit: int | None = None  # max_sessions_per_device, as the last connect said
        self._task: asyncio.Task[None] | None = None
        self.decided_here = 0  # reservations admitted on the watch's view, without NATS
        self.asked = 0  # reservations that asked NATS (a compare-and-set)

    def start(self) -> None:
        self.members.link.on_reconnected(self._back.set)
        self.members.link.on_reconnected(self.view.back)
        self.members.on_renewed(self._renewed)
        self.view.start()
        self._task = asyncio.get_running_loop().create_task(self._writer(), name="device seats")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        await self.view.stop()

    def changed(self, device_id: str) -> None:
        """The sessions ``device_id`` holds here changed: its count is written soon."""
        self._dirty.add(device_id)
        self._wake.set()

    async def reserve(self, device_id: str, limit: int) -> None:
        """One more session of ``device_id`` here, if the cluster's count allows it; else
        ``SessionQuotaExceeded``. The caller adds the session to its table before it awaits
        anything (the count written includes it)."""
        self._limit = limit
        if self._admitted_here(device_id, limit):
            return
        async with self._turn(device_id):
            self._reserving[device_id] += 1
            try:
                if not self.members.link.connected:  # known lost: no request's timeout
                    raise ClusterUnavailableError("the connection to NATS is down")
                self.asked += 1
                await self._reserve(device_id, limit)
            except ClusterError as exc:
                self._unreachable(exc, "connects are checked against this node's sessions")
                if self._held(device_id) + 1 > limit:
                    raise SessionQuotaExceeded(
                        f"the device holds max_sessions_per_device ({limit})"
                    ) from None
            else:
                self._reached()
            finally:
                self._reserving[device_id] -= 1
                if not self._reserving[device_id]:
                    del self._reserving[device_id]

    def _admitted_here(self, device_id: str, limit: int) -> bool:
        """Whether the watch's view of the device leaves a seat free for one more session
        here and one more on each other live member (a session each may hold, admitted so,
        not written yet), with nothing of the device under way here: then the connect is
        admitted without asking NATS."""
        if not self.view.ready or not self.members.link.connected:
            return False
        if device_id in self._unwritten or device_id in self._locks:
            return False
        me = self.members.name
        live = self._live_seats(self.view.seats(to_key(device_id)))
        others = sum(seat[3] for name, seat in live.items() if name != me)
        members = sum(1 for member in self.members.live() if member.name != me)
        if others + self._held(device_id) + 1 + members >= limit:
            return False
        self._unwritten.add(device_id)
        self.decided_here += 1
        return True

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
            seats = self._live_seats(decode(entry.value) if entry is not None else {})
            others = sum(seat[3] for name, seat in seats.items() if name != self.members.name)
            own = self._held(device_id) + 1
            if others + own > limit:
                raise SessionQuotaExceeded(
                    f"the device holds max_sessions_per_device ({limit}) across the cluster"
                )
            if await self._put(device_id, entry, seats, own):
                return
        raise ClusterConflictError(f"{_ATTEMPTS} compare-and-set rounds lost")

    async def _write(self, device_id: str) -> None:
        """This member's count of ``device_id`` as its table has it now, with the connects
        under way here (their sessions are not in the table yet)."""
        key = to_key(device_id)
        if self._shows(key, self._count(device_id)):
            self._unwritten.discard(device_id)  # written already (by its reservation, often)
            return
        for _ in range(_ATTEMPTS):
            entry = await self.bucket.get(key)
            seats = self._live_seats(decode(entry.value) if entry is not None else {})
            if await self._put(device_id, entry, seats, self._count(device_id)):
                return
        raise ClusterConflictError(f"{_ATTEMPTS} compare-and-set rounds lost")

    def _count(self, device_id: str) -> int:
        return self._held(device_id) + self._reserving[device_id]

    async def _put(
        self, device_id: str, entry: Entry | None, seats: dict[str, Seat], own: int
    ) -> bool:
        """Write ``seats`` with this member's ``own`` count over ``entry`` (the key deleted if
        none are left); False if another member wrote it since it was read."""
        key = to_key(device_id)
        written = device_id in self._unwritten  # the count counts it: read after it was added
        if own:
            seats[self.members.name] = (os.getpid(), self.members.started, self.members.run, own)
        else:
            seats.pop(self.members.name, None)
        try:
            if not seats:
                revision = 0 if entry is None else await self.bucket.delete(key, entry.revision)
            elif entry is None:
                revision = await self.bucket.create(key, encode(seats))
            else:
                revision = await self.bucket.update(key, encode(seats), entry.revision)
        except ClusterConflictError:
            return False
        if revision:
            self.view.fold(key, revision, seats)
        if own:
            self._mine[key] = device_id
        else:
            self._mine.pop(key, None)
        if written:
            self._unwritten.discard(device_id)
            self._over(device_id, seats)
        return True

    def _over(self, device_id: str, seats: dict[str, Seat]) -> None:
        """Say so if a session admitted without asking NATS took the device past its limit
        (others filled the seats left free faster than the watch showed it here)."""
        total = sum(seat[3] for seat in seats.values())
        limit = self._limit
        if limit is not None and total > limit:
            log.warning("device %r holds %d sessions across the cluster, past "
                        "max_sessions_per_device (%d): connects on several members at once",
                        device_id, total, limit)  # fmt: skip

    def _shows(self, key: str, own: int) -> bool:
        """Whether the watch's view of ``key`` has this member's seat (this run's) at ``own``."""
        seat = self.view.seats(key).get(self.members.name)
        if seat is None or seat[:3] != (os.getpid(), self.members.started, self.members.run):
            return own == 0
        return seat[3] == own

    def _seen(self, key: str, _seats: dict[str, Seat]) -> None:
        """The watch gave ``key``'s entry: if it does not have this member's count as the table
        has it (another member dropped a seat it took for a gone member's), it is written."""
        device_id = self._mine.get(key)
        if device_id is not None and not self._shows(key, self._count(device_id)):
            self.changed(device_id)

    def _live_seats(self, seats: dict[str, Seat]) -> dict[str, Seat]:
        """The ``seats`` that count: members live now, in the run that wrote them (this
        member's own too, whatever it says: it is rewritten from its table)."""
        kept: dict[str, Seat] = {}
        for name, seat in seats.items():
            member = self.members.entry(name)
            if member is not None and (member.pid, member.started, member.run) == seat[:3]:
                kept[name] = seat
        return kept

    def _renewed(self, _began: float, run: int) -> None:
        """A heartbeat of a new run (back from fencing): the others ignore what the ended
        run wrote, so every count held here is written again."""
        if run == self._run:
            return
        self._run = run
        self._dirty.update(self._mine.values())
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
